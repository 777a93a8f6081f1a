"""Benchmark of the synthetic world: time and peak memory to generate (and write) 1,000,000 segments.

    OMP_NUM_THREADS=1 python bench/bench_world.py                 # preset bench_1m, generation + write
    python bench/bench_world.py --preset default --no-write       # another preset, generation only

Prints figures; asserts nothing (the acceptance targets are < 60 s and < 4 GB peak RSS for 1M
segments on the 2-core CPU machine). Peak memory is the process's maximum resident set size
(``resource.getrusage``), which includes the interpreter and imported libraries; the baseline
RSS before generation is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bench_1m")
    parser.add_argument("--no-write", action="store_true", help="time generation only")
    parser.add_argument("--out", default=None, help="write here instead of a temporary directory")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    t_import = time.perf_counter()
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    t_import = time.perf_counter() - t_import
    cfg = load_world_config(args.preset)
    base_rss = _rss_mib()
    t0 = time.perf_counter()
    world = generate_world(cfg, progress=args.progress)
    t_gen = time.perf_counter() - t0
    gen_rss = _rss_mib()
    n = world.segments.num_rows
    results = {
        "preset": args.preset,
        "segments": n,
        "rooms": world.rooms.num_rows,
        "streamers": world.streamers.num_rows,
        "feature_floats_per_segment": world.sizes.visual_len + world.sizes.text_dim,
        "import_s": round(t_import, 2),
        "generate_s": round(t_gen, 2),
        "generate_segments_per_s": round(n / t_gen),
        "generate_stages_s": {k: round(v, 2) for k, v in world.timings.items()},
        "rss_before_generate_mib": round(base_rss),
        "peak_rss_after_generate_mib": round(gen_rss),
    }
    if not args.no_write:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(args.out) if args.out else Path(tmp) / "world"
            t1 = time.perf_counter()
            paths = write_world(world, out)
            results["write_s"] = round(time.perf_counter() - t1, 2)
            results["written_mib"] = round(
                sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 1
            )
            results["files"] = sorted(paths)
        results["generate_plus_write_s"] = round(results["generate_s"] + results["write_s"], 2)
    results["peak_rss_mib"] = round(_rss_mib())
    for key, value in results.items():
        print(f"{key:32s} {json.dumps(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
