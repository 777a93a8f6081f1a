"""Benchmark of the loss functions (prints figures; not a test, nothing is asserted).

1. The batched anti-diagonal DTW (:func:`kuaihl_rec.losses.dtw_from_cost`) against a per-cell
   Python DP on the same cost matrices: B = 48 windows x (1 + 8) sequences, n = 20. The
   speed-up is measured in this run. A naive per-cell DP in torch with autograd (what a
   differentiable cell-by-cell implementation costs) is timed on a subset and scaled.
2. The alignment loss (DTW + InfoNCE, negatives and augmentation included), forward + backward,
   at b = 48, N = 8, n = 20, d = 512, for hard / soft DTW and each augmentation mode.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_losses.py [--threads 1] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable, List, Optional

import torch

from kuaihl_rec.losses import alignment_loss, dtw_from_cost


def python_dtw(cost: List[List[float]], gamma: Optional[float]) -> float:
    """Textbook per-cell DP on Python floats (hard min or soft-min)."""
    n, m = len(cost), len(cost[0])
    inf = math.inf
    R = [[inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = 0.0
    for i in range(1, n + 1):
        row, prev_row, c = R[i], R[i - 1], cost[i - 1]
        for j in range(1, m + 1):
            a, b, d = prev_row[j - 1], prev_row[j], row[j - 1]
            if gamma is None:
                best = min(a, b, d)
            else:
                mn = min(a, b, d)
                s = sum(math.exp(-(x - mn) / gamma) for x in (a, b, d) if x != inf)
                best = mn - gamma * math.log(s)
            row[j] = c[j - 1] + best
    return R[n][m]


def torch_cell_dtw(cost: torch.Tensor, gamma: Optional[float]) -> torch.Tensor:
    """Naive differentiable per-cell DP with torch scalars (one matrix)."""
    n, m = cost.shape
    big = cost.new_tensor(1e10)
    R = [[big] * (m + 1) for _ in range(n + 1)]
    R[0][0] = cost.new_tensor(0.0)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            prev = torch.stack((R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]))
            best = prev.min() if gamma is None else -gamma * torch.logsumexp(-prev / gamma, 0)
            R[i][j] = cost[i - 1, j - 1] + best
    return R[n][m]


CPU_TIMES: List[float] = []


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time in ms over ``repeats`` calls, after one warm-up call.

    The median process CPU time of the same calls is appended to ``CPU_TIMES`` (on a shared
    machine it is the steadier figure; with one thread it is close to the unloaded wall time).
    """
    fn()
    sync()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    CPU_TIMES.append(statistics.median(cpu))
    return statistics.median(times)


def cpu() -> str:
    return f"(cpu {CPU_TIMES[-1]:.2f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--negatives", type=int, default=8)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--d", type=int, default=512)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    b, N, n, d = args.windows, args.negatives, args.n, args.d
    B = b * (1 + N)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, repeats {args.repeats}")

    # ---------------------------------------------------------------- 1. DTW DP
    print(f"\n[1] DTW on B = {b} x (1 + {N}) = {B} cost matrices of {n} x {n}")
    cost_cpu = torch.rand(B, n, n, generator=gen, dtype=torch.float64)
    cost_lists = cost_cpu.tolist()
    cost = cost_cpu.float().to(device)
    for gamma in (None, 0.1):
        label = "hard" if gamma is None else f"soft gamma={gamma}"
        t_py = timed(lambda: [python_dtw(c, gamma) for c in cost_lists], max(1, args.repeats // 3), lambda: None)
        cpu_py = CPU_TIMES[-1]
        with torch.no_grad():
            t_fwd = timed(lambda: dtw_from_cost(cost, gamma), args.repeats, sync)
        cpu_fwd = CPU_TIMES[-1]
        leaf = cost.clone().requires_grad_(True)
        t_fb = timed(lambda: dtw_from_cost(leaf, gamma).sum().backward(), args.repeats, sync)
        cpu_fb = CPU_TIMES[-1]
        subset = 8
        leaf_cells = cost_cpu[:subset].clone().requires_grad_(True)

        def cellwise() -> None:
            torch.stack([torch_cell_dtw(c, gamma) for c in leaf_cells]).sum().backward()

        t_cell = timed(cellwise, 1, lambda: None) * B / subset
        # agreement check on the figures being compared
        ours = dtw_from_cost(cost_cpu, gamma)
        ref = torch.tensor([python_dtw(c, gamma) for c in cost_lists[:16]], dtype=torch.float64)
        err = (ours[:16] - ref).abs().max().item()
        print(f"  {label:16s} per-cell Python DP (forward)         {t_py:9.1f} ms (cpu {cpu_py:.1f} ms)")
        print(
            f"  {label:16s} batched wavefront (forward)          {t_fwd:9.2f} ms (cpu {cpu_fwd:.2f} ms)"
            f"   speed-up x{t_py / t_fwd:.0f} (cpu x{cpu_py / cpu_fwd:.0f})"
        )
        print(f"  {label:16s} batched wavefront (forward+backward) {t_fb:9.2f} ms (cpu {cpu_fb:.2f} ms)")
        print(
            f"  {label:16s} per-cell torch autograd DP (fwd+bwd, {subset} matrices scaled to {B}) "
            f"{t_cell:9.0f} ms   speed-up x{t_cell / t_fb:.0f}   (max |diff| vs Python DP {err:.1e})"
        )

    # ---------------------------------------------------------------- 2. alignment loss
    print(f"\n[2] alignment loss forward+backward: b = {b}, N = {N}, n = {n}, d = {d}")
    z = torch.randn(b, n, d, generator=gen).to(device).requires_grad_(True)
    v = torch.randn(b, n, d, generator=gen).to(device).requires_grad_(True)
    loss_gen = torch.Generator(device=device).manual_seed(1)
    for gamma in (None, 0.1):
        for augment in ("none", "positive", "exclude"):

            def step() -> None:
                alignment_loss(z, v, n_negatives=N, gamma=gamma, augment=augment, generator=loss_gen).backward()

            ms = timed(step, args.repeats, sync)
            label = "hard" if gamma is None else f"soft gamma={gamma}"
            print(f"  DTW {label:16s} augment={augment:9s} {ms:8.2f} ms {cpu()}")
    # the same, forward only
    with torch.no_grad():
        ms = timed(lambda: alignment_loss(z, v, n_negatives=N, generator=loss_gen), args.repeats, sync)
    print(f"  DTW hard, augment=positive, forward only (no grad)  {ms:8.2f} ms {cpu()}")


if __name__ == "__main__":
    main()
