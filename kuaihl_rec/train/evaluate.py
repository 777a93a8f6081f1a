"""``kuaihl eval``: score a trained run on a split of a data directory, once per test segment.

Loads ``RUN/model.pt`` (the single-file conversion of the best checkpoint) into an unsharded model,
windows the split in eval mode with the run's window settings and *the run's training vocabularies*
(so cold-start streamers map to the unknown row exactly as in training), scores each target segment
once (docs/MODEL.md section 1), and writes::

    {"model", "n_segments", "tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc", "logloss",
     "mean_pred_over_true", "per_room_tau", ..., "unknown_streamer_share",
     "tau_warm", "tau_cold", "n_segments_warm", "n_segments_cold", "cold_start_source",
     "reference": {"previous_segment_label": {...}, "last_complete_label": {...}}}

``unknown_streamer_share`` is the share of scored segments whose streamer is not in the run's
vocabulary; it is logged as a warning when above 0, loudly when it is 100 % (other data than the
run was trained on). ``tau_warm`` / ``tau_cold``: tau-b on the segments of streamers seen / not seen
in training (:mod:`kuaihl_rec.train.cold_start`: the truth sidecar's flag, else the vocabulary).

``reference`` holds the two trivial predictors (:func:`reference_scores`):
``previous_segment_label`` (the label of the segment the model sees last, used as the score for
the next one; for LVTR it is not yet known at that time: its 60 s outcome is still open) and
``last_complete_label`` (the freshest label known when the score is needed: LVTR of segment
u - 3 for target u; ``WindowConfig.label_delay``).
With ``predictions`` it also writes one Parquet row per scored segment (live_id, streamer_id,
segment, label, score) so every metric can be recomputed independently.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pyarrow as pa
import torch

from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.data.catalog import build_catalog, load_vocabs
from kuaihl_rec.data.io import DataError, atomic_write_json, atomic_write_parquet
from kuaihl_rec.data.stream import StreamSplit
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.windows import (
    IdVocab,
    SegmentArrays,
    WindowConfig,
    WindowedSplit,
    build_windows,
)
from kuaihl_rec.metrics import evaluate_segments
from kuaihl_rec.model import create_model
from kuaihl_rec.train.cold_start import cold_start_mask, slice_metrics
from kuaihl_rec.train.config import TrainConfig
from kuaihl_rec.train.loop import plain_scorer, score_split

logger = logging.getLogger(__name__)


def load_trained_model(run_dir: Path):
    """(model in eval mode, saved run config) from ``RUN/model.pt``."""
    path = Path(run_dir) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model (is {run_dir} a finished `kuaihl train` run?)")
    payload = torch.load(path, weights_only=False, map_location="cpu")
    saved = payload["config"]
    spec = BatchSpec(**saved["spec"])
    choice = TrainConfig.from_dict(saved["train"]).model
    # the trained weights come from model.pt: a pretrained table's source run need not exist any more
    overrides = {k: v for k, v in choice.overrides if k != "streamer_init"}
    model = create_model(choice.name, spec, **overrides)
    state = {k[len("model."):]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match model {choice.name!r}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.eval()
    return model, saved


def eval_split(run_dir: Path, data_dir: Path, split: str = "test") -> WindowedSplit:
    """The eval-mode windows of ``split`` with the run's window config and vocabularies."""
    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    wcfg = WindowConfig.from_dict(saved["window"])
    table, sizes, _ = load_segments(data_dir, min_viewers=wcfg.min_viewers)
    spec = saved["spec"]
    if (sizes.visual_tokens, sizes.visual_dim, sizes.text_dim) != (
        spec["visual_tokens"], spec["visual_dim"], spec["text_dim"]
    ):
        raise DataError(
            f"{data_dir}: feature sizes {sizes} differ from the run's ({spec}); was the model trained on other data?"
        )
    arr = SegmentArrays.from_table(table, sizes, wcfg)
    svocab, lvocab = load_vocabs(run_dir / "vocab.npz")
    index = build_windows(arr, wcfg, split, "eval")
    if len(index.first_row) == 0:
        raise DataError(f"{data_dir}: split {split!r} has no windows to score")
    return WindowedSplit(arr, index, wcfg, svocab, lvocab, "eval")


