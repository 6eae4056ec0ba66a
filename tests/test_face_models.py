"""Face encoders: shapes, feature maps, Auto round trip, image processor, ONNX parity, the real MobileFaceNet."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from numerics import ACROSS_PATHS
from PIL import Image

import rankface.models.auto  # noqa: F401  (registers the rankface model types)
from rankface.models.face_export import export_onnx
from rankface.models.face_processor import FaceImageProcessor
from rankface.models.iresnet import IResNetConfig, IResNetModel
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel


def tiny_mobilefacenet(**overrides) -> MobileFaceNetModel:
    kwargs = {"input_size": 32, "stem_channels": 8, "block_settings": [[2, 8, 1, 2], [2, 16, 2, 2]],
              "last_channels": 32, "embedding_size": 16}
    kwargs.update(overrides)
    torch.manual_seed(0)
    return MobileFaceNetModel(MobileFaceNetConfig(**kwargs)).eval()


def tiny_iresnet(**overrides) -> IResNetModel:
    kwargs = {"num_layers": 18, "input_size": 32, "stage_channels": [8, 8, 16, 16], "embedding_size": 12}
    kwargs.update(overrides)
    torch.manual_seed(0)
    return IResNetModel(IResNetConfig(**kwargs)).eval()


@pytest.mark.parametrize(
    ("factory", "fmap_shape"),
    [(tiny_mobilefacenet, (3, 32, 4, 4)), (tiny_iresnet, (3, 16, 2, 2))],
)
def test_shapes_and_feature_map(factory, fmap_shape):
    model = factory()
    x = torch.randn(3, 3, 32, 32)
    out = model(x, output_feature_map=True)
    assert out.embedding.shape == (3, model.config.embedding_size)
    assert out.feature_map.shape == fmap_shape
    assert model.config.feature_channels == fmap_shape[1]
    assert model.config.feature_map_size == fmap_shape[2]
    assert model(x).feature_map is None
    # RI pools an attended map through the same head: the unattended map must give the embedding back.
    torch.testing.assert_close(model.embed_from_feature_map(out.feature_map), out.embedding)
    tup = model(x, output_feature_map=True, return_dict=False)
    torch.testing.assert_close(tup[0], out.embedding)
    assert len(model(x, return_dict=False)) == 1
    with pytest.raises(ValueError, match="expected \\[N, 3, 32, 32\\]"):
        model(torch.randn(1, 3, 16, 16))


def test_low_resolution_stem_keeps_resolution():
    mfn = tiny_mobilefacenet(input_size=16, low_resolution_stem=True)
    assert mfn.config.stem_stride == 1
    assert mfn(torch.randn(2, 3, 16, 16), output_feature_map=True).feature_map.shape[-1] == 4
    ir = tiny_iresnet(input_size=16, low_resolution_stem=True)
    assert ir(torch.randn(2, 3, 16, 16), output_feature_map=True).feature_map.shape[-1] == 2
    assert tiny_iresnet(input_size=16).config.feature_map_size == 1


def test_iresnet_layout():
    model = tiny_iresnet()
    blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [2, 2, 2, 2]
    assert not model.features.weight.requires_grad  # insightface freezes the final BN scale
    names = set(model.state_dict())
    for name in ("layer1.0.bn1.weight", "layer1.0.prelu.weight", "layer1.0.bn3.running_var",
                 "layer2.0.downsample.0.weight", "bn2.weight", "fc.weight", "features.running_mean"):
        assert name in names
    assert IResNetConfig(num_layers=100).layers == [3, 13, 30, 3]
    with pytest.raises(ValueError, match="num_layers = 101"):
        IResNetConfig(num_layers=101)


def test_config_validation():
    with pytest.raises(ValueError, match="block_settings\\[1\\]"):
        MobileFaceNetConfig(block_settings=[[2, 8, 1, 2], [2, 8, 1]])
    with pytest.raises(ValueError, match="color_order"):
        MobileFaceNetConfig(color_order="YUV")


@pytest.mark.numerics
@pytest.mark.parametrize("factory", [tiny_mobilefacenet, tiny_iresnet])
def test_auto_round_trip(factory, tmp_path):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    model = factory()
    model.save_pretrained(tmp_path)
    FaceImageProcessor.from_model_config(model.config).save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(tmp_path)
    assert config.model_type.startswith("rankface-")
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    x = torch.randn(2, 3, 32, 32)
    # Same weights, other offsets in memory after loading: float noise, not bit for bit (tests/numerics.py).
    torch.testing.assert_close(loaded(x).embedding, model(x).embedding, **ACROSS_PATHS)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, FaceImageProcessor)
    assert (processor.size, processor.color_order, processor.image_mean, processor.image_std) == (
        32, model.config.color_order, model.config.image_mean, model.config.image_std)


def test_processor_inputs_agree_and_normalise():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    processor = FaceImageProcessor()
    expected = torch.from_numpy(((rgb.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1))[None]
    from_numpy = processor(rgb)["pixel_values"]
    torch.testing.assert_close(from_numpy, expected)
    torch.testing.assert_close(processor(Image.fromarray(rgb))["pixel_values"], expected)
    torch.testing.assert_close(processor(torch.from_numpy(rgb).permute(2, 0, 1))["pixel_values"], expected)
    as_float = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    torch.testing.assert_close(processor([as_float, as_float])["pixel_values"], expected.repeat(2, 1, 1, 1))
    torch.testing.assert_close(processor(rgb[:, :, ::-1].copy(), input_color_order="BGR")["pixel_values"], expected)
    bgr_model = FaceImageProcessor(color_order="BGR", image_mean=0.0, image_std=1.0)
    np.testing.assert_array_equal(bgr_model(rgb, return_tensors="np")["pixel_values"][0, 0], rgb[:, :, 2])
    assert processor(Image.fromarray(rgb).resize((50, 50)))["pixel_values"].shape == (1, 3, 112, 112)
    with pytest.raises(ValueError, match="expected 112x112"):
        FaceImageProcessor(do_resize=False)(rgb[:50, :50].copy())
    with pytest.raises(ValueError, match="image 1 is an array"):
        processor([rgb, rgb.astype(np.float32)])
    with pytest.raises(TypeError, match="image 0 has type str"):
        processor(["face.jpg"])


@pytest.mark.numerics
@pytest.mark.parametrize("factory", [tiny_mobilefacenet, tiny_iresnet])
def test_onnx_export_parity_dynamic_batch(factory, tmp_path):
    import onnxruntime as ort

    model = factory()
    path = export_onnx(model, tmp_path / "face.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        got = session.run(None, {"pixel_values": x.numpy()})[0]
        with torch.no_grad():
            want = model(x).embedding.numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _real_mobilefacenet(shared):
    from rankface.models.mobilefacenet.convert import load_mobilefacenet_state_dict

    return load_mobilefacenet_state_dict(shared / "models" / "mobilefacenet" / "mobilefacenet.pt")


@pytest.mark.numerics
def test_real_state_dict_strict_and_onnx_parity(shared, tmp_path):
    import onnxruntime as ort

    folder = shared / "models" / "mobilefacenet"
    model = _real_mobilefacenet(shared)
    state = torch.load(folder / "mobilefacenet.pt", map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert sum(p.numel() for p in model.parameters()) == 999_936
    x = torch.randn(4, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x).embedding.numpy()
    reference = ort.InferenceSession(str(folder / "mobilefacenet.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ours, reference.run(None, {"input": x.numpy()})[0], atol=5e-5, rtol=0)
    exported = ort.InferenceSession(str(export_onnx(model, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(exported.run(None, {"pixel_values": x.numpy()})[0], ours, atol=5e-5, rtol=0)


@pytest.mark.numerics
def test_convert_mobilefacenet_cli(shared, tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    from rankface.models.mobilefacenet.convert import main

    assert main([str(shared / "models" / "mobilefacenet" / "mobilefacenet.pt"), str(tmp_path / "ckpt")]) == 0
    loaded = AutoModel.from_pretrained(tmp_path / "ckpt").eval()
    processor = AutoImageProcessor.from_pretrained(tmp_path / "ckpt")
    assert (processor.size, processor.color_order, processor.image_mean, processor.image_std) == (
        112, "RGB", 127.5, 128.0)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).embedding, _real_mobilefacenet(shared)(x).embedding)


@pytest.mark.slow
def test_lfw_accuracy_matches_readme(shared):
    """The pretrained MobileFaceNet reproduces the lfw112 README: 99.37 % at 112 px and, when
    RANKFACE_LFW_16PX=1, 81.08 % at 16 px LR-LR (a second pass over the 7,701 images: minutes on 2 busy cores)."""
    from rankface.data.faces import image_to_rgb_array, load_face_dataset, pair_rows, read_lfw_pairs
    from rankface.evaluation.verification import evaluate_pairs_at_resolution

    lfw = shared / "data" / "face" / "lfw112"
    dataset, _ = load_face_dataset(lfw, check_images=False)
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    rows = pair_rows(dataset, pairs)
    used = np.unique(rows)  # only the 7,701 images the pairs reference
    images = np.stack([image_to_rgb_array(img) for img in dataset.select(used.tolist())["image"]])
    local = np.searchsorted(used, rows)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    model = _real_mobilefacenet(shared)
    full = evaluate_pairs_at_resolution(model, images, local, same, 112, folds=folds)
    print(f"LFW 112 px: {100 * full.accuracy:.2f} +- {100 * full.accuracy_std:.2f} %, AUC {full.auc:.4f}, "
          f"TAR@FAR=1e-2 {100 * full.tar_at_far[0.01]:.2f} %, TAR@FAR=1e-3 {100 * full.tar_at_far[0.001]:.2f} %")
    assert abs(100 * full.accuracy - 99.37) <= 0.1
    assert abs(100 * full.accuracy_std - 0.28) <= 0.1
    if os.environ.get("RANKFACE_LFW_16PX") != "1":
        return
    low = evaluate_pairs_at_resolution(model, images, local, same, 16, setting="lr-lr", folds=folds)
    print(f"LFW 16 px LR-LR: {100 * low.accuracy:.2f} +- {100 * low.accuracy_std:.2f} %, AUC {low.auc:.4f}, "
          f"TAR@FAR=1e-2 {100 * low.tar_at_far[0.01]:.2f} %")
    assert abs(100 * low.accuracy - 81.08) <= 0.1
