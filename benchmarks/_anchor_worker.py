"""R2 anchor worker: runs inside an anchor venv (`_anchors.py`), never imports rankface.

    python _anchor_worker.py JOB.json

JOB.json: `{"anchors": [...], "checkpoint": folder, "work": folder, "batch_size", "max_length", "threads", "isa",
"calibration": [texts]}`. The worker loads every anchor it can (exporting the ONNX / OpenVINO graphs into
`work/<anchor>/` on first use, with sentence-transformers' own export functions), then prints one JSON line
`{"loaded": [...], "errors": {anchor: reason}}` and serves requests, one JSON line each on stdin:
`{"anchor": name, "pairs": [[q, d], ...]}` -> `{"seconds": s, "scores": [...]}` (raw logits: identity activation),
`{"quit": true}` ends it. So the benchmark interleaves the anchors with its own systems, round by round.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def copy_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """A private copy of the checkpoint: the exports write `onnx/` and `openvino/` into the model folder."""
    if not (folder / "config.json").is_file():
        tmp = folder.with_name(folder.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    return folder


def load_anchor(name: str, job: dict):
    """A `sentence_transformers.CrossEncoder` for anchor `name` (exporting its graph on first use)."""
    from sentence_transformers import CrossEncoder

    work = Path(job["work"])
    common = {"max_length": job["max_length"], "device": "cpu"}
    threads = job["threads"]
    if name == "st-torch":
        return CrossEncoder(job["checkpoint"], **common)
    if name.startswith("st-onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        kwargs = {"session_options": options, "provider": "CPUExecutionProvider"}
        folder = copy_checkpoint(Path(job["checkpoint"]), work / "onnx-model")
        onnx_dir = folder / "onnx"
        if not (onnx_dir / "model.onnx").is_file():
            model = CrossEncoder(str(folder), backend="onnx", **common, model_kwargs=kwargs)
            model.save_pretrained(str(folder))  # writes onnx/model.onnx
        if name == "st-onnx":
            return CrossEncoder(str(folder), backend="onnx", **common, model_kwargs={**kwargs, "file_name": "onnx/model.onnx"})
        base = CrossEncoder(str(folder), backend="onnx", **common, model_kwargs={**kwargs, "file_name": "onnx/model.onnx"})
        if name == "st-onnx-o3":
            from sentence_transformers import export_optimized_onnx_model

            file = onnx_dir / "model_O3.onnx"
            if not file.is_file():
                export_optimized_onnx_model(base, "O3", str(folder))
            return CrossEncoder(str(folder), backend="onnx", **common,
                                model_kwargs={**kwargs, "file_name": "onnx/model_O3.onnx"})
        if name == "st-onnx-int8":
            from optimum.onnxruntime.configuration import AutoQuantizationConfig
            from sentence_transformers import export_dynamic_quantized_onnx_model

            isa = job["isa"]
            # The file sentence-transformers writes is named by the config's weight type: qint8 (avx512*), but
            # quint8 for avx2 (`model_quint8_avx2.onnx`).
            weights = getattr(AutoQuantizationConfig, isa)(is_static=False).weights_dtype.name.lower()
            file = onnx_dir / f"model_{weights}_{isa}.onnx"
            if not file.is_file():
                export_dynamic_quantized_onnx_model(base, isa, str(folder))
            return CrossEncoder(str(folder), backend="onnx", **common,
                                model_kwargs={**kwargs, "file_name": f"onnx/{file.name}"})
    if name.startswith("st-openvino"):
        ov_config = {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"}
        if not job["native_bf16"]:
            # Under the caps that emulate a class without native bf16, OpenVINO's own default precision (read from
            # CPUID: bf16) does not compile (its oneDNN obeys ONEDNN_MAX_CPU_ISA); on a real machine of that class
            # the default is f32, so that is what every emulated OpenVINO anchor gets.
            ov_config["INFERENCE_PRECISION_HINT"] = "f32"
        kwargs = {"ov_config": ov_config}
        folder = copy_checkpoint(Path(job["checkpoint"]), work / "openvino-model")
        ov_dir = folder / "openvino"
        if not (ov_dir / "openvino_model.xml").is_file():
            model = CrossEncoder(str(folder), backend="openvino", **common, model_kwargs=kwargs)
            model.save_pretrained(str(folder))
        if name in ("st-openvino", "st-openvino-default"):
            # OpenVINO runs an fp32 model in bf16 by default where the CPU has native bf16 (AVX-512 bf16, AMX):
            # `st-openvino` asks for f32, as labelled; `st-openvino-default` is what a user of the default gets.
            hint = {"INFERENCE_PRECISION_HINT": "f32"} if name == "st-openvino" else {}
            return CrossEncoder(str(folder), backend="openvino", **common,
                                model_kwargs={"ov_config": {**ov_config, **hint},
                                              "file_name": "openvino/openvino_model.xml"})
        if name == "st-openvino-int8":
            from optimum.intel import OVQuantizationConfig
            from sentence_transformers import export_static_quantized_openvino_model

            file = ov_dir / "openvino_model_qint8_quantized.xml"
            if not file.is_file():
                base = CrossEncoder(str(folder), backend="openvino", **common,
                                    model_kwargs={**kwargs, "file_name": "openvino/openvino_model.xml"})
                # Offline: the calibration texts come from the job (NFCorpus documents), as a local dataset folder
                # that `datasets.load_dataset(folder, "default", split="train")` reads (the default is GLUE SST-2
                # from the Hub, unreachable here).
                data = work / "calibration"
                data.mkdir(parents=True, exist_ok=True)
                with open(data / "train.jsonl", "w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps({"sentence": text}) + "\n" for text in job["calibration"])
                export_static_quantized_openvino_model(
                    base, OVQuantizationConfig(num_samples=len(job["calibration"])), str(folder),
                    dataset_name=str(data), dataset_config_name="default", dataset_split="train",
                    column_name="sentence")
            return CrossEncoder(str(folder), backend="openvino", **common,
                                model_kwargs={**kwargs, "file_name": "openvino/openvino_model_qint8_quantized.xml"})
    raise ValueError(f"unknown anchor {name!r}")


def main() -> None:
    # The protocol gets stdout's descriptor to itself; fd 1 then points to stderr, so whatever the libraries print
    # (nncf's progress bars, OpenVINO's C++ logs) cannot corrupt it.
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    import torch

    torch.set_num_threads(job["threads"])
    identity = torch.nn.Identity()
    models, errors = {}, {}
    for name in job["anchors"]:
        try:
            model = load_anchor(name, job)
            model.predict([("warm", "up")] * 2, batch_size=job["batch_size"], show_progress_bar=False,
                          activation_fn=identity)
            models[name] = model
        except Exception as err:  # noqa: BLE001 - every reason is reported to the benchmark, which goes on
            log(traceback.format_exc())
            errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:400]
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("sentence-transformers", "transformers", "torch", "onnxruntime",
                                           "optimum", "optimum-onnx", "optimum-intel", "openvino")
                if _installed(p)}
    print(json.dumps({"loaded": list(models), "errors": errors, "versions": versions}), file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        model = models[request["anchor"]]
        pairs = [tuple(p) for p in request["pairs"]]
        start = time.perf_counter()
        scores = model.predict(pairs, batch_size=job["batch_size"], show_progress_bar=False, activation_fn=identity)
        seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "scores": [float(s) for s in scores]}), file=protocol, flush=True)


def _installed(package: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(package)
    except md.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
