"""Where R1's false negatives lie: inside the judged pool (BM25 top-10) or outside it.

R1 labels one positive per query, so a relevant document inside the pool stays unlabelled; CET's model (y = r * s)
assumes it would be labelled. This splits the unlabelled documents of the strong source's window (the negatives R1
samples from) by pool membership and relevance (full train qrels, grade >= 1), from the files an R1-bi run leaves in
its results folder (`data/`: the strong run, the BM25 top-50 run, the pooled labels).

    python benchmarks/pool_false_negatives.py      # benchmarks/results/pooling_bias/full-query-side
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from rankface.utils.ties import ranked

RESULTS = Path(__file__).resolve().parent / "results" / "pooling_bias" / "full-query-side"


def split_counts(strong: Mapping, pool_run: Mapping, pooled: Mapping, full: Mapping, window: int = 10,
                 pool_depth: int = 10) -> dict[tuple[bool, bool], int]:
    """`{(relevant, in_pool): count}` over the unlabelled documents of each pooled query's top-`window` strong run."""
    counts = {(r, p): 0 for r in (False, True) for p in (False, True)}
    for qid, labels in pooled.items():
        pool = {d for d, _ in ranked(pool_run.get(qid, {}))[:pool_depth]}
        for doc, _ in ranked(strong.get(qid, {}))[:window]:
            if doc not in labels:
                counts[(full.get(qid, {}).get(doc, 0) >= 1, doc in pool)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    from rankface.data.ir import load_collection
    from rankface.paths import shared_dir
    from rankface.retrieval.trec import read_qrels, read_run

    data = args.results_dir / "data"
    counts = split_counts(read_run(data / "strong_source.train.run"), read_run(data / "bm25.train.top50.trec"),
                          read_qrels(data / "pooled_qrels.train.txt"),
                          load_collection(shared_dir() / "data" / "ir" / "nfcorpus").qrels("train"))
    fn_in, fn_out = counts[(True, True)], counts[(True, False)]
    rate_in = fn_in / max(1, fn_in + counts[(False, True)])
    rate_out = fn_out / max(1, fn_out + counts[(False, False)])
    print("| unlabelled strong-window docs | in the pool (BM25 top 10) | outside |\n|---|---:|---:|")
    print(f"| relevant (false negatives) | {fn_in} | {fn_out} |\n| not relevant | {counts[(False, True)]} | "
          f"{counts[(False, False)]} |")
    print(f"RESULT fn_share_in_pool={fn_in / max(1, fn_in + fn_out):.3f} fn_rate_in_pool={rate_in:.3f} "
          f"fn_rate_outside_pool={rate_out:.3f}")


if __name__ == "__main__":
    main()
