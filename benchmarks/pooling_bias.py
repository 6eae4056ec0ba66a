"""Protocol R1 (../shared/docs/benchmarks.md): pooling bias on NFCorpus, plain vs CET reranker training.

NFCorpus is densely judged, so the false negatives that sparse "pooled" labels leave among mined negatives can be
counted. The pipeline:

1. **Pooled labels**: for every train query (minus those whose text duplicates a test or dev query), the pool is the
   BM25 top-10 (k1 0.9, b 0.4); its labelled positive is the best-graded pooled doc with grade >= 2
   (`rankface.data.mining.simulate_pooled_labels`); queries without one are dropped. Full qrels: evaluation only.
2. **Negative sources**: `bm25` (BM25 top-50) and `strong`: chosen among runs of the bi-encoder fine-tuned on the
   pooled labels (`plain/bm25-neg`, seed 0, doubles as this retriever, as ANCE was trained on MS MARCO's sparse
   labels), its RRF fusion with BM25, and narrower windows of both. The first candidate that beats BM25's
   nDCG@10 on the training queries (full qrels) by >= 0.01 and whose sampled negatives hold >= 1.3x BM25's
   false-negative rate (grade >= 1) is used; the table of every candidate is printed and saved. The cross-encoder
   R1 takes the source R1-bi chose (`--strong-from`, default its full-query-side folder): a cross-encoder cannot
   search the corpus.
3. **Systems**: `bm25`; `dense` (the zero-shot bi-encoder); `plain/bm25-neg`, `plain/strong-neg`,
   `cet/strong-neg`, `cet/bm25-neg`; `oracle` (all grade >= 2 train docs of the same queries as positives,
   negatives from BM25 top-50 docs with no judgment at all). Every trained system: `rankface.training.train` with
   the same encoder, layers, length, K, batch, steps and learning rate; `plain` is the pairwise loss CET weights.
4. **Test**: rerank the BM25 top-100 of the 325 test queries: nDCG@10 (graded), RR@10 (grade >= 2), R@100; mean
   +- std over seeds; paired t-tests over queries (per-query values averaged over the common seeds) of
   `cet/X-neg` vs `plain/X-neg`. Dev split: the check that plain training beats BM25, and CET's T sweep.
5. **Investigation** (beyond the seven, vs `plain/strong-neg`): `cet-norm/strong-neg` (CET weights rescaled to mean 1
   per batch: AdamW is invariant to a constant loss scale, so this should equal `cet` unless gradient clipping or
   the weights' batch-to-batch spread matters), `cet-tl/strong-neg` (weights from the training logits, protocol R3's
   cheap mode), `cet-mlp/strong-neg` (the light MLP selection model on the pooling system's rank and score),
   `oracle-pool` (the oracle with only the grade >= 2 docs of the BM25 top-100 as positives).
6. **Ceiling** (`_r1_ceiling.py`): `clean/strong-neg`, `clean/bm25-neg` (plain training on the same negatives with
   every one the full qrels grade >= 1 replaced by the next candidate of the same ranking that they do not), the
   attainable gain A = clean - plain, and each CET system's share of it with bootstrap intervals over queries and
   seeds. `cet-indep/strong-neg`, `cet-indep/bm25-neg`: CET whose selection tower has its own separately seeded
   random query head (`rankface.models.cet.selection_head`), so that g != f at step 0 as in the authors' code;
   corr(g, f) and corr(w_f, f) are logged during training and saved in each record.

Each (system, seed) result is a JSON file under `benchmarks/results/pooling_bias/<mode>/` (per-query values
included), written as soon as it is done; a rerun skips what is saved (settings are fingerprinted: a rerun with
other settings stops with an error instead of mixing results).

    python benchmarks/pooling_bias.py --quick                  # smoke test (< 15 min on 2 cores), not evidence
    nohup nice -n 10 python benchmarks/pooling_bias.py > pooling_bias.log 2>&1 &    # R1-bi full mode, 3 seeds
    python benchmarks/pooling_bias.py --encoder cross          # cross-encoder R1 (GPU work)
    python benchmarks/pooling_bias.py --report-only            # table + RESULT line from what is saved

Full R1-bi budget (defaults): query-side training (frozen, cached document tower; token embeddings frozen), all 6
layers, length 128, K = 7, 16 queries per step, 800 steps (about 5 epochs of the pooled groups), lr 5e-5 (warm-up 10 %,
linear decay), dev evaluated every 100 steps for the learning curves, seeds 0-4, CET T = 10 with eval-forward
weights; T swept over {1, 2, 5, 10, 20} and K = 3 on dev for seed 0. Measured on the 2-core AVX-512 machine with
`--threads 1` beside another 1-thread job: a plain run takes 3.5 min, a CET run 9-14 min (plus ~1 min for its
diagnostics: coupled weights and selection propensity of the known false negatives among the mined ones). The gate
(plain/bm25-neg against zero-shot dense, paired over test queries with the seeds averaged) is printed first.
Within a seed, the systems that decide the paper's direction train first (`ORDER`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankface.paths import shared_dir
from rankface.utils.io import atomic_write, write_json
from rankface.utils.ties import ranked, top_k

RESULTS = Path(__file__).resolve().parent / "results" / "pooling_bias"
MEASURES = ("nDCG@10", "RR@10", "R@100")
TRAINED = ("plain/bm25-neg", "plain/strong-neg", "cet/strong-neg", "cet/bm25-neg", "oracle")
DECIDING = TRAINED[:4]  # the systems that decide the paper's direction: every seed, before anything else
# Beyond R1's seven: CET with the light selection model (an MLP on first-stage rank and score). With dual encoders
# the `same` selection model starts as an exact copy of the relevance model (no new head to initialise apart), so
# its "propensity" is the relevance model's own score; the MLP breaks that symmetry. It reads the rank and score of
# the system that built the pool (BM25 top-50 here; its top-10 was judged), not of the strong miner: whether a
# document was judged is what the selection model must estimate, and only the pooling system's rank carries it.
# And CET with its weights rescaled to mean 1 per batch. Unnormalised weights (mean ~3 at T = 10) scale the loss,
# but AdamW is invariant to a constant loss scale (scaling the loss by 2.6 or by 5,600 moves the parameters by at most
# 2.5e-5 after 50 steps without clipping): what can differ is how unequal the weights are across batches, and the
# gradient clipping (max_grad_norm 1.0), which a larger loss reaches sooner. This row checks that cet-norm = cet.
# And CET with weights from the detached training logits (protocol R3's cheap mode: its quality against
# eval_forward's).
# And `oracle-pool`: the oracle with only the grade >= 2 docs inside the BM25 top-100 as positives. NFCorpus
# queries have ~56 grade >= 2 train docs on average, most far from the query's wording; whether the oracle's result
# comes from its labels or from those out-of-pool positives is what this separates.
# The ceiling (`_r1_ceiling.py`): plain training on the same negatives with the false negatives replaced, and CET with
# a selection model that starts apart from the relevance model (its own random query head).
CEILING = ("clean/strong-neg", "clean/bm25-neg")
INDEPENDENT = ("cet-indep/strong-neg", "cet-indep/bm25-neg")
# The bound of CET's weighting form when the propensity is right (judged pools only, where "pooled" means "judged"):
# no selection model, p for documents in the BM25 top-10 pool and 1 - p outside it, w_f = 1 / (1 - p) as in CET.
ORACLE_PROPENSITY = {f"cet-oracle-propensity-p{p:g}/strong-neg": p for p in (0.6, 0.9, 0.99)}
EXTRA = ("cet-mlp/strong-neg", "cet-norm/strong-neg", "cet-tl/strong-neg", "oracle-pool", *CEILING, *INDEPENDENT,
         *ORACLE_PROPENSITY)
BASELINES = ("bm25", "dense")
SYSTEM_SPECS = {  # method and negative source of each trained system
    "plain/bm25-neg": ("plain", "bm25"),
    "plain/strong-neg": ("plain", "strong"),
    "cet/strong-neg": ("cet", "strong"),
    "cet/bm25-neg": ("cet", "bm25"),
    "oracle": ("plain", "oracle"),
    "oracle-pool": ("plain", "oracle-pool"),
    "cet-mlp/strong-neg": ("cet", "strong"),
    "cet-norm/strong-neg": ("cet", "strong"),
    "cet-tl/strong-neg": ("cet", "strong"),
    "clean/strong-neg": ("plain", "clean-strong"),
    "clean/bm25-neg": ("plain", "clean-bm25"),
    "cet-indep/strong-neg": ("cet", "strong"),
    "cet-indep/bm25-neg": ("cet", "bm25"),
    **{name: ("cet", "strong") for name in ORACLE_PROPENSITY},
}
# selection model overrides; other CET systems use --cet-selection
SELECTION = {"cet-mlp/strong-neg": "mlp", "cet-indep/strong-neg": "indep", "cet-indep/bm25-neg": "indep",
             **{name: "oracle_pool" for name in ORACLE_PROPENSITY}}
# selection models fed the pooling system's (BM25) run: the MLP, and the oracle propensity (pooled = its top-10)
SELECTION_READS_POOL = {"cet-mlp/strong-neg", *ORACLE_PROPENSITY}
NORMALIZED = {"cet-norm/strong-neg"}  # CET systems trained with cet_normalize_weights
WEIGHTS_FROM = {"cet-tl/strong-neg": "train_logits"}  # overrides of --cet-weights-from
# Training order within a seed: the paper's direction first (plain/bm25 -> plain/strong -> CET on strong), so that a
# partial run on a busy machine answers the main question before the rest.
ORDER = ("plain/bm25-neg", "plain/strong-neg", "cet/strong-neg", "cet-norm/strong-neg", "cet-tl/strong-neg",
         "cet/bm25-neg", "oracle", "cet-mlp/strong-neg", "oracle-pool", "clean/strong-neg", "cet-indep/strong-neg",
         "clean/bm25-neg", "cet-indep/bm25-neg", *ORACLE_PROPENSITY)
# Systems trained for every seed of --seeds (the others: the first seed only): the deciding four, the ceiling and
# the independent-selection CET (the protocol's 5 seeds for the ceiling, plain and the two main CET variants).
SEEDED = (*DECIDING, *CEILING, *INDEPENDENT)
# Strong-source candidates in order of preference: the same 1-50 window as BM25 first (only the retriever changes),
# the fine-tuned dense run before its fusion with BM25 (the ANCE analogue), narrower windows last.
STRONG_CANDIDATES = (("dense-ft", 50), ("rrf", 50), ("dense-ft", 20), ("rrf", 20), ("dense-ft", 10), ("rrf", 10))
BM25_WINDOW = 50
ORACLE_POOL_QRELS = "oracle_pool_qrels.train.txt"
POOL_DEPTH = 10
NDCG_MARGIN = 0.01  # "clearly better than BM25"
FN_RATIO = 1.3  # "clearly more false negatives"


# ---------------------------------------------------------------------------------------------- settings
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


# ---------------------------------------------------------------------------------------------- data
@dataclass
class Context:
    """The collection, the pooled labels and the negative sources shared by every system."""

    args: argparse.Namespace
    collection: object
    docs: dict[str, str]
    queries: dict[str, dict[str, str]]  # split -> {qid: text}
    full_qrels: dict[str, dict[str, dict[str, int]]]  # split -> qrels
    candidates: dict[str, dict[str, dict[str, float]]]  # split -> BM25 top-100 (test, dev subset)
    pooled_qrels_path: Path
    oracle_qrels_path: Path
    runs: dict[str, Path]  # negative source -> TREC run file
    train_qids: list[str]  # the pooled-labelled queries that train (a subset in quick mode)
    all_train_qids: list[str]  # every judged train query that duplicates no test/dev query
    bm25_train: dict[str, dict[str, float]]  # BM25 top-100 of `all_train_qids`
    report: dict = field(default_factory=dict)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def top(docs: Mapping[str, float] | None, n: int) -> dict[str, float]:
    """The top-`n` of one query's run in rankface's one order (`rankface.utils.ties`, as `build_training_groups`)."""
    return dict(ranked(docs or {})[:n])


def judged_pool_labels(full_qrels: Mapping[str, Mapping[str, int]], pool_run: Mapping[str, Mapping[str, float]],
                       qids: Sequence[str], depth: int) -> dict[str, dict[str, int]]:
    """Labels of a fully judged pool: every document of each query's top-`depth` keeps its grade >= 1, so a relevant
    pooled document is labelled and never a negative. CET's model (y = r * s) then holds exactly: a false negative
    can only lie outside the pool."""
    return {q: {d: g for d, g in full_qrels.get(q, {}).items() if g >= 1 and d in top(pool_run.get(q), depth)}
            for q in qids}


def prepare_context(args: argparse.Namespace) -> Context:
    from rankface.data.ir import load_collection
    from rankface.data.mining import simulate_pooled_labels
    from rankface.retrieval.first_stage import bm25_run
    from rankface.retrieval.trec import write_qrels, write_run

    work = args.out / "data"
    collection = load_collection(args.collection)
    docs = collection.docs()
    queries = {split: dict(collection.queries(split)) for split in ("train", "dev", "test")}
    full_qrels = {split: collection.qrels(split) for split in ("train", "dev", "test")}
    held_out = {normalise(t) for split in ("test", "dev") for t in queries[split].values()}
    duplicates = [q for q, t in queries["train"].items() if normalise(t) in held_out]

    bm25 = {split: bm25_run(collection, split, depth=100, cache_dir=args.cache_dir) for split in queries}
    pooled, pool_report = simulate_pooled_labels(
        full_qrels["train"], bm25["train"], pool_depth=POOL_DEPTH, min_grade=2,
        queries=list(queries["train"]), doc_ids=docs.keys(), exclude=duplicates,
    )
    train_qids = sorted(pooled)
    if args.max_train_queries is not None and args.max_train_queries < len(train_qids):
        train_qids = sorted(random.Random(0).sample(train_qids, args.max_train_queries))
    pooled = {q: pooled[q] for q in train_qids}
    if args.pool_labels == "judged":
        pooled = judged_pool_labels(full_qrels["train"], bm25["train"], train_qids, POOL_DEPTH)
    # Oracle: the same queries, every grade >= 2 doc a positive; negatives only from docs without any judgment
    # (grade-1 docs are neither positives nor negatives), so the run is filtered before the window is taken.
    oracle = {q: {d: g for d, g in full_qrels["train"][q].items() if g >= 2 and d in docs} for q in train_qids}
    bm25_train = {q: top(bm25["train"][q], BM25_WINDOW) for q in train_qids}
    unjudged = {
        q: {d: s for d, s in bm25["train"][q].items() if d not in full_qrels["train"].get(q, {})} for q in train_qids
    }
    oracle_run = {q: top(r, BM25_WINDOW) for q, r in unjudged.items()}
    in_pool = {q: set(top(bm25["train"].get(q), 100)) for q in train_qids}
    oracle_pool = {q: {d: g for d, g in oracle[q].items() if d in in_pool[q]} for q in train_qids}
    oracle_pool = {q: positives for q, positives in oracle_pool.items() if positives}

    pooled_path, oracle_path = work / "pooled_qrels.train.txt", work / "oracle_qrels.train.txt"
    write_qrels(pooled_path, pooled)
    write_qrels(oracle_path, oracle)
    write_qrels(work / ORACLE_POOL_QRELS, oracle_pool)
    runs = {"bm25": work / "bm25.train.top50.trec", "oracle": work / "oracle_negatives.train.trec"}
    runs["oracle-pool"] = runs["oracle"]
    write_run(runs["bm25"], bm25_train, tag="bm25")
    write_run(runs["oracle"], oracle_run, tag="bm25-unjudged")

    dev_qids = sorted(q for q in queries["dev"] if q in full_qrels["dev"])
    if args.dev_max_queries is not None and args.dev_max_queries < len(dev_qids):
        dev_qids = sorted(random.Random(0).sample(dev_qids, args.dev_max_queries))
    test_qids = sorted(q for q in queries["test"] if q in full_qrels["test"])
    candidates = {
        "test": {q: bm25["test"].get(q, {}) for q in test_qids},
        "dev": {q: bm25["dev"].get(q, {}) for q in dev_qids},
    }
    report = {
        "train_queries": len(queries["train"]),
        "train_queries_duplicating_test_or_dev": len(duplicates),
        "pooled_labels": pool_report.as_dict(),
        "train_queries_used": len(train_qids),
        "train_queries_with_empty_bm25": sum(1 for q in queries["train"] if not bm25["train"].get(q)),
        "train_queries_with_bm25_short_of_window": sum(1 for q in train_qids if len(bm25_train[q]) < BM25_WINDOW),
        "oracle_positives": sum(len(v) for v in oracle.values()),
        "oracle_pool_positives": sum(len(v) for v in oracle_pool.values()),
        "test_queries": len(test_qids),
        "test_queries_with_empty_bm25": sum(1 for q in test_qids if not candidates["test"][q]),
        "dev_queries": len(dev_qids),
    }
    log(
        f"pooled labels: {len(train_qids)} train queries used ({report['train_queries_duplicating_test_or_dev']} "
        f"duplicates of test/dev dropped, {pool_report.queries_without_pooled_positive} without a grade>=2 doc in the "
        f"BM25 top-{POOL_DEPTH}, {pool_report.queries_missing_from_run} with no BM25 hit); test "
        f"{len(test_qids)} queries ({report['test_queries_with_empty_bm25']} with no BM25 hit: they score 0 for "
        f"every reranker); dev {len(dev_qids)}"
    )
    write_json(work / "data_report.json", report)
    dup = set(duplicates)
    all_train_qids = sorted(q for q in queries["train"] if q in full_qrels["train"] and q not in dup)
    return Context(args, collection, docs, queries, full_qrels, candidates, pooled_path, oracle_path, runs,
                   train_qids, all_train_qids, {q: top(bm25["train"].get(q), 100) for q in all_train_qids}, report)


# ---------------------------------------------------------------------------------------------- scoring
def load_model(args: argparse.Namespace, path: str = "minilm", encoder: str | None = None,
               corpus: Mapping[str, str] | None = None):
    """A saved (or the starting) model for scoring; a query-side bi-encoder reads its documents from the cache."""
    from rankface.training.arguments import RerankerTrainingArguments
    from rankface.training.loop import load_text_model

    encoder = encoder or args.encoder
    query_side = encoder == "bi" and args.training_mode == "query_side"
    settings = RerankerTrainingArguments(
        encoder=encoder, model_name_or_path=path, num_layers=args.num_layers,
        max_length=args.max_length, training_mode="query_side" if query_side else "full", cache_dir=args.cache_dir,
    )
    model = load_text_model(settings, corpus if query_side else None)
    import torch

    if torch.cuda.is_available():  # score where training ran (the models are built on the CPU)
        model.to("cuda")
    model.eval()
    return model


def score_splits(model, ctx: Context, splits: Sequence[str], train_run_depth: int = 0) -> dict[str, dict]:
    """Rerank each split's BM25 candidates with `model`: `{split: run}`; with `train_run_depth`, also a dense run
    (`"train_dense"`) of every judged train query over the whole corpus (bi-encoders only).

    A bi-encoder embeds the whole corpus once and every split is scored from those embeddings (the same cosines
    `BiEncoder.predict` computes, without re-encoding a document per split); a cross-encoder scores the pairs.
    """
    from rankface.training.loop import rerank_candidates

    out: dict[str, dict] = {}
    if not hasattr(model, "encode_query"):
        for split in splits:
            out[split] = rerank_candidates(model, ctx.queries[split], ctx.candidates[split], ctx.docs,
                                           ctx.args.eval_batch_size, quiet=True)
        return out
    doc_ids = list(ctx.docs)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    doc_emb = model.encode_document([ctx.docs[d] for d in doc_ids], batch_size=ctx.args.eval_batch_size,
                                    show_progress_bar=False)
    for split in splits:
        qids = list(ctx.candidates[split])
        q_emb = model.encode_query([ctx.queries[split][q] for q in qids], batch_size=ctx.args.eval_batch_size,
                                   show_progress_bar=False)
        run = {}
        for row, q in enumerate(qids):
            cands = list(ctx.candidates[split][q])
            scores = doc_emb[[doc_index[d] for d in cands]] @ q_emb[row] if cands else np.zeros(0)
            run[q] = {d: float(s) for d, s in zip(cands, scores)}
        out[split] = run
    if train_run_depth:
        q_emb = model.encode_query([ctx.queries["train"][q] for q in ctx.all_train_qids],
                                   batch_size=ctx.args.eval_batch_size, show_progress_bar=False)
        sims = q_emb @ doc_emb.T
        out["train_dense"] = {
            q: {doc_ids[j]: float(sims[row, j]) for j in top_k(doc_ids, sims[row], train_run_depth)}
            for row, q in enumerate(ctx.all_train_qids)
        }
    return out


def evaluation_record(run: Mapping, qrels: Mapping) -> dict:
    from rankface.evaluation.ranking import evaluate

    ev = evaluate(run, qrels, measures=MEASURES, rr_min_grade=2)
    return {"aggregate": ev.aggregate, "per_query": ev.per_query, "num_queries": ev.num_queries,
            "missing_queries": ev.missing_queries}


def evaluate_runs(ctx: Context, runs: Mapping[str, Mapping]) -> dict:
    return {
        split: evaluation_record(run, {q: ctx.full_qrels[split][q] for q in ctx.candidates[split]})
        for split, run in runs.items() if split in ("test", "dev")
    }


# ---------------------------------------------------------------------------------------------- results store
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


# ---------------------------------------------------------------------------------------------- systems
def training_arguments(args: argparse.Namespace, ctx: Context, system: str, seed: int, output_dir: Path,
                       temperature: float | None = None, source: dict | None = None, num_negatives: int | None = None):
    from rankface.training.arguments import RerankerTrainingArguments

    method, negatives = SYSTEM_SPECS[system]
    if negatives == "strong":
        run_path, window = args.out / source["run_file"], source["window"]  # relative to the results folder
    elif negatives == "clean-strong":
        run_path, window = args.out / clean_strong_run(ctx, source), source["window"]
    elif negatives == "clean-bm25":
        run_path, window = clean_bm25_run(ctx), BM25_WINDOW
    else:
        run_path, window = ctx.runs[negatives], BM25_WINDOW
    settings = training_settings(args)
    return RerankerTrainingArguments(
        collection=str(args.collection),
        train_split="train",
        # Test and dev are scored here after training, with per-query values; the dev points during training are
        # the learning curve (nothing is selected on them).
        eval_split="dev" if args.eval_steps else None,
        eval_steps=args.eval_steps,
        eval_max_queries=args.dev_max_queries,
        train_qrels=str({"oracle": ctx.oracle_qrels_path, "oracle-pool": ctx.oracle_qrels_path.parent / ORACLE_POOL_QRELS
                         }.get(negatives, ctx.pooled_qrels_path)),
        negatives_run=str(run_path),
        num_negatives=num_negatives or args.num_negatives,
        negatives_from_rank=1,
        negatives_to_rank=window,
        positives="all" if negatives.startswith("oracle") else "top",
        exclude_queries_in=["test", "dev"],
        encoder=args.encoder,
        num_layers=args.num_layers,
        max_length=args.max_length,
        training_mode=args.training_mode,
        freeze_embeddings=args.freeze_embeddings,
        method=method,
        loss=settings["loss"],
        cet_temperature=temperature if temperature is not None else args.cet_temperature,
        cet_weights_from=WEIGHTS_FROM.get(system, args.cet_weights_from),
        cet_selection=SELECTION.get(system, args.cet_selection),
        cet_selection_run=str(ctx.runs["bm25"]) if system in SELECTION_READS_POOL else None,
        cet_normalize_weights=system in NORMALIZED,
        cet_oracle_propensity=ORACLE_PROPENSITY.get(system, 0.9),
        cet_oracle_pool_depth=POOL_DEPTH,
        learning_rate=args.learning_rate,
        head_learning_rate=settings["head_learning_rate"],
        warmup_ratio=settings["warmup_ratio"],
        max_steps=args.steps,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        seed=seed,
        output_dir=str(output_dir),
        overwrite_output_dir=True,  # a system without a saved record is trained afresh, over any interrupted attempt
        cache_dir=args.cache_dir,
        quiet=True,
    )


def diagnose_cet(ctx: Context, targs, relevance, selection_folder: Path) -> dict:
    """What the trained CET pair makes of its own mined negatives: the coupled weights and the selection model's
    propensity, split into known false negatives (full qrels grade >= 1, unseen in training) and the others.

    A query-side CET pair is two two-tower bi-encoders, scored like the training logits (`scale * cosine`)."""
    from rankface.evaluation.cet_diagnostics import cet_diagnostics
    from rankface.retrieval.trec import read_qrels
    from rankface.training.data import prepare_training_data

    groups = prepare_training_data(targs).groups
    pairs = list(dict.fromkeys((g.qid, d) for g in groups for d in g.negative_docids))
    texts = [(ctx.queries["train"][q], ctx.docs[d]) for q, d in pairs]
    rel = relevance.predict(texts, batch_size=64, show_progress_bar=False) * relevance.scale
    if targs.cet_selection == "mlp":
        sel = mlp_selection_logits(selection_folder, targs, pairs)
    elif targs.cet_selection == "oracle_pool":
        sel = oracle_selection_logits(targs, pairs)
    else:
        from rankface.models.cet.selection_head import ProjectedQueryBiEncoder

        selection = load_model(ctx.args, str(selection_folder), corpus=ctx.docs)
        if ProjectedQueryBiEncoder.has_projection(selection_folder):  # cet-indep: the towers plus its own head
            selection = ProjectedQueryBiEncoder.load_projection(selection_folder, selection).eval()
        sel = selection.predict(texts, batch_size=64, show_progress_bar=False) * selection.scale
    report = cet_diagnostics([q for q, _ in pairs], [d for _, d in pairs], rel, sel, targs.cet_temperature,
                             full_qrels=ctx.full_qrels["train"], labelled_qrels=read_qrels(targs.train_qrels))
    return {k: v for k, v in report.items() if k != "top_propensity_unlabelled"} | {
        "top_propensity_unlabelled": report.get("top_propensity_unlabelled", [])[:10]}


def oracle_selection_logits(targs, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The oracle propensity's logits `[P]`: pooled = ranked within the pool depth of the pooling run."""
    import torch

    from rankface.losses.cet import fixed_propensity_logits
    from rankface.models.cet import rank_table
    from rankface.retrieval.trec import read_run

    table = rank_table(read_run(targs.cet_selection_run))
    pooled = torch.tensor([table.get(q, {}).get(d, (math.inf, 0.0))[0] <= targs.cet_oracle_pool_depth
                           for q, d in pairs])
    return fixed_propensity_logits(pooled, targs.cet_oracle_propensity, targs.cet_temperature).numpy()


