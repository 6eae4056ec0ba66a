"""R1's ceiling (../shared/docs/benchmarks.md, R1): clean negatives, and each system's share of what they gain.

`clean/X-neg` is plain training on X's negatives with every negative that the full train qrels grade >= 1 replaced by
the next candidate of the same ranking that they do not grade relevant. The attainable gain is
A = clean/X-neg - plain/X-neg; a CET system's share of it is (cet - plain) / A (plain = 0, clean = 1).

The clean run is built so that `build_training_groups` draws, with the same seed, exactly plain's groups with the
false negatives swapped: each query's candidate list keeps its length and order, and a false negative at position i
is replaced, at position i, by the next unused non-relevant document below the window. `random.sample` picks
positions from the list's length and the generator's state only, so every group is plain's group with its false
negatives replaced, and nothing else changes.

A sibling module of `pooling_bias.py` (imported as `from _r1_ceiling import ...`; the script's folder is on
`sys.path`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from rankface.utils.ties import ranked


def clean_run(run: Mapping[str, Mapping[str, float]], window: int, labelled: Mapping[str, Mapping[str, int]],
              full_qrels: Mapping[str, Mapping[str, int]], doc_ids: Collection[str] | None = None,
              deeper: Mapping[str, Mapping[str, float]] | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """The clean version of `run`'s top-`window` negatives (see the module docstring); returns `(run, counts)`.

    Args:
        run: `{qid: {docid: score}}`, the negatives' source (ranked by `rankface.utils.ties`).
        window: the source's window (ranks 1..window), as training reads it.
        labelled: the training labels (pooled qrels): their grade >= 1 docs are never negatives.
        full_qrels: the full qrels; a grade >= 1 doc among the candidates is a false negative.
        doc_ids: the corpus's ids (candidates outside it are dropped, as training drops them).
        deeper: a longer ranking of the same source for replacements below the window (default: `run` itself).

    The returned run holds each query's candidates with decreasing scores in the order training will read them.
    """
    out: dict[str, dict[str, float]] = {}
    counts = {"queries": 0, "false_negatives_replaced": 0, "false_negatives_without_replacement": 0,
              "candidates": 0}
    for qid, scores in run.items():
        order = [d for d, _ in ranked(scores)]
        judged = labelled.get(qid, {})
        relevant = {d for d, g in full_qrels.get(qid, {}).items() if g >= 1}

        usable = {d for d in scores if judged.get(d, 0) < 1 and (doc_ids is None or d in doc_ids)}
        candidates = [d for d in order[:window] if d in usable]  # what plain training samples from
        if not candidates:
            continue
        longer = [d for d, _ in ranked(deeper[qid])] if deeper is not None and qid in deeper else order
        seen = set(order[:window])
        replacements = iter([d for d in longer if d not in seen and d not in relevant and judged.get(d, 0) < 1
                              and (doc_ids is None or d in doc_ids)])
        cleaned = []
        for d in candidates:
            if d not in relevant:
                cleaned.append(d)
                continue
            substitute = next(replacements, None)
            if substitute is None:
                counts["false_negatives_without_replacement"] += 1
            else:
                cleaned.append(substitute)
                counts["false_negatives_replaced"] += 1
        if cleaned:
            out[qid] = {d: float(len(cleaned) - i) for i, d in enumerate(cleaned)}
            counts["queries"] += 1
            counts["candidates"] += len(cleaned)
    return out, counts


def per_query_matrix(records: Sequence[dict], measure: str = "nDCG@10", split: str = "test") -> tuple[list[str], np.ndarray]:
    """`(qids, values [S, Q])` of one system's records (one per seed, in the order given)."""
    qids = sorted(records[0][split]["per_query"][measure])
    return qids, np.array([[r[split]["per_query"][measure][q] for q in qids] for r in records], dtype=np.float64)


def share_of_ceiling(plain: np.ndarray, clean: np.ndarray, system: np.ndarray | None = None, resamples: int = 4000,
                     seed: int = 0) -> dict:
    """The ceiling A = clean - plain and a system's share (system - plain) / A, with bootstrap intervals.

    Each argument is `[S, Q]`: per-query values of one system for the same seeds (rows, paired: a seed draws the same
    training groups for every system) and queries (columns). Each bootstrap draw resamples seeds and queries with
    replacement, both at once, and recomputes the means.

    Returns `{"ceiling", "ceiling_ci", "p_ceiling", "share", "share_ci", "p_share", "seeds", "queries"}`: the
    intervals are 95 % percentile intervals; the p-values are two-sided bootstrap p-values against 0 (twice the
    smaller tail share of the draws on either side of 0, at least 1 / resamples). Without `system`, only the
    ceiling keys are filled.
    """
    if plain.shape != clean.shape or (system is not None and system.shape != plain.shape):
        raise ValueError(f"plain, clean and system must be [S, Q] of one shape, got {plain.shape}, {clean.shape}, "
                         f"{None if system is None else system.shape}")
    rng = np.random.default_rng(seed)
    num_seeds, num_queries = plain.shape
    seed_draws = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    query_draws = rng.integers(0, num_queries, size=(resamples, num_queries))

    def boot_means(values: np.ndarray) -> np.ndarray:
        # Mean over the drawn seeds of the mean over the drawn queries, draw by draw ([B]).
        per_seed = np.stack([values[:, query_draws[b]].mean(axis=1) for b in range(resamples)])  # [B, S]
        return np.take_along_axis(per_seed, seed_draws, axis=1).mean(axis=1)

    plain_b, clean_b = boot_means(plain), boot_means(clean)
    ceiling_b = clean_b - plain_b
    out = {
        "seeds": num_seeds,
        "queries": num_queries,
        "ceiling": float(clean.mean() - plain.mean()),
        "ceiling_ci": _interval(ceiling_b),
        "p_ceiling": _p_against_zero(ceiling_b),
    }
    if system is not None:
        gain_b = boot_means(system) - plain_b
        ceiling = out["ceiling"]
        with np.errstate(divide="ignore", invalid="ignore"):
            share_b = gain_b / ceiling_b
        out.update({
            "gain": float(system.mean() - plain.mean()),
            "share": float((system.mean() - plain.mean()) / ceiling) if ceiling else math.nan,
            "share_ci": _interval(share_b[np.isfinite(share_b)]),
            # The share's sign is the gain's sign wherever the ceiling is positive, so its test against 0 is the
            # gain's (it does not depend on a ratio's heavy tails when A is small).
            "p_share": _p_against_zero(gain_b),
        })
    return out


def _interval(draws: np.ndarray) -> list[float]:
    if draws.size == 0:
        return [math.nan, math.nan]
    low, high = np.percentile(draws, [2.5, 97.5])
    return [float(low), float(high)]


def _p_against_zero(draws: np.ndarray) -> float:
    below, above = float((draws <= 0).mean()), float((draws >= 0).mean())
    return float(min(1.0, max(2 * min(below, above), 1.0 / draws.size)))
