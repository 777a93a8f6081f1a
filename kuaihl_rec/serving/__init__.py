"""Serving the content score: plain-tensor inference, streaming per-room scoring, replay, export.

    >>> from kuaihl_rec.serving import ClosedSegments, StreamingScorer   # doctest: +SKIP
    >>> scorer = StreamingScorer.from_run("runs/content")                # doctest: +SKIP
    >>> scores = scorer.tick(ClosedSegments(...))   # every 30 s: one score per room  # doctest: +SKIP

See ``docs/SERVING.md`` for the contract, the exported program and the id-space options.
"""

from kuaihl_rec.serving.inference import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    ContentInference,
    NotServable,
    load_inference,
)
from kuaihl_rec.serving.inputs import (
    ClosedSegments,
    FeatureShape,
    ServingInputError,
    check_closed_segments,
)
from kuaihl_rec.serving.stream import StreamingScorer, TickScores

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "ClosedSegments",
    "ContentInference",
    "FeatureShape",
    "NotServable",
    "ServingInputError",
    "StreamingScorer",
    "TickScores",
    "check_closed_segments",
    "load_inference",
]
