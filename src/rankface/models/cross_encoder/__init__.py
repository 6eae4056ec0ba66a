from rankface.models.cross_encoder.modeling_cross_encoder import CrossEncoder

__all__ = ["CrossEncoder"]
