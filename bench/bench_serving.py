"""Serving speed: the streaming scorer against full-window re-scoring, same rooms, same weights.

For each preset (``small``, ``paper``) one untrained content model (speed does not depend on
the weights) is timed, in one process, under ``torch.inference_mode()``, on the same ``R`` rooms:

* ``streaming``: :class:`kuaihl_rec.serving.StreamingScorer`. Each tick every room brings one
  closed segment (:class:`~kuaihl_rec.serving.inputs.ClosedSegments`); the scorer encodes only
  that segment (``ContentInference.encode_segments``), writes it into the room's ring buffer
  and decodes the cached window of n = 20 (``ContentInference.decode_logits``: the last decoder
  layer for the newest position only). The scorer is warmed up with 20 ticks first, so every
  room holds a full window; then ``K`` ticks are timed (they include input validation and the
  scorer's book-keeping: what a service pays).
* ``full window``: the reference, every tick re-running the whole model over each room's window
  of n raw segments (``ContentInference.window_logits`` on ``[R, n, ...]`` inputs: all n segments
  encoded, then the same last-position decode).
* chunked variants (``--chunk`` small, ``--paper-chunk`` paper): the same two paths with the rooms
  cut into chunks (``StreamingScorer.max_batch`` for the scorer, the same scorer on alternate ticks;
  one ``window_logits`` call per chunk for the reference): smaller intermediates stay in cache and
  skip the page faults of freshly mapped large buffers, which matters on CPU.
* ``train fwd``: the training-path forward ``ContentCTR.forward(LiveBatch)`` on the same windows
  (all n positions' logits; the KeyedJaggedTensor id lookup); informative only.

Calls are interleaved round-robin (one streaming tick, one full-window pass, ...) so load from
other processes hits every path alike; figures are medians over the ``K`` rounds (no separate
warm-up of the full paths: the first round carries their first-call costs, the median drops it).
On a shared machine, threads that must wait for cores taken by other processes make every small
parallel op cost a scheduler time slice (milliseconds), which hurts the streaming path (many
small ops) far more than full-window re-scoring: a small-op latency probe (``threads`` vs 1
thread) is printed, with a warning when it shows that; compare with ``--threads 1``. Printed per
preset: ms per tick, rooms scored per second, the speed-up full / streaming beside the issue's
targets (>= 4x ``small``, >= 2.5x ``paper``), model FLOPs per room per tick counted with
``torch.utils.flop_counter.FlopCounterMode`` (matmul-family ops: mm / addmm / bmm / baddbmm, plus
scaled-dot-product attention, whose CPU kernel this script registers with torch's own SDPA
formula; LayerNorm, GELU, softmax, gathers and embedding lookups are not counted) beside an
analytic count of the same ops, this CPU's fp32 GEMM rate (2048 x 2048 ``torch.matmul``, timed in
the same run) and the fraction of it each path achieves, the streaming state per room
(``StreamingScorer.bytes_per_room``), a breakdown of the streaming tick (input validation, encode,
ring-buffer gather, decode, book-keeping; optionally the top operators from ``torch.profiler``)
and a correctness line: max |logit difference| between streaming and full-window scoring of the
same rooms at the same tick (the full window holds exactly the cached segments: ~1e-5 expected).
Nothing is asserted.

With a CUDA device, the ``paper`` preset is also timed scoring 1,000,000 rooms in one tick in
bf16 autocast (target < 5 s); without one a line says it was not measured.

Feature sizes default to the synthetic world's (visual 1 x 64, text 64); KLive-like features are
``--visual-dim 512 --text-dim 768``.

Usage::

    python bench/bench_serving.py                                   # small: 4096 rooms, 5 ticks; paper: 256 rooms, 3 ticks
    python bench/bench_serving.py --presets small --rooms 8192 --ticks 10 --json out.json
    python bench/bench_serving.py --presets paper --paper-rooms 1024 --visual-dim 512 --text-dim 768
    python bench/bench_serving.py --use-counters --threads 1 --profile
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep torch.profiler's start/stop chatter off stderr

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # noqa: E402

from kuaihl_rec.data.batch import BatchSpec, LiveBatch, make_id_features  # noqa: E402
from kuaihl_rec.data.schema import COUNTER_COLUMNS, PAPER_COUNTER_COLUMNS  # noqa: E402
from kuaihl_rec.model import create_model  # noqa: E402
from kuaihl_rec.serving.inference import ContentInference  # noqa: E402
from kuaihl_rec.serving.inputs import ClosedSegments, check_closed_segments  # noqa: E402
from kuaihl_rec.serving.stream import StreamingScorer  # noqa: E402

WINDOW = 20
LABEL_DELAY = 2
N_STREAMERS = 120
VOCAB_BASE = 1000
TARGETS = {"small": 4.0, "paper": 2.5}
GPU_TARGET_S = 5.0

# -------------------------------------------------------------------------------------------- FLOPs


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_mapping() -> Dict[Any, Callable]:
    """torch's flop registry has the CUDA attention kernels only; the CPU kernel that
    ``scaled_dot_product_attention`` dispatches to gets the same formula here."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}


