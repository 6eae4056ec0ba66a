"""What the CPU can run fast: its instruction-set class, and the caps that emulate a smaller one.

rankface's machines come in two classes: AVX-512 with native bf16 (`avx512-bf16`) and AVX2 only (`avx2`). The
precision `auto` picks, and every speed figure, depends on the class, so benchmarks print it and `rankface env`
shows it.

A faster CPU can be made to run the kernels of a smaller class by capping each library's instruction set:

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2

(oneDNN: bf16 matmuls and convolutions; ATen: its own vectorised kernels; MKL: fp32 matmuls; FBGEMM: int8
matmuls). The class reported is then the capped one, marked `emulated`, and the native-bf16 decision follows the
caps, so `precision="auto"` picks what the capped machine would pick. Each library reads its cap once, when it
first runs: set them before Python starts.
"""

from __future__ import annotations

import os
from functools import lru_cache

# Class levels, smallest first. A cap or a CPU of a level runs the kernels of that level and below.
CLASSES = ("baseline", "avx2", "avx512", "avx512-bf16")
DESCRIPTIONS = {
    "baseline": "no AVX2",
    "avx2": "AVX2 only: no AVX-512, no native bf16",
    "avx512": "AVX-512 without native bf16",
    "avx512-bf16": "AVX-512 with native bf16",
}
FLAGS_SHOWN = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")

# Each library's cap variable and the class level of its values (upper case); a value not listed caps nothing.
_ONEDNN_LEVELS = {
    "SSE41": 0, "AVX": 0, "AVX2": 1, "AVX2_VNNI": 1, "AVX2_VNNI_2": 1, "AVX512_CORE": 2, "AVX512_CORE_VNNI": 2,
}
CAP_VARIABLES = {
    "ONEDNN_MAX_CPU_ISA": _ONEDNN_LEVELS,
    "DNNL_MAX_CPU_ISA": _ONEDNN_LEVELS,  # oneDNN's older name for the same cap
    "ATEN_CPU_CAPABILITY": {"DEFAULT": 0, "AVX2": 1},
    "MKL_ENABLE_INSTRUCTIONS": {"SSE4_2": 0, "AVX": 0, "AVX2": 1},
    "FBGEMM_ENABLE_INSTRUCTIONS": {"AVX2": 1},
}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def hardware_level(flags: frozenset[str] | set[str]) -> int:
    """Class level of a CPU with these flags (an index into `CLASSES`)."""
    if "avx512f" in flags and ("avx512_bf16" in flags or "amx_bf16" in flags):
        return 3
    if "avx512f" in flags:
        return 2
    return 1 if "avx2" in flags else 0


def isa_caps(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The instruction-set cap variables set in `environ` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in CAP_VARIABLES if environ.get(name)}


def cap_level(caps: dict[str, str], names: tuple[str, ...] | None = None) -> int:
    """The smallest class level that the caps in `caps` (only those in `names`, when given) allow."""
    level = len(CLASSES) - 1
    for name, value in caps.items():
        if names is None or name in names:
            level = min(level, CAP_VARIABLES[name].get(value.strip().upper(), level))
    return level


def cpu_class(flags: frozenset[str] | set[str] | None = None, environ: dict[str, str] | None = None) -> dict:
    """The CPU class the kernels run at: the hardware's, lowered by any instruction-set caps in force.

    Returns:
        `{"class", "description", "hardware_class", "emulated", "caps", "flags", "model"}`: `class` is one of
        `CLASSES`; `emulated` is True when caps make it smaller than the hardware's; `flags` maps each flag of
        `FLAGS_SHOWN` to whether the CPU has it.
    """
    flags = cpu_flags() if flags is None else frozenset(flags)
    caps = isa_caps(environ)
    hardware = hardware_level(flags)
    level = min(hardware, cap_level(caps))
    return {
        "class": CLASSES[level],
        "description": DESCRIPTIONS[CLASSES[level]],
        "hardware_class": CLASSES[hardware],
        "emulated": level < hardware,
        "caps": caps,
        "flags": {flag: flag in flags for flag in FLAGS_SHOWN},
        "model": cpu_model(),
    }


def native_bf16(flags: frozenset[str] | set[str] | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether bf16 matmuls run natively (oneDNN with AVX-512 bf16 or AMX), not emulated at a fraction of fp32.

    On a CPU without them torch still runs bf16, but converts in software: the R2 benchmark measured forced bf16
    4.7x slower than fp32 on an AVX2-only EPYC. The decision follows `cpu_class`, caps included, so a capped
    (emulated) smaller class decides as that class's machines do.
    """
    if cpu_class(flags, environ)["class"] != "avx512-bf16":
        return False
    import torch

    return torch.backends.mkldnn.is_available()


def describe_class(info: dict | None = None) -> str:
    """One line: `CPU class avx2 (AVX2 only ...), emulated on avx512-bf16 hardware by ONEDNN_MAX_CPU_ISA=AVX2 ...`."""
    info = cpu_class() if info is None else info
    line = f"CPU class {info['class']} ({info['description']})"
    if info["emulated"]:
        line += f", emulated on {info['hardware_class']} hardware by " + " ".join(
            f"{k}={v}" for k, v in info["caps"].items())
    elif info["caps"]:
        line += ", caps set: " + " ".join(f"{k}={v}" for k, v in info["caps"].items())
    flags = " ".join(f"{flag}={'yes' if has else 'no'}" for flag, has in info["flags"].items())
    return f"{line}; {info['model']}; {flags}"


__all__ = ["CLASSES", "cpu_class", "cpu_flags", "describe_class", "isa_caps", "native_bf16"]
