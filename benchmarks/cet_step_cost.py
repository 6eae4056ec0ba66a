"""Protocol R3 (../shared/docs/benchmarks.md): the cost of a CET training step against plain training.

The same reranker (MiniLM weights, a new one-logit head), the same batches of NFCorpus training groups (train
qrels, BM25 top-50 negatives) and the same optimizer settings, timed per optimizer step
(forward + backward + clipping + AdamW + scheduler), exactly as `rankface.training.loop` runs it:

- `plain`: the pairwise loss, 1 forward + 1 backward;
- `cet/eval_forward`: the authors' algorithm, weights from an extra no-grad eval-mode forward of each model:
  4 forwards + 2 backwards (two models);
- `cet/train_logits`: weights from the detached training logits: 2 forwards + 2 backwards.

The three systems run round by round: each round steps every system twice on the round's two batches, in a
palindromic order (`A B C C B A`, rotated every round), and each ratio to plain is the median over rounds of the
round's ratio, printed with its spread. Load from other processes on this shared machine that changes between rounds
cancels within each round's ratio, load that drifts steadily within a round falls on all systems alike, and the
median ignores the rounds a burst hit unevenly.

    python benchmarks/cet_step_cost.py --quick      # 2 layers, length 128, 4 queries x (1 + 3) docs, 8 timed rounds
    python benchmarks/cet_step_cost.py              # 6 layers, length 192, 4 queries x (1 + 7) docs, 10 timed rounds

R1 quality of both CET modes comes from the R1 benchmark: by default its saved R1-bi seed-0 results
(`cet/strong-neg` = eval_forward, `cet-tl/strong-neg` = train_logits, test nDCG@10) when present, or
`--r1-results FILE` (JSON `{"eval_forward": nDCG@10, "train_logits": nDCG@10}`). Results are saved under
benchmarks/results/cet_step_cost/<mode>/ keyed by the settings and the CPU class, so a rerun prints them without
retiming (`--force` retimes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import class_tag, cpu_class, print_cpu_class, ratio_stats, round_orders

from rankface.paths import shared_dir
from rankface.utils.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "cet_step_cost"
SYSTEMS = {
    "plain": {"method": "plain", "cet_weights_from": "eval_forward", "passes": "1 fwd + 1 bwd"},
    "cet/eval_forward": {"method": "cet", "cet_weights_from": "eval_forward", "passes": "4 fwd + 2 bwd"},
    "cet/train_logits": {"method": "cet", "cet_weights_from": "train_logits", "passes": "2 fwd + 2 bwd"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 layers, length 128, K=3, 8 timed rounds")
    parser.add_argument(
        "--collection",
        default=str(shared_dir() / "data" / "ir" / "nfcorpus"),
        help="local collection folder or ir_datasets id (default: the shared NFCorpus)",
    )
    parser.add_argument("--encoder", default="cross", choices=["cross", "bi"])
    parser.add_argument("--num-layers", type=int, default=None, help="encoder layers kept (quick 2, full all 6)")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per pair (quick 128, full 192)")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per step")
    parser.add_argument("--num-negatives", type=int, default=None, help="K (quick 3, full 7)")
    parser.add_argument("--rounds", "--steps", dest="steps", type=int, default=None,
                        help="timed rounds, two steps of each system per round (quick 8, full 10)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--r1-results", default=None, help="JSON {mode: nDCG@10} of the R1 CET runs, for the table")
    parser.add_argument("--force", action="store_true", help="retime even when a saved result exists")
    args = parser.parse_args(argv)
    defaults = {"num_layers": (2, None), "max_length": (128, 192), "num_negatives": (3, 7), "steps": (8, 10)}
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def training_arguments(args: argparse.Namespace, cache_dir: str = "~/.cache/rankface"):
    from rankface.training.arguments import RerankerTrainingArguments

    needed = args.batch_size * 2 * (args.warmup + args.steps)  # two batches per round
    return RerankerTrainingArguments(
        collection=args.collection,
        eval_split=None,
        num_negatives=args.num_negatives,
        negatives_from_rank=1,
        negatives_to_rank=50,
        max_train_queries=2 * needed,  # some sampled queries have no positive or no BM25 candidates
        encoder=args.encoder,
        num_layers=args.num_layers,
        max_length=args.max_length,
        loss="pairwise",
        cet_temperature=10.0,
        learning_rate=2e-5,
        head_learning_rate=1e-3,
        batch_size=args.batch_size,
        mixed_precision=args.mixed_precision,
        seed=args.seed,
        cache_dir=cache_dir,
        quiet=True,
    )


def time_systems(args: argparse.Namespace) -> dict:
    """Interleaved timing of the three systems on the same batches; returns per-system step times (s)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from rankface.training.data import prepare_training_data
    from rankface.training.loop import Learner, build_models, make_optimizer, make_step_function

    base = training_arguments(args)
    data = prepare_training_data(base)
    total = 2 * (args.warmup + args.steps)  # optimizer steps per system: two per round
    if len(data.groups) < args.batch_size * total:
        raise SystemExit(f"only {len(data.groups)} training groups for {total} steps of {args.batch_size} queries")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=args.mixed_precision)
    runs = {}
    for name, spec in SYSTEMS.items():
        settings = replace(base, method=spec["method"], cet_weights_from=spec["cet_weights_from"])
        set_seed(args.seed)  # every system starts from the same weights and heads
        models = build_models(settings, data)
        optimizers = [make_optimizer(m, settings) for m in models]
        prepared = accelerator.prepare(*models, *optimizers)
        models, optimizers = prepared[: len(models)], prepared[len(models) :]
        learners = [
            Learner(n, m, o, get_linear_schedule_with_warmup(o, 1, total))
            for n, m, o in zip(["relevance", "selection"], models, optimizers)
        ]
        for learner in learners:
            learner.model.train()
        runs[name] = {"learners": learners, "step": make_step_function(settings, accelerator), "times": []}

    collate_model = accelerator.unwrap_model(runs["plain"]["learners"][0].model)
    batches = []
    for i in range(total):
        groups = data.groups[i * args.batch_size : (i + 1) * args.batch_size]
        queries, documents = data.group_texts(groups)
        features = collate_model.collate_groups(queries, documents)
        batches.append(_to_device(features, accelerator.device))

    sync = torch.cuda.synchronize if accelerator.device.type == "cuda" else (lambda: None)
    losses = {name: [] for name in runs}
    round_times = {name: [] for name in runs}  # per round: the sum of its two steps
    for r, order in enumerate(round_orders(list(runs), args.warmup + args.steps, palindrome=True)):
        spent = dict.fromkeys(runs, 0.0)
        done = dict.fromkeys(runs, 0)
        for name in order:  # A B C C B A: each system's 1st step on the round's 1st batch, its 2nd on the 2nd
            run, features = runs[name], batches[2 * r + done[name]]
            done[name] += 1
            sync()
            start = time.perf_counter()
            logged = run["step"](run["learners"], features)
            for learner in run["learners"]:
                accelerator.clip_grad_norm_(learner.model.parameters(), 1.0)
                learner.optimizer.step()
                learner.optimizer.zero_grad(set_to_none=True)
                learner.scheduler.step()
            sync()
            seconds = time.perf_counter() - start
            spent[name] += seconds
            if r >= args.warmup:
                run["times"].append(seconds)
            losses[name].append(logged["loss"])
        if r >= args.warmup:
            for name in runs:
                round_times[name].append(spent[name])
    pairs = args.batch_size * (1 + args.num_negatives)
    return {
        "times": {name: run["times"] for name, run in runs.items()},
        "round_times": round_times,
        "losses": losses,
        "pairs_per_step": pairs,
        "device": str(accelerator.device),
        "threads": torch.get_num_threads(),
    }


