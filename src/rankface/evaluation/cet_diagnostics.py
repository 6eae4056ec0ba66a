"""What CET sees in the mined negatives: false-negative rate, coupled-weight distribution, selection propensity.

For every mined negative `(q, d)` of the training groups:

- is it a false negative? (graded >= 1 / >= 2 by the dense qrels, when they exist);
- the coupled weights CET gives it: `w_f = 1 / (1 - sigmoid(g(q, d) / T))` on the relevance model's loss and
  `w_g = 1 / (1 - sigmoid(f(q, d) / T))` on the selection model's loss (`rankface.losses.cet.coupled_weights`);
- the selection model's propensity. CET uses `sigmoid(g(q, d) / T)` (`propensity_T`: what `w_f` is made of);
  `sigmoid(g(q, d))` (`propensity`) is reported beside it for continuity with older records, but with a
  bi-encoder's `20 * cosine` logits it saturates at 0.96-0.99 and says little. The highest-propensity unlabelled
  documents are listed;
- how far the selection model is from the relevance model: Pearson `corr(g, f)` and `corr(w_f, f)` over the
  negatives (with `g ~ f`, CET only weights each negative by the model's own relevance).

`score_negatives` runs a `CETModel` over the negatives; `cet_diagnostics` turns logits into the report;
`write_diagnostics` writes it as JSON and a short Markdown table, atomically.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankface.losses.cet import coupled_weights
from rankface.utils.io import atomic_write, write_json

__all__ = ["cet_diagnostics", "diagnostics_markdown", "score_negatives", "write_diagnostics"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _negative_pairs(groups) -> list[tuple[str, str]]:
    """Unique `(qid, docid)` negatives in order of first appearance (a doc sampled twice is scored once)."""
    seen: dict[tuple[str, str], None] = {}
    for i, group in enumerate(groups):
        if hasattr(group, "negative_docids"):
            for docid in group.negative_docids:
                seen.setdefault((group.qid, docid), None)
        elif isinstance(group, tuple | list) and len(group) == 2:
            seen.setdefault((str(group[0]), str(group[1])), None)
        else:
            raise TypeError(f"groups[{i}] must be a TrainingGroup or a (qid, docid) pair, got {group!r}")
    return list(seen)


def score_negatives(
    model,
    groups,
    queries: Mapping[str, str],
    docs: Mapping[str, str],
    run: Mapping[str, Mapping[str, float]] | None = None,
    batch_size: int = 64,
    precision: str = "auto",
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Relevance and selection logits of a `CETModel` on every mined negative.

    Args:
        model: a `rankface.models.cet.CETModel`.
        groups: `TrainingGroup`s (their negatives are scored) or `(qid, docid)` pairs.
        queries: `{qid: text}`.
        docs: `{docid: text}`.
        run: the first-stage run the negatives came from; needed by the `mlp` selection model.
        batch_size: pairs per forward.

    Returns:
        `{"qids", "docids", "relevance_logits" float32 [N], "selection_logits" float32 [N], "skipped"}`; pairs whose
        query or document text is unknown are skipped and counted in `skipped`.
    """
    from rankface.models.cet import RankFeatureSelector, rank_table

    pairs = _negative_pairs(groups)
    skipped = {"query_text_missing": 0, "doc_text_missing": 0}
    kept = []
    for qid, docid in pairs:
        if qid not in queries:
            skipped["query_text_missing"] += 1
        elif docid not in docs:
            skipped["doc_text_missing"] += 1
        else:
            kept.append((qid, docid))
    texts = [(queries[q], docs[d]) for q, d in kept]
    relevance = model.relevance_scorer().predict(texts, batch_size, show_progress_bar, precision)
    selector = model.selection_scorer()
    if isinstance(selector, RankFeatureSelector):
        if run is None:
            raise ValueError("the MLP selection model scores rank features: pass the first-stage `run`")
        feats = RankFeatureSelector.collate_groups([q for q, _ in kept], [[d] for _, d in kept], rank_table(run))
        skipped["not_in_run"] = feats["num_missing"]
        was_training = selector.training
        selector.eval()
        with torch.inference_mode():
            param = next(selector.parameters())
            selection = selector(feats["features"].to(param.device)).squeeze(-1).float().cpu().numpy()
        selector.train(was_training)
    else:
        selection = selector.predict(texts, batch_size, show_progress_bar, precision)
    return {
        "qids": [q for q, _ in kept],
        "docids": [d for _, d in kept],
        "relevance_logits": np.asarray(relevance, dtype=np.float32),
        "selection_logits": np.asarray(selection, dtype=np.float32),
        "skipped": skipped,
    }


