"""What a model folder holds, told from its saved files: the one kind detection of rankface.

`detect_model_kind(path_or_id)` says whether a folder or Hub repo holds a cross-encoder, a bi-encoder, a CET pair
or a face encoder, from:

- rankface's own settings files: `rankface_reranker.json` (cross-encoder), `rankface_bi_encoder.json` (bi-encoder);
- sentence-transformers' files: `config_sentence_transformers.json` `model_type` ("CrossEncoder" or
  "SentenceTransformer"), `modules.json` with a Pooling module or a Router, `router_config.json` (two towers);
- `config.json`: a rankface `model_type` (`rankface-cet`, `rankface-mobilefacenet`, ...), else `architectures`:
  `*ForSequenceClassification` is a cross-encoder, a bare encoder (`BertModel`, ...) a bi-encoder (it has no scoring
  head, so mean pooling is the only use that needs no training).

Every file that says something is a piece of evidence; pieces that disagree make the folder ambiguous, and the
error lists them all. `check_kind` compares a detection with the kind asked for (`load_ranker(kind=...)`, the CLI's
`--encoder`); `check_class_kind` is the same check at the top of each class's `from_pretrained`.

This module sits below both the model classes and `models/loader.py` (which builds the classes): it reads JSON
files and imports no model, so either can import it without an import circle.
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
    files, votes, notes, problems = _gather_evidence(source)
    kinds = _kinds(votes)
    if not kinds:
        found = "; ".join(notes) or _nothing_found(source)
        raise ModelFolderError(
            f"{source}: cannot tell what model this is. Found: {found}. Expected one of rankface's settings files "
            "(rankface_reranker.json, rankface_bi_encoder.json), sentence-transformers' config_sentence_transformers"
            ".json / modules.json, or a config.json with a rankface model_type or with architectures naming a "
            "*ForSequenceClassification model (cross-encoder) or a bare encoder such as BertModel (bi-encoder)."
        )
    if len(kinds) > 1:
        raise ModelFolderError(
            f"{source}: the saved files disagree about what this model is ({_listed(votes)}). The folder may hold two "
            "models written over each other; save each model to a folder of its own, or load it with the class "
            "you know it to be (rankface.CrossEncoder / BiEncoder .from_pretrained)."
        )
    return _detected(source, files, votes, problems)


def _gather_evidence(source: str) -> tuple[dict, list[tuple[str, str]], list[str], list[str]]:
    """The signal files read, the votes `(kind, evidence)`, notes on what points nowhere, and problems."""
    files = _read_signal_files(source)
    votes: list[tuple[str, str]] = []
    notes: list[str] = []
    problems: list[str] = []
    if files.get("rankface_reranker.json") is not None:
        votes.append(("cross", "rankface_reranker.json (written by rankface's CrossEncoder)"))
    if files.get("rankface_bi_encoder.json") is not None:
        votes.append(("bi", "rankface_bi_encoder.json (written by rankface's BiEncoder)"))
    _sentence_transformers_evidence(source, files, votes, notes, problems)
    _config_evidence(files.get("config.json") or {}, votes, notes, problems)
    return files, votes, notes, problems


def _kinds(votes: list[tuple[str, str]]) -> list[str]:
    return sorted({kind for kind, _ in votes}, key=KINDS.index)


def _listed(votes: list[tuple[str, str]]) -> str:
    return "; ".join(f"{KIND_NAMES[k]}: " + ", ".join(e for v, e in votes if v == k) for k in _kinds(votes))


def _detected(source: str, files: dict, votes: list[tuple[str, str]], problems: list[str]) -> DetectedModel:
    config = files.get("config.json") or {}
    kind = _kinds(votes)[0]
    return DetectedModel(
        source=source,
        kind=kind,
        evidence=tuple(e for _, e in votes),
        model_type=config.get("model_type"),
        relevance_kind=config.get("relevance_kind") if kind == "cet" else None,
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


# ---------------------------------------------------------------------------------------------- kind checks
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


# The class whose `from_pretrained` loads each kind (a face encoder's depends on its model_type).
CLASS_OF_KIND = {"cross": "CrossEncoder", "bi": "BiEncoder", "cet": "CETModel"}
FACE_CLASSES = {
    "rankface-mobilefacenet": "MobileFaceNetModel",
    "rankface-iresnet": "IResNetModel",
    "rankface-recognizability": "RecognizabilityModel",
}


def wrong_class_message(detected: DetectedModel, kind: str) -> str:
    """What a class loader says when the folder holds another kind than its own, e.g. "<folder> is a bi-encoder folder
    (found: ...), not a cross-encoder; load it with BiEncoder.from_pretrained or rankface.load_ranker"."""
    if detected.kind == "face":
        what, cls = detected.description(), FACE_CLASSES.get(detected.model_type, "AutoModel")
    else:
        what, cls = KIND_NAMES[detected.kind], CLASS_OF_KIND[detected.kind]
    message = (f"{detected.source} is {what} folder (found: {'; '.join(detected.evidence)}), not {KIND_NAMES[kind]}; "
               f"load it with {cls}.from_pretrained or rankface.load_ranker")
    if detected.kind == "cet":
        relevance = KIND_NAMES.get(detected.relevance_kind, "its relevance model")
        message += f" (rankface.load_text_scorer gives its relevance model, {relevance}, as a scorer)"
    return message


