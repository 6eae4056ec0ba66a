"""Where a trained RI model keeps the recognizability signal (issue 21): its own quality head against linear probes.

The RI target xi (fixed form: frozen clean leave-one-out prototypes of the starting encoder, clamped product, the
model's saved UI centre) and several read-outs are computed on a sample of one F1 half's training images, each at
8, 12, 16, 24, 32 and 112 px (`degrade_exact`). Ridge probes are fitted to xi on the images of half the identities and
judged on the other half (identity-disjoint), side by side with the model's own head and with the embedding norm:

- `head`: the model's regressed index xi_hat (trained end to end with the backbone);
- `probe v`: ridge on the embedding v (what a linear head on v could read from these features);
- `probe fmap`: ridge on the last feature map averaged over space;
- `norm`: the embedding's L2 norm (no fitting).

Per read-out: Pearson r with xi on the held-out identities (all resolutions pooled) and the AUC of telling a 24 px
image from an 8 px one (xi's own AUC beside them). If `probe v` reads xi well where `head` does not, the head's
training is what fails; if neither reading of v does but `probe fmap` does, v no longer holds the signal.

    python benchmarks/ri_quality_probe.py --model benchmarks/results/lfw_vlr/full/runs/ri-fix-fmap-seed0-halfA/model

The table is printed and saved as benchmarks/results/ri_quality_probe/<run>.md (<run>: the model's run folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _lfw_vlr_eval import HALVES, at_resolution, load_encoder

from rankface.evaluation.verification import roc_auc
from rankface.training.face import prepare_face_data
from rankface.training.face_arguments import parse_face_training_args
from rankface.training.face_ri import build_target_prototypes
from rankface.utils.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ri_quality_probe"
RESOLUTIONS = (8, 12, 16, 24, 32, 112)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a saved RI model folder (lfw_vlr's runs/.../model)")
    parser.add_argument("--half", default="A", choices=list(HALVES), help="the F1 half the model trained on")
    parser.add_argument("--images", type=int, default=1200, help="training images sampled (each at every resolution)")
    parser.add_argument("--ridge", type=float, default=1.0, help="ridge penalty on standardised features")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there (train it with benchmarks/lfw_vlr.py)")
    if args.images < 20:
        parser.error(f"--images must be >= 20, got {args.images}")
    return args


def ridge_fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, penalty: float) -> np.ndarray:
    """Ridge regression on standardised features (intercept unpenalised), fitted on one set, predicted on another."""
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-8
    a, b = (x_fit - mean) / std, (x_eval - mean) / std
    w = np.linalg.solve(a.T @ a + penalty * len(a) * np.eye(a.shape[1]), a.T @ (y_fit - y_fit.mean()))
    return b @ w + y_fit.mean()


@torch.no_grad()
def read_outs(model, prototypes, train_set, index: np.ndarray, batch_size: int = 64) -> dict[int, dict]:
    """Per resolution: `{"xi", "head", "v", "fmap", "norm"}` arrays over the sampled images."""
    from rankface.evaluation.verification import pixel_values_from_uint8
    from rankface.losses.recognizability import recognizability_index

    raw = [train_set.raw_image(int(i)) for i in index]
    labels = torch.as_tensor(train_set.labels[index])
    out = {}
    for r in RESOLUTIONS:
        parts: dict[str, list] = {k: [] for k in ("xi", "head", "v", "fmap", "norm")}
        for start in range(0, len(raw), batch_size):
            part = slice(start, start + batch_size)
            images = at_resolution(np.stack(raw[part]), r)
            res = model(pixel_values_from_uint8(images, model.config), output_feature_map=True)
            v = res.embedding.float()
            cos = prototypes.target_cos(v, labels[part], torch.as_tensor(index[part]))
            parts["xi"].append(recognizability_index(v, model.ui_centre.direction, class_cos=cos, labels=labels[part],
                                                     form="product_clamped"))
            parts["head"].append(res.quality.float())
            parts["v"].append(v)
            parts["fmap"].append(res.feature_map.float().mean(dim=(2, 3)))
            parts["norm"].append(v.norm(dim=1))
        out[r] = {k: torch.cat(v).numpy() for k, v in parts.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = ROOT / "recipes" / "configs" / "lfw_vlr_ri.yaml"
    face_args = parse_face_training_args(["--config", str(config), "--heldout_folds",
                                          *map(str, HALVES[args.half])])
    data = prepare_face_data(face_args)
    print(f"half {args.half}: {len(data.train_set)} training images of {data.num_classes} classes; prototypes from "
          "the pretrained encoder at 112 px ...", flush=True)
    prototypes = build_target_prototypes(load_encoder(None).eval(), data.train_set, data.num_classes)
    model = load_encoder(args.model).eval()
    rng = np.random.default_rng(args.seed)
    index = np.sort(rng.choice(len(data.train_set), size=min(args.images, len(data.train_set)), replace=False))
    values = read_outs(model, prototypes, data.train_set, index)

    classes = np.unique(data.train_set.labels[index])
    fit_classes = set(rng.permutation(classes)[: len(classes) // 2].tolist())
    fit = np.array([int(c) in fit_classes for c in data.train_set.labels[index]])
    stack = {k: np.concatenate([values[r][k] for r in RESOLUTIONS]) for k in ("xi", "head", "v", "fmap", "norm")}
    fit_all = np.concatenate([fit for _ in RESOLUTIONS])
    predictions = {"xi (the target)": stack["xi"], "head": stack["head"], "norm": stack["norm"]}
    for name, key in (("probe v", "v"), ("probe fmap", "fmap")):
        predictions[name] = np.empty_like(stack["xi"])
        predictions[name][~fit_all] = ridge_fit_predict(stack[key][fit_all], stack["xi"][fit_all],
                                                        stack[key][~fit_all], args.ridge)
        predictions[name][fit_all] = np.nan
    n = len(index)
    at = {r: slice(i * n, (i + 1) * n) for i, r in enumerate(RESOLUTIONS)}
    held = ~fit
    lines = [(f"model {args.model} (regressor reads its {model.config.quality_input}); "
             f"{held.sum()} held-out images of {len(classes) - len(fit_classes)} identities at each of "
             f"{list(RESOLUTIONS)} px (probes fitted on the other {fit.sum()} images' identities)\n"),
             "| read-out | Pearson r with xi | AUC 24 vs 8 px | mean at 8 / 16 / 24 / 112 px |",
             "|---|---:|---:|---|"]
    for name, pred in predictions.items():
        r = np.corrcoef(pred[~fit_all], stack["xi"][~fit_all])[0, 1]
        p24, p8 = pred[at[24]][held], pred[at[8]][held]
        auc = roc_auc(np.concatenate([p24, p8]), np.concatenate([np.ones(len(p24), bool), np.zeros(len(p8), bool)]))
        means = " / ".join(f"{pred[at[res]][held].mean():.3f}" for res in (8, 16, 24, 112))
        lines.append(f"| {name} | {r:.3f} | {auc:.3f} | {means} |")
    print("\n" + "\n".join(lines))
    out = RESULTS / f"{args.model.parent.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nsaved {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
