"""Protocol F2 (../shared/docs/benchmarks.md): face image quality on mixed-resolution LFW pairs, error versus discard.

Every image slot of the 6,000 View-2 pairs gets a resolution drawn with a fixed seed (one draw per slot over all 6,000
pairs, so `--quick` scores a subset of the full mode's degraded pairs) and is degraded with `degrade_exact`
(INTER_AREA down to r, INTER_CUBIC back to 112). Two mixes, reported side by side:

- `hard`: uniform over {8, 12, 16, 24, 112} (measured: 73-77 % of genuine pairs fail at d = 0, so little room for any
  quality to act);
- `realistic`: over {8, 12, 16, 24, 32, 48, 112} with weights proportional to r^lambda, lambda chosen by bisection on
  the calibration pairs (one View-2 fold per half) so that the RI model's FNMR at d = 0 is near 25 %, inside the
  protocol's 10-40 % band; the weights and the FNMR of the scored pairs are printed.

A pair's score is the cosine of the RI model's two (matching) embeddings; the threshold is fixed at FMR = 1e-2 over
all impostor pairs; the lowest-quality fraction d in 0..0.5 is discarded (a pair's quality is the lower of its two
images') and the FNMR of the remaining genuine pairs plotted; the summary is the area up to d = 0.3 and each quality's
share of the attainable improvement (random order = 0, error oracle = 1). The qualities, all ranking the same pairs
of the same scores:

- `ri`: the regressed recognizability index of the RI model;
- `norm`: the L2 norm of the same model's backbone embedding;
- `magface norm`: the embedding norm of the MagFace model trained in the same F1 run and budget (the quality the
  face-quality field holds up);
- `ers 1-cos(v,UI)`: the ERS-style score, 1 - cos(v, UI centre) with the RI model's saved UI centre (issue 21; no
  retraining), and `ers x norm`, its product with the embedding norm;
- `resolution oracle` (quality = the image's resolution), `random` (mean of 10 orders), `error oracle` (false
  non-matches first: the floor no quality can pass).

Models come per F1 half (model A scores the pairs of folds 0-4, model B those of folds 5-9, so no model scores an
identity it trained on): `--from-f1 full` takes seed 0's `ri` and `magface` models of benchmarks/lfw_vlr.py's full run.
Each (image, resolution) view is embedded once per model and kept in a cache under the results folder (git-ignored),
so a rerun only recomputes the curves. Per-resolution RI histograms (PNG) show whether the RI separates 8 px from
24 px, and failures from successes within one resolution.

    python benchmarks/quality_erc.py --quick --from-f1 quick     # View-2 folds 0-1 (1,200 pairs), model A only
    python benchmarks/quality_erc.py --from-f1 full              # all 6,000 pairs, both halves' models

One RESULT line per mix (`mix=hard`, then `mix=realistic`).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from _plots import plot_erc_curves

from rankface.data.faces import degrade_exact, image_to_rgb_array, load_face_dataset, pair_rows, read_lfw_pairs
from rankface.evaluation.quality import (
    ERCCurve,
    erc_table,
    error_versus_discard,
    oracle_erc,
    pair_quality,
    random_erc,
    threshold_at_fmr,
)
from rankface.evaluation.verification import cosine_pair_scores, roc_auc
from rankface.paths import shared_dir
from rankface.utils.io import atomic_write, save_png, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality_erc"
F1_RESULTS = ROOT / "benchmarks" / "results" / "lfw_vlr"
RESOLUTIONS = (8, 12, 16, 24, 112)  # the hard mix
REALISTIC = (8, 12, 16, 24, 32, 48, 112)
MIXES = ("hard", "realistic")
FNMR_BAND = (0.10, 0.40)  # the realistic mix's FNMR at d = 0 (protocol F2)
FNMR_TARGET = 0.25
QUICK_FOLDS = (0, 1)
CALIBRATION_FOLDS = (0, 5)  # one fold per half: the pairs the realistic weights are searched on
FMR = 1e-2
UPTO = 0.3
DECIMALS = 5
# the protocol's keys in its order (ui_share: the ERS-style 1 - cos(v, UI centre)), then ui_norm_share (its product
# with the norm, which the protocol also asks for)
RESULT_KEYS = ("ri_pauc", "norm_pauc", "random_pauc", "oracle_pauc", "ratio_ri_to_norm", "ri_share", "norm_share",
               "magface_share", "resolution_share", "ui_share", "ri_auc_24v8", "fnmr_d0", "mix", "mode",
               "ui_norm_share")
ERS, ERS_NORM = "ers 1-cos(v,UI)", "ers x norm"  # quality names in the tables


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"only the pairs of View-2 folds {QUICK_FOLDS}")
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="View-2 folds to score (default: all 10)")
    parser.add_argument("--from-f1", default=None, metavar="MODE",
                        help="take the ri and magface models of benchmarks/lfw_vlr.py's MODE run (e.g. full, quick)")
    parser.add_argument("--f1-seed", type=int, default=0, help="with --from-f1: the F1 seed whose models are used")
    parser.add_argument("--ri-model", type=Path, nargs="+", default=None,
                        help="RecognizabilityModel checkpoint folder(s): one for every pair, or two: model A (scores "
                             "folds 0-4) and model B (folds 5-9)")
    parser.add_argument("--magface-model", type=Path, nargs="+", default=None,
                        help="MagFace-trained encoder folder(s), one or two as for --ri-model")
    parser.add_argument("--norm-model", type=Path, nargs="+", default=None,
                        help="optional extra: a plain encoder whose norm is also compared ('pretrained norm'); a "
                             "rankface folder or a MobileFaceNet .pt state_dict")
    parser.add_argument("--mixes", nargs="+", default=list(MIXES), choices=list(MIXES))
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image resolution draw")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="paired bootstrap resamples (over identities) for RI's share minus each other quality's")
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
    halves = sorted({half_of(f) for f in args.folds})
    if args.from_f1:
        for kind in ("ri", "magface"):
            if getattr(args, f"{kind}_model") is None:
                setattr(args, f"{kind}_model", [F1_RESULTS / args.from_f1 / "runs" / f"{kind}-seed{args.f1_seed}-half"
                                                f"{h}" / "model" for h in ("A", "B")])
    if args.bootstrap < 1:
        parser.error(f"--bootstrap must be >= 1 (resamples of the share differences), got {args.bootstrap}")
    if args.ri_model is None:
        parser.error("give --ri-model (or --from-f1 MODE): the RI model's scores are the ones every quality ranks")
    for kind in ("ri_model", "magface_model", "norm_model"):
        paths = getattr(args, kind)
        if paths is None:
            continue
        if len(paths) not in (1, 2):
            parser.error(f"--{kind.replace('_', '-')}: one path (every pair) or two (model A, model B), got {len(paths)}")
        by_half = {"A": paths[0], "B": paths[-1]}
        for half in halves:
            if not by_half[half].exists():
                parser.error(f"--{kind.replace('_', '-')} for half {half} (folds {half_folds(half)}): {by_half[half]} "
                             "does not exist (train it with benchmarks/lfw_vlr.py)")
        setattr(args, kind, by_half)
    return args


def half_of(fold: int) -> str:
    """The F1 half whose model scores a View-2 fold: A scores folds 0-4, B folds 5-9."""
    return "A" if fold < 5 else "B"


def half_folds(half: str) -> list[int]:
    return [f for f in range(10) if half_of(f) == half]


# ---------------------------------------------------------------------------------------------- mixes
def draw_resolutions(num_pairs: int, seed: int, choices: Sequence[int] = RESOLUTIONS) -> np.ndarray:
    """The hard mix: resolution of every image slot of every pair, `[P, 2]` int64, uniform over `choices`.

    Drawn for all pairs at once, so a subset of pairs (quick mode) has the same resolutions as in the full run.
    """
    rng = np.random.default_rng(seed)
    return np.asarray(choices, dtype=np.int64)[rng.integers(0, len(choices), size=(num_pairs, 2))]


def mix_weights(lam: float, choices: Sequence[int] = REALISTIC) -> np.ndarray:
    """Weights proportional to `r ** lam` (0: uniform; larger: more high-resolution images), summing to 1."""
    w = np.asarray(choices, dtype=np.float64) ** float(lam)
    return w / w.sum()


def draw_mix(num_pairs: int, seed: int, weights: Sequence[float], choices: Sequence[int] = REALISTIC) -> np.ndarray:
    """Resolutions `[P, 2]` drawn with `weights` by inverting the cumulative weights at one uniform number per slot.

    The uniform numbers depend only on `seed`, so every slot's resolution moves monotonically with the weights (a
    search over weights changes as few slots as possible), and a subset of pairs matches the full draw.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(choices),) or np.any(w < 0) or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"draw_mix: weights {w.tolist()} must be {len(choices)} non-negative numbers summing to 1")
    u = np.random.default_rng(seed).random((num_pairs, 2))
    index = np.minimum(np.searchsorted(np.cumsum(w), u, side="right"), len(choices) - 1)
    return np.asarray(choices, dtype=np.int64)[index]