def count_flops(fn: Callable[[], Any]) -> tuple:
    """(result of fn(), total counted FLOPs)."""
    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


def analytic_flops(cfg: Any, spec: BatchSpec, n: int = WINDOW) -> Dict[str, float]:
    """Matmul + attention FLOPs (2 per multiply-add, attention over all n keys as SDPA computes it)
    of the same ops FlopCounterMode counts, per room: the Perceiver/perceiver-fusion encode of one
    segment, one decoder layer over n positions, the last layer for the newest position only."""
    d, inner, hid = cfg.d, cfg.n_heads * cfg.d_head, cfg.ffn_hidden
    kv_tok = spec.visual_tokens * cfg.use_visual + int(cfg.use_text) + int(cfg.use_counters)
    heads = 0
    if cfg.use_visual:
        heads += spec.visual_tokens * 2 * (spec.visual_dim * d + d * d)
    if cfg.use_text:
        heads += 2 * (spec.text_dim * d + d * d)
    if cfg.use_counters:
        heads += 2 * (len(PAPER_COUNTER_COLUMNS) + 5) * d
    id_proj = 2 * (cfg.id_dim or d) * d if (cfg.id_dim and cfg.id_dim != d) else 0
    if cfg.fusion == "perceiver":
        lk = kv_tok + 1  # the latent attends to the content tokens and itself
        layer = 2 * d * inner + 2 * 2 * lk * d * inner + 2 * 2 * lk * inner + 2 * inner * d + 4 * d * hid
        encode = heads + id_proj + cfg.n_perceiver_layers * layer
    else:  # other fusions are not analysed here
        encode = float("nan")
    dec_full = 3 * 2 * n * d * inner + 2 * 2 * n * n * inner + 2 * n * inner * d + 4 * n * d * hid
    dec_last = 2 * 2 * n * d * inner + 2 * d * inner + 2 * 2 * n * inner + 2 * inner * d + 4 * d * hid
    head = 2 * d
    decode = (cfg.n_decoder_layers - 1) * dec_full + dec_last + head
    return {
        "encode_per_segment": encode,
        "decode_last": decode,
        "streaming": encode + decode,
        "full_window": n * encode + decode,
        "train_forward": n * encode + cfg.n_decoder_layers * dec_full + n * head,
    }


