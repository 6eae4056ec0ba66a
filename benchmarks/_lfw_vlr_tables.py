"""Protocol F1's issue-21 tables (benchmarks/lfw_vlr.py): the low-FAR figures and their paired tests over identities,
UNPG's mechanism, and the RI's xi / xi_hat per resolution bucket during training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from _common import t_summary
from _plots import plot_step_series

ROOT = Path(__file__).resolve().parents[1]

LOW_FAR_TABLE_FIGURES = ("tar@0.001", "tar@0.0001", "tar@1e-05")
LOW_FAR_CLAIM_FIGURES = (("lr-lr@16", "tar@0.0001"), ("lr-lr@8", "tar@0.0001"), ("hr-lr@8", "tar@0.0001"),
                         ("lr-lr@16", "tar@1e-05"), ("lr-lr@8", "tar@1e-05"))


def ri_log_report(out_dir: Path, results: dict) -> list[str]:
    """The RI's target xi and regressed xi_hat per resolution bucket at the logged steps (every saved run that logged
    them), the 24-vs-8 px AUC of each, and a plot of xi / xi_hat against step per resolution."""
    runs = [(system, seed, r["settings"]["half"], r["train"]["ri_buckets"]) for (system, seed), records in
            sorted(results.items()) for r in records if (r.get("train") or {}).get("ri_buckets")]
    if not runs:
        return []
    lines = [("\nRI index during training: mean xi (target) / xi_hat (regressed) per resolution, on a fixed sample of "
             "training images degraded as in evaluation, model in eval mode; AUC: a 24 px image above an 8 px one"), ""]
    for system, seed, half, log in runs:
        rs = sorted(log[0][1]["buckets"], key=int)
        lines += [f"{system} seed {seed} half {half} ({log[0][1]['images']} images):", "",
                  "| step | " + " | ".join(f"{r} px" for r in rs) + " | AUC 24 vs 8: xi | xi_hat |",
                  "|---|" + "---:|" * (len(rs) + 2)]
        for step, entry in log:
            auc = entry.get("auc_24_8", {})
            lines.append(f"| {step} | " + " | ".join(
                f"{entry['buckets'][r]['xi']:.3f} / {entry['buckets'][r]['xi_hat']:.3f}" for r in rs)
                + f" | {auc.get('xi', float('nan')):.3f} | {auc.get('xi_hat', float('nan')):.3f} |")
        lines.append("")
    series = {}
    for system, _seed, _half, log in runs:
        cols: dict[str, list] = {"step": [step for step, _ in log]}
        for r in log[0][1]["buckets"]:
            cols[f"xi {r} px"] = [e["buckets"][r]["xi"] for _, e in log]
            cols[f"xi_hat {r} px"] = [e["buckets"][r]["xi_hat"] for _, e in log]
        series.setdefault(system, []).append(cols)
    shown = ("8", "16", "24", "112")
    png = plot_step_series(
        series, out_dir / "ri_index.png",
        panels={f"{r} px": ("mean over the sample", [f"xi {r} px", f"xi_hat {r} px"]) for r in shown},
        title=f"RI during training ({out_dir.name}): target xi (solid) and regressed xi_hat (dashed) per resolution")
    return lines + [f"RI index plot: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}"]


def mechanism_table(mechanism: dict, window: int = 50) -> list[str]:
    """UNPG's mechanism over the first and the last `window` logged steps, mean over steps and runs."""
    lines = [f"\nUNPG mechanism, mean over the first / last {window} steps (and runs):", "",
             ("| system | runs | pairs kept / all | upper bound | hardest kept pair | hardest class neg. (row mean) | "
             "share of non-target mass |"), "|---|---|---|---|---|---|---|"]

    def span(runs: list[dict], key: str) -> str:
        if not all(key in r for r in runs):
            return "—"
        first = np.nanmean([v for r in runs for v in r[key][:window]])
        last = np.nanmean([v for r in runs for v in r[key][-window:]])
        return f"{first:.3g} / {last:.3g}"

    for system, runs in mechanism.items():
        kept = " / ".join(f"{np.mean([v for r in runs for v in r['negatives'][part]]):.0f}" for part in
                          (slice(0, window), slice(-window, None)))
        pairs = " / ".join(f"{np.mean([v for r in runs for v in r['unpg_pairs'][part]]):.0f}" for part in
                           (slice(0, window), slice(-window, None))) if all("unpg_pairs" in r for r in runs) else "—"
        lines.append(f"| {system} | {len(runs)} | {kept} of {pairs} | {span(runs, 'unpg_upper')} | "
                     f"{span(runs, 'unpg_kept_max')} | {span(runs, 'unpg_hardest_class_mean')} | "
                     f"{span(runs, 'unpg_share')} |")
    return lines


