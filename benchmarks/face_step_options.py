"""What each cheap-step option of the face recipe saves: bf16 autocast, channels_last, DataLoader workers.

The F1 recipe's real step (pretrained MobileFaceNet, normalised classifier over the training identities of half A,
ArcFace, SGD with momentum, real lfw112 images with the very-low-resolution augmentation), run in variants that differ
in one option each. Two interleaved experiments, each reported as the median of per-round ratios to its reference
(`benchmarks/_common.ratio_stats`; these machines are shared, so only ratios inside one round mean anything):

- compute (the same prepared batch for every variant, so only the arithmetic differs): `fp32` (reference),
  `channels_last`, `bf16` (autocast), `bf16+channels_last`. Each round steps every variant twice, palindromic.
- data (each variant takes its batches from its own DataLoader, so the augmentation cost is included): `workers0`
  (reference: images decoded and degraded in the training process) against `workers1` / `workers2`. Each round runs
  `--block` steps of every variant from a fresh DataLoader iterator (worker start-up included, as once per epoch).

    python benchmarks/face_step_options.py --quick     # batch 32, 4 rounds, block 3
    python benchmarks/face_step_options.py             # batch 64, 8 rounds, block 4
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import format_spread, print_cpu_class, ratio_stats, round_orders

from rankface.utils.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "face_step_options"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=None, help="quick 32, full 64 (the F1 batch)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (quick 4, full 8)")
    parser.add_argument("--block", type=int, default=None, help="steps per variant per round in the data experiment")
    parser.add_argument("--experiments", nargs="+", default=["compute", "data"], choices=["compute", "data"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (32 if args.quick else 64)
    args.rounds = args.rounds or (4 if args.quick else 8)
    args.block = args.block or (3 if args.quick else 4)
    args.mode = "quick" if args.quick else "full"
    return args


def recipe_parts(batch_size: int):
    """(model, loss, train set) of the F1 arcface recipe on half A, with the pretrained start."""
    from rankface.losses.margins import MarginLoss, build_head
    from rankface.training.face import FaceRecognitionModule, build_encoder, prepare_face_data
    from rankface.training.face_arguments import parse_face_training_args

    config = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "lfw_vlr_arcface.yaml"
    args = parse_face_training_args(["--config", str(config), "--check_images", "false", "--eval_at_end", "false",
                                     "--batch_size", str(batch_size)])
    args.eval_steps = None
    data = prepare_face_data(args)
    model = FaceRecognitionModule(build_encoder(args), data.num_classes).train()
    return model, MarginLoss(build_head("arcface")), data.train_set


def make_step(model, loss_fn, channels_last: bool, bf16: bool):
    """One training step of a private copy of `model` with the given options; returns `step(pixels, labels)`."""
    model = copy.deepcopy(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)

    def step(pixel_values: torch.Tensor, labels: torch.Tensor) -> float:
        if channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            embedding, cos = model(pixel_values)
            loss = loss_fn(embedding, labels, cos)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def compute_experiment(args, model, loss_fn, train_set) -> dict:
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    pixel_values, labels = next(iter(loader))
    variants = {"fp32": (False, False), "channels_last": (True, False), "bf16": (False, True),
                "bf16+channels_last": (True, True)}
    steps = {name: make_step(model, loss_fn, *options) for name, options in variants.items()}
    rounds = {name: [] for name in steps}
    for i, order in enumerate(round_orders(list(steps), args.rounds + 1, palindrome=True)):
        spent = dict.fromkeys(steps, 0.0)
        for name in order:
            start = time.perf_counter()
            steps[name](pixel_values, labels)
            spent[name] += time.perf_counter() - start
        if i:  # round 0 warms up every variant (oneDNN primitive caches)
            for name in steps:
                rounds[name].append(spent[name] / 2)
        print(f"compute round {i}{' (warm-up)' if not i else ''}: "
              + ", ".join(f"{n} {spent[n] / 2:.2f}s" for n in steps), flush=True)
    return {"seconds_per_step": {n: statistics.median(t) for n, t in rounds.items()}, "round_seconds": rounds,
            "ratio_to_fp32": {n: ratio_stats(rounds[n], rounds["fp32"]) for n in steps if n != "fp32"}}


def data_experiment(args, model, loss_fn, train_set) -> dict:
    step = make_step(model, loss_fn, channels_last=True, bf16=True)  # the cheapest compute variant
    variants = {"workers0": 0, "workers1": 1, "workers2": 2}
    rounds = {name: [] for name in variants}
    fetch = {name: [] for name in variants}
    for i, order in enumerate(round_orders(list(variants), args.rounds + 1)):
        for name in order:
            loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                                 num_workers=variants[name],
                                                 generator=torch.Generator().manual_seed(i))
            start = time.perf_counter()
            waited = 0.0
            batches = iter(loader)
            for _ in range(args.block):
                before = time.perf_counter()
                pixel_values, labels = next(batches)
                waited += time.perf_counter() - before
                step(pixel_values, labels)
            del batches
            if i:
                rounds[name].append((time.perf_counter() - start) / args.block)
                fetch[name].append(waited / args.block)
        if i:
            print(f"data round {i}: " + ", ".join(f"{n} {rounds[n][-1]:.2f}s/step (waited {fetch[n][-1]:.2f}s)"
                                                  for n in variants), flush=True)
    return {"seconds_per_step": {n: statistics.median(t) for n, t in rounds.items()},
            "wait_per_step": {n: statistics.median(t) for n, t in fetch.items()}, "round_seconds": rounds,
            "ratio_to_workers0": {n: ratio_stats(rounds[n], rounds["workers0"]) for n in variants if n != "workers0"}}


def batch_preparation_seconds(train_set, batch_size: int, repeats: int = 3) -> float:
    """Seconds to decode, degrade and normalise one batch in this process (what workers take off the loop)."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(repeats):
        idx = rng.choice(len(train_set), size=batch_size, replace=False)
        start = time.perf_counter()
        for j in idx.tolist():
            train_set[j]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = print_cpu_class()
    model, loss_fn, train_set = recipe_parts(args.batch_size)
    result = {"mode": args.mode, "batch_size": args.batch_size, "rounds": args.rounds, "cpu": cpu,
              "batch_preparation_s": batch_preparation_seconds(train_set, args.batch_size)}
    print(f"preparing one batch of {args.batch_size} in-process: {result['batch_preparation_s']:.2f}s", flush=True)
    if "compute" in args.experiments:
        result["compute"] = compute_experiment(args, model, loss_fn, train_set)
    if "data" in args.experiments:
        result["data"] = data_experiment(args, model, loss_fn, train_set)
    write_json(RESULTS / args.mode / f"b{args.batch_size}_{cpu['class']}.json", result)
    print(f"\nFace step options ({args.mode}, batch {args.batch_size}, {cpu['class']}, {args.threads} threads): "
          "median of per-round ratios (lower is cheaper)\n")
    print("| experiment | variant | s/step (median) | ratio to reference |")
    print("|---|---|---:|---|")
    keys = {}
    for exp, ref in (("compute", "fp32"), ("data", "workers0")):
        if exp not in result:
            continue
        ratios = result[exp][f"ratio_to_{ref}"]
        print(f"| {exp} | {ref} | {result[exp]['seconds_per_step'][ref]:.2f} | 1 |")
        for name, stats in ratios.items():
            print(f"| {exp} | {name} | {result[exp]['seconds_per_step'][name]:.2f} | {format_spread(stats)} |")
            keys[name.replace("+", "_")] = f"{stats['median']:.3f}"
    print("RESULT " + " ".join(f"{k}={v}" for k, v in keys.items()) + f" mode={args.mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
