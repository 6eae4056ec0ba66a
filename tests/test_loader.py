"""One loader for every model folder: each kind (cross, bi, CET pair, face encoders), saved by rankface, by
sentence-transformers and by plain transformers, loads as its rankface class with the weights it was saved with;
mismatched, ambiguous and unknown folders fail with the evidence; the CLI's `--encoder` is optional and checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, PreTrainedModel

import rankface
from rankface.models.bi_encoder import BiEncoder
from rankface.models.cet import CETModel
from rankface.models.cross_encoder import CrossEncoder
from rankface.models.iresnet import IResNetConfig, IResNetModel
from rankface.models.loader import (
    AutoRanker,
    ModelFolderError,
    ModelKindMismatchError,
    detect_model_kind,
    load_ranker,
    load_text_scorer,
)
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

PAIRS = [
    ("aspirin heart disease", "aspirin study heart risk trial"),
    ("fish oil", "fish oil vitamin diet"),
    ("salt blood pressure", "salt"),
    ("soy", "meat eggs fat fiber fruit"),
]
# Scores of one model loaded twice: the same kernels on the same weights, but a loaded tensor may sit at another
# offset in memory, and MKL's summation order depends on that alignment (differences of ~1e-8 measured).
ATOL = 1e-5
SIZE = 32
TINY_MFN = {"input_size": SIZE, "stem_channels": 8, "block_settings": [[2, 8, 1, 2], [2, 16, 2, 2]],
            "last_channels": 32, "embedding_size": 16}
TINY_IRESNET = {"num_layers": 18, "input_size": SIZE, "stage_channels": [8, 8, 16, 16], "embedding_size": 12}


def _scores(model, pairs=PAIRS) -> np.ndarray:
    return model.predict(pairs, precision="fp32")


def _bert_config(**extra) -> BertConfig:
    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                      max_position_embeddings=128, **extra)


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy(source / name, target / name)


# ---------------------------------------------------------------------------------------------- the folders
@pytest.fixture(scope="module")
def folders(tiny_bert_dir, tmp_path_factory) -> dict[str, Path]:
    """One folder per (kind, writer); the plain-transformers bi-encoder is the tiny BERT itself."""
    from sentence_transformers import CrossEncoder as STCrossEncoder
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("model_folders")
    out = {"bi/transformers": Path(tiny_bert_dir)}

    torch.manual_seed(1)
    hf_cross = BertForSequenceClassification(_bert_config(num_labels=1)).eval()
    out["cross/transformers"] = root / "cross-transformers"
    hf_cross.save_pretrained(out["cross/transformers"])
    _copy_tokenizer(Path(tiny_bert_dir), out["cross/transformers"])

    out["cross/rankface"] = root / "cross-rankface"
    CrossEncoder.from_pretrained(out["cross/transformers"], max_length=40, device="cpu").save_pretrained(
        out["cross/rankface"])
    out["cross/sentence-transformers"] = root / "cross-st"
    STCrossEncoder(str(out["cross/transformers"]), num_labels=1, device="cpu").save_pretrained(
        str(out["cross/sentence-transformers"]))

    bi = BiEncoder.from_pretrained(tiny_bert_dir, max_length=40, device="cpu")
    out["bi/rankface"] = root / "bi-rankface"
    bi.save_pretrained(out["bi/rankface"])
    torch.manual_seed(2)
    bi.freeze_document_tower()
    with torch.no_grad():  # the query tower moves away from the document tower, as query-side training does
        for p in bi.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out["bi/rankface-two-towers"] = root / "bi-rankface-two-towers"
    bi.save_pretrained(out["bi/rankface-two-towers"])
    out["bi/sentence-transformers"] = root / "bi-st"
    SentenceTransformer(str(tiny_bert_dir), device="cpu").save(str(out["bi/sentence-transformers"]))

    torch.manual_seed(3)
    pair = CETModel.from_encoders(tiny_bert_dir, selection="mlp", max_length=40, head_seed=5).eval()
    out["cet/rankface"] = root / "cet-rankface"
    pair.save_pretrained(out["cet/rankface"])
    out["cet/transformers"] = root / "cet-transformers"
    PreTrainedModel.save_pretrained(pair, out["cet/transformers"])  # weights and config only, no tokenizers

    for name, model in _face_models().items():
        out[f"face/{name}"] = root / name
        model.save_pretrained(out[f"face/{name}"])
    return out


def _face_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(4)
    models = {
        "mobilefacenet": MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN)),
        "iresnet": IResNetModel(IResNetConfig(**TINY_IRESNET)),
        "ri": RecognizabilityModel(RecognizabilityConfig(backbone=MobileFaceNetConfig(**TINY_MFN),
                                                         attention_reduction=4)),
    }
    for model in models.values():  # non-trivial BatchNorm statistics, so that losing them would show
        model.train()
        with torch.no_grad():
            model(torch.randn(8, 3, SIZE, SIZE))
        model.eval()
    return models


EXPECTED = {
    "cross/rankface": ("cross", CrossEncoder),
    "cross/sentence-transformers": ("cross", CrossEncoder),
    "cross/transformers": ("cross", CrossEncoder),
    "bi/rankface": ("bi", BiEncoder),
    "bi/rankface-two-towers": ("bi", BiEncoder),
    "bi/sentence-transformers": ("bi", BiEncoder),
    "bi/transformers": ("bi", BiEncoder),
    "cet/rankface": ("cet", CETModel),
    "cet/transformers": ("cet", CETModel),
    "face/mobilefacenet": ("face", MobileFaceNetModel),
    "face/iresnet": ("face", IResNetModel),
    "face/ri": ("face", RecognizabilityModel),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_kind_and_writer_loads_through_the_one_loader(folders, name):
    kind, cls = EXPECTED[name]
    detected = detect_model_kind(folders[name])
    assert detected.kind == kind and detected.evidence and not detected.problems
    model = load_ranker(folders[name]) if kind in ("cet", "face") else load_ranker(folders[name], device="cpu")
    assert type(model) is cls
    # The same object through the package's Auto-style entry point, with the kind checked.
    again = rankface.AutoRanker.from_pretrained(folders[name], kind=kind, **({"device": "cpu"} if kind in
                                                                                ("cross", "bi") else {}))
    assert type(again) is cls


@pytest.mark.numerics
def test_loaded_text_models_score_as_saved(folders, tiny_bert_dir):
    reference_cross = _scores(CrossEncoder.from_pretrained(folders["cross/transformers"], device="cpu"))
    for name in ("cross/rankface", "cross/sentence-transformers"):
        np.testing.assert_allclose(_scores(load_ranker(folders[name], device="cpu")), reference_cross, atol=ATOL)
    # Bi-encoders: the same cosines whichever writer saved the tiny BERT (all mean-pool the same weights).
    reference_bi = _scores(BiEncoder.from_pretrained(tiny_bert_dir, device="cpu"))
    for name in ("bi/rankface", "bi/sentence-transformers", "bi/transformers"):
        np.testing.assert_allclose(_scores(load_ranker(folders[name], device="cpu")), reference_bi, atol=ATOL)
    two = load_ranker(folders["bi/rankface-two-towers"], device="cpu")
    assert two.doc_model is not None
    assert not np.allclose(_scores(two), reference_bi, atol=1e-3)  # its query tower is its own


@pytest.mark.numerics
def test_cet_pair_loads_with_its_members(folders):
    pair = load_ranker(folders["cet/rankface"])
    assert pair.config.relevance_kind == "cross" and pair.config.selection_kind == "mlp"
    assert pair.relevance_tokenizer is not None
    weights_only = load_ranker(folders["cet/transformers"])
    assert weights_only.relevance_tokenizer is None  # plain transformers saved no tokenizer
    for key, value in pair.state_dict().items():
        torch.testing.assert_close(weights_only.state_dict()[key], value, rtol=0, atol=0)  # saved tensors, reloaded
    # As a scorer, a CET pair is its relevance model.
    scorer = load_text_scorer(folders["cet/rankface"], device="cpu")
    assert type(scorer) is CrossEncoder and scorer.max_length == 40
    np.testing.assert_allclose(_scores(scorer), _scores(pair.relevance_scorer()), atol=ATOL)
    with pytest.raises(ModelKindMismatchError, match=r"CET pair \(relevance model: a cross-encoder\).*bi-encoder"):
        load_text_scorer(folders["cet/rankface"], encoder="bi")


@pytest.mark.numerics
def test_face_encoders_load_with_their_weights(folders):
    pixels = torch.randn(3, 3, SIZE, SIZE)
    for name, model in _face_models().items():
        loaded = load_ranker(folders[f"face/{name}"]).eval()
        with torch.inference_mode():
            torch.testing.assert_close(loaded(pixels).embedding, model(pixels).embedding, rtol=1e-5, atol=ATOL)
    detected = detect_model_kind(folders["face/ri"])
    assert detected.description() == "a face encoder (RI (recognizability) encoder)"
    with pytest.raises(ModelFolderError, match="face encoder.*cross- or bi-encoder"):
        load_text_scorer(folders["face/mobilefacenet"])


# ---------------------------------------------------------------------------------------------- wrong folders
def test_kind_mismatch_names_both(folders):
    with pytest.raises(ModelKindMismatchError) as error:
        load_ranker(folders["bi/rankface"], kind="cross")
    message = str(error.value)
    assert "holds a bi-encoder" in message and "kind='cross' asks for a cross-encoder" in message
    assert "rankface_bi_encoder.json" in message and "allow_untrained_head=True" in message
    with pytest.raises(ModelKindMismatchError, match="holds a cross-encoder.*asks for a bi-encoder"):
        load_ranker(folders["cross/sentence-transformers"], kind="bi")
    with pytest.raises(ModelKindMismatchError, match="MobileFaceNet.*asks for a CET pair"):
        load_ranker(folders["face/mobilefacenet"], kind="cet")
    # Asked in so many words, a bi-encoder's weights start a cross-encoder (with a new head).
    model = load_ranker(folders["bi/rankface"], kind="cross", allow_untrained_head=True, device="cpu")
    assert type(model) is CrossEncoder


def test_ambiguous_folder_lists_what_it_found(folders, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(folders["cross/rankface"], mixed)
    (mixed / "rankface_bi_encoder.json").write_text(json.dumps({"max_length": 40, "scale": 20.0}))
    with pytest.raises(ModelFolderError, match="disagree") as error:
        load_ranker(mixed)
    message = str(error.value)
    assert "a cross-encoder: rankface_reranker.json" in message and "a bi-encoder: rankface_bi_encoder.json" in message


def test_unknown_folders_say_what_was_found(folders, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("hello")
    with pytest.raises(ModelFolderError, match=r"cannot tell what model this is\. Found: only README\.md"):
        load_ranker(tmp_path / "notes")
    # A training output folder: the models are one level down, and the error says where.
    run = tmp_path / "training"
    shutil.copytree(folders["bi/rankface"], run / "model")
    (run / "trainer_state.json").write_text("{}")
    with pytest.raises(ModelFolderError, match=r"model folder\(s\) inside it: model/"):
        load_ranker(run)
    masked = tmp_path / "masked-lm"
    BertForMaskedLM(_bert_config()).save_pretrained(masked)
    with pytest.raises(ModelFolderError, match=r"BertForMaskedLM.*neither a scoring head nor a bare encoder"):
        detect_model_kind(masked)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        load_ranker(tmp_path / "runs" / "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match=r"broken/config\.json: not valid JSON"):
        detect_model_kind(tmp_path / "broken")


def test_sentence_transformers_model_rankface_would_score_differently(tiny_bert_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    transformer = Transformer(str(tiny_bert_dir))
    cls_pooled = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "cls")],
                                     device="cpu")
    cls_pooled.save(str(tmp_path / "cls"))
    detected = detect_model_kind(tmp_path / "cls")
    assert detected.kind == "bi" and "pools with ['cls']" in detected.problems[0]
    with pytest.raises(ModelFolderError, match="cannot load faithfully.*mean-pools"):
        load_ranker(tmp_path / "cls")


def test_auto_ranker_is_not_instantiated():
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoRanker()


# ---------------------------------------------------------------------------------------------- Hub ids
@pytest.mark.numerics
@pytest.mark.slow
def test_hub_ids_load_through_the_loader(local_hub, folders):
    from huggingface_hub import HfApi

    api = HfApi()
    for name in ("bi/rankface-two-towers", "cross/sentence-transformers", "face/ri"):
        repo_id = "rankface-test/" + name.replace("/", "-")
        api.create_repo(repo_id)
        api.upload_folder(repo_id=repo_id, folder_path=str(folders[name]))
        kind, cls = EXPECTED[name]
        assert detect_model_kind(repo_id).kind == kind
        kwargs = {"device": "cpu"} if kind in ("cross", "bi") else {}
        model = load_ranker(repo_id, **kwargs)
        assert type(model) is cls
        if kind != "face":
            local = load_ranker(folders[name], **kwargs)
            np.testing.assert_allclose(_scores(model), _scores(local), atol=ATOL)
    with pytest.raises(ModelKindMismatchError, match="rankface-test/bi-rankface-two-towers holds a bi-encoder"):
        load_ranker("rankface-test/bi-rankface-two-towers", kind="cross")
    with pytest.raises(ModelFolderError, match="rankface-test/nothing-here"):
        load_ranker("rankface-test/nothing-here")


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    from test_training import write_collection

    from rankface.cli import main

    collection = write_collection(tmp_path_factory.mktemp("synthetic"))
    index = tmp_path_factory.mktemp("index") / "index"
    assert main(["index", "--corpus", str(collection / "corpus.jsonl"), "--index", str(index)]) == 0
    return collection, index


def _rerank(indexed, model: Path, output: Path, *extra: str) -> int:
    from rankface.cli import main

    collection, index = indexed
    return main(["rerank", "--index", str(index), "--topics", str(collection / "queries.dev.tsv"), "--model",
                 str(model), "--hits", "6", "--output", str(output), "--quiet", *extra])


def cli_error(call, capsys) -> str:
    """The message of a CLI call that must fail: printed with exit status 2, or raised as a `ValueError`."""
    try:
        status = call()
    except ValueError as error:
        return str(error)
    assert status == 2
    return capsys.readouterr().err


def _same_run(a: Path, b: Path) -> None:
    from rankface.retrieval.trec import read_run

    run_a, run_b = read_run(a), read_run(b)
    assert set(run_a) == set(run_b) and all(set(run_a[q]) == set(run_b[q]) for q in run_a)
    for qid in run_a:  # one model, loaded twice: see ATOL
        np.testing.assert_allclose([run_a[qid][d] for d in sorted(run_a[qid])],
                                   [run_b[qid][d] for d in sorted(run_a[qid])], atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "right", "wrong"), [("bi/rankface", "bi", "cross"),
                                                      ("cross/rankface", "cross", "bi")])
@pytest.mark.numerics
def test_rerank_without_encoder_is_the_run_with_the_right_flag(indexed, folders, tmp_path, capsys, name, right, wrong):
    assert _rerank(indexed, folders[name], tmp_path / "auto.trec") == 0
    assert _rerank(indexed, folders[name], tmp_path / "flag.trec", "--encoder", right) == 0
    _same_run(tmp_path / "auto.trec", tmp_path / "flag.trec")

    message = cli_error(lambda: _rerank(indexed, folders[name], tmp_path / "wrong.trec", "--encoder", wrong), capsys)
    assert f"holds {'a bi-encoder' if right == 'bi' else 'a cross-encoder'}" in message
    assert f"--encoder {wrong} asks for" in message and "leave out --encoder" in message.lower()
    assert not (tmp_path / "wrong.trec").exists()


@pytest.mark.slow
def test_rerank_takes_a_cet_pair_as_its_relevance_model(indexed, folders, tmp_path):
    pair = load_ranker(folders["cet/rankface"])
    pair.export_relevance(tmp_path / "relevance")
    assert _rerank(indexed, folders["cet/rankface"], tmp_path / "pair.trec") == 0
    assert _rerank(indexed, tmp_path / "relevance", tmp_path / "relevance.trec", "--encoder", "cross") == 0
    _same_run(tmp_path / "pair.trec", tmp_path / "relevance.trec")