def gemm_rate(size: int, reps: int) -> float:
    """fp32 GFLOP/s of ``torch.matmul`` of two size x size matrices (median of reps, after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g)
    b = torch.randn(size, size, generator=g)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * size ** 3 / statistics.median(times) / 1e9


def small_op_latency(threads: int, reps: int = 20) -> Dict[str, float]:
    """Median microseconds of one small parallel op (an add of two 128 x 512 fp32 tensors, above
    ATen's grain size, so it runs on every thread) with ``threads`` threads and with 1. When the
    threads must share cores with other processes, every parallel region waits for a descheduled
    thread (milliseconds); the streaming path, made of many small ops, suffers most."""
    a, b, c = torch.randn(128, 512), torch.randn(128, 512), torch.empty(128, 512)
    out = {}
    for th in sorted({threads, 1}, reverse=True):
        torch.set_num_threads(th)
        for _ in range(10):
            torch.add(a, b, out=c)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.add(a, b, out=c)
            ts.append(time.perf_counter() - t0)
        out[f"{th}_threads"] = statistics.median(ts) * 1e6
    torch.set_num_threads(threads)
    return out


# -------------------------------------------------------------------------------------------- inputs


def build_inference(preset: str, spec: BatchSpec, use_counters: bool, seed: int) -> ContentInference:
    torch.manual_seed(seed)
    overrides = {"use_counters": True} if use_counters else {}
    model = create_model("content", spec, preset=preset, **overrides)
    model.eval()
    vocab = np.arange(VOCAB_BASE, VOCAB_BASE + N_STREAMERS, dtype=np.int64)
    return ContentInference(model, streamer_vocab=vocab, label_delay=LABEL_DELAY, model_name="content")


class Rooms:
    """Pre-generated inputs of ``ticks`` consecutive segments of ``R`` rooms (tick t = segment t of
    every room), stored tick-major so one tick's rows are contiguous."""

    def __init__(self, spec: BatchSpec, rooms: int, ticks: int, unknown_frac: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        self.rooms, self.ticks = rooms, ticks
        self.live_id = (10_000_000 + rng.permutation(rooms * 3)[:rooms]).astype(np.int64)  # unsorted, unique
        streamer = rng.integers(VOCAB_BASE, VOCAB_BASE + N_STREAMERS, size=rooms).astype(np.int64)
        unknown = rng.random(rooms) < unknown_frac
        streamer[unknown] = 900_000 + rng.integers(0, 1000, size=int(unknown.sum()))  # not in the vocabulary
        self.streamer_id = streamer
        self.visual = torch.randn(ticks, rooms, spec.visual_tokens, spec.visual_dim, generator=g)
        self.text = torch.randn(ticks, rooms, spec.text_dim, generator=g)
        self.counters = torch.randint(0, 500, (ticks, rooms, spec.n_counters), generator=g).float()
        labels = torch.rand(ticks, rooms, generator=g)
        self.observed = torch.full((ticks, rooms), -1.0)
        self.observed[LABEL_DELAY:] = labels[: ticks - LABEL_DELAY]  # label of segment t - delay
        self.segment = torch.arange(ticks, dtype=torch.int64)[:, None].expand(ticks, rooms).contiguous()
        self.timestamp = 1_700_000_000 + 30 * self.segment

    def tick(self, t: int) -> ClosedSegments:
        return ClosedSegments(
            live_id=self.live_id, streamer_id=self.streamer_id, segment=self.segment[t], timestamp=self.timestamp[t],
            visual=self.visual[t], text=self.text[t], counters=self.counters[t], observed=self.observed[t],
        )

    def window(self, t: int, n: int = WINDOW) -> Dict[str, torch.Tensor]:
        """``[R, n, ...]`` tensors of the window ending at segment t (oldest first), contiguous."""
        sl = slice(t - n + 1, t + 1)
        return {
            k: getattr(self, k)[sl].transpose(0, 1).contiguous()
            for k in ("visual", "text", "counters", "observed", "timestamp", "segment")
        }


def live_batch(win: Dict[str, torch.Tensor], streamer_rows: torch.Tensor) -> LiveBatch:
    b, n = win["segment"].shape
    ones = torch.ones(b, n, dtype=torch.bool)
    return LiveBatch(
        sparse_features=make_id_features({"streamer_id": streamer_rows, "live_id": torch.zeros_like(streamer_rows)}),
        visual=win["visual"], text=win["text"], counters=win["counters"], labels=torch.zeros(b, n),
        label_mask=ones, score_mask=ones, valid=ones, segment=win["segment"], timestamp=win["timestamp"],
        streamer_raw=streamer_rows.clone(), live_raw=torch.zeros_like(streamer_rows), observed=win["observed"],
    )


# -------------------------------------------------------------------------------------------- bench


def _timed(fn: Callable[[], Any]) -> tuple:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_preset(preset: str, spec: BatchSpec, rooms: int, ticks: int, chunk: int, args: argparse.Namespace) -> Dict[str, Any]:
    n = WINDOW
    inference = build_inference(preset, spec, args.use_counters, args.seed)
    cfg = inference.config
    d = inference.d
    t_first = n  # ticks 0 .. n-1 fill every room's window
    chunk = chunk if 0 < chunk < rooms else 0  # the chunked variants (0: none)
    t_flop = t_first + ticks * (2 if chunk else 1)  # the tick counted with FlopCounterMode and checked against the full window
    t_prof = t_flop + 1  # one more for the profiler
    data = Rooms(spec, rooms, t_prof + 1, args.unknown_frac, args.seed + 1)
    win = data.window(t_flop)
    streamer_rows, known = inference.lookup(torch.from_numpy(data.streamer_id))
    lengths = torch.full((rooms,), n, dtype=torch.int64)
    batch = live_batch(win, streamer_rows) if args.train_forward else None
    scorer = StreamingScorer(inference, initial_capacity=rooms, max_batch=args.max_batch)

    def stream_tick(t: int, max_batch: int) -> Any:
        scorer.max_batch = max_batch  # a plain attribute, read by every tick
        try:
            return scorer.tick(data.tick(t))
        finally:
            scorer.max_batch = args.max_batch

    def full(sub: slice = slice(None)) -> torch.Tensor:
        w = {k: v[sub] for k, v in win.items()}
        return inference.window_logits(
            w["visual"], w["text"], w["counters"], w["observed"], w["timestamp"], w["segment"], streamer_rows[sub], lengths[sub]
        )

    def full_chunked() -> torch.Tensor:
        return torch.cat([full(slice(lo, lo + chunk)) for lo in range(0, rooms, chunk)])

    def train_forward() -> torch.Tensor:
        return inference.model(batch)

    # stand-ins for the parts of the streaming tick, on the same shapes (for the breakdown)
    x_flop = check_closed_segments(data.tick(t_flop), scorer.shape, scorer.reads_counters)
    ring_buf = torch.randn(rooms, n, d)
    slots = torch.randperm(rooms, generator=torch.Generator().manual_seed(3))
    count = torch.full((rooms,), t_flop + 1, dtype=torch.int64)
    ring = ((count - n)[:, None] + torch.arange(n)[None, :]) % n
    window_e_p = torch.randn(rooms, n, d)
    flat = {k: v.reshape(rooms * n, *v.shape[2:]) for k, v in win.items()}
    flat_rows = streamer_rows.repeat_interleave(n)

    def encode_one(sub: slice = slice(None)) -> torch.Tensor:
        x = {k: v[sub] for k, v in x_flop.items()}
        return inference.encode_segments(x["visual"], x["text"], x["counters"], x["observed"], x["timestamp"], x["segment"], streamer_rows[sub])

    def gather() -> torch.Tensor:
        ring_buf[slots, count % n] = window_e_p[:, 0]
        return ring_buf[slots[:, None], ring]

    def decode(sub: slice = slice(None)) -> torch.Tensor:
        return inference.decode_logits(window_e_p[sub], lengths[sub], x_flop["observed"][sub])

    def encode_window() -> torch.Tensor:
        f = flat
        return inference.encode_segments(f["visual"], f["text"], f["counters"], f["observed"], f["timestamp"], f["segment"], flat_rows)

    def validate() -> Any:
        return check_closed_segments(data.tick(t_flop), scorer.shape, scorer.reads_counters)

    result: Dict[str, Any] = {
        "preset": preset, "d": d, "layers": [cfg.n_perceiver_layers, cfg.n_decoder_layers],
        "heads": [cfg.n_heads, cfg.d_head], "use_counters": bool(cfg.use_counters), "rooms": rooms, "window": n, "ticks": ticks,
        "max_batch": args.max_batch, "chunk": chunk,
        "unknown_streamer_rooms": int((~known).sum()), "params": sum(p.numel() for p in inference.model.parameters()),
    }
    with torch.inference_mode():
        warm_times = []
        for t in range(t_first):  # fill the windows (this also warms the streaming path's kernels)
            _, dt = _timed(lambda: scorer.tick(data.tick(t)))
            warm_times.append(dt)
        names = ["streaming", "full_window"] + (["streaming_chunked", "full_window_chunked"] if chunk else []) + (
            ["train_forward"] if batch is not None else []
        ) + ["validate", "encode_1", "gather", "decode", "encode_n"]
        times: Dict[str, List[float]] = {k: [] for k in names}
        full_logits = train_logits = None
        probes: List[Dict[str, float]] = []
        t = t_first
        for k in range(ticks):  # round-robin, so load from other processes hits every path alike
            times["streaming"].append(_timed(lambda: stream_tick(t, args.max_batch))[1])
            t += 1
            full_logits, dt = _timed(full)
            times["full_window"].append(dt)
            if chunk:
                times["streaming_chunked"].append(_timed(lambda: stream_tick(t, chunk))[1])
                t += 1
                times["full_window_chunked"].append(_timed(full_chunked)[1])
            if batch is not None:
                train_logits, dt = _timed(train_forward)
                times["train_forward"].append(dt)
            for key, fn in (("validate", validate), ("encode_1", encode_one), ("gather", gather), ("decode", decode), ("encode_n", encode_window)):
                times[key].append(_timed(fn)[1])
            probes.append(small_op_latency(torch.get_num_threads(), reps=20))
        med = {k: statistics.median(v) for k, v in times.items()}
        gemm = gemm_rate(args.gemm_size, args.gemm_reps)
        nth = torch.get_num_threads()
        latency = {"threads": nth, "per_round_us": [pr[f"{nth}_threads"] for pr in probes], "one_thread_us": statistics.median(pr["1_threads"] for pr in probes)}

        # the next tick, counted with FlopCounterMode, is the one the full window (win) holds: correctness check
        stream_scores, f_stream = count_flops(lambda: stream_tick(t_flop, args.max_batch))
        diff = float(np.abs(stream_scores.logit - full_logits.float().numpy()).max())
        # FLOPs are linear in the rooms: count the stateless paths on a few rooms
        fr = min(rooms, args.flop_rooms)
        sub = slice(0, fr)
        f_full = count_flops(lambda: full(sub))[1] * rooms / fr
        f_enc1 = count_flops(lambda: encode_one(sub))[1] * rooms / fr
        f_dec = count_flops(lambda: decode(sub))[1] * rooms / fr
        train_diff = f_train = None
        if batch is not None:
            train_diff = float(np.abs(stream_scores.logit - train_logits[:, -1].float().numpy()).max())
            small_batch = live_batch({k: v[sub] for k, v in win.items()}, streamer_rows[sub])
            f_train = count_flops(lambda: inference.model(small_batch))[1] * rooms / fr
        profile = None
        if args.profile:
            profile = profile_tick(scorer, data.tick(t_prof), args.profile_rows)

    ana = analytic_flops(cfg, spec, n)
    per_room = {
        "streaming": f_stream / rooms, "full_window": f_full / rooms, "encode_1": f_enc1 / rooms, "decode": f_dec / rooms,
    }
    if f_train is not None:
        per_room["train_forward"] = f_train / rooms
    paths = {}
    for key in ("streaming", "streaming_chunked", "full_window", "full_window_chunked", "train_forward"):
        if key not in med:
            continue
        base = key.replace("_chunked", "")
        sec = med[key]
        achieved = per_room[base] * rooms / sec / 1e9
        paths[key] = {
            "ms_per_tick": sec * 1e3, "rooms_per_s": rooms / sec, "flops_per_room": per_room[base], "analytic_flops_per_room": ana[base],
            "gflop_per_s": achieved, "fraction_of_gemm": achieved / gemm, "min_ms": min(times[key]) * 1e3, "max_ms": max(times[key]) * 1e3,
        }
    stream_ms = med["streaming"]
    model_parts = med["encode_1"] + med["gather"] + med["decode"]
    result.update(
        paths=paths,
        speedup=med["full_window"] / med["streaming"],
        speedup_chunked=(med["full_window_chunked"] / med["streaming_chunked"]) if chunk else None,
        speedup_best=(min(med["full_window"], med.get("full_window_chunked", math.inf)) / min(med["streaming"], med.get("streaming_chunked", math.inf))),
        speedup_train_forward=(med["train_forward"] / med["streaming"]) if "train_forward" in med else None,
        target=TARGETS.get(preset),
        flop_ratio=f_full / f_stream,
        gemm_gflop_per_s=gemm,
        bytes_per_room=scorer.bytes_per_room,
        warmup_tick_ms_median=statistics.median(warm_times) * 1e3,
        breakdown_ms={
            "validate": med["validate"] * 1e3, "encode_1": med["encode_1"] * 1e3, "gather": med["gather"] * 1e3,
            "decode": med["decode"] * 1e3, "rest": (stream_ms - model_parts - med["validate"]) * 1e3, "tick": stream_ms * 1e3,
            "full_encode_n": med["encode_n"] * 1e3, "full_rest": (med["full_window"] - med["encode_n"]) * 1e3,
        },
        small_op_latency_us=latency,
        breakdown_flops_per_room={"encode_1": per_room["encode_1"], "decode": per_room["decode"],
                                  "analytic_encode_1": ana["encode_per_segment"], "analytic_decode": ana["decode_last"]},
        component_bound_speedup=(med["encode_n"] + med["decode"]) / (med["encode_1"] + med["decode"]),
        max_abs_logit_diff=diff,
        max_abs_logit_diff_train_forward=train_diff,
        profile=profile,
    )
    return result


def profile_tick(scorer: StreamingScorer, records: ClosedSegments, rows: int) -> List[Dict[str, Any]]:
    """Top operators (self CPU time) of one streaming tick."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        scorer.tick(records)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {"op": e.key, "calls": int(e.count), "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total}
        for e in events[:rows]
    ]


# -------------------------------------------------------------------------------------------- GPU


def bench_gpu(spec: BatchSpec, args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """paper preset, ``--gpu-rooms`` rooms in one tick, bf16 autocast, on CUDA (None without CUDA).

    ``--gpu-dry-run`` runs the same code on the CPU (with a few rooms: ``--gpu-rooms 2000``) to check
    it where no GPU is; its figures mean nothing."""
    dry = bool(args.gpu_dry_run)
    if not dry and not torch.cuda.is_available():
        print(f"GPU: torch.cuda.is_available() is False here: the {args.gpu_rooms:,d}-room bf16 paper tick (target < {GPU_TARGET_S:.0f} s) was not measured")
        return None
    rooms = args.gpu_rooms
    dev = torch.device("cpu") if dry else torch.device("cuda")
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    name = torch.cuda.get_device_name(dev) if cuda else "CPU (--gpu-dry-run: checks the code path, the figures mean nothing)"
    out: Dict[str, Any] = {"device": name, "rooms": rooms, "preset": "paper", "autocast": "bfloat16", "max_batch": args.gpu_max_batch}
    scorer = inference = None
    try:
        inference = build_inference("paper", spec, args.use_counters, args.seed).to(dev)
        scorer = StreamingScorer(inference, autocast_dtype=torch.bfloat16, max_batch=args.gpu_max_batch, initial_capacity=rooms)
        rng = np.random.default_rng(args.seed)
        g = torch.Generator().manual_seed(args.seed)
        live = (50_000_000 + np.arange(rooms)).astype(np.int64)
        streamer = rng.integers(VOCAB_BASE, VOCAB_BASE + N_STREAMERS, size=rooms).astype(np.int64)
        # the service hands CPU arrays; one set of features serves every tick (values do not change the cost),
        # segment and timestamp advance so each tick is the next segment of every room
        visual = torch.randn(rooms, spec.visual_tokens, spec.visual_dim, generator=g)
        text = torch.randn(rooms, spec.text_dim, generator=g)
        counters = torch.randint(0, 500, (rooms, spec.n_counters), generator=g).float()
        observed = torch.rand(rooms, generator=g)
        no_label = torch.full((rooms,), -1.0)

        def records(t: int) -> ClosedSegments:
            seg = np.full(rooms, t, np.int64)
            return ClosedSegments(live_id=live, streamer_id=streamer, segment=seg, timestamp=1_700_000_000 + 30 * seg,
                                  visual=visual, text=text, counters=counters, observed=observed if t >= LABEL_DELAY else no_label)

        def one_tick(t: int) -> float:
            recs = records(t)
            sync()
            t0 = time.perf_counter()
            scores = scorer.tick(recs)  # ends with the logits copied to the host
            sync()
            dt = time.perf_counter() - t0
            if len(scores.logit) != rooms or not np.isfinite(scores.logit).all():
                raise RuntimeError(f"tick {t}: {len(scores.logit)} scores for {rooms} rooms, finite: {bool(np.isfinite(scores.logit).all())}")
            return dt

        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        warm = [one_tick(t) for t in range(args.gpu_warm_ticks)]  # fills the windows (and warms the kernels)
        timed = [one_tick(args.gpu_warm_ticks + k) for k in range(max(1, args.gpu_ticks))]
        med = statistics.median(timed)
        flops = analytic_flops(inference.config, spec)["streaming"] * rooms
        out.update(
            warm_ticks=args.gpu_warm_ticks, warm_tick_s=warm, tick_s=timed, tick_s_median=med, rooms_per_s=rooms / med,
            target_s=GPU_TARGET_S, met=med < GPU_TARGET_S, analytic_tflop_per_tick=flops / 1e12, tflop_per_s=flops / med / 1e12,
            peak_memory_gib=(torch.cuda.max_memory_allocated(dev) / 2**30) if cuda else None, bytes_per_room=scorer.bytes_per_room,
            rooms_held=scorer.rooms,
        )
        mem = f"; peak GPU memory {out['peak_memory_gib']:.1f} GiB" if cuda else ""
        print(
            f"GPU {name}: paper preset, {rooms:,d} rooms in one tick, bf16 autocast, max_batch {args.gpu_max_batch:,d}, "
            f"after {args.gpu_warm_ticks} warm-up ticks: {med:.3f} s per tick (median of {len(timed)}; min {min(timed):.3f}, "
            f"max {max(timed):.3f}) vs target < {GPU_TARGET_S:.0f} s [{'met' if out['met'] else 'MISSED'}]; {out['rooms_per_s']:,.0f} rooms/s; "
            f"{out['tflop_per_s']:.1f} TFLOP/s (analytic matmul FLOPs); ring buffers {rooms * scorer.bytes_per_room / 2**30:.1f} GiB{mem}"
            + (f"; first warm-up tick {warm[0]:.2f} s" if warm else "")
        )
    except Exception as exc:  # noqa: BLE001 - a bench reports, it does not abort (e.g. CUDA out of memory)
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"GPU: the {rooms:,d}-room paper tick failed: {out['error'][:500]} (try a smaller --gpu-max-batch or --gpu-rooms)")
    finally:
        del scorer, inference
        if cuda:
            torch.cuda.empty_cache()
    return out


# -------------------------------------------------------------------------------------------- report


def print_preset(r: Dict[str, Any]) -> None:
    p = r["paths"]
    print(
        f"\n== {r['preset']}: d = {r['d']}, {r['layers'][0]} Perceiver + {r['layers'][1]} decoder layers, {r['heads'][0]} heads of "
        f"{r['heads'][1]}, {r['params']:,d} params; {r['rooms']:,d} rooms ({r['unknown_streamer_rooms']} with an unknown streamer), "
        f"n = {r['window']}, {r['ticks']} timed ticks after {r['window']} warm-up ticks"
    )
    print(f"{'path':32s} {'ms/tick':>9s} {'(min..max)':>17s} {'rooms/s':>10s} {'MFLOP/room':>11s} {'(analytic)':>11s} {'GFLOP/s':>8s} {'of GEMM':>8s}")
    chunk = r["chunk"]
    labels = {
        "streaming": f"streaming (StreamingScorer{', max_batch ' + format(r['max_batch'], ',d') if r['max_batch'] < r['rooms'] else ''})",
        "streaming_chunked": f"streaming, max_batch {chunk}",
        "full_window": "full window (window_logits)",
        "full_window_chunked": f"full window, {chunk} rooms/call",
        "train_forward": "train fwd (ContentCTR, all n)",
    }
    for key, label in labels.items():
        if key not in p:
            continue
        x = p[key]
        print(
            f"{label:32s} {x['ms_per_tick']:9.1f} {'(' + format(x['min_ms'], '.1f') + '..' + format(x['max_ms'], '.1f') + ')':>17s} "
            f"{x['rooms_per_s']:10,.0f} {x['flops_per_room'] / 1e6:11.2f} {x['analytic_flops_per_room'] / 1e6:11.2f} "
            f"{x['gflop_per_s']:8.1f} {100 * x['fraction_of_gemm']:7.1f}%"
        )
    target = r["target"]
    verdict = ""
    if target is not None:
        verdict = f"target >= {target:.1f}x: " + ("met" if r["speedup"] >= target else f"MISSED by {target / r['speedup']:.2f}x")
    print(
        f"speed-up full / streaming: {r['speedup']:.2f}x ({verdict}); FLOP ratio {r['flop_ratio']:.2f}x; "
        f"bound from the components (encode n + decode) / (encode 1 + decode): {r['component_bound_speedup']:.2f}x"
        + (f"; train fwd / streaming {r['speedup_train_forward']:.2f}x" if r["speedup_train_forward"] else "")
    )
    if r["speedup_chunked"] is not None:
        print(f"speed-up with both in chunks of {chunk} rooms: {r['speedup_chunked']:.2f}x; fastest full / fastest streaming: {r['speedup_best']:.2f}x")
    print(f"GEMM (fp32 2048x2048 matmul, this run): {r['gemm_gflop_per_s']:.1f} GFLOP/s; streaming state {r['bytes_per_room']:,d} bytes/room "
          f"({r['bytes_per_room'] * 1e6 / 2**30:.2f} GiB per million rooms)")
    lat = r["small_op_latency_us"]
    nth, per_round, one = lat["threads"], lat["per_round_us"], lat["one_thread_us"]
    line = "small-op latency (median add of 128x512 fp32, probed once per round): " + ", ".join(f"{x:.0f}" for x in per_round) + f" us with {nth} threads"
    if nth > 1:
        line += f", {one:.0f} us with 1"
        bad = sum(x > 10 * one + 50 for x in per_round)
        if bad:
            line += (f" -- OVERSUBSCRIBED in {bad} of {len(per_round)} rounds: the threads share cores with other processes, every "
                     "parallel op waits for a descheduled thread (a scheduler slice); small-op paths (streaming) suffer most: "
                     "rerun when idle or with --threads 1")
    print(line)
    b, fl = r["breakdown_ms"], r["breakdown_flops_per_room"]
    tick = b["tick"]
    print("streaming tick breakdown (each part timed on its own, same shapes as the one-batch tick; 'rest' = tick - parts: "
          "scorer book-keeping, id search, copies; noise can make it negative):")
    for key, label, flops in (
        ("validate", "validate inputs (check_closed_segments)", None),
        ("encode_1", "encode 1 segment/room (encode_segments)", fl["encode_1"]),
        ("gather", "ring buffer write + window gather", None),
        ("decode", f"decode {r['layers'][1] - 1} full + last layer (decode_logits)", fl["decode"]),
        ("rest", "rest", None),
    ):
        extra = f"  {flops / 1e6:8.2f} MFLOP/room" if flops is not None else ""
        print(f"    {label:52s} {b[key]:8.1f} ms {100 * b[key] / tick:5.1f}%{extra}")
    print(f"    full window: encode {r['window']} segments/room {b['full_encode_n']:.1f} ms, decode + rest {b['full_rest']:.1f} ms "
          f"(analytic MFLOP/room: encode 1 segment {fl['analytic_encode_1'] / 1e6:.2f}, decode {fl['analytic_decode'] / 1e6:.2f})")
    line = f"correctness: max |streaming logit - full-window logit| = {r['max_abs_logit_diff']:.2e} over {r['rooms']:,d} rooms"
    if r["max_abs_logit_diff_train_forward"] is not None:
        line += f"; vs train fwd newest position {r['max_abs_logit_diff_train_forward']:.2e}"
    print(line + (" (ok: <= 1e-4)" if r["max_abs_logit_diff"] <= 1e-4 else " (LARGER THAN EXPECTED ~1e-5)"))
    if r["profile"]:
        print("torch.profiler, one streaming tick, top operators by self CPU time:")
        for e in r["profile"]:
            print(f"    {e['op'][:52]:52s} {e['calls']:5d} calls {e['self_ms']:8.1f} ms {100 * e['share']:5.1f}%")


def _allowed_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small,paper"], help="comma- or space-separated: small, paper")
    parser.add_argument("--rooms", type=int, default=4096, help="rooms per tick, small preset")
    parser.add_argument("--paper-rooms", type=int, default=256, help="rooms per tick, paper preset")
    parser.add_argument("--ticks", type=int, default=5, help="timed ticks (after the n = 20 warm-up ticks)")
    parser.add_argument("--paper-ticks", type=int, default=3, help="timed ticks, paper preset")
    parser.add_argument("--visual-tokens", type=int, default=1)
    parser.add_argument("--visual-dim", type=int, default=64, help="64: synthetic world; 512: KLive-like image features")
    parser.add_argument("--text-dim", type=int, default=64, help="64: synthetic world; 768: KLive-like text features")
    parser.add_argument("--use-counters", action="store_true", help="models with the engagement token (use_counters=True)")
    parser.add_argument("--unknown-frac", type=float, default=0.05, help="share of rooms whose streamer is not in the vocabulary")
    parser.add_argument("--threads", type=int, default=_allowed_cpus(), help="torch.set_num_threads (default: the CPUs this process may use)")
    parser.add_argument("--no-train-forward", dest="train_forward", action="store_false", help="skip the ContentCTR.forward(LiveBatch) timing")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators of one streaming tick")
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--max-batch", type=int, default=1024, help="StreamingScorer max_batch of the main streaming row (1,024: the library default on a CPU)")
    parser.add_argument("--chunk", type=int, default=1024, help="small: also time both paths in chunks of this many rooms (0: not)")
    parser.add_argument("--paper-chunk", type=int, default=64, help="the same for paper")
    parser.add_argument("--flop-rooms", type=int, default=32, help="rooms the stateless paths' FLOPs are counted on (FLOPs are linear in rooms)")
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--gemm-reps", type=int, default=3)
    parser.add_argument("--gpu-rooms", type=int, default=1_000_000)
    parser.add_argument("--gpu-warm-ticks", type=int, default=WINDOW, help="ticks before the timed ones (n = 20 fills every window)")
    parser.add_argument("--gpu-ticks", type=int, default=3)
    parser.add_argument("--gpu-max-batch", type=int, default=65_536, help="StreamingScorer max_batch on the GPU")
    parser.add_argument("--no-gpu", dest="gpu", action="store_false")
    parser.add_argument("--gpu-dry-run", action="store_true", help="run the GPU section's code on the CPU (with a small --gpu-rooms) to check it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=str, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    presets = [p for item in args.presets for p in item.split(",") if p]
    torch.set_num_threads(max(1, args.threads))

    spec = BatchSpec(
        visual_tokens=args.visual_tokens, visual_dim=args.visual_dim, text_dim=args.text_dim, num_streamers=N_STREAMERS + 1,
        num_lives=2, n_counters=len(COUNTER_COLUMNS), window=WINDOW,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads ({_allowed_cpus()} CPUs allowed, load average {load:.1f}: "
        f"other processes slow every figure, compare ratios within this run); inference_mode, fp32, single process"
    )
    print(
        f"features: visual {args.visual_tokens} x {args.visual_dim}, text {args.text_dim}, {spec.n_counters} counters "
        f"(engagement token {'on' if args.use_counters else 'off'}); {N_STREAMERS} known streamers + {100 * args.unknown_frac:.0f}% unknown; "
        f"untrained weights (speed does not depend on them)"
    )
    print("FLOPs: torch.utils.flop_counter.FlopCounterMode, matmul-family ops + attention (2 per multiply-add); elementwise ops, "
          "LayerNorm, gathers and lookups not counted")
    results = []
    for preset in presets:
        rooms = args.paper_rooms if preset == "paper" else args.rooms
        ticks = args.paper_ticks if preset == "paper" else args.ticks
        r = bench_preset(preset, spec, rooms, ticks, args.paper_chunk if preset == "paper" else args.chunk, args)
        results.append(r)
        print_preset(r)
    print()
    gpu = bench_gpu(spec, args) if args.gpu else None
    if not args.gpu:
        print("GPU: skipped (--no-gpu)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"torch": torch.__version__, "threads": torch.get_num_threads(), "load_average_start": load,
                 "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                 "features": {"visual_tokens": args.visual_tokens, "visual_dim": args.visual_dim, "text_dim": args.text_dim,
                              "use_counters": args.use_counters},
                 "targets": {"speedup": TARGETS, "gpu_tick_s": GPU_TARGET_S},
                 "results": results, "gpu": gpu},
                fh, indent=2, default=str,
            )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
