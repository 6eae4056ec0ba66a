"""Protocol F3 (../shared/docs/benchmarks.md): face training step cost, ArcFace vs ArcFace + UNPG.

MobileFaceNet (rankface's class, the pretrained layout, random init: the cost does not depend on the weights),
batch 256 at 112x112, a normalised classifier over `--num-classes` identities, SGD with momentum. One training step
= forward, loss, backward, optimizer step, on synthetic faces and labels made with a fixed seed. The systems run
round by round inside one process: each round steps every system twice, in a palindromic order (`A B C C B A`,
rotated every round), and the figure is the median over rounds of each round's ratio to `arcface`, with the
spread. Load from other processes that changes between rounds cancels within each round's ratio, load that drifts
steadily within a round falls on all systems alike, and the median ignores the rounds a burst hit unevenly.

- `arcface`: `MarginLoss(ArcFace())` on the classifier's cosines.
- `arcface+unpg`: `UNPGLoss(ArcFace())`: the same plus in-batch negative pairs (box-and-whisker filtered).
- `ri`: the recipe's RI step (`rankface.training.face.ri_step`): the RI model (MobileFaceNet + RI regressor +
  perceptibility attention) with ArcFace, one no-grad forward of the unrecognizable images for the UI-centre
  update, then the total objective (margin + RI regression + index diversion + attention, warm-up off).

    python benchmarks/face_step_cost.py --quick    # batch 64, 1 warm-up + 8 timed rounds (16 steps per system)
    python benchmarks/face_step_cost.py            # batch 256, 2 warm-up + 15 timed rounds (30 steps per system)

Results are saved under benchmarks/results/face_step_cost/<mode>/ (one JSON per device, precision, batch and CPU
class) so a rerun prints them without recomputing (`--force` recomputes); every computed run is also appended to
`history.jsonl` there, so repeated runs can be compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import class_tag, cpu_class, format_spread, print_cpu_class, ratio_stats, round_orders

from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.utils.io import atomic_write, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "face_step_cost"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 64 and 8 timed rounds (CPU-sized)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (protocol: 256; quick mode: 64, a CPU-sized smoke run)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier rows (identities)")
    parser.add_argument("--images-per-identity", type=int, default=4,
                        help="images of each label in a batch: UNPG's negatives are the different-label pairs")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds (quick 1, full 2)")
    parser.add_argument("--rounds", "--steps", dest="steps", type=int, default=None,
                        help="timed rounds, two steps of each system per round (quick 8, full 15)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="bf16 autocast (default on CUDA) or fp32 (default on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="recompute even when a saved result exists")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (64 if args.quick else 256)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.steps = args.steps if args.steps is not None else (8 if args.quick else 15)
    args.precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.batch_size % args.images_per_identity:
        parser.error("--batch-size must be a multiple of --images-per-identity")
    return args


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_system(name: str, args: argparse.Namespace, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                          float]:
    """A closure running one training step of system `name` on `(pixel_values, labels)`; returns the loss."""
    from rankface.losses.margins import ArcFace, MarginLoss, NormalizedClassifier
    from rankface.losses.unpg import UNPGLoss

    torch.manual_seed(args.seed)
    model = MobileFaceNetModel(MobileFaceNetConfig()).to(device).train()
    classifier = NormalizedClassifier(model.config.embedding_size, args.num_classes).to(device)
    if name == "arcface":
        loss_fn = MarginLoss(ArcFace())
    elif name == "arcface+unpg":
        loss_fn = UNPGLoss(ArcFace())
    else:
        raise ValueError(f"unknown system {name!r}")
    params = list(model.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    autocast = args.precision == "bf16"

    def step(pixel_values: torch.Tensor, labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            embedding = model(pixel_values).embedding
            cos = classifier(embedding)
            loss = loss_fn(embedding, labels, cos)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def ri_system(args: argparse.Namespace, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """One training step of the RI model, exactly as `recipes/train_face.py` runs it (`ri_step`), all losses on."""
    from accelerate import Accelerator

    from rankface.losses.margins import ArcFace, MarginLoss
    from rankface.losses.recognizability import RecognizabilityLoss
    from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel
    from rankface.training.face import FaceRecognitionModule, ri_step
    from rankface.training.face_arguments import FaceTrainingArguments

    torch.manual_seed(args.seed)
    encoder = RecognizabilityModel(RecognizabilityConfig(backbone=MobileFaceNetConfig()))
    model = FaceRecognitionModule(encoder, args.num_classes).to(device).train()
    # the RI settings F3's figures were measured with (the paper's, no target prototypes): issue 21's defaults add a
    # pooled feature map for the regressor and a gather of the prototypes, which this step does not time
    settings = FaceTrainingArguments(seed=args.seed, ri=True, ri_form="product", ri_target_prototypes="classifier",
                                     ri_quality_input="embedding")
    ri_loss = RecognizabilityLoss(MarginLoss(ArcFace()), warmup_steps=0)
    accelerator = Accelerator(cpu=device.type == "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    autocast = args.precision == "bf16"
    calls = 0

    def step(pixel_values: torch.Tensor, labels: torch.Tensor) -> float:
        nonlocal calls
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = ri_step(accelerator, model, ri_loss, pixel_values, labels, settings, calls)
        loss.backward()
        optimizer.step()
        calls += 1
        return float(loss.detach())

    return step


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    pixel_values = (torch.rand(args.batch_size, 3, 112, 112, generator=gen) * 2 - 1).to(device)
    # NHWC convolution kernels: much faster for MobileFaceNet's depthwise layers on CPU (same for every system).
    pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
    n_ids = args.batch_size // args.images_per_identity
    if n_ids > args.num_classes:
        raise ValueError(f"--num-classes {args.num_classes} is below the {n_ids} identities a batch holds")
    ids = torch.randperm(args.num_classes, generator=gen)[:n_ids]
    labels = ids.repeat_interleave(args.images_per_identity).to(device)
    systems: dict[str, Callable] = {name: make_system(name, args, device) for name in ("arcface", "arcface+unpg")}
    systems["ri"] = ri_system(args, device)
    times: dict[str, list[float]] = {name: [] for name in systems}  # every timed step
    round_times: dict[str, list[float]] = {name: [] for name in systems}  # per round: the sum of its two steps
    round_cpu: dict[str, list[float]] = {name: [] for name in systems}  # the same in this process's CPU time
    losses: dict[str, float] = {}
    for i, order in enumerate(round_orders(list(systems), args.warmup + args.steps, palindrome=True)):
        spent = dict.fromkeys(systems, 0.0)
        cpu_spent = dict.fromkeys(systems, 0.0)
        for name in order:
            _synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            losses[name] = systems[name](pixel_values, labels)
            _synchronize(device)
            seconds = time.perf_counter() - start
            spent[name] += seconds
            cpu_spent[name] += time.process_time() - cpu_start
            if i >= args.warmup:
                times[name].append(seconds)
        if i >= args.warmup:
            for name in systems:
                round_times[name].append(spent[name])
                round_cpu[name].append(cpu_spent[name])
        print(f"round {i + 1}/{args.warmup + args.steps}{' (warm-up)' if i < args.warmup else ''}: " + ", ".join(
            f"{n} {spent[n]:.3f}s" for n in systems) + f"; unpg/arcface {spent['arcface+unpg'] / spent['arcface']:.3f}"
            f" (CPU time {cpu_spent['arcface+unpg'] / cpu_spent['arcface']:.3f})", flush=True)
    ratios = {name: ratio_stats(round_times[name], round_times["arcface"]) for name in ("arcface+unpg", "ri")}
    cpu_ratios = {name: ratio_stats(round_cpu[name], round_cpu["arcface"]) for name in ("arcface+unpg", "ri")}
    return {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_class(), "threads": torch.get_num_threads(), "precision": args.precision,
        "batch_size": args.batch_size, "num_classes": args.num_classes, "warmup": args.warmup, "steps": args.steps,
        "median_step_s": {name: statistics.median(t) for name, t in times.items()}, "step_times_s": times,
        "round_times_s": round_times, "round_cpu_s": round_cpu, "final_loss": losses, "round_ratios": ratios,
        "round_cpu_ratios": cpu_ratios,
        "unpg_ratio": ratios["arcface+unpg"]["median"], "ri_ratio": ratios["ri"]["median"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "full"
    cpu = print_cpu_class()
    tag = class_tag(cpu) if not args.device.startswith("cuda") else "gpu"
    folder = RESULTS / mode
    path = folder / f"{args.device.replace(':', '')}_{args.precision}_b{args.batch_size}_{tag}.json"
    if path.is_file() and not args.force:
        result = json.loads(path.read_text())
        print(f"(saved result {path}; --force recomputes)")
    else:
        result = run(args)
        write_json(path, result)
        append_history(folder / "history.jsonl", result, mode)
    print()
    print(f"F3 face step cost ({mode}): MobileFaceNet, batch {result['batch_size']} at 112x112, "
          f"{result['precision']}, {result['device_name']}, {result['threads']} threads, CPU class "
          f"{result['cpu']['class']}{' (emulated)' if result['cpu']['emulated'] else ''}; {result['steps']} "
          f"interleaved rounds (after {result['warmup']} warm-up): median of the per-round ratios to arcface")
    print()
    print("| system | median step (s) | ratio to arcface: median of rounds | IQR | min-max |")
    print("|---|---:|---:|---:|---:|")
    for name, t in result["median_step_s"].items():
        r = result["round_ratios"].get(name)
        spread = (f"{r['median']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} | {r['min']:.3f}-{r['max']:.3f}" if r
                  else "1 | - | -")
        print(f"| {name} | {t:.4f} | {spread} |")
    print(f"\nunpg ratio {format_spread(result['round_ratios']['arcface+unpg'])}")
    if "round_cpu_ratios" in result:
        print(f"unpg ratio in this process's CPU time {format_spread(result['round_cpu_ratios']['arcface+unpg'])}")
    print(f"RESULT unpg_ratio={result['unpg_ratio']:.3f} ri_ratio={result['ri_ratio']:.3f} mode={mode}")
    return 0


def append_history(path: Path, result: dict, mode: str) -> None:
    """Add one line per computed run (time, CPU class, ratios) to `path`, rewriting it atomically."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": mode, "cpu_class": result["cpu"]["class"],
            "emulated": result["cpu"]["emulated"], "threads": result["threads"], "batch_size": result["batch_size"],
            "unpg": {k: v for k, v in result["round_ratios"]["arcface+unpg"].items() if k != "ratios"},
            "ri": {k: v for k, v in result["round_ratios"]["ri"].items() if k != "ratios"}}
    previous = path.read_text(encoding="utf-8") if path.is_file() else ""
    with atomic_write(path) as handle:
        handle.write(previous + json.dumps(line) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
