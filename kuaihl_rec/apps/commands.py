"""The ``kuaihl`` commands: one ``cmd_*`` function per sub-command (``kuaihl_rec/apps/cli.py`` builds
the parser). Heavy libraries are imported inside the commands so ``kuaihl --help`` stays fast.

Every command checks what it was given (names, presets, ``--set`` keys and value types, paths that
must exist, ``--out`` that must be writable) before it loads data or makes a directory, and reports
a bad input as a :class:`UsageError` (``kuaihl`` exits 2 with one line naming it)."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from kuaihl_rec.apps.cli_checks import (
    UsageError,
    check_config_types,
    require_at_least,
    require_choice,
    require_path,
    require_split,
    require_writable,
)

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
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return stripped  # e.g. "a: b: c" -- not a YAML scalar, so the text itself


def _parse_overrides(pairs: Optional[Sequence[str]]) -> Dict[str, Any]:
    """``--set key=value`` pairs; values parsed by :func:`_parse_value` (numbers, booleans, lists)."""
    out: Dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value)
    return out


# ---------------------------------------------------------------------------------------------
# world


def cmd_world(args: argparse.Namespace) -> int:
    """``kuaihl world``: generate the synthetic world into ``--out``."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    cfg = load_world_config(preset=args.preset, path=args.config, **_parse_overrides(args.set))
    require_writable(args.out)
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
    """``kuaihl validate``: check a segment table against the contract (1 when it cannot be used)."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.io import atomic_write_json
    from kuaihl_rec.data.validate import validate_path

    require_path(args.path, "PATH", "a segment table directory or a .parquet file")
    require_at_least(args.min_viewers, "--min-viewers", 0)
    require_writable(args.json, "--json", directory=False)
    report = validate_path(args.path, min_viewers=args.min_viewers)
    print(report.format())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
        print(f"report: {args.json}")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------------------------------
# klive


def cmd_klive(args: argparse.Namespace) -> int:
    """``kuaihl klive``: convert a KLive release directory into a segment table."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.klive import convert_klive

    require_path(args.root, "ROOT", "a KLive release directory with live_id2aid.txt, train/ and test/")
    require_writable(args.out)
    out = convert_klive(args.root, args.out)
    print(f"segment table: {out}")
    return 0


# ---------------------------------------------------------------------------------------------
# extract


