#!/usr/bin/env python
"""Benchmark of kuaihl_rec.metrics (a script, not a test; prints a table, exits 0).

1. TVSum inter-annotator agreement (50 videos x 20 annotators; tau-b and Spearman
   rho between every pair of annotators, Otani et al. 2019 protocol) through
   ``kendall_tau_b_matrix`` / ``spearman_rho_matrix`` against a plain loop of
   ``scipy.stats.kendalltau`` / ``spearmanr`` over the 190 annotator pairs of each
   video, in the same run; both results are checked equal to 1e-9.
2. ``evaluate_segments`` on 1,000,000 scored segments in random rooms of ~120
   segments, with the time of each component.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_metrics.py [--segments N] [--tvsum-videos K]

The TVSum file is looked up in $KUAIHL_SHARED_DATA, else ../shared/data beside the repository.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
from scipy import stats

from kuaihl_rec import metrics as M

SHARED_DATA = Path(
    os.environ.get("KUAIHL_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")
)


def _timed(fn: Callable, repeats: int = 1):
    """(best wall time in seconds over ``repeats`` calls, last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _ours(videos: List[np.ndarray], which: str) -> List[np.ndarray]:
    fn = M.kendall_tau_b_matrix if which == "tau" else M.spearman_rho_matrix
    return [fn(v) for v in videos]


def _scipy_loop(videos: List[np.ndarray], which: str) -> List[np.ndarray]:
    fn = (lambda a, b: stats.kendalltau(a, b)[0]) if which == "tau" else (lambda a, b: stats.spearmanr(a, b)[0])
    out = []
    for v in videos:
        mat = np.eye(v.shape[0])
        for a, b in itertools.combinations(range(v.shape[0]), 2):
            mat[a, b] = mat[b, a] = fn(v[a], v[b])
        out.append(mat)
    return out


def _protocol_mean(mats: List[np.ndarray]) -> float:
    """Per annotator mean against the others, mean over annotators, mean over videos."""
    per_video = []
    for mat in mats:
        m = mat.shape[0]
        per_video.append(float(((mat.sum(axis=1) - np.diag(mat)) / (m - 1)).mean()))
    return float(np.mean(per_video))


def bench_tvsum(n_videos: int) -> List[Tuple[str, str, str]]:
    mat_path = SHARED_DATA / "tvsum" / "ydata-tvsum50.mat"
    if not mat_path.is_file():
        print(f"TVSum data not found at {mat_path}: skipping part 1")
        return []
    videos = M.read_tvsum_user_anno(mat_path)[:n_videos]
    n_frames = sum(v.shape[1] for v in videos)
    print(f"TVSum: {len(videos)} videos, {n_frames} frames, {videos[0].shape[0]} annotators")
    rows = []
    for which, label in (("tau", "Kendall tau-b"), ("rho", "Spearman rho")):
        t_fast, fast = _timed(lambda: _ours(videos, which), repeats=3)
        t_ref, ref = _timed(lambda: _scipy_loop(videos, which))
        diff = max(float(np.nanmax(np.abs(a - b))) for a, b in zip(fast, ref))
        if diff > 1e-9:
            raise SystemExit(f"{label}: fast path differs from scipy by {diff:.3g}")
        value = _protocol_mean(fast)
        rows.append((f"TVSum {label} = {value:.4f}", f"{t_ref:8.2f} s", f"{t_fast:8.3f} s  ({t_ref / t_fast:5.0f}x, max |diff| {diff:.1e})"))
    return rows


def _rooms_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rooms = rng.integers(0, max(n // 120, 1), n)
    labels = np.round(rng.beta(2, 5, n), 3)  # LVTR-like, ties from rounding
    probs = np.clip(labels + rng.normal(0, 0.15, n), 0, 1).astype(np.float32).astype(np.float64)
    return labels, probs, rooms


def bench_segments(n: int) -> List[Tuple[str, str, str]]:
    y, p, rooms = _rooms_data(n)
    print(f"evaluate_segments: {n} segments, {len(np.unique(rooms))} rooms (~{n / len(np.unique(rooms)):.0f} segments each)")
    t_all, out = _timed(lambda: M.evaluate_segments(y, p, room_ids=rooms), repeats=2)
    parts = [
        ("pooled tau-b (scipy)", lambda: M.kendall_tau_b(y, p)),
        ("tau@0.2/0.4/0.6", lambda: M.tau_at_thresholds(y, p, (0.2, 0.4, 0.6))),
        ("spearman", lambda: M.spearman_rho(y, p)),
        ("soft AUC", lambda: M.soft_auc(y, p)),
        ("log loss", lambda: M.soft_logloss(y, p)),
        ("per-room tau-b (batched)", lambda: M.grouped_kendall_tau_b(y, p, rooms)),
    ]
    rows = [(f"evaluate_segments ({n:,} segments)", "", f"{t_all:8.3f} s")]
    rows += [(f"  {name}", "", f"{_timed(fn)[0]:8.3f} s") for name, fn in parts]
    # Reference for the per-room part: scipy once per room.
    order = np.argsort(rooms, kind="stable")
    bounds = np.flatnonzero(np.diff(rooms[order])) + 1
    chunks = np.split(order, bounds)
    t_loop, _ = _timed(lambda: [M.kendall_tau_b(y[c], p[c]) for c in chunks])
    rows.append(("  per-room tau-b, scipy per room", f"{t_loop:8.3f} s", ""))
    print("  " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in out.items()))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1_000_000)
    parser.add_argument("--tvsum-videos", type=int, default=50)
    args = parser.parse_args()
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {stats.__name__.split('.')[0]} "
          f"{__import__('scipy').__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    rows = bench_tvsum(args.tvsum_videos) + bench_segments(args.segments)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'computation':<{width}} | {'scipy loop':>10} | kuaihl_rec.metrics")
    print("-" * (width + 50))
    for name, ref, fast in rows:
        print(f"{name:<{width}} | {ref:>10} | {fast}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
