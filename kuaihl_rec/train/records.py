"""What a training run writes besides checkpoints: versions, step / epoch logs, the loss curve."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from kuaihl_rec.data.io import atomic_write_bytes


def versions() -> Dict[str, str]:
    """Versions of the stack a run used (saved in ``config.json``)."""
    import torchrec  # noqa: PLC0415  (imported where used, like fbgemm_gpu below, which may be absent)

    out = {
        "python": platform.python_version(), "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "?"), "numpy": np.__version__,
    }
    try:
        import fbgemm_gpu

        out["fbgemm_gpu"] = getattr(fbgemm_gpu, "__version__", "?")
    except ImportError:
        pass
    return out


def truncate_jsonl(path: Path, key: str, last: int) -> None:
    """Keep the lines of a JSON-lines log whose ``key`` is <= ``last`` (forget what a killed run
    logged after its last checkpoint)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)[key] <= last]
    atomic_write_bytes(path, "".join(line + "\n" for line in kept).encode())


def plot_losses(run_dir: Path, steps: List[Dict[str, float]], epochs: List[Dict[str, Any]]) -> None:
    """``run_dir/loss_curve.png``: per-step training loss (and its moving mean), validation tau-b per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    if steps:
        xs = [s["step"] for s in steps]
        a.plot(xs, [s["loss"] for s in steps], lw=0.8, label="train loss (per step)")
        k = max(1, len(xs) // 50)
        smooth = np.convolve([s["loss"] for s in steps], np.ones(k) / k, mode="valid")
        a.plot(xs[k - 1 :], smooth, lw=1.5, label=f"moving mean ({k})")
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend()
    if epochs:
        val_tau = [e.get("val_tau", float("nan")) for e in epochs]
        b.plot([e["epoch"] for e in epochs], val_tau, "o-", label="val tau-b")
        b.set_xlabel("epoch")
        b.set_ylabel("Kendall tau-b (validation)")
        b.legend()
    fig.suptitle("training curves (synthetic data unless stated otherwise)", fontsize=9)
    fig.tight_layout()
    tmp = run_dir / ".loss_curve.png.tmp"
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, run_dir / "loss_curve.png")
