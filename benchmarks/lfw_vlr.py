"""Protocol F1 (../shared/docs/benchmarks.md): very-low-resolution verification on LFW, 2 x 5 identity-disjoint folds.

Systems: `pretrained` (the public MobileFaceNet, converted to rankface, no fine-tuning) and the same network
fine-tuned with `arcface`, `arcface+unpg`, `cosface`, `cosface+unpg`, `magface` and the RI model `ri` with its
ablations `ri+reg` (regressor only) and `ri+reg+id` (+ index diversion) (recipes/configs/lfw_vlr_*.yaml: the same
schedule, data, augmentation and validation pairs for all; the benchmark sets only the budget, seed and half). Model A
trains on every identity outside View-2 folds 0-4 and scores the pairs of folds 0-4; model B the other way round.

Evaluation, exactly as the lfw112 README: images degraded with `degrade_exact` (cv2 INTER_AREA down to r, INTER_CUBIC
back to 112), cosine of L2-normalised embeddings; LR-LR (both images at r) and HR-LR (first at 112, second at r);
10-fold accuracy with each fold's threshold chosen on the other folds of the same half; ROC AUC and TAR at FAR 1e-2 /
1e-3 per half, then averaged. The `pretrained` row is also scored with the README's anchor protocol.

Learning curves: every `--eval-every` steps (and at step 0 and the end) the recipe scores its validation pairs at 16
and 8 px: pairs of the identities that appear in no View-2 pair, left out of training for every system and half, so
no test pair is looked at during training and the schedule was chosen on them, honestly. PNG beside the results.

Significance, seeds pooled: accuracy claims by a paired t-test over the 10 folds (each fold's accuracy averaged over
the seeds), TAR claims by a paired bootstrap over pairs (genuine and impostor pairs resampled within each half, the
same resample for both systems).

Each (system, seed, half) result (pair scores rounded to 5 decimals, the learning curve, training figures) is saved
under benchmarks/results/lfw_vlr/<mode>/ when it finishes; a rerun with the same settings skips it, so the table can
be completed over several runs and processes (a lock file keeps two processes off the same run). Models stay under
the git-ignored runs/ folder there (checkpoints are deleted once the result is saved; `model/` is kept for F2).

    python benchmarks/lfw_vlr.py --quick                # pretrained, arcface, ri, magface; 2 folds x 120 pairs per
                                                        # half, r in {112, 16, 8}, 6 steps x 16 images
    python benchmarks/lfw_vlr.py                        # the full plan: 600 steps x 64 images per (system, half)
    python benchmarks/lfw_vlr.py --systems arcface ri --seeds 0   # a part of it
    python benchmarks/lfw_vlr.py --report-only          # the tables and figures from what is saved

Low FAR (issue 21): every cross-identity pair among each half's pair images (~7.3 M impostors LR-LR, twice that
HR-LR) and all their genuine pairs, at 16 and 8 px: TAR at FAR 1e-3 / 1e-4 / 1e-5 and the 99.9th / 99.99th impostor
percentiles, 95 % intervals from a bootstrap over identities (1,000 resamples, fixed seed, so two systems' resamples
pair and their difference gets a p-value from the saved records alone); evaluation/verification.py does it in
memory-bounded blocks, exactly (see there). A record saved before this gains it when its model is at hand.

The full plan (`FULL_PLAN`, issue 21): the RI target's short iterations (150 steps, half A) with their xi / xi_hat logs;
the fixed target (`ri-fix`, seed 0); the UNPG k sweep with a random head (half A, seed 0); the fixed target with its
regressor on the feature map (`ri-fix-fmap`), 3 seeds, both halves; the deciding pair
arcface-rh vs the best k (chosen on the validation pairs), 3 seeds, both halves; magface seed 1 (F2's MagFace
model); arcface seeds 1-2. `--plan issue11`
continues the earlier plan (seed 0 of pretrained, arcface, arcface+unpg, ri, magface; seeds 1-2 of arcface,
arcface+unpg, ri; cosface, cosface+unpg, ri+reg, ri+reg+id).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import _lfw_vlr_tables as _tables
import numpy as np
from _common import cpu_class, print_cpu_class
from _lfw_vlr_eval import (  # noqa: F401 - re-exported: tests and F2 use them through this module
    ANCHOR,
    FARS,
    HALVES,
    LOW_FAR_RESOLUTIONS,
    SCORE_DECIMALS,
    Embedder,
    anchor_check,
    embed_images,
    half_metrics,
    half_pairs,
    load_encoder,
    low_far_half,
    low_far_metrics,
    pair_scores,
    record_pairs,
    score_half,
    system_metrics,
)
from _lfw_vlr_plan import (  # noqa: F401 - re-exported: the tests read the plan through this module
    BEST_UNPG,
    CURVE_KEYS,
    FULL_PLAN,
    ISSUE11_PLAN,
    QUICK_PLAN,
    RI_FAMILY,
    SYSTEMS,
    UNPG_SWEEP,
    best_unpg_system,
    make_plan,
    pinned_old_defaults,
    plan_halves,
    resolve_plan,
    system_overrides,
    system_steps,
)
from _lfw_vlr_stats import (  # noqa: F401
    paired_bootstrap_tar,
    paired_fold_test,
    pooled_fold_accuracies,
    tar_from_sorted_impostors,
)
from _lfw_vlr_tables import LOW_FAR_TABLE_FIGURES, low_far_table, mechanism_table  # noqa: F401
from _plots import plot_accuracy_vs_resolution, plot_learning_curves, plot_step_series

from rankface.data.faces import load_face_dataset, pair_rows, read_lfw_pairs
from rankface.paths import shared_dir
from rankface.utils.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lfw_vlr"
CONFIGS = ROOT / "recipes" / "configs"
GOALS = {"lr-lr@16": 92.0, "lr-lr@8": 80.0, "hr-lr@8": 75.0, "lr-lr@112": 99.2}  # issue 11: accuracy (%) goals
# Claims and the figures each is judged on: (system, reference). The first is the learning gate: a comparison of
# training methods counts only once the plain fine-tuned model beats its own pretrained start.
CLAIMS = [("arcface", "pretrained"), ("arcface+unpg", "arcface"), *[(s, "arcface-rh") for s in UNPG_SWEEP],
          ("ri-fix", "arcface"), ("ri-fix", "ri"), ("ri-fix-fmap", "arcface"), ("ri-fix-fmap", "ri-fix"),
          ("cosface+unpg", "cosface"), ("ri", "arcface"), ("ri+reg", "arcface"), ("ri+reg+id", "arcface"),
          ("magface", "arcface")]
ACCURACY_KEYS = ("lr-lr@16", "lr-lr@8", "hr-lr@8", "lr-lr@112")
TAR_KEYS = ("lr-lr@16", "lr-lr@8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, 2 folds per half, r in {112, 16, 8}")
    parser.add_argument("--systems", nargs="+", default=None, choices=list(SYSTEMS),
                        help="only these systems of the plan (a system outside the plan runs with --seeds)")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="these seeds for every system run")
    parser.add_argument("--halves", nargs="+", default=list(HALVES), choices=list(HALVES))
    parser.add_argument("--resolutions", nargs="+", type=int, default=None, help="quick: 112 16 8; full: 112 24 16 12 8")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model (quick 6, full 600)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (quick 16, full 64)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="validation-pair evaluation every this many steps (quick 3, full 50)")
    parser.add_argument("--min-images-per-class", type=int, default=None,
                        help="training identities need this many images (quick 5: fewer classes to initialise; full 2)")
    parser.add_argument("--folds-per-half", type=int, default=None, help="evaluated folds per half (quick 2, full 5)")
    parser.add_argument("--pairs-per-fold", type=int, default=None,
                        help="the first n/2 matched and n/2 mismatched pairs of each evaluated fold (quick 120, full 600)")
    parser.add_argument("--head-init-images", type=int, default=None, help="images per class for the centroid init "
                        "(quick 1, full 2)")
    parser.add_argument("--engine", default="onnx", choices=["onnx", "torch"], help="inference engine")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--mode", default=None, help="results folder name (default: quick / full)")
    parser.add_argument("--plan", default="issue21", choices=["issue21", "issue11"],
                        help="the full mode's plan (issue21: the default; issue11: the earlier one)")
    parser.add_argument("--report-only", action="store_true", help="print the tables from saved results, train nothing")
    parser.add_argument("--no-estimate", action="store_true", help="skip the step-time calibration at start")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the TAR tests")
    parser.add_argument("--quiet", action="store_true", help="no progress bars while training")
    args = parser.parse_args(argv)
    quick = args.quick
    args.resolutions = args.resolutions or ([112, 16, 8] if quick else [112, 24, 16, 12, 8])
    if 112 not in args.resolutions:
        args.resolutions = [112, *args.resolutions]  # HR-LR needs the 112 px embeddings
    args.steps_given = args.steps is not None
    args.steps = args.steps or (6 if quick else 600)
    args.batch_size = args.batch_size or (16 if quick else 64)
    args.eval_every = args.eval_every or (3 if quick else 50)
    args.min_images_per_class = args.min_images_per_class or (5 if quick else 2)
    args.folds_per_half = args.folds_per_half or (2 if quick else 5)
    args.pairs_per_fold = args.pairs_per_fold or (120 if quick else 600)
    if args.pairs_per_fold % 2 or not 2 <= args.pairs_per_fold <= 600:
        raise SystemExit(f"--pairs-per-fold must be even and in 2..600, got {args.pairs_per_fold}")
    args.head_init_images = args.head_init_images or (1 if quick else 2)
    args.mode = args.mode or ("quick" if quick else "full")
    if not 2 <= args.folds_per_half <= 5:
        raise SystemExit(f"--folds-per-half must be in 2..5 (k-fold needs 2 folds), got {args.folds_per_half}")
    base = QUICK_PLAN if quick else resolve_plan(FULL_PLAN if args.plan == "issue21" else ISSUE11_PLAN,
                                                      RESULTS / args.mode)
    args.plan_halves = plan_halves(base)
    args.plan = make_plan([entry[:2] for entry in base], args.systems, args.seeds)
    return args


# ---------------------------------------------------------------------------------------------- settings
def run_settings(args: argparse.Namespace, system: str, seed: int, half: str) -> dict:
    """Everything that determines a (system, seed, half) result; stored with it and compared on rerun."""
    flags = system_overrides(system)
    extra = {"overrides": flags} if flags else {}
    trained = SYSTEMS[system] is not None
    return {
        **extra,
        "system": system, "seed": seed, "half": half, "heldout_folds": HALVES[half],
        "eval_folds": HALVES[half][: args.folds_per_half], "pairs_per_fold": args.pairs_per_fold,
        "resolutions": sorted(args.resolutions, reverse=True),
        "steps": system_steps(args, system) if trained else 0, "batch_size": args.batch_size, "head_init_images": args.head_init_images,
        "config": (CONFIGS / SYSTEMS[system]).read_text() if trained else None,
        **({"min_images_per_class": args.min_images_per_class, "eval_every": args.eval_every} if trained else {}),
    }


def result_path(args: argparse.Namespace, system: str, seed: int, half: str) -> Path:
    return RESULTS / args.mode / f"{system.replace('+', '_')}-seed{seed}-half{half}.json"


def model_dir(mode: str, system: str, seed: int, half: str) -> Path:
    """Where the trained encoder of a (system, seed, half) is kept (git-ignored), e.g. for F2's `--from-f1`."""
    return RESULTS / mode / "runs" / f"{system.replace('+', '_')}-seed{seed}-half{half}" / "model"


