"""Face encoders (MobileFaceNet, IResNet) and the RI encoder round-trip through the local Hub-compatible server with
their image processor and model card: `AutoModel` / `AutoImageProcessor.from_pretrained(repo_id)` give the same
embeddings (and, for RI, the same quality and UI-centre buffers) as the pushed model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from numerics import ACROSS_PATHS
from transformers import AutoImageProcessor, AutoModel

import rankface.models.auto  # noqa: F401 - registers the rankface model types with the Auto classes
from rankface.hub import push_model_to_hub, render_model_card
from rankface.models.face_processor import FaceImageProcessor
from rankface.models.iresnet import IResNetConfig, IResNetModel
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

SIZE = 32
TINY_MFN = {"input_size": SIZE, "stem_channels": 8, "block_settings": [[2, 8, 1, 2], [2, 16, 2, 2]],
            "last_channels": 32, "embedding_size": 16}
TINY_IRESNET = {"num_layers": 18, "input_size": SIZE, "stage_channels": [8, 8, 16, 16], "embedding_size": 12,
                "color_order": "BGR"}  # BGR: the contract the processor must carry through the Hub

CARD_COMMON = {
    "license": "other", "datasets": ["lfw"],
    "training_data": "LFW train identities (protocol A of lfw112: identity-disjoint from the View-2 test pairs).",
    "training_data_license": "LFW: research use only, no licence granted for commercial use",
    "metrics": [
        {"name": "Accuracy", "type": "accuracy", "value": 0.811, "dataset": "LFW", "dataset_type": "lfw112",
         "split": "test", "config": "LR-LR 16 px"},
        {"name": "TAR@FAR=1e-2", "type": "tar_at_far_1e-2", "value": 0.523, "dataset": "LFW", "dataset_type": "lfw112",
         "split": "test", "config": "LR-LR 8 px"},
    ],
    "limitations": ["Trained for a unit test: random weights."],
}
RI_QUALITY = {
    "range": "unbounded real number; trained towards the RI range [-4, 4] of the product form",
    "calibration": "not calibrated: the UI-centre mean RI of unrecognizable images (mu_UI) is saved in the model; "
                   "choose a discard threshold on your own data",
}


def _input_contract(processor: FaceImageProcessor) -> dict:
    return {"alignment": "ArcFace five-point template, 112 x 112 crop", "size": f"{processor.size} x {processor.size}",
            "colour_order": processor.color_order, "mean": processor.image_mean, "std": processor.image_std}


def _faces(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    """Random uint8 RGB 'faces', half of them at another size so the processor's resize is part of the path."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(SIZE if i % 2 else 48,) * 2 + (3,), dtype=np.uint8) for i in range(n)]


def _embed(model, processor, images) -> torch.Tensor:
    with torch.inference_mode():
        return model(processor(images)["pixel_values"]).embedding


def _check_repo(repo_id: str, fields: dict, template: str) -> ModelCard:
    names = {s.rfilename for s in HfApi().model_info(repo_id).siblings}
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= names
    card = ModelCard.load(repo_id)
    assert card.content == render_model_card(template, **fields)
    text = card.text
    for section in ("## Input contract", "## Training data", "## Evaluation", "## Limitations and bias"):
        assert section in text
    assert fields["training_data_license"] in text and fields["training_data"] in text
    assert f"| Colour order | {fields['input']['colour_order']} |" in text
    for m in fields["metrics"]:
        assert f"| {m['config']} | {m['name']} | {m['value']} |" in text
    assert card.data.pipeline_tag == "image-feature-extraction"
    return card


