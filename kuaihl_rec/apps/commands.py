"""The ``kuaihl`` commands: one ``cmd_*`` function per sub-command (``kuaihl_rec/apps/cli.py`` builds
the parser). Heavy libraries are imported inside the commands so ``kuaihl --help`` stays fast."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

logger = logging.getLogger("kuaihl")


def _parse_value(text: str) -> Any:
    """One ``--set`` value: an int or float as Python reads it (``1e-3`` too, which YAML 1.1
    would leave a string), else a YAML scalar / list (``true``, ``[1, 2]``, ``null``, strings)."""
    import yaml

    stripped = text.strip()
    for number in (int, float):
        try:
            return number(stripped)
        except ValueError:
            pass
    return yaml.safe_load(text)


def _parse_overrides(pairs: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``--set key=value`` pairs; values parsed by :func:`_parse_value` (numbers, booleans, lists)."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"kuaihl: --set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


# ---------------------------------------------------------------------------------------------
# world


def cmd_world(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    cfg = load_world_config(preset=args.preset, path=args.config, **_parse_overrides(args.set))
    t0 = time.perf_counter()
    world = generate_world(cfg, progress=not args.quiet)
    paths = write_world(world, args.out)
    logger.info("world generated in %.1f s: %d segments", time.perf_counter() - t0, world.segments.num_rows)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# validate


def cmd_validate(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.io import DataError, atomic_write_json
    from kuaihl_rec.data.validate import validate_path

    try:
        report = validate_path(args.path, min_viewers=args.min_viewers)
    except DataError as exc:
        print(f"kuaihl validate: {exc}", file=sys.stderr)
        return 1
    print(report.format())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"report: {args.json}")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------
# klive


def cmd_klive(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.klive import convert_klive

    out = convert_klive(args.root, args.out)
    print(f"segment table: {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# extract


def cmd_extract(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.extract import run_extract

    summary = run_extract(
        args.input,
        args.out,
        preset=args.preset,
        vision_checkpoint=args.vision_checkpoint,
        text_model=args.text_model,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------
# train / eval


def cmd_train(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    # --set a.b=c paths of the config tree (kuaihl_rec/train/config.py): data.stride=8, optim.lr=1e-3,
    # model.use_counters=true (a model key: model.overrides.use_counters), epochs=2
    changes = _parse_overrides(args.set)
    if args.loss:
        changes["loss"] = args.loss
    try:
        cfg = train_config(args.preset, changes, model=args.model)
    except ValueError as exc:
        raise SystemExit(f"kuaihl train: {exc}") from None
    summary = train(Path(args.data), Path(args.out), cfg, resume=args.resume, progress=not args.quiet)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        print(
            f"run: {args.out} (best val tau-b {summary['best_val_tau']:.4f} after {summary['epochs']} epoch(s), "
            f"{summary['steps']} steps)"
        )
        print(
            f"model: {Path(args.out) / 'model.pt'}  curves: {Path(args.out) / 'loss_curve.png'}  metrics: "
            f"{Path(args.out) / 'metrics.jsonl'}"
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.metrics import REPORTED_METRICS
    from kuaihl_rec.train.evaluate import evaluate_run

    result = evaluate_run(
        Path(args.run),
        Path(args.data),
        args.split,
        json_out=args.json,
        predictions_out=args.predictions,
        progress=not args.quiet,
    )
    keys = ["n_segments", *REPORTED_METRICS]
    prev, last = result["reference"]["previous_segment_label"], result["reference"]["last_complete_label"]
    print(f"{'metric':<22}{'model':>10}{'previous label':>16}{'last complete label':>21}")
    for k in keys:
        fmt = (lambda v: f"{v:d}") if k == "n_segments" else (lambda v: f"{v:.4f}")
        print(f"{k:<22}{fmt(result[k]):>10}{fmt(prev[k]):>16}{fmt(last[k]):>21}")
    print(
        "previous label: the segment before the target (LVTR: not yet known when the target is scored); "
        "last complete label: the freshest label known then (WindowConfig.label_delay)"
    )
    for label, path in (("json", args.json), ("predictions", args.predictions)):
        if path:
            print(f"{label}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# compare


def cmd_compare(args: argparse.Namespace) -> int:
    import dataclasses

    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.apps.compare import CompareBudget, run_compare

    budget = CompareBudget()
    changes = {k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs)) if v is not None}
    if args.lr_grid:
        changes["lr_grid"] = tuple(float(x) for x in args.lr_grid.split(","))
    budget = dataclasses.replace(budget, **changes)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    if args.jobs < 1:
        raise SystemExit(f"kuaihl compare: --jobs must be >= 1, got {args.jobs}")
    report = run_compare(
        [Path(d) for d in args.data],
        Path(args.out),
        models=models,
        budget=budget,
        progress=not args.quiet,
        jobs=args.jobs,
    )
    print(f"report: {report}\nresults: {Path(args.out) / 'results.json'}")
    return 0


# ---------------------------------------------------------------------------------------------
# ab


def cmd_ab(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.train.evaluate import evaluate_run
    from ranking.experiment import run_ab

    days: Any = args.days
    if days == "none":
        days = None
    elif days != "auto":
        days = int(days)
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from ranking.report import summary_lines

    # ranking never imports the trainer: a term naming a run directory is scored by evaluate_run, handed in here
    score_run = functools.partial(evaluate_run, progress=not args.quiet)
    result = run_ab(
        args.world,
        args.out,
        args.config,
        n_users=args.users,
        days=days,
        seed=args.seed,
        progress=not args.quiet,
        sweep=not args.no_sweep,
        score_run=score_run,
    )
    print("\n".join(summary_lines(result)))
    print(f"ab: {Path(args.out) / 'ab.json'}\nreport: {Path(args.out) / 'report.md'}")
    return 0 if result else 1


# ---------------------------------------------------------------------------------------------
# serving


def cmd_replay(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.serving.replay import replay

    if args.stop_after_ticks is not None and args.stop_after_ticks < 1:
        raise SystemExit(f"kuaihl replay: --stop-after-ticks must be >= 1, got {args.stop_after_ticks}")
    summary = replay(
        Path(args.run),
        Path(args.world),
        Path(args.out),
        split=args.split,
        max_batch=args.max_batch,
        stop_after_ticks=args.stop_after_ticks,
        resume=args.resume,
        progress=not args.quiet,
    )
    if "stopped_at_tick" in summary:
        print(
            f"stopped after tick {summary['stopped_at_tick']} of {summary['n_ticks']}; continue with --resume "
            f"(state: {summary['state']})"
        )
        return 0
    lat = summary["tick_latency_ms"]
    rpt = summary["rooms_per_tick"]
    print(
        f"ticks {summary['n_ticks']}  rooms per tick: mean {rpt['mean']:.1f}, max {rpt['max']}  segments scored "
        f"{summary['segments_scored']}"
    )
    print(
        f"rooms scored per second {summary['rooms_scored_per_second']:,.0f}  tick latency ms: p50 "
        f"{lat['p50']:.2f}, p90 {lat['p90']:.2f}, "
        f"p99 {lat['p99']:.2f}, max {lat['max']:.2f}"
    )
    sc = summary["scorer"]
    print(
        f"rooms {sc['rooms_started']} (unknown streamer: {sc['rooms_unknown_streamer']}, joined mid-stream: "
        f"{sc['rooms_joined_mid_stream']}), "
        f"state {summary['bytes_per_room']:,} bytes per room"
    )
    print(
        f"predictions: {summary['predictions']} ({summary['rows_written']} rows; "
        f"{summary['rows_without_target']} scores after a room's last segment not written)"
    )
    print(f"summary: {Path(args.out) / 'replay.json'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.serving.export import export_run

    manifest = export_run(Path(args.run), Path(args.out), aoti=not args.no_aoti)
    for name, prog in manifest["programs"].items():
        print(
            f"{name}: {Path(args.out) / prog['file']}  (checked, max |diff| {manifest['check_max_abs_diff'][name]:.1e})"
        )
    aoti = manifest["aoti"]
    if aoti.get("status") == "ok":
        print(
            f"aoti: {Path(args.out) / aoti['file']}  (compiled in {aoti['compile_seconds']} s, max |diff| "
            f"{aoti['max_abs_diff']:.1e})"
        )
    else:
        print(f"aoti: {aoti.get('status')} {aoti.get('error', '')}".rstrip())
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.model import list_models

    print("\n".join(list_models()))
    return 0


# ---------------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.apps.demo import run_demo

    report = run_demo(
        out_dir=Path(args.out), preset=args.preset, progress=not args.quiet, quick=args.quick, n_users=args.users
    )
    print(f"report: {report}")
    return 0


# ---------------------------------------------------------------------------------------------
