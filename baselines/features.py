"""Sparse features of the ID-based baselines (ContentCTR 4.3.2), per scored position.

ContentCTR 4.3.2: "the input sparse features for these methods include the streamer item ID,
live ID, timestamp ID, exposure count, comment count, gift count, click count, like count, follow
count, room entry and exit count for each streaming segment. The objective of these methods is to
regress the CTR of each segment."

Sample unit and time boundary. The baselines score every position of a :class:`LiveBatch`
independently: position ``t`` of a window holds the *content* (here: counters and time) of segment
``s + t`` and the *label* of segment ``s + t + 1`` (``kuaihl_rec/data/windows.py``), so the features
of segment t predict the label of segment t+1, exactly as for the content model. A ``[b, n]`` batch
is ``N = b * n`` samples; sample ``i = w * n + t`` reads only ``counters[w, t]``,
``timestamp[w, t]``, ``segment[w, t]`` and the window's two ids. Nothing of ``t + 1`` or later
reaches it (``tests/test_baselines.py::test_time_boundary``).

Features (one id per sample per key; one table per feature). An unknown streamer or room
(vocabulary row 0) is an *empty* bag (length 0): its sum-pooled embedding and first-order weight
are zero. Row 0 is never read: training ids are all known, so row 0 would keep its random initial
values and add noise to every cold-start prediction (the FM pair sums are the most sensitive).
Rooms are split by room, so at test time *every* room id is unknown and 20 % of the streamers are
(synthetic world); a model that never saw an empty id during training meets an input it never
learnt. ``id_dropout`` (training only, default 0.2 in the registered models) empties each sample's
streamer id and, independently, its room id with that probability, so the models learn the
cold-start case (on the default world it removes most of the run-to-run spread of test tau-b and
raises its mean; ``id_dropout=0`` is the plain paper setup)::

    key            table rows                 id
    streamer_id    spec.num_streamers         the window's streamer (vocabulary row, 0 = unknown)
    live_id        spec.num_lives             the window's room (0 = unknown; rooms are split by
                                              room, so every val/test room is unknown, an empty
                                              bag; kept because the paper lists it)
    hour_id        24                         "timestamp ID", part 1: hour of day of the segment
                                              start, ((timestamp + 3600 * tz_offset_hours) // 3600) % 24
    elapsed_id     elapsed_buckets            "timestamp ID", part 2: position in the room,
                                              min(floor(log2(1 + segment)), elapsed_buckets - 1)
                                              (segment = 30 s steps since the room started)
    <counter>      counter_buckets            per counter of the segment (see below), log buckets
                                              min(floor(r * log2(1 + x)), counter_buckets - 1)
                                              with r = buckets_per_octave
    streamer_x_hour  num_streamers * 24       Wide&Deep's cross-product feature only:
                                              streamer_id * 24 + hour_id

Counters (``counters="paper"``): the eight of 4.3.2, exposures, comments, gifts, clicks, likes,
follows, room entries, room exits (``PAPER_COUNTERS``). ``counters="all"`` adds the two viewer
counters of the data contract (``n_viewers``, ``n_long_viewers``: the current segment's LVTR is
their ratio, which the paper's baselines did not get).

Counts are bucketised on a log scale (choice: counts are heavy-tailed, and a log bucket is the
usual sparse encoding of a count, matching the paper's "sparse features"). With
``dense=True`` the same counters also enter as dense features ``log1p(x)`` (``[N, C]``): the deep
parts (W&D, DeepFM, DCN-M) read them next to the embeddings, and the first-order part of W&D,
DeepFM and DIFM has a linear term over them (as DeepCTR's linear model over dense columns).

Padding positions (``valid`` False: counters 0, timestamp and segment -1) produce in-range ids
(their outputs are masked by the loss and the metrics).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    KeyedJaggedTensor,
    KeyedTensor,
    PoolingType,
)

from kuaihl_rec.data.batch import BatchSpec, LiveBatch
from kuaihl_rec.data.schema import COUNTER_COLUMNS, PAPER_COUNTER_COLUMNS

PAPER_COUNTERS: Tuple[str, ...] = PAPER_COUNTER_COLUMNS
COUNTER_SETS: Dict[str, Tuple[str, ...]] = {"paper": PAPER_COUNTERS, "all": COUNTER_COLUMNS}
HOURS = 24
ID_KEYS: Tuple[str, ...] = ("streamer_id", "live_id")
TIME_KEYS: Tuple[str, ...] = ("hour_id", "elapsed_id")
CROSS_KEYS: Tuple[str, ...] = ("streamer_x_hour",)
#: Width of the first-order ("width-1") tables. TorchRec's sharded FBGEMM kernels require table
#: widths divisible by 4, so a scalar weight w_x is the *mean* of a 4-wide row. Row-wise (and
#: element-wise) Adagrad is invariant to the gradient's scale per row, so the mean moves exactly
#: as a true width-1 weight would under the same optimizer (up to eps); only its initial spread
#: is halved.
LINEAR_WIDTH = 4


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which per-position features are built, and how.

    Fields:
        counters: ``"paper"`` (the 8 counters of ContentCTR 4.3.2) or ``"all"`` (every counter of
            the data contract, 10).
        counter_buckets: rows of each counter table (B); the last bucket holds every larger count.
        buckets_per_octave: r, log-bucket resolution (1: powers of two; 2: steps of sqrt(2)).
        elapsed_buckets: rows of the position-in-room table (log2 buckets of the segment index).
        tz_offset_hours: added to the unix timestamp before taking the hour of day (0 = UTC;
            8 = Beijing time for Kuaishou data).
        dense: also return ``log1p(counters)`` as dense features.
        crosses: add the cross-product key(s) ``CROSS_KEYS`` (Wide&Deep's wide part).
        id_dropout: training only: probability that a sample's streamer id, and independently its
            room id, is dropped (an empty bag, as an unknown id), see the module docstring.
    """

    counters: str = "paper"
    counter_buckets: int = 64
    buckets_per_octave: int = 2
    elapsed_buckets: int = 16
    tz_offset_hours: int = 0
    dense: bool = True
    crosses: bool = False
    id_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.counters not in COUNTER_SETS:
            raise ValueError(f"counters must be one of {sorted(COUNTER_SETS)}, got {self.counters!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        for name in ("counter_buckets", "buckets_per_octave", "elapsed_buckets"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def counter_columns(self) -> Tuple[str, ...]:
        return COUNTER_SETS[self.counters]

    @property
    def counter_index(self) -> Tuple[int, ...]:
        """Column of each used counter in ``LiveBatch.counters`` (COUNTER_COLUMNS order)."""
        return tuple(COUNTER_COLUMNS.index(c) for c in self.counter_columns)

    @property
    def field_keys(self) -> Tuple[str, ...]:
        """The F fields every baseline embeds, in order: ids, time, counters."""
        return ID_KEYS + TIME_KEYS + self.counter_columns

    @property
    def keys(self) -> Tuple[str, ...]:
        """Every key of the KJT :func:`position_features` builds (fields, then crosses)."""
        return self.field_keys + (CROSS_KEYS if self.crosses else ())

    @property
    def n_dense(self) -> int:
        return len(self.counter_columns) if self.dense else 0

    def table_rows(self, spec: BatchSpec) -> Dict[str, int]:
        """Rows of the table of every key."""
        rows = {
            "streamer_id": spec.num_streamers,
            "live_id": spec.num_lives,
            "hour_id": HOURS,
            "elapsed_id": self.elapsed_buckets,
        }
        rows.update({c: self.counter_buckets for c in self.counter_columns})
        if self.crosses:
            rows["streamer_x_hour"] = spec.num_streamers * HOURS
        return rows


def log_bucket(x: Tensor, buckets: int, per_octave: int = 1) -> Tensor:
    """``min(floor(per_octave * log2(1 + max(x, 0))), buckets - 1)`` as int64 (same shape as ``x``).

    >>> log_bucket(torch.tensor([0.0, 1.0, 2.0, 3.0, 7.0, 1e9]), buckets=8).tolist()
    [0, 1, 1, 2, 3, 7]
    """
    x = x.to(torch.float64).clamp(min=0.0)
    # float64 log2 is exact at powers of two, so 2^k - 1 lands in bucket k exactly
    return torch.floor(per_octave * torch.log2(1.0 + x)).clamp(max=buckets - 1).to(torch.int64)


def hour_of_day(timestamp: Tensor, tz_offset_hours: int = 0) -> Tensor:
    """Hour of day in ``[0, 24)`` of unix seconds (int64; padding's -1 maps to an in-range hour)."""
    return torch.remainder(
        torch.div(timestamp.to(torch.int64) + 3600 * tz_offset_hours, 3600, rounding_mode="floor"), HOURS
    )


def position_features(
    sparse_features: KeyedJaggedTensor,
    counters: Tensor,
    timestamp: Tensor,
    segment: Tensor,
    config: FeatureConfig,
    training: bool = False,
) -> Tuple[KeyedJaggedTensor, Tensor]:
    """The per-position KJT and dense features of a batch.

    Args:
        sparse_features: the batch's KJT, one ``streamer_id`` and one ``live_id`` per window.
        counters: float ``[b, n, C]`` raw counters (COUNTER_COLUMNS order).
        timestamp, segment: int64 ``[b, n]`` of the content segments (-1 on padding).
        config: the :class:`FeatureConfig`.
        training: apply ``config.id_dropout`` (torch's global RNG).

    Returns:
        ``(kjt, dense)``: a KJT with keys ``config.keys``, stride ``N = b * n`` (sample
        ``w * n + t``), one id per sample per key (none for an unknown streamer / room id, see
        the module docstring); ``dense`` float32 ``[N, config.n_dense]``
        (``log1p`` of the used counters; ``[N, 0]`` when ``config.dense`` is False).
    """
    b, n = counters.shape[0], counters.shape[1]
    num = b * n
    ids = []
    for key in ID_KEYS:
        v = sparse_features[key].values()
        if v.numel() != b:
            raise ValueError(f"sparse_features[{key!r}] must hold one id per window ({b}), got {v.numel()} values")
        ids.append(v.to(torch.int64)[:, None].expand(b, n).reshape(num))
    hour = hour_of_day(timestamp, config.tz_offset_hours).reshape(num)
    elapsed = log_bucket(segment, config.elapsed_buckets).reshape(num)
    used = counters[:, :, list(config.counter_index)].reshape(num, len(config.counter_index))
    buckets = log_bucket(used, config.counter_buckets, config.buckets_per_octave)  # [N, C']
    columns = ids + [hour, elapsed] + list(buckets.t())
    if config.crosses:
        columns.append(ids[0] * HOURS + hour)
    # Unknown ids (row 0: cold-start streamers, rooms outside the training vocabulary) become empty
    # bags, i.e. a zero embedding and a zero first-order weight, instead of reading row 0, which
    # training never updates (every training id is known) and which would inject its random
    # initial values. The cross key of an unknown streamer is empty too.
    present = [c != 0 for c in ids]
    if training and config.id_dropout > 0:
        present = [p & (torch.rand(num, device=p.device) >= config.id_dropout) for p in present]
    present += [torch.ones_like(hour, dtype=torch.bool)] * (2 + buckets.shape[1])
    if config.crosses:
        present.append(present[0])
    keep = torch.cat(present)
    values = torch.cat(columns)[keep]
    lengths = keep.to(torch.int32)
    kjt = KeyedJaggedTensor(keys=list(config.keys), values=values, lengths=lengths, stride=num)
    dense = torch.log1p(used.float().clamp(min=0.0)) if config.dense else used.new_zeros(num, 0).float()
    return kjt, dense


class PositionFeatures(nn.Module):
    """:func:`position_features` as a module (no parameters): ``batch -> (kjt, dense)``.

    Being a parameter-free module without embedding tables, ``TrainPipelineSparseDist``'s tracer
    treats it as a leaf (one call node), so the baselines' forward stays FX-traceable.
    """

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, batch: LiveBatch) -> Tuple[KeyedJaggedTensor, Tensor]:
        return position_features(
            batch.sparse_features, batch.counters, batch.timestamp, batch.segment, self.config, self.training
        )


