"""How close two float results must be when they come from two code paths, and why.

Exact equality is right only where the same kernels run on the same inputs (tensors saved and loaded, one
function called twice). Two fp32 forwards of one model along different paths are not bitwise equal on every CPU:
after a save/load the weights sit at another offset inside the safetensors buffer, and MKL's GEMM sums in an
order that depends on that offset and on the thread count; another batch composition or padding changes the
GEMM shapes and so the blocking; another CPU (AVX2 or AVX-512) runs other kernels altogether. Each rounding then
differs by about one unit in the last place (fp32 eps = 1.19e-7 relative), and a few layers add up a few hundred
of those at most.

`ACROSS_PATHS` bounds that noise for the tiny test models' outputs (scores, embeddings, qualities): 1e-5 relative
(~80 eps) with an absolute floor of 1e-6 for values near zero. Measured over the `numerics` tests on this repo's
default kernels and on .ci/run's second path (ATen default, oneDNN AVX2, 1 thread): at most 4.8e-7 absolute on
scores up to 0.6, and at most 4% of this bound where it is used, so it leaves > 20x room for other CPUs. A wrong
weight, a lost buffer or a wrong input changes the outputs by a sizeable share of their own value, far above it.
"""

from __future__ import annotations

from itertools import pairwise

import torch

FP32_EPS = torch.finfo(torch.float32).eps
ACROSS_PATHS = {"rtol": 1e-5, "atol": 1e-6}

# A ranking test checks an order only where the scores are this far apart: 10x the largest difference that
# `ACROSS_PATHS` allows for scores of magnitude ~1, so no kernel, thread count or batch composition can swap them.
SEPARATED = 1e-4


def assert_well_separated(scores, top: int, margin: float = SEPARATED) -> None:
    """Check the test's own premise: the `top + 1` best `scores` are `margin` apart from each other, so their order
    (and the cut after `top`) is the model's, not float noise's. Fails (naming the gaps) if a fixture makes near-ties."""
    best = sorted((float(s) for s in scores), reverse=True)[: top + 1]
    gaps = [a - b for a, b in pairwise(best)]
    assert min(gaps) > margin, f"near-tie in the fixture: top scores {best} are only {min(gaps):.2e} apart"
