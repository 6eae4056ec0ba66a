"""Run settings for face-encoder training: one dataclass, read from a YAML file and/or the command line.

Same conventions as the reranker's settings (`rankface.training.arguments`): `--config file.yaml` supplies defaults,
any `--flag value` overrides them, unknown YAML keys are an error naming the key and the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rankface.training.arguments import DDP_TIMEOUT_HELP, parse_settings

PRETRAINED_MOBILEFACENET = "mobilefacenet-pretrained"


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class FaceTrainingArguments:
    # ----------------------------------------------------------------- data
    dataset: str = _help(
        "Face data: Hub id, folder of Parquet files, .parquet file or imagefolder; 'lfw112' = ../shared/data/face/lfw112.",
        default="lfw112",
    )
    image_column: str = _help("Image column of the data set.", default="image")
    label_column: str = _help("Integer identity label column.", default="label")
    identity_column: str = _help("Identity-name column (needed for held-out folds and LFW pairs).", default="identity")
    heldout_folds: list[int] = _help(  # noqa: RUF009 - _help returns a dataclass field
        "View-2 folds whose identities are left out of training and whose pairs are evaluated "
        "(protocol F1: model A = 0 1 2 3 4, model B = 5 6 7 8 9; empty = train on everything, no pair evaluation).",
        default_factory=lambda: [0, 1, 2, 3, 4],
    )
    pairs_file: str | None = _help("LFW-format pairs.txt (default: <dataset>/pairs.txt when present).", default=None)
    splits_file: str | None = _help("splits.json with view2_10fold (default: <dataset>/splits.json).", default=None)
    min_images_per_class: int = _help("Identities with fewer training images are dropped.", default=2)
    check_images: bool = _help("Decode every image once at load and report unreadable ones.", default=True)
    # ----------------------------------------------------------------- augmentation
    min_resolution: int = _help("Very-low-resolution augmentation: smallest r (px).", default=8)
    max_resolution: int = _help("Very-low-resolution augmentation: largest r (px).", default=112)
    degrade_prob: float = _help("Share of training images degraded (the rest stay at full resolution).", default=0.8)
    blur_prob: float = _help("Probability of a Gaussian blur before down-sampling.", default=0.0)
    jpeg_prob: float = _help("Probability of JPEG compression at the low resolution.", default=0.0)
    noise_prob: float = _help("Probability of Gaussian noise at the low resolution.", default=0.0)
    hflip_prob: float = _help("Probability of a horizontal flip.", default=0.5)
    # ----------------------------------------------------------------- model
    model_name_or_path: str = _help(
        f"'{PRETRAINED_MOBILEFACENET}' (../shared/models/mobilefacenet/mobilefacenet.pt converted on the fly), a "
        "rankface checkpoint folder or Hub id; ignored with from_scratch.",
        default=PRETRAINED_MOBILEFACENET,
    )
    from_scratch: bool = _help("Build a randomly initialised encoder of `architecture` instead.", default=False)
    architecture: str = _help("With from_scratch: 'mobilefacenet' or 'iresnet'.", default="mobilefacenet")
    model_config_overrides: str | None = _help(
        "With from_scratch: JSON object of config fields, e.g. '{\"embedding_size\": 64}'.", default=None
    )
    # ----------------------------------------------------------------- objective
    head: str = _help("Margin head: arcface, cosface, cosface-unpg (m=0.5), adaface, magface.", default="arcface")
    margin_scale: float | None = _help("Head scale s (default: the head's own, 64).", default=None)
    margin: float | None = _help("Head margin m (default: the head's own).", default=None)
    unpg: bool = _help("Add UNPG's filtered in-batch negative pairs to the softmax.", default=False)
    unpg_wisk: float = _help("UNPG box-and-whisker length k.", default=1.5)
    unpg_filter: bool = _help("UNPG: filter the in-batch negatives (false: keep every pair; the k sweep's end).",
                              default=True)
    head_init: str = _help(
        "Class weights: 'centroids' (mean normalised embedding of each class under the starting encoder) or "
        "'random'. Centroids keep a pretrained encoder from being wrecked by a random head in the first steps.",
        default="centroids",
    )
    head_init_images_per_class: int = _help("Images per class embedded for the centroid initialisation.", default=2)
    # ----------------------------------------------------------------- recognizability index (methods.md section 3)
    ri: bool = _help("Train a RecognizabilityModel (backbone + RI regressor [+ attention]) with the RI objective.",
                     default=False)
    ri_attention: bool = _help("RI: perceptibility attention branch (and its loss gamma).", default=True)
    ri_alpha: float = _help("RI: weight of the RI regression (Smooth-L1).", default=1.0)
    ri_beta: float = _help("RI: weight of the index-diversion hinge (0 turns it off).", default=1.0)
    ri_gamma: float = _help("RI: weight of the attention MSE (0 turns it off).", default=1.0)
    ri_warmup_ratio: float = _help(
        "RI: share of the total optimizer steps before index diversion and attention switch on (methods.md: 'about "
        "one epoch', so that the UI centre and the class prototypes mean something first). A share rather than one "
        "epoch, so the warm-up scales with the budget: 0.25 of 600 steps x 64 images is ~2 epochs of an F1 half.",
        default=0.25)
    ri_warmup_steps: int | None = _help("RI: an exact warm-up in steps; when given it overrides ri_warmup_ratio.",
                                        default=None)
    # The three RI defaults below are issue 21's fix (F1, 3 seeds): the paper's target against the live classifier
    # rows, its product form and a regressor on v gave a flat index (24 vs 8 px AUC 0.78); the old values stay
    # selectable for the ablation and for the records made with them.
    ri_form: str = _help("RI: 'product_clamped' (the margin term clamped at 0: the diversion never pulls a "
                         "misclassified face towards the UI centre), 'product' (the paper's, whose gradient has the "
                         "wrong sign for misclassified faces) or 'ratio' form of the index.", default="product_clamped")
    ri_target_prototypes: str = _help(
        "RI: prototypes of the target xi: 'initial' (every training image embedded once at 112 px by the starting "
        "encoder; the positive prototype leaves the image itself out; training/face_ri.py), 'classifier' (the live "
        "class rows ArcFace fits to the same images: the paper's target, which saturates in-sample) or 'auto' "
        "('initial' when fine-tuning a trained encoder, 'classifier' with from_scratch, whose starting encoder is "
        "random).", default="auto")
    ri_log_steps: int = _help("RI: log mean xi and xi_hat per resolution bucket every this many steps (a multiple of "
                              "eval_steps; also at step 0 and the end); 0 = off.", default=0)
    ri_log_images: int = _help("RI: training images in that log (a fixed sample).", default=256)
    ri_diversion_on: str = _help("RI: hinge on 'xi' (the embedding's RI) or 'xi_hat' (the regressed one).",
                                 default="xi")
    ri_match_with: str = _help("RI: matching embedding 'v' or 'v+att'.", default="v")
    ri_quality_input: str = _help("RI: what the regressor reads: 'feature_map' (the backbone's last feature map "
                                  "averaged over space) or 'embedding' (v, the paper's; ArcFace training removes what "
                                  "v holds about resolution: see RecognizabilityConfig).", default="feature_map")
    ri_ui_size_min: int = _help("RI: smallest side (px) of the unrecognizable images.", default=4)
    ri_ui_size_max: int = _help("RI: largest side (px) of the unrecognizable images.", default=6)
    ri_head_learning_rate: float | None = _help(
        "RI: peak learning rate of the modules the backbone lacks (RI regressor, attention), which start from random "
        "weights when fine-tuning a pretrained backbone (default: learning_rate).", default=None)
    # ----------------------------------------------------------------- optimisation
    optimizer: str = _help("'sgd' (momentum 0.9) or 'adamw'.", default="sgd")
    learning_rate: float = _help("Peak learning rate of the encoder.", default=0.01)
    head_learning_rate: float | None = _help("Peak learning rate of the class weights (default: learning_rate).",
                                             default=None)
    weight_decay: float = _help("Weight decay (not on BatchNorm and biases).", default=5e-4)
    lr_scheduler: str = _help("'cosine', 'linear' or 'constant' (after warm-up).", default="cosine")
    warmup_ratio: float = _help("Share of steps with linear warm-up.", default=0.05)
    epochs: float = _help("Passes over the training images.", default=1.0)
    max_steps: int | None = _help("Stop after this many optimizer steps (overrides epochs).", default=None)
    batch_size: int = _help("Images per device per step.", default=64)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    max_grad_norm: float = _help("Gradient clipping norm (0: none).", default=5.0)
    freeze_batchnorm: bool = _help("Keep BatchNorm running statistics and affine weights fixed.", default=False)
    precision: str = _help(
        "'auto' (bf16 autocast where the hardware runs bf16 natively: CUDA with bf16, CPUs with AVX-512 bf16 or AMX; "
        "fp32 elsewhere, where bf16 is emulated and slower), 'fp32', or 'bf16' (forced; warns on a CPU without native "
        "bf16). This setting decides, whatever `accelerate launch --mixed_precision` says.", default="auto")
    channels_last: bool = _help(
        "Keep the encoder and its input in channels-last (NHWC) memory order: oneDNN's NHWC kernels are faster for "
        "MobileFaceNet's depthwise convolutions on CPU (benchmarks/face_step_options.py). Saved weights are "
        "contiguous either way.", default=True)
    seed: int = _help("Seed for sampling, initialisation, shuffling and augmentation.", default=42)
    ddp_timeout: int = _help(DDP_TIMEOUT_HELP, default=1800)
    num_workers: int = _help(
        "DataLoader worker processes that decode and degrade the training images while the model steps (0: in the "
        "training process, between steps).", default=0)
    # ----------------------------------------------------------------- evaluation
    eval_resolutions: list[int] = _help(  # noqa: RUF009
        "Resolutions (px) of the LR-LR pair evaluation during and after training.", default_factory=lambda: [112, 16, 8]
    )
    eval_steps: int | None = _help("Evaluate the held-out pairs every this many steps (None: only at the end).",
                                   default=None)
    eval_sets: list[str] = _help(  # noqa: RUF009
        "Pairs evaluated every eval_steps (and, for 'validation', also at step 0 and the last step: the learning "
        "curve): 'heldout' (the held-out folds' pairs, at eval_resolutions) and/or 'validation' (see "
        "validation_identities, at val_resolutions).", default_factory=lambda: ["heldout"])
    validation_identities: str = _help(
        "'none', or 'non_pair': the identities of splits.json that appear in no View-2 pair are left out of training "
        "and give validation pairs (genuine pairs of those with >= 2 images, as many impostor pairs), which are no "
        "test pair of either F1 half, so a schedule may be chosen on them.", default="none")
    validation_genuine_per_identity: int = _help("Validation: at most this many genuine pairs per identity.",
                                                 default=6)
    validation_seed: int = _help("Validation: seed of the pair draw (the same pairs for every system).", default=0)
    val_resolutions: list[int] = _help(  # noqa: RUF009
        "Resolutions (px) of the LR-LR validation evaluation.", default_factory=lambda: [16, 8])
    eval_at_end: bool = _help("Evaluate the held-out pairs after training.", default=True)
    eval_max_pairs: int | None = _help("Evaluate on at most this many pairs (whole folds, in file order).",
                                       default=None)
    eval_batch_size: int = _help("Batch size of inference during evaluation.", default=128)
    # ----------------------------------------------------------------- bookkeeping
    output_dir: str = _help("Where checkpoints, the final encoder and reports go.", default="runs/face")
    checkpoint_steps: int | None = _help("Save a resumable checkpoint every this many steps.", default=None)
    checkpoints_to_keep: int = _help("Older checkpoints are deleted.", default=2)
    resume_from_checkpoint: str | None = _help("'latest' or a checkpoint folder.", default=None)
    overwrite_output_dir: bool = field(default=False, metadata={"aliases": ["--overwrite"], "help": (
        "Start a new run in a non-empty output_dir: its old checkpoints are deleted first (without this, a new run "
        "there is refused, because its checkpoints would mix with the old run's).")})
    quiet: bool = _help("No progress bars.", default=False)

    def __post_init__(self) -> None:
        if isinstance(self.model_config_overrides, dict):  # a YAML mapping is friendlier than a JSON string
            self.model_config_overrides = json.dumps(self.model_config_overrides)
        choices = {
            "architecture": ("mobilefacenet", "iresnet"),
            "head": ("arcface", "cosface", "cosface-unpg", "adaface", "magface"),
            "head_init": ("centroids", "random"),
            "optimizer": ("sgd", "adamw"),
            "lr_scheduler": ("cosine", "linear", "constant"),
            "precision": ("auto", "fp32", "bf16"),
            "validation_identities": ("none", "non_pair"),
            "ri_form": ("product", "ratio", "product_clamped"),
            "ri_target_prototypes": ("auto", "initial", "classifier"),
            "ri_diversion_on": ("xi", "xi_hat"),
            "ri_match_with": ("v", "v+att"),
            "ri_quality_input": ("embedding", "feature_map"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.ri_target_prototypes == "auto":  # resolved here, so training_args.json records what ran
            self.ri_target_prototypes = "classifier" if self.from_scratch else "initial"
        elif self.ri and self.from_scratch and self.ri_target_prototypes == "initial":
            raise ValueError("ri_target_prototypes 'initial' measures the RI target against the starting encoder's "
                             "embeddings, which from_scratch makes random: use 'classifier' (or 'auto'), or fine-tune "
                             "a trained encoder")
        if not 1 <= self.min_resolution <= self.max_resolution:
            raise ValueError(f"need 1 <= min_resolution <= max_resolution, got {self.min_resolution}, "
                             f"{self.max_resolution}")
        for name in ("degrade_prob", "blur_prob", "jpeg_prob", "noise_prob", "hflip_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.ri_warmup_ratio <= 1.0:
            raise ValueError(f"ri_warmup_ratio must be a share of the steps in [0, 1], got {self.ri_warmup_ratio}")
        if self.ri_warmup_steps is not None and self.ri_warmup_steps < 0:
            raise ValueError(f"ri_warmup_steps must be >= 0, got {self.ri_warmup_steps}")
        if self.ri_log_steps < 0 or self.ri_log_images < 1:
            raise ValueError(f"ri_log_steps must be >= 0 and ri_log_images >= 1, got {self.ri_log_steps}, "
                             f"{self.ri_log_images}")
        if self.ri_log_steps and (not self.eval_steps or self.ri_log_steps % self.eval_steps):
            raise ValueError(f"ri_log_steps ({self.ri_log_steps}) must be a multiple of eval_steps ({self.eval_steps}): "
                             "the log is taken at evaluation points")
        unknown = [e for e in self.eval_sets if e not in ("heldout", "validation")]
        if unknown:
            raise ValueError(f"eval_sets: {unknown} unknown; expected 'heldout' and/or 'validation'")
        if "validation" in self.eval_sets and self.validation_identities == "none":
            raise ValueError("eval_sets includes 'validation' but validation_identities is 'none': set it to "
                             "'non_pair' (or drop 'validation' from eval_sets)")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.ddp_timeout <= 0:
            raise ValueError(f"ddp_timeout must be > 0 seconds, got {self.ddp_timeout}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm and in-batch negatives), got {self.batch_size}")
        if self.min_images_per_class < 1 or self.head_init_images_per_class < 1:
            raise ValueError("min_images_per_class and head_init_images_per_class must be >= 1")
        if self.model_config_overrides:
            try:
                overrides = json.loads(self.model_config_overrides)
            except json.JSONDecodeError as err:
                raise ValueError(f"model_config_overrides is not valid JSON: {err}") from None
            if not isinstance(overrides, dict):
                raise ValueError(f"model_config_overrides must be a JSON object, got {self.model_config_overrides!r}")

    @property
    def config_overrides(self) -> dict:
        return json.loads(self.model_config_overrides) if self.model_config_overrides else {}


def parse_face_training_args(argv: list[str] | None = None) -> FaceTrainingArguments:
    """`--config file.yaml` supplies defaults; any other `--flag value` overrides them."""
    return parse_settings(FaceTrainingArguments, argv)