class StackFields(nn.Module):
    """A pooled ``KeyedTensor`` -> ``[N, F, dim]`` in the order of ``keys`` (parameter-free leaf),
    or ``[N, F]`` (the mean over the row) with ``mean=True`` (first-order weights, see
    :data:`LINEAR_WIDTH`)."""

    def __init__(self, keys: Sequence[str], mean: bool = False) -> None:
        super().__init__()
        self.keys = tuple(keys)
        self.mean = mean

    def forward(self, pooled: KeyedTensor) -> Tensor:
        d = pooled.to_dict()
        out = torch.stack([d[k] for k in self.keys], dim=1)
        return out.mean(dim=-1) if self.mean else out


def build_embedding_bags(
    spec: BatchSpec,
    config: FeatureConfig,
    dim: int,
    keys: Optional[Sequence[str]] = None,
    prefix: str = "",
    init_scale: Optional[float] = None,
    device: Optional[torch.device] = None,
) -> EmbeddingBagCollection:
    """One sum-pooled table per key (``config.field_keys`` by default), ``dim`` wide.

    ``init_scale``: rows start uniform in ``[-init_scale, init_scale]`` (None: TorchRec's default
    ``+-sqrt(1 / rows)``). Set through ``weight_init_min/max``, which sharded tables honour too (DMP
    re-initialises an EmbeddingBagCollection's tables from these bounds, not from ``init_fn``).

    Table ``prefix + key`` reads feature ``key`` with ``config.table_rows(spec)[key]`` rows. The
    collection of the first-order terms is ``build_embedding_bags(spec, cfg, LINEAR_WIDTH, prefix="w_")``.
    ``device="meta"`` defers allocation to ``DistributedModelParallel``.
    """
    rows = config.table_rows(spec)
    keys = tuple(keys) if keys is not None else config.field_keys
    unknown = [k for k in keys if k not in rows]
    if unknown:
        raise ValueError(f"no table for key(s) {unknown}; keys of this feature config: {list(rows)}")
    return EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=prefix + k,
                embedding_dim=dim,
                num_embeddings=rows[k],
                feature_names=[k],
                pooling=PoolingType.SUM,
                weight_init_min=None if init_scale is None else -float(init_scale),
                weight_init_max=None if init_scale is None else float(init_scale),
            )
            for k in keys
        ],
        device=device if device is not None else torch.device("cpu"),
    )


