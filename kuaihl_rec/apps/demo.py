"""``kuaihl demo``: the main job on the embedded default, end to end, with a report.

Stages (each timed, each writing its own outputs under ``OUT``):

1. world     generate the synthetic world (``OUT/world``: segment table, truth sidecar, figure)
2. validate  check the segment table against the data contract (``OUT/validation.json``)
3. windows   cut train/val/test windows, counting every masked target and dropped window
4. compare   train the papers' content model, ours (+ engagement token, pointwise loss) and the best
             ID baseline (small presets, one seed, two runs at a time) with the shared trainer,
             score the test rooms, frame them with the reference rows
             (``OUT/compare``: ``kuaihl compare``'s results.json, report.md, figures)
5. ab        offline A/B: control ranks by the observable CTR / LVTR terms, treatment adds the
             content model's score; sanity arms (A/A, placebo, oracle) and a weight sweep
             (``OUT/ab``: ``kuaihl ab``'s ab.json, report.md, figures)
6. report    ``OUT/report.md`` + ``OUT/demo_summary.json``

``quick=True`` stops after ``windows`` (used by tests). Everything on this path is synthetic data and
the report says so.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Dict

from kuaihl_rec.apps.compare import CompareBudget, run_compare
from kuaihl_rec.data.io import DataError, atomic_write_bytes, atomic_write_json
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits
from kuaihl_rec.data.world import (
    generate_world,
    load_world_config,
    summarize_world,
    write_world,
)
from ranking.experiment import run_ab

logger = logging.getLogger(__name__)


def _table(rows, header) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# the papers' content model, ours (engagement token + pointwise loss, see README), the best ID model
DEMO_MODELS = ("content", "content+engagement+point", "dcn_m")


def run_demo(out_dir: Path, preset: str = "default", progress: bool = True, quick: bool = False, n_users: int = 100_000) -> Path:
    """Run the demo chain into ``out_dir``; returns the path of ``report.md``."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings: Dict[str, float] = {}
    summary: Dict[str, Any] = {"data": "synthetic (kuaihl world)", "preset": preset}

    t0 = time.perf_counter()
    cfg = load_world_config(preset=preset)
    world = generate_world(cfg, progress=progress)
    world_paths = write_world(world, out_dir / "world")
    summary["world"] = summarize_world(world)
    timings["world"] = time.perf_counter() - t0
    logger.info("[1/5] world: %d segments in %.1f s -> %s", world.segments.num_rows, timings["world"], out_dir / "world")

    t0 = time.perf_counter()
    try:
        table, sizes, report = load_segments(out_dir / "world", min_viewers=cfg.min_viewers)
    except DataError:
        logger.error("the generated world failed validation; see %s", out_dir / "validation.json")
        raise
    atomic_write_json(out_dir / "validation.json", report.to_dict())
    timings["validate"] = time.perf_counter() - t0
    logger.info("[2/5] validate: ok in %.1f s", timings["validate"])

    t0 = time.perf_counter()
    wcfg = WindowConfig(window=20, stride=1, min_viewers=cfg.min_viewers)
    arr = SegmentArrays.from_table(table, sizes, wcfg)
    splits = window_splits(arr, wcfg)
    summary["windows"] = {name: s.stats.to_dict() for name, s in splits.items()}
    timings["windows"] = time.perf_counter() - t0
    logger.info("[3/5] windows: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))

    compare_lines: list = []
    ab_lines: list = []
    if not quick:

        t0 = time.perf_counter()
        budget = CompareBudget(epochs=3, seeds=1, lr_grid=(1e-3,))
        compare_report = run_compare([out_dir / "world"], out_dir / "compare", models=list(DEMO_MODELS), budget=budget, progress=progress, jobs=2)
        results = json.loads((out_dir / "compare" / "results.json").read_text())
        summary["compare"] = {k: {m: v["mean"] for m, v in r.items()} for k, r in results["worlds"]["world"]["models"].items()}
        summary["references"] = results["worlds"]["world"]["references"]
        timings["compare"] = time.perf_counter() - t0
        logger.info("[4/5] compare: %s in %.0f s -> %s", ", ".join(DEMO_MODELS), timings["compare"], compare_report)
        compare_lines = (out_dir / "compare" / "report.md").read_text().split("\n")[2:]
        compare_lines = [line.replace("](fig", "](compare/fig") for line in compare_lines]

        t0 = time.perf_counter()
        content_run = results["worlds"]["world"]["runs"]["content"][0]
        arms = {"terms": {"ctr": {"source": "cum_ctr", "calibrate": "auto", "missing": "carry"},
                          "lvtr": {"source": "cum_lvtr", "calibrate": "auto", "missing": "carry"},
                          "content": {"source": content_run, "calibrate": "auto", "missing": "carry"}}}
        ab = run_ab(out_dir / "world", out_dir / "ab", arms, n_users=n_users, seed=0, progress=progress)
        summary["ab"] = {k: ab[k] for k in ("srm", "sanity") if k in ab}
        timings["ab"] = time.perf_counter() - t0
        logger.info("[5/5] ab: %.0f s -> %s", timings["ab"], out_dir / "ab" / "report.md")
        ab_lines = [line.replace("](figures/", "](ab/figures/") for line in (out_dir / "ab" / "report.md").read_text().split("\n")[1:]]

    summary["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    summary["validation"] = report.to_dict()
    atomic_write_json(out_dir / "demo_summary.json", summary)

    ws = summary["world"]
    lines = [
        "# kuaihl demo report",
        "",
        f"All numbers below are on **synthetic data** (`kuaihl world --preset {preset}`), not on a real platform.",
        "",
        "## World",
        "",
        "```",
        report.format(),
        "```",
        "",
        "World summary (label statistics to compare with KLive's):",
        "",
        "```json",
        json.dumps(ws, indent=2, default=str),
        "```",
        "",
        f"![one room's timeline]({Path(world_paths['figure']).relative_to(out_dir)})" if "figure" in world_paths else "",
        "",
        "## Windows (n = 20, left-shifted labels, viewer filter)",
        "",
        _table(
            [
                [name, st["mode"], st["n_rooms"], st["n_windows"], st["n_targets"], st["targets_below_min_viewers"], st["windows_dropped_low_viewers"], st["n_scored_targets"]]
                for name, st in summary["windows"].items()
            ],
            ["split", "mode", "rooms", "windows", "targets", f"targets < {cfg.min_viewers} viewers (masked)", "windows dropped", "targets scored (eval)"],
        ),
        "",
        *(["## Content models vs ID baseline (test rooms, 1 seed, small presets)", "", f"Full report: `compare/report.md`.", ""] + compare_lines if compare_lines else []),
        *(["## Offline A/B (simulated feed on the test rooms)", "", "Full report: `ab/report.md`.", ""] + ab_lines if ab_lines else []),
        "## Timings",
        "",
        _table([[k, f"{v:.1f} s"] for k, v in timings.items()], ["stage", "time"]),
        "",
    ]
    report_path = out_dir / "report.md"
    atomic_write_bytes(report_path, "\n".join(lines).encode())
    return report_path