def _extract_device(device: str) -> str:
    """``--device`` of ``kuaihl extract``: ``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UsageError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device here (use --device cpu or auto)")
    return device


def cmd_extract(args: argparse.Namespace) -> int:
    """``kuaihl extract``: raw frames + ASR + comments -> visual / text feature columns."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.encoders import PRESETS
    from kuaihl_rec.extract import run_extract

    require_path(args.input, "INPUT", "a segment table with frame_paths, asr_text and comment_text")
    require_choice(args.preset, "--preset", PRESETS, "encoder preset")
    require_path(args.vision_checkpoint, "--vision-checkpoint", "a timm Swin checkpoint (.pth/.safetensors)")
    if args.text_model != "minilm":
        require_path(args.text_model, "--text-model", "'minilm' or a local transformers model directory")
    require_at_least(args.batch_size, "--batch-size")
    require_writable(args.out)
    summary = run_extract(
        args.input,
        args.out,
        preset=args.preset,
        vision_checkpoint=args.vision_checkpoint,
        text_model=args.text_model,
        batch_size=args.batch_size,
        progress=not args.quiet,
        device=_extract_device(args.device),
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------------------------
# train / eval


def _checked_train_config(args: argparse.Namespace) -> Any:
    """The training config of ``kuaihl train`` with every name, key and value checked (a
    :class:`UsageError` naming the first bad one): preset, model, ``--set`` keys and value types,
    the model's overrides and the loss preset."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.losses import LOSS_PRESETS
    from kuaihl_rec.model.registry import list_models, model_overrides
    from kuaihl_rec.train.config import TRAIN_PRESETS, TrainConfig, train_config

    require_choice(args.preset, "--preset", TRAIN_PRESETS, "training preset")
    require_choice(args.model, "MODEL", list_models(), "model (see `kuaihl models`)")
    # --set a.b=c paths of the config tree (kuaihl_rec/train/config.py): data.stride=8, optim.lr=1e-3,
    # model.use_counters=true (a model key: model.overrides.use_counters), epochs=2
    changes = _parse_overrides(args.set)
    check_config_types(TrainConfig, changes)
    if args.loss:
        changes["loss"] = args.loss
    try:
        cfg = train_config(args.preset, changes, model=args.model)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"--set: {exc.args[0] if exc.args else exc}") from exc
    require_choice(cfg.model.name, "--set model.name", list_models(), "model (see `kuaihl models`)")
    valid = model_overrides(cfg.model.name)
    unknown = sorted(set(cfg.overrides) - set(valid))
    if unknown:
        raise UsageError(
            f"--set model.{unknown[0]}: model {cfg.model.name!r} has no override {unknown[0]!r}; "
            f"expected one of {', '.join(valid)}"
        )
    if cfg.loss is not None:
        require_choice(cfg.loss, "--loss", LOSS_PRESETS, "loss preset")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    """``kuaihl train``: train a registered model (checked config first; single process or torchrun)."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.train.loop import train

    cfg = _checked_train_config(args)
    require_path(args.data, "--data", "a segment table directory (make one with `kuaihl world --out DIR`)")
    require_writable(args.out)
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite: choose one (continue the run in --out, or replace it)")
    if args.resume and not (Path(args.out) / "config.json").exists():
        raise UsageError(f"--resume: {args.out} holds no earlier run to continue (no config.json); drop --resume")
    summary = train(
        Path(args.data), Path(args.out), cfg, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite
    )
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        validation = summary.get("validation", "tau_b")
        shown = {
            "none": "no validation: the data has no val rooms",
            "undefined": "validation tau-b undefined (constant labels?)",
        }.get(validation) or f"best val tau-b {summary['best_val_tau']:.4f}"
        print(f"run: {args.out} ({shown} after {summary['epochs']} epoch(s), {summary['steps']} steps)")
        print(
            f"model: {Path(args.out) / 'model.pt'}  curves: {Path(args.out) / 'loss_curve.png'}  metrics: "
            f"{Path(args.out) / 'metrics.jsonl'}"
        )
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``kuaihl eval``: score a finished run on a split, next to the two reference rows."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.metrics import REPORTED_METRICS
    from kuaihl_rec.train.evaluate import evaluate_run

    require_split(args.split)
    require_path(args.run, "RUN", "a finished `kuaihl train` run directory")
    require_path(args.data, "--data", "a segment table directory")
    require_writable(args.json, "--json", directory=False)
    require_writable(args.predictions, "--predictions", directory=False)
    result = evaluate_run(
        Path(args.run),
        Path(args.data),
        args.split,
        json_out=args.json,
        predictions_out=args.predictions,
        progress=not args.quiet,
    )
    keys = ["n_segments", *REPORTED_METRICS, "tau_warm", "tau_cold", "n_segments_warm", "n_segments_cold"]
    prev, last = result["reference"]["previous_segment_label"], result["reference"]["last_complete_label"]
    print(f"{'metric':<22}{'model':>10}{'previous label':>16}{'last complete label':>21}")
    for k in keys:
        fmt = (lambda v: f"{v:d}") if k.startswith("n_segments") else (lambda v: f"{v:.4f}")
        print(f"{k:<22}{fmt(result[k]):>10}{fmt(prev[k]):>16}{fmt(last[k]):>21}")
    source = result["cold_start_source"]
    slices = ("warm / cold: not available (hashed streamer ids and no truth sidecar)" if source == "none"
              else f"warm / cold: streamers seen / not seen in training (from the {source})")
    print(
        "previous label: the segment before the target (LVTR: not yet known when the target is scored); "
        f"last complete label: the freshest label known then (WindowConfig.label_delay); {slices}"
    )
    for label, path in (("json", args.json), ("predictions", args.predictions)):
        if path:
            print(f"{label}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# compare


def _lr_grid(text: str) -> tuple:
    """``--lr-grid 1e-3,3e-3`` as a tuple of positive floats."""
    try:
        grid = tuple(float(x) for x in text.split(","))
    except ValueError:
        grid = ()
    if not grid or min(grid) <= 0:
        raise UsageError(f"--lr-grid {text!r}: expected comma-separated positive learning rates, e.g. 1e-3,3e-3")
    return grid


def cmd_compare(args: argparse.Namespace) -> int:
    """``kuaihl compare``: content models, variants and ID baselines on one budget -> report."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.apps.compare import CompareBudget, run_compare
    from kuaihl_rec.apps.compare_entries import entries_for

    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--jobs", args.jobs)):
        require_at_least(value, flag)
    changes = {k: v for k, v in (("seeds", args.seeds), ("epochs", args.epochs)) if v is not None}
    if args.lr_grid:
        changes["lr_grid"] = _lr_grid(args.lr_grid)
    budget = dataclasses.replace(CompareBudget(), **changes)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    try:
        entries_for(models)
    except KeyError as exc:
        raise UsageError(f"--models: {exc.args[0]}") from exc
    for data in args.data:
        require_path(data, "--data", "a world directory (make one with `kuaihl world --out DIR`)")
    require_writable(args.out)
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


def _parse_days(text: str) -> Any:
    """``--days``: "auto", "none" (None) or an integer >= 1."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        days = int(text)
    except ValueError:
        days = 0
    if days < 1:
        raise UsageError(f"--days {text!r}: expected 'auto', 'none' or an integer >= 1")
    return days


def cmd_ab(args: argparse.Namespace) -> int:
    """``kuaihl ab``: offline A/B test of a ranking change on a world's hidden truth."""
    days = _parse_days(args.days)
    require_at_least(args.users, "--users")
    require_path(args.world, "--world", "a world directory (make one with `kuaihl world --out DIR`)")
    require_path(args.config, "--config", "an arms config (YAML/JSON)")
    require_writable(args.out)
    # lazy: each command imports only what it runs (kuaihl --help must not load torch), after its checks
    from kuaihl_rec.train.evaluate import evaluate_run
    from ranking.experiment import run_ab
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
    """``kuaihl replay``: stream a world's rooms tick by tick through the streaming scorer."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.serving.replay import replay

    require_split(args.split)
    require_at_least(args.stop_after_ticks, "--stop-after-ticks")
    require_at_least(args.max_batch, "--max-batch")
    require_path(args.run, "RUN", "a finished `kuaihl train` run directory of a content model")
    require_path(args.world, "--world", "a world / segment table directory")
    require_writable(args.out)
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
    """``kuaihl export``: torch.export (+ AOTInductor) programs of a run's inference path."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.serving.export import export_run

    require_path(args.run, "RUN", "a finished `kuaihl train` run directory of a content model")
    require_writable(args.out)
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
    """``kuaihl models``: each registered model with its family, default loss, presets and description."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.model.config import CONTENT_PRESETS
    from kuaihl_rec.model.registry import list_models, model_info

    infos = [model_info(name) for name in list_models()]
    width = max(len(info.name) for info in infos)
    print(f"{'model':<{width}}  {'family':<11}  {'default loss':<18}  {'presets':<11}  description")
    for info in infos:
        presets = ", ".join(CONTENT_PRESETS) if "preset" in info.overrides else "-"
        print(f"{info.name:<{width}}  {info.family:<11}  {info.default_loss:<18}  {presets:<11}  {info.description}")
    print("presets: --set model.preset=NAME (content models); any other field: kuaihl_rec/model/config.py")
    return 0


# ---------------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    """``kuaihl demo``: the main job on the embedded default world, with a report."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.apps.demo import run_demo
    from kuaihl_rec.data.world_config import load_world_config

    load_world_config(preset=args.preset)  # an unknown preset is reported before anything is made
    require_at_least(args.users, "--users")
    require_writable(args.out)
    report = run_demo(
        out_dir=Path(args.out), preset=args.preset, progress=not args.quiet, quick=args.quick, n_users=args.users
    )
    print(f"report: {report}")
    return 0


# ---------------------------------------------------------------------------------------------