def fnmr_at_zero_discard(scores: np.ndarray, same: np.ndarray, fmr: float = FMR) -> float:
    """FNMR of all genuine pairs at the threshold of FMR `fmr` over all impostor pairs (`score > t` accepts)."""
    threshold, _ = threshold_at_fmr(scores, same, fmr)
    return float(np.mean(np.asarray(scores)[np.asarray(same, dtype=bool)] <= threshold))


def search_mix(fnmr_of: Callable[[np.ndarray], float], band: tuple[float, float] = FNMR_BAND,
               target: float = FNMR_TARGET, bounds: tuple[float, float] = (-3.0, 4.0), iterations: int = 12
               ) -> dict:
    """The realistic mix: bisection on lambda (weights `mix_weights(lambda)`) for FNMR at d = 0 near `target`.

    FNMR falls as lambda grows (more weight on high resolutions). Each evaluation is `fnmr_of(weights)`; the
    search stops once the FNMR is within 0.02 of `target`, and returns the evaluated lambda closest to `target`.

    Returns:
        `{"lambda", "weights", "fnmr", "in_band", "tried": [[lambda, fnmr], ...]}`.
    """
    lo, hi = bounds
    tried: list[tuple[float, float]] = []
    for _ in range(iterations):
        lam = (lo + hi) / 2
        fnmr = float(fnmr_of(mix_weights(lam)))
        tried.append((lam, fnmr))
        if abs(fnmr - target) <= 0.02:
            break
        if fnmr > target:
            lo = lam
        else:
            hi = lam
    lam, fnmr = min(tried, key=lambda t: abs(t[1] - target))
    return {"lambda": lam, "weights": mix_weights(lam).tolist(), "fnmr": fnmr,
            "in_band": band[0] <= fnmr <= band[1], "tried": [list(t) for t in tried]}


