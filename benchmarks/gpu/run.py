"""One prepared GPU run (issue 10, section 4): the cross-encoder R1 deciding systems, then R2, on one H200.

What it runs, in this order (each part resumable: the benchmarks skip what is saved):

1. **R1-cross** (`benchmarks/pooling_bias.py --encoder cross`): plain/bm25-neg, plain/strong-neg, cet/strong-neg,
   cet/bm25-neg over seeds 0 and 1 (seed 0's four first), all 6 MiniLM layers, length 192, K = 3, bf16 autocast,
   no T or K sweep. Results: `benchmarks/results/pooling_bias/full-cross-gpu/`. The `strong` negatives are the ones
   R1-bi chose (`--strong-from benchmarks/results/pooling_bias/full-query-side`, committed: its fine-tuned
   bi-encoder's top 10): a cross-encoder cannot search the corpus, so no retriever is trained on the GPU (R1-bi's
   took 860 s for 800 query-side steps on 2 CPU cores; it is not repeated here).
2. **R2** (`benchmarks/rerank_throughput.py`, full mode: all 32,500 test pairs), after R1, with the time left. R2 is a
   CPU benchmark today: it is given `--device cuda` only if its `--help` offers `--device`; without a GPU path it
   is skipped (its full mode on the device's 16 CPU cores would take ~10 min, estimate below), unless `--r2 cpu`.

The device machine receives only this checkout: the shared data, the MiniLM weights and the packages it lacks travel
in `benchmarks/gpu/carry/` (git-ignored), made here beforehand by `prepare`:
- NFCorpus and its BM25 top-100 runs (train/dev/test, computed here with pyserini, which needs Java: the device has
  neither), as one `data.tar.xz`; placed on the device where `rankface.retrieval.first_stage.bm25_run` finds them;
- all-MiniLM-L6-v2 stored in **fp16** (45 MB; the fp32 file is 91 MB and the whole transfer is capped at 64 MiB). It is
  widened back to fp32 on the device: every weight is off by at most 2^-11 relative (fp16's rounding; bf16 autocast
  rounds the matmul inputs to 2^-8 anyway). `prepare` measures the effect on scores and writes it in
  `carry/manifest.json`. So the GPU table starts from these rounded weights; the R1 comparison is within the run;
- wheels for the device's Python 3.12 (`ir_datasets`, `ir_measures`, `pytrec_eval-terrier`, `lz4`, at the versions
  of this venv); everything else is the device image's (torch 2.11 + CUDA, transformers, accelerate, peft,
  sentence-transformers, scipy, matplotlib). The venv here cannot travel (Python 3.11, CPU torch, > 1 GB).

How to run (the lead):

    .venv/bin/python benchmarks/gpu/run.py prepare             # here: builds benchmarks/gpu/carry, checks the size
    device run: command "bash benchmarks/gpu/run.sh", carry ["benchmarks/gpu/carry"], timeout_s 600
    tar xzf <files_at>/results.tar.gz -C .                     # here: the saved results, then commit them
    PYTHON=.venv/bin/python bash benchmarks/gpu/run.sh --tiny  # the same pipeline on the CPU, tiny (the test)

Results come back only through `$OUT`: after every part the script rewrites `$OUT/results.tar.gz` (the result
JSON/MD/PNG files, relative to the repo root; models and caches stay behind) and `$OUT/run.log`, so a run killed at
its limit still returns what it finished. The log and a status JSON are also written under `benchmarks/results/gpu/`.

Sizing (an ESTIMATE until it has run on an H200; the budget is 540 s of the lead's 600 s command limit):
- Measured here: one plain cross-encoder training step at these settings (6 layers, length 192, fp32, AdamW,
  clipping), 16 queries x (1 + 3) NFCorpus docs, on 2 CPU cores at load ~13 (torch 2 threads): 59 s (median of 3
  after a warm-up; /tmp script, `CrossEncoder.collate_groups` + forward + backward + step). A CET step
  (eval-forward weights: relevance and selection models trained, plus an extra forward) costs 2.60x a plain one
  (R3, measured on this CPU class). That step is ~0.84 TFLOP (fwd + bwd ~ 3 x 2 x 10.6 M non-embedding weights x
  12,288 tokens), so the loaded cores ran ~14 GFLOP/s (idle ones ~4-6x more).
- Assumption (stated, not measured): on the H200 in bf16 the step is overhead-bound: ~30 ms of per-step cost
  (~400 eager kernel launches with autograd and Python, tokenizing the batch, the loss sync) plus its FLOPs at
  >= 100 TFLOP/s effective (an eighth of the 790 TFLOP/s measured on large bf16 matmuls; these are 24 k x 384 x
  1536 GEMMs). That is ~1,500x the loaded 2 cores (~300x idle ones). Because the overhead dominates, batch 32
  queries is used instead of 16: twice the training signal for ~+8 ms. Plain step ~0.05 s, CET step ~0.13 s.
- Steps: 400 x 32 queries = 12,800 queries per system (R1's floor: 800 x 16; ~7 epochs of the 1,720 training
  groups). Training: 2 seeds x 400 x (2 x 0.05 + 2 x 0.13) s = 288 s.
- Evaluation per (system, seed): test + dev, 42,500 pairs at length 192 (~5 s: ~170 TFLOP of forward work, 1-2 s
  in bf16, and the tokenizing, in parallel) and the dev curve points at steps 0, 200, 400 plus the trainer's final one (4 x
  10,000 pairs, ~5 s): ~10 s x 8 = 80 s. Per-run fixed cost (training data, 1-2 model loads, saving): ~6 s x 8 = 48 s.
- Start-up, data, the BM25 and dense baselines (one corpus embedding) and the strong source's re-measure: ~40 s.
- R1 total ~456 s, leaving ~70 s of the 540 s. R2 gets what is left (it needs a GPU path, see above). R2 on the
  device's CPU instead: ~6 GFLOP per pair at length 256; 16 cores at ~0.8 TFLOP/s fp32 give ~130 pairs/s, so
  32,500 pairs take ~250 s per fp32 system, ~10 min for its four: it does not fit.
If R1 runs over, the part is stopped at the budget (the (system, seed) in progress is lost, the others are saved). To
finish it, unpack the returned results here first (they must travel with the working tree to be skipped), then run
the same command again. The log has every system's train and eval seconds, to resize by.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
CARRY = Path(__file__).resolve().parent / "carry"
DECIDING = ("plain/bm25-neg", "plain/strong-neg", "cet/strong-neg", "cet/bm25-neg")
SPLITS = ("train", "dev", "test")
BM25_RUN = "bm25.k1=0.9.b=0.4.{split}.top100.trec"  # the name `first_stage.bm25_run` caches its run under
MINILM_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json")
WHEELS = ("ir_datasets", "ir_measures", "pytrec_eval-terrier", "lz4")  # what the device image lacks
TRANSFER_LIMIT = 64 * 2**20  # the device tool's cap on the working tree that travels
RESULT_SUFFIXES = {".json", ".jsonl", ".md", ".png", ".run", ".log"}  # what is committed of a results folder
SKIP_DIRS = {"models", "runs", "cache", "checkpoints"}

# Settings of the GPU run (sizing in the module docstring) and of the tiny CPU run (the test's).
GPU = {
    "seeds": "0,1", "num_layers": None, "max_length": 192, "num_negatives": 3, "batch_size": 32, "steps": 400,
    "eval_steps": 200, "dev_max_queries": 100, "max_train_queries": None, "mixed_precision": "bf16",
    "eval_batch_size": 256, "budget_s": 540, "r2_min_s": 60,
}
TINY = {  # one seed and one layer: the test runs on 2 shared cores
    "seeds": "0", "num_layers": 1, "max_length": 48, "num_negatives": 3, "batch_size": 4, "steps": 2,
    "eval_steps": 2, "dev_max_queries": 4, "max_train_queries": 20, "mixed_precision": "bf16",
    "eval_batch_size": 64, "budget_s": 900, "r2_min_s": 0,
}


# ---------------------------------------------------------------------------------------------- log
class Log:
    """Lines to stdout (the device tool returns its tail) and to a log file."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        print(line, flush=True)
        self.handle.write(line + "\n")
        self.handle.flush()

    def raw(self, line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()
        self.handle.write(line)
        self.handle.flush()


# ---------------------------------------------------------------------------------------------- prepare (here)
def make_tiny_collection(source: Path, target: Path, seed: int = 0, n_train: int = 40, n_dev: int = 6,
                         n_test: int = 8, n_extra_docs: int = 60, max_words: int = 30) -> Path:
    """A small NFCorpus subset with the same layout: queries with a grade >= 2 judgment, up to 4 of their judged docs
    each, random other docs as distractors, texts cut to `max_words` words (the tiny run's data)."""
    rng = random.Random(seed)
    qrels = {}
    for split in SPLITS:
        qrels[split] = {}
        for line in (source / f"qrels.{split}.txt").read_text(encoding="utf-8").splitlines():
            qid, _, docid, grade = line.split()
            qrels[split].setdefault(qid, {})[docid] = int(grade)
    docs = {}
    for line in (source / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        docs[record["id"]] = record["contents"]
    chosen, kept = {}, set()
    for split, n in (("train", n_train), ("dev", n_dev), ("test", n_test)):
        candidates = sorted(q for q, judged in qrels[split].items() if max(judged.values()) >= 2)
        chosen[split] = sorted(rng.sample(candidates, n))
        for q in chosen[split]:
            best = sorted(qrels[split][q].items(), key=lambda kv: (-kv[1], kv[0]))[:4]
            kept.update(d for d, _ in best)
    kept.update(rng.sample(sorted(set(docs) - kept), n_extra_docs))
    target.mkdir(parents=True, exist_ok=True)
    with (target / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for docid in sorted(kept):
            text = " ".join(docs[docid].split()[:max_words])
            handle.write(json.dumps({"id": docid, "contents": text}) + "\n")
    for split in SPLITS:
        queries = dict(line.split("\t", 1) for line in
                       (source / f"queries.{split}.tsv").read_text(encoding="utf-8").splitlines())
        (target / f"queries.{split}.tsv").write_text("".join(f"{q}\t{queries[q]}\n" for q in chosen[split]),
                                                     encoding="utf-8")
        (target / f"qrels.{split}.txt").write_text(
            "".join(f"{q} 0 {d} {g}\n" for q in chosen[split] for d, g in sorted(qrels[split][q].items())
                    if d in kept), encoding="utf-8")
    return target


def pack_data(collection: Path, carry: Path, cache_dir: str) -> dict:
    """`carry/data.tar.xz`: the collection folder and its BM25 runs (computed here with pyserini if not cached)."""
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import collection_cache

    coll = load_collection(collection)
    from rankface.retrieval.first_stage import bm25_run

    for split in SPLITS:
        bm25_run(coll, split, depth=100, cache_dir=cache_dir)
    runs = collection_cache(coll, cache_dir) / "runs"
    with tarfile.open(carry / "data.tar.xz", "w:xz") as tar:
        for path in sorted(collection.iterdir()):
            if path.is_file():
                tar.add(path, arcname=f"collection/{collection.name}/{path.name}")
        for split in SPLITS:
            tar.add(runs / BM25_RUN.format(split=split), arcname=f"bm25/{BM25_RUN.format(split=split)}")
    return {"collection": collection.name, "bytes": (carry / "data.tar.xz").stat().st_size}


def copy_minilm_files(source: Path, target: Path) -> None:
    """The MiniLM folder's files other than its weights (config, tokenizer, pooling), copied to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in MINILM_FILES:
        if (source / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)


def pack_minilm(carry: Path) -> dict:
    """`carry/minilm-fp16/`: the MiniLM folder with its weights stored in fp16 (widened again on the device)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from rankface.paths import minilm_path

    source, target = minilm_path(), carry / "minilm-fp16"
    copy_minilm_files(source, target)
    weights = load_file(str(source / "model.safetensors"))
    narrow = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in weights.items()}
    worst = max(float(np.max(np.abs(narrow[k].astype(np.float32) - v) / np.maximum(np.abs(v), 2.0**-14)))
                for k, v in weights.items() if v.dtype == np.float32)
    save_file(narrow, str(target / "model.safetensors"), metadata={"format": "pt"})
    return {"bytes": (target / "model.safetensors").stat().st_size, "max_relative_rounding": worst}


def widen_minilm(source: Path, target: Path) -> Path:
    """The carried fp16 MiniLM as an fp32 Hugging Face folder (what `rankface.paths.minilm_path` returns here)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    copy_minilm_files(source, target)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in weights.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def rounding_effect(widened: Path, collection: Path, n_pairs: int = 32) -> dict:
    """Max |score difference| between the original and the fp16-rounded MiniLM: zero-shot bi-encoder cosines of
    `n_pairs` (query, judged doc) pairs of the test split, fp32 on the CPU."""
    import numpy as np

    from rankface.models.bi_encoder import BiEncoder
    from rankface.paths import minilm_path

    queries = dict(line.split("\t", 1) for line in (collection / "queries.test.tsv").read_text().splitlines())
    docs = {}
    for line in (collection / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        docs[record["id"]] = record["contents"]
    pairs = []
    for line in (collection / "qrels.test.txt").read_text().splitlines()[:n_pairs]:
        qid, _, docid, _ = line.split()
        pairs.append((queries[qid], docs[docid]))
    scores = []
    for folder in (minilm_path(), widened):
        model = BiEncoder.from_pretrained(folder, max_length=128, device="cpu")
        q = model.encode_query([p[0] for p in pairs], show_progress_bar=False, precision="fp32")
        d = model.encode_document([p[1] for p in pairs], show_progress_bar=False, precision="fp32")
        scores.append(np.sum(q * d, axis=1))
    return {"pairs": len(pairs), "max_abs_cosine_difference": float(np.max(np.abs(scores[0] - scores[1])))}


def download_wheels(carry: Path) -> list[str]:
    """Wheels of what the device image lacks, for its CPython 3.12 on x86-64, at this venv's versions."""
    from importlib.metadata import version

    target = carry / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                                             "manylinux2014_x86_64", "manylinux1_x86_64")]
    specs = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version=3.12", "--implementation=cp", *platforms, "-d", str(target), *specs], check=True)
    return sorted(p.name for p in target.glob("*.whl"))


