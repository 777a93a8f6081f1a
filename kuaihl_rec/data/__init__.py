"""The segment-data contract: schema, validation, windowing, batches, the synthetic world and the KLive reader."""

from kuaihl_rec.data.batch import SPARSE_KEYS, BatchSpec, LiveBatch, make_id_features
from kuaihl_rec.data.io import DataError, write_segment_table
from kuaihl_rec.data.schema import COUNTER_COLUMNS, FeatureSizes
from kuaihl_rec.data.validate import ValidationReport, load_segments, validate_path
from kuaihl_rec.data.windows import (
    IdVocab,
    SegmentArrays,
    WindowConfig,
    WindowedSplit,
    build_windows,
    fit_vocabs,
    hash_split,
    window_splits,
)

__all__ = [
    "BatchSpec",
    "COUNTER_COLUMNS",
    "SPARSE_KEYS",
    "DataError",
    "FeatureSizes",
    "IdVocab",
    "LiveBatch",
    "SegmentArrays",
    "ValidationReport",
    "WindowConfig",
    "WindowedSplit",
    "build_windows",
    "fit_vocabs",
    "hash_split",
    "load_segments",
    "make_id_features",
    "validate_path",
    "window_splits",
    "write_segment_table",
]
