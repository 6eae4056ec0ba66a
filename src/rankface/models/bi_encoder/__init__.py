from rankface.models.bi_encoder.modeling_bi_encoder import BiEncoder

__all__ = ["BiEncoder"]
