"""R1's systems (../shared/docs/benchmarks.md, R1): one entry each, in training order within a seed.

A new system is one `System(...)` line here: its method, its negatives, its CET options and whether it trains for
every seed. The runs (`_r1_runs.training_arguments`) and the report (`_r1_report`) read everything from this table.
A sibling module of `pooling_bias.py` (the script's folder is on `sys.path`).
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINES = ("bm25", "dense")  # not trained: BM25's candidates, and the zero-shot bi-encoder every system starts from


@dataclass(frozen=True)
class System:
    """One trained system of R1.

    Attributes:
        name: `method/negatives-neg` (or `oracle`, `oracle-pool`); the results file is named after it.
        method: `plain` or `cet` (rankface's training method).
        negatives: the negatives' source: `bm25`, `strong`, `clean-bm25`, `clean-strong` (the false negatives
            replaced, `_r1_ceiling`), `oracle` or `oracle-pool`.
        role: `deciding` (the paper's direction: every seed, before anything else), `protocol` (R1's other named
            systems) or `investigation`.
        seeded: trained for every seed of `--seeds` (the deciding ones always are); otherwise the first seed only.
        selection: overrides `--cet-selection` (`same`, `indep`, `mlp`, `oracle_pool`).
        selection_reads_pool: the selection model reads the pooling system's run (BM25's), not the negatives'.
        normalize_weights: CET weights rescaled to mean 1 per batch.
        weights_from: overrides `--cet-weights-from`.
        oracle_propensity: `p` of CET's oracle propensity (selection `oracle_pool`); judged pools only.
    """

    name: str
    method: str
    negatives: str
    role: str = "investigation"
    seeded: bool = False
    selection: str | None = None
    selection_reads_pool: bool = False
    normalize_weights: bool = False
    weights_from: str | None = None
    oracle_propensity: float | None = None

    @property
    def needs_judged_pools(self) -> bool:
        """With one labelled positive per query "pooled" does not mean "judged": a pool propensity is not CET's."""
        return self.oracle_propensity is not None


SYSTEMS = (
    # The paper's direction, first within each seed, so that a partial run on a busy machine answers it first.
    System("plain/bm25-neg", "plain", "bm25", role="deciding"),
    System("plain/strong-neg", "plain", "strong", role="deciding"),
    System("cet/strong-neg", "cet", "strong", role="deciding"),
    # CET with its weights rescaled to mean 1 per batch. AdamW is invariant to a constant loss scale (scaling the
    # loss by 2.6 or by 5,600 moves the parameters by at most 2.5e-5 after 50 steps without clipping), so this should
    # equal cet; what can differ is the weights' batch-to-batch spread and gradient clipping (max_grad_norm 1.0).
    System("cet-norm/strong-neg", "cet", "strong", normalize_weights=True),
    # CET with weights from the detached training logits (protocol R3's cheap mode: its quality against eval_forward's).
    System("cet-tl/strong-neg", "cet", "strong", weights_from="train_logits"),
    System("cet/bm25-neg", "cet", "bm25", role="deciding"),
    # Every grade >= 2 train doc a positive; negatives from BM25 top-50 docs without any judgment.
    System("oracle", "plain", "oracle", role="protocol"),
    # CET's light selection model (an MLP on first-stage rank and score). With dual encoders the `same` selection
    # model starts as an exact copy of the relevance model, so its "propensity" is the relevance model's own score;
    # the MLP breaks that symmetry. It reads the run that built the pool (BM25 top-50; its top-10 was judged).
    System("cet-mlp/strong-neg", "cet", "strong", selection="mlp", selection_reads_pool=True),
    # The oracle with only the grade >= 2 docs inside the BM25 top-100 as positives (NFCorpus queries have ~56 grade
    # >= 2 train docs, most far from the query's wording).
    System("oracle-pool", "plain", "oracle-pool"),
    # The ceiling (`_r1_ceiling`): plain training on the same negatives with the false negatives replaced.
    System("clean/strong-neg", "plain", "clean-strong", seeded=True),
    # CET whose selection tower has its own separately seeded random query head (g != f at step 0, as the authors').
    System("cet-indep/strong-neg", "cet", "strong", seeded=True, selection="indep"),
    System("clean/bm25-neg", "plain", "clean-bm25", seeded=True),
    System("cet-indep/bm25-neg", "cet", "bm25", seeded=True, selection="indep"),
    # The bound of CET's weighting form when the propensity is right (judged pools): p for the BM25 top-10 pool,
    # 1 - p outside it, w_f = 1 / (1 - p); no selection model.
    *(System(f"cet-oracle-propensity-p{p:g}/strong-neg", "cet", "strong", selection="oracle_pool",
             selection_reads_pool=True, oracle_propensity=p) for p in (0.6, 0.9, 0.99)),
)

BY_NAME = {s.name: s for s in SYSTEMS}
ORDER = tuple(s.name for s in SYSTEMS)  # training order within a seed
DECIDING = tuple(s.name for s in SYSTEMS if s.role == "deciding")
TRAINED = tuple(s.name for s in SYSTEMS if s.role in ("deciding", "protocol"))  # R1's named trained systems
EXTRA = tuple(s.name for s in SYSTEMS if s.role == "investigation")
SEEDED = tuple(s.name for s in SYSTEMS if s.seeded or s.role == "deciding")
ORACLE_PROPENSITY = {s.name: s.oracle_propensity for s in SYSTEMS if s.oracle_propensity is not None}
