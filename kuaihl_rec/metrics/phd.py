"""The PHD evaluation protocol (PHD-GIFs / Adaptive-H-FCSN / PR-Net; docs/HIGHLIGHTS.md, "Evaluation").

Per test user, on the user's target video of ``D`` seconds:

1. frames at ``fps`` = 30: frame ``f`` covers time ``f / fps``; ``n_frames = round(D fps)``;
2. ground truth: frame ``f`` is positive when ``start <= f / fps < start + duration`` for any of
   the user's selections on that video (their union);
3. prediction: a segment score is given to every frame the segment covers
   (frame ``f`` -> segment ``floor(f / fps / segment_seconds)``), then the frame scores are
   averaged within blocks of ``block_seconds`` = 5 s (``block_seconds * fps`` frames, the last block
   shorter) and the block mean is given to every frame of the block;
4. AP: the Video2GIF interpolated AP over the frames (:func:`kuaihl_rec.metrics.interpolated_ap`);
5. mAP = mean over users x 100.

HIT@1 (not in the PHD papers; ours): 1 when the top-scored 5 s block (the first on ties) holds at
least one positive frame, mean over users x 100.

Shapes: ``segment_scores`` float ``[T]``; frame arrays ``[n_frames]``.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, List, Sequence, Tuple

import numpy as np

from kuaihl_rec.metrics.highlight import interpolated_ap

FPS = 30
BLOCK_SECONDS = 5.0

Selection = Tuple[float, float]  # (start s, duration s)


@dataclasses.dataclass(frozen=True)
class PHDItem:
    """One test user's item: the target video's selections, its duration (s), the model's segment
    scores ``[T]`` and the feature side's segment length (s)."""

    user_id: str
    selections: Sequence[Selection]
    duration_s: float
    segment_scores: np.ndarray
    segment_seconds: float


def n_frames_of(duration_s: float, fps: int = FPS) -> int:
    return int(round(duration_s * fps))


def frame_labels(selections: Sequence[Selection], n_frames: int, fps: int = FPS) -> np.ndarray:
    """0/1 ``[n_frames]``: frame ``f`` is positive when ``f / fps`` lies in any ``[start, start + duration)``."""
    t = np.arange(n_frames) / fps
    out = np.zeros(n_frames, dtype=np.float64)
    for start, duration in selections:
        out[(t >= start) & (t < start + duration)] = 1.0
    return out


def frame_scores(segment_scores: np.ndarray, segment_seconds: float, n_frames: int, fps: int = FPS) -> np.ndarray:
    """``[n_frames]``: frame ``f`` gets the score of segment ``floor(f / fps / segment_seconds)`` (the last
    segment for frames past the end)."""
    scores = np.asarray(segment_scores, dtype=np.float64)
    per = segment_seconds * fps  # frames per segment
    frames = np.arange(n_frames)
    if abs(per - round(per)) < 1e-9:  # whole frames per segment: exact integer division
        seg = frames // int(round(per))
    else:  # epsilon-safe floor (f / per can land just below a whole number)
        seg = np.floor(frames / per + 1e-9).astype(np.int64)
    idx = np.minimum(seg, len(scores) - 1)
    return scores[idx]


def block_average(scores: np.ndarray, block_frames: int) -> np.ndarray:
    """Mean within consecutive blocks of ``block_frames`` frames, given to every frame of the block."""
    scores = np.asarray(scores, dtype=np.float64)
    starts = np.arange(0, len(scores), block_frames)
    means = np.add.reduceat(scores, starts) / np.diff(np.append(starts, len(scores)))
    return np.repeat(means, np.diff(np.append(starts, len(scores))))


def item_frames(item: PHDItem, fps: int = FPS, block_seconds: float = BLOCK_SECONDS) -> Tuple[np.ndarray, np.ndarray]:
    """(labels, block-averaged scores) over the frames of one item."""
    n = n_frames_of(item.duration_s, fps)
    labels = frame_labels(item.selections, n, fps)
    frames = frame_scores(item.segment_scores, item.segment_seconds, n, fps)
    scores = block_average(frames, int(round(block_seconds * fps)))
    return labels, scores


def _block_hit(labels: np.ndarray, scores: np.ndarray, block_frames: int) -> float:
    top = int(np.argmax(scores))  # first frame of the first top block
    first = (top // block_frames) * block_frames
    return float(labels[first:first + block_frames].max() > 0)


def phd_evaluate(items: Iterable[PHDItem], fps: int = FPS, block_seconds: float = BLOCK_SECONDS) -> dict:
    """``{"map": mean interpolated AP x 100, "hit1": HIT@1 x 100, "n_users": ..., "ap": per-user APs}``."""
    aps: List[float] = []
    hits: List[float] = []
    block_frames = int(round(block_seconds * fps))
    for item in items:
        labels, scores = item_frames(item, fps, block_seconds)
        aps.append(interpolated_ap(labels, scores))
        hits.append(_block_hit(labels, scores, block_frames))
    if not aps:
        raise ValueError("phd_evaluate got no items")
    return {"map": 100.0 * float(np.mean(aps)), "hit1": 100.0 * float(np.mean(hits)), "n_users": len(aps),
            "ap": aps}


def random_scores(n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Reference: uniform random segment scores."""
    return rng.random(n_segments)


def position_prior_scores(n_segments: int) -> np.ndarray:
    """Reference "earlier segments first": score ``-i`` for segment ``i``."""
    return -np.arange(n_segments, dtype=np.float64)