# ---------------------------------------------------------------------------------------------- views
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
        `{"embedding": [U, E] matching embedding, "norm": [U] L2 norm of the backbone embedding, "ri": [U],
        "ers": [U]}` (`ri` only for models that output a quality; `ers` = `1 - cos(v, UI centre)`, the ERS-style
        score, only for models that hold a UI centre).
    """
    from rankface.models.face_processor import FaceImageProcessor

    processor = FaceImageProcessor.from_model_config(model.config)
    model.eval()
    out: dict[str, list[np.ndarray]] = {"embedding": [], "norm": [], "ri": [], "ers": []}
    centre = getattr(model, "ui_centre", None)
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
        if centre is not None:
            out["ers"].append(ers_from_embeddings(v.numpy(), centre.direction.numpy()))
        done = start + len(chunk)
        if progress and (done == len(views) or (start // batch_size) % 20 == 19):
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"  embedded {done}/{len(views)} views ({rate:.1f}/s)", flush=True)
    return {k: np.concatenate(v) for k, v in out.items() if v}


def ers_from_embeddings(embeddings: np.ndarray, ui_direction: np.ndarray) -> np.ndarray:
    """ERS-style quality `1 - cos(v, u)` of backbone embeddings `[U, E]` and the model's saved UI centre `[E]`: far
    from the unrecognizable-image cluster = better (no retraining; the centre is a buffer of the RI model)."""
    v = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    u = ui_direction / max(float(np.linalg.norm(ui_direction)), 1e-12)
    return (1.0 - v @ u).astype(np.float32)


SLOT_VALUES = ("ri", "norm", "ers", "ers_norm")  # per-view qualities a pair slot can take


def with_products(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add `ers_norm` (ERS times the embedding norm) where both are known."""
    out = dict(values)
    if "ers" in out and "norm" in out:
        out["ers_norm"] = out["ers"] * out["norm"]
    return out


def score_system(model: torch.nn.Module, load_images: Callable[[np.ndarray], np.ndarray], rows: np.ndarray,
                 resolutions: np.ndarray, batch_size: int = 64, progress: bool = True) -> dict:
    """Pair scores `[P]` and per-slot qualities `{"norm": [P, 2], "ri": [P, 2]}` of one model."""
    views, inverse = unique_views(rows, resolutions)
    embedded = embed_views(model, load_images, views, batch_size, progress)
    emb = embedded["embedding"]
    scores = cosine_pair_scores(emb[inverse[:, 0]], emb[inverse[:, 1]])
    embedded = with_products(embedded)
    quality = {name: pair_values(embedded[name], inverse) for name in SLOT_VALUES if name in embedded}
    return {"scores": scores, "quality": quality, "num_views": len(views)}


class ViewStore:
    """One model's embedded (row, resolution) views, each computed once and kept in `cache_file` (an `.npz` named by
    the model's fingerprint), so both mixes, the weight search and a rerun share them."""

    def __init__(self, model: torch.nn.Module, load_images: Callable[[np.ndarray], np.ndarray], cache_file: Path,
                 batch_size: int = 64) -> None:
        self.model, self.load_images, self.cache_file, self.batch_size = model, load_images, cache_file, batch_size
        self.index: dict[tuple[int, int], int] = {}
        self.values: dict[str, np.ndarray] = {}
        self.embedded_now = 0
        if cache_file.is_file():
            with np.load(cache_file) as saved:
                self.values = {k: saved[k] for k in saved.files if k != "views"}
                self.index = {(int(r), int(s)): i for i, (r, s) in enumerate(saved["views"])}
        centre = getattr(model, "ui_centre", None)
        if self.index and centre is not None and "ers" not in self.values:
            # a cache from before the ERS quality: its stored embedding is v itself when the model matches with v
            if getattr(model.config, "match_with", "v") == "v":
                self.values["ers"] = ers_from_embeddings(self.values["embedding"], centre.direction.numpy())
            else:
                self.values, self.index = {}, {}  # embed again

    def __len__(self) -> int:
        return len(self.index)

    def get(self, views: np.ndarray) -> dict[str, np.ndarray]:
        """Values of `views [U, 2]` (embedding the ones not stored yet): `{"embedding", "norm"[, "ri"]}`."""
        missing = np.array([v for v in dict.fromkeys(map(tuple, views.tolist())) if v not in self.index],
                           dtype=np.int64).reshape(-1, 2)
        if len(missing):
            print(f"  embedding {len(missing)} new views ({len(self)} stored)", flush=True)
            new = embed_views(self.model, self.load_images, missing, self.batch_size)
            start = len(self.index)
            self.values = {k: np.concatenate([self.values[k], v]) if k in self.values else v for k, v in new.items()}
            self.index.update({(int(r), int(s)): start + i for i, (r, s) in enumerate(missing)})
            self.embedded_now += len(missing)
            self.save()
        at = np.array([self.index[(int(r), int(s))] for r, s in views], dtype=np.int64)
        return {k: v[at] for k, v in self.values.items()}

    def save(self) -> None:
        views = np.array(sorted(self.index, key=self.index.get), dtype=np.int64).reshape(-1, 2)
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.cache_file, "wb") as handle:
            np.savez(handle, views=views, **self.values)


