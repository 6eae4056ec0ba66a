"""Face-encoder training recipe on a tiny synthetic LFW-like data set made here (Parquet + pairs.txt + splits.json):
finite losses, weights that move, class weights only in the checkpoints, exact resume, and a real 2-process job."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from launch import launch_two_processes
from safetensors.torch import load_file

from rankface.training.face import train_face
from rankface.training.face_arguments import parse_face_training_args

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "train_face.py"
CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
SIZE = 32
IDENTITIES = [f"Person_{i:02d}" for i in range(10)]  # 0-1 in fold 0, 2-3 in fold 1, 4-9 in no pair
IMAGES_PER_ID = 4


def face_image(identity: int, number: int) -> bytes:
    """A 32 px JPEG: an identity-specific smooth pattern plus per-image noise (learnable, not trivial)."""
    rng = np.random.default_rng([identity, 999])
    base = rng.integers(40, 215, size=(4, 4, 3)).astype(np.float32)
    face = np.kron(base, np.ones((8, 8, 1), dtype=np.float32))
    face += np.random.default_rng([identity, number]).normal(0, 12, size=face.shape)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(face, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps one process-wide state; a run with another mixed precision needs it cleared."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def lfw_like(tmp_path_factory) -> Path:
    import datasets

    folder = tmp_path_factory.mktemp("lfw_like")
    rows = {"image": [], "label": [], "identity": [], "filename": []}
    for i, name in enumerate(IDENTITIES):
        for n in range(1, IMAGES_PER_ID + 1):
            filename = f"{name}/{name}_{n:04d}.jpg"
            rows["image"].append({"bytes": face_image(i, n), "path": filename})
            rows["label"].append(i)
            rows["identity"].append(name)
            rows["filename"].append(filename)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=IDENTITIES),
                                  "identity": datasets.Value("string"), "filename": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "data-00000-of-00001.parquet"))
    # View-2 layout with 2 folds of 2 matched + 2 mismatched pairs each.
    lines = ["2 2"]
    for a, b in ((0, 1), (2, 3)):
        lines += [f"{IDENTITIES[a]} 1 2", f"{IDENTITIES[b]} 3 4", f"{IDENTITIES[a]} 1 {IDENTITIES[b]} 2",
                  f"{IDENTITIES[a]} 3 {IDENTITIES[b]} 4"]
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")
    splits = {"test_identities": IDENTITIES[:4], "train_identities": IDENTITIES[4:],
              "view2_10fold": {"folds": [{"fold": 0, "test_identities": IDENTITIES[:2]},
                                         {"fold": 1, "test_identities": IDENTITIES[2:4]}],
                               "non_pair_identities": IDENTITIES[4:]}}
    (folder / "splits.json").write_text(json.dumps(splits))
    return folder


@pytest.fixture(scope="module")
def tiny_encoders(tmp_path_factory) -> dict[str, Path]:
    """Saved random tiny encoders (the starting points, so their weights are known exactly)."""
    from rankface.models.iresnet import IResNetConfig, IResNetModel
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

    folder = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    mfn = MobileFaceNetModel(MobileFaceNetConfig(input_size=SIZE, stem_channels=8, block_settings=[[2, 8, 1, 2],
                             [2, 16, 2, 2]], last_channels=32, embedding_size=16))
    iresnet = IResNetModel(IResNetConfig(num_layers=18, input_size=SIZE, stage_channels=[8, 8, 16, 16],
                                         embedding_size=12))
    paths = {"mobilefacenet": folder / "mfn", "iresnet": folder / "iresnet"}
    mfn.save_pretrained(paths["mobilefacenet"])
    iresnet.save_pretrained(paths["iresnet"])
    return paths


def settings(data: Path, encoder: Path, out: Path, **overrides) -> dict:
    values = {
        "dataset": str(data), "heldout_folds": [0, 1], "model_name_or_path": str(encoder), "head": "arcface",
        "min_resolution": 4, "max_resolution": SIZE, "degrade_prob": 0.7, "batch_size": 8, "max_steps": 3,
        "learning_rate": 0.05, "eval_resolutions": [SIZE, 8], "eval_batch_size": 16, "output_dir": str(out),
        "quiet": True, "check_images": True, "head_init_images_per_class": 2,
    }
    values.update(overrides)
    return values


def write_config(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def run(config: Path, *extra: str) -> dict:
    return train_face(parse_face_training_args(["--config", str(config), *extra]))


@pytest.mark.parametrize(("encoder", "head", "unpg", "precision"), [("mobilefacenet", "arcface", False, "fp32"),
                                                                    ("iresnet", "cosface", True, "bf16")])
def test_training_moves_weights_with_finite_loss_and_saves_encoder_without_head(
    lfw_like, tiny_encoders, tmp_path, encoder, head, unpg, precision
):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", settings(lfw_like, tiny_encoders[encoder], out, head=head, unpg=unpg,
                                                        checkpoint_steps=3, precision=precision))
    final = run(config)
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log"] if "loss" in e]
    assert len(losses) == 3 and all(np.isfinite(losses))
    if unpg:
        assert all(e["negatives"] > 0 for e in state["log"] if "loss" in e)
        # UNPG's mechanism is logged every step (issue 21): pairs, bounds, share of the mass, hardest class cosine
        for e in (e for e in state["log"] if "loss" in e):
            assert e["unpg_pairs"] >= e["negatives"] and 0.0 < e["unpg_share"] < 1.0
            assert e["unpg_lower"] <= e["unpg_kept_max"] <= e["unpg_upper"]
            assert -1.0 <= e["unpg_hardest_class_mean"] <= e["unpg_hardest_class_max"] <= 1.0
    # Held-out folds 0 and 1 leave the 6 identities of no pair: 24 images, 6 classes.
    assert (state["num_classes"], state["num_train_images"]) == (6, 24)
    assert set(final) == {f"lr-lr@{SIZE}", "lr-lr@8"} and 0.0 <= final["lr-lr@8"]["accuracy"] <= 1.0
    start = load_file(tiny_encoders[encoder] / "model.safetensors")
    trained = load_file(out / "model" / "model.safetensors")
    assert set(trained) == set(start)  # the encoder alone: no class weights
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(start[k], trained[k])]
    assert len(moved) > len(start) // 2
    assert (out / "model" / "preprocessor_config.json").is_file()
    checkpoint_weights = load_file(out / "checkpoints" / "step-0000003" / "model.safetensors")
    assert checkpoint_weights["classifier.weight"].shape == (6, 16 if encoder == "mobilefacenet" else 12)
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401

    reloaded = AutoModel.from_pretrained(out / "model")
    assert reloaded(torch.zeros(2, 3, SIZE, SIZE)).embedding.shape[0] == 2


def test_centroid_init_points_class_weights_at_class_means(lfw_like, tiny_encoders, tmp_path):
    from rankface.training.face import FaceRecognitionModule, build_encoder, class_centroids, prepare_face_data

    args = parse_face_training_args(["--config", str(write_config(
        tmp_path / "c.yaml", settings(lfw_like, tiny_encoders["mobilefacenet"], tmp_path / "o")))])
    data = prepare_face_data(args)
    model = FaceRecognitionModule(build_encoder(args), data.num_classes)
    centroids = class_centroids(model.encoder, data.train_set, data.num_classes, per_class=4)
    # Independent reference: embed each class's 4 raw images one by one in eval mode, average the unit vectors.
    model.encoder.eval()
    for c in range(data.num_classes):
        rows = [i for i, y in enumerate(data.train_set.labels) if y == c]
        vecs = []
        for i in rows:
            x = torch.from_numpy(data.train_set.raw_image(i).astype(np.float32)).permute(2, 0, 1)[None]
            with torch.no_grad():
                e = model.encoder((x - 127.5) / 128.0).embedding[0]
            vecs.append(e / e.norm())
        mean = torch.stack(vecs).mean(0)
        torch.testing.assert_close(centroids[c], mean / mean.norm(), atol=1e-5, rtol=0)


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(lfw_like, tiny_encoders, tmp_path):
    out = tmp_path / "out"
    # 24 images / batch 8 = 3 steps per epoch: the resume point (step 2) is inside an epoch, step 4 in the next.
    values = settings(lfw_like, tiny_encoders["mobilefacenet"], out, max_steps=5, checkpoint_steps=2,
                      checkpoints_to_keep=5, unpg=True, eval_at_end=False)
    config = write_config(tmp_path / "c.yaml", values)
    run(config)
    uninterrupted = load_file(out / "model" / "model.safetensors")
    head_uninterrupted = load_file(out / "checkpoints" / "step-0000004" / "model.safetensors")["classifier.weight"]
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-0000002", "step-0000004"]
    for path in (checkpoints[1], out / "model"):  # the run "died" after step 2
        subprocess.run(["rm", "-rf", str(path)], check=True)
    run(config, "--resume_from_checkpoint", "latest")
    resumed = load_file(out / "model" / "model.safetensors")
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)
    head_resumed = load_file(out / "checkpoints" / "step-0000004" / "model.safetensors")["classifier.weight"]
    torch.testing.assert_close(head_resumed, head_uninterrupted, rtol=0, atol=1e-6)


def test_settings_errors_name_the_problem_and_shipped_configs_parse(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", {"learning_rat": 0.1})
    with pytest.raises(ValueError, match=r"bad.yaml: unknown setting\(s\) \['learning_rat'\]"):
        parse_face_training_args(["--config", str(bad)])
    with pytest.raises(ValueError, match="head must be one of"):
        parse_face_training_args(["--head", "sphereface"])
    with pytest.raises(ValueError, match="min_resolution <= max_resolution"):
        parse_face_training_args(["--min_resolution", "32", "--max_resolution", "16"])
    shipped = {p.name: parse_face_training_args(["--config", str(p)]) for p in sorted(CONFIGS.glob("lfw_vlr_*.yaml"))}
    assert {"lfw_vlr_arcface.yaml", "lfw_vlr_arcface_unpg.yaml", "lfw_vlr_cosface.yaml",
            "lfw_vlr_cosface_unpg.yaml"} <= set(shipped)
    assert shipped["lfw_vlr_cosface_unpg.yaml"].unpg and shipped["lfw_vlr_cosface_unpg.yaml"].head == "cosface"
    assert shipped["lfw_vlr_ri.yaml"].ri
    # Same schedule for every system: only head, unpg, the RI settings and output_dir may differ.
    base = vars(shipped["lfw_vlr_arcface.yaml"])
    for name in ("lfw_vlr_arcface_unpg.yaml", "lfw_vlr_cosface.yaml", "lfw_vlr_cosface_unpg.yaml", "lfw_vlr_ri.yaml"):
        diff = {k for k, v in vars(shipped[name]).items() if base[k] != v and not k.startswith("ri_")}
        assert diff <= {"head", "unpg", "ri", "output_dir"}, (name, diff)


def test_ri_training_logs_its_losses_and_saves_ui_centre_with_the_encoder(lfw_like, tiny_encoders, tmp_path):
    out = tmp_path / "out"
    # ri_warmup_ratio 0.5 of 4 steps: steps 0 and 1 (0-based) warm up, the losses switch on exactly at step 2.
    config = write_config(tmp_path / "c.yaml", settings(lfw_like, tiny_encoders["mobilefacenet"], out, ri=True,
                                                        ri_warmup_ratio=0.5, max_steps=4, eval_at_end=False))
    run(config)
    state = json.loads((out / "trainer_state.json").read_text())
    entries = [e for e in state["log"] if "loss" in e]
    assert all(np.isfinite([e["loss"], e["ri_regression"], e["ri_diversion"], e["ri_attention"]]).all() for e in entries)
    assert [e["ri_attention"] > 0.0 for e in entries] == [False, False, True, True]
    from transformers import AutoModel

    import rankface.models.auto  # noqa: F401

    model = AutoModel.from_pretrained(out / "model")
    assert type(model).__name__ == "RecognizabilityModel"
    assert int(model.ui_centre.num_updates) == 4 and float(model.ui_centre.centre.norm()) > 0
    start = load_file(tiny_encoders["mobilefacenet"] / "model.safetensors")
    trained = load_file(out / "model" / "model.safetensors")
    assert not torch.equal(trained["backbone.conv1.0.weight"], start["conv1.0.weight"])


@pytest.mark.parametrize(("ratio", "steps", "expected"), [(0.0, 600, 0), (1.0, 600, 600), (0.25, 600, 150),
                                                         (0.5, 3, 2), (0.1, 4, 0)])
def test_ri_warmup_ratio_is_a_share_of_the_total_steps(ratio, steps, expected):
    from rankface.training.face import ri_warmup_steps
    from rankface.training.face_arguments import FaceTrainingArguments

    # 0: the losses act from the first step; 1: the warm-up covers every step (they never switch on in this run).
    assert ri_warmup_steps(FaceTrainingArguments(ri=True, ri_warmup_ratio=ratio), steps) == expected
    # an explicit step count overrides the share
    assert ri_warmup_steps(FaceTrainingArguments(ri=True, ri_warmup_ratio=ratio, ri_warmup_steps=7), steps) == 7


@pytest.mark.parametrize("ratio", [-0.01, 1.01])
def test_ri_warmup_ratio_outside_zero_one_is_refused(ratio):
    with pytest.raises(ValueError, match=r"ri_warmup_ratio must be a share of the steps in \[0, 1\]"):
        parse_face_training_args(["--ri", "true", "--ri_warmup_ratio", str(ratio)])


def _autocast_dtype_of_a_prepared_step(monkeypatch, precision: str, caps: dict[str, str]) -> torch.dtype:
    """The dtype a convolution of a tiny encoder computes in, inside the face recipe's Accelerator."""
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
    from rankface.training.face import FaceRecognitionModule, make_accelerator
    from rankface.training.face_arguments import FaceTrainingArguments

    for name, value in caps.items():
        monkeypatch.setenv(name, value)
    accelerator = make_accelerator(FaceTrainingArguments(precision=precision))
    encoder = MobileFaceNetModel(MobileFaceNetConfig(input_size=SIZE, stem_channels=8, block_settings=[[2, 8, 1, 2]],
                                                     last_channels=16, embedding_size=8))
    model = accelerator.prepare(FaceRecognitionModule(encoder, num_classes=3))
    seen = []
    encoder.conv1.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    model(torch.randn(2, 3, SIZE, SIZE))
    return seen[0]


