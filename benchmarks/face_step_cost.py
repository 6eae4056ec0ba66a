"""Protocol F3 (../shared/docs/benchmarks.md): face training step cost, ArcFace vs ArcFace + UNPG.

MobileFaceNet (rankface's class, the pretrained layout, random init: the cost does not depend on the weights),
batch 256 at 112x112, a normalised classifier over `--num-classes` identities, SGD with momentum. One training step
= forward, loss, backward, optimizer step, on synthetic faces and labels made with a fixed seed. The systems
alternate step by step inside one process, so the noise of a shared machine falls on both alike; the figure is the
ratio of median step times.

- `arcface`: `MarginLoss(ArcFace())` on the classifier's cosines.
- `arcface+unpg`: `UNPGLoss(ArcFace())`: the same plus in-batch negative pairs (box-and-whisker filtered).
- `ri`: the recipe's RI step (`rankface.training.face.ri_step`): the RI model (MobileFaceNet + RI regressor +
  perceptibility attention) with ArcFace, one no-grad forward of the unrecognizable images for the UI-centre
  update, then the total objective (margin + RI regression + index diversion + attention, warm-up off).

    python benchmarks/face_step_cost.py --quick    # batch 64, 1 warm-up + 3 timed steps per system (CPU smoke)
    python benchmarks/face_step_cost.py            # batch 256, 5 warm-up + 30 timed steps per system (GPU-sized)

Results are saved under benchmarks/results/face_step_cost/ (one JSON per mode, device, precision and batch) so a
rerun prints them without recomputing (`--force` recomputes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.utils.io import write_json

RESULTS = Path(__file__).resolve().parent / "results" / "face_step_cost"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed steps (smoke run)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per step (protocol: 256; quick mode: 64, a CPU-sized smoke run)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier rows (identities)")
    parser.add_argument("--images-per-identity", type=int, default=4,
                        help="images of each label in a batch: UNPG's negatives are the different-label pairs")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per system (quick 1, full 5)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per system (quick 3, full 30)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="bf16 autocast (default on CUDA) or fp32 (default on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="recompute even when a saved result exists")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (64 if args.quick else 256)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    args.steps = args.steps if args.steps is not None else (3 if args.quick else 30)
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
    settings = FaceTrainingArguments(seed=args.seed, ri=True)
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
    times: dict[str, list[float]] = {name: [] for name in systems}
    losses: dict[str, float] = {}
    for i in range(args.warmup + args.steps):
        for name, step in systems.items():  # alternate systems step by step: shared noise hits all alike
            _synchronize(device)
            start = time.perf_counter()
            losses[name] = step(pixel_values, labels)
            _synchronize(device)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
        print(f"step {i + 1}/{args.warmup + args.steps}: " + ", ".join(
            f"{n} {times[n][-1]:.3f}s" if times[n] else f"{n} warm-up" for n in systems), flush=True)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "precision": args.precision, "batch_size": args.batch_size,
        "num_classes": args.num_classes, "warmup": args.warmup, "steps": args.steps,
        "median_step_s": medians, "step_times_s": times, "final_loss": losses,
        "unpg_ratio": medians["arcface+unpg"] / medians["arcface"],
        "ri_ratio": medians["ri"] / medians["arcface"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    path = RESULTS / f"{mode}_{args.device.replace(':', '')}_{args.precision}_b{args.batch_size}.json"
    if path.is_file() and not args.force:
        result = json.loads(path.read_text())
        print(f"(saved result {path}; --force recomputes)")
    else:
        result = run(args)
        write_json(path, result)
    print()
    print(f"F3 face step cost: MobileFaceNet, batch {result['batch_size']} at 112x112, {result['precision']}, "
          f"{result['device_name']}, {result['threads']} threads, median of {result['steps']} steps")
    print()
    print("| system | median step (s) | ratio to arcface |")
    print("|---|---|---|")
    base = result["median_step_s"]["arcface"]
    for name, t in result["median_step_s"].items():
        print(f"| {name} | {t:.4f} | {t / base:.3f} |")
    ri = "nan" if result.get("ri_ratio") is None else f"{result['ri_ratio']:.3f}"
    print(f"RESULT unpg_ratio={result['unpg_ratio']:.3f} ri_ratio={ri} mode={mode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
