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

The protocol reads top to bottom in its sibling modules (this script keeps the command line and re-exports their
names): `_r1_settings.py` (constants, arguments, the fingerprint, the results store), `_r1_systems.py` (every trained
system, one `System` entry each: adding a system is one line there), `_r1_sources.py` (pooled labels, the negative
sources and their clean versions), `_r1_ceiling.py` (the clean-run construction and the share-of-ceiling bootstrap),
`_r1_runs.py` (train, score, diagnose, save one (system, seed)) and `_r1_report.py` (tables and RESULT line).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

# R1 reads top to bottom in its sibling modules: settings and the results store, the systems (one entry each), the
# pools and negative sources, the runs, the report. The names are re-exported here for callers of this script.
from _r1_report import ceiling_lines, oracle_propensity_lines, paired, plot_curves, report
from _r1_runs import (
    diagnose_cet,
    k_sweep_key,
    load_model,
    mlp_selection_logits,
    oracle_selection_logits,
    run_baseline,
    run_trained,
    score_splits,
    sweep_key,
    training_arguments,
)
from _r1_settings import (
    BM25_WINDOW,
    MEASURES,
    POOL_DEPTH,
    RESULTS,
    Store,
    collection_label,
    fingerprint,
    log,
    parse_args,
    training_settings,
)
from _r1_sources import (
    Context,
    build_strong_source,
    clean_bm25_run,
    clean_strong_run,
    judged_pool_labels,
    prepare_context,
    source_row,
    top,
)
from _r1_systems import (
    BASELINES,
    BY_NAME,
    DECIDING,
    EXTRA,
    ORACLE_PROPENSITY,
    ORDER,
    SEEDED,
    SYSTEMS,
    TRAINED,
    System,
)

from rankface.utils.io import atomic_write, write_json

__all__ = [
    "BASELINES", "BM25_WINDOW", "BY_NAME", "DECIDING", "EXTRA", "MEASURES", "ORACLE_PROPENSITY", "ORDER", "POOL_DEPTH",
    "RESULTS", "SEEDED", "SYSTEMS", "TRAINED", "Context", "Store", "System", "build_strong_source", "ceiling_lines",
    "clean_bm25_run", "clean_strong_run", "collection_label", "diagnose_cet", "fingerprint", "judged_pool_labels",
    "k_sweep_key", "load_model", "log", "main", "mlp_selection_logits", "oracle_propensity_lines",
    "oracle_selection_logits", "paired", "parse_args", "plot_curves", "prepare_context", "report", "run_baseline",
    "run_trained", "score_splits", "source_row", "sweep_key", "top", "training_arguments", "training_settings",
    "write_json",
]


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
