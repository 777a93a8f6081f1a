"""What a ranking service hands the scorer every tick, and its checks.

:class:`ClosedSegments` holds the segments that closed since the last tick, one row per room
(``m`` rows)::

    live_id      int64   [m]              raw room id (one row per room per tick)
    streamer_id  int64   [m]              raw streamer id (a room keeps one streamer)
    segment      int64   [m]              index t of the segment in its room (0, 1, 2, ... consecutive)
    timestamp    int64   [m]              segment start, unix seconds
    visual       float32 [m, k_v, d_v]    (or [m, k_v * d_v], the segment table's flat layout)
    text         float32 [m, d_t]
    counters     float32 [m, C]           COUNTER_COLUMNS order; may be None when the model does not
                                          read counters (zeros)
    observed     float32 [m]              freshest complete label when t closes: the label of segment
                                          t - label_delay, -1 when the room has none yet; may be None
                                          when the model does not read it (all -1)

Arrays may be numpy arrays or torch tensors. :func:`check_closed_segments` turns them into
tensors of the documented dtypes or raises :class:`ServingInputError`, one line naming the field,
the expected shape / dtype and what was found; nothing with a wrong width, a non-finite value or
an impossible label is scored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch

from kuaihl_rec.data.schema import COUNTER_COLUMNS

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]


class ServingInputError(ValueError):
    """Bad input to the serving path: one line naming the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class ClosedSegments:
    """The segments that closed in one tick, one row per room (see the module docstring)."""

    live_id: ArrayLike
    streamer_id: ArrayLike
    segment: ArrayLike
    timestamp: ArrayLike
    visual: ArrayLike
    text: ArrayLike
    counters: Optional[ArrayLike] = None
    observed: Optional[ArrayLike] = None

    def __len__(self) -> int:
        return int(len(self.live_id))


@dataclasses.dataclass(frozen=True)
class FeatureShape:
    """Per-segment feature sizes a model reads (from its ``BatchSpec``)."""

    visual_tokens: int
    visual_dim: int
    text_dim: int
    n_counters: int = len(COUNTER_COLUMNS)


def _as_tensor(name: str, x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ServingInputError(f"{name}: not an array ({exc})") from None
    if arr.dtype == object:
        raise ServingInputError(f"{name}: expected a numeric array, got an object array (ragged rows?)")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_array(name: str, x: ArrayLike, shape: Sequence[Any], kind: str, finite: bool = True) -> torch.Tensor:
    """``x`` as a tensor of ``shape`` (ints, or a name for a free size) and ``kind`` ("float" ->
    float32, "int" -> int64); raises :class:`ServingInputError` naming ``name`` otherwise."""
    t = _as_tensor(name, x)
    want_dtype = "float32" if kind == "float" else "int64"
    if t.dim() != len(shape) or any(isinstance(s, int) and t.shape[i] != s for i, s in enumerate(shape)):
        raise ServingInputError(
            f"{name}: expected shape {_shape_text(shape)} ({want_dtype}), got {_shape_text(tuple(t.shape))}"
        )
    if kind == "float":
        if (
            t.dtype.is_complex
            or t.dtype == torch.bool
            or not (
                t.dtype.is_floating_point
                or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8)
            )
        ):
            raise ServingInputError(f"{name}: expected float32 values, got {t.dtype}")
        t = t.to(torch.float32)
        if finite and t.numel():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                rows = torch.nonzero(bad.reshape(t.shape[0], -1).any(dim=1)).flatten()[:5].tolist()
                raise ServingInputError(
                    f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf) in row(s) {rows}; "
                    "features must be finite"
                )
    else:
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ServingInputError(f"{name}: expected integer ids (int64), got {t.dtype}")
        t = t.to(torch.int64)
    return t


def check_closed_segments(
    records: ClosedSegments, shape: FeatureShape, reads_counters: bool
) -> Dict[str, torch.Tensor]:
    """Validated CPU tensors of one tick (keys as :class:`ClosedSegments` fields; visual reshaped to
    ``[m, k_v, d_v]``; counters / observed filled when not given and not read)."""
    if not isinstance(records, ClosedSegments):
        raise ServingInputError(f"tick input: expected a ClosedSegments, got {type(records).__name__}")
    live = check_array("live_id", records.live_id, ("m",), "int")
    m = int(live.shape[0])
    out = {"live_id": live}
    for name in ("streamer_id", "segment", "timestamp"):
        out[name] = check_array(name, getattr(records, name), (m,), "int")
    if m and int(out["segment"].min()) < 0:
        row = int(torch.nonzero(out["segment"] < 0)[0])
        raise ServingInputError(
            f"segment: row {row} (live_id {int(live[row])}) has segment {int(out['segment'][row])}; "
            "segment indices are >= 0"
        )
    visual = _as_tensor("visual", records.visual)
    if visual.dim() == 2 and visual.shape[1] == shape.visual_tokens * shape.visual_dim:
        visual = visual.reshape(visual.shape[0], shape.visual_tokens, shape.visual_dim)
    out["visual"] = check_array("visual", visual, (m, shape.visual_tokens, shape.visual_dim), "float")
    out["text"] = check_array("text", records.text, (m, shape.text_dim), "float")
    if records.counters is None:
        if reads_counters:
            raise ServingInputError(
                f"counters: this model reads the counters (use_counters); "
                f"expected float32 [{m}, {shape.n_counters}] in COUNTER_COLUMNS order, got None"
            )
        out["counters"] = torch.zeros(m, shape.n_counters)
    else:
        out["counters"] = check_array("counters", records.counters, (m, shape.n_counters), "float")
        if m and bool((out["counters"] < 0).any()):
            raise ServingInputError("counters: negative count(s); counters are >= 0")
    if records.observed is None:
        if reads_counters:
            raise ServingInputError(
                "observed: this model reads the freshest complete label (use_counters); "
                f"expected float32 [{m}] (-1 when none), got None"
            )
        out["observed"] = torch.full((m,), -1.0)
    else:
        obs = check_array("observed", records.observed, (m,), "float")
        bad = ~(((obs >= 0) & (obs <= 1)) | (obs == -1))
        if m and bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ServingInputError(
                f"observed: row {row} (live_id {int(live[row])}) is {float(obs[row])!r}; "
                "expected a label in [0, 1], or -1 when the room has no complete label yet"
            )
        out["observed"] = obs
    if m:
        uniq, counts = torch.unique(live, return_counts=True)
        if bool((counts > 1).any()):
            dup = int(uniq[counts > 1][0])
            raise ServingInputError(
                f"live_id: room {dup} appears {int(counts.max())} times in one tick; "
                "a tick holds at most one closed segment per room"
            )
    return out
