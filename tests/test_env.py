"""rankface.hardware (CPU class, instruction-set caps) and `rankface env` / `python -m rankface.env`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rankface import hardware
from rankface.cli import main as cli_main

AVX512_BF16 = {"avx2", "fma", "avx512f", "avx512_bf16"}
AVX2 = {"avx2", "fma"}
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}


@pytest.mark.parametrize(("flags", "expected"), [
    (AVX512_BF16, "avx512-bf16"), ({"avx2", "avx512f", "amx_bf16"}, "avx512-bf16"), ({"avx2", "avx512f"}, "avx512"),
    (AVX2, "avx2"), ({"sse4_2"}, "baseline"),
])
def test_hardware_class_from_flags(flags, expected):
    info = hardware.cpu_class(flags, environ={})
    assert (info["class"], info["hardware_class"], info["emulated"], info["caps"]) == (expected, expected, False, {})
    assert info["flags"]["avx2"] == ("avx2" in flags)


def test_caps_emulate_a_smaller_class_and_decide_native_bf16():
    info = hardware.cpu_class(AVX512_BF16, environ=AVX2_CAPS)
    assert (info["class"], info["hardware_class"], info["emulated"]) == ("avx2", "avx512-bf16", True)
    assert info["caps"] == AVX2_CAPS
    assert "emulated on avx512-bf16 hardware by ONEDNN_MAX_CPU_ISA=AVX2" in hardware.describe_class(info)
    # oneDNN alone capped below AVX512_CORE_BF16: bf16 is no longer native, the class is AVX-512 without it.
    assert hardware.cpu_class(AVX512_BF16, environ={"ONEDNN_MAX_CPU_ISA": "avx512_core"})["class"] == "avx512"
    assert not hardware.native_bf16(AVX512_BF16, environ={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert not hardware.native_bf16(AVX2, environ={})
    # Caps at or above the hardware, and values no library defines, change nothing.
    for environ in ({"ONEDNN_MAX_CPU_ISA": "ALL"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"},
                    {"ATEN_CPU_CAPABILITY": "avx512"}, {"MKL_ENABLE_INSTRUCTIONS": "nonsense"}):
        info = hardware.cpu_class(AVX512_BF16, environ=environ)
        assert (info["class"], info["emulated"]) == ("avx512-bf16", False)
        assert hardware.native_bf16(AVX512_BF16, environ=environ) == torch.backends.mkldnn.is_available()
    assert hardware.cpu_class(AVX2, environ={"ATEN_CPU_CAPABILITY": "default"})["class"] == "baseline"


def test_auto_precision_follows_the_caps(monkeypatch):
    from rankface.models._text import AUTO_CPU_WITHOUT_BF16, resolve_precision

    for name, value in AVX2_CAPS.items():
        monkeypatch.setenv(name, value)
    assert resolve_precision("auto", torch.device("cpu")) == AUTO_CPU_WITHOUT_BF16


def test_rankface_env_prints_the_facts(capsys):
    assert cli_main(["env"]) == 0
    out = capsys.readouterr().out
    for label in ("CPU class", "CPU flags", "avx512_bf16=", "amx_tile=", "threads", "torch", "oneDNN",
                  "ATen CPU capability", "precision auto picks"):
        assert label in out
    assert torch.__version__ in out
    assert cli_main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["threads"]["torch"] == torch.get_num_threads()
    assert env["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["auto_precision"]["cpu"] in ("bf16", "fp32", "int8")


def test_python_m_rankface_env_under_avx2_caps_reports_the_emulated_class():
    environ = {**os.environ, **AVX2_CAPS}
    done = subprocess.run([sys.executable, "-m", "rankface.env", "--json"], env=environ, capture_output=True,
                          text=True, check=True, timeout=300)
    env = json.loads(done.stdout)
    assert env["cpu"]["class"] in ("avx2", "baseline")
    assert env["cpu"]["emulated"] == (env["cpu"]["hardware_class"] in ("avx512", "avx512-bf16"))
    assert env["native_bf16"] is False and env["auto_precision"]["cpu"] != "bf16"
    assert env["aten_cpu_capability"] in ("AVX2", "DEFAULT")  # ATen read its cap: the caps reached the libraries


def test_python_m_rankface_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "rankface", "env", "--json"], capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "cpu" in json.loads(done.stdout)
