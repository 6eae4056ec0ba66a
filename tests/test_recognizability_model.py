"""RI face encoder: shapes, CBAM attention against a loop reference, save/load with UI buffers, helpers, a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModel

import rankface.models.auto  # noqa: F401  (registers the rankface model types)
from rankface.losses.margins import ArcFace, NormalizedClassifier
from rankface.losses.recognizability import RecognizabilityLoss, make_unrecognizable, recognizability_index
from rankface.losses.unpg import UNPGLoss
from rankface.models.face_processor import FaceImageProcessor
from rankface.models.iresnet import IResNetConfig
from rankface.models.mobilefacenet import MobileFaceNetConfig
from rankface.models.recognizability import PerceptibilityAttention, RecognizabilityConfig, RecognizabilityModel

TINY_MFN = {
    "input_size": 32,
    "stem_channels": 8,
    "block_settings": [[2, 8, 1, 2], [2, 16, 2, 2]],
    "last_channels": 32,
    "embedding_size": 16,
}


def tiny(**overrides) -> RecognizabilityModel:
    torch.manual_seed(0)
    kwargs = {"backbone": MobileFaceNetConfig(**TINY_MFN), "attention_reduction": 4}
    kwargs.update(overrides)
    return RecognizabilityModel(RecognizabilityConfig(**kwargs))


@pytest.mark.parametrize("backbone", ["mobilefacenet", "iresnet"])
def test_forward_shapes(backbone):
    bb = (
        MobileFaceNetConfig(**TINY_MFN)
        if backbone == "mobilefacenet"
        else IResNetConfig(num_layers=18, input_size=32, stage_channels=[8, 8, 16, 16], embedding_size=12)
    )
    model = tiny(backbone=bb).eval()
    e = bb.embedding_size
    out = model(torch.randn(3, 3, 32, 32), output_feature_map=True)
    assert out.embedding.shape == (3, e) and out.quality.shape == (3,)
    h = bb.feature_map_size
    assert out.attention_map.shape == (3, 1, h, h) and out.attended_embedding.shape == (3, e)
    assert ((out.attention_map > 0) & (out.attention_map < 1)).all()
    assert torch.equal(out.matching_embedding, out.embedding)  # match_with="v" by default
    assert out.feature_map.shape == (3, bb.feature_channels, h, h)


@pytest.mark.numerics
def test_ablation_and_match_options():
    plain = tiny(attention=False).eval()
    out = plain(torch.randn(2, 3, 32, 32))
    assert out.attention_map is None and out.attended_embedding is None
    assert not any("attention" in k for k in plain.state_dict())
    both = tiny(match_with="v+att").eval()
    out = both(torch.randn(2, 3, 32, 32))
    ref = F.normalize(F.normalize(out.embedding, dim=1) + out.attended_embedding, dim=1)
    torch.testing.assert_close(out.matching_embedding, ref)
    with pytest.raises(ValueError, match="match_with"):
        RecognizabilityConfig(match_with="both")
    with pytest.raises(ValueError, match="needs attention"):
        RecognizabilityConfig(match_with="v+att", attention=False)
    with pytest.raises(ValueError, match="model_type"):
        RecognizabilityConfig(backbone={"model_type": "resnet"})


@pytest.mark.numerics
def test_perceptibility_attention_matches_loop_reference():
    torch.manual_seed(1)
    att = PerceptibilityAttention(4, reduction=2, kernel=3)
    x = torch.randn(2, 4, 3, 3)
    out, spatial = att(x)
    w1, b1 = att.mlp[0].weight.detach().numpy(), att.mlp[0].bias.detach().numpy()
    w2, b2 = att.mlp[2].weight.detach().numpy(), att.mlp[2].bias.detach().numpy()
    k = att.spatial.weight.detach().numpy()[0]  # [2, 3, 3]
    xs = x.numpy().astype(np.float64)

    def mlp(z):
        return w2 @ np.maximum(w1 @ z + b1, 0) + b2

    for n in range(2):
        avg = np.array([xs[n, c].mean() for c in range(4)])
        mx = np.array([xs[n, c].max() for c in range(4)])
        ch = 1 / (1 + np.exp(-(mlp(avg) + mlp(mx))))
        y = xs[n] * ch[:, None, None]
        pooled = np.stack([y.mean(0), y.max(0)])
        padded = np.pad(pooled, ((0, 0), (1, 1), (1, 1)))
        sp = np.zeros((3, 3))
        for i in range(3):
            for j in range(3):
                sp[i, j] = np.sum(padded[:, i : i + 3, j : j + 3] * k)
        sp = 1 / (1 + np.exp(-sp))
        np.testing.assert_allclose(spatial[n, 0].detach().numpy(), sp, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[n].detach().numpy(), y * sp[None], rtol=1e-5, atol=1e-6)


def test_quality_read_from_the_pooled_feature_map(tmp_path):
    import onnxruntime as ort

    from rankface.models.face_export import export_onnx

    model = tiny(quality_input="feature_map").eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x, output_feature_map=True)
        pooled = out.feature_map.mean(dim=(2, 3))  # [N, C]: the regressor's input, written out here
        expected = pooled @ model.quality_head.weight[0] + model.quality_head.bias[0]
    assert model.quality_head.in_features == model.config.backbone_config().feature_channels
    torch.testing.assert_close(out.quality, expected)
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.quality_input == "feature_map"
    torch.testing.assert_close(loaded(x).quality, out.quality)
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "ri.onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"pixel_values": x.numpy()})[1], out.quality.numpy(),
                               rtol=1e-4, atol=1e-4)
    assert tiny().config.quality_input == "embedding"  # a saved model without the key reads v, as before
    with pytest.raises(ValueError, match="quality_input"):
        RecognizabilityConfig(quality_input="pixels")


@pytest.mark.numerics
def test_save_load_keeps_ui_buffers_exactly(tmp_path):
    model = tiny().eval()
    w = torch.randn(5, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    ui = make_unrecognizable(torch.rand(6, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model.update_ui_centre(ui, labels, w)
    assert int(model.ui_centre.num_updates) == 2 and model.ui_centre.centre.abs().sum() > 0
    model.save_pretrained(tmp_path)
    FaceImageProcessor.from_model_config(model.config).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "rankface-recognizability"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, RecognizabilityModel)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    for name in ("centre", "mu_ui", "sigma_ui", "num_updates"):
        assert f"ui_centre.{name}" in model.state_dict()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x).quality, model(x).quality)


@pytest.mark.numerics
def test_update_ui_centre_uses_eval_bn_and_matches_reference():
    model = tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    ui = torch.randn(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 0, 1])
    w = torch.randn(3, 16)
    ri = model.update_ui_centre(ui, labels, w)
    assert model.training and model.backbone.training  # mode restored
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k  # BN statistics untouched by the UI pass
    model.eval()
    emb = model(ui).embedding
    torch.testing.assert_close(model.ui_centre.centre, F.normalize(emb, dim=1).mean(0))
    torch.testing.assert_close(
        ri, recognizability_index(emb, model.ui_centre.direction, class_weights=w, labels=labels)
    )


@pytest.mark.numerics
def test_embed_with_quality_and_quality_helper():
    model = tiny().eval()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(5)]
    pil = [Image.fromarray(a) for a in arrays]
    emb, q = model.embed_with_quality(pil, batch_size=2)
    assert emb.shape == (5, 16) and q.shape == (5,)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(5))
    pixels = FaceImageProcessor.from_model_config(model.config)(pil)["pixel_values"]
    torch.testing.assert_close(q, model(pixels).quality)
    tensor_q = model.quality(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2), batch_size=3)
    torch.testing.assert_close(tensor_q, q)
    # 16 px faces are resized to the input size, as the processor does
    assert model.quality([Image.fromarray(arrays[0]).resize((16, 16))]).shape == (1,)


def test_training_step_with_ri_loss_and_unpg():
    model = tiny().train()
    clf = NormalizedClassifier(16, 4)
    images = torch.rand(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    pixels = (images * 255 - 127.5) / 128.0
    ui = make_unrecognizable(pixels, generator=torch.Generator().manual_seed(0))
    model.update_ui_centre(ui, labels, clf.weight)
    out = model(pixels)
    loss_fn = RecognizabilityLoss(UNPGLoss(ArcFace()), warmup_steps=0, tau=10.0)
    result = loss_fn(
        out.embedding,
        labels,
        clf(out.embedding),
        clf.weight,
        out.quality,
        model.ui_centre,
        attended=out.attended_embedding,
        step=1,
    )
    assert result.active and result.diversion > 0 and result.attention > 0
    result.loss.backward()
    for name in (
        "quality_head.weight",
        "attention_proj.weight",
        "attention.spatial.weight",
        "backbone.conv1.0.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert all(not b.requires_grad for b in model.ui_centre.buffers())


@pytest.mark.numerics
@pytest.mark.parametrize("match_with", ["v", "v+att"])
def test_onnx_export_gives_matching_embedding_and_quality(match_with, tmp_path):
    import onnxruntime as ort

    from rankface.models.face_export import export_onnx

    model = tiny(match_with=match_with).eval()
    session = ort.InferenceSession(str(export_onnx(model, tmp_path / "ri.onnx")), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["embedding", "quality"]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    embedding, quality = session.run(None, {"pixel_values": x.numpy()})
    with torch.no_grad():
        out = model(x)
    np.testing.assert_allclose(embedding, out.matching_embedding.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(quality, out.quality.numpy(), rtol=1e-4, atol=1e-4)
    if match_with == "v+att":  # the export must not fall back to the backbone embedding
        assert not np.allclose(embedding, out.embedding.numpy(), atol=1e-4)
