"""Protocol F2 (../shared/docs/benchmarks.md): face image quality on mixed-resolution LFW pairs, error versus discard.

Every image slot of the 6,000 View-2 pairs gets a resolution drawn with a fixed seed from {8, 12, 16, 24, 112} (one
draw per slot, over all 6,000 pairs, so `--quick` scores the same degraded pairs as the full mode) and is degraded
with `degrade_exact` (INTER_AREA down to r, INTER_CUBIC back to 112). A pair's score is the cosine of the two
embeddings, its quality the lower of the two images' qualities. The threshold is fixed at FMR = 1e-2 over all
impostor pairs; the lowest-quality fraction d in 0..0.5 is discarded and the FNMR of the remaining genuine pairs
plotted; the summary is the area up to d = 0.3 (lower is better). `rankface.evaluation.quality` does the curves.

Quality functions:
- `ri`: the regressed recognizability index of an RI model (`--ri-model PATH`, a rankface `RecognizabilityModel`
  checkpoint; without it the RI rows are skipped).
- `norm`: the L2 norm of the (unnormalised) backbone embedding, of the RI model and of a plain encoder
  (`--norm-model`, default: the pretrained MobileFaceNet in ../shared/models, converted to a rankface checkpoint
  with `rankface.models.mobilefacenet.convert`).
- references on the same scores: `random` (mean of 10 random orders), `resolution oracle` (quality = the image's
  resolution, ties in a seeded random order) and the `error oracle` (false non-matches first: the lower bound).

The RESULT line reports the RI model's curves when `--ri-model` is given, else the plain encoder's:
`ratio_ri_to_norm` = pAUC(RI) / pAUC(norm of the same model); keys that cannot be computed are `nan`.

Each (image, resolution) is embedded once, in batches, under `torch.inference_mode`. Per-system results (pair scores,
per-image qualities, curves) are saved as JSON under benchmarks/results/quality_erc/<mode>/ and reused by a rerun
with the same settings (same model files, pairs, seed).

    python benchmarks/quality_erc.py --quick                       # View-2 folds 0-1 (1,200 pairs)
    python benchmarks/quality_erc.py --ri-model runs/ri/model      # all 6,000 pairs

Cost on the shared 2-core machine (torch, MobileFaceNet at 112 px, ~18 views/s under load): quick mode embeds
2,215 views in ~2 min per model; the full mode ~11,000 views, ~10 min per model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from rankface.data.faces import degrade_exact, image_to_rgb_array, load_face_dataset, pair_rows, read_lfw_pairs
from rankface.evaluation.quality import (
    ERCCurve,
    erc_table,
    error_versus_discard,
    oracle_erc,
    pair_quality,
    plot_erc,
    random_erc,
)
from rankface.evaluation.verification import cosine_pair_scores
from rankface.paths import shared_dir
from rankface.utils.io import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality_erc"
RESOLUTIONS = (8, 12, 16, 24, 112)
QUICK_FOLDS = (0, 1)
FMR = 1e-2
UPTO = 0.3
RESULT_KEYS = ("ri_pauc", "norm_pauc", "random_pauc", "oracle_pauc", "ratio_ri_to_norm", "mode")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only the pairs of View-2 folds {QUICK_FOLDS}")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="View-2 folds to score (default: all 10)")
    parser.add_argument("--ri-model", type=Path, default=None, help="rankface RecognizabilityModel checkpoint folder")
    parser.add_argument("--norm-model", type=Path, default=None,
                        help="plain face encoder for the norm baseline: a rankface checkpoint folder or a MobileFaceNet "
                             ".pt state_dict (default: ../shared/models/mobilefacenet/mobilefacenet.pt)")
    parser.add_argument("--no-norm-model", action="store_true", help="skip the plain encoder's norm baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image resolution draw")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--mode", default=None, help="results folder name (default: quick / full)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick and args.folds is None:
        args.folds = list(QUICK_FOLDS)
    args.folds = sorted(set(args.folds if args.folds is not None else range(10)))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    args.mode = args.mode or ("quick" if args.quick else "full")
    if args.norm_model is None and not args.no_norm_model:
        args.norm_model = shared_dir() / "models" / "mobilefacenet" / "mobilefacenet.pt"
    if args.ri_model is not None and not args.ri_model.is_dir():
        parser.error(f"--ri-model {args.ri_model}: not a checkpoint folder (expected config.json + model.safetensors)")
    return args


# ---------------------------------------------------------------------------------------------- pure logic
def draw_resolutions(num_pairs: int, seed: int, choices: Sequence[int] = RESOLUTIONS) -> np.ndarray:
    """Resolution of every image slot of every pair, `[P, 2]` int64, uniform over `choices` with a fixed seed.

    Drawn for all pairs at once, so a subset of pairs (quick mode) has the same resolutions as in the full run.
    """
    rng = np.random.default_rng(seed)
    return np.asarray(choices, dtype=np.int64)[rng.integers(0, len(choices), size=(num_pairs, 2))]


def unique_views(rows: np.ndarray, resolutions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (image row, resolution) views of the pair slots, so each is embedded once.

    Args:
        rows: `[P, 2]` data set rows of the pairs' images.
        resolutions: `[P, 2]` resolution of each slot.

    Returns:
        `(views [U, 2], inverse [P, 2])`: views sorted by (row, resolution); `views[inverse[p, j]]` is slot (p, j).
    """
    rows, resolutions = np.asarray(rows), np.asarray(resolutions)
    if rows.shape != resolutions.shape or rows.ndim != 2 or rows.shape[1] != 2:
        raise ValueError(f"unique_views: rows {rows.shape} and resolutions {resolutions.shape} must both be [P, 2]")
    pairs = np.stack([rows.reshape(-1), resolutions.reshape(-1)], axis=1)
    views, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return views, inverse.reshape(rows.shape)


