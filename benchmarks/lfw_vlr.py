"""Protocol F1 (../shared/docs/benchmarks.md): very-low-resolution verification on LFW, 2 x 5 identity-disjoint folds.

Systems: `pretrained` (the public MobileFaceNet, converted to rankface, no fine-tuning) and the same network
fine-tuned with `arcface`, `arcface+unpg`, `cosface`, `cosface+unpg` (recipes/configs/lfw_vlr_*.yaml: same schedule,
data and very-low-resolution augmentation; the benchmark overrides only the budget). Model A trains on every identity
outside View-2 folds 0-4 and scores the pairs of folds 0-4; model B the other way round.

Evaluation, exactly as the lfw112 README: images degraded with `degrade_exact` (cv2 INTER_AREA down to r, INTER_CUBIC
back to 112), cosine of L2-normalised embeddings; LR-LR (both images at r) and HR-LR (first at 112, second at r);
10-fold accuracy with each fold's threshold chosen on the other folds of the same half; ROC AUC and TAR at FAR 1e-2 /
1e-3 per half, then averaged. The `pretrained` row is also scored with the README's anchor protocol (thresholds over
all 9 other folds, TAR pooled) and compared with the README's figures.

Embeddings are computed with onnxruntime on an ONNX export of each model (`rankface.models.face_export`,
parity-tested against PyTorch): several times faster than eager PyTorch on these CPUs. `--engine torch` uses PyTorch.

Each (system, seed, half) result (with every pair score) is saved under benchmarks/results/lfw_vlr/<mode>/ when it
finishes; a rerun with the same settings skips it, so the full table can be completed over several runs.

    python benchmarks/lfw_vlr.py --quick      # 2 folds per half, r in {112, 16, 8}, 4 steps of 16 images per model
    python benchmarks/lfw_vlr.py              # all 6,000 pairs, r in {112, 24, 16, 12, 8}, 60 steps of 64 images

Full-mode budget: on these 2 shared cores one MobileFaceNet training step of 64 images at 112 px takes 12-40 s
(5 to 1.5 images/s, depending on the other load) and scoring one half at 5 resolutions ~300-650 s, so 60 steps x 64
images (about 0.75 epoch of the ~5,100 training images of a half) per model keeps the 9 models near two hours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from rankface.data.faces import degrade_exact, image_to_rgb_array, load_face_dataset, pair_rows, read_lfw_pairs
from rankface.evaluation.verification import (
    cosine_pair_scores,
    kfold_accuracy,
    plot_accuracy_vs_resolution,
    roc_auc,
    tar_at_far,
)
from rankface.paths import shared_dir
from rankface.utils.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lfw_vlr"
CONFIGS = ROOT / "recipes" / "configs"
SYSTEMS = {  # name -> recipe config (None: no training)
    "pretrained": None,
    "arcface": "lfw_vlr_arcface.yaml",
    "arcface+unpg": "lfw_vlr_arcface_unpg.yaml",
    "cosface": "lfw_vlr_cosface.yaml",
    "cosface+unpg": "lfw_vlr_cosface_unpg.yaml",
}
RI_SYSTEMS = {  # --with-ri: the RI model and its ablations (methods.md section 3: margin < + regressor < + ID < + att)
    "ri+reg": "lfw_vlr_ri.yaml",
    "ri+reg+id": "lfw_vlr_ri.yaml",
    "ri": "lfw_vlr_ri.yaml",
}
# Investigation, run only when named: the RI model with its new modules (regressor, attention) at the classifier's
# learning rate instead of the pretrained backbone's.
RI_SYSTEMS_EXTRA = {"ri-headlr": "lfw_vlr_ri.yaml"}
SYSTEM_OVERRIDES = {
    "ri+reg": ["--ri_attention", "false", "--ri_beta", "0"],
    "ri+reg+id": ["--ri_attention", "false"],
    "ri-headlr": ["--ri_head_learning_rate", "0.05"],
}
# The recipe turns index diversion and attention on after one epoch (methods.md: "about one epoch"), which the
# benchmark's budget (60 steps x 64 images, 0.75 epoch) never reaches: the ablations would all equal `ri+reg`.
# The benchmark therefore scales the warm-up to its budget, a quarter of the steps (15 of 60: the UI centre's EMA
# has then seen 15 batches of unrecognizable images).
RI_WARMUP_SHARE = 0.25


def system_overrides(system: str, steps: int) -> list[str]:
    """Recipe flags of `system` beyond its config, for a budget of `steps` optimizer steps."""
    flags = list(SYSTEM_OVERRIDES.get(system, []))
    if system in RI_SYSTEMS or system in RI_SYSTEMS_EXTRA:
        flags += ["--ri_warmup_steps", str(max(1, round(steps * RI_WARMUP_SHARE)))]
    return flags


SYSTEMS.update(RI_SYSTEMS)
BASE_SYSTEMS = [s for s in SYSTEMS if s not in RI_SYSTEMS]
SYSTEMS.update(RI_SYSTEMS_EXTRA)
HALVES = {"A": [0, 1, 2, 3, 4], "B": [5, 6, 7, 8, 9]}
ANCHOR = {  # lfw112 README, LR-LR 10-fold accuracy (%) and HR-LR at 8 px
    ("lr-lr", 112): 99.37, ("lr-lr", 24): 92.00, ("lr-lr", 16): 81.08, ("lr-lr", 12): 73.98, ("lr-lr", 8): 68.28,
    ("hr-lr", 24): 95.00, ("hr-lr", 16): 79.65, ("hr-lr", 12): 66.50, ("hr-lr", 8): 55.95,
}
FARS = (1e-2, 1e-3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, 2 folds per half, r in {112, 16, 8}")
    parser.add_argument("--systems", nargs="+", default=None, choices=list(SYSTEMS),
                        help=f"default: {' '.join(BASE_SYSTEMS)} (+ {' '.join(RI_SYSTEMS)} with --with-ri)")
    parser.add_argument("--with-ri", action="store_true", help="add the RI model and its ablations")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--halves", nargs="+", default=list(HALVES), choices=list(HALVES))
    parser.add_argument("--resolutions", nargs="+", type=int, default=None, help="quick: 112 16 8; full: 112 24 16 12 8")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model (quick 4, full 60)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (quick 16, full 64)")
    parser.add_argument("--min-images-per-class", type=int, default=None,
                        help="training identities need this many images (quick 5: fewer classes to initialise; full 2)")
    parser.add_argument("--folds-per-half", type=int, default=None, help="evaluated folds per half (quick 2, full 5)")
    parser.add_argument("--head-init-images", type=int, default=None, help="images per class for the centroid init "
                        "(quick 1, full 2)")
    parser.add_argument("--engine", default="onnx", choices=["onnx", "torch"], help="inference engine")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--mode", default=None, help="results folder name (default: quick / full)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars while training")
    args = parser.parse_args(argv)
    quick = args.quick
    args.systems = args.systems or (BASE_SYSTEMS + (list(RI_SYSTEMS) if args.with_ri else []))
    args.resolutions = args.resolutions or ([112, 16, 8] if quick else [112, 24, 16, 12, 8])
    if 112 not in args.resolutions:
        args.resolutions = [112, *args.resolutions]  # HR-LR needs the 112 px embeddings
    args.steps = args.steps or (4 if quick else 60)
    args.batch_size = args.batch_size or (16 if quick else 64)
    args.min_images_per_class = args.min_images_per_class or (5 if quick else 2)
    args.folds_per_half = args.folds_per_half or (2 if quick else 5)
    args.head_init_images = args.head_init_images or (1 if quick else 2)
    args.mode = args.mode or ("quick" if quick else "full")
    if not 2 <= args.folds_per_half <= 5:
        raise SystemExit(f"--folds-per-half must be in 2..5 (k-fold needs 2 folds), got {args.folds_per_half}")
    return args


# ---------------------------------------------------------------------------------------------- settings
def run_settings(args: argparse.Namespace, system: str, seed: int, half: str) -> dict:
    """Everything that determines a (system, seed, half) result; stored with it and compared on rerun."""
    flags = system_overrides(system, args.steps)
    extra = {"overrides": flags} if flags else {}
    return {
        **extra,
        "system": system, "seed": seed, "half": half, "heldout_folds": HALVES[half],
        "eval_folds": HALVES[half][: args.folds_per_half], "resolutions": sorted(args.resolutions, reverse=True),
        "steps": 0 if SYSTEMS[system] is None else args.steps, "batch_size": args.batch_size,
        "head_init_images": args.head_init_images,
        "config": None if SYSTEMS[system] is None else (CONFIGS / SYSTEMS[system]).read_text(),
        **({} if SYSTEMS[system] is None else {"min_images_per_class": args.min_images_per_class}),
    }


def result_path(args: argparse.Namespace, system: str, seed: int, half: str) -> Path:
    return RESULTS / args.mode / f"{system.replace('+', '_')}-seed{seed}-half{half}.json"


def claim(path: Path) -> bool:
    """Take `<path>.lock` (holding this process id) so that benchmark processes run side by side, e.g. one per
    system, never work on the same (system, seed, half); a lock whose process is gone is taken over."""
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


# ---------------------------------------------------------------------------------------------- models
def train_model(args: argparse.Namespace, system: str, seed: int, half: str, run_dir: Path) -> tuple[Path, dict]:
    """Fine-tune with the system's recipe config and the benchmark's budget; returns (model folder, train info)."""
    from rankface.training.face import train_face
    from rankface.training.face_arguments import parse_face_training_args

    overrides = [
        "--config", str(CONFIGS / SYSTEMS[system]), "--heldout_folds", *map(str, HALVES[half]),
        "--max_steps", str(args.steps), "--batch_size", str(args.batch_size), "--seed", str(seed),
        "--head_init_images_per_class", str(args.head_init_images), "--output_dir", str(run_dir),
        "--eval_at_end", "false", "--checkpoint_steps", str(max(1, args.steps // 3)), "--checkpoints_to_keep", "1",
        "--resume_from_checkpoint", "latest", "--quiet", str(args.quiet).lower(),
        "--check_images", "false", "--min_images_per_class", str(args.min_images_per_class),  # the benchmark reads the shared Parquet, whose images all decode (README)
        *system_overrides(system, args.steps),
    ]
    settings = parse_face_training_args(overrides)
    settings.eval_steps = None
    started = time.perf_counter()
    train_face(settings)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log"] if "loss" in e]
    info = {"steps": state["step"], "train_seconds": state["train_seconds"], "wall_seconds": time.perf_counter() - started,
            "num_classes": state["num_classes"], "num_train_images": state["num_train_images"],
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "loss_last10": float(np.mean(losses[-10:])) if losses else None}
    return run_dir / "model", info


def load_encoder(model_dir: Path | None):
    if model_dir is None:
        from rankface.models.mobilefacenet.convert import load_mobilefacenet_state_dict

        return load_mobilefacenet_state_dict(shared_dir() / "models" / "mobilefacenet" / "mobilefacenet.pt")
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401 - registers rankface model types

    return AutoModel.from_pretrained(model_dir).eval()


class Embedder:
    """`[N, 112, 112, 3]` uint8 RGB -> `[N, E]` float32 embeddings with onnxruntime (an export of the model) or torch."""

    def __init__(self, model, engine: str, work_dir: Path, threads: int, batch_size: int = 128) -> None:
        self.model, self.engine, self.batch_size = model, engine, batch_size
        if engine == "onnx":
            import onnxruntime as ort

            from rankface.models.face_export import export_onnx

            path = export_onnx(model, work_dir / "encoder.onnx")
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from rankface.evaluation.verification import embed_uint8, pixel_values_from_uint8

        if self.engine == "torch":
            return embed_uint8(self.model, images, self.batch_size)
        out = []
        for start in range(0, len(images), self.batch_size):
            x = pixel_values_from_uint8(images[start:start + self.batch_size], self.model.config).numpy()
            out.append(self.session.run(None, {"pixel_values": x})[0])
        return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------- evaluation
def half_pairs(all_pairs, eval_folds: list[int]) -> np.ndarray:
    """Indices (into the 6,000 pairs, file order) of the pairs of `eval_folds`."""
    return np.array([i for i, p in enumerate(all_pairs) if p.fold in set(eval_folds)], dtype=np.int64)


def score_half(embed: Embedder, dataset, pair_index: np.ndarray, resolutions: list[int]) -> tuple[dict, float]:
    """Pair scores `{"lr-lr@r": [P], "hr-lr@r": [P]}` for the pairs `pair_index [P, 2]` (rows of `dataset`)."""
    rows, local = np.unique(pair_index, return_inverse=True)
    local = local.reshape(pair_index.shape)
    images = np.stack([image_to_rgb_array(dataset[int(r)]["image"]) for r in rows])
    embeddings: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    for r in sorted(resolutions, reverse=True):
        batch = images if r >= images.shape[1] else np.stack([degrade_exact(img, r) for img in images])
        embeddings[r] = embed(batch)
    seconds = time.perf_counter() - started
    scores = {}
    for r in sorted(resolutions, reverse=True):
        scores[f"lr-lr@{r}"] = cosine_pair_scores(embeddings[r][local[:, 0]], embeddings[r][local[:, 1]]).tolist()
        if r != 112:
            scores[f"hr-lr@{r}"] = cosine_pair_scores(embeddings[112][local[:, 0]], embeddings[r][local[:, 1]]).tolist()
    return scores, seconds


def half_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    kfold = kfold_accuracy(scores, same, folds=folds)
    out = {"fold_accuracies": kfold["fold_accuracies"], "auc": roc_auc(scores, same)}
    out.update({f"tar@{far:g}": tar_at_far(scores, same, far)[0] for far in FARS})
    return out


def system_metrics(results: list[dict], all_pairs) -> dict:
    """Combine the two halves of one (system, seed): accuracy = mean of all folds' accuracies (thresholds within
    each half), AUC and TAR = mean of the halves'. Values in %."""
    keys = results[0]["scores"].keys()
    out = {}
    for key in keys:
        per_half = []
        for res in results:
            idx = np.asarray(res["pair_indices"])
            same = np.array([all_pairs[i].same for i in idx])
            folds = np.array([all_pairs[i].fold for i in idx])
            per_half.append(half_metrics(np.asarray(res["scores"][key]), same, folds))
        accs = np.concatenate([h["fold_accuracies"] for h in per_half])
        out[key] = {"accuracy": 100 * float(accs.mean()), "accuracy_std": 100 * float(accs.std()),
                    "auc": float(np.mean([h["auc"] for h in per_half]))}
        for far in FARS:
            out[key][f"tar@{far:g}"] = 100 * float(np.mean([h[f"tar@{far:g}"] for h in per_half]))
    return out


