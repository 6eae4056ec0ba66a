"""Losses: tensors in, tensors out; a loss never holds a model."""

from rankface.losses.cet import cet_loss, coupled_weights  # noqa: F401
from rankface.losses.margins import (  # noqa: F401
    AdaFace,
    ArcFace,
    CosFace,
    MagFace,
    MarginHead,
    MarginLoss,
    NormalizedClassifier,
    build_head,
    margin_cross_entropy,
)
from rankface.losses.recognizability import (  # noqa: F401
    RecognizabilityLoss,
    UICentre,
    make_unrecognizable,
    recognizability_index,
)
from rankface.losses.unpg import UNPGLoss  # noqa: F401