def score_pairs(stores: Mapping[str, ViewStore], pair_half: np.ndarray, rows: np.ndarray, resolutions: np.ndarray
                ) -> dict:
    """Pair scores `[P]` and per-slot qualities `{"norm": [P, 2], "ri": [P, 2]}`, each pair scored by its half's
    model (`stores[pair_half[p]]`)."""
    scores = np.zeros(len(rows))
    quality: dict[str, np.ndarray] = {}
    for half in np.unique(pair_half):
        mask = pair_half == half
        views, inverse = unique_views(rows[mask], resolutions[mask])
        values = stores[str(half)].get(views)
        emb = values["embedding"]
        scores[mask] = cosine_pair_scores(emb[inverse[:, 0]], emb[inverse[:, 1]])
        values = with_products(values)
        for name in SLOT_VALUES:
            if name in values:
                quality.setdefault(name, np.zeros(rows.shape))[mask] = pair_values(values[name], inverse)
    return {"scores": scores, "quality": quality}


# ---------------------------------------------------------------------------------------------- curves
def system_curves(scores: np.ndarray, same: np.ndarray, slot_quality: Mapping[str, np.ndarray],
                  resolutions: np.ndarray, seed: int = 0) -> dict[str, ERCCurve]:
    """ERC curves of each quality (per-slot `[P, 2]` -> pair quality = min) and the references on the same scores.

    Returns:
        `{quality name: curve, "resolution oracle": ..., "random": ..., "error oracle": ...}`.
    """
    curves = {
        name: error_versus_discard(scores, same, pair_quality(q[:, 0], q[:, 1]), fmr=FMR, tie_seed=seed, name=name)
        for name, q in slot_quality.items()
    }
    oracle = pair_quality(resolutions[:, 0], resolutions[:, 1])
    curves["resolution oracle"] = error_versus_discard(scores, same, oracle, fmr=FMR, tie_seed=seed,
                                                       name="resolution oracle")
    curves["random"] = random_erc(scores, same, fmr=FMR, seed=seed)
    curves["error oracle"] = oracle_erc(scores, same, fmr=FMR, name="error oracle")
    return curves


def attainable_share(curves: Mapping[str, ERCCurve]) -> dict[str, float]:
    """How much of the improvement a quality could make it makes: `(random - q) / (random - error oracle)` of the
    pAUCs, per quality curve (0 = no better than a random order, 1 = as good as knowing the errors)."""
    rand, floor = curves["random"].pauc(UPTO), curves["error oracle"].pauc(UPTO)
    span = rand - floor
    return {name: (rand - c.pauc(UPTO)) / span if span > 0 else math.nan
            for name, c in curves.items() if name not in ("random", "error oracle")}