def check_embedding_bags(ebc: EmbeddingBagCollection, keys: Sequence[str], dim: int, what: str) -> None:
    """Raise unless ``ebc`` has exactly one ``dim``-wide table per key of ``keys``."""
    found: Dict[str, int] = {}
    for cfg in ebc.embedding_bag_configs():
        for f in cfg.feature_names:
            found[f] = cfg.embedding_dim
    missing = [k for k in keys if k not in found]
    wrong = [k for k in keys if k in found and found[k] != dim]
    if missing or wrong:
        raise ValueError(
            f"{what}: needs one {dim}-wide table per feature {list(keys)}; missing {missing}, other width {wrong}"
        )


def feature_names(config: FeatureConfig) -> List[str]:
    """Every sparse key then ``dense_<counter>`` for the dense columns (a flat table's columns)."""
    return list(config.keys) + ([f"dense_{c}" for c in config.counter_columns] if config.dense else [])


# The feature overrides every baseline factory accepts (``create_model("deepfm", spec, counters="all")``),
# with the factories' defaults; ``dense_counters`` is FeatureConfig.dense, ``id_dropout`` 0.2 for
# training (see the module docstring: unknown test ids must be learned).
FEATURE_DEFAULTS: Dict[str, Any] = {
    "counters": "paper", "counter_buckets": 64, "buckets_per_octave": 2, "elapsed_buckets": 16, "tz_offset_hours": 0,
    "dense_counters": True, "id_dropout": 0.2,
}
FEATURE_OVERRIDES: Tuple[str, ...] = tuple(FEATURE_DEFAULTS)


