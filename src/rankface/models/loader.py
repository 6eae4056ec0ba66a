"""One loader for every rankface model folder: it reads the saved files to tell what the folder holds.

`load_ranker(path_or_id)` (also `AutoRanker.from_pretrained`) returns a `CrossEncoder`, a `BiEncoder`, a `CETModel` or
a face encoder (`MobileFaceNetModel`, `IResNetModel`, `RecognizabilityModel`), decided by `detect_model_kind`
(`models/kinds.py`, which lists the files read and what each says).

Asking for a kind (`kind="cross"`, the CLI's `--encoder`) checks it against the folder: the MiniLM-as-cross-encoder
mistake (a bi-encoder loaded with a random scoring head) is refused, not run. Kind detection lives in `kinds.py`, below
this module and the model classes alike: the classes check their folder's kind too, without importing the loader.
"""

from __future__ import annotations

import os

from rankface.models.kinds import (
    DetectedModel,
    ModelFolderError,
    ModelFolderNotFoundError,
    ModelKindMismatchError,
    check_kind,
    detect_model_kind,
)


def load_ranker(
    name_or_path: str | os.PathLike,
    kind: str | None = None,
    allow_untrained_head: bool = False,
    **kwargs,
):
    """Load what a folder or Hub repo holds, as the rankface class for it.

    Args:
        name_or_path: local folder or Hub id.
        kind: "cross", "bi", "cet" or "face" to check the folder against (an error names both on a mismatch);
            None loads whatever the folder holds.
        allow_untrained_head: let a cross-encoder be built with a new, random scoring head (from a bi-encoder's
            or a bare encoder's weights, with `kind="cross"`): for training, never for scoring.
        **kwargs: passed to the class's `from_pretrained` (e.g. `max_length`, `device`, `num_layers` for the text
            models; transformers' loading options for a CET pair or a face encoder).

    Returns:
        A `CrossEncoder`, `BiEncoder`, `CETModel`, or a face encoder (`MobileFaceNetModel`, `IResNetModel`,
        `RecognizabilityModel`).
    """
    detected = detect_model_kind(name_or_path)
    if kind is not None:
        check_kind(detected, kind, allow_untrained_head)
    return _load(detected, kind or detected.kind, allow_untrained_head, kwargs)


def load_text_scorer(
    name_or_path: str | os.PathLike,
    encoder: str | None = None,
    allow_untrained_head: bool = False,
    wording: str = "python",
    max_length: int | None = None,
    device=None,
    **kwargs,
):
    """A model that scores (query, document) pairs: a `CrossEncoder` or `BiEncoder` (a CET pair's relevance model).

    Args:
        name_or_path: local folder or Hub id.
        encoder: "cross" or "bi" to check the folder against; None takes what the folder holds.
        allow_untrained_head: see `load_ranker`.
        wording: "cli" names the command's options in error messages, "python" the arguments.
        max_length: maximum input length in tokens; default the saved setting.
        device: default CUDA when available, else CPU.
        **kwargs: other arguments of `CrossEncoder` / `BiEncoder.from_pretrained` (e.g. `num_layers`).
    """
    if encoder not in (None, "cross", "bi"):
        raise ValueError(f"encoder must be 'cross', 'bi' or None, got {encoder!r}")
    detected = detect_model_kind(name_or_path)
    if detected.kind == "face":
        raise ModelFolderError(f"{detected.source} holds {detected.description()} (found: "
                               f"{'; '.join(detected.evidence)}); scoring documents needs a cross- or bi-encoder")
    if detected.kind == "cet":
        if encoder is not None:
            check_kind(detected, encoder, wording=wording, found_kind=detected.relevance_kind)
        if kwargs:
            raise ValueError(f"{detected.source} holds a CET pair, whose relevance model takes only max_length and "
                             f"device here, not {sorted(kwargs)}")
        scorer = _load(detected, "cet", False, {}).relevance_scorer()
        scorer.max_length = max_length or scorer.max_length
        return scorer.to(_default_device(device))
    if encoder is not None:
        check_kind(detected, encoder, allow_untrained_head, wording)
    kwargs = {"max_length": max_length, "device": device, **kwargs}
    return _load(detected, encoder or detected.kind, allow_untrained_head, kwargs)


def _load(detected: DetectedModel, kind: str, allow_untrained_head: bool, kwargs: dict):
    if detected.problems and detected.kind == kind:
        raise ModelFolderError(f"{detected.source} holds {detected.description()} that rankface cannot load "
                               f"faithfully: {'; '.join(detected.problems)}")
    source = detected.source
    if kind == "cross":
        from rankface.models.cross_encoder import CrossEncoder

        return CrossEncoder.from_pretrained(source, allow_untrained_head=allow_untrained_head, **kwargs)
    if kind == "bi":
        from rankface.models.bi_encoder import BiEncoder

        return BiEncoder.from_pretrained(source, **kwargs)
    import rankface.models.auto  # noqa: F401 - registers the rankface model types with the Auto classes

    if kind == "cet":
        from rankface.models.cet import CETModel

        return CETModel.from_pretrained(source, **kwargs)
    from transformers import AutoModel

    return AutoModel.from_pretrained(source, **kwargs)


def _default_device(device):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class AutoRanker:
    """`AutoRanker.from_pretrained(path_or_id)`: the model a folder or Hub repo holds, as its rankface class.

    Like transformers' Auto classes it is never instantiated; see `load_ranker` for the arguments.
    """

    def __init__(self) -> None:
        raise TypeError("AutoRanker is not instantiated: use AutoRanker.from_pretrained(path_or_id)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, kind: str | None = None, **kwargs):
        return load_ranker(name_or_path, kind=kind, **kwargs)

    @staticmethod
    def detect(name_or_path: str | os.PathLike) -> DetectedModel:
        return detect_model_kind(name_or_path)


__all__ = [
    "AutoRanker",
    "DetectedModel",
    "ModelFolderError",
    "ModelFolderNotFoundError",
    "ModelKindMismatchError",
    "check_kind",
    "detect_model_kind",
    "load_ranker",
    "load_text_scorer",
]