def transfer_bytes(carry: Path) -> int:
    """What the device tool would send: tracked and untracked-not-ignored files, plus the carried folder."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    total = sum((REPO / p).stat().st_size for p in listed if p and (REPO / p).is_file())
    return total + sum(p.stat().st_size for p in carry.rglob("*") if p.is_file())


def prepare(carry: Path, collection: Path, cache_dir: str, wheels: bool, log) -> dict:
    """Build the carry folder for a run (the device machine has no network, no shared data and no Java)."""
    if carry.exists():
        shutil.rmtree(carry)
    carry.mkdir(parents=True)
    manifest = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log(f"prepare: packing {collection} and its BM25 runs")
    manifest["data"] = pack_data(collection, carry, cache_dir)
    log("prepare: MiniLM weights in fp16")
    manifest["minilm"] = pack_minilm(carry)
    with tempfile.TemporaryDirectory() as tmp:
        manifest["minilm"]["rounding_effect"] = rounding_effect(widen_minilm(carry / "minilm-fp16", Path(tmp)),
                                                                collection)
    log(f"prepare: fp16 rounding: {manifest['minilm']}")
    if wheels:
        manifest["wheels"] = download_wheels(carry)
        log(f"prepare: wheels {manifest['wheels']}")
    (carry / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


# ---------------------------------------------------------------------------------------------- setup (device)
def setup(carry: Path, work: Path, log) -> dict[str, str]:
    """Unpack the carry folder under `work` and return the environment the benchmarks run with."""
    from rankface.data.ir import load_collection
    from rankface.retrieval.first_stage import collection_cache

    shared = work / "shared"
    with tarfile.open(carry / "data.tar.xz") as tar:
        tar.extractall(work / "unpacked", filter="data")
    (shared / "data" / "ir").mkdir(parents=True, exist_ok=True)
    [collection] = list((work / "unpacked" / "collection").iterdir())
    target = shared / "data" / "ir" / collection.name
    if not target.exists():
        shutil.move(str(collection), target)
    minilm = widen_minilm(carry / "minilm-fp16", work / "minilm")
    home = work / "home"
    cache_dir = home / ".cache" / "rankface"  # `~/.cache/rankface`, the benchmarks' default cache, under HOME=home
    runs = collection_cache(load_collection(target), cache_dir) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        shutil.copy2(work / "unpacked" / "bm25" / BM25_RUN.format(split=split), runs / BM25_RUN.format(split=split))
    log(f"setup: collection {target}, BM25 runs in {runs}, MiniLM widened to fp32 in {minilm}")
    return {"RANKFACE_SHARED": str(shared), "RANKFACE_MINILM": str(minilm), "HOME": str(home),
            "IR_DATASETS_HOME": str(work / "ir_datasets"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            "COLLECTION": str(target)}


# ---------------------------------------------------------------------------------------------- parts
def run_part(name: str, cmd: list[str], env: dict[str, str], seconds: float, log) -> dict:
    """Run one part as a child process group, its output into the log; stopped after `seconds`."""
    if seconds <= 0:
        log(f"{name}: skipped, no time left in the budget")
        return {"rc": None, "seconds": 0.0, "timed_out": True, "skipped": "no time left"}
    log(f"{name}: {' '.join(cmd)} (at most {seconds:.0f} s)")
    started = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()
        os.killpg(child.pid, signal.SIGTERM)

    timer = threading.Timer(seconds, stop)
    timer.start()
    try:
        for line in child.stdout:
            log.raw(line)
        rc = child.wait()
    finally:
        timer.cancel()
    result = {"rc": rc, "seconds": round(time.perf_counter() - started, 1), "timed_out": stopped.is_set()}
    log(f"{name}: {result}")
    return result


def pooling_bias_cmd(python: str, settings: dict, encoder: str, systems: list[str], out: Path, collection: str,
                     strong_from: Path | None, seeds: str) -> list[str]:
    cmd = [python, str(BENCH / "pooling_bias.py"), "--encoder", encoder, "--systems", *systems, "--seeds", seeds,
           "--sweep", "", "--k-sweep", "", "--collection", collection, "--results-dir", str(out),
           "--max-length", str(settings["max_length"]), "--num-negatives", str(settings["num_negatives"]),
           "--batch-size", str(settings["batch_size"]), "--steps", str(settings["steps"]),
           "--eval-steps", str(settings["eval_steps"]), "--dev-max-queries", str(settings["dev_max_queries"]),
           "--mixed-precision", settings["mixed_precision"], "--eval-batch-size", str(settings["eval_batch_size"])]
    if settings["num_layers"]:
        cmd += ["--num-layers", str(settings["num_layers"])]
    if settings["max_train_queries"]:
        cmd += ["--max-train-queries", str(settings["max_train_queries"])]
    if strong_from is not None:
        cmd += ["--strong-from", str(strong_from)]
    return cmd


def r2_options(python: str, script: Path, env: dict[str, str]) -> str:
    """rerank_throughput.py's `--help` (the script is being changed: options are looked up, not assumed)."""
    return subprocess.run([python, str(script), "--help"], check=False, cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True).stdout


