"""Protocol F1's evaluation (benchmarks/lfw_vlr.py): the encoders, embedding the held-out half's pair images once per
resolution, the pair scores of the pairs file, their per-half and per-system metrics, the README's anchor check, and
the low-FAR figures over every pair among the same images (evaluation/verification.py does the arithmetic)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rankface.data.faces import degrade_exact, image_to_rgb_array
from rankface.evaluation.verification import cosine_pair_scores, kfold_accuracy, roc_auc, tar_at_far
from rankface.paths import shared_dir

ANCHOR = {  # lfw112 README, LR-LR 10-fold accuracy (%) and HR-LR
    ("lr-lr", 112): 99.37, ("lr-lr", 24): 92.00, ("lr-lr", 16): 81.08, ("lr-lr", 12): 73.98, ("lr-lr", 8): 68.28,
    ("hr-lr", 24): 95.00, ("hr-lr", 16): 79.65, ("hr-lr", 12): 66.50, ("hr-lr", 8): 55.95,
}
FARS = (1e-2, 1e-3)
# F1's identity-disjoint halves: the View-2 folds each half holds out of training and is evaluated on.
HALVES = {"A": [0, 1, 2, 3, 4], "B": [5, 6, 7, 8, 9]}
SCORE_DECIMALS = 5  # cosine scores to 1e-5: far below any threshold difference that changes a decision


# ---------------------------------------------------------------------------------------------- encoders
def load_encoder(folder: Path | None):
    if folder is None:
        from rankface.models.mobilefacenet.convert import load_mobilefacenet_state_dict

        return load_mobilefacenet_state_dict(shared_dir() / "models" / "mobilefacenet" / "mobilefacenet.pt")
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401 - registers rankface model types

    return AutoModel.from_pretrained(folder).eval()


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
def half_pairs(all_pairs, eval_folds: list[int], per_fold: int = 600) -> np.ndarray:
    """Indices (into the 6,000 pairs, file order) of the pairs of `eval_folds`: of each fold the first `per_fold / 2`
    matched and `per_fold / 2` mismatched pairs (all 600 in the full mode)."""
    taken: dict[tuple[int, bool], int] = {}
    out = []
    for i, p in enumerate(all_pairs):
        if p.fold in set(eval_folds) and taken.get((p.fold, p.same), 0) < per_fold // 2:
            taken[(p.fold, p.same)] = taken.get((p.fold, p.same), 0) + 1
            out.append(i)
    return np.array(out, dtype=np.int64)


def record_pairs(record: dict, all_pairs) -> np.ndarray:
    """The pair indices a saved record scored (older records list them; newer ones derive them from the folds)."""
    if "pair_indices" in record:
        return np.asarray(record["pair_indices"])
    return half_pairs(all_pairs, record["settings"]["eval_folds"], record["settings"].get("pairs_per_fold", 600))


def at_resolution(images: np.ndarray, r: int) -> np.ndarray:
    """uint8 faces `[N, H, W, 3]` degraded to r px (`degrade_exact`); as stored when r is their size or more."""
    return images if r >= images.shape[1] else np.stack([degrade_exact(img, r) for img in images])


def embed_images(embed: Embedder, dataset, rows: np.ndarray, resolutions: list[int]) -> tuple[dict, float]:
    """`{r: [N, E]}` embeddings of the dataset rows `rows` degraded to each r (`degrade_exact`; 112 = as stored),
    and the seconds spent embedding: computed once per (model, resolution), for the pair scores and the low FAR."""
    images = np.stack([image_to_rgb_array(dataset[int(r)]["image"]) for r in rows])
    embeddings: dict[int, np.ndarray] = {}
    started = time.perf_counter()
    for r in sorted(resolutions, reverse=True):
        embeddings[r] = embed(at_resolution(images, r))
    return embeddings, time.perf_counter() - started


def pair_scores(embeddings: dict, local: np.ndarray) -> dict:
    """Pair scores `{"lr-lr@r": [P], "hr-lr@r": [P]}` (rounded to `SCORE_DECIMALS`) of the pairs `local [P, 2]`
    (rows of the embedding matrices)."""
    scores = {}
    for r in sorted(embeddings, reverse=True):
        pairs = {f"lr-lr@{r}": (embeddings[r], embeddings[r])}
        if r != 112:
            pairs[f"hr-lr@{r}"] = (embeddings[112], embeddings[r])
        for key, (first, second) in pairs.items():
            values = cosine_pair_scores(first[local[:, 0]], second[local[:, 1]])
            scores[key] = np.round(values.astype(np.float64), SCORE_DECIMALS).tolist()
    return scores


def score_half(embed: Embedder, dataset, pair_index: np.ndarray, resolutions: list[int]) -> tuple[dict, float]:
    """Pair scores `{"lr-lr@r": [P], "hr-lr@r": [P]}` (rounded to `SCORE_DECIMALS`) for the pairs `pair_index
    [P, 2]` (rows of `dataset`), and the seconds spent embedding."""
    rows, local = np.unique(pair_index, return_inverse=True)
    embeddings, seconds = embed_images(embed, dataset, rows, resolutions)
    return pair_scores(embeddings, local.reshape(pair_index.shape)), seconds


# ---------------------------------------------------------------------------------------------- low FAR
LOW_FAR_RESOLUTIONS = (16, 8)
LOW_FAR_RESAMPLES = 1000  # identity-bootstrap resamples saved per record (fixed seed: paired across systems)
LOW_FAR_TAIL = 1e-2  # impostor tail kept: FAR 1e-3 and every resample's threshold lie well inside it (checked)
LOW_FAR_MIN_TAIL = 20_000  # and at least this many pairs (the quick mode's small sets)
LOW_FAR_DECIMALS = 5


def identities_fingerprint(labels: np.ndarray) -> str:
    """A short hash of the sorted distinct identities: two records' resamples pair only when it matches."""
    import hashlib

    return hashlib.sha256(",".join(map(str, np.unique(labels).tolist())).encode()).hexdigest()[:16]