def pair_values(image_values: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Per-view values `[U, ...]` -> per-slot values `[P, 2, ...]`."""
    return np.asarray(image_values)[inverse]


def system_curves(scores: np.ndarray, same: np.ndarray, slot_quality: Mapping[str, np.ndarray],
                  resolutions: np.ndarray, seed: int = 0) -> dict[str, ERCCurve]:
    """ERC curves of each quality (per-slot `[P, 2]` -> pair quality = min) and the references on the same scores.

    Returns:
        `{quality name: curve, "random": ..., "resolution oracle": ..., "error oracle": ...}`.
    """
    curves = {
        name: error_versus_discard(scores, same, pair_quality(q[:, 0], q[:, 1]), fmr=FMR, tie_seed=seed, name=name)
        for name, q in slot_quality.items()
    }
    curves["random"] = random_erc(scores, same, fmr=FMR, seed=seed)
    oracle = pair_quality(resolutions[:, 0], resolutions[:, 1])
    curves["resolution oracle"] = error_versus_discard(scores, same, oracle, fmr=FMR, tie_seed=seed,
                                                       name="resolution oracle")
    curves["error oracle"] = oracle_erc(scores, same, fmr=FMR)
    return curves


def headline(ri: Mapping[str, ERCCurve] | None, plain: Mapping[str, ERCCurve] | None, mode: str) -> dict[str, str]:
    """The RESULT values: the RI model's curves when present, else the plain encoder's; `nan` where unavailable."""
    source = ri if ri is not None else plain

    def pauc(curves: Mapping[str, ERCCurve] | None, name: str) -> float:
        return curves[name].pauc(UPTO) if curves is not None and name in curves else math.nan

    values = {
        "ri_pauc": pauc(ri, "ri"),
        "norm_pauc": pauc(source, "norm"),
        "random_pauc": pauc(source, "random"),
        "oracle_pauc": pauc(source, "resolution oracle"),
    }
    norm = values["norm_pauc"]
    values["ratio_ri_to_norm"] = values["ri_pauc"] / norm if norm > 0 else math.nan
    out = {k: "nan" if math.isnan(v) else f"{v:.5f}" for k, v in values.items()}
    out["mode"] = mode
    return out


def attainable_share(curves: Mapping[str, ERCCurve]) -> dict[str, float]:
    """How much of the improvement a quality could make it makes: `(random - q) / (random - error oracle)` of the
    pAUCs, per quality curve (0 = no better than a random order, 1 = as good as knowing the errors). The error
    oracle is the floor no quality can pass, which matters when judging a ratio goal such as RI <= 0.8 x norm."""
    rand, floor = curves["random"].pauc(UPTO), curves["error oracle"].pauc(UPTO)
    span = rand - floor
    return {name: (rand - c.pauc(UPTO)) / span if span > 0 else math.nan
            for name, c in curves.items() if name not in ("random", "error oracle")}


def goal_line(curves: Mapping[str, ERCCurve], ratio: float = 0.8) -> str:
    """The F2 goal `pAUC(ri) <= ratio x pAUC(norm)` beside the floor set by the error oracle."""
    target, floor = ratio * curves["norm"].pauc(UPTO), curves["error oracle"].pauc(UPTO)
    verdict = ("below the error oracle: no quality function can reach it on these scores" if target < floor
               else "reachable in principle (above the error oracle)")
    return (f"Goal pAUC(ri) <= {ratio} x pAUC(norm) = {target:.5f}; pAUC(ri) = {curves['ri'].pauc(UPTO):.5f}; "
            f"error oracle (perfect quality) = {floor:.5f}: the goal is {verdict}.")


def result_line(values: Mapping[str, str]) -> str:
    """`RESULT k=v ...` in the protocol's key order."""
    missing = [k for k in RESULT_KEYS if k not in values]
    if missing:
        raise ValueError(f"result_line: missing key(s) {missing}")
    return "RESULT " + " ".join(f"{k}={values[k]}" for k in RESULT_KEYS)


def mean_by_resolution(slot_quality: np.ndarray, resolutions: np.ndarray) -> dict[int, float]:
    """Mean image quality per resolution (does the quality order the resolutions at all?)."""
    q, r = np.asarray(slot_quality).reshape(-1), np.asarray(resolutions).reshape(-1)
    return {int(v): float(q[r == v].mean()) for v in np.unique(r)}


def rates_by_resolution(scores: np.ndarray, same: np.ndarray, resolutions: np.ndarray, threshold: float
                        ) -> dict[int, dict[str, float]]:
    """Where the fixed threshold bites, per pair's lower resolution r: the genuine accept rate (TAR), the impostor
    accept rate (FMR) and the number of pairs. With collapsed very-low-resolution embeddings the FMR = 1e-2
    threshold is set by the lowest-resolution impostors, which this table shows."""
    s, g = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    low = np.asarray(resolutions).min(axis=1)
    out = {}
    for r in np.unique(low):
        m = low == r
        out[int(r)] = {"tar": float(np.mean(s[m & g] > threshold)) if (m & g).any() else math.nan,
                       "fmr": float(np.mean(s[m & ~g] > threshold)) if (m & ~g).any() else math.nan,
                       "genuine": int((m & g).sum()), "impostor": int((m & ~g).sum())}
    return out


# ---------------------------------------------------------------------------------------------- models
def fingerprint(path: Path) -> str:
    """SHA-256 over the weight and config files of a checkpoint folder (or of one file)."""
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".pt") and p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no checkpoint files (config.json, *.safetensors)")
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_model(path: Path, work_dir: Path, expect_ri: bool) -> tuple[torch.nn.Module, Path]:
    """A rankface face encoder in eval mode from a checkpoint folder, or from a MobileFaceNet `.pt` state_dict
    (converted once into `work_dir` with `rankface.models.mobilefacenet.convert`). Returns (model, folder)."""
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401 - registers the rankface model types
    from rankface.models.recognizability import RecognizabilityModel

    if path.is_file():
        from rankface.models.mobilefacenet.convert import convert_mobilefacenet

        folder = work_dir / f"converted-{fingerprint(path)[:12]}"
        if not (folder / "config.json").is_file():
            convert_mobilefacenet(path, folder)
        path = folder
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: expected a rankface checkpoint folder with config.json")
    model = AutoModel.from_pretrained(path).eval()
    if expect_ri and not isinstance(model, RecognizabilityModel):
        raise TypeError(f"--ri-model {path}: config.json model_type is {model.config.model_type!r}, expected "
                        "'rankface-recognizability' (a RecognizabilityModel checkpoint)")
    if not hasattr(model.config, "input_size"):
        raise TypeError(f"{path}: {type(model).__name__} is not a rankface face encoder (no config.input_size)")
    return model, path


