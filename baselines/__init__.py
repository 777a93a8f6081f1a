"""ID-based CTR baselines on TorchRec (ContentCTR 4.3.1): Wide&Deep, DeepFM, DIFM, DCN-M.

Importing this package registers ``wide_deep``, ``deepfm``, ``difm`` and ``dcn_m`` in the shared
model registry (each module registers the model it defines)::

    >>> import baselines
    >>> from kuaihl_rec.model.registry import list_models
    >>> {"wide_deep", "deepfm", "difm", "dcn_m"} <= set(list_models())
    True

Every model scores each position of a ``LiveBatch`` from the sparse features of that position's
content segment (:mod:`baselines.features`, ContentCTR 4.3.2), returns logits ``[b, n]`` and trains
with the shared trainer with the pointwise loss (``default_loss = "point"``).
"""

# registration order = the order of ContentCTR Table 1 (list_models(family="id_baseline") keeps it)
from baselines import wide_deep as _wide_deep  # noqa: F401, I001  (registers "wide_deep")
from baselines import deepfm as _deepfm  # noqa: F401  (registers "deepfm")
from baselines import difm as _difm  # noqa: F401  (registers "difm")
from baselines import dcn_m as _dcn_m  # noqa: F401  (registers "dcn_m")
from baselines.dcn_m import DCNM, DCNMHead
from baselines.deepfm import DeepFM, DeepFMHead
from baselines.difm import DIFM, DIFMHead, InputAwareFactors
from baselines.features import (
    COUNTER_SETS,
    LINEAR_WIDTH,
    PAPER_COUNTERS,
    FeatureConfig,
    PerPositionCTR,
    PositionFeatures,
    build_embedding_bags,
    hour_of_day,
    log_bucket,
    position_features,
)
from baselines.layers import MLP, FieldSelfAttention, FirstOrder, FMInteraction, fm_interaction
from baselines.wide_deep import WideDeep, WideDeepHead

from kuaihl_rec.model.registry import list_models as _list_models  # noqa: E402

BASELINE_MODELS = tuple(_list_models(family="id_baseline"))  # read from the registry

__all__ = [
    "BASELINE_MODELS",
    "COUNTER_SETS",
    "DCNM",
    "DCNMHead",
    "DIFM",
    "DIFMHead",
    "DeepFM",
    "DeepFMHead",
    "FMInteraction",
    "FeatureConfig",
    "FieldSelfAttention",
    "FirstOrder",
    "InputAwareFactors",
    "LINEAR_WIDTH",
    "MLP",
    "PAPER_COUNTERS",
    "PerPositionCTR",
    "PositionFeatures",
    "WideDeep",
    "WideDeepHead",
    "build_embedding_bags",
    "fm_interaction",
    "hour_of_day",
    "log_bucket",
    "position_features",
]