def _stats(values: np.ndarray, bins: int) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    counts, edges = np.histogram(values, bins=bins)
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {f"p{round(q * 100):02d}": float(np.quantile(values, q)) for q in QUANTILES},
        "histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _auc(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None if one class is empty."""
    from scipy.stats import rankdata

    n_pos = int(positives.sum())
    n_neg = int(positives.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation; None when either side is constant or there are fewer than 2 values."""
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def cet_diagnostics(
    qids: Sequence[str],
    docids: Sequence[str],
    relevance_logits: Sequence[float] | np.ndarray,
    selection_logits: Sequence[float] | np.ndarray | None,
    temperature: float,
    full_qrels: Mapping[str, Mapping[str, int]] | None = None,
    labelled_qrels: Mapping[str, Mapping[str, int]] | None = None,
    top_n: int = 20,
    bins: int = 20,
    max_weight: float | None = None,
) -> dict[str, Any]:
    """The diagnostics report of one set of mined negatives (a JSON-ready dict).

    Args:
        qids, docids: the negatives, `N` each (e.g. from `score_negatives`).
        relevance_logits: `f(q, d)`, `[N]`.
        selection_logits: `g(q, d)`, `[N]`, or None for a model without selection scores (plain training).
        temperature: CET's `T`.
        full_qrels: dense qrels; enables the false-negative rates and the propensity/FN comparison.
        labelled_qrels: the training labels; negatives they grade >= 1 are counted (`labelled_negatives`)
            and left out of the unlabelled list.
        top_n: how many highest-propensity unlabelled documents to list.
        bins: histogram bins.
        max_weight: the same clip as used in training, if any.
    """
    n = len(qids)
    if len(docids) != n:
        raise ValueError(f"{n} qids but {len(docids)} docids")
    rel = np.asarray(relevance_logits, dtype=np.float64).reshape(-1)
    if rel.size != n:
        raise ValueError(f"relevance_logits has {rel.size} values for {n} negatives")
    sel = None if selection_logits is None else np.asarray(selection_logits, dtype=np.float64).reshape(-1)
    if sel is not None and sel.size != n:
        raise ValueError(f"selection_logits has {sel.size} values for {n} negatives")
    report: dict[str, Any] = {"negatives": n, "queries": len(set(qids)), "temperature": temperature}

    grades = None
    if full_qrels is not None:
        grades = np.array([full_qrels.get(q, {}).get(d, 0) for q, d in zip(qids, docids)], dtype=np.int64)
        judged = np.array([bool(full_qrels.get(q)) for q in qids], dtype=bool)
        report["false_negative_rate"] = {}
        for g in (1, 2):
            hits = int(((grades >= g) & judged).sum())
            total = int(judged.sum())
            report["false_negative_rate"][f"grade>={g}"] = {
                "false_negatives": hits,
                "negatives": total,
                "rate": hits / total if total else 0.0,
            }
        report["negatives_of_unjudged_queries"] = int((~judged).sum())

    w_g = coupled_weights(torch.from_numpy(rel), temperature, max_weight).double().numpy()
    report["weights"] = {"selection_loss_w_g (from relevance logits)": _stats(w_g, bins)}
    w_f = None
    if sel is not None:
        w_f = coupled_weights(torch.from_numpy(sel), temperature, max_weight).double().numpy()
        report["weights"] = {
            "relevance_loss_w_f (from selection logits)": _stats(w_f, bins),
            **report["weights"],
        }
        propensity = 1.0 / (1.0 + np.exp(-sel))
        propensity_t = 1.0 / (1.0 + np.exp(-sel / temperature))  # what CET's w_f = 1 / (1 - p) is made of
        report["propensity"] = _stats(propensity, bins)
        report["propensity_T"] = _stats(propensity_t, bins)
        report["correlations"] = {"g_f": _pearson(sel, rel), "w_f_f": _pearson(w_f, rel)}
        if grades is not None:
            fn = grades >= 1
            for key, values in (("propensity", propensity), ("propensity_T", propensity_t)):
                report[key]["mean_false_negatives"] = float(values[fn].mean()) if fn.any() else None
                report[key]["mean_other_negatives"] = float(values[~fn].mean()) if (~fn).any() else None
                # The question CET answers: does the relevance loss weigh the false negatives differently? (The
                # same AUC for both: sigmoid(g / T) is monotone in g.)
                report[key]["auc_false_negatives"] = _auc(sel, fn)
            report["relevance_loss_w_f_by_label"] = {
                "false_negatives": float(w_f[fn].mean()) if fn.any() else None,
                "other_negatives": float(w_f[~fn].mean()) if (~fn).any() else None,
            }
    if grades is not None:
        # Does the relevance model single out the false negatives among the mined negatives?
        report["relevance_auc_false_negatives"] = _auc(rel, grades >= 1)

    labelled = np.array(
        [labelled_qrels is not None and labelled_qrels.get(q, {}).get(d, 0) >= 1 for q, d in zip(qids, docids)],
        dtype=bool,
    )
    report["labelled_negatives"] = int(labelled.sum())
    if sel is not None:
        order = [i for i in np.argsort(-sel, kind="stable") if not labelled[i]][:top_n]
        report["top_propensity_unlabelled"] = [
            {
                "qid": qids[i],
                "docid": docids[i],
                "propensity": float(1.0 / (1.0 + math.exp(-sel[i]))),
                "selection_logit": float(sel[i]),
                "relevance_logit": float(rel[i]),
                "w_f": float(w_f[i]),
                "w_g": float(w_g[i]),
                **({"full_grade": int(grades[i])} if grades is not None else {}),
            }
            for i in order
        ]
    return report


def diagnostics_markdown(report: Mapping[str, Any], top_n: int = 10) -> str:
    """A short Markdown summary: FN rates, weight quantiles, propensity, the top unlabelled documents."""
    title = f"**CET diagnostics**: {report['negatives']} mined negatives, {report['queries']} queries"
    lines = [f"{title}, T = {report['temperature']}", ""]
    if "false_negative_rate" in report:
        lines += ["| false negatives | count | rate |", "|---|---:|---:|"]
        for key, fn in report["false_negative_rate"].items():
            lines.append(f"| {key} | {fn['false_negatives']}/{fn['negatives']} | {fn['rate']:.3f} |")
        lines.append("")
    rows = list(report.get("weights", {}).items())
    if "propensity" in report:
        if "propensity_T" in report:
            rows.append(("propensity sigmoid(g/T) (CET's)", report["propensity_T"]))
        rows.append(("sigmoid(g) (saturates)", report["propensity"]))
    if rows:
        lines += ["| quantity | mean | p05 | p50 | p95 | max |", "|---|---:|---:|---:|---:|---:|"]
        for name, st in rows:
            if st.get("count"):
                q = st["quantiles"]
                lines.append(
                    f"| {name} | {st['mean']:.3f} | {q['p05']:.3f} | {q['p50']:.3f} | {q['p95']:.3f} | "
                    f"{st['max']:.3f} |"
                )
        lines.append("")
    if report.get("relevance_auc_false_negatives") is not None:
        lines += [
            f"Relevance-model AUC for spotting false negatives: {report['relevance_auc_false_negatives']:.3f}",
            "",
        ]
    top = report.get("top_propensity_unlabelled", [])[:top_n]
    if top:
        graded = "full_grade" in top[0]
        lines += [
            "| qid | docid | propensity | f(q,d) | w_f |" + (" full grade |" if graded else ""),
            "|---|---|---:|---:|---:|" + ("---:|" if graded else ""),
        ]
        for e in top:
            lines.append(
                f"| {e['qid']} | {e['docid']} | {e['propensity']:.3f} | {e['relevance_logit']:.3f} | "
                f"{e['w_f']:.3f} |" + (f" {e['full_grade']} |" if graded else "")
            )
        lines.append("")
    return "\n".join(lines)


def write_diagnostics(report: Mapping[str, Any], out_dir: str | os.PathLike, name: str = "cet_diagnostics") -> Path:
    """Write `<out_dir>/<name>.json` and `<out_dir>/<name>.md` atomically; returns the JSON path."""
    out_dir = Path(out_dir)
    json_path = out_dir / f"{name}.json"
    write_json(json_path, dict(report))
    with atomic_write(out_dir / f"{name}.md") as handle:
        handle.write(diagnostics_markdown(report))
    return json_path
