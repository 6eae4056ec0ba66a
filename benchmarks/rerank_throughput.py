"""Protocol R2 (../shared/docs/benchmarks.md): rerank throughput of rankface against sentence-transformers.

The same MiniLM-L6 reranker checkpoint and the same NFCorpus BM25 top-100 (query, document) pairs are scored, in
one process with one thread count, by:

- `st-fp32`: `sentence_transformers.CrossEncoder(folder).predict` (its defaults: fp32, raw logits requested);
- `rankface-fp32`: `rankface CrossEncoder.predict(precision="fp32")`;
- `rankface-bf16`: `precision="bf16"` (a cached bf16 copy of the weights). On a CPU without native bf16 it is
  emulated and about 5-50x slower, so it is timed on a strided sample of `--bf16-sample` pairs only (no nDCG);
- `rankface-int8`: `precision="int8"` (dynamic int8 quantization of the linear layers, FBGEMM kernels);
- `rankface-onnx`, `rankface-onnx-opt`, `rankface-onnx-int8`: `predict(backend=...)`, ONNX Runtime graphs made by
  rankface (`rankface.inference`: plain export; ONNX Runtime's transformer fusions; dynamic int8 with the
  quantisation config of the CPU class, `avx2` under the AVX2 caps);
- `rankface-openvino`, `rankface-openvino-int8`: `predict(backend=...)` on OpenVINO (rankface's ONNX graph read by
  OpenVINO at its default precision, bf16 where native; NNCF static int8, calibrated first on the same 300
  out-of-run pairs for every run: NFCorpus train queries with documents outside the timed pairs);
- `rankface-default`: `predict()` as shipped (`backend="torch"`, `precision="auto"`), and `auto`: `backend="auto"`;
  each is one of the systems above on this CPU (not scored again);
- the anchors, sentence-transformers' other CPU backends (`--anchors`): `st-onnx`, `st-onnx-o3`, `st-onnx-int8`
  (`export_dynamic_quantized_onnx_model` with the same ISA config), `st-openvino` (f32 asked for),
  `st-openvino-default` (OpenVINO's default precision: bf16 on a CPU with native bf16), `st-openvino-int8`
  (`export_static_quantized_openvino_model`, calibrated on 300 NFCorpus documents outside the timed pairs). Their
  extras do not resolve with rankface's pins, so they run in two venvs the script builds on first use
  (`benchmarks/.anchors-onnx`, `.anchors-openvino`; `_anchors.py`), in worker processes that stay alive and score
  each round's pairs when asked, so they are interleaved with the other systems like any of them. The script
  prints which anchors it could not load and why.

ONNX Runtime and OpenVINO pick their kernels from the CPU itself and ignore the AVX2 caps below: on an AVX-512
machine under the caps, the ONNX and OpenVINO rows (rankface's and the anchors') still run AVX-512 kernels; only
the int8 quantisation config follows the capped class (`avx2`: u8 weights). Those rows are an upper bound for a
real AVX2 machine, and the table says the class is emulated.

The systems are interleaved: the pairs are dealt into `--rounds` strided chunks of the same length mix, and each
round scores its chunk with every system (order rotated each round). A system's pairs/s is over all its rounds; its
speed-up over sentence-transformers is the median of the per-round ratios, printed with their spread, so load from
other processes that changes during the run falls on every system alike.

The checkpoint is the MiniLM weights with a one-logit head, saved once by rankface and loaded from that folder by
both libraries, so both score with identical weights. By default (`--head probe`) the head is trained as a linear
probe on the frozen encoder's [CLS] vectors of 300 NFCorpus train queries (1 positive + 3 BM25 negatives each,
listwise softmax): a cheap trained reranker, so the nDCG@10 of int8 and bf16 against fp32 is judged on scores with
a ranking signal (a random head's scores spread less than int8's rounding). `--head random` keeps a seeded random
head; `--model` scores a trained reranker folder instead.
Reported: pairs/s, speed-ups, max |score difference| in fp32, nDCG@10 of each reranking (and of BM25), and the
share of the matmul peak reached. The peak of each precision is the best GFLOP/s of one product over every engine
that runs it (torch, ONNX Runtime, OpenVINO: `_r2_peak.py`), several sizes (square, and the model's own linear
shapes) and repeats, with the same threads, measured before and after the systems; the model's FLOPs are counted
over the real padded batches rankface ran. A share above 1 means the peak was no peak: the script says so and exits
with status 1.

    python benchmarks/rerank_throughput.py --quick     # 2,000 pairs (the first test queries, BM25 top-100)
    python benchmarks/rerank_throughput.py             # all 21,701 test pairs (BM25 top-100 of 325 queries)
    python benchmarks/rerank_throughput.py --fidelity encode    # fast paths against fp32, all test queries

The CPU class is printed and keys the results: run under instruction-set caps to measure the AVX2 class on an
AVX-512 machine (marked `emulated`), e.g.

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/rerank_throughput.py --quick

Scores, timings and the summary are saved under benchmarks/results/rerank_throughput/<mode>/ so a rerun prints them
without recomputing (`--force` recomputes); the checkpoint goes to its git-ignored models/ folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import class_tag, format_spread, print_cpu_class, ratio_stats, round_orders
from _r2_fidelity import OVERLAP_MIN as OVERLAP_GATE  # the overlap@10 against fp32 that `auto` requires of a path
from _r2_peak import measure_peaks, peak_shapes

from rankface.paths import minilm_path, shared_dir
from rankface.utils.io import write_json
from rankface.utils.ties import ranked

RESULTS = Path(__file__).resolve().parent / "results" / "rerank_throughput"
SYSTEMS = ("st-fp32", "rankface-fp32", "rankface-bf16", "rankface-int8", "rankface-onnx", "rankface-onnx-opt",
           "rankface-onnx-int8", "rankface-openvino", "rankface-openvino-int8")
# sentence-transformers' other CPU backends, run in their own venvs (`_anchors.py`); `st-torch` repeats st-fp32
# there (other transformers), so it is not run unless named.
ANCHOR_SYSTEMS = ("st-onnx", "st-onnx-o3", "st-onnx-int8", "st-openvino", "st-openvino-default", "st-openvino-int8")
# The matmul precision each rankface system is held against (its peak: the best engine's, `_r2_peak.py`).
PEAK_OF = {"rankface-fp32": "fp32", "rankface-bf16": "bf16", "rankface-int8": "int8", "rankface-onnx": "fp32",
           "rankface-onnx-opt": "fp32", "rankface-onnx-int8": "int8", "rankface-openvino-int8": "int8"}


def peak_of(system: str) -> str | None:
    """The matmul precision a system is held against (OpenVINO's default: bf16 where the CPU has it natively)."""
    if system == "rankface-openvino":
        from rankface.hardware import native_bf16

        return "bf16" if native_bf16() else "fp32"
    return PEAK_OF.get(system)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="score 2,000 pairs instead of the whole split")
    parser.add_argument("--collection", default=str(shared_dir() / "data" / "ir" / "nfcorpus"),
                        help="local collection folder or ir_datasets id (default: the shared NFCorpus)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    parser.add_argument("--max-pairs", type=int, default=None, help="score only this many pairs (quick: 2,000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256, help="pair length in tokens, both libraries")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new scoring head")
    parser.add_argument("--head", choices=["probe", "random"], default="probe",
                        help="scoring head: a linear probe trained on NFCorpus train (default) or a seeded random one")
    parser.add_argument("--model", default=None,
                        help="a trained reranker folder to use instead of the MiniLM weights with a seeded new head")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS),
                        help="systems to run (st-fp32 is always run: it is the reference)")
    parser.add_argument("--anchors", nargs="*", choices=[*ANCHOR_SYSTEMS, "st-torch"], default=list(ANCHOR_SYSTEMS),
                        help="sentence-transformers backends run in the anchor venvs (none: --anchors with no name)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (quick 5, full 10)")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="full mode: time at most N rounds not saved yet, then stop (a rerun continues): bounds "
                        "the quiet window a session can give it")
    parser.add_argument("--rounds-report", action="store_true",
                        help="full mode, timing nothing: the table of the rounds saved so far (a run that has not "
                        "finished), also written without scores to results/rerank_throughput/full/rounds_<run>.json")
    parser.add_argument("--bf16-sample", type=int, default=64,
                        help="pairs bf16 is timed on where the CPU has no native bf16 (0: all pairs)")
    parser.add_argument("--force", action="store_true",
                        help="recompute a run already saved (a full run's finished rounds are kept: delete "
                        "its results/rerank_throughput/full/cache/rounds-* folder to time them again)")
    parser.add_argument("--fidelity", choices=["encode", "predict"], default=None,
                        help="instead of timing: judge every fast path against fp32 on all test queries (see "
                             "benchmarks/_r2_fidelity.py)")
    parser.add_argument("--fidelity-paths", nargs="+", default=None, help="paths to judge (default: all)")
    parser.add_argument("--fidelity-queries", type=int, default=None,
                        help="judge on the first N test queries only (a partial check; the gate needs all)")
    parser.add_argument("--bi-model", default=None,
                        help="bi-encoder for --fidelity encode (default: the demo's, trained here if absent)")
    parser.add_argument("--readme", action="store_true",
                        help="print README's table from the saved summaries of both CPU classes (same settings), "
                        "timing nothing")
    args = parser.parse_args(argv)
    if args.quick and args.max_pairs is None:
        args.max_pairs = 2000
    args.rounds = args.rounds or (5 if args.quick else 10)
    if args.stop_after is not None and args.stop_after < 0:
        parser.error(f"--stop-after must be >= 0 (new rounds to time), got {args.stop_after}")
    args.systems = ["st-fp32", *[s for s in SYSTEMS[1:] if s in args.systems]]
    args.anchors = [a for a in (*ANCHOR_SYSTEMS, "st-torch") if a in args.anchors]
    return args