def claim(path: Path) -> bool:
    """Take `<path>.lock` (holding this process id) so that benchmark processes run side by side, e.g. one per
    core, never work on the same (system, seed, half); a lock whose process is gone is taken over."""
    lock = path.with_suffix(".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
                os.kill(owner, 0)  # raises when that process is gone
                return owner == os.getpid()
            except (ProcessLookupError, ValueError):
                lock.unlink(missing_ok=True)  # stale: its process died
                continue
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


# ---------------------------------------------------------------------------------------------- training
def training_flags(args: argparse.Namespace, system: str, seed: int, half: str, run_dir: Path) -> list[str]:
    return [
        "--config", str(CONFIGS / SYSTEMS[system]), "--heldout_folds", *map(str, HALVES[half]),
        "--max_steps", str(system_steps(args, system)), "--batch_size", str(args.batch_size), "--seed", str(seed),
        "--head_init_images_per_class", str(args.head_init_images), "--output_dir", str(run_dir),
        "--eval_at_end", "false", "--eval_steps", str(args.eval_every), "--eval_sets", "validation",
        "--checkpoint_steps", str(max(1, min(50, system_steps(args, system) // 3))), "--checkpoints_to_keep", "1",
        "--resume_from_checkpoint", "latest", "--quiet", str(args.quiet).lower(),
        # the benchmark reads the shared Parquet, whose images all decode (README)
        "--check_images", "false", "--min_images_per_class", str(args.min_images_per_class),
        *pinned_old_defaults(system), *system_overrides(system),
    ]


def learning_curve(log: list[dict]) -> list[list]:
    """`[[step, {"lr-lr@16": accuracy %, ...}], ...]` from a trainer-state log's validation entries."""
    return [[e["step"], {k: round(100 * v["accuracy"], 3) for k, v in e["val"].items()}] for e in log if "val" in e]


def loss_summary(log: list[dict], points: int = 20) -> list[list[float]]:
    """The training loss averaged over `points` equal stretches of steps: `[[last step, mean loss], ...]`."""
    entries = [(e["step"], e["loss"]) for e in log if "loss" in e]
    if not entries:
        return []
    chunks = np.array_split(np.arange(len(entries)), min(points, len(entries)))
    return [[entries[c[-1]][0], round(float(np.mean([entries[i][1] for i in c])), 4)] for c in chunks if len(c)]


UNPG_LOG_KEYS = ("unpg_pairs", "negatives", "unpg_lower", "unpg_upper", "unpg_kept_max", "unpg_share",
                 "unpg_hardest_class_mean", "unpg_hardest_class_median", "unpg_hardest_class_max")


def step_columns(log: list[dict], keys: tuple[str, ...], decimals: int = 4) -> dict[str, list] | None:
    """The per-step training-log values of `keys` as columns `{"step": [S], key: [S]}` (a key some entry lacks is
    NaN there, e.g. the filter bounds of a batch with < 4 pairs); None when no entry has any of them."""
    entries = [e for e in log if "loss" in e and any(k in e for k in keys)]
    if not entries:
        return None
    out: dict[str, list] = {"step": [e["step"] for e in entries]}
    for key in keys:
        if any(key in e for e in entries):
            out[key] = [round(float(e[key]), decimals) if key in e else float("nan") for e in entries]
    return out


def train_model(args: argparse.Namespace, system: str, seed: int, half: str, run_dir: Path) -> tuple[Path, dict]:
    """Fine-tune with the system's recipe config and the benchmark's budget; returns (model folder, train info)."""
    from rankface.training.face import train_face
    from rankface.training.face_arguments import parse_face_training_args

    settings = parse_face_training_args(training_flags(args, system, seed, half, run_dir))
    started = time.perf_counter()
    train_face(settings)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    report = json.loads((run_dir / "data_report.json").read_text())
    info = {"steps": state["step"], "train_seconds": round(state["train_seconds"], 1),
            "seconds_per_step": round(state["train_seconds"] / max(1, state["step"]), 3),
            "wall_seconds": round(time.perf_counter() - started, 1), "precision": state.get("precision"),
            "num_classes": state["num_classes"], "num_train_images": state["num_train_images"],
            "num_validation_pairs": report.get("num_validation_pairs"),
            "num_validation_identities": report.get("num_validation_identities"),
            "loss": loss_summary(state["log"]), "curve": learning_curve(state["log"])}
    unpg = step_columns(state["log"], UNPG_LOG_KEYS)
    if unpg:
        info["unpg"] = unpg  # UNPG's mechanism per step (issue 21 item 2)
    ri_log = [[e["step"], e["ri_buckets"]] for e in state["log"] if "ri_buckets" in e]
    if ri_log:
        info["ri_buckets"] = ri_log  # mean xi / xi_hat per resolution bucket at the logged steps (issue 21 item 4)
    ri_steps = step_columns(state["log"], ("ri_xi", "ri_xi_hat"))
    if ri_steps:
        info["ri_steps"] = ri_steps  # the batch means of xi and xi_hat at every step
    return run_dir / "model", info


# ---------------------------------------------------------------------------------------------- significance
def significance(results: dict, metrics: dict, all_pairs, resamples: int) -> list[dict]:
    """Every claim of `CLAIMS` whose two systems are complete: accuracy (paired t over folds) and TAR (bootstrap)."""
    rows = []
    for system, reference in CLAIMS:
        seeds_a = sorted(s for (name, s) in metrics if name == system)
        seeds_b = sorted(s for (name, s) in metrics if name == reference)
        if not seeds_a or not seeds_b:
            continue
        base = {"claim": f"{system} vs {reference}", "seeds": f"{len(seeds_a)}/{len(seeds_b)}"}
        for key in ACCURACY_KEYS:
            if key not in metrics[(system, seeds_a[0])]:
                continue
            test = paired_fold_test(pooled_fold_accuracies([metrics[(system, s)] for s in seeds_a], key),
                                    pooled_fold_accuracies([metrics[(reference, s)] for s in seeds_b], key))
            rows.append({**base, "figure": f"accuracy {key}", "test": f"paired t, {test['folds']} folds", **test})
        for key in TAR_KEYS:
            if key not in metrics[(system, seeds_a[0])]:
                continue
            for far in FARS:
                test = paired_bootstrap_tar([results[(system, s)] for s in seeds_a],
                                            [results[(reference, s)] for s in seeds_b], key, far, all_pairs,
                                            resamples)
                rows.append({**base, "figure": f"TAR@{far:g} {key}", "test": f"bootstrap over pairs ({resamples})",
                             **test})
    return rows


# ---------------------------------------------------------------------------------------------- time estimate
def calibrate(args: argparse.Namespace) -> dict:
    """Seconds per training step of the arcface and RI recipes and per embedded image, measured now, here (the
    median of 2 steps after a warm-up step, with the recipes' precision and memory layout)."""
    import torch
    from accelerate.state import AcceleratorState

    from rankface.evaluation.verification import embed_uint8
    from rankface.losses.margins import MarginLoss, build_head
    from rankface.losses.recognizability import RecognizabilityLoss
    from rankface.training.face import (
        FaceRecognitionModule,
        build_encoder,
        make_accelerator,
        prepare_face_data,
        resolve_face_precision,
        ri_step,
        wrap_recognizability,
    )
    from rankface.training.face_arguments import parse_face_training_args

    out = {}
    for family, config in (("plain", "lfw_vlr_arcface.yaml"), ("ri", "lfw_vlr_ri.yaml")):
        settings = parse_face_training_args(training_flags(args, "arcface" if family == "plain" else "ri", 0, "A",
                                                           Path("unused")))
        settings.eval_sets, settings.eval_steps = [], None
        data = prepare_face_data(settings)
        encoder = build_encoder(settings)
        if family == "ri":
            encoder = wrap_recognizability(encoder, settings)
        model = FaceRecognitionModule(encoder, data.num_classes).train()
        if settings.channels_last:
            model.to(memory_format=torch.channels_last)
        loss_fn = MarginLoss(build_head(settings.head))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        AcceleratorState._reset_state(reset_partial_state=True)
        accelerator = make_accelerator(settings)
        ri_loss = RecognizabilityLoss(loss_fn, warmup_steps=0) if family == "ri" else None
        bf16 = resolve_face_precision(settings.precision) == "bf16"
        loader = torch.utils.data.DataLoader(data.train_set, batch_size=args.batch_size, shuffle=True, drop_last=True)
        times = []
        for step, (pixels, labels) in zip(range(3), loader, strict=False):
            started = time.perf_counter()
            if settings.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if ri_loss is None:
                    embedding, cos = model(pixels)
                    loss = loss_fn(embedding, labels, cos)
                else:
                    loss, _ = ri_step(accelerator, model, ri_loss, pixels, labels, settings, step)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - started)
        out[f"{family}_step"] = float(np.median(times[1:]))
        if family == "plain":
            model.to(memory_format=torch.contiguous_format)
            images = np.stack([data.train_set.raw_image(i) for i in range(64)])
            started = time.perf_counter()
            embed_uint8(model.encoder, images, 64)
            out["image"] = (time.perf_counter() - started) / 64
            with tempfile.TemporaryDirectory() as tmp:
                embed = Embedder(model.encoder.eval(), args.engine, Path(tmp), args.threads)
                embed(images[:8])  # session warm-up
                started = time.perf_counter()
                embed(images)
                out["image_scoring"] = (time.perf_counter() - started) / 64
            out["classes"] = data.num_classes
            out["validation_images"] = 0 if data.validation is None else len(data.validation.images)
    AcceleratorState._reset_state(reset_partial_state=True)
    return out


def estimate_seconds(args: argparse.Namespace, system: str, measured: dict, pair_images: int) -> float:
    """Wall seconds one (system, half) should take: training steps, validation evaluations, centroid init, scoring."""
    scoring = pair_images * len(args.resolutions) * measured["image_scoring"]
    if SYSTEMS[system] is None:
        return scoring
    step = measured["ri_step" if system in RI_FAMILY else "plain_step"]
    evaluations = (args.steps // args.eval_every + 2) * measured["validation_images"] * 2 * measured["image"]
    init = measured["classes"] * args.head_init_images * measured["image"]
    return args.steps * step + evaluations + init + scoring


def print_estimate(args: argparse.Namespace, todo: list[tuple[str, int, str]], pair_images: int) -> None:
    print(f"calibrating: 3 steps of the arcface and RI recipes (batch {args.batch_size}) ...", flush=True)
    measured = calibrate(args)
    print(f"measured now: {measured['plain_step']:.1f} s/step arcface, {measured['ri_step']:.1f} s/step RI "
          f"(batch {args.batch_size}, {args.threads} threads), {1000 * measured['image']:.0f} ms per embedded image "
          f"(torch), {1000 * measured['image_scoring']:.0f} ms scoring ({args.engine})",
          flush=True)
    total = 0.0
    print("| system | seed | half | estimated wall time |\n|---|---|---|---:|")
    for system, seed, half in todo:
        seconds = estimate_seconds(args, system, measured, pair_images)
        total += seconds
        print(f"| {system} | {seed} | {half} | {seconds / 60:.0f} min |")
    print(f"estimated total for the {len(todo)} runs still to do: {total / 3600:.1f} h on this process "
          "(the machine's load changes it; the figures are from this moment)", flush=True)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print_cpu_class()
    data_dir = shared_dir() / "data" / "face" / "lfw112"
    if not data_dir.is_dir():
        raise SystemExit(f"needs {data_dir} (set RANKFACE_SHARED)")
    out_dir = RESULTS / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, report = load_face_dataset(data_dir, check_images=False)
    all_pairs = read_lfw_pairs(data_dir / "pairs.txt")
    all_rows = pair_rows(dataset, all_pairs)
    print(f"{report.summary()}; mode={args.mode} plan={args.plan} steps={args.steps} batch={args.batch_size} "
          f"resolutions={args.resolutions} engine={args.engine}", flush=True)

    results: dict[tuple[str, int], list[dict]] = saved_outside_plan(args)
    todo = []
    for system, seed in args.plan:
        for half in [h for h in args.halves if h in args.plan_halves.get((system, seed), list(HALVES))]:
            path = result_path(args, system, seed, half)
            if path.is_file():
                saved = json.loads(path.read_text())
                if saved["settings"] == run_settings(args, system, seed, half):
                    results.setdefault((system, seed), []).append(saved)
                    continue
                print(f"[stale] {system} seed {seed} half {half}: saved with other settings", flush=True)
            todo.append((system, seed, half))
    print(f"{sum(len(v) for v in results.values())} results saved, {len(todo)} to do", flush=True)
    if todo and not args.report_only and not args.no_estimate:
        pair_images = len(np.unique(all_rows[half_pairs(all_pairs, HALVES["A"][: args.folds_per_half],
                                                        args.pairs_per_fold)]))
        print_estimate(args, todo, pair_images)
    for (system, seed), records in [] if args.report_only else list(results.items()):
        for record in records:
            if "low_far" not in record and low_far_resolutions(args):
                add_low_far(args, system, seed, record["settings"]["half"], record, dataset, all_pairs, all_rows)
    for system, seed, half in [] if args.report_only else todo:
        record = run_one(args, system, seed, half, dataset, all_pairs, all_rows)
        if record is not None:
            results.setdefault((system, seed), []).append(record)

    complete = {k: sorted(v, key=lambda r: r["settings"]["half"]) for k, v in results.items()
                if {r["settings"]["half"] for r in v} == set(HALVES)}
    metrics = {k: system_metrics(v, all_pairs) for k, v in complete.items()}
    summary, values = render(args, metrics, complete, results, all_pairs)
    write_json(out_dir / "summary.json", {
        "metrics": {f"{s}|{seed}": {k: {f: v for f, v in m.items() if f != "fold_accuracies"} for k, m in ms.items()}
                    for (s, seed), ms in metrics.items()},
        "result": values, "plan": [list(p) for p in args.plan]})
    print(summary, flush=True)
    return 0


def saved_outside_plan(args: argparse.Namespace) -> dict[tuple[str, int], list[dict]]:
    """Every saved record of this mode outside the current plan whose settings are still current, so that the report
    covers all of them whatever `--systems`, `--seeds` or `--plan` say."""
    out: dict[tuple[str, int], list[dict]] = {}
    planned = set(args.plan)
    for path in sorted((RESULTS / args.mode).glob("*-seed*-half*.json")):
        record = json.loads(path.read_text())
        settings = record.get("settings", {})
        system, seed, half = settings.get("system"), settings.get("seed"), settings.get("half")
        if system not in SYSTEMS or (system, seed) in planned or half not in HALVES:
            continue
        if settings == run_settings(args, system, seed, half):
            out.setdefault((system, seed), []).append(record)
    return out


def run_one(args, system: str, seed: int, half: str, dataset, all_pairs, all_rows) -> dict | None:
    """Train (unless `pretrained`), score and save one (system, seed, half); None when another process has it."""
    path = result_path(args, system, seed, half)
    settings = run_settings(args, system, seed, half)
    if not claim(path):
        print(f"[busy] {system} seed {seed} half {half}: another benchmark process is on it", flush=True)
        return None
    if path.is_file():  # another process may have finished it since this one looked
        saved = json.loads(path.read_text())
        if saved["settings"] == settings:
            path.with_suffix(".lock").unlink(missing_ok=True)
            return saved
    started = time.perf_counter()
    run_dir = RESULTS / args.mode / "runs" / path.stem
    stale = run_dir / "settings.json"
    if run_dir.exists() and (not stale.is_file() or json.loads(stale.read_text()) != settings):
        shutil.rmtree(run_dir)  # checkpoints of other settings: do not resume them
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(stale, settings)
    train_info, folder = None, None
    if SYSTEMS[system] is not None:
        print(f"[train] {system} seed {seed} half {half}: {system_steps(args, system)} steps x {args.batch_size}",
              flush=True)
        folder, train_info = train_model(args, system, seed, half, run_dir)
    embed = Embedder(load_encoder(folder), args.engine, run_dir, args.threads)
    idx = half_pairs(all_pairs, settings["eval_folds"], args.pairs_per_fold)
    rows, local = np.unique(all_rows[idx], return_inverse=True)
    embeddings, embed_seconds = embed_images(embed, dataset, rows, args.resolutions)
    scores = pair_scores(embeddings, local.reshape(-1, 2))
    low_far = low_far_half(embeddings, np.asarray(dataset["label"])[rows], low_far_resolutions(args))
    record = {"settings": settings, "scores": scores, "low_far": low_far, "train": train_info,
              "embed_seconds": round(embed_seconds, 1), "engine": args.engine, "threads": args.threads,
              "cpu_class": cpu_class()["class"], "wall_seconds": round(time.perf_counter() - started, 1)}
    write_json(path, record)
    path.with_suffix(".lock").unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # only for resuming; model/ stays for F2
    (run_dir / "encoder.onnx").unlink(missing_ok=True)
    view = system_metrics([record], all_pairs)
    print(f"[done] {system} seed {seed} half {half} in {record['wall_seconds']:.0f} s: " + " ".join(
        f"{k}={v['accuracy']:.2f}" for k, v in view.items() if k.startswith("lr-lr")), flush=True)
    return record


def low_far_resolutions(args: argparse.Namespace) -> list[int]:
    return [r for r in LOW_FAR_RESOLUTIONS if r in args.resolutions]


def add_low_far(args, system: str, seed: int, half: str, record: dict, dataset, all_pairs, all_rows) -> bool:
    """Add the low-FAR entry to a saved record that predates it (its settings, hence its fingerprint, unchanged),
    when its model is at hand: always for `pretrained`, for a trained system while its `model/` folder is kept."""
    folder = None if SYSTEMS[system] is None else model_dir(args.mode, system, seed, half)
    if folder is not None and not (folder / "config.json").is_file():
        print(f"[low-FAR] {system} seed {seed} half {half}: no model at {folder.relative_to(ROOT)}; retrain "
              "(delete its record) to add the low-FAR figures", flush=True)
        return False
    path = result_path(args, system, seed, half)
    if not claim(path):
        return False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            embed = Embedder(load_encoder(folder), args.engine, Path(tmp), args.threads)
            idx = record_pairs(record, all_pairs)
            rows = np.unique(all_rows[idx])
            res = sorted({112, *low_far_resolutions(args)}, reverse=True)
            embeddings, _ = embed_images(embed, dataset, rows, res)
            # the same arithmetic as the saved scores: refuse to add figures of a model that is not the saved one
            check = pair_scores({112: embeddings[112]}, np.searchsorted(rows, all_rows[idx]))["lr-lr@112"]
            if np.max(np.abs(np.asarray(check) - np.asarray(record["scores"]["lr-lr@112"]))) > 1e-3:
                print(f"[low-FAR] {system} seed {seed} half {half}: the model at hand does not reproduce the saved "
                      "112 px scores; not added", flush=True)
                return False
            record["low_far"] = low_far_half(embeddings, np.asarray(dataset["label"])[rows], low_far_resolutions(args))
        write_json(path, record)
    finally:
        path.with_suffix(".lock").unlink(missing_ok=True)
    print(f"[low-FAR] {system} seed {seed} half {half}: added to {path.relative_to(ROOT)}", flush=True)
    return True


def mean_over_seeds(metrics: dict, system: str) -> tuple[dict, int] | None:
    runs = [m for (s, _), m in metrics.items() if s == system]
    if not runs:
        return None
    fields = [f for f in runs[0][next(iter(runs[0]))] if f != "fold_accuracies"]
    return {k: {f: float(np.mean([r[k][f] for r in runs])) for f in fields} for k in runs[0]}, len(runs)


def render(args: argparse.Namespace, metrics: dict, complete: dict, results: dict, all_pairs) -> tuple[str, dict]:
    lines = []
    rs = sorted(args.resolutions, reverse=True)
    order = [s for s in SYSTEMS if any(name == s for name, _ in metrics)]
    if metrics:
        lines.append(f"\n### LFW-VLR (protocol F1, mode={args.mode}, {args.steps} steps x {args.batch_size} images per "
                     f"model, {args.folds_per_half} folds x {args.pairs_per_fold} pairs per half; mean over seeds)\n")
        head = "| system | seeds | " + " | ".join(f"LR-LR {r}" for r in rs) + " | " + " | ".join(
            f"HR-LR {r}" for r in rs if r != 112) + " | TAR@1e-2 16 | TAR@1e-2 8 | TAR@1e-3 16 | TAR@1e-3 8 |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        rows = {}
        for system in order:
            m, n = mean_over_seeds(metrics, system)
            cells = [f"{m[f'lr-lr@{r}']['accuracy']:.2f} ± {m[f'lr-lr@{r}']['accuracy_std']:.2f}" for r in rs]
            cells += [f"{m[f'hr-lr@{r}']['accuracy']:.2f}" for r in rs if r != 112]
            cells += [f"{m[f'lr-lr@{r}'][f'tar@{far:g}']:.2f}" if f"lr-lr@{r}" in m else "—"
                      for far in FARS for r in (16, 8)]
            lines.append(f"| {system} | {n} | " + " | ".join(cells) + " |")
            rows[system] = {"lr-lr": {r: m[f"lr-lr@{r}"]["accuracy"] for r in rs},
                            "hr-lr": {r: m[f"hr-lr@{r}" if r != 112 else "lr-lr@112"]["accuracy"] for r in rs}}
        lines.append("\n(accuracy ± std over the 10 folds; TAR in %, per half then averaged)")
        plot = plot_accuracy_vs_resolution(
            rows, RESULTS / args.mode / "accuracy_vs_resolution.png",
            title=f"LFW-VLR, protocol F1 ({args.mode}): 10-fold accuracy on the 6,000 test pairs, mean over seeds; "
                  f"{args.steps} steps x {args.batch_size}")
        lines.append(f"\nplot: {plot.relative_to(ROOT)}")
        lines += goals_table(metrics, order)
        low_far = {s: low_far_metrics([complete[k] for k in sorted(complete) if k[0] == s]) for s in order}
        low_far = {s: v for s, v in low_far.items() if v}
        lines += low_far_table(low_far, complete)
        lines += significance_table(significance(complete, metrics, all_pairs, args.bootstrap)
                                    + low_far_significance(low_far))
        lines += _tables.low_far_over_seeds(complete, CLAIMS)
        lines += ablation_table(metrics)
    curves = {}
    for (system, _seed), records in results.items():
        for record in records:
            if record.get("train") and record["train"].get("curve"):
                curves.setdefault(system, []).append([(s, v) for s, v in record["train"]["curve"]])
    if curves:
        pairs = next(r["train"]["num_validation_pairs"] for rs_ in results.values() for r in rs_ if r.get("train"))
        png = plot_learning_curves(
            {s: curves[s] for s in SYSTEMS if s in curves}, RESULTS / args.mode / "learning_curves.png",
            keys=CURVE_KEYS,
            title=f"Learning curves ({args.mode}): LR-LR accuracy on {pairs} validation pairs of identities in no "
                  "View-2 pair, left out of training (no test pair; the schedule was chosen on these)")
        lines.append(f"\nlearning curves: {png.relative_to(ROOT)}")
    mechanism = {}
    for (system, _seed), records in results.items():
        for record in records:
            if (record.get("train") or {}).get("unpg"):
                mechanism.setdefault(system, []).append(record["train"]["unpg"])
    if mechanism:
        png = plot_step_series(
            {s: mechanism[s] for s in SYSTEMS if s in mechanism}, RESULTS / args.mode / "unpg_mechanism.png",
            panels={"in-batch negative pairs": ("pairs", ["unpg_pairs", "negatives"]),
                    "filter bounds vs class negatives": ("cosine", ["unpg_upper", "unpg_kept_max",
                                                                    "unpg_hardest_class_mean", "unpg_lower"]),
                    "appended pairs' share of non-target mass": ("share (mean over rows)", ["unpg_share"])},
            title=f"UNPG's mechanism per step ({args.mode}): pairs kept of all, bounds, hardest kept pair vs each "
                  "row's hardest class-negative cosine (mean), share of the softmax mass", smooth=25,
            labels={"unpg_pairs": "all pairs", "negatives": "pairs kept", "unpg_upper": "upper bound",
                    "unpg_kept_max": "hardest kept pair", "unpg_hardest_class_mean": "hardest class negative",
                    "unpg_lower": "lower bound"})
        lines.append(f"\nUNPG mechanism: {png.relative_to(ROOT)}")
        lines += mechanism_table(mechanism)
    lines += ri_log_report(args, results)
    partial = sorted({(s, seed) for (s, seed) in results if (s, seed) not in metrics})
    if partial:
        lines.append(f"incomplete (one half only, not in the tables above): {partial}")
        lines += _tables.one_half_low_far_table(results, partial, reference="arcface-rh")
    if results:
        lines += per_half_table(results, all_pairs, rs)
    pre = complete.get(("pretrained", 0))
    if pre:
        check = anchor_check(pre, all_pairs)
        if check:
            lines += ["\nanchor check (README protocol over all 6,000 pairs, pretrained):",
                      "| setting | rankface | README | diff |", "|---|---|---|---|"]
            for key, v in check.items():
                anchor = "—" if v["anchor"] is None else f"{v['anchor']:.2f}"
                diff = "—" if v["diff"] is None else f"{v['diff']:+.2f}"
                lines.append(f"| {key} | {v['accuracy']:.2f} | {anchor} | {diff} |")
    values = result_values(args, metrics, low_far if metrics else {})
    lines.append("RESULT " + " ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines), values


def goals_table(metrics: dict, order: list[str]) -> list[str]:
    lines = ["\nGoals (issue 11), mean over seeds:", "",
             "| figure | goal | " + " | ".join(order) + " |", "|---|---:|" + "---:|" * len(order)]
    means = {s: mean_over_seeds(metrics, s)[0] for s in order}
    for key, goal in GOALS.items():
        if not all(key in means[s] for s in order):
            continue
        cells = [f"**{means[s][key]['accuracy']:.2f}**" if means[s][key]["accuracy"] >= goal
                 else f"{means[s][key]['accuracy']:.2f}" for s in order]
        lines.append(f"| {key} | ≥ {goal:g} | " + " | ".join(cells) + " |")
    return lines + ["(bold: goal met)"]


def significance_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["\nSignificance (seeds pooled; Δ = first − second, points; two-sided p):", "",
             "| claim | seeds | figure | Δ | p | test |", "|---|---|---|---:|---:|---|"]
    for row in rows:
        ci = f" (95 % CI {row['ci95'][0]:+.2f} … {row['ci95'][1]:+.2f})" if "ci95" in row else ""
        star = " *" if row["p"] < 0.05 else ""
        lines.append(f"| {row['claim']} | {row['seeds']} | {row['figure']} | {row['diff']:+.2f}{ci} | "
                     f"{row['p']:.3g}{star} | {row['test']} |")
    return lines + ["(*: p < 0.05)"]


def ablation_table(metrics: dict) -> list[str]:
    """Each RI component's share: the step from the previous model in margin < + regressor < + ID < + attention."""
    chain = [s for s in ("arcface", "ri+reg", "ri+reg+id", "ri") if mean_over_seeds(metrics, s)]
    if len(chain) < 2:
        return []
    means = {s: mean_over_seeds(metrics, s)[0] for s in chain}
    keys = [k for k in ("lr-lr@16", "lr-lr@8", "hr-lr@8") if all(k in means[s] for s in chain)]
    lines = ["\nRI ablation, accuracy step from the previous row (points):", "",
             "| step | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for before, after in itertools.pairwise(chain):
        lines.append(f"| {before} → {after} | " + " | ".join(
            f"{means[after][k]['accuracy'] - means[before][k]['accuracy']:+.2f}" for k in keys) + " |")
    return lines


def per_half_table(results: dict, all_pairs, rs: list[int]) -> list[str]:
    """Every saved (system, seed, half) on its own: compares systems on the same half before both are done."""
    lines = ["\nper half (thresholds and TAR within the half):\n"]
    head = "| system | seed | half | " + " | ".join(f"LR-LR {r}" for r in rs) + " | HR-LR 8 | TAR@1e-2 16 | " \
           "TAR@1e-2 8 | steps | s/step |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for (system, seed), records in sorted(results.items(), key=lambda kv: (list(SYSTEMS).index(kv[0][0]), kv[0][1])):
        for record in sorted(records, key=lambda r: r["settings"]["half"]):
            m = system_metrics([record], all_pairs)
            cells = [f"{m[f'lr-lr@{r}']['accuracy']:.2f}" if f"lr-lr@{r}" in m else "—" for r in rs]
            extra = [f"{m[k]['accuracy' if k.startswith('hr') else 'tar@0.01']:.2f}" if k in m else "—"
                     for k in ("hr-lr@8", "lr-lr@16", "lr-lr@8")]
            train = record.get("train") or {}
            pace = f"{train['seconds_per_step']:.1f}" if train.get("seconds_per_step") else "—"
            lines.append(f"| {system} | {seed} | {record['settings']['half']} | " + " | ".join(cells + extra)
                         + f" | {record['settings']['steps']} | {pace} |")
    return lines


def ri_log_report(args: argparse.Namespace, results: dict) -> list[str]:
    return _tables.ri_log_report(RESULTS / args.mode, results)


def low_far_significance(low_far: dict) -> list[dict]:
    return _tables.low_far_significance(low_far, CLAIMS)


def result_values(args: argparse.Namespace, metrics: dict, low_far: dict | None = None) -> dict[str, str]:
    result = {}
    seeds = 0
    for system in SYSTEMS:
        agg = mean_over_seeds(metrics, system)
        if agg is None:
            continue
        m, n = agg
        seeds = max(seeds, n)
        key = system.replace("+", "_")
        for r in (112, 16, 8):
            if f"lr-lr@{r}" in m:
                result[f"{key}_acc{r}"] = f"{m[f'lr-lr@{r}']['accuracy']:.2f}"
        if "lr-lr@16" in m:
            result[f"{key}_tar16"] = f"{m['lr-lr@16']['tar@0.01']:.2f}"
        if "hr-lr@8" in m:
            result[f"{key}_hrlr8"] = f"{m['hr-lr@8']['accuracy']:.2f}"
    for system, m in (low_far or {}).items():
        for r in (16, 8):
            if f"lr-lr@{r}" in m:
                result[f"{system.replace('+', '_')}_tar1e4_{r}"] = f"{m[f'lr-lr@{r}']['figures']['tar@0.0001']:.2f}"
    if low_far and "arcface+unpg" in low_far and "arcface" in low_far:
        from rankface.evaluation.verification import bootstrap_difference

        test = bootstrap_difference(low_far["arcface+unpg"]["lr-lr@16"]["boot"]["tar@0.0001"],
                                    low_far["arcface"]["lr-lr@16"]["boot"]["tar@0.0001"])
        result["p_unpg_tar1e4_16"] = f"{test['p']:.3g}"
    result["seeds"] = str(seeds)
    result["mode"] = args.mode
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
