"""Model cards from the Jinja templates in `model_cards/`, and publishing a model with its card to the Hub.

The templates ship inside the package (`rankface/model_cards/*.md.j2`, package data) so an installed wheel
renders cards; the repository's top-level `model_cards/` is a link to that folder, one copy of each file.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, HfApi
from huggingface_hub.repocard_data import eval_results_to_model_index

from rankface.utils.io import atomic_write

_METRIC_KEYS = ("name", "type", "value", "dataset", "dataset_type", "split")


@dataclass(frozen=True)
class CardSpec:
    """The fields a bundled template needs.

    Attributes:
        required: fields the caller must give.
        optional: fields with their defaults (None: the template leaves the part out).
        nested: for dict fields, the keys that must be present.
        task_type: the Hub task of the model-index entries.
        may_have_no_metrics: `metrics` may be an empty list (the card then says the model was not evaluated).
    """

    required: tuple[str, ...]
    optional: dict[str, Any] = field(default_factory=dict)
    nested: dict[str, tuple[str, ...]] = field(default_factory=dict)
    task_type: str = "text-ranking"
    may_have_no_metrics: bool = False


_FACE_REQUIRED = ("model_name", "license", "datasets", "training_data", "training_data_license", "input", "metrics")
_FACE_OPTIONAL = {"base_model": None, "loss": None, "embedding_size": None, "tags": [], "intended_use": None,
                  "limitations": [], "bias": None, "citations": []}
_FACE_NESTED = {"input": ("alignment", "size", "colour_order", "mean", "std"), "loss": ("name",)}

CARD_SPECS: dict[str, CardSpec] = {
    "reranker": CardSpec(
        required=("model_name", "base_model", "license", "datasets", "training_data", "label_protocol", "loss",
                  "metrics"),
        optional={"language": "en", "tags": [], "max_length": None, "training": None, "intended_use": None,
                  "limitations": [], "encoder": "cross"},
        nested={"loss": ("name",)},
        may_have_no_metrics=True,  # a training run without an eval split still gets its card
    ),
    "face_encoder": CardSpec(_FACE_REQUIRED, _FACE_OPTIONAL, _FACE_NESTED, task_type="image-feature-extraction"),
    "ri_encoder": CardSpec(
        (*_FACE_REQUIRED, "quality"),
        _FACE_OPTIONAL,
        {**_FACE_NESTED, "quality": ("range", "calibration")},
        task_type="image-feature-extraction",
    ),
}


def _to_yaml(obj: Any) -> str:
    # Dumped, not hand-written in the template, so that names with colons or quotes stay valid YAML.
    if isinstance(obj, dict):  # absent optional metadata (e.g. no base_model) is left out, not written as null
        obj = {key: value for key, value in obj.items() if value is not None}
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False).rstrip("\n")


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    # StrictUndefined: a field the template uses but nobody gave is an error, never an empty string.
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["to_yaml"] = _to_yaml
    return env


def _check_fields(name: str, spec: CardSpec, fields: dict[str, Any]) -> dict[str, Any]:
    """Validate `fields` against `spec` and fill the defaults; errors name the field and what was expected."""
    where = f"model card template {name!r}"
    missing = [key for key in spec.required if fields.get(key) is None]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {', '.join(map(repr, missing))} "
                         f"(required: {', '.join(spec.required)})")
    unknown = sorted(set(fields) - set(spec.required) - set(spec.optional))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))} "
                         f"(accepted: {', '.join([*spec.required, *spec.optional])})")
    for key, subkeys in spec.nested.items():
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise TypeError(f"{where}: field {key!r} must be a dict with keys {subkeys}, got {type(value).__name__}")
        lacking = [sub for sub in subkeys if value.get(sub) is None]
        if lacking:
            raise ValueError(f"{where}: missing required field(s) {', '.join(f'{key}.{s}' for s in lacking)}")
    metrics = fields["metrics"]
    if not isinstance(metrics, list) or not (metrics or spec.may_have_no_metrics):
        raise TypeError(f"{where}: field 'metrics' must be a non-empty list of dicts with keys {_METRIC_KEYS}")
    for i, metric in enumerate(metrics):
        lacking = [key for key in _METRIC_KEYS if not isinstance(metric, dict) or metric.get(key) is None]
        if lacking:
            raise ValueError(f"{where}: missing required field(s) {', '.join(f'metrics[{i}].{k}' for k in lacking)}")
    if not isinstance(fields["datasets"], list):
        raise TypeError(f"{where}: field 'datasets' must be a list of dataset ids, got {fields['datasets']!r}")
    # `config` (e.g. "LR-LR 16 px") is the one optional key of a metric row.
    return {**spec.optional, **fields, "metrics": [{"config": None, **metric} for metric in metrics]}


def _model_index(model_name: str, task_type: str, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Hub's `model-index` metadata, built by huggingface_hub from one EvalResult per metric row."""
    results = [
        EvalResult(task_type=task_type, dataset_type=m["dataset_type"], dataset_name=m["dataset"],
                   dataset_split=m["split"], metric_type=m["type"], metric_name=m["name"],
                   metric_value=m["value"], metric_config=m.get("config"))
        for m in metrics
    ]
    return eval_results_to_model_index(model_name, results)