def low_far_table(low_far: dict, complete: dict) -> list[str]:
    """TAR at FAR 1e-3 / 1e-4 / 1e-5 with identity-bootstrap intervals, and the impostor percentiles, per key."""
    if not low_far:
        return []
    halves = {}  # half -> a record's low-FAR entry (the images, identities and pair counts are the same per half)
    for records in complete.values():
        for record in records:
            if "low_far" in record:
                halves.setdefault(record["settings"]["half"], record["low_far"])
    sizes = "; ".join(f"half {h}: {e['images']:,} images of {e['identities']:,} identities" for h, e in
                      sorted(halves.items()))
    resamples = next(iter(halves.values()))["resamples"]
    lines = [(f"\nLow FAR: every pair among each half's pair images ({sizes}). TAR in %, mean over halves and seeds, "
             f"[95 % interval, bootstrap over identities, {resamples} resamples]; p99.9 / p99.99: impostor-score "
             "percentiles (cosine; the thresholds of FAR 1e-3 / 1e-4):")]
    for key in next(iter(low_far.values())):
        counts = ", ".join(f"half {h}: {e['keys'][key]['impostors']:,} impostor / {e['keys'][key]['genuine']:,} "
                           "genuine pairs" for h, e in sorted(halves.items()) if key in e["keys"])
        lines += ["", f"{key} ({counts})", "",
                  "| system | seeds | TAR@1e-3 | TAR@1e-4 | TAR@1e-5 | p99.9 | p99.99 |", "|---|---|---:|---:|---:|---:|---:|"]
        for system, m in low_far.items():
            if key not in m:
                continue
            seeds = m[key]["seeds"]
            cells = [f"{m[key]['figures'][f]:.2f} [{m[key]['ci95'][f][0]:.2f}, {m[key]['ci95'][f][1]:.2f}]"
                     for f in LOW_FAR_TABLE_FIGURES]
            cells += [f"{m[key]['figures'][f]:.3f}" for f in ("p99.9", "p99.99")]
            lines.append(f"| {system} | {seeds} | " + " | ".join(cells) + " |")
    return lines


def low_far_significance(low_far: dict, claims: list[tuple[str, str]]) -> list[dict]:
    """Claims at low FAR: a paired bootstrap over identities (each system's resample i of a half uses the same
    identity draws, so the mean bootstrap vectors are compared resample by resample)."""
    from rankface.evaluation.verification import bootstrap_difference

    rows = []
    for system, reference in claims:
        if system not in low_far or reference not in low_far:
            continue
        for key, figure in LOW_FAR_CLAIM_FIGURES:
            a, b = low_far[system].get(key), low_far[reference].get(key)
            if a is None or b is None:
                continue
            if a["pairing"] != b["pairing"]:
                continue  # other identities, seed or resample count: the resamples do not pair
            test = bootstrap_difference(a["boot"][figure], b["boot"][figure])
            seeds = (a["seeds"], b["seeds"])
            rows.append({"claim": f"{system} vs {reference}", "seeds": f"{seeds[0]}/{seeds[1]}",
                         "figure": f"all-pairs {figure.replace('tar', 'TAR')} {key}",
                         "diff": a["figures"][figure] - b["figures"][figure], "p": test["p"], "ci95": test["ci95"],
                         "test": f"bootstrap over identities ({test['resamples']})"})
    return rows


