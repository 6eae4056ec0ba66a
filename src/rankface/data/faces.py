"""Face data over Hugging Face `datasets`: loading (Hub id, local Parquet, imagefolder) with a report of
unreadable images, LFW pairs and splits, and the very-low-resolution degradations.

The reference data set is `../shared/data/face/lfw112` (13,233 aligned 112x112 LFW faces as Parquet, plus the
official View-2 `pairs.txt` and `splits.json`).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class FaceDataReport:
    """What `load_face_dataset` found.

    Attributes:
        source: the spec that was loaded.
        num_rows: rows in the source before removing unreadable images.
        num_readable: rows whose image decodes (all rows when `check_images=False`).
        num_identities: distinct labels among the kept rows.
        corrupt: `(row index in the source, image path or "", error message)` per unreadable image.
        checked: whether every image was decoded.
    """

    source: str
    num_rows: int
    num_readable: int
    num_identities: int
    corrupt: list[tuple[int, str, str]] = field(default_factory=list)
    checked: bool = True

    @property
    def num_corrupt(self) -> int:
        return len(self.corrupt)

    def summary(self) -> str:
        """One line for logs."""
        text = (f"{self.source}: {self.num_rows} rows, {self.num_readable} readable, {self.num_corrupt} unreadable, "
                f"{self.num_identities} identities")
        if self.corrupt:
            text += " (first unreadable: row {} {!r}: {})".format(*self.corrupt[0])
        return text if self.checked else text + " (images not checked)"


def _resolve_loader(spec: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """`spec` -> (`datasets.load_dataset` path, keyword arguments)."""
    path = Path(spec)
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"{path}: a local file must be a .parquet file (or give a folder)")
        return "parquet", {"data_files": [str(path)]}
    if path.is_dir():
        parquet = sorted(str(p) for p in path.glob("*.parquet"))
        if parquet:
            return "parquet", {"data_files": parquet}
        return "imagefolder", {"data_dir": str(path)}
    if str(spec).startswith((".", "/", "~")):
        raise FileNotFoundError(f"face data set {spec!r}: no such file or folder")
    return str(spec), {}


def _check_image(cell: Any) -> str | None:
    """Decode one un-decoded `datasets` Image cell (`{"bytes", "path"}`); the error text, or None when it reads."""
    from PIL import Image

    try:
        if cell is None:
            return "missing image"
        data, path = cell.get("bytes"), cell.get("path")
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.convert("RGB").load()
    # PIL signals undecodable data with these (UnidentifiedImageError and truncation are OSErrors).
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def load_face_dataset(
    spec: str | os.PathLike,
    split: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    check_images: bool = True,
    on_corrupt: str = "drop",
    cache_dir: str | None = None,
):
    """Load a face data set with an image column and an integer identity label column.

    Args:
        spec: a Hub data set id, a folder of `*.parquet` files (e.g. `../shared/data/face/lfw112`), a `.parquet`
            file, or an imagefolder (one sub-folder per identity).
        split: split to load ("train" when None: local Parquet and imagefolder have only that one).
        image_column: name of the `datasets.Image` column.
        label_column: name of the integer label column (a `ClassLabel` ideally).
        check_images: decode every image once and count those that fail.
        on_corrupt: "drop" removes unreadable rows (logged with a warning and listed in the report), "raise" stops
            with an error naming the first one.
        cache_dir: `datasets` cache folder.

    Returns:
        `(dataset, report)`: a `datasets.Dataset` whose `image_column` decodes to PIL images, and a `FaceDataReport`.
    """
    import datasets

    if on_corrupt not in ("drop", "raise"):
        raise ValueError(f"load_face_dataset: on_corrupt = {on_corrupt!r}, expected 'drop' or 'raise'")
    path, kwargs = _resolve_loader(spec)
    ds = datasets.load_dataset(path, split=split or "train", cache_dir=cache_dir, **kwargs)
    missing = [c for c in (image_column, label_column) if c not in ds.column_names]
    if missing:
        raise ValueError(f"face data set {spec}: missing column(s) {missing}; columns are {ds.column_names} "
                         "(pass image_column= / label_column=)")
    if not isinstance(ds.features[image_column], datasets.Image):
        raise TypeError(f"face data set {spec}: column {image_column!r} is {ds.features[image_column]}, "
                         "expected a datasets.Image feature")
    corrupt: list[tuple[int, str, str]] = []
    if check_images:
        raw = ds.cast_column(image_column, datasets.Image(decode=False))
        for i, cell in enumerate(raw[image_column]):
            error = _check_image(cell)
            if error is not None:
                corrupt.append((i, (cell or {}).get("path") or "", error))
    num_rows = len(ds)
    if corrupt:
        first = corrupt[0]
        message = (f"face data set {spec}: {len(corrupt)} of {num_rows} images are unreadable "
                   f"(first: row {first[0]} {first[1]!r}: {first[2]})")
        if on_corrupt == "raise":
            raise ValueError(message)
        logger.warning("%s; they are left out and listed in the FaceDataReport", message)
        bad = {i for i, _, _ in corrupt}
        ds = ds.select([i for i in range(num_rows) if i not in bad])
    labels = ds[label_column]
    report = FaceDataReport(
        source=str(spec), num_rows=num_rows, num_readable=num_rows - len(corrupt),
        num_identities=len(set(labels)), corrupt=corrupt, checked=check_images,
    )
    return ds, report


def image_to_rgb_array(image: Any) -> np.ndarray:
    """A decoded `datasets` image (PIL), or an `[H, W, 3]` uint8 array -> `[H, W, 3]` uint8 RGB array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
        return image
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------------
# LFW pairs and splits