def check_class_kind(name_or_path: str | os.PathLike, kind: str, allow_untrained_head: bool = False) -> None:
    """The kind check at the top of `CrossEncoder` / `BiEncoder.from_pretrained`: raise `ModelKindMismatchError`
    naming the folder, the kind found and the class to use when the folder clearly holds another kind.

    Only a clear answer is enforced. A folder in which nothing says what it is is left to the class (transformers
    reports what it cannot read); a folder whose files disagree, `kind` among them, is the caller's to settle (that
    is what `detect_model_kind`'s error about it recommends). A one-tower bi-encoder asked for as a cross-encoder
    passes on to `CrossEncoder`'s own check of the scoring-head weights (`allow_untrained_head`).

    Raises:
        ModelFolderNotFoundError: a local path that does not exist.
        ModelKindMismatchError: the folder holds another kind of model.
    """
    if kind not in CLASS_OF_KIND:
        raise ValueError(f"kind must be one of {sorted(CLASS_OF_KIND)}, got {kind!r}")
    source = str(name_or_path)
    files, votes, _, problems = _gather_evidence(source)
    kinds = _kinds(votes)
    if not kinds or kind in kinds:
        return
    if len(kinds) > 1:
        raise ModelKindMismatchError(f"{source}: no {KIND_NAMES[kind]} here; the saved files say {_listed(votes)}. "
                                     "Save each model to a folder of its own.")
    detected = _detected(source, files, votes, problems)
    if kind == "cross" and detected.kind == "bi":
        if files.get("config.json"):
            return  # one tower: its weights can start a cross-encoder, if a new head is allowed
        message = wrong_class_message(detected, kind)
        router = files.get("router_config.json")
        if allow_untrained_head and isinstance(router, dict):
            tower = ((router.get("structure") or {}).get("query") or ["query_0_Transformer"])[0]
            message += (". Its two towers have no config.json at the top; to start a cross-encoder from its query "
                        f"tower, pass {source}/{tower}")
        raise ModelKindMismatchError(message + ".")
    raise ModelKindMismatchError(wrong_class_message(detected, kind) + ".")


__all__ = [
    "CLASS_OF_KIND",
    "KINDS",
    "KIND_NAMES",
    "DetectedModel",
    "ModelFolderError",
    "ModelFolderNotFoundError",
    "ModelKindMismatchError",
    "check_class_kind",
    "check_kind",
    "detect_model_kind",
    "wrong_class_message",
]