def low_far_over_seeds(complete: dict, claims: list[tuple[str, str]]) -> list[str]:
    """Claims at low FAR with the seed as the unit: per seed, Δ = first − second averaged over the two halves; then
    the mean Δ with its 95 % t-interval and one-sample t p over the seeds both systems have (>= 2). The pooled
    identity bootstrap above holds the identities' spread; this holds the training runs' spread."""
    def per_half(system: str, seed: int, key: str, figure: str) -> dict[str, float] | None:
        halves = {r["settings"]["half"]: r["low_far"]["keys"][key]["figures"].get(figure)
                  for r in complete.get((system, seed), []) if key in r.get("low_far", {}).get("keys", {})}
        halves = {h: v for h, v in halves.items() if v is not None}
        return halves if len(halves) == 2 else None

    rows = []
    for system, reference in claims:
        seeds = sorted({k[1] for k in complete if k[0] == system} & {k[1] for k in complete if k[0] == reference})
        for key, figure in LOW_FAR_CLAIM_FIGURES:
            deltas = []
            for seed in seeds:
                a, b = per_half(system, seed, key, figure), per_half(reference, seed, key, figure)
                if a is not None and b is not None:
                    deltas.append(100 * float(np.mean([a[h] - b[h] for h in sorted(a)])))
            if len(deltas) < 2:
                continue
            t = t_summary(deltas)
            star = " *" if t["p"] < 0.05 else ""
            rows.append(f"| {system} vs {reference} | {figure.replace('tar', 'TAR')} {key} | "
                        + ", ".join(f"{d:+.2f}" for d in deltas)
                        + f" | {t['mean']:+.2f} [{t['low']:+.2f}, {t['high']:+.2f}] | {t['p']:.3g}{star} |")
    if not rows:
        return []
    title = ("\nLow FAR over seeds (Δ per seed: first − second, points, mean over the two halves; 95 % t-interval "
             "and one-sample t p over seeds):")
    return [title, "",
            "| claim | figure | Δ per seed | mean Δ [95 % CI] | p |", "|---|---|---|---:|---:|", *rows,
            "(*: p < 0.05)"]


def one_half_low_far_table(results: dict, partial: list, reference: str, keys=("lr-lr@16", "lr-lr@8"),
                           far: str = "tar@0.0001") -> list[str]:
    """TAR at one FAR of the runs that have one half only (the UNPG k sweep, the RI iterations), each against
    `reference`'s run of the same seed and half: a paired bootstrap over identities (the resamples draw the same
    identities for every run of a half, so resample i of one run pairs with resample i of the other)."""
    from rankface.evaluation.verification import bootstrap_difference

    refs = {(seed, r["settings"]["half"]): r["low_far"] for (s, seed), records in results.items() if s == reference
            for r in records if r.get("low_far", {}).get("keys")}
    rows = []
    for system, seed in partial:
        for record in results[(system, seed)]:
            half, low_far = record["settings"]["half"], record.get("low_far", {})
            if not low_far.get("keys"):
                continue
            ref = refs.get((seed, half))
            cells = []
            for key in keys:
                entry = low_far["keys"][key]
                cell = (f"{100 * entry['figures'][far]:.2f} [{100 * entry['ci95'][far][0]:.2f}, "
                        f"{100 * entry['ci95'][far][1]:.2f}]")
                if ref is not None and system != reference:
                    diff = bootstrap_difference(np.asarray(entry["boot"][far]), np.asarray(ref["keys"][key]["boot"][far]))
                    delta = 100 * (entry["figures"][far] - ref["keys"][key]["figures"][far])
                    cell += f" ({delta:+.2f}, p = {diff['p']:.3g})"
                cells.append(cell)
            rows.append(f"| {system} | {seed} | {half} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    label = far.replace("tar@", "TAR@")
    return [(f"\nOne-half runs at low FAR: {label} in % [95 % identity-bootstrap interval] (Δ against {reference}, "
             "same seed and half, points; paired bootstrap p):\n"),
            "| system | seed | half | " + " | ".join(f"LR-LR {k.split('@')[1]} px" for k in keys) + " |",
            "|---|---|---|" + "---:|" * len(keys), *rows]