def identity_resample(identities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One bootstrap resample of pairs over identities, as pair indices (a pair drawn k times appears k times).

    The identities are drawn with replacement; a genuine pair counts once per copy of its identity, an impostor pair
    once per copy of each of its two identities (Owen's pigeonhole bootstrap for crossed designs: the weight is the
    product of the two multiplicities). LFW's pairs share identities, so resampling pairs alone treats correlated
    pairs as independent and gives intervals that are too narrow.

    Args:
        identities: `[P, 2]` the identity of each pair's two images.
    """
    distinct, index = np.unique(identities, return_inverse=True)
    index = index.reshape(identities.shape)
    copies = np.bincount(rng.integers(0, distinct.size, distinct.size), minlength=distinct.size)
    first, second = copies[index[:, 0]], copies[index[:, 1]]
    weight = np.where(index[:, 0] == index[:, 1], first, first * second)
    return np.repeat(np.arange(len(identities)), weight)


def share_differences(scores: np.ndarray, same: np.ndarray, slot_quality: Mapping[str, np.ndarray],
                      resolutions: np.ndarray, reference: str = "ri", resamples: int = 1000, seed: int = 0,
                      identities: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """`reference`'s share of the attainable improvement minus each other quality's (and the resolution oracle's),
    with a 95 % interval and a two-sided p from a paired bootstrap: every resample draws once (the identities with
    `identities [P, 2]`, see `identity_resample`; the pairs without) and recomputes all curves on the drawn pairs
    (threshold, random and error-oracle references included), so the two shares of a difference always come from the
    same pairs.

    Returns:
        `{other: {"difference", "low", "high", "p"}}`; the difference is the one on all pairs.
    """
    def differences(index: np.ndarray | None, tie_seed: int) -> dict[str, float]:
        pick = (lambda a: a) if index is None else (lambda a: a[index])
        curves = system_curves(pick(scores), pick(same), {k: pick(v) for k, v in slot_quality.items()},
                               pick(resolutions), tie_seed)
        shares = attainable_share(curves)
        return {name: shares[reference] - value for name, value in shares.items() if name != reference}

    observed = differences(None, seed)
    rng = np.random.default_rng(seed)
    draw = ((lambda: identity_resample(identities, rng)) if identities is not None
            else (lambda: rng.integers(0, len(scores), len(scores))))
    draws = [differences(draw(), seed + b) for b in range(resamples)]
    out = {}
    for name, difference in observed.items():
        values = np.array([d[name] for d in draws])
        values = values[np.isfinite(values)]  # a resample without a single false non-match has no share at all
        if values.size == 0:
            out[name] = {"difference": float(difference), "low": math.nan, "high": math.nan, "p": math.nan}
            continue
        p = min(1.0, 2 * min(np.mean(values <= 0), np.mean(values >= 0)))
        out[name] = {"difference": float(difference), "low": float(np.quantile(values, 0.025)),
                     "high": float(np.quantile(values, 0.975)), "p": float(p)}
    return out


def headline(curves: Mapping[str, ERCCurve], fnmr_d0: float, mix: str, mode: str, ri_auc_24v8: float = math.nan
             ) -> dict[str, str]:
    """The RESULT values of one mix; `nan` for a quality that was not scored. `ri_auc_24v8`: the AUC that RI ranks an
    image at 24 px above one at 8 px (`separation`)."""
    shares = attainable_share(curves)

    def pauc(name: str) -> float:
        return curves[name].pauc(UPTO) if name in curves else math.nan

    values = {"ri_pauc": pauc("ri"), "norm_pauc": pauc("norm"), "random_pauc": pauc("random"),
              "oracle_pauc": pauc("resolution oracle")}
    values["ratio_ri_to_norm"] = values["ri_pauc"] / values["norm_pauc"] if values["norm_pauc"] > 0 else math.nan
    for key, name in (("ri_share", "ri"), ("norm_share", "norm"), ("magface_share", "magface norm"),
                      ("resolution_share", "resolution oracle"), ("ui_share", ERS), ("ui_norm_share", ERS_NORM)):
        values[key] = shares.get(name, math.nan)
    values["fnmr_d0"], values["ri_auc_24v8"] = fnmr_d0, ri_auc_24v8
    out = {k: "nan" if math.isnan(v) else (f"{v:.3f}" if "share" in k or k in ("fnmr_d0", "ri_auc_24v8") else f"{v:.5f}")
           for k, v in values.items()}
    return {**out, "mix": mix, "mode": mode}


def result_line(values: Mapping[str, str]) -> str:
    """`RESULT k=v ...` in the protocol's key order."""
    missing = [k for k in RESULT_KEYS if k not in values]
    if missing:
        raise ValueError(f"result_line: missing key(s) {missing}")
    return "RESULT " + " ".join(f"{k}={values[k]}" for k in RESULT_KEYS)


def goal_line(shares: Mapping[str, float]) -> str:
    """The F2 goal: the RI's share >= 0.5 and above the norm's, the MagFace norm's and the resolution oracle's."""
    ri = shares.get("ri", math.nan)
    rivals = {k: shares[k] for k in ("norm", "magface norm", "resolution oracle") if k in shares}
    beaten = [k for k, v in rivals.items() if ri > v]
    met = ri >= 0.5 and len(beaten) == len(rivals)
    return (f"Goal: RI share >= 0.5 and above {', '.join(rivals)}: RI share {ri:.3f}; above "
            f"{', '.join(beaten) or 'none'} -> {'met' if met else 'NOT met'}.")


def mean_by_resolution(slot_quality: np.ndarray, resolutions: np.ndarray) -> dict[int, float]:
    """Mean image quality per resolution (does the quality order the resolutions at all?)."""
    q, r = np.asarray(slot_quality).reshape(-1), np.asarray(resolutions).reshape(-1)
    return {int(v): float(q[r == v].mean()) for v in np.unique(r)}


def rates_by_resolution(scores: np.ndarray, same: np.ndarray, resolutions: np.ndarray, threshold: float
                        ) -> dict[int, dict[str, float]]:
    """Where the fixed threshold bites, per pair's lower resolution r: the genuine accept rate (TAR), the impostor
    accept rate (FMR) and the number of pairs."""
    s, g = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    low = np.asarray(resolutions).min(axis=1)
    out = {}
    for r in np.unique(low):
        m = low == r
        out[int(r)] = {"tar": float(np.mean(s[m & g] > threshold)) if (m & g).any() else math.nan,
                       "fmr": float(np.mean(s[m & ~g] > threshold)) if (m & ~g).any() else math.nan,
                       "genuine": int((m & g).sum()), "impostor": int((m & ~g).sum())}
    return out


def separation(slot_quality: Mapping[str, np.ndarray], resolutions: np.ndarray, scores: np.ndarray,
               same: np.ndarray, threshold: float) -> dict:
    """Does a quality know more than the resolution does?

    Returns:
        `{"between": {quality: AUC that an image at 24 px outranks one at 8 px}, "within": {quality: {r: AUC that a
        genuine pair whose lower resolution is r and that is accepted outranks one that fails}}}` (0.5 = no
        separation; `nan` where a group is empty).
    """
    res = np.asarray(resolutions)
    g = np.asarray(same, dtype=bool)
    accepted = np.asarray(scores) > threshold
    low = res.min(axis=1)
    out: dict = {"between": {}, "within": {}}
    for name, q in slot_quality.items():
        flat_q, flat_r = q.reshape(-1), res.reshape(-1)
        hi, lo = flat_q[flat_r == 24], flat_q[flat_r == 8]
        out["between"][name] = roc_auc(np.r_[hi, lo], np.r_[np.ones(hi.size, bool), np.zeros(lo.size, bool)]) \
            if hi.size and lo.size else math.nan
        pair_q = np.minimum(q[:, 0], q[:, 1])
        out["within"][name] = {}
        for r in np.unique(low):
            m = g & (low == r)
            ok, bad = pair_q[m & accepted], pair_q[m & ~accepted]
            out["within"][name][int(r)] = roc_auc(np.r_[ok, bad], np.r_[np.ones(ok.size, bool),
                                                                         np.zeros(bad.size, bool)]) \
                if ok.size and bad.size else math.nan
    return out


def plot_ri_histograms(ri: np.ndarray, resolutions: np.ndarray, scores: np.ndarray, same: np.ndarray,
                       threshold: float, path: Path, title: str) -> Path:
    """Left: the RI of every image, one histogram per resolution. Then one panel per lower pair resolution: the pair
    RI of the genuine pairs accepted at the fixed threshold against those that fail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = np.asarray(resolutions)
    levels = sorted(np.unique(res).tolist())
    low = res.min(axis=1)
    g = np.asarray(same, dtype=bool)
    accepted = np.asarray(scores) > threshold
    pair_ri = np.minimum(ri[:, 0], ri[:, 1])
    bins = np.linspace(float(ri.min()), float(ri.max()), 40)
    cols = 1 + len(levels)
    fig, axes = plt.subplots(1, cols, figsize=(2.6 * cols + 1.5, 3.2), dpi=110, sharex=True)
    cmap = plt.get_cmap("viridis")
    for k, r in enumerate(levels):
        axes[0].hist(ri.reshape(-1)[res.reshape(-1) == r], bins=bins, histtype="step", density=True, lw=1.4,
                     color=cmap(k / max(1, len(levels) - 1)), label=f"{r} px")
    axes[0].set_title("every image, by resolution", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, r in zip(axes[1:], levels, strict=True):
        m = g & (low == r)
        ax.hist(pair_ri[m & accepted], bins=bins, histtype="stepfilled", alpha=0.5, color="#2ca02c",
                label=f"accepted ({int((m & accepted).sum())})")
        ax.hist(pair_ri[m & ~accepted], bins=bins, histtype="stepfilled", alpha=0.5, color="#d62728",
                label=f"fail ({int((m & ~accepted).sum())})")
        ax.set_title(f"genuine pairs, lower res. {r} px", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("RI (pair: the lower of its two)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------- main
def rounded(values: np.ndarray) -> list:
    return np.round(np.asarray(values, dtype=np.float64), DECIMALS).tolist()


def build_stores(paths: Mapping[str, Path] | None, kind: str, context: dict, out_dir: Path, args) -> dict | None:
    """`{half: ViewStore}` of the models given for `kind` (one loaded model per distinct folder)."""
    if paths is None:
        return None
    stores: dict[str, ViewStore] = {}
    loaded: dict[Path, ViewStore] = {}
    for half in context["halves"]:
        path = Path(paths[half])
        if path not in loaded:
            model, folder = load_model(path, out_dir / "models", expect_ri=kind == "ri")
            cache = out_dir / "cache" / f"{kind}-{fingerprint(folder)[:16]}.npz"
            loaded[path] = ViewStore(model, context["load_images"], cache, args.batch_size)
            print(f"[model] {kind} half {half}: {type(model).__name__} from {folder} ({len(loaded[path])} views "
                  "cached)", flush=True)
        stores[half] = loaded[path]
    return stores


def mix_resolutions(mix: str, args, context: dict, ri_stores: dict) -> tuple[np.ndarray, dict]:
    """The resolutions of all 6,000 pairs' slots for `mix`, and how they were chosen."""
    num = context["num_all_pairs"]
    if mix == "hard":
        return draw_resolutions(num, args.seed), {"choices": list(RESOLUTIONS), "weights": "uniform"}
    calibration = np.isin(context["folds"], CALIBRATION_FOLDS) if np.isin(context["folds"], CALIBRATION_FOLDS).any() \
        else np.ones(len(context["folds"]), bool)
    sub = {k: context[k][calibration] for k in ("rows", "same", "pair_half", "pair_indices")}
    print(f"[mix] realistic: searching the weights on {int(calibration.sum())} pairs of folds "
          f"{sorted(set(context['folds'][calibration].tolist()))} (FNMR at d = 0 near {FNMR_TARGET:.0%}, band "
          f"{FNMR_BAND[0]:.0%}-{FNMR_BAND[1]:.0%})", flush=True)

    def fnmr_of(weights: np.ndarray) -> float:
        res = draw_mix(num, args.seed, weights)[sub["pair_indices"]]
        scored = score_pairs(ri_stores, sub["pair_half"], sub["rows"], res)
        return fnmr_at_zero_discard(scored["scores"], sub["same"])

    found = search_mix(fnmr_of)
    print("[mix] realistic: lambda {:.3f}, weights {}; calibration FNMR {:.3f}".format(
        found["lambda"], ", ".join(f"{r} px {w:.3f}" for r, w in zip(REALISTIC, found["weights"], strict=True)),
        found["fnmr"]), flush=True)
    return draw_mix(num, args.seed, found["weights"]), {"choices": list(REALISTIC), **found}


def run_mix(mix: str, args, context: dict, stores: dict, out_dir: Path) -> tuple[str, dict]:
    all_res, how = mix_resolutions(mix, args, context, stores["ri"])
    res = all_res[context["pair_indices"]]
    same, half = context["same"], context["pair_half"]
    ri = score_pairs(stores["ri"], half, context["rows"], res)
    scores = ri["scores"]
    slot_quality = {"ri": ri["quality"]["ri"], "norm": ri["quality"]["norm"]}
    if "ers" in ri["quality"]:  # issue 21: the ERS-style score from the RI model's saved UI centre, and x norm
        slot_quality[ERS] = ri["quality"]["ers"]
        slot_quality[ERS_NORM] = ri["quality"]["ers_norm"]
    own_magface = None
    for kind, name in (("magface", "magface norm"), ("norm", "pretrained norm")):
        if stores.get(kind):
            other = score_pairs(stores[kind], half, context["rows"], res)
            slot_quality[name] = other["quality"]["norm"]
            if kind == "magface":
                own_magface = other
    fnmr_d0 = fnmr_at_zero_discard(scores, same)
    curves = system_curves(scores, same, slot_quality, res, args.seed)
    shares = attainable_share(curves)
    threshold = curves["random"].threshold
    sep = separation(slot_quality, res, scores, same, threshold)
    counts = {int(r): int((res == r).sum()) for r in how["choices"]}
    heading = (f"\n### F2 {mix} mix (mode={args.mode}, {len(same)} pairs, RI model's scores; slots per resolution "
               f"{counts})\n")
    lines = [heading]
    if mix == "realistic":
        lines.append("weights: " + ", ".join(f"{r} px {w:.3f}" for r, w in zip(REALISTIC, how["weights"], strict=True))
                     + f" (lambda {how['lambda']:.3f}; calibration FNMR {how['fnmr']:.3f})")
    band = "" if mix == "hard" else (" (inside the 10-40 % band)" if FNMR_BAND[0] <= fnmr_d0 <= FNMR_BAND[1]
                                     else " (OUTSIDE the 10-40 % band)")
    lines.append(f"FNMR at d = 0 (threshold at FMR {FMR:g} over all impostors): {fnmr_d0:.3f}{band}\n")
    lines.append(erc_table(curves, upto=UPTO))
    lines.append("\n| quality | pAUC(0.3) | share of the attainable improvement |\n|---|---:|---:|")
    for name, curve in curves.items():
        share = shares.get(name, 0.0 if name == "random" else 1.0)
        lines.append(f"| {name} | {curve.pauc(UPTO):.5f} | {share:.3f} |")
    lines.append("\n" + goal_line(shares))
    differences = share_differences(scores, same, slot_quality, res, resamples=args.bootstrap, seed=args.seed,
                                    identities=context["identities"])
    lines += ["", (f"RI's share minus each other's (paired bootstrap over identities, {args.bootstrap} resamples, 95 % "
                   "interval; one seed of the models):"), "", "| RI minus | difference | 95 % interval | p |",
              "|---|---:|---:|---:|"]
    lines += [f"| {name} | {d['difference']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {d['p']:.3f} |"
              for name, d in differences.items()]
    lines += ["", "| separation (ROC AUC) | 24 px image above 8 px | " + " | ".join(
        f"within {r} px: accepted above failed" for r in sorted(next(iter(sep["within"].values())))) + " |",
        "|---|---:|" + "---:|" * len(next(iter(sep["within"].values())))]
    for name in slot_quality:
        lines.append(f"| {name} | {sep['between'][name]:.3f} | " + " | ".join(
            f"{v:.3f}" for _, v in sorted(sep["within"][name].items())) + " |")
    means = {q: mean_by_resolution(v, res) for q, v in slot_quality.items()}
    rs = sorted(next(iter(means.values())))
    lines += ["", "| mean image quality | " + " | ".join(f"{r} px" for r in rs) + " |", "|---|" + "---:|" * len(rs)]
    lines += [f"| {q} | " + " | ".join(f"{m[r]:.3f}" for r in rs) + " |" for q, m in means.items()]
    rates = rates_by_resolution(scores, same, res, threshold)
    lines += ["", f"At the fixed threshold {threshold:.4f}, by the pair's lower resolution:", "",
              "| | " + " | ".join(f"{r} px" for r in sorted(rates)) + " |", "|---|" + "---:|" * len(rates),
              "| genuine accepted (TAR) | " + " | ".join(f"{rates[r]['tar']:.3f}" for r in sorted(rates)) + " |",
              "| impostors accepted (FMR) | " + " | ".join(f"{rates[r]['fmr']:.3f}" for r in sorted(rates)) + " |"]
    if own_magface is not None:
        own = system_curves(own_magface["scores"], same, {"magface norm": own_magface["quality"]["norm"]}, res,
                            args.seed)
        lines.append(f"\nMagFace on its own scores (FNMR at d = 0 {fnmr_at_zero_discard(own_magface['scores'], same):.3f}"
                     f"): share of its norm {attainable_share(own)['magface norm']:.3f}, pAUC "
                     f"{own['magface norm'].pauc(UPTO):.5f} (random {own['random'].pauc(UPTO):.5f})")
    png = plot_erc_curves({n: (c.discard, c.fnmr) for n, c in curves.items()}, out_dir / f"erc_{mix}.png",
                          title=f"F2 error versus discard, {mix} mix ({args.mode}): RI model's scores, FMR {FMR:g}",
                          upto=UPTO, paucs={n: c.pauc(UPTO) for n, c in curves.items()},
                          ylabel=f"FNMR of the kept genuine pairs (FMR {FMR:g})")
    hist = plot_ri_histograms(slot_quality["ri"], res, scores, same, threshold, out_dir / f"ri_histograms_{mix}.png",
                              title=f"RI by resolution, {mix} mix ({args.mode}): does it separate resolutions, and "
                                    "failures from successes within one?")
    lines.append(f"\nplots: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}, "
                 f"{hist.relative_to(ROOT) if hist.is_relative_to(ROOT) else hist}")
    values = headline(curves, fnmr_d0, mix, args.mode, sep["between"].get("ri", math.nan))
    record = {"mix": mix, "how": how, "fnmr_d0": fnmr_d0, "values": values, "shares": shares,
              "share_differences": {"reference": "ri", "resamples": args.bootstrap, "unit": "identities",
                                    "of": differences},
              "separation": sep,
              "pauc": {n: c.pauc(UPTO) for n, c in curves.items()},
              "curves": {n: {"discard": rounded(c.discard), "fnmr": [None if not np.isfinite(v) else round(float(v), 5)
                                                                      for v in c.fnmr]} for n, c in curves.items()},
              "models": context["models"], "folds": args.folds, "seed": args.seed,
              "slots_per_resolution": counts}  # pair scores and qualities stay in the (git-ignored) view cache
    write_json(out_dir / f"{mix}.json", record)
    return "\n".join(lines), values


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from _common import print_cpu_class

    print_cpu_class()
    data_dir = shared_dir() / "data" / "face" / "lfw112"
    if not data_dir.is_dir():
        raise SystemExit(f"needs {data_dir} (set RANKFACE_SHARED)")
    out_dir = args.results_dir / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, data_report = load_face_dataset(data_dir, check_images=False)  # the shared Parquet decodes (README)
    all_pairs = read_lfw_pairs(data_dir / "pairs.txt")
    pair_indices = np.array([i for i, p in enumerate(all_pairs) if p.fold in set(args.folds)], dtype=np.int64)
    if pair_indices.size == 0:
        raise SystemExit(f"--folds {args.folds}: no View-2 pairs in these folds (folds are 0-9)")
    images = dataset.select_columns(["image"])

    def load_images(wanted: np.ndarray) -> np.ndarray:
        return np.stack([image_to_rgb_array(img) for img in images[wanted.tolist()]["image"]])

    folds = np.array([all_pairs[i].fold for i in pair_indices])
    context = {"pair_indices": pair_indices, "rows": pair_rows(dataset, [all_pairs[i] for i in pair_indices]),
               "same": np.array([all_pairs[i].same for i in pair_indices]), "folds": folds,
               "pair_half": np.array([half_of(int(f)) for f in folds]), "halves": sorted({half_of(int(f)) for f in folds}),
               "load_images": load_images, "num_all_pairs": len(all_pairs)}
    context["identities"] = np.asarray(dataset["label"])[context["rows"]]  # [P, 2]: the bootstrap's unit
    print(f"{data_report.summary()}; mode={args.mode} folds={args.folds} pairs={len(pair_indices)} seed={args.seed} "
          f"mixes={args.mixes}", flush=True)
    stores = {kind: build_stores(getattr(args, f"{kind}_model"), kind, context, out_dir, args)
              for kind in ("ri", "magface", "norm")}
    context["models"] = {kind: {h: str(Path(getattr(args, f"{kind}_model")[h]).resolve().relative_to(ROOT))
                                if Path(getattr(args, f"{kind}_model")[h]).resolve().is_relative_to(ROOT)
                                else Path(getattr(args, f"{kind}_model")[h]).name for h in context["halves"]}
                         for kind in stores if stores[kind]}
    if stores["magface"] is None:
        print("no --magface-model: the MagFace row is skipped (magface_share is nan)", flush=True)
    texts, lines = [], []
    for mix in args.mixes:
        started = time.perf_counter()
        text, values = run_mix(mix, args, context, stores, out_dir)
        texts.append(text)
        lines.append(result_line(values))
        print(f"[done] {mix} mix in {time.perf_counter() - started:.0f} s", flush=True)
    report = "\n".join(texts)
    write_json(out_dir / "summary.json", {"results": [dict(kv.split("=", 1) for kv in line.split()[1:])
                                                       for line in lines], "folds": args.folds, "seed": args.seed})
    with atomic_write(out_dir / "report.md") as handle:
        handle.write(report + "\n\n" + "\n".join(lines) + "\n")
    print(report, flush=True)
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
