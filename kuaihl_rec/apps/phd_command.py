"""``kuaihl phd``: personalised highlight detection on the synthetic personalised world and its
``preference_signal = 0`` twin (docs/HIGHLIGHTS.md, "The comparison").

::

    kuaihl phd --out OUT [--seeds 3] [--epochs 8] [--models a,b] [--set KNOB=VALUE]

For each seed ``s`` (0 .. seeds-1): the personalised world (preset ``default`` with ``seed = s`` and
the ``--set`` knobs) and its twin (the same with ``preference_signal = 0``: same videos, users and
history videos, highlights independent of the user) are generated, written as PHD directories
(``OUT/worlds/<world>_seed<s>/``, truth apart in ``truth/``) and read back through the contract
reader; every row of :data:`~kuaihl_rec.apps.phd_models.PHD_ROWS` is trained with seed ``s`` on the
train users and scored on the test users with the PHD protocol. Writes ``OUT/results.json`` and
``OUT/report.md`` (mean +- sd over seeds; synthetic).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, List

from kuaihl_rec.apps.cli_checks import UsageError, require_writable
from kuaihl_rec.apps.commands import _parse_overrides

logger = logging.getLogger("kuaihl")

WORLDS = ("personalised", "twin")


def add_parser(sub: Any) -> None:
    """Register ``kuaihl phd``."""
    p = sub.add_parser("phd", help="personalised highlight detection: ContentCTR-HL, PR-Net (+ ablations), "
                                   "references on the personalised world and its preference_signal 0 twin")
    p.add_argument("--out", required=True, help="report directory (results.json, report.md, worlds/)")
    p.add_argument("--seeds", type=int, default=3, help="seeds (world and training) per row (default 3)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs per run (default 8)")
    p.add_argument("--models", default=None, help="comma-separated rows (default: all; see docs/HIGHLIGHTS.md)")
    p.add_argument("--preset", default="default", help="PHD world preset (default, tiny)")
    p.add_argument("--set", action="append", metavar="KNOB=VALUE", help="override a world knob, e.g. history_size=4")
    p.set_defaults(func=cmd_phd)


def _check_args(args: argparse.Namespace) -> List[str]:
    from kuaihl_rec.apps.phd_models import PHD_ROWS  # noqa: PLC0415  (torch: keeps `kuaihl --help` fast)
    from kuaihl_rec.data.phd.world import phd_world_config  # noqa: PLC0415  (pandas: keeps `kuaihl --help` fast)

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
    rows = list(PHD_ROWS) if not args.models else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in rows if m not in PHD_ROWS]
    if unknown or not rows:
        raise UsageError(f"--models: unknown row(s) {unknown}; known: {list(PHD_ROWS)}")
    overrides = _parse_overrides(args.set)
    if "seed" in overrides or "preference_signal" in overrides and overrides["preference_signal"] == 0:
        raise UsageError("--set seed / preference_signal=0: the command sets the seed per run and builds the "
                         "twin itself")
    try:
        config = phd_world_config(args.preset, **overrides)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"world: {exc.args[0] if exc.args else exc}") from None
    if config.preference_signal == 0:
        raise UsageError(f"--preset {args.preset}: preference_signal is 0; the personalised world needs "
                         "preference_signal > 0 (the command builds the twin itself)")
    require_writable(args.out, "--out")
    if Path(args.out).is_dir() and any(Path(args.out).iterdir()):
        raise UsageError(f"--out {args.out}: not empty (a report directory belongs to one run; choose a new one)")
    return rows


def _write_truth(path: Path, truth: Any) -> None:
    import pyarrow as pa  # noqa: PLC0415  (third-party; keeps `kuaihl --help` fast)

    from kuaihl_rec.data.io import atomic_write_parquet  # noqa: PLC0415  (pyarrow: keeps `kuaihl --help` fast)

    atomic_write_parquet(path / "shots.parquet", pa.Table.from_pandas(truth.shots, preserve_index=False))
    atomic_write_parquet(path / "interests.parquet", pa.Table.from_pandas(truth.interests, preserve_index=False))


def _run_row(name: str, data, train, test, seed: int, epochs: int) -> Dict[str, Any]:
    import numpy as np  # noqa: PLC0415  (third-party; keeps `kuaihl --help` fast)
    import torch  # noqa: PLC0415  (third-party; keeps `kuaihl --help` fast)

    # why: torch-backed models and metrics are imported only when the command runs (`kuaihl --help` stays fast)
    from kuaihl_rec.apps.phd_models import PHD_ROWS  # noqa: PLC0415
    from kuaihl_rec.metrics.phd import phd_evaluate, position_prior_scores, random_scores  # noqa: PLC0415
    from kuaihl_rec.train.phd import PHDTrainConfig, phd_items, score_phd, train_phd  # noqa: PLC0415

    row = PHD_ROWS[name]
    start = time.perf_counter()
    if row.build is None:
        rng = np.random.default_rng(seed)
        sizes = [data.videos[e.video_id].n_segments for e in test]
        scores = ([random_scores(n, rng) for n in sizes] if name == "random"
                  else [position_prior_scores(n) for n in sizes])
        losses: List[float] = []
    else:
        torch.manual_seed(seed)
        model = row.build(data)
        losses = train_phd(model, data, train, PHDTrainConfig(epochs=epochs, seed=seed))
        scores = score_phd(model, data, test)
    result = phd_evaluate(phd_items(data, test, scores))
    out = {"map": result["map"], "hit1": result["hit1"], "n_users": result["n_users"], "train_loss": losses,
           "seconds": time.perf_counter() - start}
    if row.uses_history:  # diagnostic: each test user scored with the next test user's history
        other = [dataclasses.replace(e, history=test[(i + 1) % len(test)].history) for i, e in enumerate(test)]
        out["map_other_history"] = phd_evaluate(phd_items(data, other, score_phd(model, data, other)))["map"]
    return out


def cmd_phd(args: argparse.Namespace) -> int:
    """Run the comparison; writes results.json and report.md under ``--out``."""
    rows = _check_args(args)
    # why: the data, world and report modules load pandas / pyarrow / torch; `kuaihl --help` must stay fast
    from kuaihl_rec.apps.phd_report import summarise, write_report  # noqa: PLC0415
    from kuaihl_rec.data.io import atomic_write_json  # noqa: PLC0415
    from kuaihl_rec.data.phd.contract import read_phd, write_phd  # noqa: PLC0415
    from kuaihl_rec.data.phd.examples import user_examples  # noqa: PLC0415
    from kuaihl_rec.data.phd.world import generate_phd_world, phd_world_config  # noqa: PLC0415

    out = Path(args.out)
    overrides = _parse_overrides(args.set)
    runs: Dict[str, Dict[str, List[Dict[str, Any]]]] = {w: {r: [] for r in rows} for w in WORLDS}
    # per world: the knobs shared by every seed ("config", that of seed 0) and each seed's own entry
    worlds_meta: Dict[str, Dict[str, Any]] = {w: {"seeds": {}} for w in WORLDS}
    for seed in range(args.seeds):
        for world in WORLDS:
            extra = {"preference_signal": 0.0} if world == "twin" else {}
            config = phd_world_config(args.preset, **{**overrides, **extra, "seed": seed})
            data, truth = generate_phd_world(config)
            where = out / "worlds" / f"{world}_seed{seed}"
            write_phd(where, data)
            _write_truth(where / "truth", truth)
            data = read_phd(where)
            worlds_meta[world]["seeds"][str(seed)] = {"config": config, "n_videos": len(data.videos)}
            if seed == 0:
                worlds_meta[world].update(config=config, n_videos=len(data.videos))
            train, test = user_examples(data, "train"), user_examples(data, "test")
            for name in rows:
                result = _run_row(name, data, train, test, seed, args.epochs)
                runs[world][name].append({"seed": seed, **result})
                logger.info("phd %s seed %d %-28s mAP %.2f HIT@1 %.1f (%.1f s)", world, seed, name, result["map"],
                            result["hit1"], result["seconds"])
    summary = summarise(runs)
    atomic_write_json(out / "results.json", {"synthetic": True, "seeds": args.seeds, "epochs": args.epochs,
                                             "worlds": worlds_meta, "runs": runs, "summary": summary})
    write_report(out / "report.md", summary, worlds_meta, args)
    print(f"kuaihl phd: wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0
