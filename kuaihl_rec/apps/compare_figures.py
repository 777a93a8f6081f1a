"""The comparison report's figures (synthetic data).

* Figure 4 view (ContentCTR Fig. 4): one test room's hidden true LVTR, its noisy LVTR labels, and
  the next-segment predictions of the content model and of the best ID baseline.
* Figure 5 view (ContentCTR Fig. 5): the pointwise and pairwise terms of the step log during training
  of the loss-ablation rows point + L0 (the papers' Model2) and point + L1 (Model3), at our pair scale
  and at the papers' (``@sum``), seed 0: whether the pairwise term is over-optimised while the
  pointwise term rises (the papers' "collapse").
* Figure 6 view (ContentCTR Fig. 6): the cosine-similarity matrix between one window's projected
  text and visual sequences of the trained content model, with its DTW alignment path. The path is
  read off the gradient of the hard DTW distance with respect to the cost matrix, which is the
  indicator of the optimal path (KuaiHL eq. 4's min-recursion has a subgradient on that path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from kuaihl_rec.losses import dtw_from_cost
from kuaihl_rec.model.registry import list_models
from kuaihl_rec.train.evaluate import eval_split, load_trained_model


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)


def figure4(data_dir: Path, res: Dict[str, Any], out: Path) -> None:
    import pyarrow.parquet as pq

    runs = res["runs"]
    content = "content" if "content" in runs else next(iter(runs))
    baselines = [n for n in list_models(family="id_baseline") if n in res["models"]]
    best = max(baselines, key=lambda n: res["models"][n]["tau"]["mean"]) if baselines else None
    preds = pq.read_table(Path(runs[content][0]) / "test_predictions.parquet").to_pandas()
    room = preds.groupby("live_id").size().idxmax()
    mine = preds[preds.live_id == room].sort_values("segment")
    truth = pq.read_table(
        Path(data_dir) / "truth" / "segments_truth.parquet", columns=["live_id", "segment", "true_lvtr"]
    ).to_pandas()
    truth = truth[truth.live_id == room].sort_values("segment")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.8))
    ax.plot(truth.segment, truth.true_lvtr, color="black", lw=1.6, label="hidden true LVTR")
    ax.plot(mine.segment, mine.label, color="0.6", lw=0.8, marker=".", ms=3, label="LVTR label (noisy)")
    ax.plot(mine.segment, mine.score, color="tab:red", lw=1.3, label=f"{content} prediction")
    if best:
        theirs = pq.read_table(Path(runs[best][0]) / "test_predictions.parquet").to_pandas()
        theirs = theirs[theirs.live_id == room].sort_values("segment")
        ax.plot(theirs.segment, theirs.score, color="tab:blue", lw=1.3, label=f"{best} prediction (best ID model)")
    ax.set_xlabel("segment (30 s)")
    ax.set_ylabel("LVTR")
    ax.set_title(f"test room {room}: next-segment LVTR (synthetic world)", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def figure6(data_dir: Path, res: Dict[str, Any], out: Path) -> None:
    import torch

    runs = res["runs"]
    name = next((n for n in ("kuaihl", "content") if n in runs), None)
    if name is None:
        return
    run = Path(runs[name][0])
    model, _ = load_trained_model(run)
    split = eval_split(run, data_dir, "test")
    full = np.flatnonzero(split.index.n_valid == split.cfg.window)
    batch = split.batch(full[:1])
    with torch.no_grad():
        enc = model.encode(batch)
    z = torch.nn.functional.normalize(enc.text_seq[0], dim=-1)
    v = torch.nn.functional.normalize(enc.visual_seq[0], dim=-1)
    sim = (z @ v.T).numpy()
    cost = torch.tensor(1.0 - sim, requires_grad=True)
    dtw_from_cost(cost[None]).sum().backward()
    path = np.argwhere(cost.grad.numpy() > 0.5)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(sim, cmap="viridis", origin="upper")
    ax.plot(path[:, 1], path[:, 0], "r.", ms=7, label="DTW path")
    ax.set_xlabel("visual sequence position")
    ax.set_ylabel("text sequence position")
    ax.set_title(f"{name}: cos(text_i, visual_j), room {int(batch.live_raw[0])}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.85)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


#: The rows of the Figure 5 view: (row, colour, line style); rows a comparison did not train are left out.
FIGURE5_ROWS = (
    ("loss:point+L0", "tab:blue", "-"),
    ("loss:point+L1", "tab:red", "-"),
    ("loss:point+L0@sum", "tab:blue", ":"),
    ("loss:point+L1@sum", "tab:red", ":"),
)


def _moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Trailing mean over the last ``min(k, t + 1)`` values at each step t (no look-ahead, same length as x)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    t = np.arange(1, len(x) + 1)
    lo = np.maximum(t - k, 0)
    return (c[t] - c[lo]) / (t - lo)


def _loss_terms(run: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, point, pair) arrays of a run's step log (``steps.jsonl``)."""
    rows: List[Dict[str, Any]] = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if "point" in r and "pair" in r]
    return (np.array([r["step"] for r in rows], dtype=float), np.array([r["point"] for r in rows], dtype=float),
            np.array([r["pair"] for r in rows], dtype=float))


def figure5(res: Dict[str, Any], out: Path, smooth: int = 25) -> bool:
    """Pointwise and pairwise terms per step of the :data:`FIGURE5_ROWS` present in ``res`` (seed 0 runs,
    trailing mean over ``smooth`` steps); False (nothing written) when fewer than two of them were trained."""
    rows = [(name, colour, style) for name, colour, style in FIGURE5_ROWS if name in res["runs"]]
    if len(rows) < 2:
        return False
    plt = _plt()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, colour, style in rows:
        step, point, pair = _loss_terms(Path(res["runs"][name][0]))
        top.plot(step, _moving_average(point, smooth), color=colour, ls=style, lw=1.3, label=name)
        bottom.plot(step, _moving_average(pair, smooth), color=colour, ls=style, lw=1.3, label=name)
    top.set_ylabel("L_point (BCE)")
    bottom.set_ylabel("L_pair (as trained)")
    bottom.set_yscale("log")
    bottom.set_xlabel("training step")
    top.set_title(f"loss terms during training, seed 0, trailing mean of {smooth} steps (synthetic world)",
                  fontsize=9)
    top.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
    return True
