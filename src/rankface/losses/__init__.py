"""Losses: tensors in, tensors out; a loss never holds a model."""

from rankface.losses.cet import cet_loss, coupled_weights  # noqa: F401