# ------------------------------------------------------------------------------------------------ data
def load_pairs(args: argparse.Namespace):
    """BM25 top-`depth` pairs of the split, in query-file order, cut at `max_pairs`.

    Returns:
        `(pairs, keys, qrels, bm25)`: pairs `[(query, doc)]`, keys `[(qid, docid)]` aligned with them, the qrels of
        the queries covered, and the BM25 run restricted to the same pairs.
    """
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import bm25_run

    collection = load_collection(args.collection)
    queries = collection.queries(args.split)
    qrels = collection.qrels(args.split)
    run = bm25_run(collection, args.split, depth=args.depth)
    docs = collection.docs()
    keys = [(qid, docid) for qid in queries if qid in qrels
            for docid, _ in ranked(run[qid])]
    keys = keys[: args.max_pairs] if args.max_pairs else keys
    covered = {qid for qid, _ in keys}
    pairs = [(queries[qid], docs[docid]) for qid, docid in keys]
    bm25 = {qid: {} for qid in covered}
    for qid, docid in keys:
        bm25[qid][docid] = run[qid][docid]
    return pairs, keys, {qid: qrels[qid] for qid in covered}, bm25


def make_checkpoint(args: argparse.Namespace) -> Path:
    """The MiniLM weights with a seeded new head, saved by rankface; both libraries load this folder."""
    from rankface.models.cross_encoder import CrossEncoder

    if args.model:
        return Path(args.model)
    folder = RESULTS / "models" / f"checkpoint-{args.head}-seed{args.seed}-len{args.max_length}"
    if not (folder / "config.json").is_file():
        torch.manual_seed(args.seed)
        # A new head on purpose (this benchmark times scoring), trained as a probe unless --head random.
        model = CrossEncoder.from_pretrained(minilm_path(), max_length=args.max_length, device="cpu",
                                             allow_untrained_head=True)
        if args.head == "probe":
            train_probe_head(model, args)
        model.save_pretrained(folder)
    return folder