def low_far_half(embeddings: dict, labels: np.ndarray, resolutions=LOW_FAR_RESOLUTIONS,
                 resamples: int = LOW_FAR_RESAMPLES, seed: int = 0) -> dict:
    """Low-FAR figures over every pair among one half's pair images, LR-LR and HR-LR at each resolution.

    Args:
        embeddings: `{r: [N, E]}` from `embed_images` (112 needed for HR-LR).
        labels: `[N]` identity of each row.

    Returns:
        The record's `low_far` entry: settings, and per key ("lr-lr@16", "hr-lr@16", ...) the figures (TAR as
        fractions, thresholds and impostor percentiles as cosines), their 95 % identity-bootstrap intervals and
        the bootstrap vectors of the TARs (for paired tests later, from the saved record alone).
    """
    from rankface.evaluation.verification import all_pair_scores, low_far_evaluation

    out = {"resamples": resamples, "seed": seed, "tail_share": LOW_FAR_TAIL, "images": len(labels),
           "identities_sha": identities_fingerprint(labels), "keys": {}}
    for r in resolutions:
        for setting, first in (("lr-lr", embeddings[r]), ("hr-lr", embeddings[112])):
            pairs = all_pair_scores(first, embeddings[r], labels, setting, tail_share=LOW_FAR_TAIL,
                                    min_tail=LOW_FAR_MIN_TAIL)
            ev = low_far_evaluation(pairs, resamples=resamples, seed=seed)
            out["identities"] = ev["identities"]
            out["keys"][f"{setting}@{r}"] = {
                "impostors": ev["impostors"], "genuine": ev["genuine"],
                "figures": {k: round(v, LOW_FAR_DECIMALS) for k, v in ev["figures"].items()},
                "ci95": {k: [round(x, LOW_FAR_DECIMALS) for x in v] for k, v in ev["ci95"].items()},
                "boot": {k: np.round(v, LOW_FAR_DECIMALS).tolist() for k, v in ev["boot"].items()
                         if k.startswith("tar@")},
            }
    return out


