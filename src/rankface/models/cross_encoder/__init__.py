from rankface.models.cross_encoder.modeling_cross_encoder import CrossEncoder, UntrainedHeadError

__all__ = ["CrossEncoder", "UntrainedHeadError"]