def features_from_overrides(overrides: Dict[str, Any], crosses: bool = False) -> FeatureConfig:
    """The :class:`FeatureConfig` of a baseline factory's feature overrides (``FEATURE_OVERRIDES``;
    the rest take ``FEATURE_DEFAULTS``). Unknown keys are a TypeError (``create_model`` checks
    them first against the registered override list)."""
    unknown = sorted(set(overrides) - set(FEATURE_OVERRIDES))
    if unknown:
        raise TypeError(f"unknown feature override(s) {unknown}; valid: {list(FEATURE_OVERRIDES)}")
    return feature_config(**{**FEATURE_DEFAULTS, **overrides}, crosses=crosses)


def feature_config(
    counters: str,
    counter_buckets: int,
    buckets_per_octave: int,
    elapsed_buckets: int,
    tz_offset_hours: int,
    dense_counters: bool,
    id_dropout: float,
    crosses: bool = False,
) -> FeatureConfig:
    """A :class:`FeatureConfig` from a factory's keyword overrides (YAML values coerced)."""
    return FeatureConfig(
        counters=counters,
        counter_buckets=int(counter_buckets),
        buckets_per_octave=int(buckets_per_octave),
        elapsed_buckets=int(elapsed_buckets),
        tz_offset_hours=int(tz_offset_hours),
        dense=bool(dense_counters),
        crosses=bool(crosses),
        id_dropout=float(id_dropout),
    )


