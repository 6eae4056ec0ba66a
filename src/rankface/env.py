"""`rankface env` / `python -m rankface.env`: what decides rankface's speed on this machine.

The CPU class and its flags (AVX2, AVX-512, native bf16, AMX), any instruction-set caps in force (see
`rankface.hardware`), the threads, torch / oneDNN / MKL versions, the kernel paths torch takes, and the precision
`precision="auto"` picks for inference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

from rankface import hardware


def environment() -> dict:
    """The facts `rankface env` prints, as a JSON-ready dict."""
    import torch

    from rankface.models._text import resolve_precision

    config = torch.__config__.show()
    onednn = re.search(r"MKL-DNN v([\w.]+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    cpu = hardware.cpu_class()
    return {
        "cpu": cpu,
        "native_bf16": hardware.native_bf16(),
        "threads": {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
                    "cpus": os.cpu_count(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "torch": torch.__version__,
        "onednn": onednn.group(1) if onednn else None,
        "onednn_available": torch.backends.mkldnn.is_available(),
        "mkl": mkl.group(1) if mkl else None,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "quantized_engine": torch.backends.quantized.engine,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "auto_precision": {"cpu": resolve_precision("auto", torch.device("cpu")),
                           **({"cuda": resolve_precision("auto", torch.device("cuda"))}
                              if torch.cuda.is_available() else {})},
    }


def format_environment(env: dict) -> str:
    cpu = env["cpu"]
    class_line = f"{cpu['class']} ({cpu['description']})"
    if cpu["emulated"]:
        class_line += f", emulated on {cpu['hardware_class']} hardware"
    threads = env["threads"]
    rows = [
        ("CPU", cpu["model"]),
        ("CPU class", class_line),
        ("CPU flags", " ".join(f"{f}={'yes' if has else 'no'}" for f, has in cpu["flags"].items())),
        ("ISA caps", " ".join(f"{k}={v}" for k, v in cpu["caps"].items()) or "none"),
        ("native bf16", "yes" if env["native_bf16"] else "no (bf16 is emulated: slower than fp32)"),
        ("threads", (f"torch {threads['torch']} (interop {threads['torch_interop']}), {threads['cpus']} CPUs, "
                     f"OMP_NUM_THREADS={threads['OMP_NUM_THREADS'] or 'unset'}")),
        ("torch", env["torch"]),
        ("oneDNN", f"{env['onednn'] or 'unknown'} ({'available' if env['onednn_available'] else 'not available'})"),
        ("MKL", env["mkl"] or "none"),
        ("ATen CPU capability", env["aten_cpu_capability"]),
        ("quantized engine", env["quantized_engine"]),
        ("CUDA", env["cuda"] or "none"),
        ("precision auto picks", ", ".join(f"{device}: {p}" for device, p in env["auto_precision"].items())),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rankface env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    args = parser.parse_args(argv)
    env = environment()
    print(json.dumps(env, indent=2) if args.json else format_environment(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