def test_bf16_autocast_only_where_native_or_forced(monkeypatch):
    from rankface import hardware

    native = hardware.native_bf16()
    # auto: bf16 exactly where this CPU runs it natively
    assert _autocast_dtype_of_a_prepared_step(monkeypatch, "auto", {}) == (torch.bfloat16 if native else torch.float32)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    # the same decision on a machine capped to AVX2 (rankface.hardware's caps emulate that class): fp32
    avx2 = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert _autocast_dtype_of_a_prepared_step(monkeypatch, "auto", avx2) == torch.float32
    AcceleratorState._reset_state(reset_partial_state=True)
    # forced bf16 runs in bf16 even there (and warns at most once per process: emulated bf16 is slow)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert _autocast_dtype_of_a_prepared_step(monkeypatch, "bf16", avx2) == torch.bfloat16
    AcceleratorState._reset_state(reset_partial_state=True)
    assert _autocast_dtype_of_a_prepared_step(monkeypatch, "fp32", {}) == torch.float32


def test_channels_last_gives_the_default_layouts_outputs_and_gradients():
    """channels_last changes only the memory order, so the convolution kernels (oneDNN NHWC instead of NCHW) sum in
    another order: fp32 rounding differences of a few ulp per layer, which ArcFace's scale (s = 64) and BatchNorm's
    sums over the batch amplify. Measured on this tiny MobileFaceNet: embedding differences <= 3.4e-6 of the largest
    embedding entry, gradient differences <= 3.7e-6 of the largest gradient entry (single entries that are 0 in exact
    arithmetic, e.g. a bias before a BatchNorm, differ by noise of that size, so an entry-wise relative check is
    meaningless). Tolerance: 1e-4 of the largest entry (~27x the measured noise, room for other CPUs' kernels),
    while a transposed weight or a wrong input order changes outputs by O(1) of that scale."""
    import copy

    from rankface.losses.margins import ArcFace, MarginLoss
    from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
    from rankface.training.face import FaceRecognitionModule

    torch.manual_seed(0)
    encoder = MobileFaceNetModel(MobileFaceNetConfig(input_size=SIZE, stem_channels=8, block_settings=[
        [2, 8, 1, 2], [2, 16, 2, 2]], last_channels=32, embedding_size=16))
    default = FaceRecognitionModule(encoder, num_classes=5).train()
    nhwc = copy.deepcopy(default).to(memory_format=torch.channels_last)
    assert nhwc.encoder.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    pixels, labels = torch.randn(8, 3, SIZE, SIZE), torch.arange(8) % 5
    outputs = {}
    for name, model in (("default", default), ("nhwc", nhwc)):
        x = pixels.contiguous(memory_format=torch.channels_last) if name == "nhwc" else pixels
        embedding, cos = model(x)
        MarginLoss(ArcFace())(embedding, labels, cos).backward()
        outputs[name] = (embedding.detach(), {n: p.grad for n, p in model.named_parameters()})
    reference, grads = outputs["default"]
    torch.testing.assert_close(outputs["nhwc"][0], reference, rtol=0, atol=1e-4 * float(reference.abs().max()))
    largest = max(float(g.abs().max()) for g in grads.values())
    for name, grad in grads.items():
        torch.testing.assert_close(outputs["nhwc"][1][name], grad, rtol=0, atol=1e-4 * largest, msg=name)
    # and the difference is not trivially zero: the two layouts really ran different kernels on different memory
    assert not nhwc.encoder.conv1[0].weight.is_contiguous() and default.encoder.conv1[0].weight.is_contiguous()


