"""rankface.inference: every ONNX Runtime backend against PyTorch fp32, the graph cache, and `auto` per CPU class.

Tolerances (tiny random models, so the scores carry no ranking signal of their own):
- fp32 graphs (`onnx`, `onnx-opt`): |score - torch| <= 1e-4 and embedding cosine >= 0.9999: the same arithmetic
  in another order (and, for `onnx-opt`, fused kernels);
- int8 graphs (`onnx-int8`, both quantisation configs): max |score - torch fp32| <= 3 x that of rankface's own,
  independently written PyTorch int8 path (FBGEMM, per-channel weights) on the same pairs, and <= 5 % of the mean
  |score|; embedding cosine >= 0.98. On a random model the scores' spread is smaller than int8's rounding, so
  ranking agreement is judged by R2 on a trained ranker (overlap@10, nDCG@10), not here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the ONNX backends need onnxruntime (the [face] extra)")

from rankface import hardware
from rankface.inference import backends, graphs

WORDS = ["aspirin", "heart", "disease", "cancer", "diet", "fish", "oil", "vitamin", "sugar", "coffee", "tea", "milk"]


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))) for _ in range(n)]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKFACE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bi(tiny_bert_dir):
    from rankface.models.bi_encoder import BiEncoder

    return BiEncoder.from_pretrained(tiny_bert_dir, device="cpu", max_length=64)


@pytest.mark.parametrize("backend", ["onnx", "onnx-opt"])
def test_cross_encoder_fp32_graphs_match_torch(unit_head_cross, backend):
    pairs = list(zip(texts(40, 1), texts(40, 2), strict=True))
    reference = unit_head_cross.predict(pairs, batch_size=8, precision="fp32")
    scores = unit_head_cross.predict(pairs, batch_size=8, backend=backend)
    assert scores.dtype == np.float32 and scores.shape == (40,)
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)


def test_cross_encoder_int8_graph_is_close_to_torch(unit_head_cross):
    pairs = list(zip(texts(60, 3), texts(60, 4), strict=True))
    reference = unit_head_cross.predict(pairs, batch_size=16, precision="fp32")
    scores = unit_head_cross.predict(pairs, batch_size=16, backend="onnx-int8")
    torch_int8 = unit_head_cross.predict(pairs, batch_size=16, precision="int8")
    assert np.abs(scores - reference).max() <= 3 * np.abs(torch_int8 - reference).max()
    assert np.abs(scores - reference).max() <= 0.05 * np.abs(reference).mean()
    assert not np.allclose(scores, reference, atol=1e-6), "int8 scores equal fp32: the graph was not quantised"


@pytest.mark.parametrize("isa", ["avx2", "avx512_vnni"])
def test_both_quantisation_configs_give_int8_graphs_close_to_torch(unit_head_cross, isa):
    import onnx

    names = backends.text_input_names(unit_head_cross.model, unit_head_cross.tokenizer)
    path = graphs.graph_path(unit_head_cross.model, "scores", f"int8-{isa}", names, (2, 32))
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops or "QAttention" in ops, ops
    weight_type = {"avx2": onnx.TensorProto.UINT8, "avx512_vnni": onnx.TensorProto.INT8}[isa]
    quantised = [t for t in onnx.load(str(path)).graph.initializer if t.name.endswith("_quantized")]
    assert quantised and all(t.data_type == weight_type for t in quantised)

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pairs = list(zip(texts(60, 5), texts(60, 6), strict=True))
    batch = unit_head_cross._tokenize([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="np")
    scores = session.run(None, {i.name: batch[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    reference = unit_head_cross.predict(pairs, batch_size=60, precision="fp32")
    torch_int8 = unit_head_cross.predict(pairs, batch_size=60, precision="int8")
    assert np.abs(scores - reference).max() <= 3 * np.abs(torch_int8 - reference).max()
    assert np.abs(scores - reference).max() <= 0.05 * np.abs(reference).mean()


@pytest.mark.parametrize("backend", ["onnx", "onnx-opt", "onnx-int8"])
def test_bi_encoder_graphs_match_torch(bi, backend):
    docs = texts(30, 7)
    reference = bi.encode(docs, batch_size=8, precision="fp32")
    embeddings = bi.encode(docs, batch_size=8, backend=backend)
    assert embeddings.shape == reference.shape and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-4)
    cosine = np.sum(embeddings * reference, axis=1)
    assert cosine.min() >= (0.98 if backend == "onnx-int8" else 0.9999)


def test_face_encoder_graphs_match_torch():
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

    torch.manual_seed(0)
    model = MobileFaceNetModel(MobileFaceNetConfig(
        input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2], [2, 16, 2, 2]], last_channels=32,
        embedding_size=16)).eval()
    # BatchNorm running statistics away from the identity, as in a trained model
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    pixels = torch.randn(10, 3, 32, 32)
    reference = backends.embed_faces(model, pixels, batch_size=4, backend="torch")
    with torch.no_grad():
        np.testing.assert_allclose(reference, model(pixels).embedding.numpy(), atol=1e-5)
    for backend in ("onnx", "onnx-int8"):
        embeddings = backends.embed_faces(model, pixels, batch_size=4, backend=backend)
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        ref_unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        cosine = np.sum(unit * ref_unit, axis=1)
        assert cosine.min() >= (0.98 if backend == "onnx-int8" else 0.9999), (backend, cosine.min())


def test_graphs_are_cached_by_fingerprint_and_rebuilt_for_new_weights(unit_head_cross, tmp_path):
    names = backends.text_input_names(unit_head_cross.model, unit_head_cross.tokenizer)
    first = graphs.graph_path(unit_head_cross.model, "scores", "opt", names, (2, 32))
    stamp = first.stat().st_mtime_ns
    assert graphs.graph_path(unit_head_cross.model, "scores", "opt", names, (2, 32)) == first
    assert first.stat().st_mtime_ns == stamp, "a cached graph was rebuilt"
    assert first.is_relative_to(tmp_path / "cache")
    changed = type(unit_head_cross.model)(unit_head_cross.model.config)
    changed.load_state_dict(unit_head_cross.model.state_dict())
    with torch.no_grad():
        changed.classifier.bias.add_(1.0)
    second = graphs.graph_path(changed, "scores", "opt", names, (2, 32))
    assert second.parent != first.parent
    pairs = list(zip(texts(5, 8), texts(5, 9), strict=True))
    # the in-memory session follows the weights too: an in-place change is scored, not the old graph
    before = unit_head_cross.predict(pairs, backend="onnx")
    with torch.no_grad():
        unit_head_cross.model.classifier.bias.add_(1.0)
    try:
        np.testing.assert_allclose(unit_head_cross.predict(pairs, backend="onnx"), before + 1.0, atol=1e-4)
    finally:
        with torch.no_grad():
            unit_head_cross.model.classifier.bias.sub_(1.0)


# ------------------------------------------------------------------------------------ auto per CPU class
CLASS_FLAGS = {
    "baseline": {"sse4_2"},
    "avx2": {"avx2", "fma"},
    "avx512": {"avx2", "fma", "avx512f", "avx512_vnni"},
    "avx512-bf16": {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"},
}
AVX2_CAPS = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}


@pytest.mark.parametrize("name", list(CLASS_FLAGS))
def test_auto_choice_per_cpu_class(name):
    info = hardware.cpu_class(CLASS_FLAGS[name], environ={})
    assert info["class"] == name
    for family in backends.FAMILIES:
        assert backends.resolve_backend("auto", "cpu", family, info) == backends.AUTO[family][name]
    assert backends.quant_isa(info) == {"baseline": "avx2", "avx2": "avx2", "avx512": "avx512_vnni",
                                        "avx512-bf16": "avx512_vnni"}[name]


def test_auto_choice_under_avx2_caps_follows_the_emulated_class():
    info = hardware.cpu_class(CLASS_FLAGS["avx512-bf16"], environ=AVX2_CAPS)
    assert info["class"] == "avx2" and info["emulated"]
    assert backends.resolve_backend("auto", "cpu", "text", info) == backends.AUTO["text"]["avx2"]
    assert backends.quant_isa(info) == "avx2"  # ONNX Runtime ignores the caps: the int8 config is what follows them
    no_vnni = hardware.cpu_class({"avx2", "avx512f"}, environ={})
    assert backends.quant_isa(no_vnni) == "avx512"


def test_auto_is_torch_off_cpu_and_bad_requests_are_refused():
    assert backends.resolve_backend("auto", "cuda") == "torch"
    with pytest.raises(ValueError, match="runs on CPU"):
        backends.resolve_backend("onnx", "cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.resolve_backend("tensorrt")
    with pytest.raises(ValueError, match="precision='bf16' is for backend='torch'"):
        backends.resolve_engine("onnx-int8", "bf16", "cpu")
    assert backends.resolve_engine("auto", "int8", "cpu") == "torch"  # a named torch precision keeps torch
    with pytest.raises(ValueError, match="cpu_class must be one of"):
        backends.auto_backend("text", "avx1024")


def test_embed_uint8_takes_the_backend():
    from rankface.evaluation.verification import embed_uint8
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

    torch.manual_seed(1)
    model = MobileFaceNetModel(MobileFaceNetConfig(
        input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2], [2, 16, 2, 2]], last_channels=32,
        embedding_size=16)).eval()
    images = np.random.default_rng(0).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    reference = embed_uint8(model, images, batch_size=3)
    onnx = embed_uint8(model, images, batch_size=3, backend="onnx")
    np.testing.assert_allclose(onnx, reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="backend must be one of"):
        embed_uint8(model, images, backend="tflite")
