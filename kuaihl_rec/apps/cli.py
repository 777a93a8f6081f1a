"""The ``kuaihl`` command line. Every command says where its outputs went.

    kuaihl world    --preset default --out DIR      generate the synthetic live-streaming world
    kuaihl validate PATH                            check a segment table against the contract (exit 1 if unusable)
    kuaihl klive    ROOT --out DIR                  convert a KLive release directory into a segment table
    kuaihl extract  INPUT --out DIR                 raw frames + ASR + comments -> feature columns
    kuaihl demo     [--out DIR]                     the main job on the embedded default, with a report
    kuaihl replay   RUN --world DIR --out OUT       stream a world's test rooms through the streaming scorer
    kuaihl export   RUN --out DIR                   torch.export (+ AOTInductor) programs of the inference path
    kuaihl ope      --logs LOGS | --world DIR --out OUT   off-policy estimates of a ranking change from logged data
    kuaihl plan     --streamers N --world-size R    TorchRec sharding plan and memory per rank, nothing allocated
    kuaihl phd      --out OUT [--seeds 3]           personalised highlight detection comparison (synthetic)

Heavy libraries are imported inside the commands so ``kuaihl --help`` stays fast.

Exit status: 0 done; 1 the data (or a run's saved state) cannot be used; 2 a usage error (a bad flag,
``--set`` key or value, name, preset, or a missing input). Errors are one line
``kuaihl COMMAND: what was wrong``; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import List, Optional

import kuaihl_rec
from kuaihl_rec.apps import ope_command, phd_command, plan_command
from kuaihl_rec.apps.commands import (  # noqa: F401  (_parse_overrides is part of the CLI's tested surface)
    UsageError,
    _parse_overrides,
    cmd_ab,
    cmd_compare,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_extract,
    cmd_klive,
    cmd_models,
    cmd_replay,
    cmd_train,
    cmd_validate,
    cmd_world,
)

logger = logging.getLogger("kuaihl")


def _setup_logging(verbose: bool) -> None:
    """Our loggers at INFO (DEBUG with -v); everything else (torchrec, fbgemm) at WARNING."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("kuaihl", "kuaihl_rec", "baselines", "ranking"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # torchrec triggers a deprecation message from torch.fx at import time (see docs/ENVIRONMENT.md section 3).
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


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
    p.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
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
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run already in --out (its files are moved aside, not lost)"
    )
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


def package_version() -> str:
    """The installed ``kuaihl-rec`` version, else (a source checkout) ``kuaihl_rec.__version__``."""
    from importlib import metadata

    try:
        return metadata.version("kuaihl-rec")
    except metadata.PackageNotFoundError:
        return kuaihl_rec.__version__


class _VersionAction(argparse.Action):
    """``--version``: the version is looked up only when asked for (importlib.metadata is not free)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        """A flag without a value, like argparse's own ``version`` action."""
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        """Print ``kuaihl VERSION`` and exit 0."""
        print(f"kuaihl {package_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``kuaihl`` parser: global flags, then one sub-command per ``cmd_*`` function."""
    parser = argparse.ArgumentParser(
        prog="kuaihl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--version", action=_VersionAction, help="print the package version and exit")
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
    ope_command.add_parser(sub)
    _add_serving_commands(sub)
    _add_demo_command(sub)
    plan_command.add_parser(sub)
    phd_command.add_parser(sub)
    return parser


def exit_status(exc: BaseException) -> Optional[int]:
    """2 for a usage error, 1 for data that cannot be used, None for anything else (a bug: its
    traceback is shown)."""
    # lazy: the error classes are imported only when a command fails (kuaihl --help must not load pyarrow)
    from kuaihl_rec.data.io import DataError
    from kuaihl_rec.data.world_config import WorldConfigError

    if isinstance(exc, (UsageError, WorldConfigError, FileNotFoundError)):
        return 2  # a bad name, key, value or preset, a missing input file, a run without its files
    if isinstance(exc, (DataError, ValueError, OSError)):
        return 1  # an unusable table or saved state (DataError, ServingInputError, NotServable), a write that failed
    return None


def error_line(exc: BaseException) -> str:
    """The one line that says what was wrong (an OSError names its path)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run one ``kuaihl`` command; returns its exit status (argparse exits 2 itself for a bad flag)."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:  # noqa: BLE001  (classified below; a bug is re-raised with its traceback)
        status = exit_status(exc)
        if status is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"kuaihl {args.command}: {error_line(exc)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
