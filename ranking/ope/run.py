"""The two stages of ``kuaihl ope``: simulated logs from a world, and the evaluation of a log directory.

:func:`write_simulated_logs` resolves the arms config's terms on the world exactly as ``kuaihl ab`` does
(:func:`ranking.experiment.resolve_all` through its resolve stage: same calibration, same missing-score
fills, same run-directory scoring), then writes the control arm's stochastic log and the online truth of
every config arm (:mod:`ranking.ope.logsim`). :func:`run_ope` evaluates the config's arms on a log
(:mod:`ranking.ope.evaluate`) and writes ``ope.json``, ``report.md`` and the figure.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from kuaihl_rec.data.io import atomic_write_json
from ranking.arms import build_arms, load_arms_config
from ranking.experiment import _resolve
from ranking.ope.evaluate import evaluate_log
from ranking.ope.intervals import DiagnosticThresholds
from ranking.ope.logsim import OpeSimConfig, simulate_log
from ranking.ope.policy import StochasticPolicy
from ranking.ope.report import write_report
from ranking.ope.schema import REWARDS, read_logs, strict_json, write_logs
from ranking.population import make_population
from ranking.score_source import RunScorer

logger = logging.getLogger(__name__)

__all__ = ["config_policies", "run_ope", "write_simulated_logs"]

_NO_SANITY = {"aa": False, "placebo": False, "oracle": False}


def _config(arms_config: Union[Mapping[str, Any], str, Path, None]) -> Dict[str, Any]:
    cfg = load_arms_config(arms_config)
    cfg["sanity"] = dict(_NO_SANITY)  # the sanity arms need the hidden truth: not policies a log can evaluate
    return cfg


def config_policies(cfg: Mapping[str, Any], term_names: Sequence[str],
                    temperature: float) -> Dict[str, StochasticPolicy]:
    """The config's arms (control, treatment = control + w x content when the content term is a column,
    its own arms) as stochastic policies; terms are the log's score columns."""
    cfg = {**cfg, "sanity": dict(_NO_SANITY)}
    arms, _ = build_arms(cfg, {name: None for name in term_names})
    return {arm.name: StochasticPolicy(arm.formula, temperature) for arm in arms}


def write_simulated_logs(world: Any, logs_dir: Union[str, Path], arms_config: Union[Mapping[str, Any], str, Path, None],
                         n_users: int = 20_000, days: Union[int, str, None] = "auto", seed: int = 0,
                         ope_cfg: OpeSimConfig = OpeSimConfig(), progress: bool = False,
                         score_run: Optional[RunScorer] = None) -> Path:
    """Simulate the config's control arm as the logging policy on ``world``; write the log (with the truth)."""
    logs_dir = Path(logs_dir)
    cfg = _config(copy.deepcopy(arms_config) if isinstance(arms_config, Mapping) else arms_config)
    # scores of run-directory terms are cached beside the log (OUT/scores when the log is OUT/logs), not in it
    setup = _resolve(world, logs_dir.parent, cfg, days, seed, progress, 0, score_run)
    values = {k: v.values for k, v in setup.values.items()}
    policies = {a.name: StochasticPolicy(a.formula, ope_cfg.eval_temperature) for a in setup.arms}
    logging_policy = StochasticPolicy(next(a.formula for a in setup.arms if a.name == setup.control),
                                      ope_cfg.temperature)
    pop = make_population(setup.world, n_users, seed, setup.sim_cfg, pre_period=False)
    log = simulate_log(setup.world, values, logging_policy, policies, pop, setup.sim_cfg, ope_cfg, seed)
    meta = {**log.meta, "world": {"dir": str(world) if isinstance(world, (str, Path)) else "<in memory>",
                                  **setup.world.meta}, "truth": log.truth,
            "terms": {k: v.summary() for k, v in setup.values.items()}}
    write_logs(logs_dir, log.impressions, log.candidates, meta)
    logger.info("ope: wrote a simulated log of %d requests to %s", log.meta["requests"], logs_dir)
    return logs_dir


def run_ope(logs_dir: Union[str, Path], out_dir: Union[str, Path],
            arms_config: Union[Mapping[str, Any], str, Path, None] = None, temperature: Optional[float] = None,
            n_boot: int = 200, seed: int = 0, figures: bool = True, rewards: Sequence[str] = REWARDS,
            thresholds: DiagnosticThresholds = DiagnosticThresholds()) -> Dict[str, Any]:
    """Evaluate the config's arms on the log in ``logs_dir``; writes ``ope.json``, ``report.md`` (and the figure)."""
    data = read_logs(logs_dir)
    cfg = _config(arms_config)
    if temperature is None:  # the temperature the log's truth was simulated at, else the logging policy's
        truth = data.meta.get("truth") or {}
        simulated = [v["policy"]["temperature"] for k, v in truth.items() if k != "__logging__"]
        temperature = simulated[0] if simulated else (data.meta.get("logging") or {}).get("temperature")
    if temperature is None:
        raise ValueError(f"{logs_dir}: its log.json names no policy temperature; pass one (--temperature)")
    policies = config_policies(cfg, data.term_columns, float(temperature))
    result = evaluate_log(data, policies, rewards=rewards, n_boot=n_boot, seed=seed, thresholds=thresholds)
    out_dir = Path(out_dir)
    result["call"] = {"logs": str(logs_dir), "out": str(out_dir), "temperature": float(temperature),
                      "arms_config": str(arms_config) if isinstance(arms_config, (str, Path)) else "<mapping>"}
    atomic_write_json(out_dir / "ope.json", strict_json(result))  # strict JSON: non-finite numbers become null
    result["written"] = write_report(result, out_dir, figures=figures)
    return result