def anchor_check(results: list[dict], all_pairs) -> dict | None:
    """The README's anchor protocol on the pretrained model's scores of all 6,000 pairs (None if not all scored)."""
    idx = np.concatenate([np.asarray(r["pair_indices"]) for r in results])
    if sorted(idx.tolist()) != list(range(len(all_pairs))):
        return None
    order = np.argsort(idx)
    same = np.array([p.same for p in all_pairs])
    out = {}
    for key in results[0]["scores"]:
        scores = np.concatenate([np.asarray(r["scores"][key]) for r in results])[order]
        setting, r = key.split("@")
        acc = 100 * kfold_accuracy(scores, same, folds=np.array([p.fold for p in all_pairs]))["accuracy"]
        anchor = ANCHOR.get((setting, int(r)))
        out[key] = {"accuracy": acc, "anchor": anchor, "diff": None if anchor is None else acc - anchor,
                    "tar@0.01": 100 * tar_at_far(scores, same, 1e-2)[0]}
    return out


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = shared_dir() / "data" / "face" / "lfw112"
    if not data_dir.is_dir():
        raise SystemExit(f"needs {data_dir} (set RANKFACE_SHARED)")
    out_dir = RESULTS / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, report = load_face_dataset(data_dir, check_images=False)
    all_pairs = read_lfw_pairs(data_dir / "pairs.txt")
    all_rows = pair_rows(dataset, all_pairs)
    print(f"{report.summary()}; mode={args.mode} systems={args.systems} seeds={args.seeds} steps={args.steps} "
          f"batch={args.batch_size} resolutions={args.resolutions} engine={args.engine}", flush=True)

    results: dict[tuple[str, int], list[dict]] = {}
    for seed in args.seeds:
        for system in args.systems:
            if system == "pretrained" and seed != args.seeds[0]:
                continue  # no training: one seed says it all
            for half in args.halves:
                path = result_path(args, system, seed, half)
                settings = run_settings(args, system, seed, half)
                if path.is_file():
                    saved = json.loads(path.read_text())
                    if saved["settings"] == settings:
                        print(f"[skip] {system} seed {seed} half {half}: {path.relative_to(ROOT)}", flush=True)
                        results.setdefault((system, seed), []).append(saved)
                        continue
                    print(f"[redo] {system} seed {seed} half {half}: saved with other settings", flush=True)
                if not claim(path):
                    print(f"[busy] {system} seed {seed} half {half}: another benchmark process is on it", flush=True)
                    continue
                started = time.perf_counter()
                run_dir = out_dir / "runs" / path.stem
                if path.is_file() and run_dir.exists():
                    shutil.rmtree(run_dir)  # its checkpoints belong to the other settings: do not resume them
                train_info = None
                model_dir = None
                if SYSTEMS[system] is not None:
                    print(f"[train] {system} seed {seed} half {half}: {args.steps} steps x {args.batch_size}",
                          flush=True)
                    model_dir, train_info = train_model(args, system, seed, half, run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                embed = Embedder(load_encoder(model_dir), args.engine, run_dir, args.threads)
                idx = half_pairs(all_pairs, settings["eval_folds"])
                scores, embed_seconds = score_half(embed, dataset, all_rows[idx], args.resolutions)
                record = {"settings": settings, "pair_indices": idx.tolist(), "scores": scores, "train": train_info,
                          "embed_seconds": embed_seconds, "engine": args.engine,
                          "wall_seconds": time.perf_counter() - started}
                write_json(path, record)
                path.with_suffix(".lock").unlink(missing_ok=True)
                quick_view = system_metrics([record], all_pairs)
                print(f"[done] {system} seed {seed} half {half} in {record['wall_seconds']:.0f} s: " + " ".join(
                    f"{k}={v['accuracy']:.2f}" for k, v in quick_view.items() if k.startswith("lr-lr")), flush=True)
                results.setdefault((system, seed), []).append(record)

    complete = {k: v for k, v in results.items() if len(v) == len(HALVES) and len(args.halves) == len(HALVES)}
    metrics = {k: system_metrics(v, all_pairs) for k, v in complete.items()}
    summary = render(args, metrics, results, all_pairs)
    write_json(out_dir / "summary.json", {"metrics": {f"{s}|{seed}": m for (s, seed), m in metrics.items()},
                                          "settings": vars(args)})
    print(summary, flush=True)
    return 0


def mean_over_seeds(metrics: dict, system: str) -> tuple[dict, int] | None:
    runs = [m for (s, _), m in metrics.items() if s == system]
    if not runs:
        return None
    keys = runs[0].keys()
    return {k: {f: float(np.mean([r[k][f] for r in runs])) for f in runs[0][k]} for k in keys}, len(runs)


def render(args: argparse.Namespace, metrics: dict, results: dict, all_pairs) -> str:
    lines = []
    rs = sorted(args.resolutions, reverse=True)
    if metrics:
        lines.append(f"\n### LFW-VLR (protocol F1, mode={args.mode}, {args.steps} steps x {args.batch_size} images per "
                     f"model, {args.folds_per_half} folds per half)\n")
        head = "| system | seeds | " + " | ".join(f"LR-LR {r}" for r in rs) + " | " + " | ".join(
            f"HR-LR {r}" for r in rs if r != 112) + " | TAR@1e-2 16 | TAR@1e-2 8 | AUC 16 |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        curves_lr, curves_hr = {}, {}
        for system in SYSTEMS:
            agg = mean_over_seeds(metrics, system)
            if agg is None:
                continue
            m, n = agg
            cells = [f"{m[f'lr-lr@{r}']['accuracy']:.2f} ± {m[f'lr-lr@{r}']['accuracy_std']:.2f}" for r in rs]
            cells += [f"{m[f'hr-lr@{r}']['accuracy']:.2f}" for r in rs if r != 112]
            tar = [f"{m[f'lr-lr@{r}']['tar@0.01']:.2f}" if f"lr-lr@{r}" in m else "—" for r in (16, 8)]
            auc = f"{m['lr-lr@16']['auc']:.4f}" if "lr-lr@16" in m else "—"
            lines.append(f"| {system} | {n} | " + " | ".join(cells) + f" | {' | '.join(tar)} | {auc} |")
            curves_lr[f"{system} LR-LR"] = {r: m[f"lr-lr@{r}"]["accuracy"] for r in rs}
            curves_hr[f"{system} HR-LR"] = {r: m[f"hr-lr@{r}"]["accuracy"] if r != 112 else m["lr-lr@112"]["accuracy"]
                                            for r in rs}
        plot = plot_accuracy_vs_resolution({**curves_lr, **curves_hr}, RESULTS / args.mode / "accuracy_vs_resolution.png",
                                           title=f"LFW-VLR verification ({args.mode})")
        lines.append(f"\nplot: {plot.relative_to(ROOT)}")
    partial = sorted({(s, seed) for (s, seed), v in results.items() if (s, seed) not in metrics})
    if partial:
        lines.append(f"incomplete (one half only, not in the table above): {partial}")
    if results:
        # Every saved (system, seed, half) on its own: compares systems on the same half before both are done.
        lines.append("\nper half (thresholds and TAR within the half):\n")
        head = "| system | seed | half | " + " | ".join(f"LR-LR {r}" for r in rs) + " | HR-LR 8 | TAR@1e-2 16 | " \
               "TAR@1e-2 8 | steps |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for (system, seed), records in sorted(results.items(), key=lambda kv: (list(SYSTEMS).index(kv[0][0]), kv[0][1])):
            for record in sorted(records, key=lambda r: r["settings"]["half"]):
                m = system_metrics([record], all_pairs)
                cells = [f"{m[f'lr-lr@{r}']['accuracy']:.2f}" if f"lr-lr@{r}" in m else "—" for r in rs]
                extra = [f"{m[k]['accuracy' if k.startswith('hr') else 'tar@0.01']:.2f}" if k in m else "—"
                         for k in ("hr-lr@8", "lr-lr@16", "lr-lr@8")]
                lines.append(f"| {system} | {seed} | {record['settings']['half']} | " + " | ".join(cells + extra)
                             + f" | {record['settings']['steps']} |")
    pre = results.get(("pretrained", args.seeds[0]))
    if pre and len(pre) == 2:
        check = anchor_check(pre, all_pairs)
        if check:
            lines.append("\nanchor check (README protocol over all 6,000 pairs, pretrained):")
            lines.append("| setting | rankface | README | diff |")
            lines.append("|---|---|---|---|")
            for key, v in check.items():
                anchor = "—" if v["anchor"] is None else f"{v['anchor']:.2f}"
                diff = "—" if v["diff"] is None else f"{v['diff']:+.2f}"
                lines.append(f"| {key} | {v['accuracy']:.2f} | {anchor} | {diff} |")
    result = {}
    for system in SYSTEMS:
        agg = mean_over_seeds(metrics, system)
        if agg is None:
            continue
        m, _ = agg
        key = system.replace("+", "_")
        for r in (112, 16, 8):
            if f"lr-lr@{r}" in m:
                result[f"{key}_acc{r}"] = f"{m[f'lr-lr@{r}']['accuracy']:.2f}"
        if "lr-lr@16" in m:
            result[f"{key}_tar16"] = f"{m['lr-lr@16']['tar@0.01']:.2f}"
        if "hr-lr@8" in m:
            result[f"{key}_hrlr8"] = f"{m['hr-lr@8']['accuracy']:.2f}"
    result["seeds"] = str(len(args.seeds))
    result["mode"] = args.mode
    lines.append("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
