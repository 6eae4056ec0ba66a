"""Every rankface AutoConfig / AutoModel registration, in one place.

Importing this module (done by the first use of `rankface.<Class>`) makes `AutoConfig.from_pretrained` and
`AutoModel.from_pretrained` understand rankface's model types (all prefixed "rankface-") without `trust_remote_code`. The text rerankers
(`CrossEncoder`, `BiEncoder`) need no entry here: they save standard transformers checkpoints.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from rankface.models.cet import CETConfig, CETModel
from rankface.models.face_processor import FaceImageProcessor
from rankface.models.iresnet import IResNetConfig, IResNetModel
from rankface.models.mobilefacenet import MobileFaceNetConfig, MobileFaceNetModel
from rankface.models.recognizability import RecognizabilityConfig, RecognizabilityModel

# Face encoders (and the RI encoder built on them) carry their input contract in the face image processor.
FACE_MODELS = (
    (MobileFaceNetConfig, MobileFaceNetModel),
    (IResNetConfig, IResNetModel),
    (RecognizabilityConfig, RecognizabilityModel),
)
# The CET pair (relevance + selection); its exported relevance model is a standard checkpoint.
OTHER_MODELS = ((CETConfig, CETModel),)

for _config, _model in FACE_MODELS + OTHER_MODELS:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
for _config, _ in FACE_MODELS:
    AutoImageProcessor.register(_config, slow_image_processor_class=FaceImageProcessor, exist_ok=True)