@torch.inference_mode()
def embed_views(model: torch.nn.Module, load_images: Callable[[np.ndarray], np.ndarray], views: np.ndarray,
                batch_size: int = 64, progress: bool = True) -> dict[str, np.ndarray]:
    """Embed each (row, resolution) view once.

    Args:
        model: rankface face encoder (its output has `embedding`; an RI model also `quality`, `matching_embedding`).
        load_images: rows `[n]` -> `[n, S, S, 3]` uint8 RGB images.
        views: `[U, 2]` (row, resolution), as from `unique_views`.

    Returns:
        `{"embedding": [U, E] matching embedding, "norm": [U] L2 norm of the backbone embedding, "ri": [U]}` (`ri`
        only for models that output a quality).
    """
    from rankface.models.face_processor import FaceImageProcessor

    processor = FaceImageProcessor.from_model_config(model.config)
    model.eval()
    out: dict[str, list[np.ndarray]] = {"embedding": [], "norm": [], "ri": []}
    started = time.perf_counter()
    for start in range(0, len(views), batch_size):
        chunk = views[start:start + batch_size]
        rows, local = np.unique(chunk[:, 0], return_inverse=True)
        images = load_images(rows)
        batch = [images[i] if r >= images.shape[1] else degrade_exact(images[i], int(r))
                 for i, r in zip(local.tolist(), chunk[:, 1].tolist(), strict=True)]
        pixel_values = processor(batch)["pixel_values"]
        # channels_last: NHWC kernels, ~2x faster for these depthwise-heavy networks on CPU (see embed_uint8).
        result = model(pixel_values.contiguous(memory_format=torch.channels_last))
        v = result.embedding.float()
        matching = getattr(result, "matching_embedding", None)
        out["embedding"].append((v if matching is None else matching.float()).numpy())
        out["norm"].append(torch.linalg.vector_norm(v, dim=1).numpy())
        quality = getattr(result, "quality", None)
        if quality is not None:
            out["ri"].append(quality.float().numpy())
        done = start + len(chunk)
        if progress and (done == len(views) or (start // batch_size) % 10 == 9):
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"  embedded {done}/{len(views)} views ({rate:.1f}/s)", flush=True)
    return {k: np.concatenate(v) for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------- systems
def score_system(model: torch.nn.Module, load_images: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                 resolutions: np.ndarray, batch_size: int = 64, progress: bool = True) -> dict:
    """Pair scores `[P]` and per-slot qualities `{"norm": [P, 2], "ri": [P, 2]}` of one model."""
    views, inverse = unique_views(rows, resolutions)
    started = time.perf_counter()
    embedded = embed_views(model, load_images, views, batch_size, progress)
    seconds = time.perf_counter() - started
    emb = embedded["embedding"]
    scores = cosine_pair_scores(emb[inverse[:, 0]], emb[inverse[:, 1]])
    quality = {name: pair_values(embedded[name], inverse) for name in ("ri", "norm") if name in embedded}
    return {"scores": scores, "quality": quality, "num_views": len(views), "embed_seconds": seconds}


def curves_json(curves: Mapping[str, ERCCurve]) -> dict:
    def clean(values: np.ndarray) -> list:
        return [None if not np.isfinite(v) else float(v) for v in values]

    return {name: {"pauc": c.pauc(UPTO), "threshold": c.threshold, "fmr": c.fmr, "discard": clean(c.discard),
                   "fnmr": clean(c.fnmr)} for name, c in curves.items()}


def run_system(name: str, model_path: Path, args: argparse.Namespace, context: dict, out_dir: Path) -> dict:
    """Score one model (or reuse its saved result) and return the record with `curves` rebuilt."""
    path = out_dir / f"{name}.json"
    settings = {"system": name, "model": str(model_path), "model_sha256": fingerprint(model_path),
                "folds": args.folds, "num_pairs": len(context["pair_indices"]), "seed": args.seed,
                "resolutions": list(RESOLUTIONS), "fmr": FMR}
    record = None
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("settings") == settings:
            print(f"[skip] {name}: {path}", flush=True)
            record = saved
        else:
            print(f"[redo] {name}: saved with other settings", flush=True)
    if record is None:
        model, folder = load_model(model_path, out_dir / "models", expect_ri=name == "ri")
        print(f"[embed] {name}: {type(model).__name__} from {folder}", flush=True)
        result = score_system(model, context["load_images"], context["rows"], context["resolutions"],
                              args.batch_size)
        record = {"settings": settings, "model_class": type(model).__name__,
                  "pair_indices": context["pair_indices"].tolist(), "scores": result["scores"].tolist(),
                  "quality": {k: v.tolist() for k, v in result["quality"].items()},
                  "num_views": result["num_views"], "embed_seconds": result["embed_seconds"]}
    quality = {k: np.asarray(v, dtype=np.float64) for k, v in record["quality"].items()}
    if name != "ri":
        quality.pop("ri", None)  # a plain encoder has no RI; an RI model given as --norm-model is scored by norm only
    curves = system_curves(np.asarray(record["scores"]), context["same"], quality, context["resolutions"], args.seed)
    record["curves"] = curves_json(curves)
    write_json(path, record)
    record["_curves"] = curves
    return record


def report(systems: Mapping[str, dict], resolutions: np.ndarray, same: np.ndarray, out_dir: Path, mode: str,
           num_pairs: int) -> str:
    lines = [f"\n### Quality: error versus discard (protocol F2, mode={mode}, {num_pairs} mixed-resolution pairs)\n"]
    labels = {"ri": "RI model", "plain": "plain encoder"}
    for name, record in systems.items():
        curves = record["_curves"]
        lines.append(f"**{labels.get(name, name)}** ({record['model_class']}, `{record['settings']['model']}`; "
                     f"{record['num_views']} views embedded in {record['embed_seconds']:.0f} s)\n")
        lines.append(erc_table(curves, upto=UPTO))
        shares = attainable_share(curves)
        lines.append("\nShare of the attainable improvement over a random order (error oracle = 1): " + ", ".join(
            f"{q} {v:.2f}" for q, v in shares.items()) + "\n")
        if "ri" in curves and "norm" in curves:
            lines.append(goal_line(curves) + "\n")
        means = {q: mean_by_resolution(np.asarray(record["quality"][q]), resolutions) for q in record["quality"]
                 if q in curves}
        if means:
            rs = sorted(next(iter(means.values())))
            lines += ["", "| mean image quality | " + " | ".join(f"{r} px" for r in rs) + " |",
                      "|---|" + "---:|" * len(rs)]
            lines += [f"| {q} | " + " | ".join(f"{m[r]:.3f}" for r in rs) + " |" for q, m in means.items()]
        threshold = next(iter(curves.values())).threshold
        rates = rates_by_resolution(np.asarray(record["scores"]), same, resolutions, threshold)
        rs = sorted(rates)
        lines += ["", f"At the fixed threshold {threshold:.4f}, by the pair's lower resolution:", "",
                  "| | " + " | ".join(f"{r} px" for r in rs) + " |", "|---|" + "---:|" * len(rs),
                  "| genuine accepted (TAR) | " + " | ".join(f"{rates[r]['tar']:.3f}" for r in rs) + " |",
                  "| impostors accepted (FMR) | " + " | ".join(f"{rates[r]['fmr']:.3f}" for r in rs) + " |",
                  "| pairs (genuine / impostor) | " + " | ".join(
                      f"{rates[r]['genuine']} / {rates[r]['impostor']}" for r in rs) + " |"]
        png = plot_erc(curves, out_dir / f"erc_{name}.png", title=f"ERC, {labels.get(name, name)} ({mode})", upto=UPTO)
        lines.append(f"\nplot: {png}\n")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data_dir = shared_dir() / "data" / "face" / "lfw112"
    if not data_dir.is_dir():
        raise SystemExit(f"needs {data_dir} (set RANKFACE_SHARED)")
    out_dir = args.results_dir / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, data_report = load_face_dataset(data_dir, check_images=False)  # the shared Parquet decodes (README)
    all_pairs = read_lfw_pairs(data_dir / "pairs.txt")
    all_resolutions = draw_resolutions(len(all_pairs), args.seed)
    pair_indices = np.array([i for i, p in enumerate(all_pairs) if p.fold in set(args.folds)], dtype=np.int64)
    if pair_indices.size == 0:
        raise SystemExit(f"--folds {args.folds}: no View-2 pairs in these folds (folds are 0-9)")
    rows = pair_rows(dataset, [all_pairs[i] for i in pair_indices])
    images = dataset.select_columns(["image"])

    def load_images(wanted: np.ndarray) -> np.ndarray:
        return np.stack([image_to_rgb_array(img) for img in images[wanted.tolist()]["image"]])

    context = {"pair_indices": pair_indices, "rows": rows, "resolutions": all_resolutions[pair_indices],
               "same": np.array([all_pairs[i].same for i in pair_indices]), "load_images": load_images}
    counts = {int(r): int((context["resolutions"] == r).sum()) for r in RESOLUTIONS}
    print(f"{data_report.summary()}; mode={args.mode} folds={args.folds} pairs={len(pair_indices)} "
          f"slots per resolution={counts} seed={args.seed}", flush=True)

    systems: dict[str, dict] = {}
    if args.ri_model is None:
        print("no --ri-model given: the RI rows are skipped (ri_pauc and ratio_ri_to_norm are nan)", flush=True)
    else:
        systems["ri"] = run_system("ri", args.ri_model, args, context, out_dir)
    if args.norm_model is not None:
        systems["plain"] = run_system("plain", args.norm_model, args, context, out_dir)
    if not systems:
        raise SystemExit("nothing to score: give --ri-model and/or leave the --norm-model baseline on")

    values = headline(systems["ri"]["_curves"] if "ri" in systems else None,
                      systems["plain"]["_curves"] if "plain" in systems else None, args.mode)
    text = report(systems, context["resolutions"], context["same"], out_dir, args.mode, len(pair_indices))
    line = result_line(values)
    write_json(out_dir / "summary.json", {"result": values, "settings": {k: str(v) for k, v in vars(args).items()},
                                          "pauc": {s: {n: c["pauc"] for n, c in r["curves"].items()}
                                                   for s, r in systems.items()}})
    with atomic_write(out_dir / "report.md") as handle:
        handle.write(text + "\n\n" + line + "\n")
    print(text, flush=True)
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