def render_model_card(template: str, **fields: Any) -> str:
    """Render a model card (YAML front matter + Markdown).

    Args:
        template: a bundled card, "reranker", "face_encoder" or "ri_encoder" (with or without `.md.j2`), or the
            path of your own Jinja file (rendered with the fields as given; unknown variables raise).
        **fields: the card's fields; see `CARD_SPECS[template]` for the required and optional ones. `metrics` is a
            list of dicts with keys name, type, value, dataset, dataset_type, split (and optional config).

    Returns:
        The card text, ready to be written as README.md.

    Raises:
        ValueError: a required field is missing or unknown; the message names it.
        TypeError: a field has the wrong type (e.g. `metrics` not a list); the message names it.
        FileNotFoundError: the template is neither a bundled card nor an existing file.
    """
    name = template.removesuffix(".md.j2")
    if name in CARD_SPECS:
        spec = CARD_SPECS[name]
        values = _check_fields(name, spec, fields)
        values["model_index"] = (_model_index(values["model_name"], spec.task_type, values["metrics"])
                                 if values["metrics"] else None)
        env = _environment(jinja2.PackageLoader("rankface", "model_cards"))
        return env.get_template(f"{name}.md.j2").render(**values)
    path = Path(template)
    if not path.is_file():
        raise FileNotFoundError(f"model card template {template!r}: not one of {sorted(CARD_SPECS)} "
                                "and no such file")
    env = _environment(jinja2.FileSystemLoader(str(path.parent)))
    try:
        return env.get_template(path.name).render(**fields)
    except jinja2.UndefinedError as err:
        raise ValueError(f"model card template {str(path)!r}: {err} (pass it as a field)") from err


def push_model_to_hub(
    model: Any,
    repo_id: str,
    card_fields: dict[str, Any],
    template: str,
    private: bool = False,
    commit_message: str = "Upload model with rankface",
    token: str | None = None,
    tokenizer: Any | None = None,
    image_processor: Any | None = None,
) -> str:
    """Save `model` with its model card and upload it to a Hub repository (created when absent).

    The card is rendered before anything is saved or sent, so a missing field fails fast.

    Args:
        model: anything with `save_pretrained(directory)`: a transformers `PreTrainedModel` or a rankface model
            (the CrossEncoder wrapper saves its tokenizer with it).
        repo_id: "namespace/name".
        card_fields: fields of the card (see `render_model_card`).
        template: the card template (see `render_model_card`).
        private: create the repository as private (ignored when it exists).
        commit_message: message of the upload commit.
        token: a Hub token; None uses the saved login or HF_TOKEN.
        tokenizer: optional tokenizer saved beside a bare transformers model.
        image_processor: optional image processor (e.g. a face encoder's `FaceImageProcessor`, which carries the
            input contract) saved beside the model as `preprocessor_config.json`.

    Returns:
        The commit URL on the Hub.
    """
    if not hasattr(model, "save_pretrained"):
        raise TypeError(f"push_model_to_hub: model must have save_pretrained(directory), got {type(model).__name__}")
    card = render_model_card(template, **card_fields)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rankface-push-") as folder:
        model.save_pretrained(folder)
        for processor in (tokenizer, image_processor):
            if processor is not None:
                processor.save_pretrained(folder)
        # Written last so a README.md saved by the model does not replace the rendered card.
        with atomic_write(Path(folder) / "README.md") as handle:
            handle.write(card)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)
    return info.commit_url
