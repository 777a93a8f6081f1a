"""The comparison report's figures (synthetic data).

* Figure 4 view (ContentCTR Fig. 4): one test room's hidden true LVTR, its noisy LVTR labels, and
  the next-segment predictions of the content model and of the best ID baseline.
* Figure 6 view (ContentCTR Fig. 6): the cosine-similarity matrix between one window's projected
  text and visual sequences of the trained content model, with its DTW alignment path. The path is
  read off the gradient of the hard DTW distance with respect to the cost matrix, which is the
  indicator of the optimal path (KuaiHL eq. 4's min-recursion has a subgradient on that path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

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
