"""rankface.inference's OpenVINO backends (`openvino`, `openvino-int8`) against PyTorch, on tiny random models.

Tolerances: `openvino` runs at OpenVINO's default precision, bf16 on a CPU with native bf16 and f32 elsewhere, so its
scores are held to rankface's own bf16 path (max |score - fp32| <= 3x that of `precision="bf16"`, or 1e-4 where
OpenVINO ran f32); `openvino-int8` (static, calibrated) to <= 10 % of the mean |score| and embedding cosine >= 0.95,
and it must differ from fp32 (a graph that was not quantised would not). Ranking fidelity on a trained ranker is
R2's (benchmarks/rerank_throughput.py --fidelity).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="the OpenVINO backends need openvino (the [openvino] extra)")
pytest.importorskip("nncf", reason="openvino-int8 needs nncf (the [openvino] extra)")

# The same cache folder as the ONNX Runtime backends' tests (an imported fixture is pytest's own).
from test_inference_backends import _cache, texts  # noqa: F401

from rankface.inference import backends, openvino_engine


def test_openvino_scores_match_torch_at_openvino_precision(unit_head_cross):
    pairs = list(zip(texts(40, 1), texts(40, 2), strict=True))
    reference = unit_head_cross.predict(pairs, batch_size=8, precision="fp32")
    scores = unit_head_cross.predict(pairs, batch_size=8, backend="openvino")
    assert scores.dtype == np.float32 and scores.shape == (40,)
    bf16_error = np.abs(unit_head_cross.predict(pairs, batch_size=8, precision="bf16") - reference).max()
    assert np.abs(scores - reference).max() <= max(1e-4, 3 * bf16_error)


def test_openvino_int8_is_calibrated_once_on_the_first_call_and_reused(unit_head_cross, tmp_path):
    pairs = list(zip(texts(60, 3), texts(60, 4), strict=True))
    reference = unit_head_cross.predict(pairs, batch_size=16, precision="fp32")
    scores = unit_head_cross.predict(pairs, batch_size=16, backend="openvino-int8")
    assert np.abs(scores - reference).max() <= 0.10 * np.abs(reference).mean()
    assert not np.allclose(scores, reference, atol=1e-6), "int8 scores equal fp32: the graph was not quantised"
    [xml] = (tmp_path / "cache").rglob("openvino-*-int8.xml")
    assert xml.with_suffix(".bin").is_file()
    sidecar = json.loads(xml.with_suffix(".json").read_text())
    assert sidecar["calibration_samples"] == 60 and sidecar["scheme"].endswith("transformer")
    # Without VNNI, 8-bit weights saturate x86's int16 pair sums (pmaddubsw): NNCF's overflow fix must be on there.
    vnni = backends.quant_isa() == "avx512_vnni"
    assert sidecar["overflow_fix"] == ("first_layer_only" if vnni else "enable") and sidecar["overflow_fix"] in xml.name
    built = xml.stat().st_mtime_ns
    # Another call, other pairs, even another model object for the same weights: the saved graph, not a new one.
    openvino_engine._COMPILED.clear()
    again = unit_head_cross.predict(pairs[:10], batch_size=4, backend="openvino-int8")
    assert xml.stat().st_mtime_ns == built and len(list((tmp_path / "cache").rglob("*.xml"))) == 1
    np.testing.assert_allclose(again, scores[:10], atol=1e-5)


def test_calibration_spreads_over_the_inputs():
    assert openvino_engine.calibration_sample(5) == [0, 1, 2, 3, 4]
    spread = openvino_engine.calibration_sample(10_000)
    assert len(spread) == openvino_engine.CALIBRATION_SAMPLES and spread[0] == 0 and spread[-1] == 9_999


def test_bi_encoder_and_face_encoder_take_the_openvino_backends(tiny_bert_dir):
    from rankface.models.bi_encoder import BiEncoder
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

    bi = BiEncoder.from_pretrained(tiny_bert_dir, device="cpu", max_length=64)
    docs = texts(30, 7)
    reference = bi.encode(docs, batch_size=8, precision="fp32")
    for backend in openvino_engine.OV_BACKENDS:
        embeddings = bi.encode(docs, batch_size=8, backend=backend)
        assert embeddings.shape == reference.shape
        assert np.sum(embeddings * reference, axis=1).min() >= 0.95, backend

    torch.manual_seed(0)
    face = MobileFaceNetModel(MobileFaceNetConfig(
        input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2], [2, 16, 2, 2]], last_channels=32,
        embedding_size=16)).eval()
    pixels = torch.randn(12, 3, 32, 32)
    reference = backends.embed_faces(face, pixels, batch_size=4, backend="torch")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    for backend in openvino_engine.OV_BACKENDS:
        embeddings = backends.embed_faces(face, pixels, batch_size=4, backend=backend)
        assert np.sum(unit(embeddings) * unit(reference), axis=1).min() >= 0.95, backend


def test_openvino_int8_without_calibration_inputs_says_so(unit_head_cross):
    names = backends.text_input_names(unit_head_cross.model, unit_head_cross.tokenizer)
    # The model is shared by the module: an int8 graph an earlier test compiled on the same threads (1, under
    # OMP_NUM_THREADS=1) is held in memory and would be returned without building anything.
    openvino_engine._COMPILED.clear()
    with pytest.raises(ValueError, match="needs calibration inputs"):
        openvino_engine.compiled_model(unit_head_cross.model, "scores", "openvino-int8", names, (2, 32), 1, None)


def test_openvino_precision_follows_the_class_caps_so_a_capped_cpu_still_compiles(tmp_path):
    # OpenVINO's own default reads CPUID (bf16 on this machine class) while its oneDNN obeys ONEDNN_MAX_CPU_ISA:
    # under the AVX2 caps that default cannot compile. rankface sets the precision from its class rule instead.
    import os
    import subprocess
    import sys

    from test_env import AVX2_CAPS

    script = (
        "import torch, numpy as np\n"
        "from rankface.inference import openvino_engine\n"
        "from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel\n"
        "from rankface.inference.backends import embed_faces\n"
        "torch.manual_seed(0)\n"
        "face = MobileFaceNetModel(MobileFaceNetConfig(input_size=32, stem_channels=8,\n"
        "    block_settings=[[2, 8, 1, 2]], last_channels=16, embedding_size=8)).eval()\n"
        "out = embed_faces(face, torch.randn(4, 3, 32, 32), batch_size=4, backend='openvino')\n"
        "[compiled] = [c for held in openvino_engine._COMPILED.values() for c in held.values()]\n"
        "hint = compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()\n"
        "print(openvino_engine.inference_precision(), hint, out.shape)\n"
    )
    environ = {**os.environ, **AVX2_CAPS, "RANKFACE_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[:2] == ["f32", "f32"] and "(4, 8)" in done.stdout