def _to_device(features, device):
    if isinstance(features, dict):
        return {k: _to_device(v, device) for k, v in features.items()}
    return features.to(device) if isinstance(features, torch.Tensor) else features


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    cpu = print_cpu_class()
    key_fields = [
        "collection",
        "encoder",
        "num_layers",
        "max_length",
        "batch_size",
        "num_negatives",
        "steps",
        "warmup",
        "mixed_precision",
        "seed",
    ]
    settings = {k: getattr(args, k) for k in key_fields}
    settings["collection"] = Path(settings["collection"]).name  # the shared collection by name, not by path
    key = json.dumps({**settings, "threads": torch.get_num_threads()}, sort_keys=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tag = class_tag(cpu) if device == "cpu" else "gpu"
    path = RESULTS / mode / f"{device}-{hashlib.sha1(key.encode()).hexdigest()[:10]}-{tag}.json"
    if path.is_file() and not args.force:
        result = json.loads(path.read_text())
        print(f"(saved result {path}; --force retimes)")
    else:
        result = {"settings": settings, "mode": mode, "machine": platform.node(), "cpu": cpu_class(),
                  **time_systems(args)}
        result["round_ratios"] = {name: ratio_stats(result["round_times"][name], result["round_times"]["plain"])
                                  for name in SYSTEMS if name != "plain"}
        write_json(path, result)

    medians = {name: statistics.median(ts) for name, ts in result["times"].items()}
    ratios = {"plain": 1.0, **{name: r["median"] for name, r in result["round_ratios"].items()}}
    r1 = json.loads(Path(args.r1_results).read_text()) if args.r1_results else saved_r1_quality()
    s = result["settings"]
    print(
        f"\nR3 CET step cost ({mode}): {s['encoder']}-encoder MiniLM, layers={s['num_layers'] or 6}, "
        f"length {s['max_length']}, {s['batch_size']} queries x (1 + {s['num_negatives']}) docs, "
        f"precision {s['mixed_precision']}, {len(result['round_times']['plain'])} interleaved rounds of 2 steps per "
        f"system (after {s['warmup']} warm-up); device {result['device']}, {result['threads']} threads, CPU class "
        f"{result['cpu']['class']}{' (emulated)' if result['cpu']['emulated'] else ''}\n"
    )
    print("| system | passes per step | median step (s) | ratio to plain: median of rounds | IQR | min-max | "
          "R1 nDCG@10 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in result["times"]:
        mode_key = name.split("/", 1)[-1]
        quality = f"{r1[mode_key]:.4f}" if mode_key in r1 else ("-" if name == "plain" else "see R1")
        r = result["round_ratios"].get(name)
        spread = f"{r['q1']:.2f}-{r['q3']:.2f} | {r['min']:.2f}-{r['max']:.2f}" if r else "- | -"
        print(f"| {name} | {SYSTEMS[name]['passes']} | {medians[name]:.3f} | {ratios[name]:.2f} | {spread} | "
              f"{quality} |")
    print(
        f"\nRESULT ratio_eval_forward={ratios['cet/eval_forward']:.3f} "
        f"ratio_train_logits={ratios['cet/train_logits']:.3f} mode={mode}"
    )


def saved_r1_quality(results: Path = RESULTS.parent / "pooling_bias" / "full") -> dict[str, float]:
    """Test nDCG@10 of R1-bi's seed-0 CET runs in each weights mode, as far as they are saved."""
    files = {"eval_forward": "cet__strong-neg__seed0.json", "train_logits": "cet-tl__strong-neg__seed0.json"}
    found = {}
    for mode, name in files.items():
        if (results / name).is_file():
            found[mode] = json.loads((results / name).read_text())["test"]["aggregate"]["nDCG@10"]
    return found


if __name__ == "__main__":
    main()
