"""The segment-data contract: schema, validation, windowing, batches, the synthetic world and the KLive reader.

Names are imported lazily (PEP 562), so ``kuaihl world`` or ``kuaihl validate`` do not pay for
importing torch and TorchRec, which only :mod:`batch` and :mod:`windows` need.
"""

from kuaihl_rec.lazy import lazy_exports

_EXPORTS = {
    "SPARSE_KEYS": "batch",
    "BatchSpec": "batch",
    "LiveBatch": "batch",
    "make_id_features": "batch",
    "DataError": "io",
    "write_segment_table": "io",
    "COUNTER_COLUMNS": "schema",
    "FeatureSizes": "schema",
    "ValidationReport": "validate",
    "load_segments": "validate",
    "validate_path": "validate",
    "IdVocab": "windows",
    "SegmentArrays": "windows",
    "WindowConfig": "windows",
    "WindowedSplit": "windows",
    "build_windows": "windows",
    "fit_vocabs": "windows",
    "hash_split": "windows",
    "window_splits": "windows",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
