"""A cross-encoder never scores with a scoring head that was newly initialised, unless asked in so many words.

The failure this guards against (issue 12): a bi-encoder's folder given to `rankface rerank` loaded as a
cross-encoder with a random head, ranked by noise, and wrote a plausible run with exit status 0.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification

from rankface.models.bi_encoder import BiEncoder
from rankface.models.cross_encoder import CrossEncoder, UntrainedHeadError
from rankface.training.arguments import RerankerTrainingArguments
from rankface.training.loop import load_text_model


@pytest.fixture(scope="module")
def bi_encoder_dir(tiny_bert_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bi")
    BiEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu").save_pretrained(path)
    return path


def test_plain_encoder_is_refused_with_the_missing_weights_and_the_remedy(tiny_bert_dir):
    with pytest.raises(UntrainedHeadError) as error:
        CrossEncoder.from_pretrained(tiny_bert_dir, device="cpu")
    message = str(error.value)
    assert "classifier.bias, classifier.weight" in message and "['BertModel']" in message
    assert "rankface train --encoder cross" in message and "allow_untrained_head=True" in message
    assert isinstance(error.value, ValueError)  # callers catching ValueError keep working


def test_bi_encoder_folder_is_refused_and_named(bi_encoder_dir):
    # The case of the issue: a rankface bi-encoder (sentence-transformers layout) given where a reranker belongs.
    with pytest.raises(UntrainedHeadError, match=r"is a bi-encoder folder .*load it with BiEncoder\.from_pretrained "
                                                 r"or rankface\.load_ranker"):
        CrossEncoder.from_pretrained(bi_encoder_dir, device="cpu")


def test_head_weights_missing_from_a_reranker_checkpoint_are_refused(tiny_bert_dir, tmp_path):
    """The check reads the weights, not config.json: a `*ForSequenceClassification` config without its head."""
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    CrossEncoder.from_pretrained(tmp_path, device="cpu")  # whole: loads
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(UntrainedHeadError, match=r"classifier\.bias, classifier\.weight"):
        CrossEncoder.from_pretrained(tmp_path, device="cpu")


def test_trained_head_loads_and_scores_as_saved(tiny_bert_dir, tmp_path):
    torch.manual_seed(0)
    start = CrossEncoder.from_pretrained(tiny_bert_dir, max_length=32, device="cpu", allow_untrained_head=True)
    start.save_pretrained(tmp_path)
    loaded = CrossEncoder.from_pretrained(tmp_path, device="cpu")  # the head is in the checkpoint now
    torch.testing.assert_close(loaded.model.classifier.weight, start.model.classifier.weight, rtol=0, atol=0)


def test_allowed_new_head_is_the_training_start(tiny_bert_dir):
    """Training starts from a plain encoder as before: a new one-logit head and an identity BERT pooler."""
    model = CrossEncoder.from_pretrained(tiny_bert_dir, device="cpu", allow_untrained_head=True)
    assert model.model.classifier.out_features == 1
    pooler = model.model.bert.pooler.dense
    torch.testing.assert_close(pooler.weight, torch.eye(pooler.in_features), rtol=0, atol=0)
    # The recipe's loader allows it by default (the training start) and refuses it when asked to score.
    args = RerankerTrainingArguments(encoder="cross", model_name_or_path=str(tiny_bert_dir), max_length=32)
    assert isinstance(load_text_model(args), CrossEncoder)
    with pytest.raises(UntrainedHeadError):
        load_text_model(args, allow_untrained_head=False)


@pytest.mark.slow
def test_rerank_cannot_score_with_an_untrained_head(bi_encoder_dir, tmp_path, capsys):
    from test_loader import cli_error
    from test_training import write_collection

    from rankface.cli import main
    from rankface.retrieval.trec import read_run

    collection = write_collection(tmp_path / "synthetic")
    index = tmp_path / "index"
    assert main(["index", "--corpus", str(collection / "corpus.jsonl"), "--index", str(index)]) == 0
    common = ["rerank", "--index", str(index), "--topics", str(collection / "queries.dev.tsv"), "--model",
              str(bi_encoder_dir), "--hits", "5", "--quiet", "--encoder", "cross"]

    # Before issue 12 this wrote a run ranked by a random head and exited 0.
    message = cli_error(lambda: main([*common, "--output", str(tmp_path / "noise.trec")]), capsys)
    assert "holds a bi-encoder" in message and "--encoder cross" in message and "--allow-untrained-head" in message
    assert not (tmp_path / "noise.trec").exists()

    # Asked for in so many words, it runs (e.g. to time a model whose scores do not matter).
    assert main([*common, "--allow-untrained-head", "--output", str(tmp_path / "asked.trec")]) == 0
    topics = {line.split("\t", 1)[0] for line in (collection / "queries.dev.tsv").read_text().splitlines()}
    run = read_run(tmp_path / "asked.trec")
    assert run and set(run) <= topics
