"""Inference precision: int8 dynamic quantization (cross- and bi-encoder), and the warning for emulated bf16."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rankface.models._text as text
from rankface.models._text import quantize_linear_layers, resolve_precision

PAIRS = [
    ("aspirin heart disease", "aspirin study heart risk trial"),
    ("fish oil", "fish oil vitamin diet"),
    ("coffee", "coffee tea milk sugar coffee tea milk sugar coffee tea milk sugar"),
    ("salt blood pressure", "salt"),
    ("soy", "meat eggs fat fiber fruit"),
    ("cancer risk", "diet fiber fruit cancer risk study trial blood"),
]
# Dynamic int8: weights rounded per output channel to 8 bits, inputs per batch to 7 bits (FBGEMM's reduced range),
# so each quantized matmul is off by about 2^-7 of its output's scale; the tiny model chains 5 of them (4 per layer
# pair of attention/FFN maps and the pooler, errors adding in quadrature) before the head. 5 % of the head input's
# norm leaves a factor of ~2 over that estimate (measured: 0.5-2.5 % on three seeds).
RELATIVE_INPUT_ERROR = 0.05


@pytest.fixture
def cross(tiny_bert_dir):
    from rankface.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained(tiny_bert_dir, max_length=64, device="cpu", allow_untrained_head=True)
    with torch.no_grad():  # logits of a trained head's size (a few units), not a new head's hundredths
        model.model.classifier.weight.mul_(50)
    return model


def _head_inputs(cross) -> torch.Tensor:
    """The fp32 model's pooled [CLS] vectors `[N, H]`: what the scoring head reads."""
    batch = cross.tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], padding=True, return_tensors="pt")
    with torch.inference_mode():
        return cross.model.bert(**batch).pooler_output


def test_int8_scores_close_to_fp32_by_a_bound_on_the_head_input(cross):
    fp32 = cross.predict(PAIRS, precision="fp32")
    int8 = cross.predict(PAIRS, precision="int8")
    # The head is linear: |w.(h + e) - w.h| <= |w| |e| (Cauchy-Schwarz), with |e| <= RELATIVE_INPUT_ERROR |h|.
    bound = cross.model.classifier.weight.norm().item() * RELATIVE_INPUT_ERROR * _head_inputs(cross).norm(dim=1)
    assert np.all(np.abs(int8 - fp32) <= bound.numpy())
    assert not np.array_equal(int8, fp32)  # it really ran quantized kernels


def test_int8_copy_quantizes_all_linear_layers_but_the_head_and_leaves_the_model_alone(cross):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    before = {k: v.clone() for k, v in cross.model.state_dict().items()}
    cross.predict(PAIRS, precision="int8")
    quantized = cross._int8.get(cross.model)
    linears = [n for n, m in cross.model.named_modules() if isinstance(m, torch.nn.Linear)]
    kinds = {n: type(m) for n, m in quantized.named_modules() if n in linears}
    assert all(kinds[n] is DynamicLinear for n in linears[:-1]) and linears[-1] == "classifier"
    assert kinds["classifier"] is torch.nn.Linear  # the scoring head stays fp32: no coarse logits
    after = cross.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # same tensors, same kernels: exact
    assert all(type(m) is not DynamicLinear for m in cross.model.modules())


def test_int8_copy_is_rebuilt_when_the_weights_change(cross):
    first = cross.predict(PAIRS, precision="int8")
    assert cross._int8.get(cross.model) is cross._int8.get(cross.model)  # cached while the weights stay
    with torch.no_grad():
        cross.model.classifier.bias.add_(1.0)
    second = cross.predict(PAIRS, precision="int8")
    # Only the fp32 head's bias moved: the same int8 body gives scores exactly 1 higher, up to fp32 rounding of +1.
    np.testing.assert_allclose(second, first + 1.0, atol=1e-5)


def test_bi_encoder_int8_embeddings_close_to_fp32(tiny_bert_dir):
    from rankface.models.bi_encoder import BiEncoder

    model = BiEncoder.from_pretrained(tiny_bert_dir, device="cpu")
    texts = [d for _, d in PAIRS]
    fp32 = model.encode(texts, precision="fp32")
    int8 = model.encode(texts, precision="int8")
    # Unit vectors whose inputs differ by a few % (see RELATIVE_INPUT_ERROR): the cosine stays above 1 - 0.05^2 / 2.
    assert np.all((fp32 * int8).sum(axis=1) >= 1 - RELATIVE_INPUT_ERROR**2 / 2)
    assert not np.array_equal(fp32, int8)


def test_int8_runs_on_cpu_only():
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("int8", torch.device("cuda"))
    assert resolve_precision("int8", torch.device("cpu")) == "int8"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4", torch.device("cpu"))


def test_quantize_linear_layers_keeps_a_lone_linear_in_fp32():
    model = quantize_linear_layers(torch.nn.Sequential(torch.nn.Linear(4, 1)))
    assert type(model[0]) is torch.nn.Linear  # the last (only) linear layer is the head


@pytest.fixture
def fresh_warning(monkeypatch):
    monkeypatch.setattr(text, "_warned_slow_bf16", False)


def test_forced_bf16_without_native_bf16_warns_once_with_the_measured_slowdown(monkeypatch, fresh_warning, cross):
    monkeypatch.setattr(text, "_cpu_has_bf16", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the once-only rule must not depend on the warning filters
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
        cross.predict(PAIRS[:2], precision="bf16")
        cross.predict(PAIRS[:2], precision="bf16")
    slow = [w for w in caught if issubclass(w.category, RuntimeWarning) and "native bf16" in str(w.message)]
    assert len(slow) == 1
    assert "4.7x slower" in str(slow[0].message) and "2.95 pairs/s" in str(slow[0].message)
    assert "'auto' (it picks fp32" in str(slow[0].message) or "'auto' (it picks int8" in str(slow[0].message)


def test_no_warning_where_bf16_is_native_or_not_forced(monkeypatch, fresh_warning):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(text, "_cpu_has_bf16", lambda: True)
        resolve_precision("bf16", torch.device("cpu"))
        monkeypatch.setattr(text, "_cpu_has_bf16", lambda: False)
        assert resolve_precision("auto", torch.device("cpu")) == text.AUTO_CPU_WITHOUT_BF16
        resolve_precision("fp32", torch.device("cpu"))
    assert not [w for w in caught if "native bf16" in str(w.message)]
