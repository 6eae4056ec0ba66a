"""Protocol F2 over seeds: RI's share of the attainable improvement, and its lead over each rival, with intervals over
the F1 seeds whose models `benchmarks/quality_erc.py` scored (one results folder per seed).

    python benchmarks/quality_erc_seeds.py ri-fix-fmap-seed0 ri-fix-fmap-seed1 ri-fix-fmap-seed2 --name ri-fix-fmap

Each seed's folder gives every quality's share on every mix. The folders must agree on folds, mix, draw seed and
resolutions (the realistic mix's weights are calibrated per model, so they may differ). Per mix and quality it prints
the mean share over seeds with a 95 % t-interval over seeds, and RI's share minus the rival's with a paired t-test
over seeds; each seed's own bootstrap p (over identities, from `quality_erc.py`) is listed beside it. The summary goes to
`benchmarks/results/quality_erc/<name>/seeds.json` (written whole or not at all).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import t_summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality_erc"
MIXES = ("hard", "realistic")
# what the seeds must share: the pairs (folds), the draw's seed and the resolutions drawn from. The realistic mix's
# weights are calibrated per model (FNMR at d = 0 in 10-40 %, benchmarks.md), so they may differ; they are listed.
# The per-seed bootstrap p's must come from one kind of resampling (over identities, or over pairs before it).
SAME_ACROSS_SEEDS = ("mix", "folds", "seed", "choices", "bootstrap unit")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modes", nargs="+", help="quality_erc.py results folders (--mode), one per F1 seed")
    parser.add_argument("--name", required=True, help="folder of the summary under benchmarks/results/quality_erc/")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if len(set(args.modes)) < 2:
        parser.error(f"need at least two different seeds' folders, got {args.modes}")
    return args


def load_mix(results: Path, modes: Sequence[str], mix: str) -> list[dict]:
    """Each seed's `<mix>.json`; the pairs must be the same for every seed, else the file that differs is named."""
    records = []
    for mode in modes:
        path = results / mode / f"{mix}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no F2 result of mix {mix!r} (run benchmarks/quality_erc.py --mode {mode})")
        record = json.loads(path.read_text())
        for key in ("shares", "share_differences"):
            if key not in record:
                raise ValueError(f"{path}: field {key!r} missing (rerun benchmarks/quality_erc.py --mode {mode})")
        if records:
            differing = [k for k in SAME_ACROSS_SEEDS if pairs_setting(record, k) != pairs_setting(records[0], k)]
            if differing:
                raise ValueError(f"{path}: {differing} differ from {results / modes[0] / f'{mix}.json'}: the seeds "
                                 "must score the same pairs at the same resolutions")
        records.append(record)
    return records


def pairs_setting(record: dict, key: str):
    """One of `SAME_ACROSS_SEEDS` of an F2 record (the resolutions drawn from sit in its `how`; a record without a
    bootstrap unit resampled pairs)."""
    if key == "choices":
        return record.get("how", {}).get("choices")
    if key == "bootstrap unit":
        return record.get("share_differences", {}).get("unit", "pairs")
    return record.get(key)


def combine(records: Sequence[dict], modes: Sequence[str]) -> dict:
    """Per quality: its share over seeds; per rival of RI: RI's share minus the rival's over seeds, with each
    seed's bootstrap p. A quality some seed lacks (e.g. MagFace's norm without its model) is left out."""
    qualities = [q for q in records[0]["shares"] if all(np.isfinite(r["shares"].get(q, np.nan)) for r in records)]
    reference = records[0]["share_differences"]["reference"]
    rivals = [q for q in qualities if q != reference]
    return {
        "seeds": list(modes),
        "shares": {q: t_summary([r["shares"][q] for r in records]) for q in qualities},
        "reference": reference,
        "lead": {q: {**t_summary([r["shares"][reference] - r["shares"][q] for r in records]),
                     "bootstrap_p": [r["share_differences"]["of"][q]["p"] for r in records]}
                 for q in rivals},
        "left_out": sorted(set(records[0]["shares"]) - set(qualities)),
        "lambda": [r["how"].get("lambda") for r in records],  # the realistic mix's weights (None: uniform)
        "fnmr_d0": [r.get("fnmr_d0") for r in records],
        "bootstrap_unit": pairs_setting(records[0], "bootstrap unit"),
    }


def table(summary: dict, mix: str) -> str:
    ref = summary["reference"]
    calibration = "" if summary["lambda"][0] is None else (
        "; lambda " + ", ".join(f"{lam:.3f}" for lam in summary["lambda"]))
    lines = [f"mix {mix} ({len(summary['seeds'])} seeds: {', '.join(summary['seeds'])}; FNMR at d = 0 "
             + ", ".join(f"{f:.3f}" for f in summary["fnmr_d0"]) + calibration + ")",
             (f"| quality | share, mean [95 % over seeds] | {ref} minus it [95 %], p over seeds | per-seed bootstrap p "
              f"(over {summary['bootstrap_unit']}) |"),
             "|---|---:|---:|---:|"]
    for quality, share in summary["shares"].items():
        lead = summary["lead"].get(quality)
        lead_cell = "" if lead is None else (f"{lead['mean']:+.3f} [{lead['low']:+.3f}, {lead['high']:+.3f}], "
                                             f"{lead['p']:.2f}")
        boot = "" if lead is None else ", ".join(f"{p:.2f}" for p in lead["bootstrap_p"])
        lines.append(f"| {quality} | {share['mean']:.3f} [{share['low']:.3f}, {share['high']:.3f}] | {lead_cell} | "
                     f"{boot} |")
    if summary["left_out"]:
        lines.append(f"(left out, missing on some seed: {', '.join(summary['left_out'])})")
    return "\n".join(lines)


def slug(quality: str) -> str:
    """A RESULT-line key of a quality's name: 'ers 1-cos(v,UI)' -> 'ers_1_cos_v_ui'."""
    return re.sub(r"[^0-9a-z]+", "_", quality.lower()).strip("_")


def main(argv: Sequence[str] | None = None) -> int:
    from rankface.utils.io import atomic_write

    args = parse_args(argv)
    out = {}
    for mix in MIXES:
        out[mix] = combine(load_mix(args.results_dir, args.modes, mix), args.modes)
        print(table(out[mix], mix), flush=True)
        ref = out[mix]["reference"]
        leads = " ".join(f"lead_{slug(q)}={v['mean']:+.4f} p_{slug(q)}={v['p']:.3f}"
                         for q, v in out[mix]["lead"].items())
        print(f"RESULT mix={mix} seeds={len(args.modes)} {ref}_share={out[mix]['shares'][ref]['mean']:.4f} {leads}")
    path = args.results_dir / args.name / "seeds.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