@pytest.mark.numerics
@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilefacenet", "iresnet"])
def test_face_encoder_round_trip(local_hub, family):
    torch.manual_seed(0)
    if family == "mobilefacenet":
        model = MobileFaceNetModel(MobileFaceNetConfig(**TINY_MFN))
    else:
        model = IResNetModel(IResNetConfig(**TINY_IRESNET))
    # Non-trivial BatchNorm statistics, so that losing them on the way would change the embeddings.
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, SIZE, SIZE))
    model.eval()
    processor = FaceImageProcessor.from_model_config(model.config)
    repo_id = f"rankface-test/tiny-{family}"
    fields = {**CARD_COMMON, "model_name": repo_id, "input": _input_contract(processor),
              "embedding_size": model.config.embedding_size, "loss": {"name": "ArcFace + UNPG", "margin": 0.5}}
    push_model_to_hub(model, repo_id, fields, "face_encoder", image_processor=processor)

    card = _check_repo(repo_id, fields, "face_encoder")
    assert "## Quality score" not in card.text
    loaded = AutoModel.from_pretrained(repo_id).eval()
    loaded_processor = AutoImageProcessor.from_pretrained(repo_id)
    assert type(loaded) is type(model) and isinstance(loaded_processor, FaceImageProcessor)
    assert loaded_processor.to_dict() == processor.to_dict()
    images = _faces()
    expected = _embed(model, processor, images)
    # Loaded weights sit at other offsets in memory, so MKL may sum in another order: float noise, not bit for bit
    # (tests/numerics.py); lost BatchNorm statistics or a wrong colour order would move the embedding by far more.
    torch.testing.assert_close(_embed(loaded, loaded_processor, images), expected, **ACROSS_PATHS)
    # The colour order really travelled: feeding the other order changes the embedding of a non-grey image.
    swapped = FaceImageProcessor(size=SIZE, color_order="RGB" if processor.color_order == "BGR" else "BGR",
                                 image_mean=processor.image_mean, image_std=processor.image_std)
    assert not torch.allclose(_embed(loaded, swapped, images), expected)


def _tiny_ri() -> RecognizabilityModel:
    torch.manual_seed(0)
    model = RecognizabilityModel(RecognizabilityConfig(backbone=MobileFaceNetConfig(**TINY_MFN),
                                                       attention_reduction=4, match_with="v+att"))
    with torch.no_grad():
        model.train()
        model(torch.randn(8, 3, SIZE, SIZE))  # BatchNorm statistics
        # Two UI-centre steps through the model's own update, so the buffers hold EMA values, not a first copy.
        weights = torch.randn(5, TINY_MFN["embedding_size"])
        for _ in range(2):
            model.update_ui_centre(torch.randn(6, 3, SIZE, SIZE), torch.randint(0, 5, (6,)), weights)
    return model.eval()


@pytest.mark.numerics
@pytest.mark.slow
def test_ri_encoder_round_trip(local_hub):
    model = _tiny_ri()
    buffers = {k: v.clone() for k, v in model.ui_centre.state_dict().items()}
    assert int(buffers["num_updates"]) == 2 and buffers["centre"].abs().sum() > 0 and buffers["sigma_ui"] != 0
    processor = FaceImageProcessor.from_model_config(model.config)
    repo_id = "rankface-test/tiny-ri"
    fields = {**CARD_COMMON, "model_name": repo_id, "input": _input_contract(processor),
              "embedding_size": model.config.embedding_size, "quality": RI_QUALITY,
              "loss": {"name": "ArcFace + RI (regressor, index diversion, attention)", "tau": 0.1}}
    push_model_to_hub(model, repo_id, fields, "ri_encoder", image_processor=processor)

    card = _check_repo(repo_id, fields, "ri_encoder")
    text = card.text
    assert "## Quality score" in text and "face-image-quality" in card.data.tags
    assert f"**Range:** {RI_QUALITY['range']}" in text and f"**Calibration:** {RI_QUALITY['calibration']}" in text
    assert "**Meaning:**" in text and "higher means more recognizable" in text  # template defaults for the direction

    loaded = AutoModel.from_pretrained(repo_id).eval()
    loaded_processor = AutoImageProcessor.from_pretrained(repo_id)
    assert isinstance(loaded, RecognizabilityModel) and isinstance(loaded_processor, FaceImageProcessor)
    assert loaded.config.match_with == "v+att" and loaded.config.backbone == model.config.backbone
    for key, value in buffers.items():
        assert torch.equal(loaded.ui_centre.state_dict()[key], value), key

    images = _faces(6, seed=1)
    with torch.inference_mode():
        want = model(processor(images)["pixel_values"])
        got = loaded(loaded_processor(images)["pixel_values"])
    # The buffers above come back bit for bit; the outputs agree to float noise (loaded weights at other offsets in
    # memory: another summation order in MKL, tests/numerics.py).
    for field in ("embedding", "quality", "attention_map", "attended_embedding", "matching_embedding"):
        torch.testing.assert_close(getattr(got, field), getattr(want, field), **ACROSS_PATHS, msg=field)
    # The user-facing helpers agree too (they build the processor from the loaded config).
    emb, quality = loaded.embed_with_quality(images)
    want_emb, want_quality = model.embed_with_quality(images)
    torch.testing.assert_close(emb, want_emb, **ACROSS_PATHS)
    torch.testing.assert_close(quality, want_quality, **ACROSS_PATHS)
    torch.testing.assert_close(loaded.quality(images), want_quality, **ACROSS_PATHS)
