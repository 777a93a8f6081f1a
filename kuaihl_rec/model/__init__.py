"""Content models (ContentCTR / KuaiHL, Table 1 variants, ablations, HL mode) and the model registry.

Importing this package registers the content models (``kuaihl_rec.model.content`` registers them
where it defines them); the ID baselines register themselves in the ``baselines`` package.

    >>> from kuaihl_rec.model import create_model, list_models
    >>> "content" in list_models()
    True
"""

from kuaihl_rec.model import content as _content  # noqa: F401  (registers the content models)
from kuaihl_rec.model import content_e2e as _content_e2e  # noqa: F401  (registers content_e2e)
from kuaihl_rec.model.config import CONTENT_PRESETS, FUSIONS, ID_SOURCES, ContentConfig, content_config
from kuaihl_rec.model.content import (
    CONTENT_VARIANTS,
    STREAMER_FEATURE,
    STREAMER_TABLE,
    ContentCTR,
    ContentOutput,
    build_streamer_embedding,
)
from kuaihl_rec.model.decoder import CausalDecoder
from kuaihl_rec.model.perceiver import PerceiverFusion
from kuaihl_rec.model.registry import create_model, list_models, model_overrides, register_model

__all__ = [
    "CONTENT_PRESETS",
    "CONTENT_VARIANTS",
    "FUSIONS",
    "ID_SOURCES",
    "STREAMER_FEATURE",
    "STREAMER_TABLE",
    "CausalDecoder",
    "ContentCTR",
    "ContentConfig",
    "ContentOutput",
    "PerceiverFusion",
    "build_streamer_embedding",
    "content_config",
    "create_model",
    "list_models",
    "model_overrides",
    "register_model",
]
