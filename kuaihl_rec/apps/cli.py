"""The ``kuaihl`` command line. Every command says where its outputs went.

    kuaihl world    --preset default --out DIR      generate the synthetic live-streaming world
    kuaihl validate PATH                            check a segment table against the contract (exit 1 if unusable)
    kuaihl klive    ROOT --out DIR                  convert a KLive release directory into a segment table
    kuaihl extract  INPUT --out DIR                 raw frames + ASR + comments -> feature columns
    kuaihl demo     [--out DIR]                     the main job on the embedded default, with a report
    kuaihl replay   RUN --world DIR --out OUT       stream a world's test rooms through the streaming scorer
    kuaihl export   RUN --out DIR                   torch.export (+ AOTInductor) programs of the inference path

Heavy libraries are imported inside the commands so ``kuaihl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

logger = logging.getLogger("kuaihl")


def _setup_logging(verbose: bool) -> None:
    """Our loggers at INFO (DEBUG with -v); everything else (torchrec, fbgemm) at WARNING."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("kuaihl", "kuaihl_rec", "baselines", "ranking"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # torchrec triggers a deprecation message from torch.fx at import time (see ENVIRONMENT.md).
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


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


def _add_data_commands(sub) -> None:
    """world, validate, klive, extract: the data contract."""
    p = sub.add_parser("world", help="generate the synthetic live-streaming world")
    p.add_argument(
        "--preset", default=None, help="named preset from kuaihl_rec/configs/world.yaml (default: 'default')"
    )
    p.add_argument("--config", default=None, help="a YAML world config (may name a base 'preset:')")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one knob, e.g. --set content_signal=0")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("validate", help="check a segment table; exit 1 when it cannot be used")
    p.add_argument("path")
    p.add_argument("--min-viewers", type=int, default=60)
    p.add_argument("--json", default=None, help="also write the report as JSON here")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("klive", help="convert a KLive release directory (live_id2aid.txt, train/, test/)")
    p.add_argument("root")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_klive)

    p = sub.add_parser("extract", help="raw frames + ASR + comments -> visual/text feature columns")
    p.add_argument("input", help="segment table with frame_paths, asr_text, comment_text")
    p.add_argument("--out", required=True)
    p.add_argument("--preset", default="swin_tiny", help="encoder preset")
    p.add_argument(
        "--vision-checkpoint", default=None, help="local timm Swin checkpoint (.pth/.safetensors); none = random init"
    )
    p.add_argument("--text-model", default="minilm", help="'minilm' (packaged) or a local transformers directory")
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=cmd_extract)


def _add_model_commands(sub) -> None:
    """train, eval, compare, models."""
    p = sub.add_parser("train", help="train a registered model (single process or under torchrun)")
    p.add_argument("model", help="registry name, e.g. content, kuaihl, wide_deep (see `kuaihl models`)")
    p.add_argument("--data", required=True, help="segment table directory")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--preset", default="small", help="training preset: small (CPU default), paper, tiny")
    p.add_argument("--loss", default=None, help="loss preset (default: the model's own)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set epochs=2 --set data.stride=8 --set model.d=32 --set optim.lr=3e-4",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="score a trained run on a split; tau-b, thresholds, AUC, log loss")
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--predictions", default=None, help="write one Parquet row per scored segment here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="content model, variants and ID baselines on one budget -> tables, figures")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="world directory (repeat for several worlds, e.g. default and no_content)",
    )
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--models", default=None, help="comma-separated registry names or rows (default: every row)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per entry (default 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 4)")
    p.add_argument(
        "--lr-grid", default=None, help="comma-separated learning rates searched per entry (default 1e-3,3e-3)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once in worker processes, each with cpu_count/jobs threads (default 1)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(func=cmd_models)


def _add_ranking_commands(sub) -> None:
    """ab: offline A/B of a ranking change."""
    p = sub.add_parser("ab", help="offline A/B test of a ranking change on the world's hidden truth")
    p.add_argument("--world", required=True, help="world directory (its test rooms are simulated)")
    p.add_argument("--out", required=True)
    p.add_argument(
        "--config", default=None, help="arms config (YAML/JSON): score terms, formulas, sweep; default: built-in"
    )
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--days", default="auto", help="'auto' (fold days until ~5 rooms are on air), an int, or 'none'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sweep", action="store_true", help="skip the weight sweep")
    p.set_defaults(func=cmd_ab)


def _add_serving_commands(sub) -> None:
    """replay, export: the serving path."""
    p = sub.add_parser("replay", help="stream a world's rooms tick by tick through the streaming scorer -> predictions")
    p.add_argument("run", help="a finished `kuaihl train` run of a content model")
    p.add_argument("--world", "--data", dest="world", required=True, help="world / segment table directory")
    p.add_argument("--out", required=True, help="output directory (predictions.parquet, replay.json)")
    p.add_argument("--split", default="test")
    p.add_argument(
        "--max-batch", type=int, default=None, help="rooms per forward pass (default: 1,024 on a CPU, 65,536 on a GPU)"
    )
    p.add_argument(
        "--stop-after-ticks", type=int, default=None, help="save the scorer state after this many ticks and stop"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted replay in --out from its saved state")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "export", help="torch.export programs (+ AOTInductor) of a run's inference path, with vocabulary and manifest"
    )
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--no-aoti", action="store_true", help="skip the AOTInductor compilation (about 30-60 s on a CPU)")
    p.set_defaults(func=cmd_export)


def _add_demo_command(sub) -> None:
    """demo: the main job on the embedded default."""
    p = sub.add_parser("demo", help="run the main job on the embedded default world, with a report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--preset", default="default", help="world preset")
    p.add_argument("--quick", action="store_true", help="stop after world -> validate -> windows (no training, no A/B)")
    p.add_argument("--users", type=int, default=100_000, help="simulated users in the A/B stage")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The ``kuaihl`` parser: global flags, then one sub-command per ``cmd_*`` function."""
    parser = argparse.ArgumentParser(
        prog="kuaihl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    # the same two flags are accepted after the command too (kuaihl train ... -q)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, parents=[common], **k)  # type: ignore[method-assign]

    _add_data_commands(sub)
    _add_model_commands(sub)
    _add_ranking_commands(sub)
    _add_serving_commands(sub)
    _add_demo_command(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.io import DataError

    try:
        return int(args.func(args) or 0)
    except DataError as exc:
        print(f"kuaihl {args.command}: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"kuaihl {args.command}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # ServingInputError, NotServable, a bad saved state: one line unless -v
        # lazy: each command imports only what it runs (kuaihl --help must not load torch)
        from kuaihl_rec.serving.inference import NotServable
        from kuaihl_rec.serving.inputs import ServingInputError

        if args.verbose or not (
            isinstance(exc, (ServingInputError, NotServable)) or args.command in ("replay", "export")
        ):
            raise
        print(f"kuaihl {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
