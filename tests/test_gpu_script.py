"""benchmarks/gpu/run.sh: the prepared GPU run, in its tiny mode on the CPU.

The tiny mode is the GPU run's pipeline end to end (carry folder made, unpacked as on the device, R1-bi's strong
source, the cross-encoder R1 deciding systems (one seed here, two on the GPU), R2, results packed) with tiny settings on a small
NFCorpus subset. What is checked is what a GPU run must leave behind: one saved result per (system, seed), the R1
report with its RESULT line, R2's summary, and a results archive that holds them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "run.sh"
DECIDING = ("plain__bm25-neg", "plain__strong-neg", "cet__strong-neg", "cet__bm25-neg")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared):
    work = tmp_path_factory.mktemp("gpu_tiny")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # results go to <work>/out, as the script says
    env.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run(["bash", str(SCRIPT), "--tiny", "--work", str(work)], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    return work, done


def _read_back(work: Path) -> tuple[dict, dict[str, bytes]]:
    [status_path] = (work / "results" / "gpu").glob("status_*.json")
    with tarfile.open(work / "out" / "results.tar.gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return json.loads(status_path.read_text()), files


@pytest.mark.slow
@pytest.mark.shared_data
def test_tiny_run_saves_every_result_and_packs_them(tiny_run):
    work, done = tiny_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    status, packed = _read_back(work)
    assert status["mode"] == "tiny"
    assert [status["parts"][p]["rc"] for p in ("r1-bi-strong-source", "r1-cross", "r2")] == [0, 0, 0]

    r1 = work / "results" / "pooling_bias" / "tiny-cross"
    for system in (*DECIDING, "bm25", "dense"):
        for seed in (0,):
            record = json.loads((r1 / f"{system}__seed{seed}.json").read_text())
            assert record["settings"]["encoder"] == "cross"
            assert record["settings"]["mixed_precision"] == "bf16"
            assert 0.0 <= record["test"]["aggregate"]["nDCG@10"] <= 1.0
            assert f"results/pooling_bias/tiny-cross/{system}__seed{seed}.json" in packed
            if system in ("bm25", "dense"):
                continue
            assert record["train"]["steps"] == 2  # the tiny budget, trained to the end
    # The strong negatives are R1-bi's choice, copied beside the cross-encoder results (and re-measured there).
    sources = json.loads((r1 / "data" / "negative_sources.json").read_text())
    assert sources["from"]["folder"] == "tiny-bi" and (r1 / sources["chosen"]["run_file"]).is_file()
    report = (r1 / "report.md").read_text()
    result_line = report.strip().splitlines()[-1]
    assert result_line.startswith("RESULT ") and "encoder=cross" in result_line and "seeds=1" in result_line

    r2 = work / "bench" / "results" / "rerank_throughput" / "quick"
    summaries = list(r2.glob("summary_*.json"))
    assert len(summaries) == 1
    assert f"bench/results/rerank_throughput/quick/{summaries[0].name}" in packed
    # Models and derived runs stay behind; the log travels.
    assert not [name for name in packed if "/models/" in name or name.endswith((".safetensors", ".trec"))]
    assert (work / "out" / "run.log").read_text().count("r1-cross: {'rc': 0") == 1


@pytest.mark.slow
@pytest.mark.shared_data
def test_tiny_run_read_the_carried_bm25_runs_and_weights(tiny_run):
    """The device has no Java: BM25 must come from the carried runs, not from a Lucene index built on the spot;
    and the model must be the carried (fp16-stored, widened) MiniLM, not the local package's."""
    work, done = tiny_run
    assert done.returncode == 0
    device_cache = work / "device" / "home" / ".cache" / "rankface"
    [collection_cache] = list(device_cache.glob("nfcorpus-tiny-*"))  # beside it: R1-bi's document embeddings
    assert sorted(p.name for p in (collection_cache / "runs").iterdir()) == [
        f"bm25.k1=0.9.b=0.4.{split}.top100.trec" for split in ("dev", "test", "train")]
    assert not (collection_cache / "index").exists()
    manifest = json.loads((work / "carry" / "manifest.json").read_text())
    # fp16 keeps 11 significant bits: relative rounding <= 2^-11 for normal values (floored at 2^-14 in magnitude).
    assert manifest["minilm"]["max_relative_rounding"] <= 2.0**-11 + 1e-9
    assert manifest["minilm"]["rounding_effect"]["max_abs_cosine_difference"] < 1e-2
    assert (work / "device" / "minilm" / "model.safetensors").stat().st_size > 80e6  # widened back to fp32