def train_probe_head(model, args: argparse.Namespace, queries: int = 300, negatives: int = 3) -> None:
    """Fit the one-logit head on the frozen encoder's pooled [CLS] vectors of NFCorpus train groups, in place.

    Each group is a train query with one judged-relevant document and `negatives` BM25 negatives (ranks 1-50); the
    head minimises the softmax cross-entropy of the positive within its group (full-batch Adam, 500 steps).
    """
    from rankface.training.arguments import RerankerTrainingArguments
    from rankface.training.data import prepare_training_data

    settings = RerankerTrainingArguments(
        collection=args.collection, eval_split=None, num_negatives=negatives, negatives_from_rank=1,
        negatives_to_rank=50, max_train_queries=queries + 100, encoder="cross", max_length=args.max_length,
        exclude_queries_in=["test", "dev"], seed=args.seed, quiet=True)
    data = prepare_training_data(settings)
    texts = data.group_texts(data.groups[:queries])
    model.model.eval()
    vectors = []
    with torch.inference_mode():
        for query, documents in zip(*texts, strict=True):
            batch = model._tokenize([query] * len(documents), documents, padding=True, return_tensors="pt")
            base = getattr(model.model, model.model.base_model_prefix)
            vectors.append(base(**batch).pooler_output)
    features = torch.stack(vectors)  # [G, 1 + K, H], the positive first
    head = torch.nn.Linear(features.shape[-1], 1)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    target = torch.zeros(len(features), dtype=torch.long)
    for _ in range(500):
        loss = torch.nn.functional.cross_entropy(head(features).squeeze(-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"probe head: {len(features)} groups, final loss {loss.item():.3f} (uniform: {np.log(1 + negatives):.3f})")
    with torch.no_grad():
        model.model.classifier.weight.copy_(head.weight)
        model.model.classifier.bias.copy_(head.bias)


# ------------------------------------------------------------------------------------------------ the FLOPs
def padded_flops(model, lengths: list[int], batch_size: int) -> float:
    """Matmul FLOPs of the encoder over the batches rankface actually runs (length-sorted, padded per batch).

    Per token and layer: 2 x (weights of the layer's linear maps) + 4 x L x hidden for QK^T and AV, where L is the
    padded length of its batch; plus the pooler and the classifier on the [CLS] token of each pair.
    """
    from rankface.models._text import length_sorted_batches

    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    hidden = model.config.hidden_size
    linear_per_layer = sum(m.in_features * m.out_features for m in layers[0].modules() if isinstance(m, torch.nn.Linear))
    head = sum(m.in_features * m.out_features for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ("pooler" in name or "classifier" in name))
    total = 0.0
    for index in length_sorted_batches(lengths, batch_size):
        padded = max(lengths[i] for i in index)
        per_token = len(layers) * (2 * linear_per_layer + 4 * padded * hidden)
        total += len(index) * (padded * per_token + 2 * head)
    return total


def share_bugs(shares: dict[str, float | None]) -> list[str]:
    """The systems whose share of the peak is above 1: the "peak" was then not the best the hardware does."""
    return [name for name, share in shares.items() if share is not None and share > 1.0]


# ------------------------------------------------------------------------------------------------ the systems
def make_predictors(folder: Path, systems: list[str], args: argparse.Namespace, workers=None) -> dict:
    """`{system: predict(pairs) -> scores}`, each warmed up on one batch (first-call allocations, kernel choice).

    An anchor's predictor returns `(seconds, scores)`: the seconds its worker spent in `predict`, without the pipe.
    """
    from rankface.models.cross_encoder import CrossEncoder

    predictors = {}
    for anchor in workers.loaded if workers else []:
        predictors[anchor] = lambda batch, anchor=anchor: workers.score(anchor, batch)  # (seconds, scores)
    for system in systems:
        if system == "st-fp32":
            from sentence_transformers import CrossEncoder as STCrossEncoder

            st = STCrossEncoder(str(folder), max_length=args.max_length, device="cpu")
            identity = torch.nn.Identity()  # raw logits, as rankface returns (ST applies a sigmoid by default)

            def predict(batch, st=st, identity=identity):
                return st.predict(batch, batch_size=args.batch_size, show_progress_bar=False, activation_fn=identity)
        else:
            model = CrossEncoder.from_pretrained(folder, max_length=args.max_length, device="cpu")
            engine = system.split("-", 1)[1]
            # rankface-fp32/bf16/int8: the PyTorch path at that precision; rankface-onnx*, -openvino*: that backend
            knobs = {"backend": engine} if engine.startswith(("onnx", "openvino")) else {"precision": engine}
            if engine == "openvino-int8":  # its first call calibrates its graph: on the out-of-run pairs
                model.predict(calibration_pairs(args), batch_size=args.batch_size, show_progress_bar=False, **knobs)

            def predict(batch, model=model, knobs=knobs):
                return model.predict(batch, batch_size=args.batch_size, show_progress_bar=False, **knobs)
        predictors[system] = predict
    return predictors


def calibration_pairs(args: argparse.Namespace, count: int = 300) -> list[tuple[str, str]]:
    """`count` (train query, document) pairs, the documents outside the split's BM25 top-`depth`: what OpenVINO's
    static int8 calibrates on (the anchor `st-openvino-int8` calibrates on the same documents, alone)."""
    from rankface.data.ir import load_collection

    collection = load_collection(args.collection)
    pairs, _, _, _ = load_pairs(args)
    used = {d for _, d in pairs}
    docs = [t for t in collection.docs().values() if t not in used][:count]
    queries = list(collection.queries("train").values())
    return [(queries[i % len(queries)], doc) for i, doc in enumerate(docs)]


def deal(n: int, rounds: int) -> list[list[int]]:
    """Pair indices dealt into `rounds` strided chunks (`i::rounds`): each chunk has the whole run's length mix."""
    return [list(range(r, n, rounds)) for r in range(rounds)]


def time_systems(folder: Path, pairs: list[tuple[str, str]], args: argparse.Namespace, bf16_sample: int | None,
                 workers=None, saved: Path | None = None) -> dict:
    """Interleaved scoring of every system; per system its scores (NaN where not scored) and per-round timings.

    Each finished round is saved under `saved` (`round-<r>.json`: every system's seconds, pairs and scores), and a
    rerun loads the saved rounds and times only the others: the full mode takes hours, longer than a session. A
    round is whole (every system timed back to back), so rounds from two sessions compare like any two rounds; they
    must come from the same CPU model, which each file records.
    """
    from rankface.hardware import cpu_model

    predictors = make_predictors(folder, args.systems, args, workers)
    chunks = deal(len(pairs), args.rounds)
    sampled = {}
    if bf16_sample:  # bf16 without native support: a strided sample of about bf16_sample pairs, spread over rounds
        per_round = max(1, bf16_sample // args.rounds)
        sampled["rankface-bf16"] = [chunk[:: max(1, len(chunk) // per_round)][:per_round] for chunk in chunks]
    for name, predict in predictors.items():
        predict(pairs[: 4 if name in sampled else args.batch_size])  # emulated bf16: a short warm-up
    scores = {name: np.full(len(pairs), np.nan, dtype=np.float32) for name in predictors}
    rounds = {name: {"seconds": [], "pairs": [], "index": []} for name in predictors}
    timed_now = 0
    for r, order in enumerate(round_orders(list(predictors), args.rounds)):
        done = saved / f"round-{r:03d}.json" if saved else None
        if done and done.is_file():
            record = json.loads(done.read_text(encoding="utf-8"))
            if record["cpu_model"] != cpu_model() or sorted(record["systems"]) != sorted(predictors):
                raise SystemExit(f"{done}: saved on {record['cpu_model']!r} with systems {sorted(record['systems'])}; "
                                 f"this run is {cpu_model()!r} with {sorted(predictors)}: move that folder away")
            for name, got in record["systems"].items():
                scores[name][got["index"]] = np.asarray(got["scores"], dtype=np.float32)
                for key in ("seconds", "pairs", "index"):
                    rounds[name][key].append(got[key])
            print(f"round {r + 1}/{args.rounds}: saved ({done})", flush=True)
            continue
        if args.stop_after is not None and timed_now >= args.stop_after:
            raise SystemExit(f"stopped after {timed_now} new round(s) (--stop-after); {r} of {args.rounds} are saved "
                             f"under {saved}: rerun the same command to continue")
        timed_now += 1
        for name in order:
            index = sampled.get(name, chunks)[r]
            start = time.perf_counter()
            values = predictors[name]([pairs[i] for i in index])
            seconds = time.perf_counter() - start
            if isinstance(values, tuple):  # an anchor: (seconds inside its worker, scores)
                seconds, values = values
            scores[name][index] = np.asarray(values, dtype=np.float32)
            rounds[name]["seconds"].append(seconds)
            rounds[name]["pairs"].append(len(index))
            rounds[name]["index"].append(index)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{n} {rounds[n]['pairs'][-1] / rounds[n]['seconds'][-1]:.1f} pairs/s" for n in predictors), flush=True)
        if done:
            write_json(done, {"cpu_model": cpu_model(), "systems": {
                n: {"seconds": rounds[n]["seconds"][-1], "pairs": rounds[n]["pairs"][-1],
                    "index": rounds[n]["index"][-1],
                    "scores": [float(v) for v in scores[n][rounds[n]["index"][-1]]]} for n in predictors}})
    return {"scores": scores, "rounds": rounds}


def round_rates(r: dict) -> list[float]:
    """Pairs/s of each round of one system (`{"pairs": [...], "seconds": [...]}`)."""
    return [p / s for p, s in zip(r["pairs"], r["seconds"], strict=True)]


def rounds_report(saved: Path, out: Path) -> dict:
    """The rounds of an unfinished full run, from their files under `saved`: per system the pairs/s over the rounds
    and the per-round ratios against sentence-transformers' PyTorch default (median, spread). No scores: the fidelity
    figures wait for the whole run. Written to `out` (small, committed: the partial result of a run that spans
    sessions) and printed as a table."""
    files = sorted(saved.glob("round-*.json"))
    if not files:
        raise SystemExit(f"no saved rounds under {saved}: nothing to report (run the full mode with --stop-after N)")
    records = [json.loads(f.read_text(encoding="utf-8")) for f in files]
    rounds = {name: {key: [r["systems"][name][key] for r in records] for key in ("pairs", "seconds")}
              for name in records[0]["systems"]}
    systems = {name: {**r, "rate": sum(r["pairs"]) / sum(r["seconds"]),
                      "speedup": ratio_stats(round_rates(r), round_rates(rounds["st-fp32"]))}
               for name, r in rounds.items()}
    report = {"cpu_model": records[0]["cpu_model"], "rounds_saved": [f.stem for f in files], "systems": systems}
    write_json(out, report)
    print(f"\n{len(files)} saved round(s) of {saved.name} ({report['cpu_model']}); pairs/s over them and the median of "
          "the per-round ratios against st-fp32 (min-max):\n\n| system | pairs timed | pairs/s | vs ST | min-max |\n"
          "|---|---:|---:|---:|---:|")
    for name, s in sorted(systems.items(), key=lambda kv: -kv[1]["rate"]):
        print(f"| {name} | {sum(s['pairs'])} | {s['rate']:.1f} | {s['speedup']['median']:.2f}x | "
              f"{s['speedup']['min']:.2f}-{s['speedup']['max']:.2f} |")
    return report


def run_key(args: argparse.Namespace) -> str:
    settings = [Path(args.collection).name, args.split, args.depth, args.max_pairs, args.batch_size, args.max_length,
                args.seed, torch.get_num_threads(), args.rounds, args.systems, args.bf16_sample, args.head,
                ] + ([str(Path(args.model).resolve())] if args.model else []) + ([args.anchors] if args.anchors else [])
    return hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:10]


def overlap10(keys: list[tuple[str, str]], scores: np.ndarray, reference: np.ndarray) -> float | None:
    """Mean over queries of `|top10 ∩ top10_reference| / min(10, n)` (pairs scored by both only)."""
    from rankface.utils.ties import rank_order

    by_query: dict[str, list[int]] = {}
    for i, (qid, _) in enumerate(keys):
        if not (np.isnan(scores[i]) or np.isnan(reference[i])):
            by_query.setdefault(qid, []).append(i)
    values = []
    for index in by_query.values():
        docs = [keys[i][1] for i in index]
        k = min(10, len(docs))
        mine = set(rank_order(docs, [float(scores[i]) for i in index])[:k])
        ref = set(rank_order(docs, [float(reference[i]) for i in index])[:k])
        values.append(len(mine & ref) / k)
    return float(np.mean(values)) if values else None


def ndcg10(keys: list[tuple[str, str]], scores: np.ndarray, qrels: dict) -> float:
    from rankface.evaluation.ranking import evaluate

    run: dict[str, dict[str, float]] = {}
    for (qid, docid), value in zip(keys, scores, strict=True):
        run.setdefault(qid, {})[docid] = float(value)
    return evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]


# ------------------------------------------------------------------------------------------------ fidelity
def fidelity(args: argparse.Namespace) -> dict:
    """`--fidelity encode|predict`: every fast path against rankface fp32 on all test queries (`_r2_fidelity`)."""
    import _r2_fidelity

    paths = args.fidelity_paths or list(_r2_fidelity.PATHS)
    if args.fidelity == "encode":
        model = Path(args.bi_model) if args.bi_model else _r2_fidelity.demo_bi_encoder()
        note = args.bi_model or "the demo's trained bi-encoder (rankface demo defaults)"
    else:
        model = make_checkpoint(args)
        note = args.model or f"MiniLM-L6 + {args.head} head (R2's checkpoint)"
    return _r2_fidelity.run_fidelity(args.fidelity, str(model), args.collection, paths, args.batch_size, note,
                                     args.fidelity_queries)


# ------------------------------------------------------------------------------------------------ main
def auto_system(cpu: dict, default_precision: str) -> str:
    """The system `backend="auto"` is on a CPU of class `cpu` (`rankface.inference.backends.AUTO`)."""
    from rankface.inference.backends import resolve_backend

    auto = resolve_backend("auto", "cpu", "text", cpu)
    return f"rankface-{default_precision if auto == 'torch' else auto}"


def measure(args: argparse.Namespace, cpu: dict, saved: Path | None = None) -> dict:
    """Everything R2 reports for one run: peaks before and after, the interleaved systems (rounds saved under
    `saved` as they finish), FLOPs."""
    from rankface.hardware import native_bf16
    from rankface.models._text import resolve_precision
    from rankface.models.cross_encoder import CrossEncoder

    pairs, keys, qrels, bm25 = load_pairs(args)
    folder = make_checkpoint(args)
    default = resolve_precision("auto", torch.device("cpu"))
    bf16_sample = args.bf16_sample if (not native_bf16() and args.bf16_sample) else None
    reranker = CrossEncoder.from_pretrained(folder, max_length=args.max_length, device="cpu")
    config = reranker.model.config
    shapes = peak_shapes(config.hidden_size, config.intermediate_size)
    precisions = list(dict.fromkeys(peak_of(s) for s in ["rankface-fp32", *args.systems] if peak_of(s)))
    print("matmul peak (before) ...", flush=True)
    before = measure_peaks(precisions, shapes)
    workers, anchor_errors, versions = None, {}, {}
    if args.anchors:
        from _anchors import AnchorWorkers

        from rankface.inference.backends import quant_isa

        # OpenVINO's static int8 calibrates on 300 NFCorpus documents that are not among the timed pairs
        calibration = [doc for _, doc in calibration_pairs(args)]
        job = {"checkpoint": str(folder), "batch_size": args.batch_size, "max_length": args.max_length,
               "threads": torch.get_num_threads(), "isa": quant_isa(), "native_bf16": native_bf16(),
               "calibration": calibration}
        workers = AnchorWorkers(args.anchors, job, RESULTS / "cache" / "anchors" / folder.name)
        anchor_errors, versions = workers.errors, workers.versions
        for anchor, reason in anchor_errors.items():
            print(f"anchor {anchor} could not be loaded: {reason}", flush=True)
    try:
        timed = time_systems(folder, pairs, args, bf16_sample, workers, saved)
    finally:
        if workers:
            workers.close()
    print("matmul peak (after) ...", flush=True)
    after = measure_peaks(precisions, shapes)
    lengths = [len(ids) for ids in reranker._tokenize([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]]
    flops = {name: sum(padded_flops(reranker.model, [lengths[i] for i in index], args.batch_size)
                       for index in r["index"]) for name, r in timed["rounds"].items()}
    from rankface.inference.backends import quant_isa

    return {
        "cpu": cpu, "threads": torch.get_num_threads(), "default_precision": default, "bf16_sample": bf16_sample,
        "auto_system": auto_system(cpu, default), "quant_isa": quant_isa(),
        "anchor_errors": anchor_errors, "anchor_versions": versions,
        "pairs": len(pairs), "queries": len(qrels), "mean_length": float(np.mean(lengths)), "keys": keys,
        "peak_before": before, "peak_after": after,
        "peak": {p: max(before[p]["gflops"], after[p]["gflops"]) for p in precisions},
        "peak_engine": {p: max(before[p], after[p], key=lambda x: x["gflops"]).get("engine") for p in precisions},
        "flops": flops,
        "rounds": {name: {k: v for k, v in r.items() if k != "index"} for name, r in timed["rounds"].items()},
        "scores": {name: [None if np.isnan(v) else float(v) for v in s] for name, s in timed["scores"].items()},
        "ndcg10": {name: ndcg10(keys, s, qrels) for name, s in timed["scores"].items() if not np.isnan(s).any()},
        "bm25_ndcg10": ndcg10(keys, np.asarray([bm25[q][d] for q, d in keys]), qrels),
    }


CLASSES = {"avx512-bf16": "AVX-512 + native bf16", "avx2-emulated": "AVX2 only (emulated)",
           "avx2": "AVX2 only (real EPYC)"}
LABELS = {
    "st-fp32": "sentence-transformers, PyTorch fp32 (its default)",
    "st-onnx": "sentence-transformers, ONNX", "st-onnx-o3": "sentence-transformers, ONNX O3",
    "st-onnx-int8": "sentence-transformers, ONNX dynamic int8 (ISA config)",
    "st-openvino": "sentence-transformers, OpenVINO f32",
    "st-openvino-default": "sentence-transformers, OpenVINO default precision",
    "st-openvino-int8": "sentence-transformers, OpenVINO static int8",
    "rankface-fp32": "rankface torch fp32", "rankface-bf16": "rankface torch bf16",
    "rankface-int8": "rankface torch int8 (dynamic)", "rankface-onnx": "rankface `onnx`",
    "rankface-onnx-opt": "rankface `onnx-opt`", "rankface-onnx-int8": "rankface `onnx-int8`",
    "rankface-openvino": "rankface `openvino`", "rankface-openvino-int8": "rankface `openvino-int8`",
}


def readme_table(folder: Path, key: str) -> dict:
    """README's R2 table: every system of every CPU class's saved summaries (`summary_<class>-<key>.json`)."""
    summaries = {tag: json.loads((folder / f"summary_{tag}-{key}.json").read_text(encoding="utf-8"))
                 for tag in CLASSES if (folder / f"summary_{tag}-{key}.json").is_file()}
    if not summaries:
        raise SystemExit(f"no saved summary with these settings ({key}) under {folder}: run the timing first")
    header = ["system"]
    for tag in summaries:
        header += [f"{CLASSES[tag]}: pairs/s", "vs ST (IQR)", "overlap@10 vs fp32", "share of peak"]
    rows = [header, ["---"] + ["---:"] * (len(header) - 1)]
    for system, label in LABELS.items():
        row = [label]
        for summary in summaries.values():
            s = summary["systems"].get(system)
            if s is None:
                why = summary.get("anchor_errors", {}).get(system, "not run")
                row += [f"not loaded: {why.split(':')[0]}" if system in summary.get("anchor_errors", {}) else why,
                        "", "", ""]
                continue
            mark = " **auto**" if system == summary.get("auto_system") else ""
            mark += " (default)" if system == f"rankface-{summary['default_precision']}" else ""
            speed = s["speedup"]
            row += [f"{s['rate']:.1f}{mark}", f"{speed['median']:.2f}× ({speed['q1']:.2f}–{speed['q3']:.2f})",
                    f"{s['overlap10_vs_fp32']:.3f}" if s["overlap10_vs_fp32"] is not None else "–",
                    f"{s['share']:.0%}" if s["share"] else "–"]
        rows.append(row)
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    for tag, summary in summaries.items():
        peaks = ", ".join(f"{p} {g:.0f} ({(summary.get('peak_engine') or {}).get(p, 'torch')})"
                          for p, g in summary["peak_gflops"].items())
        print(f"\n{CLASSES[tag]}: {summary['pairs']} pairs, {summary['threads']} threads; matmul peak GFLOP/s {peaks}; "
              f"auto {summary['auto_system']} vs the fastest anchor with overlap@10 >= {OVERLAP_GATE} "
              f"({summary.get('best_faithful_anchor')}): {summary.get('speedup_vs_best_faithful_anchor') or 0:.2f}×")
    return summaries


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = print_cpu_class()
    if args.fidelity:
        return fidelity(args)
    mode = "quick" if args.quick else "full"
    folder = RESULTS / mode
    if args.readme:
        return readme_table(folder, run_key(args))
    name = f"{class_tag(cpu)}-{run_key(args)}"
    path = folder / f"run_{name}.json"
    if args.rounds_report:
        return rounds_report(folder / "cache" / f"rounds-{name}", folder / f"rounds_{name}.json")
    if path.is_file() and not args.force:
        result = json.loads(path.read_text(encoding="utf-8"))
        print(f"(saved run {path}; --force recomputes)")
    else:
        # (git-ignored, results/**/cache/: the rounds of a run that has not finished)
        rounds = folder / "cache" / f"rounds-{name}"
        result = measure(args, cpu, rounds if mode == "full" else None)
        write_json(path, result)

    # auto as this rankface chooses it: AUTO may have changed since the run was timed (every system was timed)
    result["auto_system"] = auto_system(result["cpu"], result["default_precision"])
    if args.anchors:
        print("anchors: " + ", ".join(a for a in args.anchors if a in result["rounds"]) + " loaded"
              + "".join(f"; {a} NOT loaded: {why}" for a, why in result.get("anchor_errors", {}).items()))
    keys = result.get("keys")
    fp32_scores = np.asarray([np.nan if v is None else v for v in result["scores"].get("rankface-fp32", [])],
                             dtype=np.float32)
    st = result["rounds"]["st-fp32"]
    st_rates = round_rates(st)
    st_scores = np.asarray(result["scores"]["st-fp32"], dtype=np.float32)
    rows, stats = [], {}
    for system, r in result["rounds"].items():
        precision = peak_of(system)
        rate = sum(r["pairs"]) / sum(r["seconds"])
        speedup = ratio_stats(round_rates(r), st_rates)
        mine = np.asarray([np.nan if v is None else v for v in result["scores"][system]], dtype=np.float32)
        scored = ~np.isnan(mine)
        achieved = result["flops"][system] / sum(r["seconds"]) / 1e9 if system.startswith("rankface") else None
        share = achieved / result["peak"][precision] if achieved and precision in result["peak"] else None
        stats[system] = {"rate": rate, "speedup": speedup, "achieved_gflops": achieved, "share": share,
                         "ndcg10": result["ndcg10"].get(system), "rates": round_rates(r),
                         "overlap10_vs_fp32": overlap10([tuple(k) for k in keys], mine, fp32_scores)
                         if keys and len(fp32_scores) else None,
                         "max_abs_diff": float(np.max(np.abs(mine[scored] - st_scores[scored])))}
        s = stats[system]
        label = system + (" (default)" if system == f"rankface-{result['default_precision']}" else "")
        label += " (auto)" if system == result.get("auto_system") else ""
        label += f" [{sum(r['pairs'])} pairs sampled]" if not scored.all() else ""
        rows.append((label, f"{rate:.1f}", f"{speedup['median']:.2f}x", f"{speedup['q1']:.2f}-{speedup['q3']:.2f}",
                     f"{s['ndcg10']:.4f}" if s["ndcg10"] is not None else "-",
                     f"{s['overlap10_vs_fp32']:.3f}" if s["overlap10_vs_fp32"] is not None else "-",
                     f"{s['max_abs_diff']:.2e}",
                     f"{achieved:.1f}" if achieved else "-", f"{share:.1%}" if share else "-"))

    cpu = result["cpu"]
    peak = result["peak"]
    print(f"\nR2 rerank throughput ({mode}): {result['pairs']} pairs, {result['queries']} queries of {args.split}, BM25 "
          f"top-{args.depth}, batch {args.batch_size}, max_length {args.max_length}, {result['threads']} threads, "
          f"{args.rounds} interleaved rounds; CPU class {cpu['class']}"
          f"{' (emulated by ' + ' '.join(f'{k}={v}' for k, v in cpu['caps'].items()) + ')' if cpu['emulated'] else ''}"
          f"; default precision {result['default_precision']}; matmul peak (best of sizes and repeats, before and "
          f"after, best engine): " + ", ".join(f"{p} {g:.1f} ({result.get('peak_engine', {}).get(p, 'torch')})"
                                           for p, g in peak.items()) + " GFLOP/s; model "
          f"{result['flops']['rankface-fp32'] / result['pairs'] / 1e9 if 'rankface-fp32' in result['flops'] else 0:.2f}"
          f" GFLOP/pair (padded, mean length {result['mean_length']:.1f} tokens)\n")
    header = ("system", "pairs/s", "vs ST (median of rounds)", "IQR", "nDCG@10", "overlap@10 vs fp32",
              "max abs diff vs ST", "GFLOP/s", "share of peak")
    table = [header, ("---",) * len(header), *rows,
             ("BM25 (first stage)", "-", "-", "-", f"{result['bm25_ndcg10']:.4f}", "-", "-", "-", "-")]
    print("\n".join("| " + " | ".join(row) + " |" for row in table))
    default = stats.get(f"rankface-{result['default_precision']}")
    if default:
        print(f"\ndefault ({result['default_precision']}) vs sentence-transformers: {format_spread(default['speedup'])}")

    fp32_ndcg = result["ndcg10"].get("rankface-fp32")

    def delta(system: str) -> float | None:
        value = result["ndcg10"].get(system)
        return value - fp32_ndcg if value is not None and fp32_ndcg is not None else None

    auto = stats.get(result.get("auto_system"))
    anchors = {a: stats[a] for a in stats if a.startswith("st-") and a != "st-fp32"}
    best_anchor = max(anchors, key=lambda a: anchors[a]["rate"]) if anchors else None
    vs_best = ratio_stats(auto["rates"], anchors[best_anchor]["rates"]) if auto and best_anchor else None
    if vs_best:
        print(f"auto ({result['auto_system']}) vs the fastest anchor ({best_anchor}): {format_spread(vs_best)}")
    # The goal compares at fidelity: the fastest anchor whose top 10 agree with fp32's as auto's must (>= 0.95 here,
    # on these pairs; the full fidelity check is --fidelity).
    faithful = {a: s for a, s in anchors.items() if (s["overlap10_vs_fp32"] or 0) >= OVERLAP_GATE}
    best_faithful = max(faithful, key=lambda a: faithful[a]["rate"]) if faithful else None
    vs_faithful = ratio_stats(auto["rates"], faithful[best_faithful]["rates"]) if auto and best_faithful else None
    if vs_faithful:
        print(f"auto vs the fastest anchor with overlap@10 >= {OVERLAP_GATE} on these pairs ({best_faithful}): "
              f"{format_spread(vs_faithful)}")
    summary = {
        "speedup_default": default["speedup"]["median"] if default else None,
        "speedup_auto": auto["speedup"]["median"] if auto else None,
        "auto_system": result.get("auto_system"),
        "speedup_vs_best_anchor": vs_best["median"] if vs_best else None,
        "best_anchor": best_anchor,
        "speedup_vs_best_faithful_anchor": vs_faithful["median"] if vs_faithful else None,
        "best_faithful_anchor": best_faithful,
        "overlap10_default": default["overlap10_vs_fp32"] if default else None,
        "overlap10_auto": auto["overlap10_vs_fp32"] if auto else None,
        "anchors_failed": len(result.get("anchor_errors", {})),
        "speedup_fp32": stats.get("rankface-fp32", {}).get("speedup", {}).get("median"),
        "speedup_bf16": stats.get("rankface-bf16", {}).get("speedup", {}).get("median"),
        "speedup_int8": stats.get("rankface-int8", {}).get("speedup", {}).get("median"),
        "max_abs_diff_fp32": stats.get("rankface-fp32", {}).get("max_abs_diff"),
        "ndcg10_delta_bf16": delta("rankface-bf16"),
        "ndcg10_delta_int8": delta("rankface-int8"),
        "peak_share": default["share"] if default else None,
        "cpu_class": cpu["class"] + ("-emulated" if cpu["emulated"] else ""),
        "mode": mode,
    }
    bugs = share_bugs({name: s["share"] for name, s in stats.items()})
    write_json(folder / f"summary_{name}.json", {
        **summary, "default_precision": result["default_precision"], "threads": result["threads"], "cpu": cpu,
        "pairs": result["pairs"], "model": Path(args.model).name if args.model else f"MiniLM-L6, {args.head} head",
        "peak_gflops": peak, "peak_engine": result.get("peak_engine"), "peak_before": result["peak_before"], "peak_after": result["peak_after"],
        "systems": stats, "bm25_ndcg10": result["bm25_ndcg10"], "ndcg10": result["ndcg10"],
        "peak_share_above_1": bugs, "anchor_errors": result.get("anchor_errors", {}),
        "anchor_versions": result.get("anchor_versions", {}), "quant_isa": result.get("quant_isa"),
    })
    print("\nRESULT " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    if bugs:
        print(f"BUG: share of the matmul peak above 1 for {', '.join(bugs)}: the measured peak is not a peak on this "
              "CPU (the model ran faster than the best matmul timed beside it); the shares above are not valid",
              file=sys.stderr)
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