def stream_eval_split(run_dir: Path, data_dir: Path, split: str = "test", rank: int = 0,
                      world_size: int = 1) -> StreamSplit:
    """:func:`eval_split` for streaming input: rank ``rank``'s rooms of ``split``, read a chunk at a time
    (score it with :func:`~kuaihl_rec.train.scoring.score_split`, which gathers every rank's rows)."""
    run_dir = Path(run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    wcfg = WindowConfig.from_dict(saved["window"])
    stream = TrainConfig.from_dict(saved["train"]).stream
    catalog = build_catalog(data_dir, wcfg)
    spec, sizes = saved["spec"], catalog.sizes
    if (sizes.visual_tokens, sizes.visual_dim, sizes.text_dim) != (
        spec["visual_tokens"], spec["visual_dim"], spec["text_dim"]
    ):
        raise DataError(
            f"{data_dir}: feature sizes {sizes} differ from the run's ({spec}); was the model trained on other data?"
        )
    svocab, lvocab = load_vocabs(run_dir / "vocab.npz")
    out = StreamSplit(catalog, split, wcfg, stream, svocab, lvocab, rank, world_size)
    if len(out) == 0:
        raise DataError(f"{data_dir}: split {split!r} has no windows to score")
    return out


def _ranks(values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The rank of each ``query`` value among the sorted unique ``values`` (-1 where it is not one)."""
    if len(values) == 0:
        return np.full(len(query), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(values, query), len(values) - 1)
    return np.where(values[pos] == query, pos, -1).astype(np.int64)


def pair_positions(live_id: np.ndarray, segment: np.ndarray, want_live: np.ndarray,
                   want_segment: np.ndarray) -> np.ndarray:
    """For each wanted ``(live_id, segment)`` pair, its first row in the table ``(live_id, segment)``, else -1.

    Exact for any int64 ids: a pair is coded by the ranks of its two values among the table's
    distinct values (``rank(live) * n_segments + rank(segment)`` < ``n_rows ** 2``), so no two pairs
    share a code and nothing overflows, unlike ``live_id * C + segment``.

    >>> pair_positions(np.array([2**62, 7]), np.array([3, 3]), np.array([2**62 + 2**58, 2**62]),
    ...                np.array([3, 3])).tolist()
    [-1, 0]
    """
    live = np.asarray(live_id, dtype=np.int64)
    seg = np.asarray(segment, dtype=np.int64)
    live_values, seg_values = np.unique(live), np.unique(seg)
    n_seg = np.int64(len(seg_values))
    codes = _ranks(live_values, live) * n_seg + _ranks(seg_values, seg)
    want_l = _ranks(live_values, np.asarray(want_live, dtype=np.int64))
    want_s = _ranks(seg_values, np.asarray(want_segment, dtype=np.int64))
    want = np.where((want_l >= 0) & (want_s >= 0), want_l * n_seg + want_s, -1)
    if len(codes) == 0:
        return np.full(len(want), -1, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    pos = np.minimum(np.searchsorted(codes, want, sorter=order), len(codes) - 1)
    hit = (want >= 0) & (codes[order[pos]] == want)
    return np.where(hit, order[pos], -1).astype(np.int64)


def lagged_label_scores(
    live_id: np.ndarray,
    segment: np.ndarray,
    label: np.ndarray,
    target_live: np.ndarray,
    target_segment: np.ndarray,
    lag: int,
) -> np.ndarray:
    """A trivial predictor: for target segment u of room r, the label of segment u - ``lag`` of r.

    ``live_id, segment, label`` describe the segment table (any order); targets whose room has no
    segment u - lag (its first ``lag`` segments) get the mean of the other targets' scores, a
    constant that carries no information (all tied). Returns float64 ``[len(target_live)]``.
    """
    row = pair_positions(live_id, segment, target_live, np.asarray(target_segment, dtype=np.int64) - lag)
    found = row >= 0
    scores = np.where(found, np.asarray(label)[np.maximum(row, 0)], np.nan).astype(np.float64)
    if not found.all():
        scores[~found] = float(np.nanmean(scores)) if found.any() else 0.5
    return scores


def reference_scores(
    live_id: np.ndarray,
    segment: np.ndarray,
    label: np.ndarray,
    target_live: np.ndarray,
    target_segment: np.ndarray,
    label_delay: int,
) -> Dict[str, np.ndarray]:
    """The two trivial predictors every report shows, as scores of the targets:

    * ``previous_segment_label``: the label of segment u - 1 (the issue's trivial predictor). For
      LVTR it is *not* known when u is scored: its 60 s outcome ends during u + 1.
    * ``last_complete_label``: the label of segment u - 1 - ``label_delay``, the freshest label the
      platform has when u is scored (LVTR: u - 3). Equal to the first when the delay is 0.
    """
    out = {"previous_segment_label": lagged_label_scores(live_id, segment, label, target_live, target_segment, 1)}
    out["last_complete_label"] = lagged_label_scores(
        live_id, segment, label, target_live, target_segment, 1 + label_delay
    )
    return out


def unknown_streamer_share(vocab: IdVocab, streamer_id: np.ndarray, where: str) -> float:
    """The share of scored segments whose streamer is not in the run's vocabulary (logged when > 0; a
    warning when it is every segment).

    Such segments reach the model through the "unknown" embedding row only (cold-start streamers):
    a few are expected on a test split; all of them means the data is not the world the run was
    trained on (or its ids were remapped), and the scores carry no streamer information.
    """
    if len(streamer_id) == 0:
        return 0.0
    share = float(np.mean(vocab.lookup(np.asarray(streamer_id, dtype=np.int64)) == 0))
    if share >= 1.0:
        logger.warning(
            "%s: EVERY scored segment's streamer is unknown to the run's vocabulary (100%%): is this data from "
            "the world the run was trained on? The streamer embedding contributes nothing to these scores.", where)
    elif share > 0:  # cold-start streamers: expected on a test split, so information, not a warning
        logger.info("%s: %.1f%% of scored segments have a streamer unknown to the run's vocabulary "
                       "(scored through the unknown row)", where, 100 * share)
    return share


def evaluate_run(
    run_dir: Path,
    data_dir: Path,
    split: str = "test",
    json_out: Optional[Path] = None,
    predictions_out: Optional[Path] = None,
    progress: bool = True,
) -> Dict[str, Any]:
    """Score ``run_dir``'s model once per target segment of ``split`` of ``data_dir``; the metrics dict.

    ``unknown_streamer_share`` in the result: the share of scored segments whose streamer the run's
    vocabulary does not know (warned about; see :func:`unknown_streamer_share`). ``json_out`` /
    ``predictions_out``: where to write the metrics JSON / the per-segment predictions Parquet file.
    """
    model, saved = load_trained_model(run_dir)
    windows = eval_split(run_dir, data_dir, split)
    scored = score_split(plain_scorer(model), windows, batch_size=256, device=torch.device("cpu"), progress=progress)
    unknown = unknown_streamer_share(windows.streamer_vocab, scored["streamer_id"], f"{data_dir} split {split!r}")
    metrics = evaluate_segments(scored["label"], scored["score"], room_ids=scored["live_id"])
    cold, source = cold_start_mask(data_dir, windows.streamer_vocab, scored["live_id"], scored["streamer_id"])
    metrics.update(slice_metrics(scored["label"], scored["score"], cold, source))
    a = windows.arr
    refs = reference_scores(
        a.live_id, a.segment, a.label, scored["live_id"], scored["segment"], windows.cfg.observed_delay
    )
    reference = {
        name: {**evaluate_segments(scored["label"], score, room_ids=scored["live_id"]),
               **slice_metrics(scored["label"], score, cold, source)}
        for name, score in refs.items()
    }
    result: Dict[str, Any] = {
        "model": TrainConfig.from_dict(saved["train"]).model.name,
        "run": str(run_dir),
        "data": str(data_dir),
        "split": split,
        **metrics,
        "unknown_streamer_share": unknown,
        "reference": reference,
    }
    if json_out:
        atomic_write_json(json_out, result)
    if predictions_out:
        table = pa.table({
            "live_id": pa.array(scored["live_id"], pa.int64()),
            "streamer_id": pa.array(scored["streamer_id"], pa.int64()),
            "segment": pa.array(scored["segment"], pa.int32()),
            "label": pa.array(scored["label"], pa.float32()),
            "score": pa.array(scored["score"], pa.float64()),
        })
        atomic_write_parquet(predictions_out, table)
    return result
