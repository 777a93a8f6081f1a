"""``kuaihl ope``: off-policy evaluation of ranking formulas on logged data (docs/OPE.md).

    kuaihl ope --logs LOGS --config arms.yaml --out OUT      estimate the config's arms on a log directory
    kuaihl ope --world DIR --config arms.yaml --out OUT      simulate a log of the control arm on a world
                                                             (OUT/logs, with the truth), then estimate

Writes ``OUT/ope.json``, ``OUT/report.md`` and, where the log carries the simulator's truth,
``OUT/figures/ope_vs_truth.png``. A log that cannot be evaluated (a propensity of 0 or above 1, a missing
position, a duplicate impression...) exits 1 with one line naming the file, row and field.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from kuaihl_rec.apps.cli_checks import UsageError, require_at_least, require_choice, require_path, require_writable
from kuaihl_rec.apps.commands import _parse_days

__all__ = ["add_parser", "cmd_ope"]

CLICK_MODELS = ("cascade", "pbm")


def add_parser(sub) -> None:
    """Register ``kuaihl ope``."""
    p = sub.add_parser("ope", help="off-policy estimates of ranking formulas from logged impressions (+ truth when "
                                   "simulated)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--logs", default=None, help="a log directory (impressions.parquet, candidates.parquet, "
                                                     "log.json; docs/OPE.md)")
    source.add_argument("--world", default=None, help="a world directory: simulate the control arm's log into OUT/logs")
    p.add_argument("--config", default=None, help="arms config (YAML/JSON, as for `kuaihl ab`); default: built-in")
    p.add_argument("--out", required=True)
    p.add_argument("--temperature", type=float, default=None,
                   help="Plackett-Luce temperature of the evaluated arms (default: the log's; with --world 0.2)")
    p.add_argument("--logging-temperature", type=float, default=None,
                   help="with --world: the logging arm's temperature (default: --temperature)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates over sessions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--users", type=int, default=20_000, help="with --world: simulated users")
    p.add_argument("--days", default="auto", help="with --world: 'auto', an int, or 'none'")
    p.add_argument("--slate-size", type=int, default=5, help="with --world: positions per returned list")
    p.add_argument("--click-model", default="cascade", help="with --world: cascade (the simulator's) or pbm")
    p.add_argument("--truth-replicates", type=int, default=8, help="with --world: online runs per arm for the truth")
    p.set_defaults(func=cmd_ope)


def _positive(value, flag: str) -> None:
    if value is not None and not value > 0:
        raise UsageError(f"{flag} expects a number > 0, got {value}")


def _check_simulation_flags(args: argparse.Namespace) -> None:
    """The --world flags, checked before anything is read or made."""
    _parse_days(args.days)
    require_at_least(args.users, "--users")
    require_at_least(args.slate_size, "--slate-size")
    require_at_least(args.truth_replicates, "--truth-replicates", 2)
    require_choice(args.click_model, "--click-model", CLICK_MODELS, "click model")


def _simulate(args: argparse.Namespace, out: Path) -> Path:
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.train.evaluate import evaluate_run
    from ranking.ope.logsim import OpeSimConfig
    from ranking.ope.run import write_simulated_logs

    days = _parse_days(args.days)
    target = 0.2 if args.temperature is None else args.temperature
    logging_t = target if args.logging_temperature is None else args.logging_temperature
    cfg = OpeSimConfig(temperature=logging_t, target_temperature=target, slate_size=args.slate_size,
                       click_model=args.click_model, truth_replicates=args.truth_replicates)
    logs = out / "logs"
    # ranking never imports the trainer: a term naming a run directory is scored by evaluate_run, handed in here
    return write_simulated_logs(Path(args.world), logs, args.config, n_users=args.users, days=days, seed=args.seed,
                                ope_cfg=cfg, progress=not args.quiet,
                                score_run=functools.partial(evaluate_run, progress=not args.quiet))


def cmd_ope(args: argparse.Namespace) -> int:
    """``kuaihl ope``: estimates, intervals and diagnostics of the config's arms on a (simulated) log."""
    _positive(args.temperature, "--temperature")
    _positive(args.logging_temperature, "--logging-temperature")
    require_at_least(args.n_boot, "--n-boot", 0)
    require_path(args.logs, "--logs", "a log directory (docs/OPE.md)")
    require_path(args.world, "--world", "a world directory (make one with `kuaihl world --out DIR`)")
    require_path(args.config, "--config", "an arms config (YAML/JSON)")
    require_writable(args.out)
    if args.world:
        _check_simulation_flags(args)
    # lazy: each command imports only what it runs (kuaihl --help must not load pyarrow)
    from ranking.ope.report import summary_lines
    from ranking.ope.run import run_ope

    out = Path(args.out)
    logs = Path(args.logs) if args.logs else _simulate(args, out)
    result = run_ope(logs, out, args.config, temperature=args.temperature, n_boot=args.n_boot, seed=args.seed,
                     figures=not args.no_figures)
    print("\n".join(summary_lines(result)))
    print(f"ope: {out / 'ope.json'}\nreport: {out / 'report.md'}" + (f"\nlogs: {logs}" if args.world else ""))
    return 0