def test_validation_curve_is_logged_on_identities_left_out_of_training(lfw_like, tiny_encoders, tmp_path):
    out = tmp_path / "out"
    # Held-out fold 0 (identities 0-1); validation takes the identities in no pair (4-9), so training keeps fold 1's.
    config = write_config(tmp_path / "c.yaml", settings(
        lfw_like, tiny_encoders["mobilefacenet"], out, heldout_folds=[0], validation_identities="non_pair",
        eval_sets=["validation"], val_resolutions=[SIZE, 8], eval_steps=2, max_steps=3, eval_at_end=False))
    run(config)
    state = json.loads((out / "trainer_state.json").read_text())
    assert (state["num_classes"], state["num_train_images"]) == (2, 8)
    curve = [e for e in state["log"] if "val" in e]
    assert [e["step"] for e in curve] == [0, 2, 3]  # the start, every eval_steps, the end
    for entry in curve:
        assert set(entry["val"]) == {f"lr-lr@{SIZE}", "lr-lr@8"}
        assert 0.0 <= entry["val"]["lr-lr@8"]["accuracy"] <= 1.0
    report = json.loads((out / "data_report.json").read_text())
    assert report["num_validation_identities"] == 6 and report["num_validation_pairs"] == 2 * 6 * 6
    with pytest.raises(ValueError, match="validation_identities is 'none'"):
        parse_face_training_args(["--eval_sets", "validation"])


