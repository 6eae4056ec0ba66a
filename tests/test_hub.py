"""Model cards render from the bundled templates; a model round-trips through a local Hub-compatible server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from numerics import ACROSS_PATHS

from rankface.hub import CARD_SPECS, push_model_to_hub, render_model_card

METRICS = [
    {"name": "nDCG@10", "type": "ndcg_at_10", "value": 0.3412, "dataset": "NFCorpus", "dataset_type": "beir/nfcorpus",
     "split": "test", "config": "BM25 top-100"},
    {"name": "RR@10", "type": "mrr_at_10", "value": 0.5123, "dataset": "NFCorpus", "dataset_type": "beir/nfcorpus",
     "split": "test"},
]
FACE_INPUT = {"alignment": "ArcFace five-point template", "size": "112 x 112", "colour_order": "RGB",
              "mean": [0.5, 0.5, 0.5], "std": [0.502, 0.502, 0.502]}
FACE_METRICS = [{"name": "Accuracy", "type": "accuracy", "value": 0.874, "dataset": "LFW",
                 "dataset_type": "lfw112", "split": "test", "config": "LR-LR 16 px"}]

FIELDS = {
    "reranker": {
        "model_name": "user/tiny-reranker", "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "apache-2.0", "datasets": ["BeIR/nfcorpus"], "training_data": "NFCorpus train queries.",
        "label_protocol": "Pool = BM25 top-20; one labelled positive per query; the rest unlabelled.",
        "loss": {"name": "CET", "temperature": 0.5, "negatives": 7}, "metrics": METRICS,
    },
    "face_encoder": {
        "model_name": "user/tiny-face", "license": "other", "datasets": ["lfw"],
        "training_data": "LFW train identities (identity-disjoint split).",
        "training_data_license": "research use only", "input": FACE_INPUT, "metrics": FACE_METRICS,
        "loss": {"name": "ArcFace + UNPG", "margin": 0.5},
    },
    "ri_encoder": {
        "model_name": "user/tiny-ri", "license": "other", "datasets": ["lfw"],
        "training_data": "LFW train identities.", "training_data_license": "research use only",
        "input": FACE_INPUT, "metrics": FACE_METRICS,
        "quality": {"range": "about [-4, 4]", "calibration": "mean RI of unrecognizable images: -0.31"},
    },
}


@pytest.mark.parametrize("template", sorted(CARD_SPECS))
def test_card_renders_valid_metadata_and_every_field(template):
    fields = FIELDS[template]
    card = ModelCard(render_model_card(template, **fields))  # parses the YAML front matter and the model-index
    assert card.data.library_name == "rankface"
    assert card.data.license == fields["license"]
    assert card.data.datasets == fields["datasets"]
    got = {(r.dataset_name, r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results}
    assert got == {(m["dataset"], m["split"], m["type"], m["value"]) for m in fields["metrics"]}
    for metric in fields["metrics"]:  # the Markdown table carries every row too
        assert f"| {metric['name']} | {metric['value']} |" in card.text
    assert f"# {fields['model_name']}" in card.text


def test_reranker_card_cites_cet_only_when_cet_was_used():
    fields = FIELDS["reranker"]
    assert "2209.05072" in render_model_card("reranker", **fields)
    plain = render_model_card("reranker.md.j2", **{**fields, "loss": {"name": "listwise", "negatives": 7}})
    assert "2209.05072" not in plain and "- `negatives`: 7" in plain
    assert ModelCard(plain).data.base_model == fields["base_model"]


def test_face_cards_carry_input_contract_licence_and_quality():
    face = render_model_card("face_encoder", **FIELDS["face_encoder"])
    assert "| Colour order | RGB |" in face and "research use only" in face and "## Limitations and bias" in face
    assert "## Quality score" not in face and "base_model" not in ModelCard(face).data.to_dict()
    ri = render_model_card("ri_encoder", **FIELDS["ri_encoder"])
    assert "**Range:** about [-4, 4]" in ri and "higher means more recognizable" in ri
    assert "mean RI of unrecognizable images: -0.31" in ri and "face-image-quality" in ModelCard(ri).data.tags


@pytest.mark.parametrize("template", sorted(CARD_SPECS))
def test_missing_required_field_is_named(template):
    for field in CARD_SPECS[template].required:
        fields = {k: v for k, v in FIELDS[template].items() if k != field}
        with pytest.raises(ValueError, match=rf"missing required field\(s\) '{field}'"):
            render_model_card(template, **fields)


def test_malformed_fields_are_named():
    fields = FIELDS["ri_encoder"]
    with pytest.raises(ValueError, match=r"quality\.calibration"):
        render_model_card("ri_encoder", **{**fields, "quality": {"range": "[-4, 4]"}})
    with pytest.raises(ValueError, match=r"metrics\[0\]\.value"):
        render_model_card("ri_encoder", **{**fields, "metrics": [{**FACE_METRICS[0], "value": None}]})
    with pytest.raises(ValueError, match=r"unknown field\(s\) 'licence'"):
        render_model_card("face_encoder", **FIELDS["face_encoder"], licence="mit")
    with pytest.raises(FileNotFoundError, match="no_such_card"):
        render_model_card("no_such_card", **fields)


def test_own_template_file(tmp_path):
    path = tmp_path / "mine.md.j2"
    path.write_text("---\nlicense: {{ license }}\n---\n# {{ model_name }}\n")
    assert render_model_card(str(path), license="mit", model_name="x") == "---\nlicense: mit\n---\n# x\n"
    with pytest.raises(ValueError, match="'model_name' is undefined"):
        render_model_card(str(path), license="mit")


def _tiny_reranker():
    from tiny_models import tiny_tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = tiny_tokenizer(["what", "is", "a", "reranker", "it", "orders", "documents", "the", "cat", "sat", "on",
                                "mat", "##s", "."])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=1)
    return BertForSequenceClassification(config).eval(), tokenizer


def _scores(model, tokenizer) -> torch.Tensor:
    pairs = [("what is a reranker", "it orders documents ."), ("the cat", "the cat sat on the mats")]
    batch = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).logits


@pytest.mark.numerics
@pytest.mark.slow
def test_push_then_load_from_local_hub(local_hub):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = _tiny_reranker()
    repo_id = "rankface-test/tiny-reranker"
    fields = {**FIELDS["reranker"], "model_name": repo_id}
    url = push_model_to_hub(model, repo_id, fields, "reranker", tokenizer=tokenizer, commit_message="tiny")
    assert url.startswith(f"{local_hub.url}/{repo_id}/commit/")

    info = HfApi().model_info(repo_id)
    names = {s.rfilename for s in info.siblings}
    assert {"README.md", "config.json", "model.safetensors", "tokenizer_config.json"} <= names

    loaded = AutoModelForSequenceClassification.from_pretrained(repo_id).eval()
    loaded_tokenizer = AutoTokenizer.from_pretrained(repo_id)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    # The loaded weights sit at other offsets in memory, where MKL may sum in another order: float noise, not bit
    # for bit (tests/numerics.py).
    torch.testing.assert_close(_scores(loaded, loaded_tokenizer), _scores(model, tokenizer), **ACROSS_PATHS)

    folder = Path(snapshot_download(repo_id))
    assert {p.name for p in folder.iterdir()} == names
    card = ModelCard.load(folder / "README.md")
    assert card.content == render_model_card("reranker", **fields)
    assert card.data.base_model == fields["base_model"] and "2209.05072" in card.text
    for sibling in info.siblings:  # every file came back byte for byte (git blob ids match)
        data = (folder / sibling.rfilename).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == sibling.blob_id

    # A second push to the existing repo makes a new commit that the client resolves as "main".
    first = info.sha
    push_model_to_hub(model, repo_id, {**fields, "license": "mit"}, "reranker", tokenizer=tokenizer)
    assert HfApi().model_info(repo_id).sha != first
    assert ModelCard.load(repo_id).data.license == "mit"


@pytest.mark.numerics
@pytest.mark.slow
def test_push_rankface_cross_encoder_wrapper(local_hub):
    from rankface.models.cross_encoder import CrossEncoder

    model, tokenizer = _tiny_reranker()
    reranker = CrossEncoder(model, tokenizer, max_length=48)
    repo_id = "rankface-test/tiny-cross-encoder"
    push_model_to_hub(reranker, repo_id, {**FIELDS["reranker"], "model_name": repo_id}, "reranker", private=True)
    assert HfApi().model_info(repo_id).private is True

    loaded = CrossEncoder.from_pretrained(repo_id, max_length=48, device="cpu")
    pairs = [("what is a reranker", "it orders documents ."), ("the cat", "the mat")]
    expected = reranker.predict(pairs, precision="fp32")
    np.testing.assert_allclose(loaded.predict(pairs, precision="fp32"), expected, **ACROSS_PATHS)  # loaded: see above


def test_local_hub_hides_private_repos_without_token(local_hub):
    api = HfApi()
    api.create_repo("rankface-test/secret", private=True)
    assert api.model_info("rankface-test/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("rankface-test/secret")
