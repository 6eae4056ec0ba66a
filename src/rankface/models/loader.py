"""One loader for every rankface model folder: it reads the saved files to tell what the folder holds.

`load_ranker(path_or_id)` (also `AutoRanker.from_pretrained`) returns a `CrossEncoder`, a `BiEncoder`, a `CETModel` or
a face encoder (`MobileFaceNetModel`, `IResNetModel`, `RecognizabilityModel`), decided by `detect_model_kind` from:

- rankface's own settings files: `rankface_reranker.json` (cross-encoder), `rankface_bi_encoder.json` (bi-encoder);
- sentence-transformers' files: `config_sentence_transformers.json` `model_type` ("CrossEncoder" or
  "SentenceTransformer"), `modules.json` with a Pooling module or a Router, `router_config.json` (two towers);
- `config.json`: a rankface `model_type` (`rankface-cet`, `rankface-mobilefacenet`, ...), else `architectures`:
  `*ForSequenceClassification` is a cross-encoder, a bare encoder (`BertModel`, ...) a bi-encoder (it has no scoring
  head, so mean pooling is the only use that needs no training).

Every file that says something is a piece of evidence; pieces that disagree make the folder ambiguous, and the
error lists them all. Asking for a kind (`kind="cross"`, the CLI's `--encoder`) checks it against the folder: the
MiniLM-as-cross-encoder mistake (a bi-encoder loaded with a random scoring head) is refused, not run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rankface.errors import UserError

KINDS = ("cross", "bi", "cet", "face")
KIND_NAMES = {"cross": "a cross-encoder", "bi": "a bi-encoder", "cet": "a CET pair", "face": "a face encoder"}
FACE_MODEL_TYPES = {
    "rankface-mobilefacenet": "MobileFaceNet",
    "rankface-iresnet": "IResNet",
    "rankface-recognizability": "RI (recognizability) encoder",
}
CET_MODEL_TYPE = "rankface-cet"
# The files read, in the order their evidence is listed.
SIGNAL_FILES = (
    "rankface_reranker.json",
    "rankface_bi_encoder.json",
    "config_sentence_transformers.json",
    "modules.json",
    "router_config.json",
    "config.json",
)
# sentence-transformers modules rankface's BiEncoder reproduces (a transformer, mean pooling, normalisation, routes).
BI_MODULES = ("Transformer", "Pooling", "Normalize", "Router")
WORDING = {
    "python": {"kind": "kind={kind!r}", "allow": "allow_untrained_head=True", "drop": "leave out `kind`"},
    "cli": {"kind": "--encoder {kind}", "allow": "--allow-untrained-head", "drop": "leave out --encoder"},
}


class ModelFolderError(UserError):
    """The folder (or Hub repo) is not a model rankface can load, or it holds another kind than asked for."""


class ModelKindMismatchError(ModelFolderError):
    """The folder holds one kind of model and another was asked for."""


class ModelFolderNotFoundError(ModelFolderError, FileNotFoundError):
    """A local path that does not exist (a `FileNotFoundError` too)."""


@dataclass(frozen=True)
class DetectedModel:
    """What a model folder holds, and the files that say so.

    Attributes:
        source: the folder or Hub id, as given.
        kind: "cross", "bi", "cet" or "face".
        evidence: one line per file that points to `kind`.
        model_type: `config.json`'s model_type when present.
        relevance_kind: for a CET pair, the kind of its relevance (inference) model.
        problems: reasons the folder cannot be loaded faithfully although its kind is clear.
    """

    source: str
    kind: str
    evidence: tuple[str, ...]
    model_type: str | None = None
    relevance_kind: str | None = None
    problems: tuple[str, ...] = field(default=())

    def description(self) -> str:
        """E.g. "a bi-encoder", "a face encoder (MobileFaceNet)", "a CET pair (relevance model: a cross-encoder)"."""
        if self.kind == "face":
            return f"{KIND_NAMES['face']} ({FACE_MODEL_TYPES.get(self.model_type, self.model_type)})"
        if self.kind == "cet" and self.relevance_kind in KIND_NAMES:
            return f"{KIND_NAMES['cet']} (relevance model: {KIND_NAMES[self.relevance_kind]})"
        return KIND_NAMES[self.kind]


# ---------------------------------------------------------------------------------------------- detection
def detect_model_kind(name_or_path: str | os.PathLike) -> DetectedModel:
    """Tell from the saved files whether a folder or Hub repo holds a cross-encoder, a bi-encoder, a CET pair or a
    face encoder.

    Raises:
        ModelFolderNotFoundError: a local path that does not exist (a `FileNotFoundError`).
        ModelFolderError: nothing in the folder says what it is, the files disagree, or a file is malformed.
    """
    source = str(name_or_path)
    files = _read_signal_files(source)
    votes: list[tuple[str, str]] = []  # (kind, evidence)
    notes: list[str] = []  # what was found that points nowhere
    problems: list[str] = []
    config = files.get("config.json") or {}

    if files.get("rankface_reranker.json") is not None:
        votes.append(("cross", "rankface_reranker.json (written by rankface's CrossEncoder)"))
    if files.get("rankface_bi_encoder.json") is not None:
        votes.append(("bi", "rankface_bi_encoder.json (written by rankface's BiEncoder)"))
    _sentence_transformers_evidence(source, files, votes, notes, problems)
    _config_evidence(config, votes, notes, problems)

    kinds = sorted({kind for kind, _ in votes}, key=KINDS.index)
    if not kinds:
        found = "; ".join(notes) or _nothing_found(source)
        raise ModelFolderError(
            f"{source}: cannot tell what model this is. Found: {found}. Expected one of rankface's settings files "
            "(rankface_reranker.json, rankface_bi_encoder.json), sentence-transformers' config_sentence_transformers"
            ".json / modules.json, or a config.json with a rankface model_type or with architectures naming a "
            "*ForSequenceClassification model (cross-encoder) or a bare encoder such as BertModel (bi-encoder)."
        )
    if len(kinds) > 1:
        listed = "; ".join(f"{KIND_NAMES[k]}: " + ", ".join(e for v, e in votes if v == k) for k in kinds)
        raise ModelFolderError(
            f"{source}: the saved files disagree about what this model is ({listed}). The folder may hold two "
            "models written over each other; save each model to a folder of its own, or load it with the class "
            "you know it to be (rankface.CrossEncoder / BiEncoder .from_pretrained)."
        )
    kind = kinds[0]
    relevance_kind = config.get("relevance_kind") if kind == "cet" else None
    return DetectedModel(
        source=source,
        kind=kind,
        evidence=tuple(e for _, e in votes),
        model_type=config.get("model_type"),
        relevance_kind=relevance_kind,
        problems=tuple(problems),
    )


def _sentence_transformers_evidence(source: str, files: dict, votes: list, notes: list, problems: list) -> None:
    st_config = files.get("config_sentence_transformers.json")
    modules = files.get("modules.json")
    st_type = (st_config or {}).get("model_type")
    if st_type == "CrossEncoder":
        votes.append(("cross", "config_sentence_transformers.json model_type 'CrossEncoder'"))
    elif st_type == "SentenceTransformer":
        votes.append(("bi", "config_sentence_transformers.json model_type 'SentenceTransformer'"))
    elif st_type is not None:
        notes.append(f"config_sentence_transformers.json model_type {st_type!r} (rankface scores with cross- and "
                     "bi-encoders only)")
    if modules is None:
        return
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise ModelFolderError(f"{source}/modules.json: expected a list of {{'type': ..., 'path': ...}} entries")
    types = {m.get("path", ""): m["type"] for m in modules}
    short = [t.rsplit(".", 1)[-1] for t in types.values()]
    if "Pooling" in short or "Router" in short:
        votes.append(("bi", f"modules.json {short} (a sentence-transformers embedding model)"))
    else:
        notes.append(f"modules.json {short}")
        return
    # A bi-encoder rankface would score differently from sentence-transformers is a problem, not a detail.
    router = files.get("router_config.json") or {}
    types.update(router.get("types", {}) if isinstance(router, dict) else {})
    unknown = sorted({t.rsplit(".", 1)[-1] for t in types.values()} - set(BI_MODULES))
    if unknown:
        problems.append(f"modules.json has module(s) {unknown} that rankface's BiEncoder does not apply "
                        f"(it runs {', '.join(BI_MODULES)} only)")
    for path, module_type in types.items():
        if module_type.rsplit(".", 1)[-1] != "Pooling":
            continue
        modes = _pooling_modes(_read_json(source, f"{path}/config.json" if path else "config.json") or {})
        if modes != ["mean"]:
            problems.append(f"{path}/config.json pools with {modes}; rankface's BiEncoder mean-pools")
    similarity = (st_config or {}).get("similarity_fn_name")
    if similarity not in (None, "cosine") and "Normalize" not in short:
        problems.append(f"config_sentence_transformers.json similarity_fn_name {similarity!r} on unnormalised "
                        "embeddings; rankface's BiEncoder ranks by cosine")
    prompts = {name: text for name, text in ((st_config or {}).get("prompts") or {}).items() if text}
    if prompts:
        problems.append(f"config_sentence_transformers.json prompts {prompts}: rankface's BiEncoder adds no prompts")


def _pooling_modes(pooling: dict) -> list[str]:
    """A Pooling module's modes, from sentence-transformers 6's `pooling_mode` or the older `pooling_mode_*` flags."""
    mode = pooling.get("pooling_mode")
    if mode is not None:
        return [mode] if isinstance(mode, str) else list(mode)
    flags = [k.removeprefix("pooling_mode_") for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True]
    return ["mean" if flag == "mean_tokens" else flag for flag in flags]


def _config_evidence(config: dict, votes: list, notes: list, problems: list) -> None:
    if not config:
        return
    model_type = config.get("model_type")
    if model_type == CET_MODEL_TYPE:
        votes.append(("cet", f"config.json model_type {model_type!r}"))
        return
    if model_type in FACE_MODEL_TYPES:
        votes.append(("face", f"config.json model_type {model_type!r}"))
        return
    if isinstance(model_type, str) and model_type.startswith("rankface-"):
        notes.append(f"config.json model_type {model_type!r}, which this rankface version does not know")
        return
    architectures = config.get("architectures") or []
    heads = [a for a in architectures if a.endswith("ForSequenceClassification")]
    bare = [a for a in architectures if a.endswith("Model") and not a.endswith("PreTrainedModel")]
    if heads:
        votes.append(("cross", f"config.json architectures {architectures}"))
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 1)
        if labels != 1:
            problems.append(f"config.json: a classifier with {labels} labels; a reranker has exactly one output logit")
    elif bare:
        votes.append(("bi", f"config.json architectures {architectures} (an encoder without a scoring head)"))
    elif architectures:
        notes.append(f"config.json architectures {architectures} (neither a scoring head nor a bare encoder)")
    else:
        notes.append(f"config.json with model_type {model_type!r} and no architectures")


# ---------------------------------------------------------------------------------------------- reading files
def _is_local(source: str) -> bool:
    path = Path(source).expanduser()
    if path.exists():
        return True
    # Not there: a path-like name is a missing folder, not a Hub id ("owner/name" has one slash and no dots first).
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source


def _read_signal_files(source: str) -> dict[str, object]:
    if _is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise ModelFolderNotFoundError(f"{source}: no such model folder")
        if not path.is_dir():
            raise ModelFolderError(f"{source}: is a file; expected a model folder (or a Hub model id)")
    return {name: _read_json(source, name) for name in SIGNAL_FILES}


def _read_json(source: str, filename: str):
    """The parsed JSON file of a local folder or a Hub repo; None when the file is absent."""
    if _is_local(source):
        path = Path(source).expanduser() / filename
        if not path.is_file():
            return None
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(source, filename, _raise_exceptions_for_missing_entries=False,
                                _raise_exceptions_for_connection_errors=False)
        except OSError as error:  # an unknown repo, a malformed id
            raise ModelFolderError(f"{source}: not a local folder, and not a Hub model that could be read: {error}")
        if found is None:
            return None
        path = Path(found)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{source}/{filename}: not valid JSON ({error})") from error


def _nothing_found(source: str) -> str:
    if not _is_local(source):
        from huggingface_hub import constants

        offline = " (the Hub is off: HF_HUB_OFFLINE is set, so only the local cache was read)" if constants.HF_HUB_OFFLINE else ""
        return f"no local folder of that name, and none of {', '.join(SIGNAL_FILES)} in the Hub repo {source}{offline}"
    folder = Path(source).expanduser()
    entries = sorted(folder.iterdir())
    # A training output folder holds its models one level down: point at them.
    inner = [p.name + "/" for p in entries if p.is_dir() and any((p / f).is_file() for f in SIGNAL_FILES)]
    if inner:
        return f"no model files at the top, but model folder(s) inside it: {', '.join(inner)}"
    names = [p.name + ("/" if p.is_dir() else "") for p in entries]
    if not names:
        return "an empty folder"
    return "only " + ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


# ---------------------------------------------------------------------------------------------- loading
def check_kind(
    detected: DetectedModel,
    kind: str,
    allow_untrained_head: bool = False,
    wording: str = "python",
    found_kind: str | None = None,
) -> None:
    """Raise `ModelKindMismatchError` naming both kinds unless `detected` can load as `kind`.

    A bi-encoder's weights can start a cross-encoder with a new head, but only when `allow_untrained_head` says so.
    `found_kind` replaces `detected.kind` in the comparison (a CET pair's relevance kind, when a scorer is wanted).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    found = found_kind or detected.kind
    if found == kind or (kind == "cross" and found == "bi" and allow_untrained_head and found_kind is None):
        return
    words = WORDING[wording]
    asked = words["kind"].format(kind=kind)
    message = (
        f"{detected.source} holds {detected.description()} (found: {'; '.join(detected.evidence)}), but {asked} "
        f"asks for {KIND_NAMES[kind]}. {words['drop'][0].upper()}{words['drop'][1:]} to load what the folder holds"
    )
    if kind == "cross" and found == "bi" and found_kind is None:
        message += (
            "; a cross-encoder built from these weights would score with a new, untrained head: train one "
            f"(rankface train --encoder cross), or pass {words['allow']} to build it anyway"
        )
    raise ModelKindMismatchError(message + ".")


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
