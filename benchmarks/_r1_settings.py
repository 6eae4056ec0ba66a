"""R1's settings: constants, command line, the settings fingerprint, and the per-(system, seed) results store.

A sibling module of `pooling_bias.py` (the script's folder is on `sys.path`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from _r1_systems import ORDER

from rankface.paths import shared_dir
from rankface.utils.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "pooling_bias"
MEASURES = ("nDCG@10", "RR@10", "R@100")
# Strong-source candidates in order of preference: the same 1-50 window as BM25 first (only the retriever changes),
# the fine-tuned dense run before its fusion with BM25 (the ANCE analogue), narrower windows last.
STRONG_CANDIDATES = (("dense-ft", 50), ("rrf", 50), ("dense-ft", 20), ("rrf", 20), ("dense-ft", 10), ("rrf", 10))
BM25_WINDOW = 50
ORACLE_POOL_QRELS = "oracle_pool_qrels.train.txt"
POOL_DEPTH = 10
NDCG_MARGIN = 0.01  # "clearly better than BM25"
FN_RATIO = 1.3  # "clearly more false negatives"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, length 128, K=3, 1 seed, a train subset")
    parser.add_argument("--encoder", default="bi", choices=["bi", "cross"], help="R1-bi (default) or cross-encoder R1")
    parser.add_argument("--collection", default=str(shared_dir() / "data" / "ir" / "nfcorpus"))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (quick: 0; full: 0,1,2)")
    parser.add_argument("--num-layers", type=int, default=None, help="encoder layers kept (quick 2, full all 6)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text/pair (quick 128, full 128/192)")
    parser.add_argument("--num-negatives", type=int, default=None, help="K (3)")
    parser.add_argument("--batch-size", type=int, default=None, help="queries per step (quick 8, full 16)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps of every trained system")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak lr (full bi 5e-5; cross 2e-5, head 1e-3)")
    parser.add_argument("--max-train-queries", type=int, default=None, help="pooled train queries used (quick 300)")
    parser.add_argument("--cet-temperature", type=float, default=10.0, help="T of the main CET systems (authors: 10)")
    parser.add_argument("--cet-weights-from", default="eval_forward", choices=["eval_forward", "train_logits"])
    parser.add_argument("--cet-selection", default="same", choices=["same", "mlp"])
    parser.add_argument("--sweep", default=None, help="CET temperatures swept on dev, seed 0 (quick 1,10; full 1,2,5,10)")
    parser.add_argument("--dev-max-queries", type=int, default=None, help="dev subset (cross default 100)")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache-dir", default="~/.cache/rankface", help="BM25 index/run cache")
    parser.add_argument("--results-dir", default=None, help=f"default {RESULTS}/<mode>")
    parser.add_argument("--report-only", action="store_true", help="print the table from saved results, train nothing")
    parser.add_argument("--systems", nargs="+", default=list(ORDER), choices=list(ORDER), metavar="SYSTEM",
                        help="trained systems to run, in this order (default: all, in ORDER)")
    parser.add_argument("--training-mode", default=None, choices=["full", "query_side", "partial"],
                        help="how the encoders train (bi default: query_side, the cached-corpus mode; cross: full)")
    parser.add_argument("--freeze-embeddings", default=None, action=argparse.BooleanOptionalAction,
                        help="freeze the token embeddings (default: on in query_side mode)")
    parser.add_argument("--k-sweep", default=None, help="other K (negatives per query) tried for CET on dev, seed 0")
    parser.add_argument("--eval-steps", type=int, default=None, help="dev evaluation every N steps (learning curves)")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "auto"],
                        help="training precision (accelerate's autocast): 'bf16' on a GPU; 'auto' = bf16 where native")
    parser.add_argument("--pool-labels", default="one", choices=["one", "judged"],
                        help="'one': one labelled positive per query, every other pooled doc unlabelled (R1, as MS "
                             "MARCO); 'judged': every pooled doc keeps its grade (CET's model y = r * s holds; the "
                             "strong source is then R1-bi's, as --strong-from)")
    parser.add_argument("--strong-from", default=None,
                        help="cross-encoder R1: the R1-bi results folder whose strong source is used (a cross-encoder "
                             f"cannot retrieve from the corpus; default {RESULTS}/full-query-side)")
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "full"
    cross = args.encoder == "cross"
    defaults = {
        # name: (quick, full bi, full cross)
        "seeds": ("0", "0,1,2,3,4", "0,1"),
        "sweep": ("1,10", "1,2,5,10,20", "1,2,5,10"),
        "k_sweep": ("", "3", ""),
        "num_layers": (2, None, None),
        "max_length": (128, 128, 192),
        "num_negatives": (3, 7, 3),
        "batch_size": (8, 16, 16),
        "steps": (6, 800, 1500),
        "learning_rate": (2e-5, 5e-5, 2e-5),
        "max_train_queries": (300, None, None),
        "dev_max_queries": (None, None, 100),
        "training_mode": ("query_side", "query_side", "full"),
        "eval_steps": (3, 100, 250),
    }
    for name, (quick, full_bi, full_cross) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else (full_cross if cross else full_bi))
    if args.freeze_embeddings is None:
        args.freeze_embeddings = args.training_mode == "query_side"
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.sweep_list = [float(t) for t in str(args.sweep).split(",") if t.strip()]
    args.k_sweep_list = [int(k) for k in str(args.k_sweep).split(",") if k.strip()]
    if args.mode == "full" and args.encoder == "cross":
        args.mode = "full-cross"
    elif args.mode == "quick" and args.encoder == "cross":
        args.mode = "quick-cross"
    if args.training_mode != "full" and not args.quick:
        args.mode += f"-{args.training_mode.replace('_', '-')}"  # full-query-side: a table of its own
    if args.pool_labels != "one":
        args.mode += f"-pool-{args.pool_labels}"
    args.out = Path(args.results_dir) if args.results_dir else RESULTS / args.mode
    return args


def training_settings(args: argparse.Namespace) -> dict:
    """Everything that must be equal for two saved results to be comparable (the fingerprint)."""
    return {
        "collection": collection_label(args.collection),
        "encoder": args.encoder,
        "num_layers": args.num_layers,
        "max_length": args.max_length,
        "num_negatives": args.num_negatives,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "head_learning_rate": 1e-3 if args.encoder == "cross" else None,
        "max_train_queries": args.max_train_queries,
        "cet_weights_from": args.cet_weights_from,
        "cet_selection": args.cet_selection,
        "loss": "pairwise",
        "warmup_ratio": 0.1,
        "pool_depth": POOL_DEPTH,
        "bm25_window": BM25_WINDOW,
        "training_mode": args.training_mode,
        "freeze_embeddings": args.freeze_embeddings,
        "eval_steps": args.eval_steps,
        # Only when set, so the fingerprints of results saved before this setting existed (all fp32) still match.
        **({"mixed_precision": args.mixed_precision} if args.mixed_precision != "no" else {}),
        **({"pool_labels": args.pool_labels} if args.pool_labels != "one" else {}),
    }


def collection_label(collection: str) -> str:
    """The shared collections by name (`nfcorpus`), so that saved results match on any clone; other paths as given."""
    path = Path(collection).expanduser()
    shared = shared_dir() / "data" / "ir"
    if path.is_dir() and path.resolve().parent == shared.resolve():
        return path.name
    return str(collection)


def fingerprint(settings: Mapping) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Store:
    """One JSON file per (system, seed); a settings fingerprint guards against mixing runs."""

    def __init__(self, out: Path, settings: dict):
        self.out = out
        self.settings = settings
        self.hash = fingerprint(settings)

    def path(self, system: str, seed: int) -> Path:
        return self.out / f"{system.replace('/', '__')}__seed{seed}.json"

    def load(self, system: str, seed: int) -> dict | None:
        path = self.path(system, seed)
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        if record.get("fingerprint") != self.hash:
            raise SystemExit(
                f"{path} was made with other settings ({record.get('settings')}) than this run ({self.settings}); "
                f"use --results-dir for a new table or move the old folder away"
            )
        return record

    def saved_seeds(self, system: str | None = None) -> list[int]:
        """The seeds saved for `system` (or for any system), whatever `--seeds` says: the report covers them all."""
        pattern = f"{system.replace('/', '__')}__seed*.json" if system else "*__seed*.json"
        seeds = set()
        for path in self.out.glob(pattern):
            tail = path.stem.rsplit("__seed", 1)[-1]
            if tail.isdigit():
                seeds.add(int(tail))
        return sorted(seeds)

    def save(self, system: str, seed: int, record: dict) -> dict:
        record = {"system": system, "seed": seed, "fingerprint": self.hash, "settings": self.settings, **record,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_json(self.path(system, seed), record)
        return record
