"""F1's systems and run plan (benchmarks/lfw_vlr.py): each system's recipe and switches, the order the full mode runs
them in (issue 21's plan; issue 11's, kept to continue it by name), and the deciding UNPG system chosen from the k
sweep's validation curves (never from test pairs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _lfw_vlr_eval import HALVES

CURVE_KEYS = ("lr-lr@16", "lr-lr@8")  # the validation figures of the learning curves (and of the choice of k)

SYSTEMS = {  # name -> recipe config (None: no training)
    "pretrained": None,
    "arcface": "lfw_vlr_arcface.yaml",
    "arcface+unpg": "lfw_vlr_arcface_unpg.yaml",
    "cosface": "lfw_vlr_cosface.yaml",
    "cosface+unpg": "lfw_vlr_cosface_unpg.yaml",
    "magface": "lfw_vlr_magface.yaml",
    # the RI model and its ablations (methods.md section 3: margin < + regressor < + ID < + attention)
    "ri+reg": "lfw_vlr_ri.yaml",
    "ri+reg+id": "lfw_vlr_ri.yaml",
    "ri": "lfw_vlr_ri.yaml",
    # investigation, run only when named: the RI's new modules at the classifier's learning rate
    "ri-headlr": "lfw_vlr_ri.yaml",
    # issue 21: the RI target fixed (frozen clean leave-one-out prototypes, clamped product) and its xi / xi_hat log;
    # "-150": the short iteration runs (150 steps, half A), "ri-log-150" the old target with the log beside it
    "ri-fix": "lfw_vlr_ri.yaml",
    "ri-fix-150": "lfw_vlr_ri.yaml",
    "ri-log-150": "lfw_vlr_ri.yaml",
    # the fixed target read from the pooled feature map instead of v (ri-fix's xi_hat flattened as training went on)
    "ri-fix-fmap": "lfw_vlr_ri.yaml",
    # issue 21: UNPG where its premise holds, a random head (the authors' setting), and the k sweep
    "arcface-rh": "lfw_vlr_arcface.yaml",
    "arcface+unpg-rh-k1": "lfw_vlr_arcface_unpg.yaml",
    "arcface+unpg-rh": "lfw_vlr_arcface_unpg.yaml",
    "arcface+unpg-rh-k3": "lfw_vlr_arcface_unpg.yaml",
    "arcface+unpg-rh-nofilter": "lfw_vlr_arcface_unpg.yaml",
}
SYSTEM_OVERRIDES = {
    "ri+reg": ["--ri_attention", "false", "--ri_beta", "0"],
    "ri+reg+id": ["--ri_attention", "false"],
    "ri-headlr": ["--ri_head_learning_rate", "0.05"],
    "ri-fix": ["--ri_target_prototypes", "initial", "--ri_form", "product_clamped", "--ri_log_steps", "150"],
    "ri-fix-150": ["--ri_target_prototypes", "initial", "--ri_form", "product_clamped", "--ri_log_steps", "50"],
    "ri-log-150": ["--ri_log_steps", "50"],
    "ri-fix-fmap": ["--ri_target_prototypes", "initial", "--ri_form", "product_clamped", "--ri_log_steps", "150",
                    "--ri_quality_input", "feature_map"],
    "arcface-rh": ["--head_init", "random"],
    "arcface+unpg-rh-k1": ["--head_init", "random", "--unpg_wisk", "1.0"],
    "arcface+unpg-rh": ["--head_init", "random"],  # k = 1.5, the config's
    "arcface+unpg-rh-k3": ["--head_init", "random", "--unpg_wisk", "3.0"],
    "arcface+unpg-rh-nofilter": ["--head_init", "random", "--unpg_filter", "false"],
}
# Issue 21 made the fixed RI the training default (face_arguments.py: target against the frozen initial prototypes,
# clamped product, regressor on the feature map); the recipe keeps `ri_form: product`. These systems ran with the old
# defaults, which the flags below keep. They restate what was the default when the records were saved, so they are
# passed to training but are not part of a record's identity (`run_settings`), and the saved records stay current.
_OLD_TARGET = ["--ri_target_prototypes", "classifier"]
_OLD_REGRESSOR = ["--ri_quality_input", "embedding"]
PINNED_OLD_DEFAULTS = {
    **{system: _OLD_TARGET + _OLD_REGRESSOR for system in ("ri", "ri+reg", "ri+reg+id", "ri-headlr", "ri-log-150")},
    "ri-fix": _OLD_REGRESSOR,
    "ri-fix-150": _OLD_REGRESSOR,
}
SYSTEM_STEPS = {"ri-fix-150": 150, "ri-log-150": 150}  # the full mode's budget of the short runs
UNPG_SWEEP = ["arcface+unpg-rh-k1", "arcface+unpg-rh", "arcface+unpg-rh-k3", "arcface+unpg-rh-nofilter"]
BEST_UNPG = "best:arcface+unpg-rh"  # in a plan: the sweep's best k on the validation pairs (`best_unpg_system`)
RI_FAMILY = {"ri", "ri+reg", "ri+reg+id", "ri-headlr", "ri-fix", "ri-fix-150", "ri-log-150", "ri-fix-fmap"}
# (system, seeds[, halves]) in the order the full mode runs them (issue 21 item 5: ~25 models on 2 cores, where they
# decide): the RI target's short iterations with their xi / xi_hat logs; the fixed target, seed 0; the UNPG k sweep
# with a random head (half A, seed 0); the fixed target read from the feature map (ri-fix-fmap: the index no longer
# flattens), 3 seeds, both halves; the deciding pair, arcface vs the best k (chosen on the validation
# pairs, never the test pairs), random head, 3 seeds, both halves, seed by seed (a run cut short still holds whole
# pairs), with a MagFace model of this budget after seed 0, for F2's MagFace row, the one rival the RI verdict still
# lacks (seed 0's models were not kept: seed 1 supplies one, and a second MagFace seed for F1); then arcface's seeds
# 1-2 (centroid head).
FULL_PLAN = [
    ("pretrained", [0]),
    ("ri-log-150", [0], ["A"]), ("ri-fix-150", [0], ["A"]),
    ("ri-fix", [0]),
    ("arcface-rh", [0], ["A"]), *[(s, [0], ["A"]) for s in UNPG_SWEEP],
    ("ri-fix-fmap", [0, 1, 2]),
    ("arcface-rh", [0]), (BEST_UNPG, [0]),
    ("magface", [1]),
    *[(system, [seed]) for seed in (1, 2) for system in ("arcface-rh", BEST_UNPG)],
    ("arcface", [1, 2]),
]
# issue 11's plan (the records of seed 0 are saved): kept to continue it by name, `--plan issue11`
ISSUE11_PLAN = [
    ("pretrained", [0]), ("arcface", [0]), ("arcface+unpg", [0]), ("ri", [0]), ("magface", [0]),
    ("arcface", [1, 2]), ("arcface+unpg", [1, 2]), ("ri", [1, 2]),
    ("cosface", [0]), ("cosface+unpg", [0]), ("ri+reg", [0]), ("ri+reg+id", [0]),
]
QUICK_PLAN = [("pretrained", [0]), ("arcface", [0]), ("ri", [0]), ("magface", [0])]  # F2 --quick needs ri, magface
def make_plan(base: list[tuple[str, list[int]]], systems: list[str] | None, seeds: list[int] | None
              ) -> list[tuple[str, int]]:
    """The (system, seed) runs in order: the plan's order restricted to `systems` (a named system outside the plan
    runs with seed 0); with `seeds`, every system gets those, seed by seed (all systems' first seed first).
    `pretrained` is never trained, so it runs once."""
    if seeds is not None:
        names = systems or list(dict.fromkeys(s for s, _ in base))
        return [(s, seed) for seed in seeds for s in names if s != "pretrained" or seed == seeds[0]]
    order = [(s, seed) for s, system_seeds in base for seed in system_seeds if systems is None or s in systems]
    order = list(dict.fromkeys(order))  # a (system, seed) planned twice (e.g. on half A first) runs where first named
    return order + [(s, 0) for s in systems or [] if all(s != o for o, _ in order)]


def plan_halves(base: list[tuple]) -> dict[tuple[str, int], list[str]]:
    """`{(system, seed): halves}` of the entries that name their halves (the others run both)."""
    out: dict[tuple[str, int], list[str]] = {}
    for entry in base:
        for seed in entry[1]:
            halves = entry[2] if len(entry) > 2 else list(HALVES)
            out[(entry[0], seed)] = sorted(set(out.get((entry[0], seed), [])) | set(halves))
    return out


def best_unpg_system(folder: Path) -> tuple[str | None, dict]:
    """The UNPG sweep's system with the highest validation accuracy (mean of LR-LR 16 and 8 px at the last point of
    the learning curve; validation pairs of identities in no View-2 pair, never a test pair), from the saved seed-0
    half-A records; None until the whole sweep is saved."""
    scores = {}
    for system in UNPG_SWEEP:
        path = folder / f"{system.replace('+', '_')}-seed0-halfA.json"
        if not path.is_file():
            return None, scores
        curve = (json.loads(path.read_text()).get("train") or {}).get("curve") or []
        if not curve:
            return None, scores
        last = curve[-1][1]
        scores[system] = float(np.mean([last[k] for k in CURVE_KEYS]))
    return max(scores, key=scores.get), scores


def resolve_plan(base: list[tuple], folder: Path) -> list[tuple]:
    """The plan with `BEST_UNPG` replaced by the sweep's best system, or left out (with a note) until it is known."""
    if all(entry[0] != BEST_UNPG for entry in base):
        return list(base)
    best, scores = best_unpg_system(folder)
    if best is None:
        print(f"[plan] the deciding UNPG pair waits for the k sweep ({len(scores)} of {len(UNPG_SWEEP)} saved)",
              flush=True)
        return [entry for entry in base if entry[0] != BEST_UNPG]
    print(f"[plan] best k on the validation pairs: {best} ({scores})", flush=True)
    return [(best, *entry[1:]) if entry[0] == BEST_UNPG else entry for entry in base]


def system_steps(args: argparse.Namespace, system: str) -> int:
    """The optimizer steps of `system`: its own budget in the full mode (the short RI iterations), else `--steps`."""
    if args.steps_given or args.mode == "quick" or getattr(args, "quick", False):
        return args.steps
    return SYSTEM_STEPS.get(system, args.steps)


def system_overrides(system: str) -> list[str]:
    """Recipe flags of `system` beyond its config (part of its records' identity)."""
    return list(SYSTEM_OVERRIDES.get(system, []))


def pinned_old_defaults(system: str) -> list[str]:
    """Flags that keep `system` on the training defaults its records were made with (not part of their identity)."""
    return list(PINNED_OLD_DEFAULTS.get(system, []))