def pack(out: Path, roots: list[Path], base: Path, log_path: Path, status_path: Path) -> None:
    """`out/results.tar.gz`: the committed kinds of result file under `roots`, the log and the status, named
    relative to `base` (the repo; the work folder in tiny mode); `out/run.log`: the log."""
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "results.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as tar:
        for root in roots:
            for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
                rel = path.relative_to(root)
                if (path.is_file() and path.suffix in RESULT_SUFFIXES and not SKIP_DIRS & set(rel.parts)
                        and not path.name.endswith(".partial")):
                    tar.add(path, arcname=str(path.relative_to(base)))
        for extra in (log_path, status_path):
            if extra.is_file():
                tar.add(extra, arcname=str(extra.relative_to(base)))
    os.replace(partial, out / "results.tar.gz")
    shutil.copyfile(log_path, out / "run.log")


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "prepare"],
                        help="run (default; on the device) or prepare (here: build benchmarks/gpu/carry)")
    parser.add_argument("--tiny", action="store_true",
                        help="the same pipeline on the CPU with tiny settings and a tiny NFCorpus subset, all in --work")
    parser.add_argument("--work", default=None, help="working folder (default: a new temporary folder)")
    parser.add_argument("--carry", default=str(CARRY), help="the carried folder (tiny: <work>/carry)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all parts (GPU 540)")
    parser.add_argument("--r2", default="auto", choices=["auto", "cpu", "skip"],
                        help="R2: on the GPU if rerank_throughput.py has --device (auto), on the CPU anyway, or not")
    parser.add_argument("--cache-dir", default="~/.cache/rankface", help="prepare: where BM25 runs are cached here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = dict(TINY if args.tiny else GPU)
    if args.budget_s:
        settings["budget_s"] = args.budget_s
    work = Path(args.work or tempfile.mkdtemp(prefix="rankface-gpu-")).resolve()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    results = work / "results" if args.tiny else BENCH / "results"
    log_path = work / "prepare.log" if args.command == "prepare" else results / "gpu" / f"run_{stamp}.log"
    log = Log(log_path)
    from rankface.paths import shared_dir

    nfcorpus = shared_dir() / "data" / "ir" / "nfcorpus"
    if args.command == "prepare":
        manifest = prepare(Path(args.carry), nfcorpus, args.cache_dir, wheels=True, log=log)
        size = transfer_bytes(Path(args.carry))
        log(f"prepare: the device run would send {size / 2**20:.1f} MiB (limit {TRANSFER_LIMIT / 2**20:.0f} MiB)")
        strong = BENCH / "results" / "pooling_bias" / "full-query-side" / "data" / "negative_sources.json"
        problems = ([f"{strong} is missing (R1-cross takes R1-bi's strong source)"] if not strong.is_file() else [])
        problems += [f"too large to send: {size} bytes"] if size > TRANSFER_LIMIT else []
        for problem in problems:
            log(f"prepare: PROBLEM: {problem}")
        print(json.dumps(manifest, indent=2))
        return 1 if problems else 0

    started = time.perf_counter()
    out = Path(os.environ.get("OUT") or work / "out")
    python = sys.executable
    status = {"mode": "tiny" if args.tiny else "gpu", "started_at": stamp, "settings": settings, "parts": {}}
    status_path = results / "gpu" / f"status_{stamp}.json"
    carry = Path(args.carry)
    if args.tiny:
        carry = work / "carry"
        collection = make_tiny_collection(nfcorpus, work / "source" / "nfcorpus-tiny")
        prepare(carry, collection, str(work / "host-cache"), wheels=False, log=log)
    elif not (carry / "manifest.json").is_file():
        log(f"{carry} is missing or incomplete: run `.venv/bin/python benchmarks/gpu/run.py prepare` first")
        return 2
    env = setup(carry, work / "device", log)
    collection = env.pop("COLLECTION")
    r1_out = results / "pooling_bias" / ("tiny-cross" if args.tiny else "full-cross-gpu")
    roots = [r1_out]

    def left() -> float:
        return settings["budget_s"] - (time.perf_counter() - started)

    def finish_part(name: str, result: dict) -> None:
        status["parts"][name] = result
        status["elapsed_s"] = round(time.perf_counter() - started, 1)
        status_path.write_text(json.dumps(status, indent=2))
        pack(out, roots, work if args.tiny else REPO, log_path, status_path)

    if not args.tiny:  # a GPU run must not fall back to the CPU unnoticed
        check = ("import torch, transformers, accelerate, sentence_transformers, ir_datasets, ir_measures; "
                 "print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', "
                 "transformers.__version__, 'accelerate', accelerate.__version__, 'sentence-transformers', "
                 "sentence_transformers.__version__); "
                 "print(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None; "
                 "raise SystemExit(0 if torch.cuda.is_available() else 'no CUDA device')")
        result = run_part("preflight", [python, "-c", check], env, 120, log)
        finish_part("preflight", result)
        if result["rc"] != 0:
            return 1

    strong_from = BENCH / "results" / "pooling_bias" / "full-query-side"
    if args.tiny:  # R1-bi's strong source, which the GPU run finds committed, made here with the same code
        strong_from = results / "pooling_bias" / "tiny-bi"
        roots.append(strong_from)
        cmd = pooling_bias_cmd(python, {**settings, "eval_steps": 0}, "bi", ["plain/bm25-neg"], strong_from,
                               collection, None, "0")
        finish_part("r1-bi-strong-source", run_part("r1-bi-strong-source", cmd, env, left(), log))

    cmd = pooling_bias_cmd(python, settings, "cross", list(DECIDING), r1_out, collection, strong_from,
                           settings["seeds"])
    # Parallel tokenizers: evaluation reranks 42,500 pairs per system and is tokenizer-bound on a GPU.
    finish_part("r1-cross", run_part("r1-cross", cmd, {**env, "TOKENIZERS_PARALLELISM": "true"}, left() - 15, log))

    r2_script = BENCH / "rerank_throughput.py"
    if args.tiny:  # its results folder is fixed beside the script: a copy keeps the tiny run out of the repo
        bench_copy = work / "bench"
        bench_copy.mkdir(exist_ok=True)
        for script in BENCH.glob("*.py"):
            shutil.copy2(script, bench_copy / script.name)
        r2_script = bench_copy / "rerank_throughput.py"
    options = r2_options(python, r2_script, env)
    has_device = "--device" in options
    r2_cmd = [python, str(r2_script)]
    if args.tiny:  # fp32 only (one matmul peak to measure), a random head (no probe to train)
        r2_cmd += ["--quick", "--max-pairs", "16", "--rounds", "2", "--max-length", "48", "--collection", collection,
                   "--systems", "st-fp32", "rankface-fp32"] + (["--device", "cpu"] if has_device else [])
        r2_cmd += ["--head", "random"] if "--head" in options else []
    elif has_device and args.r2 != "cpu":
        r2_cmd += ["--device", "cuda"]
    # The sentence-transformers anchors run in two virtual environments that R2 builds with pip on first use (~3 GB):
    # the device machine reaches no package registry, and a test must not install them either.
    r2_cmd += ["--anchors"] if "--anchors" in options else []
    r2_root = r2_script.parent / "results" / "rerank_throughput" / ("quick" if args.tiny else "full")
    roots.append(r2_root)
    if args.r2 == "skip" or (not args.tiny and not has_device and args.r2 == "auto"):
        reason = "--r2 skip" if args.r2 == "skip" else (
            "rerank_throughput.py has no --device option (a CPU benchmark): its full mode on this machine's CPU "
            "would take ~10 min; pass --r2 cpu to run it anyway")
        log(f"r2: skipped: {reason}")
        finish_part("r2", {"rc": None, "skipped": reason})
    elif left() - 10 < settings["r2_min_s"]:
        log(f"r2: skipped: {left():.0f} s left, under the {settings['r2_min_s']} s it needs")
        finish_part("r2", {"rc": None, "skipped": "no time left"})
    else:
        finish_part("r2", run_part("r2", r2_cmd, env, left() - 10, log))
    log(f"done in {time.perf_counter() - started:.0f} s; results packed into {out / 'results.tar.gz'}")
    failed = [n for n, r in status["parts"].items() if r.get("rc") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
