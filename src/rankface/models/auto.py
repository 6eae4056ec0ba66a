"""Every rankface AutoConfig / AutoModel registration, in one place.

Importing this module makes `AutoConfig.from_pretrained` / `AutoModel.from_pretrained` understand rankface's
model types (all prefixed "rankface-") without `trust_remote_code`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from rankface.models.face_processor import FaceImageProcessor
from rankface.models.iresnet import IResNetConfig, IResNetModel
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel

# Face encoders: config, backbone, and the image processor holding their input contract.
for _config, _model in ((MobileFaceNetConfig, MobileFaceNetModel), (IResNetConfig, IResNetModel)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoImageProcessor.register(_config, slow_image_processor_class=FaceImageProcessor, exist_ok=True)

# CET pair (relevance + selection); the exported relevance model is a standard *ForSequenceClassification checkpoint.
from rankface.models.cet import CETConfig, CETModel  # noqa: E402

AutoConfig.register(CETConfig.model_type, CETConfig, exist_ok=True)
AutoModel.register(CETConfig, CETModel, exist_ok=True)

# Recognizability (RI) face encoder: backbone + attention + quality head; same image processor as its backbone.
from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

AutoConfig.register(RecognizabilityConfig.model_type, RecognizabilityConfig, exist_ok=True)
AutoModel.register(RecognizabilityConfig, RecognizabilityModel, exist_ok=True)
AutoImageProcessor.register(RecognizabilityConfig, slow_image_processor_class=FaceImageProcessor, exist_ok=True)