@pytest.mark.slow
def test_two_process_training_is_one_synchronised_job(lfw_like, tiny_encoders, tmp_path):
    out = tmp_path / "out"
    # UNPG (global-batch negatives) inside the RI objective (UI-centre buffers all-reduced): both cross-rank paths.
    config = write_config(tmp_path / "c.yaml", settings(lfw_like, tiny_encoders["mobilefacenet"], out, unpg=True,
                                                        ri=True, ri_warmup_ratio=0.5, max_steps=2, eval_at_end=False,
                                                        ddp_timeout=120))
    launch_two_processes(RECIPE, config, timeout=180, output_dir=out)
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 2
    assert len(state["rank_fingerprints"]) == 2 and len(set(state["rank_fingerprints"])) == 1


def test_optimizer_learning_rates_per_module():
    from rankface.models.mobilefacenet import MobileFaceNetConfig
    from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel
    from rankface.training.face import FaceRecognitionModule, make_face_optimizer
    from rankface.training.face_arguments import FaceTrainingArguments

    backbone = MobileFaceNetConfig(input_size=32, stem_channels=8, block_settings=[[2, 8, 1, 2]], last_channels=16,
                                   embedding_size=8)
    model = FaceRecognitionModule(RecognizabilityModel(RecognizabilityConfig(backbone=backbone, attention_reduction=4)),
                                  num_classes=5)
    args = FaceTrainingArguments(ri=True, learning_rate=0.01, head_learning_rate=0.1, ri_head_learning_rate=0.05)
    lr_of = {id(p): g["lr"] for g in make_face_optimizer(model, args).param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        expected = 0.1 if name.startswith("classifier.") else 0.01 if name.startswith("encoder.backbone.") else 0.05
        assert lr_of[id(param)] == expected, name
    assert {"encoder.quality_head.weight", "encoder.attention_proj.weight"} <= {n for n, _ in model.named_parameters()}
    # without the setting, the RI modules train at the backbone's rate (the earlier behaviour)
    args.ri_head_learning_rate = None
    lr_of = {id(p): g["lr"] for g in make_face_optimizer(model, args).param_groups for p in g["params"]}
    assert lr_of[id(model.encoder.quality_head.weight)] == 0.01


def test_head_init_random_leaves_the_class_weights_off_the_centroids(lfw_like, tiny_encoders, tmp_path):
    """`head_init: random` (UNPG's authors' setting) against the default centroids, with learning rates 0 so that the
    checkpoint holds the initial class weights."""
    from rankface.training.face import FaceRecognitionModule, build_encoder, class_centroids, prepare_face_data

    heads = {}
    for init in ("centroids", "random"):
        out = tmp_path / init
        config = write_config(tmp_path / f"{init}.yaml", settings(
            lfw_like, tiny_encoders["mobilefacenet"], out, head_init=init, max_steps=1, checkpoint_steps=1,
            learning_rate=0.0, head_learning_rate=0.0, eval_at_end=False, head_init_images_per_class=4))
        run(config)
        heads[init] = load_file(out / "checkpoints" / "step-0000001" / "model.safetensors")["classifier.weight"]
    args = parse_face_training_args(["--config", str(tmp_path / "centroids.yaml")])
    data = prepare_face_data(args)
    centroids = class_centroids(FaceRecognitionModule(build_encoder(args), data.num_classes).encoder, data.train_set,
                                data.num_classes, per_class=4)
    cosine = {k: torch.nn.functional.cosine_similarity(v, centroids, dim=1) for k, v in heads.items()}
    assert cosine["centroids"].min() > 0.999
    assert cosine["random"].abs().max() < 0.99 and not torch.allclose(heads["random"], heads["centroids"])


def test_ri_with_the_fixed_target_logs_xi_per_resolution_bucket(lfw_like, tiny_encoders, tmp_path):
    """Issue 21: `ri_target_prototypes: initial` + the clamped product train, and the xi / xi_hat log is taken at
    steps 0, 2 and 4 (every `ri_log_steps`) for every resolution bucket; the regressor reads the feature map when
    told to, and the saved model says so."""
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", settings(
        lfw_like, tiny_encoders["mobilefacenet"], out, ri=True, ri_warmup_ratio=0.0, max_steps=4, eval_at_end=False,
        eval_steps=2, ri_log_steps=2, ri_log_images=12, ri_target_prototypes="initial", ri_form="product_clamped",
        ri_quality_input="feature_map"))
    run(config)
    saved = [json.loads(p.read_text()) for p in out.rglob("config.json")]
    assert saved and all(c["quality_input"] == "feature_map" for c in saved if c.get("model_type") ==
                         "rankface-recognizability")
    assert any(c.get("model_type") == "rankface-recognizability" for c in saved)
    state = json.loads((out / "trainer_state.json").read_text())
    logs = [e for e in state["log"] if "ri_buckets" in e]
    assert [e["step"] for e in logs] == [0, 2, 4]
    for entry in logs:
        buckets = entry["ri_buckets"]["buckets"]
        assert set(buckets) == {"8", "12", "16", "24", "32", "112"} and entry["ri_buckets"]["images"] == 12
        # clamped product: xi in [0, 2]
        assert all(0.0 <= b["xi"] <= 2.0 and np.isfinite(b["xi_hat"]) for b in buckets.values())
        assert 0.0 <= entry["ri_buckets"]["auc_24_8"]["xi_hat"] <= 1.0
    steps = [e for e in state["log"] if "loss" in e]
    assert all(e["ri_xi"] >= 0.0 and e["ri_diversion"] >= 0.0 for e in steps)
    with pytest.raises(ValueError, match="ri_log_steps .* must be a multiple of eval_steps"):
        parse_face_training_args(["--ri", "true", "--ri_log_steps", "3", "--eval_steps", "2"])
    with pytest.raises(ValueError, match="ri_quality_input must be one of"):
        parse_face_training_args(["--ri", "true", "--ri_quality_input", "pixels"])


def test_ri_defaults_are_issue_21s_fix_and_the_paper_stays_selectable():
    """The fixed RI is the default when fine-tuning; from scratch, where the starting encoder is random, 'auto' takes
    the classifier's rows and an explicit 'initial' is refused with the reason; the paper's settings parse as given."""
    fixed = parse_face_training_args(["--ri", "true"])
    assert (fixed.ri_target_prototypes, fixed.ri_form, fixed.ri_quality_input) == (
        "initial", "product_clamped", "feature_map")
    assert parse_face_training_args(["--ri", "true", "--from_scratch", "true"]).ri_target_prototypes == "classifier"
    with pytest.raises(ValueError, match="from_scratch makes random"):
        parse_face_training_args(["--ri", "true", "--from_scratch", "true", "--ri_target_prototypes", "initial"])
    paper = parse_face_training_args(["--ri", "true", "--ri_target_prototypes", "classifier", "--ri_form", "product",
                                      "--ri_quality_input", "embedding"])
    assert (paper.ri_target_prototypes, paper.ri_form, paper.ri_quality_input) == (
        "classifier", "product", "embedding")
