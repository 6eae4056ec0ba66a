"""The query-domain gate (models/bi_encoder/domain_gate.py): its formula against one written here, its two limits on
a real query-side model, save/load, and the training setting that attaches it."""

from __future__ import annotations

import numpy as np
import pytest
from test_robust import collection, query_side  # noqa: F401 - the module-scoped synthetic collection fixture

from rankface.models.bi_encoder.domain_gate import QueryDomainGate
from rankface.models.bi_encoder.modeling_bi_encoder import BiEncoder
from rankface.training import parse_training_args


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_gate_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    bank, start, trained = (unit(rng.normal(size=(n, 8))).astype(np.float32) for n in (30, 6, 6))
    gate = QueryDomainGate(bank, threshold=0.2, temperature=0.07, k=4)
    for i in range(len(start)):
        cosines = sorted((float(np.dot(start[i], b)) for b in bank), reverse=True)
        s = sum(cosines[:4]) / 4
        alpha = 1 / (1 + np.exp(-(s - 0.2) / 0.07))
        mixed = (1 - alpha) * start[i] + alpha * trained[i]
        np.testing.assert_allclose(gate.similarity(start)[i], s, atol=1e-6)
        np.testing.assert_allclose(gate.weights(start)[i], alpha, atol=1e-6)
        np.testing.assert_allclose(gate.mix(start, trained)[i], mixed / np.linalg.norm(mixed), atol=1e-6)
    # a training query itself (cosine 1 to its own bank row) with k = 1 is fully in the domain
    assert QueryDomainGate(bank, 0.9, 0.001, k=1).weights(bank[:3]) == pytest.approx([1.0] * 3)


@pytest.mark.parametrize("field, value, message", [
    ("threshold", 1.5, "domain_gate_threshold must be a cosine"),
    ("temperature", 0.0, "domain_gate_temperature must be > 0"),
    ("k", 0, "domain_gate_k must be an integer >= 1"),
])
def test_bad_gate_settings_are_named(field, value, message):
    values = {"threshold": 0.5, "temperature": 0.05, "k": 5} | {field: value}
    with pytest.raises(ValueError, match=message):
        QueryDomainGate(np.ones((2, 3), np.float32), **values)


@pytest.fixture(scope="module")
def tuned(collection, tiny_bert_dir, tmp_path_factory):  # noqa: F811 - the fixture imported above
    return query_side(collection, tiny_bert_dir, tmp_path_factory.mktemp("gate") / "run", max_steps=4)


def test_gate_limits_give_the_trained_tower_and_the_start(tuned):
    model = BiEncoder.from_pretrained(tuned, device="cpu")
    queries = ["a query about vitamins", "wing lift at high mach number", "third query"]
    trained = model.encode_query(queries, precision="fp32")
    start = model.encode(queries, precision="fp32", tower="document")
    assert not np.allclose(trained, start, atol=1e-4), "training did not move the query tower"
    model.attach_domain_gate(["some training query", "another one"], threshold=-1.0, temperature=1e-3)
    np.testing.assert_allclose(model.encode_query(queries, precision="fp32"), trained, atol=1e-5)
    model.domain_gate.threshold = 1.0  # no query is that near: every query falls back to the start
    np.testing.assert_allclose(model.encode_query(queries, precision="fp32"), start, atol=1e-5)


def test_gate_is_saved_and_loaded_with_the_model(tuned, tmp_path):
    model = BiEncoder.from_pretrained(tuned, device="cpu")
    gate = model.attach_domain_gate(["vitamin d and bones", "fish oil", "statins"], threshold=0.3, temperature=0.1,
                                    k=2)
    queries = ["vitamin c", "supersonic flow over a cone"]
    before = model.encode_query(queries, precision="fp32")
    model.save_pretrained(tmp_path / "gated")
    loaded = BiEncoder.from_pretrained(tmp_path / "gated", device="cpu")
    assert loaded.domain_gate.settings() == gate.settings() == {"threshold": 0.3, "temperature": 0.1, "k": 2,
                                                                "queries": 3}
    np.testing.assert_array_equal(loaded.domain_gate.bank, gate.bank)
    np.testing.assert_allclose(loaded.encode_query(queries, precision="fp32"), before, atol=1e-6)
    (tmp_path / "gated" / "domain_gate_bank.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="domain_gate_bank.safetensors is missing"):
        BiEncoder.from_pretrained(tmp_path / "gated", device="cpu")


def test_a_one_tower_model_refuses_a_gate(tiny_bert_dir):
    with pytest.raises(ValueError, match="query-side training only"):
        BiEncoder.from_pretrained(tiny_bert_dir, device="cpu").attach_domain_gate(["q"], 0.5)


def test_the_setting_attaches_a_gate_over_the_training_queries(collection, tiny_bert_dir, tmp_path):  # noqa: F811
    folder = query_side(collection, tiny_bert_dir, tmp_path / "run", max_steps=2, domain_gate_threshold=0.4,
                        domain_gate_temperature=0.02, domain_gate_k=3)
    from rankface.data.ir import load_collection

    model = BiEncoder.from_pretrained(folder, device="cpu")
    train_queries = load_collection(collection).queries("train")
    assert model.domain_gate.settings() == {"threshold": 0.4, "temperature": 0.02, "k": 3,
                                            "queries": len(train_queries)}
    # a training query is its own nearest neighbour (cosine 1)
    start = model.encode(list(train_queries.values())[:2], precision="fp32", tower="document")
    assert model.domain_gate.similarity(start).max() > 0.5
    card = (folder / "README.md").read_text()
    assert "`domain_gate`: threshold 0.4, temperature 0.02, k 3" in card
    assert "sentence-transformers loads the trained query tower alone" in card


def test_the_setting_is_refused_off_query_side_training(collection, tiny_bert_dir, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="domain_gate_threshold needs encoder 'bi' with training_mode 'query_side'"):
        parse_training_args(["--collection", str(collection), "--model_name_or_path", str(tiny_bert_dir),
                             "--encoder", "bi", "--training_mode", "full", "--domain_gate_threshold", "0.5",
                             "--output_dir", str(tmp_path / "x")])


def test_the_gate_command_writes_a_gated_copy(collection, tuned, tmp_path, capsys):  # noqa: F811
    from rankface.cli import main
    from rankface.data.ir import load_collection
    from rankface.training.data import training_queries

    out = tmp_path / "gated"
    assert main(["gate", "--model", str(tuned), "--collection", str(collection), "--threshold", "0.3",
                 "--k", "2", "--output", str(out)]) == 0
    assert main(["gate", "--model", str(tuned), "--collection", str(collection), "--exclude-queries-in", "test",
                 "--threshold", "0.3", "--output", str(tmp_path / "bad")]) == 2  # no such split: named, nothing written
    assert not (tmp_path / "bad").exists()
    assert "gated over" in capsys.readouterr().out
    gate = BiEncoder.from_pretrained(out, device="cpu").domain_gate
    expected = training_queries(load_collection(collection), "train")
    assert gate.settings() == {"threshold": 0.3, "temperature": 0.05, "k": 2, "queries": len(expected)}
    assert BiEncoder.from_pretrained(tuned, device="cpu").domain_gate is None  # the source model is left as it was
