"""`FaceImageProcessor`: aligned face images -> normalised `pixel_values`, with the input contract in its config.

The colour order, mean and std a face encoder expects are saved (`preprocessor_config.json`) next to the weights,
so a checkpoint can never be fed with the wrong normalisation by accident.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor


class FaceImageProcessor(BaseImageProcessor):
    """Turn aligned face crops into `pixel_values` `[N, 3, size, size]` float32.

    Accepted images (one, or a list): PIL images (any mode, converted to RGB); numpy `uint8` arrays `[H, W, 3]`
    (colour order given by `input_color_order`, RGB by default; OpenCV users pass "BGR"); torch tensors `[3, H, W]`
    or `[N, 3, H, W]`, either `uint8` pixels or floats in `[0, 1]` (torchvision's convention), RGB.
    Images not `size` x `size` are resized with bicubic interpolation (faces must already be aligned: this does
    no detection or alignment). Normalisation: `(pixel - image_mean) / image_std` in `color_order`.

    Args:
        size: output side in pixels.
        color_order: channel order the model expects ("RGB" or "BGR").
        image_mean: subtracted from pixels in 0..255.
        image_std: divisor after the subtraction.
        do_resize: resize inputs of another size (else such inputs raise).
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __init__(
        self,
        size: int = 112,
        color_order: str = "RGB",
        image_mean: float = 127.5,
        image_std: float = 128.0,
        do_resize: bool = True,
        **kwargs: Any,
    ) -> None:
        if color_order not in ("RGB", "BGR"):
            raise ValueError(f"FaceImageProcessor.color_order = {color_order!r}: expected 'RGB' or 'BGR'")
        if isinstance(size, dict):  # tolerate the {"height", "width"} form of other HF processors
            if size.get("height") != size.get("width"):
                raise ValueError(f"FaceImageProcessor.size = {size}: expected a square size")
            size = size["height"]
        if float(image_std) == 0.0:
            raise ValueError("FaceImageProcessor.image_std must not be 0")
        super().__init__(**kwargs)
        self.size = int(size)
        self.color_order = color_order
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.do_resize = bool(do_resize)

    @classmethod
    def from_model_config(cls, config: Any) -> FaceImageProcessor:
        """The processor matching a face encoder config's `input_size`, `color_order`, `image_mean`, `image_std`."""
        return cls(
            size=config.input_size, color_order=config.color_order, image_mean=config.image_mean,
            image_std=config.image_std,
        )

    def _to_uint8_rgb(self, image: Any, input_color_order: str, index: int) -> list[np.ndarray]:
        """One input item -> list of `[H, W, 3]` uint8 RGB arrays (a batched tensor gives several)."""
        from PIL import Image

        if isinstance(image, Image.Image):
            return [np.asarray(image.convert("RGB"), dtype=np.uint8)]
        if isinstance(image, torch.Tensor):
            t = image.detach().cpu()
            if t.dim() == 3:
                t = t.unsqueeze(0)
            if t.dim() != 4 or t.shape[1] != 3:
                raise ValueError(f"FaceImageProcessor: image {index} is a tensor of shape {tuple(image.shape)}, "
                                 "expected [3, H, W] or [N, 3, H, W]")
            if t.dtype == torch.uint8:
                arr = t.numpy()
            elif t.is_floating_point():
                if t.numel() and (t.min() < 0 or t.max() > 1):
                    raise ValueError(f"FaceImageProcessor: image {index} is a float tensor outside [0, 1]; "
                                     "pass uint8 pixels or floats in [0, 1]")
                arr = (t * 255.0).round().to(torch.uint8).numpy()
            else:
                raise ValueError(f"FaceImageProcessor: image {index} has dtype {t.dtype}, expected uint8 or float")
            return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arr]
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"FaceImageProcessor: image {index} is an array {image.dtype} {image.shape}, "
                                 "expected uint8 [H, W, 3]")
            return [image[:, :, ::-1] if input_color_order == "BGR" else image]
        raise TypeError(f"FaceImageProcessor: image {index} has type {type(image).__name__}, "
                        "expected a PIL image, a uint8 numpy array [H, W, 3] or a torch tensor")

    def _resize(self, rgb: np.ndarray, index: int) -> np.ndarray:
        if rgb.shape[0] == self.size and rgb.shape[1] == self.size:
            return rgb
        if not self.do_resize:
            raise ValueError(f"FaceImageProcessor: image {index} is {rgb.shape[1]}x{rgb.shape[0]}, expected "
                             f"{self.size}x{self.size} (do_resize is off)")
        from PIL import Image

        resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((self.size, self.size), Image.BICUBIC)
        return np.asarray(resized, dtype=np.uint8)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self, images: Any, input_color_order: str = "RGB", return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Images -> `BatchFeature({"pixel_values": [N, 3, size, size] float32})`.

        Args:
            images: one image or a sequence of images (see the class docstring for accepted types).
            input_color_order: channel order of numpy inputs ("RGB" or "BGR").
            return_tensors: "pt" (torch) or "np" / None (numpy).
        """
        if input_color_order not in ("RGB", "BGR"):
            raise ValueError(f"FaceImageProcessor: input_color_order = {input_color_order!r}, expected RGB or BGR")
        single = not isinstance(images, Sequence) or isinstance(images, str)
        items = [images] if single else list(images)
        rgb: list[np.ndarray] = []
        for i, item in enumerate(items):
            rgb.extend(self._resize(a, i) for a in self._to_uint8_rgb(item, input_color_order, i))
        if not rgb:
            raise ValueError("FaceImageProcessor: no images given")
        batch = np.stack(rgb).astype(np.float32)  # [N, H, W, 3] RGB
        if self.color_order == "BGR":
            batch = batch[..., ::-1]
        batch = (batch - self.image_mean) / self.image_std
        pixel_values = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        if return_tensors == "pt":
            return BatchFeature({"pixel_values": torch.from_numpy(pixel_values)})
        if return_tensors in (None, "np"):
            return BatchFeature({"pixel_values": pixel_values})
        raise ValueError(f"FaceImageProcessor: return_tensors = {return_tensors!r}, expected 'pt', 'np' or None")
