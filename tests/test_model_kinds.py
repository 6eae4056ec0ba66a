"""The class loaders check a folder's kind as `load_ranker` does (issue 17 item 6), and kind detection sits below
both the model classes and the loader: no import circle runs through `rankface.models`."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

import rankface
from rankface.models.bi_encoder import BiEncoder
from rankface.models.cet import CETModel
from rankface.models.cross_encoder import CrossEncoder, UntrainedHeadError
from rankface.models.kinds import ModelKindMismatchError
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

SRC = Path(rankface.__file__).parent


@pytest.fixture(scope="module")
def folders(tiny_bert_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    torch.manual_seed(0)
    out = {"cross": root / "cross", "bi": root / "bi", "bi-two-towers": root / "demo", "cet": root / "cet",
           "face": root / "face"}
    CrossEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu", allow_untrained_head=True
                                 ).save_pretrained(out["cross"])
    bi = BiEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu")
    bi.save_pretrained(out["bi"])
    bi.freeze_document_tower()  # the demo's query-side model: a sentence-transformers Router, no top config.json
    bi.save_pretrained(out["bi-two-towers"])
    CETModel.from_encoders(tiny_bert_dir, selection="mlp", max_length=32).save_pretrained(out["cet"])
    MobileFaceNetModel(MobileFaceNetConfig(input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2], [2, 16, 2, 2]],
                                           last_channels=32, embedding_size=16)).save_pretrained(out["face"])
    return out


def test_bi_encoder_class_refuses_a_cross_encoder_folder(folders):
    # Before: it loaded the cross-encoder's transformer, dropped its head and returned cosine scores.
    with pytest.raises(ModelKindMismatchError) as error:
        BiEncoder.from_pretrained(folders["cross"], device="cpu")
    message = str(error.value)
    assert f"{folders['cross']} is a cross-encoder folder" in message
    assert "load it with CrossEncoder.from_pretrained or rankface.load_ranker" in message
    assert "rankface_reranker.json" in message  # the evidence


def test_cross_encoder_class_refuses_the_demos_two_tower_folder(folders):
    # Before: transformers' "Unrecognized model" (the Router layout has no config.json at the top).
    for allow in (False, True):  # a new head cannot start from two towers either
        with pytest.raises(ModelKindMismatchError) as error:
            CrossEncoder.from_pretrained(folders["bi-two-towers"], device="cpu", allow_untrained_head=allow)
        message = str(error.value)
        assert f"{folders['bi-two-towers']} is a bi-encoder folder" in message
        assert "load it with BiEncoder.from_pretrained or rankface.load_ranker" in message
        assert "Unrecognized" not in message
    assert "query_0_Transformer" in message  # with a new head allowed: which tower could start one


def test_cross_encoder_class_names_the_bi_encoder_class_for_a_one_tower_folder(folders):
    with pytest.raises(UntrainedHeadError, match="is a bi-encoder folder.*BiEncoder.from_pretrained or rankface"):
        CrossEncoder.from_pretrained(folders["bi"], device="cpu")
    # Asked in so many words, a bi-encoder's weights start a cross-encoder (the training start).
    assert type(CrossEncoder.from_pretrained(folders["bi"], device="cpu", allow_untrained_head=True)) is CrossEncoder


@pytest.mark.parametrize("cls", [CrossEncoder, BiEncoder])
def test_text_classes_refuse_cet_and_face_folders(folders, cls):
    with pytest.raises(ModelKindMismatchError, match=r"is a CET pair folder.*CETModel\.from_pretrained or "
                                                     r"rankface\.load_ranker.*load_text_scorer"):
        cls.from_pretrained(folders["cet"], device="cpu")
    with pytest.raises(ModelKindMismatchError, match=r"is a face encoder \(MobileFaceNet\) folder.*"
                                                     r"MobileFaceNetModel\.from_pretrained or rankface\.load_ranker"):
        cls.from_pretrained(folders["face"], device="cpu")


def test_the_class_settles_a_folder_whose_files_disagree(folders, tmp_path):
    """`detect_model_kind` calls such a folder ambiguous and says to load it with the class it is: that works."""
    mixed = tmp_path / "mixed"
    shutil.copytree(folders["cross"], mixed)
    (mixed / "rankface_bi_encoder.json").write_text(json.dumps({"max_length": 32, "scale": 20.0}))
    with pytest.raises(rankface.models.kinds.ModelFolderError, match="disagree"):
        rankface.load_ranker(mixed)
    assert type(CrossEncoder.from_pretrained(mixed, device="cpu")) is CrossEncoder


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nothing'}: no such model folder"):
        BiEncoder.from_pretrained(tmp_path / "nothing")


def _imports(path: Path) -> set[str]:
    """The rankface modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("rankface.")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_circle_runs_through_models():
    """Model classes and the loader both depend on `models/kinds.py`, not on each other (a lazy import counts:
    it is a circle all the same)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    circles = sorted(f"{a} -> {b}" for a in modules if a.startswith("rankface.models") for b in graph[a]
                     if reaches(b, a))
    assert not circles, f"imports that close a circle through rankface.models: {circles}"
    assert _imports(modules["rankface.models.kinds"]) <= {"rankface.errors", "rankface.errors.UserError"}


def test_models_import_nothing_above_them():
    """models/ may use utils/, errors, hardware and paths (below it); never the recipes, data, retrieval,
    evaluation or CLI layers that use the models. Two sideways imports are allowed, with the reason."""
    below = ("rankface.models", "rankface.utils", "rankface.errors", "rankface.hardware", "rankface.paths")
    allowed = {
        # The RI model holds the unrecognizable-image centre (EMA buffers) the RI loss also reads; losses/
        # imports nothing of models/, so this is no circle.
        "rankface.losses.recognizability",
        # ONNX Runtime engines for predict/encode; inference/ imports models/ only for the face export.
        "rankface.inference.backends",
    }
    upward = {
        f"{path.relative_to(SRC)}: {name}"
        for path in (SRC / "models").rglob("*.py")
        for name in _imports(path)
        if not name.startswith(below) and not any(name == a or name.startswith(a + ".") for a in allowed)
    }
    assert not upward, sorted(upward)