@dataclass(frozen=True)
class LFWPair:
    """One View-2 pair: fold (0-9), the two relative file names, and whether they show the same person."""

    fold: int
    first: str
    second: str
    same: bool


def lfw_filename(name: str, number: int) -> str:
    """LFW relative path of image `number` (1-based) of `name`, e.g. `Aaron_Peirsol/Aaron_Peirsol_0001.jpg`."""
    return f"{name}/{name}_{number:04d}.jpg"


def read_lfw_pairs(path: str | os.PathLike) -> list[LFWPair]:
    """Read the official LFW View-2 `pairs.txt`: header `folds n`, then per fold `n` matched rows
    (`name i j`) followed by `n` mismatched rows (`name1 i name2 j`).

    Returns:
        `folds * 2n` pairs in file order (6,000 for View 2), each with its fold index.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file, expected a header 'folds pairs_per_class'")
    try:
        folds, per_class = (int(v) for v in lines[0].split())
    except ValueError as err:
        raise ValueError(f"{path}:1: header {lines[0]!r}, expected two integers 'folds pairs_per_class'") from err
    rows = [(n, line.split()) for n, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(rows) != folds * 2 * per_class:
        raise ValueError(f"{path}: {len(rows)} pair rows, expected {folds} x 2 x {per_class} = "
                         f"{folds * 2 * per_class} from the header")
    pairs: list[LFWPair] = []
    for k, (lineno, parts) in enumerate(rows):
        fold, within = divmod(k, 2 * per_class)
        same = within < per_class
        try:
            if same:
                if len(parts) != 3:
                    raise ValueError("expected 'name i j' (a matched pair)")
                pairs.append(LFWPair(fold, lfw_filename(parts[0], int(parts[1])),
                                     lfw_filename(parts[0], int(parts[2])), True))
            else:
                if len(parts) != 4:
                    raise ValueError("expected 'name1 i name2 j' (a mismatched pair)")
                pairs.append(LFWPair(fold, lfw_filename(parts[0], int(parts[1])),
                                     lfw_filename(parts[2], int(parts[3])), False))
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {' '.join(parts)!r}: {err}") from err
    return pairs


def read_lfw_splits(path: str | os.PathLike) -> dict[str, Any]:
    """Read `splits.json` of lfw112 and check the keys this library uses.

    Returns:
        The parsed JSON: `test_identities`, `train_identities` (protocol A) and `view2_10fold` with `folds`
        (each with `fold`, `pairs_txt_rows`, `test_identities`) and `non_pair_identities` (protocol B).
    """
    path = Path(path)
    data = json.loads(path.read_text())
    for key in ("test_identities", "train_identities", "view2_10fold"):
        if key not in data:
            raise ValueError(f"{path}: missing key {key!r}")
    folds = data["view2_10fold"].get("folds")
    if not isinstance(folds, list) or not folds:
        raise ValueError(f"{path}: view2_10fold.folds must be a non-empty list")
    for i, fold in enumerate(folds):
        for key in ("fold", "test_identities"):
            if key not in fold:
                raise ValueError(f"{path}: view2_10fold.folds[{i}] is missing {key!r}")
    return data


def lfw_fold_identities(splits: dict[str, Any], fold: int) -> tuple[set[str], set[str]]:
    """Protocol B of lfw112: `(train identities, test identities)` for View-2 fold `fold`; train is every
    identity of the other folds plus those in no pair."""
    folds = splits["view2_10fold"]["folds"]
    by_index = {int(f["fold"]): set(f["test_identities"]) for f in folds}
    if fold not in by_index:
        raise ValueError(f"splits.json: no fold {fold}; folds are {sorted(by_index)}")
    test = by_index[fold]
    train = set(splits["view2_10fold"].get("non_pair_identities", []))
    for k, ids in by_index.items():
        if k != fold:
            train |= ids
    return train - test, test


def select_identities(dataset, identities: Iterable[str], identity_column: str = "identity"):
    """Rows of `dataset` whose `identity_column` is in `identities` (a new `datasets.Dataset`)."""
    wanted = set(identities)
    names = dataset[identity_column]
    return dataset.select([i for i, name in enumerate(names) if name in wanted])


def pair_rows(dataset, pairs: Sequence[LFWPair], filename_column: str = "filename") -> np.ndarray:
    """Map each pair's two file names to row indices of `dataset`.

    Returns:
        `[P, 2]` int64 row indices.
    """
    if filename_column not in dataset.column_names:
        raise ValueError(f"pair_rows: the data set has no {filename_column!r} column (columns: "
                         f"{dataset.column_names})")
    index = {name: i for i, name in enumerate(dataset[filename_column])}
    out = np.empty((len(pairs), 2), dtype=np.int64)
    for k, pair in enumerate(pairs):
        for j, name in enumerate((pair.first, pair.second)):
            if name not in index:
                raise KeyError(f"pair {k} (fold {pair.fold}): image {name!r} is not in the data set")
            out[k, j] = index[name]
    return out


def validation_pairs(rows_of: dict[str, Sequence[int]], seed: int = 0, max_genuine_per_identity: int = 6
                     ) -> tuple[np.ndarray, np.ndarray, set[str]]:
    """Verification pairs among a set of identities, seeded: every genuine pair of each identity with >= 2 images
    (at most `max_genuine_per_identity`, so one large identity does not dominate) and as many impostor pairs, each
    joining images of two different identities drawn uniformly.

    Args:
        rows_of: `{identity: data set rows of its images}`.

    Returns:
        `(pair rows [P, 2] int64, same [P] bool, identities used)`, the pairs in a seeded random order.

    Raises:
        ValueError: no identity has two images, or fewer than two identities are given.
    """
    if max_genuine_per_identity < 1:
        raise ValueError(f"validation_pairs: max_genuine_per_identity must be >= 1, got {max_genuine_per_identity}")
    rng = np.random.default_rng(seed)
    names = sorted(n for n, rows in rows_of.items() if len(rows) >= 1)
    genuine: list[tuple[int, int]] = []
    for name in names:
        rows = sorted(int(r) for r in rows_of[name])
        combos = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
        if combos:
            chosen = rng.permutation(len(combos))[:max_genuine_per_identity]
            genuine += [combos[k] for k in sorted(chosen.tolist())]
    if not genuine or len(names) < 2:
        raise ValueError(f"validation_pairs: {len(names)} identities, {len(genuine)} genuine pairs; need >= 2 "
                         "identities and one with >= 2 images")
    impostor: set[tuple[int, int]] = set()
    for _ in range(100 * len(genuine)):  # bounded: a tiny pool may hold fewer distinct impostor pairs than wanted
        if len(impostor) == len(genuine):
            break
        a, b = rng.choice(len(names), size=2, replace=False)
        first = int(rng.choice(rows_of[names[a]]))
        second = int(rng.choice(rows_of[names[b]]))
        impostor.add((min(first, second), max(first, second)))
    pairs = np.array(genuine + sorted(impostor), dtype=np.int64)
    same = np.array([True] * len(genuine) + [False] * len(impostor))
    order = rng.permutation(len(pairs))
    row_to_name = {int(r): n for n in names for r in rows_of[n]}
    used = {row_to_name[int(r)] for r in pairs.reshape(-1)}
    return pairs[order], same[order], used


# --------------------------------------------------------------------------------------------------------------
# Degradation


def degrade_exact(image: np.ndarray, r: int) -> np.ndarray:
    """The lfw112 README's degradation to `r` px, exactly: `cv2.resize` to `r x r` with INTER_AREA, then back to
    the input size with INTER_CUBIC (uint8 in and out). `r` equal to the input size returns a copy.

    Args:
        image: `[S, S, 3]` uint8 (any colour order: the operation is per channel).
        r: target resolution in pixels, `1 <= r <= S`.

    Returns:
        `[S, S, 3]` uint8.
    """
    import cv2

    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"degrade_exact: expected a square uint8 [S, S, C] image, got {image.dtype} {image.shape}")
    size = image.shape[0]
    if not 1 <= int(r) <= size:
        raise ValueError(f"degrade_exact: r = {r}, expected 1 <= r <= {size}")
    if int(r) == size:
        return image.copy()
    small = cv2.resize(image, (int(r), int(r)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@dataclass
class VeryLowResolution:
    """Training-time very-low-resolution degradation, deterministic given `(seed, epoch, index)`.

    With probability `p`: optional Gaussian blur at full resolution, down-sampling to `r x r` (INTER_AREA, `r`
    uniform in `[min_resolution, max_resolution]`), optional Gaussian noise and JPEG compression at that
    resolution, then bicubic up-sampling back to the input size (the same two resizes as `degrade_exact`).

    Attributes:
        min_resolution, max_resolution: range of `r` in pixels (inclusive).
        p: probability of degrading an image at all (else it is returned unchanged).
        blur_prob, blur_sigma: probability and sigma range of the Gaussian blur.
        jpeg_prob, jpeg_quality: probability and quality range of JPEG compression.
        noise_prob, noise_std: probability and std range (in 0..255 pixel units) of additive Gaussian noise.
        seed: base seed; the random stream of an image is `(seed, epoch, index)`.
    """

    min_resolution: int = 8
    max_resolution: int = 32
    p: float = 1.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 90)
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (1.0, 5.0)
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_resolution <= self.max_resolution:
            raise ValueError(f"VeryLowResolution: resolution range [{self.min_resolution}, {self.max_resolution}] "
                             "must satisfy 1 <= min <= max")
        for name in ("p", "blur_prob", "jpeg_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"VeryLowResolution.{name} = {getattr(self, name)}, expected a probability")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"VeryLowResolution.jpeg_quality = {self.jpeg_quality}, expected 1 <= lo <= hi <= 100")

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh degradations in a new epoch while staying reproducible."""
        self.epoch = int(epoch)

    def sample_resolution(self, index: int) -> int | None:
        """The resolution image `index` gets in the current epoch (None when it is left unchanged)."""
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        if rng.random() >= self.p:
            return None
        return int(rng.integers(self.min_resolution, self.max_resolution + 1))

    def __call__(self, image: Any, index: int) -> np.ndarray:
        """Degrade one image.

        Args:
            image: `[S, S, 3]` uint8 RGB array or a PIL image.
            index: the sample's index in the data set (with `seed` and `epoch` it fixes every random choice).

        Returns:
            `[S, S, 3]` uint8 array.
        """
        import cv2

        img = image_to_rgb_array(image)
        size = img.shape[0]
        if img.shape[1] != size:
            raise ValueError(f"VeryLowResolution: expected a square image, got {img.shape}")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        # The first two draws are shared with sample_resolution, so it reports the resolution used here.
        if rng.random() >= self.p:
            return img.copy()
        r = min(int(rng.integers(self.min_resolution, self.max_resolution + 1)), size)
        out = img
        if rng.random() < self.blur_prob:
            sigma = float(rng.uniform(*self.blur_sigma))
            out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=sigma)
        if r < size:
            out = cv2.resize(out, (r, r), interpolation=cv2.INTER_AREA)
        if rng.random() < self.noise_prob:
            std = float(rng.uniform(*self.noise_std))
            noisy = out.astype(np.float32) + rng.normal(0.0, std, size=out.shape).astype(np.float32)
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        if rng.random() < self.jpeg_prob:
            quality = int(rng.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            # OpenCV encodes in BGR order; flipping in and out keeps the colours of an RGB array right.
            ok, buffer = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise RuntimeError("VeryLowResolution: JPEG encoding failed")
            out = cv2.imdecode(buffer, cv2.IMREAD_COLOR)[:, :, ::-1]
        if out.shape[0] != size:
            out = cv2.resize(np.ascontiguousarray(out), (size, size), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(out)
