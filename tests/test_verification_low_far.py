"""Low-FAR evaluation over every pair of a set of images (evaluation/verification.py) against brute force written
here: explicit pair lists built with loops, explicit copies of resampled identities, plain sorting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankface.evaluation.verification import (
    all_pair_scores,
    bootstrap_difference,
    identity_resamples,
    low_far_evaluation,
    low_far_figures,
)

FARS = (0.05, 0.01, 0.003)
PERCENTILES = (95.0, 99.0)


def _faces(seed=0, identities=12):
    """Clustered embeddings: 1-4 images per identity, 8 dims, some score ties (rounded)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, identities)
    labels = np.repeat(np.arange(identities) * 7 + 3, counts)  # labels need not be 0..I-1
    centres = rng.normal(size=(identities, 8))
    x = np.repeat(centres, counts, axis=0) + rng.normal(scale=1.2, size=(labels.size, 8))
    lr = x + rng.normal(scale=1.5, size=x.shape)
    return np.round(x, 2), np.round(lr, 2), labels


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _brute_pairs(first, second, labels, setting, group=None):
    """(genuine scores, impostor scores) by loops; `group` (copy id per image) excludes pairs of two different copies
    of one identity and makes genuine pairs only within a copy."""
    group = np.zeros(labels.size, int) if group is None else group
    genuine, impostor = [], []
    n = labels.size
    for i in range(n):
        for j in range(n):
            if (setting == "lr-lr" and j <= i) or (setting == "hr-lr" and j == i):
                continue
            s = _cos(first[i], second[j])
            if labels[i] != labels[j]:
                impostor.append(s)
            elif group[i] == group[j]:
                genuine.append(s)
    return np.array(genuine), np.array(impostor)


def _brute_figures(genuine, impostor, far):
    ordered = sorted(impostor, reverse=True)
    allowed = math.floor(far * len(ordered) + 1e-9)
    threshold = ordered[allowed] if allowed < len(ordered) else -math.inf
    return sum(g > threshold for g in genuine) / len(genuine), threshold


@pytest.mark.parametrize("setting", ["lr-lr", "hr-lr"])
def test_all_pair_figures_match_brute_force_over_every_pair(setting):
    hr, lr, labels = _faces()
    first, second = (lr, None) if setting == "lr-lr" else (hr, lr)
    # blocks of 3 rows: many blocks, so the running tail is merged many times
    pairs = all_pair_scores(first, second, labels, setting, tail_share=0.2, max_block_bytes=8 * labels.size * 3)
    genuine, impostor = _brute_pairs(first, lr, labels, setting)
    assert pairs.num_impostors == impostor.size
    np.testing.assert_allclose(np.sort(pairs.genuine_scores), np.sort(genuine), atol=1e-12)
    assert pairs.tail_scores.size == math.ceil(0.2 * impostor.size)
    np.testing.assert_allclose(pairs.tail_scores, np.sort(impostor)[::-1][: pairs.tail_scores.size], atol=1e-12)
    got = low_far_figures(pairs, None, FARS, PERCENTILES)
    for far in FARS:
        tar, threshold = _brute_figures(genuine, impostor, far)
        assert got[f"tar@{far:g}"][0] == pytest.approx(tar, abs=1e-12)
        assert got[f"threshold@{far:g}"][0] == pytest.approx(threshold, abs=1e-12)
    for q in PERCENTILES:  # the (floor((1 - q/100) n) + 1)-th highest impostor score
        k = math.floor(round(1 - q / 100, 12) * impostor.size + 1e-9)
        assert got[f"p{q:g}"][0] == pytest.approx(np.sort(impostor)[::-1][k], abs=1e-12)


@pytest.mark.parametrize("setting", ["lr-lr", "hr-lr"])
def test_an_identity_resample_equals_the_figures_of_explicit_copies(setting):
    hr, lr, labels = _faces(seed=1)
    first = lr if setting == "lr-lr" else hr
    pairs = all_pair_scores(first, None if setting == "lr-lr" else lr, labels, setting, tail_share=1.0)
    identities = np.unique(labels)
    draws = identity_resamples(identities.size, 3, seed=5)
    got = low_far_figures(pairs, draws, FARS, PERCENTILES)
    for r, counts in enumerate(draws):
        rows, group = [], []
        for ident, m in zip(identities, counts, strict=True):
            for copy in range(m):
                members = np.flatnonzero(labels == ident).tolist()
                rows += members
                group += [copy] * len(members)
        rows, group = np.array(rows), np.array(group)
        genuine, impostor = _brute_pairs(first[rows], lr[rows], labels[rows], setting, group)
        for far in FARS:
            tar, threshold = _brute_figures(genuine, impostor, far)
            assert got[f"tar@{far:g}"][r] == pytest.approx(tar, abs=1e-12)
            assert got[f"threshold@{far:g}"][r] == pytest.approx(threshold, abs=1e-12)


def test_a_tail_too_short_for_a_resample_is_an_error_not_a_wrong_figure():
    _, lr, labels = _faces(seed=2)
    pairs = all_pair_scores(lr, None, labels, "lr-lr", tail_share=0.004)  # one or two impostors kept
    with pytest.raises(ValueError, match="raise tail_share"):
        low_far_figures(pairs, None, (0.05,), ())


def test_identity_resamples_are_deterministic_and_keep_the_identity_count():
    a, b = identity_resamples(9, 4, seed=3), identity_resamples(9, 4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 9) and (a.sum(axis=1) == 9).all()
    assert not np.array_equal(a, identity_resamples(9, 4, seed=4))


def test_low_far_evaluation_intervals_hold_the_observed_figure_and_paired_difference_detects_a_shift():
    _, lr, labels = _faces(seed=3, identities=30)
    pairs = all_pair_scores(lr, None, labels, "lr-lr", tail_share=0.5)
    ev = low_far_evaluation(pairs, resamples=200, seed=0, fars=(0.05,), percentiles=(95.0,))
    lo, hi = ev["ci95"]["tar@0.05"]
    assert lo <= ev["figures"]["tar@0.05"] <= hi and lo < hi
    assert ev["boot"]["tar@0.05"].shape == (200,)
    same = bootstrap_difference(ev["boot"]["tar@0.05"], ev["boot"]["tar@0.05"])
    assert same["p"] == 1.0
    shifted = bootstrap_difference(ev["boot"]["tar@0.05"] + 0.01, ev["boot"]["tar@0.05"])
    assert shifted["p"] == pytest.approx(1 / 200) and shifted["ci95"][0] > 0
