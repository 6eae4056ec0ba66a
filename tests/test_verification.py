"""Verification / identification metrics against independent, loop-based computations written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from rankface.evaluation.verification import (
    best_threshold,
    cosine_pair_scores,
    evaluate_pairs_at_resolution,
    evaluate_verification,
    gallery_probe_split,
    identification_accuracy,
    kfold_accuracy,
    plot_accuracy_vs_resolution,
    roc_auc,
    tar_at_far,
)


def _pairs(n=200, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.5
    scores = rng.normal(0.0, 1.0, n) + 1.2 * labels
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


def _ref_accuracy(scores, labels, t):
    return sum((s > t) == bool(y) for s, y in zip(scores, labels)) / len(scores)


def _ref_best_threshold(scores, labels):
    distinct = sorted({float(s) for s in scores})
    candidates = [distinct[0] - 1.0] + [(a + b) / 2 for a, b in itertools.pairwise(distinct)] + [distinct[-1] + 1.0]
    best, best_acc = None, -1.0
    for t in candidates:  # first maximum = smallest threshold
        acc = _ref_accuracy(scores, labels, t)
        if acc > best_acc:
            best, best_acc = t, acc
    return best


@pytest.mark.parametrize("ties", [False, True])
def test_best_threshold_matches_brute_force(ties):
    scores, labels = _pairs(150, seed=1, ties=ties)
    assert best_threshold(scores, labels) == pytest.approx(_ref_best_threshold(scores, labels))


def test_kfold_accuracy_matches_loop():
    scores, labels = _pairs(300, seed=2, ties=True)
    got = kfold_accuracy(scores, labels, n_folds=10)
    accs = []
    for k in range(10):
        test = list(range(30 * k, 30 * k + 30))
        train = [i for i in range(300) if i not in test]
        t = _ref_best_threshold(scores[train], labels[train])
        accs.append(_ref_accuracy(scores[test], labels[test], t))
    assert got["fold_accuracies"] == pytest.approx(accs)
    assert got["accuracy"] == pytest.approx(sum(accs) / 10)
    mean = sum(accs) / 10
    assert got["std"] == pytest.approx(math.sqrt(sum((a - mean) ** 2 for a in accs) / 10))
    # Explicit folds (interleaved) give the same as the loop over those folds.
    folds = np.arange(300) % 3
    explicit = kfold_accuracy(scores, labels, folds=folds)
    for k, acc in zip(explicit["folds"], explicit["fold_accuracies"]):
        t = _ref_best_threshold(scores[folds != k], labels[folds != k])
        assert acc == pytest.approx(_ref_accuracy(scores[folds == k], labels[folds == k], t))
    with pytest.raises(ValueError, match="equal folds"):
        kfold_accuracy(scores[:299], labels[:299])


def test_auc_matches_pair_counting():
    scores, labels = _pairs(120, seed=3, ties=True)
    pos, neg = scores[labels], scores[~labels]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
    with pytest.raises(ValueError, match="both genuine and impostor"):
        roc_auc(scores[labels], labels[labels])


@pytest.mark.parametrize("far", [0.0, 0.01, 0.05, 0.1, 1.0])
def test_tar_at_far_matches_counting(far):
    scores, labels = _pairs(400, seed=4)
    tar, threshold = tar_at_far(scores, labels, far)
    impostors = sorted(scores[~labels], reverse=True)
    allowed = math.floor(far * len(impostors) + 1e-9)
    # Reference: the lowest threshold among impostor scores (or -inf) that accepts at most `allowed` impostors.
    candidates = [-math.inf] + impostors
    ref_t = min(t for t in candidates if sum(s > t for s in impostors) <= allowed)
    ref_tar = sum(s > ref_t for s in scores[labels]) / labels.sum()
    assert threshold == ref_t
    assert tar == pytest.approx(ref_tar)


def test_evaluate_verification_bundle():
    scores, labels = _pairs(600, seed=5)
    result = evaluate_verification(scores, labels)
    assert set(result.tar_at_far) == {0.01, 0.001}
    assert 0.5 < result.accuracy <= 1.0 and 0.5 < result.auc <= 1.0
    assert result.as_dict()["tar@far=0.01"] == result.tar_at_far[0.01]


def test_identification_matches_loop():
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(8, 16))
    labels = np.repeat(np.arange(8), 4)
    emb = centres[labels] + 0.9 * rng.normal(size=(32, 16))
    gallery, probes = gallery_probe_split(labels, seed=1)
    assert len(gallery) == 8 and len(probes) == 24 and not set(gallery) & set(probes)
    assert sorted(labels[gallery].tolist()) == list(range(8))
    got = identification_accuracy(emb[gallery], labels[gallery], emb[probes], labels[probes], ranks=(1, 3, 5))
    for k in (1, 3, 5):
        hits = 0
        for q in probes:
            sims = []
            for g in gallery:
                a, b = emb[q], emb[g]
                sims.append((float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))), labels[g]))
            sims.sort(key=lambda item: -item[0])
            hits += labels[q] in [lab for _, lab in sims[:k]]
        assert got[k] == pytest.approx(hits / len(probes))
    with pytest.raises(ValueError, match="no gallery entry"):
        identification_accuracy(emb[:4], labels[:4], emb[4:8], labels[4:8])


def test_pairs_at_resolution_matches_manual_pipeline():
    from rankface.data.faces import degrade_exact
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

    torch.manual_seed(0)
    model = MobileFaceNetModel(MobileFaceNetConfig(
        input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2], [2, 8, 1, 2]], last_channels=16,
        embedding_size=8)).eval()
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    pairs = np.array([[0, 1], [2, 3], [4, 5], [0, 2], [1, 4], [3, 5], [0, 5], [2, 4], [1, 3], [0, 4]])
    same = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0], dtype=bool)

    def embed(img):
        x = torch.from_numpy(((img.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1))[None]
        with torch.no_grad():
            return model(x).embedding[0].numpy()

    for setting in ("lr-lr", "hr-lr"):
        got = evaluate_pairs_at_resolution(model, images, pairs, same, 8, setting=setting, folds=np.arange(10) % 2)
        first = [embed(degrade_exact(images[i], 8) if setting == "lr-lr" else images[i]) for i in pairs[:, 0]]
        second = [embed(degrade_exact(images[j], 8)) for j in pairs[:, 1]]
        scores = cosine_pair_scores(np.stack(first), np.stack(second))
        want = kfold_accuracy(scores, same, folds=np.arange(10) % 2)["accuracy"]
        assert got.accuracy == pytest.approx(want)
        assert got.auc == pytest.approx(roc_auc(scores, same), abs=1e-6)


def test_plot_writes_png(tmp_path):
    path = plot_accuracy_vs_resolution(
        {"LR-LR": {112: 99.4, 24: 92.0, 16: 81.1, 8: 68.3}, "HR-LR": {24: 95.0, 16: 79.7, 8: 56.0}},
        tmp_path / "plots" / "acc.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["acc.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="no curves"):
        plot_accuracy_vs_resolution({}, tmp_path / "x.png")
