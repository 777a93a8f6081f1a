"""Training throughput of the content model on this machine, and the alignment loss's share.

For each preset (``small``, ``paper``): samples/s of a full training step at batch 48, n = 20
(forward + backward + Adam step) with the KuaiHL loss (BCE + border-aware pairwise + DTW
alignment with N = 8 negatives and augmentation, ``kuaihl_rec.losses.ContentLoss("kuaihl")``),
and the share of the step spent in the alignment loss, measured two ways:

* ``step share``: (t_step(kuaihl) - t_step(kuaihl without align)) / t_step(kuaihl);
* ``isolated``: forward + backward of the alignment loss alone on [48, 20, d] sequences,
  divided by t_step(kuaihl).

Batches are random tensors with the embedded synthetic world's sizes (1 visual token of 64, a
64-wide text vector, 10 counters, 121 streamer rows). Timings are medians of the measured steps;
they are printed, never asserted.

Usage::

    python bench/bench_model.py                    # small: 30 steps, paper: 4 steps
    python bench/bench_model.py --presets small --steps 50 --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from kuaihl_rec.data.batch import BatchSpec, LiveBatch, make_id_features  # noqa: E402
from kuaihl_rec.model import create_model  # noqa: E402

try:  # the loss module is optional for this bench
    from kuaihl_rec.losses import ContentLoss, LOSS_PRESETS, alignment_loss  # noqa: E402
except ImportError:  # pragma: no cover - depends on the checkout
    ContentLoss = None  # type: ignore[assignment]
    LOSS_PRESETS = {}  # type: ignore[assignment]
    alignment_loss = None  # type: ignore[assignment]

SPEC = BatchSpec(visual_tokens=1, visual_dim=64, text_dim=64, num_streamers=121, num_lives=701, n_counters=10, window=20)


def random_batch(spec: BatchSpec, b: int, seed: int = 0) -> LiveBatch:
    g = torch.Generator().manual_seed(seed)
    n = spec.window
    ids = {
        "streamer_id": torch.randint(0, spec.num_streamers, (b,), generator=g),
        "live_id": torch.randint(0, spec.num_lives, (b,), generator=g),
    }
    return LiveBatch(
        sparse_features=make_id_features(ids),
        visual=torch.randn(b, n, spec.visual_tokens, spec.visual_dim, generator=g),
        text=torch.randn(b, n, spec.text_dim, generator=g),
        counters=torch.randint(0, 500, (b, n, spec.n_counters), generator=g).float(),
        labels=torch.rand(b, n, generator=g),
        label_mask=torch.ones(b, n, dtype=torch.bool),
        score_mask=torch.ones(b, n, dtype=torch.bool),
        valid=torch.ones(b, n, dtype=torch.bool),
        segment=torch.arange(n).expand(b, n).clone(),
        timestamp=torch.arange(n).expand(b, n).clone() * 30,
        streamer_raw=ids["streamer_id"].clone(),
        live_raw=ids["live_id"].clone(),
    )


def make_step(model: torch.nn.Module, loss_fn: Optional[Callable], batch: LiveBatch) -> Callable[[], float]:
    opt = torch.optim.Adam(model.parameters(), lr=5e-5)
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = model.encode(batch)
        if loss_fn is None:
            loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels)
        else:
            loss = loss_fn(
                out.logits, batch.labels, batch.label_mask, text_seq=out.text_seq, visual_seq=out.visual_seq,
                valid_mask=batch.valid, generator=gen,
            )["loss"]
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_calls(fns: Dict[str, Callable[[], object]], steps: int, warmup: int) -> Dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin so that load from
    other processes on a shared machine hits every variant alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(steps):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_preset(preset: str, batch_size: int, steps: int, warmup: int) -> Dict[str, object]:
    torch.manual_seed(0)
    model = create_model("kuaihl", SPEC, preset=preset)
    model.train()
    batch = random_batch(SPEC, batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    result: Dict[str, object] = {"preset": preset, "batch": batch_size, "window": SPEC.window, "params": n_params, "steps": steps}
    if ContentLoss is None or "kuaihl" not in LOSS_PRESETS:
        t = time_calls({"bce": make_step(model, None, batch)}, steps, warmup)["bce"]
        result.update(loss="bce", step_s=t, samples_per_s=batch_size / t, align_share=None)
        return result
    full = ContentLoss("kuaihl")
    no_align = ContentLoss(dataclasses.replace(LOSS_PRESETS["kuaihl"], align=False))
    cfg = full.config
    d = model.config.d
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(batch_size, SPEC.window, d, requires_grad=True)
    v = torch.randn(batch_size, SPEC.window, d, requires_grad=True)

    def align_only() -> None:
        loss = alignment_loss(
            z, v, None, n_negatives=cfg.n_negatives, tau=cfg.align_tau, gamma=cfg.soft_dtw_gamma,
            augment=cfg.augment, augment_gamma=cfg.augment_gamma, normalize=cfg.align_norm, generator=gen,
        )
        loss.backward()

    # two copies of the model (same init) so the two loss variants train independently
    torch.manual_seed(0)
    twin = create_model("kuaihl", SPEC, preset=preset)
    t = time_calls(
        {"full": make_step(model, full, batch), "plain": make_step(twin, no_align, batch), "align": align_only}, steps, warmup
    )
    t_full, t_plain, t_align = t["full"], t["plain"], t["align"]
    result.update(
        loss="kuaihl (BCE + L1 pairwise + DTW alignment, N=%d, augment=%s)" % (cfg.n_negatives, cfg.augment),
        step_s=t_full,
        samples_per_s=batch_size / t_full,
        step_s_without_align=t_plain,
        samples_per_s_without_align=batch_size / t_plain,
        align_s_isolated=t_align,
        align_share=max(0.0, (t_full - t_plain) / t_full),
        align_share_isolated=t_align / t_full,
    )
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--steps", type=int, default=30, help="measured steps for the small preset")
    parser.add_argument("--paper-steps", type=int, default=4, help="measured steps for the paper preset")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} CPUs "
        f"(load average {load:.1f}: other processes slow every figure), batch {args.batch}, n = {SPEC.window}"
    )
    if ContentLoss is None:
        print("alignment loss: not available (kuaihl_rec.losses not importable); timing BCE only")
    results = []
    for preset in args.presets:
        steps = args.paper_steps if preset == "paper" else args.steps
        warmup = 1 if preset == "paper" else args.warmup
        r = bench_preset(preset, args.batch, steps, warmup)
        results.append(r)
        line = f"{preset:6s} params {r['params']:>10,d}  step {r['step_s'] * 1e3:8.1f} ms  {r['samples_per_s']:8.1f} samples/s  [{r['loss']}]"
        print(line)
        if r.get("align_share") is not None:
            print(
                f"{'':6s} without alignment: {r['samples_per_s_without_align']:.1f} samples/s; alignment share of the step: "
                f"{100 * r['align_share']:.1f}% (difference), {100 * r['align_share_isolated']:.1f}% (isolated: {r['align_s_isolated'] * 1e3:.1f} ms)"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_start": load,
                 "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "results": results},
                fh, indent=2,
            )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