class PerPositionCTR(nn.Module):
    """Shared plumbing of the baselines: ``LiveBatch -> logits [b, n]``, one sample per position.

    ::

        kjt, dense = PositionFeatures(batch)           N = b * n samples, keys config.keys
        emb = StackFields(embedding_bags(kjt))         [N, F, k]   (F = len(config.field_keys))
        w   = StackFields(linear_bags(kjt)).mean(-1)   [N, F']     (first-order weights; None without)
        logits = head(emb, w, dense).reshape(b, n)

    The embedding collections are built by the factory and passed in (TorchRec style), so DMP can
    shard them; ``head`` (the model's interaction and over arch) holds no table. The forward has
    no data-dependent control flow, so ``TrainPipelineSparseDist`` can FX-trace it; because the KJT
    is built inside the forward, the pipeline runs the (sharded) collections in place instead of
    prefetching them (it logs "will NOT be pipelined, due to input modifications").

    Args:
        spec: batch sizes (table rows).
        features: the :class:`FeatureConfig`.
        embedding_bags: ``k``-wide tables, one per ``features.field_keys``.
        linear_bags: :data:`LINEAR_WIDTH`-wide tables for the first-order term (keys
            ``linear_keys``; the weight of an id is the mean of its row), or None.
        head: ``head(emb [N, F, k], w [N, F'] | None, dense [N, D]) -> [N]``.
        linear_keys: keys of ``linear_bags`` (default ``features.keys``).
    """

    default_loss: str = "point"

    def __init__(
        self,
        spec: BatchSpec,
        features: FeatureConfig,
        embedding_bags: EmbeddingBagCollection,
        linear_bags: Optional[EmbeddingBagCollection],
        head: nn.Module,
        embedding_dim: int,
        linear_keys: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        if spec.n_counters != len(COUNTER_COLUMNS):
            raise ValueError(
                f"batches must carry the {len(COUNTER_COLUMNS)} counters of COUNTER_COLUMNS, "
                f"spec says n_counters={spec.n_counters}"
            )
        self.spec = spec
        self.feature_config = features
        check_embedding_bags(embedding_bags, features.field_keys, embedding_dim, "embedding_bags")
        self.linear_keys = tuple(linear_keys) if linear_keys is not None else features.keys
        if linear_bags is not None:
            check_embedding_bags(linear_bags, self.linear_keys, LINEAR_WIDTH, "linear_bags")
        self.inputs = PositionFeatures(features)
        self.embedding_bags = embedding_bags
        self.linear_bags = linear_bags
        self.fields = StackFields(features.field_keys)
        self.linear_fields = StackFields(self.linear_keys, mean=True) if linear_bags is not None else None
        self.head = head

    @classmethod
    def build(
        cls,
        spec: BatchSpec,
        features: FeatureConfig,
        head: nn.Module,
        embedding_dim: int,
        init_scale: float,
        first_order: bool = True,
        linear_keys: Optional[Sequence[str]] = None,
    ) -> "PerPositionCTR":
        """The model with its tables built here: ``embedding_dim``-wide field tables and, with
        ``first_order``, the :data:`LINEAR_WIDTH`-wide first-order tables (keys ``linear_keys``, by
        default those of :func:`build_embedding_bags`), all uniform in +-``init_scale``."""
        tables = build_embedding_bags(spec, features, embedding_dim, init_scale=init_scale)
        linear = None
        if first_order:
            keys = {} if linear_keys is None else {"keys": linear_keys}
            linear = build_embedding_bags(spec, features, LINEAR_WIDTH, prefix="w_", init_scale=init_scale, **keys)
        return cls(spec, features, tables, linear, head, embedding_dim, linear_keys=linear_keys)

    def forward(self, batch: LiveBatch) -> Tensor:
        """Float32 logits ``[b, n]``; position t reads only the features of content segment t."""
        kjt, dense = self.inputs(batch)
        emb = self.fields(self.embedding_bags(kjt))
        w = self.linear_fields(self.linear_bags(kjt)) if self.linear_bags is not None else None
        logits = self.head(emb, w, dense)
        return logits.reshape(batch.labels.shape).float()
