"""Per-user PHD examples, segment labels and the padded batches the PHD models read.

A :class:`UserExample` is one user with their target video, their selections on it (the truth)
and their history clips. Segment labels follow the evaluation's frames
(:mod:`kuaihl_rec.metrics.phd`): ``y_i`` = the share of segment ``i``'s 30 fps frames that lie in
the union of the user's selections; segment ``i`` is a *positive* when ``y_i >= 0.5``. The label
of segment ``i`` is the target at position ``i`` (labels are not shifted) and never enters a model
input: :class:`PHDBatch` keeps the labels apart from the features.

A history clip ``[start, start + duration)`` of video ``v`` is the segments of ``v`` it overlaps
(at most ``clip_segments``, the first ones kept).

Shapes of :class:`PHDBatch` (``b`` users, ``n`` segments, ``m`` history clips of ``c`` segments)::

    visual [b, n, dv]   text [b, n, dt]   valid bool [b, n]   labels [b, n]   positive bool [b, n]
    hist_visual [b, m, c, dv]   hist_text [b, m, c, dt]   hist_valid bool [b, m, c]
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from kuaihl_rec.data.phd.contract import PHDData
from kuaihl_rec.metrics.phd import FPS, frame_labels

Selection = Tuple[float, float]


@dataclasses.dataclass(frozen=True)
class UserExample:
    user_id: str
    video_id: str
    selections: Tuple[Selection, ...]
    history: Tuple[Tuple[str, float, float], ...]  # (video_id, start s, duration s), in table order


def user_examples(data: PHDData, split: str) -> List[UserExample]:
    """The examples of the users of ``split``, in the users table's order."""
    sel = data.labels.selections
    users = data.labels.users
    out = []
    by_user = {u: g for u, g in sel.groupby("user_id", sort=False)}
    for user in users.loc[users["split"] == split, "user_id"]:
        g = by_user[user]
        target = g[g["role"] == "target"]
        hist = g[g["role"] == "history"]
        out.append(UserExample(
            str(user), str(target["video_id"].iloc[0]),
            tuple(zip(target["start"].astype(float), target["duration"].astype(float))),
            tuple(zip(hist["video_id"].astype(str), hist["start"].astype(float), hist["duration"].astype(float))),
        ))
    return out


def segment_labels(selections: Sequence[Selection], n_segments: int, segment_seconds: float) -> np.ndarray:
    """``[T]``: share of each segment's frames (30 fps) inside the union of ``selections``."""
    per = int(round(segment_seconds * FPS))
    if abs(segment_seconds * FPS - per) > 1e-6 or per < 1:
        raise ValueError(f"segment_seconds {segment_seconds!r}: expected a whole number of {FPS} fps frames per "
                         f"segment, got {segment_seconds * FPS:g}")
    frames = frame_labels(selections, n_segments * per)
    return frames.reshape(n_segments, per).mean(axis=1)


def clip_range(start: float, duration: float, segment_seconds: float, n_segments: int, limit: int) -> Tuple[int, int]:
    """Segments ``[first, end)`` a clip overlaps, at most ``limit`` of them."""
    first = min(int(np.floor(start / segment_seconds + 1e-9)), n_segments - 1)
    end = max(first + 1, min(n_segments, int(np.ceil((start + duration) / segment_seconds - 1e-9))))
    return first, min(end, first + limit)


@dataclasses.dataclass(frozen=True)
class PHDBatch:
    visual: Tensor
    text: Tensor
    valid: Tensor
    labels: Tensor
    positive: Tensor
    hist_visual: Tensor
    hist_text: Tensor
    hist_valid: Tensor

    def replace(self, **changes: Tensor) -> "PHDBatch":
        return dataclasses.replace(self, **changes)


def training_crop(labels: np.ndarray, window: int, rng: np.random.Generator) -> Tuple[int, int]:
    """A random ``window``-segment crop holding at least one positive segment (the papers train
    fixed-length pieces that contain highlight frames); the whole video when it is shorter."""
    n = len(labels)
    if n <= window:
        return 0, n
    pos = np.flatnonzero(labels >= 0.5)
    if pos.size == 0:
        pos = np.array([int(np.argmax(labels))])
    anchor = int(rng.choice(pos))
    lo, hi = max(0, anchor - window + 1), min(anchor, n - window)
    first = int(rng.integers(lo, hi + 1))
    return first, first + window


def make_batch(
    data: PHDData,
    examples: Sequence[UserExample],
    crops: Optional[Sequence[Tuple[int, int]]] = None,
    clip_segments: int = 8,
) -> PHDBatch:
    """Pad ``examples`` into one :class:`PHDBatch`; ``crops[i]`` = segments ``[first, end)`` of the
    target video (None = whole videos)."""
    ss = data.segment_seconds
    vids = [data.videos[e.video_id] for e in examples]
    crops = list(crops) if crops is not None else [(0, v.n_segments) for v in vids]
    n = max(end - first for first, end in crops)
    hists = [e.history for e in examples]
    m = max(1, max(len(h) for h in hists))
    b, dv, dt = len(examples), data.visual_dim, data.text_dim
    visual, text = np.zeros((b, n, dv), np.float32), np.zeros((b, n, dt), np.float32)
    valid, labels = np.zeros((b, n), bool), np.zeros((b, n), np.float32)
    hv, ht = np.zeros((b, m, clip_segments, dv), np.float32), np.zeros((b, m, clip_segments, dt), np.float32)
    hmask = np.zeros((b, m, clip_segments), bool)
    for i, (e, video, (first, end)) in enumerate(zip(examples, vids, crops)):
        k = end - first
        visual[i, :k], text[i, :k], valid[i, :k] = video.visual[first:end], video.text[first:end], True
        labels[i, :k] = segment_labels(e.selections, video.n_segments, ss)[first:end]
        for j, (hvid, start, duration) in enumerate(hists[i]):
            hvideo = data.videos[hvid]
            f, g = clip_range(start, duration, ss, hvideo.n_segments, clip_segments)
            hv[i, j, : g - f], ht[i, j, : g - f], hmask[i, j, : g - f] = hvideo.visual[f:g], hvideo.text[f:g], True
    t = torch.from_numpy
    lab = t(labels)
    return PHDBatch(t(visual), t(text), t(valid), lab, (lab >= 0.5) & t(valid), t(hv), t(ht), t(hmask))


def leave_one_out_examples(examples: Sequence[UserExample]) -> List[UserExample]:
    """``examples`` plus, for each user and each history clip ``j``, the example whose target is ``j``'s
    video with ``j`` as the selection and the user's other clips (the other history clips and the target
    selections) as history. Every selection of a user is a labelled target for that user (PHD-GIFs: each
    GIF a user made is a highlight of that video for that user); use on training users only."""
    out = list(examples)
    for e in examples:
        target_clips = tuple((e.video_id, start, dur) for start, dur in e.selections)
        for j, (vid, start, dur) in enumerate(e.history):
            rest = e.history[:j] + e.history[j + 1:] + target_clips
            out.append(UserExample(e.user_id, vid, ((start, dur),), rest))
    return out