def mlp_selection_logits(selection_folder: Path, targs, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The MLP selection model's logits `[P]` for (query id, doc id) pairs, from the run it was trained on."""
    import torch

    from rankface.models.cet import RankFeatureSelector, rank_table
    from rankface.retrieval.trec import read_run

    selector = RankFeatureSelector.from_pretrained(selection_folder).eval()
    table = rank_table(read_run(targs.cet_selection_run or targs.negatives_run))
    features = RankFeatureSelector.collate_groups([q for q, _ in pairs], [[d] for _, d in pairs], table)["features"]
    with torch.no_grad():
        return selector(features)[:, 0].numpy()


def run_trained(ctx: Context, store: Store, system: str, seed: int, temperature: float | None = None,
                key: str | None = None, source: dict | None = None, keep_model: bool = False,
                num_negatives: int | None = None) -> dict:
    """Train one system with `rankface.training.train`, score test and dev, save the record."""
    from rankface.training import train

    key = key or system
    done = store.load(key, seed)
    if done is not None:
        return done
    args = ctx.args
    if system in ORACLE_PROPENSITY and args.pool_labels != "judged":
        raise SystemExit(f"{system} needs --pool-labels judged: with one labelled positive per query, 'pooled' does "
                         "not mean 'judged', and a propensity of being pooled is not CET's")
    output_dir = args.out / "models" / f"{key.replace('/', '__')}__seed{seed}"
    targs = training_arguments(args, ctx, system, seed, output_dir, temperature, source, num_negatives)
    log(f"training {key} seed {seed}: {targs.method}, negatives {targs.negatives_run} ranks 1-{targs.negatives_to_rank}"
        f", {args.steps} steps x {args.batch_size} queries x (1 + {targs.num_negatives}) docs, {targs.training_mode}")
    started = time.perf_counter()
    train(targs)
    train_seconds = time.perf_counter() - started
    model = load_model(args, str(output_dir / "model"), corpus=ctx.docs)
    runs = score_splits(model, ctx, ("test", "dev"), train_run_depth=100 if keep_model else 0)
    if "train_dense" in runs:
        from rankface.retrieval.trec import write_run

        write_run(args.out / "data" / f"dense-ft.{key.replace('/', '__')}.seed{seed}.train.top100.trec",
                  runs["train_dense"], tag="dense-ft")
    state = json.loads((output_dir / "trainer_state.json").read_text())
    correlations = correlation_curves(state["log"])
    losses = [e["loss"] for e in state["log"] if "loss" in e]
    weights = [e["weight_mean"] for e in state["log"] if "weight_mean" in e]
    tail = max(1, len(losses) // 5)
    record = {
        **evaluate_runs(ctx, runs),
        "train": {
            "seconds": train_seconds,
            "steps": state["step"],
            "loss_first": statistics.fmean(losses[:tail]) if losses else None,
            "loss_last": statistics.fmean(losses[-tail:]) if losses else None,
            "cet_weight_mean": statistics.fmean(weights) if weights else None,
            "cet_weight_max_batch_mean": max(weights) if weights else None,
            "temperature": targs.cet_temperature if targs.method == "cet" else None,
            "num_negatives": targs.num_negatives,
            "curve": learning_curve(state["log"]),
            **({"cet_correlations": correlations} if correlations else {}),
            "negatives_run": targs.negatives_run,
            "window": [targs.negatives_from_rank, targs.negatives_to_rank],
            "group_report": {k: v for k, v in json.loads((output_dir / "training_groups_report.json").read_text()
                                                         ).items() if k != "examples"},
        },
    }
    if (output_dir / "selection_model").is_dir() or targs.cet_selection == "oracle_pool":
        record["cet_diagnostics"] = diagnose_cet(ctx, targs, model, output_dir / "selection_model")
    if not keep_model:
        shutil.rmtree(output_dir, ignore_errors=True)
    else:
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    record = store.save(key, seed, record)
    log(f"done {key} seed {seed} in {train_seconds:.0f} s train + {time.perf_counter() - started - train_seconds:.0f}"
        f" s eval: test nDCG@10 {record['test']['aggregate']['nDCG@10']:.4f}, dev "
        f"{record['dev']['aggregate']['nDCG@10']:.4f} (loss {record['train']['loss_first']:.3f} -> "
        f"{record['train']['loss_last']:.3f})")
    return record


def learning_curve(log_entries: list[dict], every: int = 25) -> dict:
    """A compact learning curve for the saved record: every dev evaluation, and the loss averaged per `every` steps."""
    evaluations = [[e["step"], e["eval"]["nDCG@10"]] for e in log_entries if "eval" in e]
    losses = [(e["step"], e["loss"]) for e in log_entries if "loss" in e and "eval" not in e]
    buckets: dict[int, list[float]] = {}
    for step, loss in losses:
        buckets.setdefault((step - 1) // every, []).append(loss)
    return {"dev_ndcg10": evaluations,
            "loss": [[(b + 1) * every, round(statistics.fmean(v), 5)] for b, v in sorted(buckets.items())]}


def correlation_curves(log_entries: list[dict], every: int = 50) -> dict:
    """corr(g, f) and corr(w_f, f) over training (CET logs them per step over each batch's negatives): means per
    `every` steps, and the first and last step's values (step 1 is the models before any update)."""
    out = {}
    for key in ("corr_g_f", "corr_wf_f"):
        points = [(e["step"], e[key]) for e in log_entries if key in e]
        if not points:
            continue
        buckets: dict[int, list[float]] = {}
        for step, value in points:
            buckets.setdefault((step - 1) // every, []).append(value)
        out[key] = {"first": points[0][1], "last": points[-1][1], "mean": statistics.fmean(v for _, v in points),
                    "curve": [[(b + 1) * every, round(statistics.fmean(v), 5)] for b, v in sorted(buckets.items())]}
    return out


def run_baseline(ctx: Context, store: Store, system: str) -> dict:
    done = store.load(system, 0)
    if done is not None:
        return done
    started = time.perf_counter()
    if system == "bm25":
        runs = {split: ctx.candidates[split] for split in ("test", "dev")}
    else:  # the zero-shot bi-encoder every trained bi-encoder starts from (same layers and length)
        runs = score_splits(load_model(ctx.args, "minilm", encoder="bi", corpus=ctx.docs), ctx, ("test", "dev"))
    record = store.save(system, 0, {**evaluate_runs(ctx, runs), "seconds": time.perf_counter() - started})
    log(f"done {system}: test nDCG@10 {record['test']['aggregate']['nDCG@10']:.4f}, dev "
        f"{record['dev']['aggregate']['nDCG@10']:.4f}")
    return record


# ---------------------------------------------------------------------------------------------- negative sources
def source_row(ctx: Context, name: str, run: Mapping, window: int, seed: int = 0) -> dict:
    """nDCG@10 of the run against the full qrels and the FN rates of its sampled negatives.

    nDCG@10 is measured on every judged, non-duplicate train query (`ndcg10_train_full_qrels`, the criterion), and
    on the pooled-labelled ones (`ndcg10_pooled_queries`): those were *selected* for having a grade >= 2 doc in the
    BM25 top-10, so BM25 looks better there than it is, and no other run could fairly be compared with it there.
    """
    from rankface.data.ir import build_training_groups
    from rankface.data.mining import false_negative_rate
    from rankface.evaluation.ranking import evaluate
    from rankface.retrieval.trec import read_qrels

    pooled = read_qrels(ctx.pooled_qrels_path)
    queries = {q: ctx.queries["train"][q] for q in ctx.train_qids}
    full = {q: ctx.full_qrels["train"][q] for q in ctx.train_qids}
    all_full = {q: ctx.full_qrels["train"][q] for q in ctx.all_train_qids}
    groups, report = build_training_groups(
        queries, pooled, run, num_negatives=ctx.args.num_negatives, rank_window=(1, window), positives="top",
        seed=seed, doc_ids=ctx.docs.keys(),
    )
    # Every unlabelled doc of the window, not only the K sampled: the rate the sampling converges to.
    window_docs = {}
    for q in ctx.train_qids:
        ranked = list(top(run.get(q), window))
        window_docs[q] = [d for d in ranked if d not in pooled.get(q, {})]
    return {
        "source": name,
        "window": [1, window],
        "ndcg10_train_full_qrels": evaluate({q: run.get(q, {}) for q in ctx.all_train_qids}, all_full,
                                            ["nDCG@10"])["nDCG@10"],
        "ndcg10_pooled_queries": evaluate({q: run.get(q, {}) for q in ctx.train_qids}, full, ["nDCG@10"])["nDCG@10"],
        "fn_rate_grade1": false_negative_rate(groups, full, 1).rate,
        "fn_rate_grade2": false_negative_rate(groups, full, 2).rate,
        "fn_rate_grade1_whole_window": false_negative_rate(window_docs, full, 1).rate,
        "sampled_negatives": sum(len(g.negative_docids) for g in groups),
        "queries_used": report.queries_used,
        "queries_sampled_with_replacement": report.queries_sampled_with_replacement,
        "queries_without_candidates": report.queries_without_candidates,
    }


STRONG_RUN = "data/strong_source.train.run"  # TREC format; not *.trec, which stays git-ignored


def save_strong_run(ctx: Context, run: Mapping, window: int) -> str:
    """Write the strong source's top-`window` of every train query; returns its path relative to the results."""
    from rankface.retrieval.trec import write_run

    write_run(ctx.args.out / STRONG_RUN, {q: top(run.get(q), window) for q in ctx.all_train_qids if run.get(q)},
              tag="strong")
    return STRONG_RUN


CLEAN_STRONG_RUN = "data/clean_strong.train.run"  # committed: it depends on the regenerated dense-ft ranking below
DENSE_FT_DEEP = "data/dense-ft.plain__bm25-neg.seed0.train.top100.trec"
CLEAN_REPORT = "data/clean_negatives.json"


def clean_strong_run(ctx: Context, source: dict) -> str:
    """The strong source with its false negatives replaced (`_r1_ceiling.clean_run`); its path in the results.

    Replacements come from below the strong window, so they need the dense-ft ranking deeper than the saved top-10:
    that ranking (`DENSE_FT_DEEP`, git-ignored) is regenerated by retraining the strong retriever (plain/bm25-neg,
    seed 0, same settings) when it is missing; the share of the saved top-10 it reproduces is saved beside it."""
    from _r1_ceiling import clean_run

    from rankface.retrieval.trec import read_qrels, read_run, write_run

    path = ctx.args.out / CLEAN_STRONG_RUN
    if path.is_file():
        return CLEAN_STRONG_RUN
    if source["name"] != "dense-ft":
        raise SystemExit(f"clean/strong-neg replaces false negatives from the dense-ft ranking; the strong source "
                         f"here is {source['name']}")
    saved = read_run(ctx.args.out / source["run_file"])
    deep = read_run(dense_ft_deep_run(ctx, saved, source["window"]))
    run, counts = clean_run(saved, source["window"], read_qrels(ctx.pooled_qrels_path), ctx.full_qrels["train"],
                            ctx.docs.keys(), deeper=window_then_deeper(saved, source["window"], deep))
    write_run(path, run, tag="clean-strong")
    save_clean_report(ctx, "strong", counts)
    return CLEAN_STRONG_RUN


def window_then_deeper(window_run: Mapping[str, Mapping[str, float]], window: int,
                       deep: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Each query's top-`window` of `window_run` (exactly what plain training read), then `deep`'s other documents
    in `deep`'s order: the ranking the replacements are taken from."""
    out = {}
    for q, scores in window_run.items():
        head = list(top(scores, window))
        tail = [d for d, _ in ranked(deep.get(q, {})) if d not in set(head)]
        out[q] = {d: float(len(head) + len(tail) - i) for i, d in enumerate(head + tail)}
    return out


def clean_bm25_run(ctx: Context) -> Path:
    """BM25's top-50 negatives with the false negatives replaced from its top-100 (`_r1_ceiling.clean_run`)."""
    from _r1_ceiling import clean_run

    from rankface.retrieval.trec import read_qrels, read_run, write_run

    path = ctx.args.out / "data" / "clean_bm25.train.trec"  # derived from BM25 alone: git-ignored, rebuilt at will
    if not path.is_file():
        window_run = read_run(ctx.runs["bm25"])  # exactly what plain/bm25-neg reads
        run, counts = clean_run(window_run, BM25_WINDOW, read_qrels(ctx.pooled_qrels_path), ctx.full_qrels["train"],
                                ctx.docs.keys(), deeper=window_then_deeper(window_run, BM25_WINDOW, ctx.bm25_train))
        write_run(path, run, tag="clean-bm25")
        save_clean_report(ctx, "bm25", counts)
    return path


def save_clean_report(ctx: Context, name: str, counts: dict) -> None:
    path = ctx.args.out / CLEAN_REPORT
    report = json.loads(path.read_text()) if path.is_file() else {}
    report[name] = counts
    write_json(path, report)
    log(f"clean {name} negatives: {counts}")


def dense_ft_deep_run(ctx: Context, saved: Mapping[str, Mapping[str, float]], window: int) -> Path:
    """The strong retriever's top-100 of every train query, regenerated when missing (see `clean_strong_run`)."""
    from rankface.training import train

    path = ctx.args.out / DENSE_FT_DEEP
    if path.is_file():
        return path
    from rankface.retrieval.trec import write_run

    output_dir = ctx.args.out / "models" / "dense-ft-regenerated"
    log("regenerating the strong retriever's top-100 (plain/bm25-neg seed 0, retrained; no record is saved)")
    train(training_arguments(ctx.args, ctx, "plain/bm25-neg", 0, output_dir))
    model = load_model(ctx.args, str(output_dir / "model"), corpus=ctx.docs)
    dense = score_splits(model, ctx, (), train_run_depth=100)["train_dense"]
    write_run(path, dense, tag="dense-ft")
    overlap = [len(set(top(dense.get(q), window)) & set(top(saved[q], window))) / max(1, len(top(saved[q], window)))
               for q in saved]
    write_json(ctx.args.out / "data" / "dense_ft_regenerated.json", {
        "why": "clean/strong-neg needs the strong retriever's ranking below its saved window; the retriever's model "
               "was not kept, so it was retrained with the same settings and seed",
        "saved_window_overlap_mean": statistics.fmean(overlap) if overlap else None,
        "queries": len(overlap)})
    log(f"regenerated dense-ft: mean overlap with the saved top-{window}: {statistics.fmean(overlap):.3f}")
    shutil.rmtree(output_dir, ignore_errors=True)
    return path


def build_strong_source(ctx: Context, store: Store) -> dict:
    """Measure the candidates, choose the `strong` source (criteria above), save the table and the run."""
    from rankface.data.mining import fuse_runs
    from rankface.retrieval.trec import read_run, write_run

    path = ctx.args.out / "data" / "negative_sources.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == store.hash:
            return saved
    if ctx.args.encoder == "cross" or ctx.args.pool_labels != "one":
        return strong_source_from_bi(ctx, store, path)
    retriever = run_trained(ctx, store, "plain/bm25-neg", 0, keep_model=True)
    dense_path = ctx.args.out / "data" / "dense-ft.plain__bm25-neg.seed0.train.top100.trec"
    if not dense_path.is_file():  # the record exists from an earlier run but its dense run was not kept
        model_dir = ctx.args.out / "models" / "plain__bm25-neg__seed0" / "model"
        if not model_dir.is_dir():
            raise SystemExit(f"{dense_path} and {model_dir} are missing: delete {store.path('plain/bm25-neg', 0)} "
                             "to retrain the strong retriever")
        dense = score_splits(load_model(ctx.args, str(model_dir), corpus=ctx.docs), ctx, (),
                             train_run_depth=100)["train_dense"]
        write_run(dense_path, dense, tag="dense-ft")
    dense = read_run(dense_path)
    rrf = fuse_runs([ctx.bm25_train, dense], method="rrf", k=60, depth=100)
    rrf_path = ctx.args.out / "data" / "rrf_bm25_dense-ft.train.top100.trec"
    write_run(rrf_path, rrf, tag="rrf")
    files = {"dense-ft": dense_path, "rrf": rrf_path}
    runs = {"dense-ft": dense, "rrf": rrf}
    rows = [source_row(ctx, "bm25", ctx.bm25_train, BM25_WINDOW)]  # its top-50 is the bm25 negatives run
    for name, window in STRONG_CANDIDATES:
        rows.append({**source_row(ctx, name, runs[name], window), "run_file": str(files[name])})
    base = rows[0]
    for row in rows[1:]:
        row["fn_ratio_to_bm25"] = row["fn_rate_grade1"] / base["fn_rate_grade1"] if base["fn_rate_grade1"] else None
        row["meets_criteria"] = bool(
            row["ndcg10_train_full_qrels"] >= base["ndcg10_train_full_qrels"] + NDCG_MARGIN
            and row["fn_ratio_to_bm25"] is not None and row["fn_ratio_to_bm25"] >= FN_RATIO
        )
    qualified = [r for r in rows[1:] if r["meets_criteria"]]
    if qualified:
        chosen, why = qualified[0], (
            f"first candidate (preference: same 1-50 window as BM25, dense before fusion) with nDCG@10 >= BM25 + "
            f"{NDCG_MARGIN} on the training queries and FN rate >= {FN_RATIO}x BM25's")
    else:
        better = [r for r in rows[1:] if r["ndcg10_train_full_qrels"] > base["ndcg10_train_full_qrels"]]
        pool = better or rows[1:]
        chosen = max(pool, key=lambda r: r["fn_ratio_to_bm25"] or 0.0)
        why = ("NO candidate met both criteria; fallback: the highest FN ratio among those "
               + ("beating BM25" if better else "measured (none beats BM25)"))
    # BM25 at the candidates' narrower windows: separates "a better retriever surfaces more false negatives" from
    # "a narrower window is denser in relevant documents".
    same_window = [source_row(ctx, "bm25", ctx.bm25_train, w) for w in sorted({w for _, w in STRONG_CANDIDATES})
                   if w != BM25_WINDOW]
    result = {
        "fingerprint": store.hash,
        "rows": rows,
        "bm25_same_window": same_window,
        "chosen": {"name": chosen["source"], "window": chosen["window"][1], "run_file": chosen["run_file"],
                   "criteria_met": chosen.get("meets_criteria", False), "why": why},
        "retriever": {"system": "plain/bm25-neg", "seed": 0, "test_ndcg10": retriever["test"]["aggregate"]["nDCG@10"]},
    }
    # The chosen run, cut to its window, is kept beside the results (and committed): a later session on another
    # machine trains the strong-negative systems from it without retraining the retriever.
    result["chosen"]["run_file"] = save_strong_run(ctx, runs[chosen["source"]], chosen["window"][1])
    write_json(path, result)
    log(f"strong source: {chosen['source']} ranks 1-{chosen['window'][1]} ({why})")
    shutil.rmtree(ctx.args.out / "models" / "plain__bm25-neg__seed0", ignore_errors=True)
    return result


def strong_source_from_bi(ctx: Context, store: Store, path: Path) -> dict:
    """The `strong` source R1-bi chose (its fine-tuned bi-encoder's run, kept in its results folder), for the
    cross-encoder R1 and for R1-bi with judged pools. A cross-encoder scores pairs and cannot search the corpus, so it
    cannot be its own retriever; with judged pools the same retriever keeps the comparison to R1-bi's one-label
    pools about the labels alone. The bm25 and chosen rows are re-measured here (the sampled false-negative rate
    depends on this run's K and labels)."""
    from rankface.retrieval.trec import read_run

    source_dir = Path(ctx.args.strong_from) if ctx.args.strong_from else RESULTS / "full-query-side"
    saved_path = source_dir / "data" / "negative_sources.json"
    if not saved_path.is_file():
        raise SystemExit(
            f"{saved_path} is missing: this run takes its strong source from R1-bi. Run first: python "
            f"benchmarks/pooling_bias.py --systems plain/bm25-neg --seeds 0 --sweep '' --k-sweep '' --results-dir "
            f"{source_dir} (or pass --strong-from with an R1-bi results folder)")
    saved = json.loads(saved_path.read_text())
    chosen = saved["chosen"]
    run = read_run(source_dir / chosen["run_file"])
    rows = [source_row(ctx, "bm25", ctx.bm25_train, BM25_WINDOW),
            {**source_row(ctx, chosen["name"], run, chosen["window"]), "run_file": STRONG_RUN}]
    base = rows[0]
    rows[1]["fn_ratio_to_bm25"] = rows[1]["fn_rate_grade1"] / base["fn_rate_grade1"] if base["fn_rate_grade1"] else None
    rows[1]["meets_criteria"] = bool(
        rows[1]["ndcg10_train_full_qrels"] >= base["ndcg10_train_full_qrels"] + NDCG_MARGIN
        and rows[1]["fn_ratio_to_bm25"] is not None and rows[1]["fn_ratio_to_bm25"] >= FN_RATIO)
    result = {
        "fingerprint": store.hash,
        "rows": rows,
        "bm25_same_window": [],
        "chosen": {**chosen, "run_file": save_strong_run(ctx, run, chosen["window"]),
                   "criteria_met": rows[1]["meets_criteria"],
                   "why": f"R1-bi's choice ({source_dir.name}, settings {saved.get('fingerprint')}): {chosen['why']}"},
        "retriever": saved["retriever"],
        "from": {"folder": source_dir.name, "fingerprint": saved.get("fingerprint")},
    }
    write_json(path, result)
    log(f"strong source: R1-bi's {chosen['name']} ranks 1-{chosen['window']} from {source_dir}")
    return result


# ---------------------------------------------------------------------------------------------- report
def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _averaged(records: list[dict], split: str = "test"):
    """An `Evaluation` whose per-query values are the means over `records` (seeds)."""
    from rankface.evaluation.ranking import Evaluation

    per_query = {}
    for m in MEASURES:
        qids = records[0][split]["per_query"][m]
        per_query[m] = {q: statistics.fmean(r[split]["per_query"][m][q] for r in records) for q in qids}
    aggregate = {m: statistics.fmean(v.values()) for m, v in per_query.items()}
    return Evaluation(aggregate=aggregate, per_query=per_query, num_queries=len(per_query[MEASURES[0]]))


def paired(store: Store, a: str, b: str, seeds: Sequence[int], measure: str = "nDCG@10",
           b_seeds: Sequence[int] | None = None) -> dict | None:
    """Paired t-test over test queries of system a vs b, per-query values averaged over their common seeds (or, with
    `b_seeds`, a over its saved `seeds` and b over `b_seeds`: a trained system against a deterministic baseline)."""
    from rankface.evaluation.ranking import paired_ttest

    if b_seeds is None:
        common = [s for s in seeds if store.path(a, s).is_file() and store.path(b, s).is_file()]
        a_seeds = b_seeds = common
    else:
        common = a_seeds = [s for s in seeds if store.path(a, s).is_file()]
        b_seeds = [s for s in b_seeds if store.path(b, s).is_file()]
    if not a_seeds or not b_seeds:
        return None
    ra = _averaged([store.load(a, s) for s in a_seeds])
    rb = _averaged([store.load(b, s) for s in b_seeds])
    t, p = paired_ttest(ra, rb, measure)
    return {"a": a, "b": b, "seeds": common, "delta": ra[measure] - rb[measure], "t": t, "p": p}


def diagnostics_lines(seeds: Sequence[int], store: Store) -> list[str]:
    """CET's view of its own mined negatives, per (system, seed) that recorded it: does the selection model's
    propensity single out the known false negatives, which way does that move their weight, and how close is the
    selection model to the relevance model?"""
    rows = []
    for system in (s for s in ORDER if SYSTEM_SPECS[s][0] == "cet"):
        for seed in seeds:
            rec = store.load(system, seed) if store.path(system, seed).is_file() else None
            diag = (rec or {}).get("cet_diagnostics")
            if not diag:
                continue
            prop, by_label = diag["propensity"], diag["relevance_loss_w_f_by_label"]
            prop_t = diag.get("propensity_T") or {}
            quantiles_t = _propensity_t_quantiles(diag)
            corr = diag.get("correlations") or {}
            during = (rec["train"].get("cet_correlations") or {}).get("corr_g_f")
            rows.append(
                f"| {system} | {seed} | {diag['false_negative_rate']['grade>=1']['rate']:.3f} | "
                f"{prop['auc_false_negatives']:.3f} | {prop['mean_false_negatives']:.3f} | "
                f"{prop['mean_other_negatives']:.3f} | {_cell(prop_t.get('mean_false_negatives'))} | "
                f"{_cell(prop_t.get('mean_other_negatives'))} | "
                + (" / ".join(f"{q:.3f}" for q in quantiles_t) if quantiles_t else "") + " | "
                f"{by_label['false_negatives']:.3f} | {by_label['other_negatives']:.3f} | {_cell(corr.get('g_f'))} | "
                f"{_cell(corr.get('w_f_f'))} | "
                + (f"{during['first']:.3f} -> {during['last']:.3f}" if during else "") + " |")
    if not rows:
        return []
    title = ("CET diagnostics on the mined training negatives (known false negatives = full qrels grade >= 1). "
             "CET's propensity is sigmoid(g/T) (w_f = 1 / (1 - sigmoid(g/T)), the weight on a negative in the "
             "relevance model's loss); sigmoid(g) is shown for continuity with older notes, but with 20 x cosine "
             "logits it saturates near 1. sigmoid(g/T) p05 / p50 / p95 of older records are derived exactly from "
             "their saved sigmoid(g) quantiles (a monotone map); their FN / other means were not saved. corr over "
             "the mined negatives after training; 'during training': the per-batch corr(g, f) at step 1 (before any "
             "update) and at the last step:\n")
    head = ("| system | seed | FN rate | propensity AUC, FN vs other | sigmoid(g) FN | sigmoid(g) other | sigmoid(g/T) FN | "
            "sigmoid(g/T) other | sigmoid(g/T) p05 / p50 / p95 | w_f FN | w_f other | corr(g, f) | corr(w_f, f) | "
            "corr(g, f) during training |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    return [title, head, "\n".join(rows) + "\n"]


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _propensity_t_quantiles(diag: dict) -> list[float]:
    """p05, p50, p95 of sigmoid(g/T): saved (`propensity_T`), or mapped from sigmoid(g)'s quantiles (g = logit)."""
    if diag.get("propensity_T", {}).get("quantiles"):
        q = diag["propensity_T"]["quantiles"]
        return [q["p05"], q["p50"], q["p95"]]
    q = diag.get("propensity", {}).get("quantiles")
    if not q:
        return []
    temperature = diag["temperature"]

    def mapped(p: float) -> float:
        p = min(max(p, 1e-15), 1 - 1e-15)
        return 1 / (1 + math.exp(-math.log(p / (1 - p)) / temperature))

    return [mapped(q[k]) for k in ("p05", "p50", "p95")]


def report(args: argparse.Namespace, store: Store) -> str:
    """The R1 tables and RESULT line from every saved record (every saved seed, whatever `--seeds` says)."""
    lines = []
    settings = store.settings
    seed_list = store.saved_seeds() or args.seed_list
    lines.append(
        f"## R1 pooling bias ({args.encoder}-encoder, mode {args.mode})\n\n"
        f"Settings: MiniLM-L6 weights, layers {settings['num_layers'] or 6}, max length {settings['max_length']}, "
        f"K = {settings['num_negatives']}, batch {settings['batch_size']} queries, {settings['steps']} steps, "
        f"lr {settings['learning_rate']}, training mode {settings['training_mode']}"
        f"{', mixed precision ' + settings['mixed_precision'] if settings.get('mixed_precision') else ''}"
        f"{' (token embeddings frozen)' if settings['freeze_embeddings'] else ''}, pairwise loss, CET T = "
        f"{args.cet_temperature} "
        f"({settings['cet_weights_from']}, selection {settings['cet_selection']}); pooled labels from BM25 "
        f"top-{POOL_DEPTH} ({'every pooled doc judged' if settings.get('pool_labels') == 'judged' else 'one positive'}"
        f" per query); test = BM25 top-100 of the test queries reranked.\n"
    )
    data_report = args.out / "data" / "data_report.json"
    if data_report.is_file():
        d = json.loads(data_report.read_text())
        lines.append(
            f"Train queries used {d['train_queries_used']} (of {d['train_queries']}; "
            f"{d['train_queries_duplicating_test_or_dev']} duplicates of test/dev dropped, "
            f"{d['pooled_labels']['queries_without_pooled_positive']} without a grade >= 2 doc in the BM25 top-10, "
            f"{d['train_queries_with_empty_bm25']} with no BM25 hit); test queries {d['test_queries']} "
            f"({d['test_queries_with_empty_bm25']} with no BM25 hit, scored 0 by every system).\n"
        )
    header = "| system | seeds | nDCG@10 | RR@10 (grade>=2) | R@100 | dev nDCG@10 |"
    rows = [header, "|---|---:|---:|---:|---:|---:|"]
    means: dict[str, float] = {}
    for system in (*BASELINES, *TRAINED, *EXTRA):
        seeds = [0] if system in BASELINES else seed_list
        recs = [store.load(system, s) for s in seeds if store.path(system, s).is_file()]
        if not recs:
            rows.append(f"| {system} | 0 | (not run yet) | | | |")
            continue
        cells = []
        for m in MEASURES:
            mu, sd = _mean_std([r["test"]["aggregate"][m] for r in recs])
            cells.append(f"{mu:.4f} ± {sd:.4f}" if len(recs) > 1 else f"{mu:.4f}")
            if m == "nDCG@10":
                means[system] = mu
        dev_mu, _ = _mean_std([r["dev"]["aggregate"]["nDCG@10"] for r in recs])
        rows.append(f"| {system} | {len(recs)} | " + " | ".join(cells) + f" | {dev_mu:.4f} |")
    lines.append("\n".join(rows) + "\n")

    tests = {}
    for x in ("strong", "bm25", "mlp", "norm", "tl"):
        cet, plain = ((f"cet-{x}/strong-neg", "plain/strong-neg") if x in ("mlp", "norm", "tl")
                      else (f"cet/{x}-neg", f"plain/{x}-neg"))
        res = paired(store, cet, plain, seed_list)
        tests[x] = res
        if res:
            lines.append(f"- paired t-test over test queries, {cet} vs {plain} (seeds {res['seeds']}): "
                         f"Δ nDCG@10 = {res['delta']:+.4f}, t = {res['t']:.2f}, p = {res['p']:.3g}")
    for a, b in (("plain/strong-neg", "plain/bm25-neg"), ("plain/bm25-neg", "dense"), ("oracle", "plain/bm25-neg"),
                 ("cet-tl/strong-neg", "cet/strong-neg"), ("cet/strong-neg", "plain/bm25-neg")):
        res = paired(store, a, b, seed_list, b_seeds=[0] if b == "dense" else None)
        if res:
            lines.append(f"- {a} vs {b} (seeds {res['seeds']}): Δ nDCG@10 = {res['delta']:+.4f}, p = {res['p']:.3g}")
    gate = paired(store, "plain/bm25-neg", "dense", seed_list, b_seeds=[0])
    if gate:
        passed = gate["delta"] > 0 and gate["p"] < 0.05
        lines.append(f"- **learning gate** (plain/bm25-neg beats the zero-shot encoder on test, p < 0.05): "
                     f"{'PASSED' if passed else 'NOT PASSED'}: Δ nDCG@10 = {gate['delta']:+.4f}, p = {gate['p']:.3g} "
                     f"(seeds {gate['seeds']})" + ("" if passed else "; the method comparison below cannot be read as "
                                                    "evidence at this budget"))
    res = paired(store, "plain/bm25-neg", "bm25", [0])
    if res and store.path("plain/bm25-neg", 0).is_file():
        dev_plain = store.load("plain/bm25-neg", 0)["dev"]["aggregate"]["nDCG@10"]
        dev_bm25 = store.load("bm25", 0)["dev"]["aggregate"]["nDCG@10"]
        lines.append(f"- learnability check on dev: plain/bm25-neg seed 0 nDCG@10 {dev_plain:.4f} vs BM25 "
                     f"{dev_bm25:.4f}")
    lines.append("")

    fn = {}
    sources = args.out / "data" / "negative_sources.json"
    if sources.is_file():
        src = json.loads(sources.read_text())
        table = [("| negative source | window | nDCG@10 train (full qrels) | nDCG@10 pooled queries | FN rate grade>=1 | "
                  "FN rate grade>=2 | FN grade>=1, whole window | ratio to BM25 | meets criteria |"),
                 "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in src["rows"]:
            ratio = r.get("fn_ratio_to_bm25")
            table.append(
                f"| {r['source']} | {r['window'][0]}-{r['window'][1]} | {r['ndcg10_train_full_qrels']:.4f} | "
                f"{r.get('ndcg10_pooled_queries', math.nan):.4f} | "
                f"{r['fn_rate_grade1']:.3f} | {r['fn_rate_grade2']:.3f} | {r['fn_rate_grade1_whole_window']:.3f} | "
                f"{'' if ratio is None else f'{ratio:.2f}'} | {r.get('meets_criteria', '')} |"
            )
        for r in src.get("bm25_same_window", []):
            table.append(
                f"| bm25 (reference) | {r['window'][0]}-{r['window'][1]} | {r['ndcg10_train_full_qrels']:.4f} | "
                f"{r['ndcg10_pooled_queries']:.4f} | {r['fn_rate_grade1']:.3f} | {r['fn_rate_grade2']:.3f} | "
                f"{r['fn_rate_grade1_whole_window']:.3f} | | |"
            )
        chosen = src["chosen"]
        lines.append("\n".join(table))
        lines.append(f"\n`strong` = {chosen['name']} ranks 1-{chosen['window']}: {chosen['why']}. dense-ft = the "
                     f"plain/bm25-neg seed-0 bi-encoder (test nDCG@10 {src['retriever']['test_ndcg10']:.4f}) over the "
                     "whole corpus; rrf = RRF (k 60) of BM25 top-100 and dense-ft top-100.\n")
        fn["bm25"] = src["rows"][0]["fn_rate_grade1"]
        fn["strong"] = next(r["fn_rate_grade1"] for r in src["rows"][1:]
                            if r["source"] == chosen["name"] and r["window"][1] == chosen["window"])
        lines += window_lines(src)

    sweep_rows = []
    for t in sorted({*args.sweep_list, *saved_sweep_values(store, "T")}):
        key = sweep_key(args, t)
        if store.path(key, 0).is_file():
            rec = store.load(key, 0)
            sweep_rows.append(f"| {t:g} | {rec['dev']['aggregate']['nDCG@10']:.4f} | "
                              f"{rec['dev']['aggregate']['RR@10']:.4f} | {rec['train']['cet_weight_mean']:.3f} | "
                              f"{rec['train']['cet_weight_max_batch_mean']:.3g} |")
    if sweep_rows:
        plain_dev = store.load("plain/strong-neg", 0) if store.path("plain/strong-neg", 0).is_file() else None
        lines.append("CET temperature sweep (cet/strong-neg, seed 0, dev split"
                     + (f"; plain/strong-neg dev nDCG@10 {plain_dev['dev']['aggregate']['nDCG@10']:.4f}"
                        if plain_dev else "") + "):\n")
        lines.append("| T | dev nDCG@10 | dev RR@10 | mean CET weight | max batch-mean weight |\n|---:|---:|---:|---:|---:|")
        lines.append("\n".join(sweep_rows) + "\n")

    k_rows = []
    for k in sorted({*args.k_sweep_list, *map(int, saved_sweep_values(store, "K"))}):
        if store.path(k_sweep_key(k), 0).is_file():
            rec = store.load(k_sweep_key(k), 0)
            k_rows.append(f"| {k} | {rec['dev']['aggregate']['nDCG@10']:.4f} | {rec['dev']['aggregate']['RR@10']:.4f} |")
    if k_rows and store.path("cet/strong-neg", 0).is_file():
        main_dev = store.load("cet/strong-neg", 0)["dev"]["aggregate"]
        lines.append(f"CET negatives-per-query sweep (cet/strong-neg, T = {args.cet_temperature:g}, seed 0, dev split):\n")
        lines.append("| K | dev nDCG@10 | dev RR@10 |\n|---:|---:|---:|")
        lines.append(f"| {args.num_negatives} (main) | {main_dev['nDCG@10']:.4f} | {main_dev['RR@10']:.4f} |")
        lines.append("\n".join(k_rows) + "\n")
    lines += diagnostics_lines(seed_list, store)
    ceiling = ceiling_lines(store, seed_list)
    lines += ceiling["lines"]
    lines += oracle_propensity_lines(store, seed_list)
    curves = plot_curves(args, store)
    if curves:
        lines.append(f"Learning curves (dev nDCG@10 and training loss against step): `{curves}`\n")

    complete = [s for s in seed_list if all(store.path(x, s).is_file() for x in DECIDING)]
    strong_test = tests.get("strong")

    def fmt(v: float | None) -> str:
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"

    result = {
        "bm25_ndcg10": fmt(means.get("bm25")),
        "dense_ndcg10": fmt(means.get("dense")),
        "plain_bm25_ndcg10": fmt(means.get("plain/bm25-neg")),
        "plain_strong_ndcg10": fmt(means.get("plain/strong-neg")),
        "cet_strong_ndcg10": fmt(means.get("cet/strong-neg")),
        "cet_bm25_ndcg10": fmt(means.get("cet/bm25-neg")),
        "oracle_ndcg10": fmt(means.get("oracle")),
        "p_cet_vs_plain_strong": "nan" if not strong_test else f"{strong_test['p']:.3g}",
        "p_plain_vs_dense": "nan" if not gate else f"{gate['p']:.3g}",
        "fn_rate_bm25": fmt(fn.get("bm25")),
        "fn_rate_strong": fmt(fn.get("strong")),
        "clean_strong_ndcg10": fmt(means.get("clean/strong-neg")),
        **ceiling["result"],
        "steps": settings["steps"],
        "training": settings["training_mode"],
        "encoder": args.encoder,
        "seeds": len(complete),
        "mode": args.mode,
    }
    lines.append("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return "\n".join(lines)


def window_lines(src: dict) -> list[str]:
    """The strong retriever against BM25 on the same windows (1-10 and 1-50): is the strong source's higher
    false-negative rate the retriever's, or the narrower window's? Counts only, from `negative_sources.json`."""
    rows = {(r["source"], r["window"][1]): r for r in (*src["rows"], *src.get("bm25_same_window", []))}
    table = []
    for window in (10, 50):
        cells = []
        for name in ("dense-ft", "bm25"):
            r = rows.get((name, window))
            cells.append("" if r is None else f"{r['fn_rate_grade1']:.3f} ({r['fn_rate_grade1_whole_window']:.3f})")
        if any(cells):
            table.append(f"| 1-{window} | " + " | ".join(cells) + " |")
    if not table:
        return []
    return [("Same windows, two retrievers: false-negative rate (grade >= 1) of the sampled negatives (of the whole "
            "window). dense-ft = the strong retriever:\n"),
            "| window | dense-ft | BM25 |\n|---|---:|---:|", "\n".join(table) + "\n"]


def saved_sweep_values(store: Store, kind: str) -> list[float]:
    """The T (kind "T") or K ("K") values of the saved seed-0 sweep records of cet/strong-neg."""
    values = []
    for path in store.out.glob(f"sweep__cet-strong-neg-{kind}*__seed0.json"):
        text = path.name[len(f"sweep__cet-strong-neg-{kind}"):-len("__seed0.json")]
        try:
            values.append(float(text))
        except ValueError:
            continue
    return values


SHARE_SYSTEMS = {  # the ceiling of each negative source, and the systems reported as a share of it
    "strong": ("plain/strong-neg", "clean/strong-neg",
               ("cet/strong-neg", "cet-indep/strong-neg", "cet-mlp/strong-neg", "cet-norm/strong-neg",
                "cet-tl/strong-neg")),
    "bm25": ("plain/bm25-neg", "clean/bm25-neg", ("cet/bm25-neg", "cet-indep/bm25-neg")),
}


def oracle_propensity_lines(store: Store, seeds: Sequence[int]) -> list[str]:
    """The oracle-propensity sweep (judged pools): CET's weighting with the right propensity, against plain."""
    rows = []
    for system, p in ORACLE_PROPENSITY.items():
        saved = [s for s in seeds if store.path(system, s).is_file()]
        if not saved:
            continue
        recs = [store.load(system, s) for s in saved]
        test = statistics.fmean(r["test"]["aggregate"]["nDCG@10"] for r in recs)
        res = paired(store, system, "plain/strong-neg", saved)
        by_label = [r.get("cet_diagnostics", {}).get("relevance_loss_w_f_by_label") or {} for r in recs]
        fn = [b["false_negatives"] for b in by_label if b.get("false_negatives") is not None]
        other = [b["other_negatives"] for b in by_label if b.get("other_negatives") is not None]
        rows.append(f"| {p:g} | {saved} | {1 / (1 - p):.2f} / {1 / p:.2f} | "
                    f"{statistics.fmean(fn) if fn else math.nan:.2f} / {statistics.fmean(other) if other else math.nan:.2f}"
                    f" | {test:.4f} | " + (f"{res['delta']:+.4f} (p = {res['p']:.3g})" if res else "") + " |")
    if not rows:
        return []
    return [("cet-oracle-propensity (judged pools; no selection model: p for documents of the BM25 top-10 pool, "
             "1 - p outside it, w_f = 1 / (1 - p) as in CET): the bound of CET's weighting form when the propensity "
             "is right:\n"),
            ("| p | seeds | w_f pooled / not pooled | w_f FN / other (mined negatives) | test nDCG@10 | vs plain/strong-neg |"
            "\n|---:|---|---|---|---:|---|"), "\n".join(rows) + "\n"]


def ceiling_lines(store: Store, seeds: Sequence[int]) -> dict:
    """The ceiling A = clean - plain per negative source, and each CET system's share of it (plain 0, clean 1), on
    the seeds every system of the comparison has saved; bootstrap over queries and seeds (`_r1_ceiling`)."""
    from _r1_ceiling import per_query_matrix, share_of_ceiling

    rows, result = [], {"ceiling_strong": "nan", "share_cet_strong": "nan", "share_cet_indep_strong": "nan",
                        "p_share_cet": "nan", "p_share_cet_indep": "nan"}
    for source, (plain, clean, systems) in SHARE_SYSTEMS.items():
        base = [s for s in seeds if store.path(plain, s).is_file() and store.path(clean, s).is_file()]
        if not base:
            continue
        qids, plain_m = per_query_matrix([store.load(plain, s) for s in base])
        _, clean_m = per_query_matrix([store.load(clean, s) for s in base])
        a = share_of_ceiling(plain_m, clean_m)
        rows.append(f"| {clean} - {plain} (the ceiling A) | {base} | {a['ceiling']:+.4f} "
                    f"[{a['ceiling_ci'][0]:+.4f}, {a['ceiling_ci'][1]:+.4f}] | {a['p_ceiling']:.3g} | 1 | |")
        if source == "strong":
            result["ceiling_strong"] = f"{a['ceiling']:.4f}"
        for system in systems:
            common = [s for s in base if store.path(system, s).is_file()]
            if not common:
                continue
            pick = [base.index(s) for s in common]
            sys_qids, sys_m = per_query_matrix([store.load(system, s) for s in common])
            if sys_qids != qids:
                raise SystemExit(f"{system}: its test queries differ from {plain}'s")
            out = share_of_ceiling(plain_m[pick], clean_m[pick], sys_m)
            rows.append(f"| {system} - {plain} | {common} | {out['gain']:+.4f} | {out['p_share']:.3g} | "
                        f"{out['share']:.2f} [{out['share_ci'][0]:.2f}, {out['share_ci'][1]:.2f}] | "
                        f"A on these seeds {out['ceiling']:+.4f} |")
            if source == "strong" and system in ("cet/strong-neg", "cet-indep/strong-neg"):
                name = "cet" if system == "cet/strong-neg" else "cet_indep"
                result[f"share_{name}_strong"] = f"{out['share']:.3f}"
                result[f"p_share_{name}"] = f"{out['p_share']:.3g}"
    if not rows:
        return {"lines": [], "result": result}
    clean_report = store.out / CLEAN_REPORT
    counts = json.loads(clean_report.read_text()) if clean_report.is_file() else {}
    note = "; ".join(f"{k}: {v['false_negatives_replaced']} false negatives replaced in {v['queries']} queries "
                     f"({v['false_negatives_without_replacement']} without a replacement, dropped)"
                     for k, v in counts.items())
    lines = ["Ceiling: `clean/X-neg` trains on X's negatives with every one the full train qrels grade >= 1 replaced "
             "in place by the next candidate below the window that they do not grade relevant (same seed: the same "
             "groups otherwise)" + (f" ({note})" if note else "") + ". A = clean - plain; each system's share of A "
             "(plain = 0, clean = 1), with 95 % bootstrap intervals (queries and seeds resampled together) and the "
             "two-sided bootstrap p against 0 (of A, or of the system's gain over plain):\n",
             "| comparison | seeds | Δ test nDCG@10 | p | share of A | |\n|---|---|---:|---:|---|---|",
             "\n".join(rows) + "\n"]
    return {"lines": lines, "result": result}


def sweep_key(args: argparse.Namespace, t: float) -> str:
    return "cet/strong-neg" if t == args.cet_temperature else f"sweep/cet-strong-neg-T{t:g}"


def k_sweep_key(k: int) -> str:
    return f"sweep/cet-strong-neg-K{k}"


CURVE_SYSTEMS = ("plain/bm25-neg", "plain/strong-neg", "cet/strong-neg", "cet/bm25-neg")


def plot_curves(args: argparse.Namespace, store: Store) -> str | None:
    """learning_curves.png: dev nDCG@10 and training loss against step of the deciding systems (seed 0)."""
    from rankface.training.curves import plot_learning_curve

    logs = {}
    for system in CURVE_SYSTEMS:
        if store.path(system, 0).is_file():
            curve = store.load(system, 0)["train"].get("curve") or {}
            logs[system] = ([{"step": s, "eval": {"nDCG@10": v}} for s, v in curve.get("dev_ndcg10", [])]
                            + [{"step": s, "loss": v} for s, v in curve.get("loss", [])])
    if not any(logs.values()):
        return None
    path = args.out / "learning_curves.png"
    plot_learning_curve(logs, path, eval_label="dev", smooth=4,
                        title=f"R1 {args.encoder}-encoder, {store.settings['training_mode']}, seed 0 "
                              "(loss points are 25-step means)")
    return str(path.relative_to(Path(__file__).resolve().parent.parent)) if path.is_relative_to(
        Path(__file__).resolve().parent.parent) else str(path)


# ---------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    store = Store(args.out, training_settings(args))
    if not args.report_only:
        started = time.perf_counter()
        log(f"R1 {args.mode}: results in {args.out} (settings {store.hash}: {store.settings})")
        ctx = prepare_context(args)
        for system in BASELINES:
            run_baseline(ctx, store, system)
        source = build_strong_source(ctx, store)["chosen"]
        deciding = [s for s in args.systems if s in DECIDING]
        # The deciding systems over every seed first, then CET's T and K sweeps on dev (seed 0), then the rest
        # (seed 0 only): a run cut short answers the main question first.
        for seed in args.seed_list:
            for system in deciding:
                run_trained(ctx, store, system, seed, source=source)
        for t in args.sweep_list:
            run_trained(ctx, store, "cet/strong-neg", 0, temperature=t, key=sweep_key(args, t), source=source)
        for k in args.k_sweep_list:
            run_trained(ctx, store, "cet/strong-neg", 0, key=k_sweep_key(k), source=source, num_negatives=k)
        for system in args.systems:
            if system in DECIDING:
                continue
            # The ceiling and cet-indep: every seed, one system after the other (in --systems order); the rest of
            # the investigation rows: the first seed.
            for seed in args.seed_list if system in SEEDED else args.seed_list[:1]:
                run_trained(ctx, store, system, seed, source=source)
        log(f"all done in {time.perf_counter() - started:.0f} s")
    text = report(args, store)
    with atomic_write(args.out / "report.md") as handle:
        handle.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
