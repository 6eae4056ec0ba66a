"""Face-training data: the images to train on (held-out View-2 folds' identities, validation identities and small
classes left out; labels remapped to 0..C-1) with their seeded very-low-resolution augmentation, and the pairs the
learning curve and the final evaluation score (held-out folds, validation identities in no View-2 pair)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rankface.data.faces import (
    VeryLowResolution,
    image_to_rgb_array,
    lfw_fold_identities,
    load_face_dataset,
    pair_rows,
    read_lfw_pairs,
    read_lfw_splits,
    validation_pairs,
)
from rankface.evaluation.verification import pixel_values_from_uint8
from rankface.paths import shared_dir
from rankface.training.face_arguments import PRETRAINED_MOBILEFACENET, FaceTrainingArguments


class FaceTrainSet(Dataset):
    """Training images with remapped labels and the (seeded, per-epoch) very-low-resolution augmentation.

    Item `i`: `(pixel_values [3, S, S] float32 normalised for `config`, label int64)`. Every random choice is a
    function of `(seed, epoch, i)`, so a resumed run sees exactly the images the uninterrupted one saw.
    """

    def __init__(self, images, labels: np.ndarray, config: Any, degrade: VeryLowResolution | None,
                 hflip_prob: float, seed: int, image_column: str = "image") -> None:
        self.images, self.labels, self.config = images, np.asarray(labels, dtype=np.int64), config
        self.degrade, self.hflip_prob, self.seed, self.image_column = degrade, hflip_prob, seed, image_column
        self.epoch = 0
        self.return_index = False  # items become (pixel_values, label, index) when set

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.degrade is not None:
            self.degrade.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def raw_image(self, index: int) -> np.ndarray:
        """`[S, S, 3]` uint8 RGB, as stored."""
        image = image_to_rgb_array(self.images[int(index)][self.image_column])
        size = int(self.config.input_size)
        if image.shape[:2] != (size, size):
            raise ValueError(f"training image {index} is {image.shape[1]}x{image.shape[0]} px, the encoder expects "
                             f"{size}x{size} (input_size of its config): give aligned {size} px faces")
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.raw_image(index)
        if self.degrade is not None:
            image = self.degrade(image, index)
        if self.hflip_prob and np.random.default_rng([self.seed, self.epoch, int(index), 1]).random() < self.hflip_prob:
            image = image[:, ::-1]
        pixel_values = pixel_values_from_uint8(np.ascontiguousarray(image)[None], self.config)[0]
        if self.return_index:
            return pixel_values, torch.tensor(self.labels[index]), torch.tensor(int(index))
        return pixel_values, torch.tensor(self.labels[index])


@dataclass
class HeldOutPairs:
    """Evaluation pairs (the held-out folds' or the validation pairs): their images decoded once, `[P, 2]` rows into
    them, same/different, fold ids."""

    images: np.ndarray
    pair_index: np.ndarray
    same: np.ndarray
    folds: np.ndarray


@dataclass
class FaceData:
    train_set: FaceTrainSet
    num_classes: int
    class_names: list[str]
    pairs: HeldOutPairs | None
    report: dict
    validation: HeldOutPairs | None = None


def resolve_face_dataset(spec: str) -> str:
    """'lfw112' -> ../shared/data/face/lfw112; anything else unchanged."""
    if spec == "lfw112":
        path = shared_dir() / "data" / "face" / "lfw112"
        if not path.is_dir():
            raise FileNotFoundError(f"dataset 'lfw112' means {path}, which does not exist (set RANKFACE_SHARED)")
        return str(path)
    return spec


def prepare_face_data(args: FaceTrainingArguments, config: Any | None = None) -> FaceData:
    """Load the data, drop held-out (and validation) identities and small classes, remap labels to 0..C-1, collect
    the held-out and validation pairs."""
    spec = resolve_face_dataset(args.dataset)
    dataset, load_report = load_face_dataset(spec, image_column=args.image_column, label_column=args.label_column,
                                             check_images=args.check_images)
    folder = Path(spec) if Path(spec).is_dir() else Path(spec).parent
    heldout_ids: set[str] = set()
    pairs_path = Path(args.pairs_file) if args.pairs_file else folder / "pairs.txt"
    needs_splits = bool(args.heldout_folds) or args.validation_identities != "none"
    if needs_splits and args.identity_column not in dataset.column_names:
        raise ValueError(f"{spec}: heldout_folds {args.heldout_folds} and validation_identities need an identity-name "
                         f"column {args.identity_column!r}; columns are {dataset.column_names} (or set "
                         "heldout_folds: [] and validation_identities: none)")
    splits = read_lfw_splits(Path(args.splits_file) if args.splits_file else folder / "splits.json") \
        if needs_splits else None
    for fold in args.heldout_folds:
        heldout_ids |= lfw_fold_identities(splits, fold)[1]
    names = dataset[args.identity_column] if args.identity_column in dataset.column_names else None
    validation = None
    if args.validation_identities != "none":
        validation = validation_set(dataset, names, splits, args)
        heldout_ids |= validation.identities
    labels = np.asarray(dataset[args.label_column], dtype=np.int64)
    keep = np.ones(len(labels), dtype=bool)
    if names is not None and heldout_ids:
        keep &= np.array([n not in heldout_ids for n in names])
    counts = np.bincount(labels[keep], minlength=int(labels.max()) + 1 if labels.size else 0)
    keep &= counts[labels] >= args.min_images_per_class
    rows = np.flatnonzero(keep)
    classes, remapped = np.unique(labels[rows], return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"{spec}: {classes.size} training class(es) left after removing held-out folds "
                         f"{args.heldout_folds} and classes with < {args.min_images_per_class} images; need >= 2")
    feature = dataset.features[args.label_column]
    class_names = [feature.names[c] if hasattr(feature, "names") else str(c) for c in classes.tolist()]
    images = dataset.select(rows.tolist()).select_columns([args.image_column])
    placeholder = config or encoder_config(args)
    degrade = VeryLowResolution(min_resolution=args.min_resolution, max_resolution=args.max_resolution,
                                p=args.degrade_prob, blur_prob=args.blur_prob, jpeg_prob=args.jpeg_prob,
                                noise_prob=args.noise_prob, seed=args.seed)
    train_set = FaceTrainSet(images, remapped, placeholder, degrade, args.hflip_prob, args.seed, args.image_column)
    pairs = None
    if args.heldout_folds and (args.eval_at_end or (args.eval_steps and "heldout" in args.eval_sets)):
        pairs = held_out_pairs(dataset, pairs_path, args)
    report = {
        "summary": f"{load_report.summary()}; training on {len(rows)} images of {classes.size} classes "
                   f"(held-out folds {args.heldout_folds}, classes with >= {args.min_images_per_class} images)"
                   + (f"; {len(pairs.same)} held-out pairs" if pairs is not None else ""),
        "source": load_report.source, "num_rows": load_report.num_rows, "num_unreadable": load_report.num_corrupt,
        "unreadable": [list(c) for c in load_report.corrupt], "num_train_images": len(rows),
        "num_classes": int(classes.size), "heldout_folds": list(args.heldout_folds),
        "num_heldout_identities": len(heldout_ids), "num_eval_pairs": 0 if pairs is None else len(pairs.same),
    }
    if validation is not None:
        report["summary"] += (f"; validation: {len(validation.pairs.same)} pairs of {len(validation.identities)} "
                              "identities in no View-2 pair, left out of training")
        report["num_validation_pairs"] = len(validation.pairs.same)
        report["num_validation_identities"] = len(validation.identities)
    return FaceData(train_set, int(classes.size), class_names, pairs, report,
                    None if validation is None else validation.pairs)


@dataclass
class ValidationSet:
    pairs: HeldOutPairs
    identities: set[str]


def validation_set(dataset, names: list[str], splits: dict, args: FaceTrainingArguments) -> ValidationSet:
    """Pairs for the learning curve that are no test pair of either F1 half: identities that appear in no View-2 pair
    (`splits.json` `non_pair_identities`); genuine pairs from those with >= 2 images, impostor partners from all of
    them. Every identity used is left out of training, so the curve measures generalisation to unseen people and
    a schedule may honestly be chosen on it."""
    pool = set(splits["view2_10fold"].get("non_pair_identities", []))
    if not pool:
        raise ValueError("validation_identities: 'non_pair' needs splits.json view2_10fold.non_pair_identities, "
                         "which is empty or missing")
    rows_of: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        if name in pool:
            rows_of.setdefault(name, []).append(row)
    index, same, identities = validation_pairs(rows_of, seed=args.validation_seed,
                                               max_genuine_per_identity=args.validation_genuine_per_identity)
    rows, local = np.unique(index, return_inverse=True)
    images = np.stack([image_to_rgb_array(dataset[int(r)][args.image_column]) for r in rows])
    folds = np.arange(len(same)) % 10  # pairs come shuffled: 10 interleaved folds for the k-fold threshold
    return ValidationSet(HeldOutPairs(images=images, pair_index=local.reshape(index.shape), same=same, folds=folds),
                         identities)


def held_out_pairs(dataset, pairs_path: Path, args: FaceTrainingArguments) -> HeldOutPairs:
    """The pairs of `args.heldout_folds` (at most `eval_max_pairs`, balanced over folds and same/different)."""
    pairs = [p for p in read_lfw_pairs(pairs_path) if p.fold in set(args.heldout_folds)]
    if args.eval_max_pairs:
        per_cell = max(1, args.eval_max_pairs // (2 * len(args.heldout_folds)))
        seen: dict[tuple[int, bool], int] = {}
        kept = []
        for p in pairs:
            if seen.get((p.fold, p.same), 0) < per_cell:
                seen[(p.fold, p.same)] = seen.get((p.fold, p.same), 0) + 1
                kept.append(p)
        pairs = kept
    index = pair_rows(dataset, pairs)
    rows, local = np.unique(index, return_inverse=True)
    images = np.stack([image_to_rgb_array(dataset[int(r)][args.image_column]) for r in rows])
    return HeldOutPairs(images=images, pair_index=local.reshape(index.shape),
                        same=np.array([p.same for p in pairs]), folds=np.array([p.fold for p in pairs]))


def encoder_config(args: FaceTrainingArguments):
    """The configuration of the encoder `args` will train (fresh, the public MobileFaceNet, or a saved one), read
    without building the model: the images are normalised for it."""
    if args.from_scratch:
        if args.architecture == "iresnet":
            from rankface.models.iresnet import IResNetConfig

            return IResNetConfig(**args.config_overrides)
        from rankface.models.mobilefacenet import MobileFaceNetConfig

        return MobileFaceNetConfig(**args.config_overrides)
    if args.model_name_or_path == PRETRAINED_MOBILEFACENET:
        from rankface.models.mobilefacenet import MobileFaceNetConfig

        return MobileFaceNetConfig()
    from transformers import AutoConfig

    import rankface.models.auto  # noqa: F401 - registers rankface model types with AutoConfig

    return AutoConfig.from_pretrained(args.model_name_or_path)
