"""Benchmark of the data path at scale: peak RSS per rank and windows/s, streaming vs in memory.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_scale.py                       # everything
    python bench/bench_scale.py --sizes 0.2 1 --what pass                           # a part
    python bench/bench_scale.py --rates-only                                        # windows/s only

Synthetic tables (bench/scale_tables.py; random content, labelled synthetic) of 0.2 M, 1 M and 5 M
segments with the ``small`` preset's feature sizes (1 x 64 visual, 64 text) are written once into
``--workdir``. For each size and each path (``memory``: the whole table per rank;
``stream``: per-rank streaming, ``stream.chunk_rows`` segments at a time), one subprocess each
(so its peak RSS is its own) runs

* ``pass``: one full pass of the data path over the training split (every batch of 48 windows
  built and dropped, no model);
* ``train``: 300 training steps of the ``small`` preset (its end-of-epoch validation included),
  then scoring the test split with the trained model.

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that subprocess (interpreter and
libraries included). Then windows/s of the data path alone (one epoch of batches of 48 built,
nothing else, one thread) for the small sizes (stride 4, the small preset) and the paper's (3 x 512 visual +
768 text per segment, stride 1, the paper preset), for: memory (copy), stream (copy), stream
(block: ``gather_on_device``, the windows gathered where the model runs; the gather itself is
timed separately on this CPU, on a GPU it runs on the device). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _cfg(path: str, preset: str = "small", **fields: Any):
    from kuaihl_rec.train.config import train_config

    changes = {"stream.enabled": path.startswith("stream"), "stream.gather_on_device": path == "stream-block"}
    return train_config(preset, changes, **fields)


def measure_pass(data: Path, path: str) -> Dict[str, Any]:
    """Every training batch of one epoch built and dropped."""
    from kuaihl_rec.train.data_path import epoch_batches, epoch_steps
    from kuaihl_rec.train.loop import load_run_data

    cfg = _cfg(path)
    t0 = time.perf_counter()
    run = load_run_data(data, cfg)
    t_load = time.perf_counter() - t0
    steps = epoch_steps(run.train, cfg.batch_size, cfg.seed, 0, 1)
    t0 = time.perf_counter()
    n = 0
    for batch in epoch_batches(run.train, cfg.batch_size, cfg.seed, 0, 0, 1, 0, steps):
        n += batch.batch_size
    seconds = time.perf_counter() - t0
    return {"load_s": round(t_load, 1), "pass_s": round(seconds, 1), "windows": n,
            "windows_per_s": round(n / max(seconds, 1e-9))}


def measure_train(data: Path, path: str, run_dir: Path) -> Dict[str, Any]:
    """300 steps of the small preset, then the test split scored once per target."""
    import torch

    from kuaihl_rec.metrics import evaluate_segments
    from kuaihl_rec.train.evaluate import evaluate_run, load_trained_model, stream_eval_split
    from kuaihl_rec.train.loop import plain_scorer, score_split, train

    cfg = _cfg(path, max_steps=300, epochs=1, checkpoint_every=0)
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = train(data, run_dir, cfg, progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    if path == "memory":
        result = evaluate_run(run_dir, data, "test", progress=False)
        n, tau = result["n_segments"], result["tau"]
    else:
        model, _ = load_trained_model(run_dir)
        split = stream_eval_split(run_dir, data, "test")
        scored = score_split(plain_scorer(model), split, 256, torch.device("cpu"))
        metrics = evaluate_segments(scored["label"], scored["score"], room_ids=scored["live_id"])
        n, tau = metrics["n_segments"], metrics["tau"]
    return {"train_s": round(t_train, 1), "steps": summary["steps"], "val_tau": summary["best_val_tau"],
            "test_s": round(time.perf_counter() - t0, 1), "test_segments": int(n), "test_tau": tau}


def measure_rate(data: Path, path: str, preset: str, batches: int) -> Dict[str, Any]:
    """Windows/s of the data path alone over one epoch's batches of 48 (``batches`` > 0: at most that many).

    Streaming runs without read-ahead here (``prefetch_chunks=0``), so its wall time is exactly
    chunk reading (Parquet decode + windowing, timed) plus batch building; ``build_windows_per_s``
    is the rate with the chunks already read, the figure comparable to the in-memory path's (whose
    whole-table read is ``load_s``, outside its rate)."""
    import torch

    from kuaihl_rec.train.data_path import epoch_batches, epoch_steps, global_batches
    from kuaihl_rec.train.loop import load_run_data

    torch.set_num_threads(1)
    cfg = _cfg(path.replace("memory-block", "memory"), preset, batch_size=48)
    if path.startswith("stream"):
        cfg = _cfg(path, preset, batch_size=48, stream={"prefetch_chunks": 0})
    t0 = time.perf_counter()
    run = load_run_data(data, cfg)
    out: Dict[str, Any] = {"load_s": round(time.perf_counter() - t0, 1)}
    steps = epoch_steps(run.train, 48, cfg.seed, 0, 1)
    steps = min(steps, batches) if batches > 0 else steps
    read = {"s": 0.0, "rows": 0}
    if path.startswith("stream"):
        load = run.train.load_chunk

        def timed(chunk: int):
            t = time.perf_counter()
            arr, index = load(chunk)
            read["s"] += time.perf_counter() - t
            read["rows"] += len(arr.live_id)
            return arr, index

        run.train.load_chunk = timed
    block = path.endswith("block")
    if path == "memory-block":  # the in-memory split in block form
        it = (run.train.batch(i, gather=True) for i in global_batches(run.train, 48, cfg.seed, 0, 0, 1)[:steps])
    else:
        it = epoch_batches(run.train, 48, cfg.seed, 0, 0, 1, 0, steps)
    t0 = time.perf_counter()
    kept: List[Any] = []
    n = 0
    for batch in it:
        n += batch.batch_size
        if block and len(kept) < 50:
            kept.append(batch)
    seconds = time.perf_counter() - t0
    out.update(windows=n, windows_per_s=round(n / seconds))
    if read["rows"]:
        sizes = run.train.catalog.sizes
        mb = read["rows"] * 4 * (sizes.visual_len + sizes.text_dim) / 1e6
        out.update(read_s=round(read["s"], 1), read_segments_per_s=round(read["rows"] / read["s"]),
                   read_feature_mb_per_s=round(mb / read["s"]),
                   build_windows_per_s=round(n / max(seconds - read["s"], 1e-9)))
    if block:  # the gather the model side does (here on the CPU: an upper bound of a GPU's cost)
        t0 = time.perf_counter()
        for batch in kept:
            batch.materialize()
        out["cpu_gather_windows_per_s"] = round(48 * len(kept) / (time.perf_counter() - t0))
    return out


def _child(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    data = Path(args.data)
    if args.what == "pass":
        out = measure_pass(data, args.path)
    elif args.what == "train":
        out = measure_train(data, args.path, Path(args.run_dir))
    else:
        out = measure_rate(data, args.path, args.preset, args.batches)
    out["peak_rss_mib"] = round(_peak_mib())
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def _spawn(*extra: str) -> Optional[Dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"  FAILED ({' '.join(extra)}): {proc.stderr.strip().splitlines()[-1:] if proc.stderr else ''}")
    return None


def _table(workdir: Path, name: str, segments: int, sizes) -> Path:
    from scale_tables import write_table

    out = workdir / name
    if not (out / "dataset.json").exists():
        t0 = time.perf_counter()
        rows, rooms = write_table(out, segments, sizes)
        size = sum(f.stat().st_size for f in out.rglob("*.parquet")) / 2**20
        print(f"wrote {out}: {rows} segments, {rooms} rooms, {size:.0f} MiB, {time.perf_counter() - t0:.0f} s")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/kuaihl_bench_scale")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.2, 1.0, 5.0], help="millions of segments")
    parser.add_argument("--what", nargs="+", default=["pass", "train"], choices=["pass", "train"])
    parser.add_argument("--paths", nargs="+", default=["memory", "stream"])
    parser.add_argument("--rates-only", action="store_true")
    parser.add_argument("--no-rates", action="store_true")
    parser.add_argument("--batches", type=int, default=0, help="batches timed for windows/s (0: one epoch)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="small", help=argparse.SUPPRESS)
    parser.add_argument("--rate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.what = "rate" if args.rate else args.what[0]
        return _child(args)
    from scale_tables import PAPER_SIZES, SMALL_SIZES

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not args.rates_only:
        print("peak RSS per rank (MiB), one subprocess each; synthetic tables, small feature sizes")
        for m in args.sizes:
            data = _table(workdir, f"small_{m:g}M", int(round(m * 1e6)), SMALL_SIZES)
            for what in args.what:
                for path in args.paths:
                    res = _spawn("--data", str(data), "--path", path, "--what", what,
                                 "--run-dir", str(workdir / f"run_{m:g}M_{path}"))
                    print(f"  {m:g} M segments  {what:5s}  {path:12s}  {json.dumps(res)}", flush=True)
    if not args.no_rates:
        print("windows/s of the data path alone (batch 48, one thread)")
        for preset, name, segments, sizes in (("small", "small_0.2M", 200_000, SMALL_SIZES),
                                              ("paper", "paper_40k", 40_000, PAPER_SIZES)):
            data = _table(workdir, name, segments, sizes)
            for path in ("memory", "stream", "memory-block", "stream-block"):
                res = _spawn("--data", str(data), "--path", path, "--rate", "--preset", preset,
                             "--batches", str(args.batches))
                print(f"  {preset:6s} sizes  {path:13s}  {json.dumps(res)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