def low_far_metrics(records: list[list[dict]]) -> dict | None:
    """One system's low-FAR figures over seeds and halves: `records` per seed, the records of both halves.

    Each figure is the mean over halves and seeds (TAR in %); its interval comes from the mean of the bootstrap
    vectors (resample i of every record drawn with the same seed over the same identities of its half), and that
    mean vector is kept for paired tests. Only the seeds whose records all carry the low-FAR entry count (a model
    trained before the evaluation existed, and not kept, has none), and `seeds` says how many did; None when no
    seed did.
    """
    scored = [seed_records for seed_records in records
              if seed_records and all("low_far" in r for r in seed_records)]
    flat = [r for seed_records in scored for r in seed_records]
    if not flat:
        return None
    out = {}
    for key in flat[0]["low_far"]["keys"]:
        entries = [r["low_far"]["keys"][key] for r in flat]
        figures = {k: float(np.mean([e["figures"][k] for e in entries])) for k in entries[0]["figures"]}
        boot = {k: np.mean([np.asarray(e["boot"][k]) for e in entries], axis=0) for k in entries[0]["boot"]}
        scale = {k: 100.0 if k.startswith("tar@") else 1.0 for k in figures}
        out[key] = {
            "figures": {k: scale[k] * v for k, v in figures.items()},
            "ci95": {k: [100 * float(np.percentile(v, 2.5)), 100 * float(np.percentile(v, 97.5))]
                     for k, v in boot.items()},
            "boot": {k: 100 * v for k, v in boot.items()},
            "halves": sorted({r["settings"]["half"] for r in flat}),
            "seeds": len(scored),
            "pairing": sorted({(r["settings"]["half"], r["low_far"]["identities_sha"], r["low_far"]["seed"],
                                r["low_far"]["resamples"]) for r in flat}),
        }
    return out


def half_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    kfold = kfold_accuracy(scores, same, folds=folds)
    out = {"fold_accuracies": kfold["fold_accuracies"], "folds": kfold["folds"], "auc": roc_auc(scores, same)}
    out.update({f"tar@{far:g}": tar_at_far(scores, same, far)[0] for far in FARS})
    return out


def system_metrics(results: list[dict], all_pairs) -> dict:
    """Combine the halves of one (system, seed): accuracy = mean of all folds' accuracies (thresholds within each
    half), AUC and TAR = mean of the halves'. Values in %; `fold_accuracies` keyed by fold for the paired tests."""
    keys = results[0]["scores"].keys()
    out = {}
    for key in keys:
        per_half = []
        for res in results:
            idx = record_pairs(res, all_pairs)
            same = np.array([all_pairs[i].same for i in idx])
            folds = np.array([all_pairs[i].fold for i in idx])
            per_half.append(half_metrics(np.asarray(res["scores"][key]), same, folds))
        accs = np.concatenate([h["fold_accuracies"] for h in per_half])
        out[key] = {"accuracy": 100 * float(accs.mean()), "accuracy_std": 100 * float(accs.std()),
                    "auc": float(np.mean([h["auc"] for h in per_half])),
                    "fold_accuracies": {int(f): 100 * a for h in per_half
                                        for f, a in zip(h["folds"], h["fold_accuracies"], strict=True)}}
        for far in FARS:
            out[key][f"tar@{far:g}"] = 100 * float(np.mean([h[f"tar@{far:g}"] for h in per_half]))
    return out


def anchor_check(results: list[dict], all_pairs) -> dict | None:
    """The README's anchor protocol on the pretrained model's scores of all 6,000 pairs (None if not all scored)."""
    idx = np.concatenate([record_pairs(r, all_pairs) for r in results])
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
        out[key] = {"accuracy": acc, "anchor": anchor, "diff": None if anchor is None else acc - anchor}
    return out


