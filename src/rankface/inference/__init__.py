"""CPU inference engines behind rankface's `backend=` argument (ONNX Runtime graphs, int8, the `auto` choice)."""

from rankface.inference.backends import (
    AUTO,
    BACKENDS,
    auto_backend,
    embed_faces,
    face_runner,
    quant_isa,
    resolve_backend,
    text_runner,
)

__all__ = ["AUTO", "BACKENDS", "auto_backend", "embed_faces", "face_runner", "quant_isa", "resolve_backend",
           "text_runner"]
