"""Protocol F1's significance tests (benchmarks/lfw_vlr.py): paired t over folds, paired bootstrap of TAR over pairs
(the pairs file), and the paired bootstrap over identities of the low-FAR figures."""

from __future__ import annotations

import numpy as np
from _lfw_vlr_eval import record_pairs


def paired_fold_test(first: np.ndarray, second: np.ndarray) -> dict:
    """Paired two-sided t-test over folds: `first`, `second` `[K]` per-fold accuracies (seeds already averaged).

    Returns:
        `{"diff": mean of first - second, "t", "p", "folds"}`; `p` is 1 when every difference is 0, and NaN for
        fewer than two folds.
    """
    from scipy import stats

    d = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    if d.size < 2:
        return {"diff": float(d.mean()) if d.size else float("nan"), "t": float("nan"), "p": float("nan"),
                "folds": int(d.size)}
    sd = d.std(ddof=1)
    if sd == 0:
        return {"diff": float(d.mean()), "t": float("inf") * np.sign(d.mean()) if d.mean() else 0.0,
                "p": 1.0 if d.mean() == 0 else 0.0, "folds": int(d.size)}
    t = d.mean() / (sd / np.sqrt(d.size))
    return {"diff": float(d.mean()), "t": float(t), "p": float(2 * stats.t.sf(abs(t), d.size - 1)),
            "folds": int(d.size)}


def pooled_fold_accuracies(metrics_by_seed: list[dict], key: str) -> np.ndarray:
    """`[K]` per-fold accuracy (%) averaged over seeds, folds in ascending order (the folds every seed scored)."""
    folds = sorted(set.intersection(*(set(m[key]["fold_accuracies"]) for m in metrics_by_seed)))
    return np.array([np.mean([m[key]["fold_accuracies"][f] for m in metrics_by_seed]) for f in folds])


def tar_from_sorted_impostors(genuine: np.ndarray, impostors: np.ndarray, far: float) -> np.ndarray:
    """TAR at FAR for a batch of resamples, `tar_at_far`'s rule (at most floor(far * n) impostors accepted,
    `score > threshold` accepts): `genuine [..., G]`, `impostors [..., I]` -> `[...]`."""
    n = impostors.shape[-1]
    allowed = int(np.floor(far * n + 1e-9))
    if allowed >= n:
        return np.ones(genuine.shape[:-1])
    threshold = -np.partition(-impostors, allowed, axis=-1)[..., allowed]  # the (allowed+1)-th largest
    return np.mean(genuine > threshold[..., None], axis=-1)


def paired_bootstrap_tar(runs_a: list[list[dict]], runs_b: list[list[dict]], key: str, far: float, all_pairs,
                         resamples: int = 2000, seed: int = 0) -> dict:
    """Paired bootstrap over pairs of TAR(A) - TAR(B) at `far` (%, seeds and halves averaged).

    Args:
        runs_a, runs_b: per seed, the saved records of both halves of a system.

    Genuine and impostor pairs are resampled separately within each half (the counts stay those of the protocol),
    the same resample for every run of both systems. `p` is the two-sided bootstrap p-value
    `2 * min(P(diff <= 0), P(diff >= 0))`, at least `1 / resamples`.
    """
    rng = np.random.default_rng(seed)
    halves = sorted({r["settings"]["half"] for runs in (runs_a, runs_b) for seed_runs in runs for r in seed_runs})
    boot = {"a": np.zeros(resamples), "b": np.zeros(resamples)}
    observed = {"a": 0.0, "b": 0.0}
    for half in halves:
        records = {name: [next(r for r in seed_runs if r["settings"]["half"] == half) for seed_runs in runs]
                   for name, runs in (("a", runs_a), ("b", runs_b))}
        idx = record_pairs(records["a"][0], all_pairs)
        same = np.array([all_pairs[i].same for i in idx])
        genuine, impostor = np.flatnonzero(same), np.flatnonzero(~same)
        g_draw = rng.integers(0, genuine.size, size=(resamples, genuine.size))
        i_draw = rng.integers(0, impostor.size, size=(resamples, impostor.size))
        for name, recs in records.items():
            for record in recs:
                if not np.array_equal(record_pairs(record, all_pairs), idx):
                    raise ValueError(f"paired_bootstrap_tar: half {half} runs scored different pairs")
                scores = np.asarray(record["scores"][key], dtype=np.float64)
                g, i = scores[genuine], scores[impostor]
                weight = 1.0 / (len(recs) * len(halves))
                boot[name] += weight * tar_from_sorted_impostors(g[g_draw], i[i_draw], far)
                observed[name] += weight * float(tar_from_sorted_impostors(g[None], i[None], far)[0])
    diff = 100 * (boot["a"] - boot["b"])
    p = 2 * min(np.mean(diff <= 0), np.mean(diff >= 0))
    return {"diff": 100 * (observed["a"] - observed["b"]), "p": float(min(1.0, max(p, 1.0 / resamples))),
            "ci95": [float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))], "resamples": resamples}
