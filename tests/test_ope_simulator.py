"""Simulated logs (ranking/ope/logsim.py): the logged propensities are the logging policy's exact ones, and
over many seeds IPS, SNIPS, RIPS and DR on cascade logs, and IIPS on position-based logs, land within their
standard error of the target policy's online truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kuaihl_rec.data.world import generate_world, load_world_config
from ranking.blend import Formula, Term, resolve_term
from ranking.ope.evaluate import evaluate_log
from ranking.ope.logsim import OpeSimConfig, simulate_log
from ranking.ope.policy import PolicyProbabilities, RequestArrays, StochasticPolicy
from ranking.ope.schema import LoggedData, validate_candidates, validate_impressions
from ranking.scores import load_scores
from ranking.simulator import load_sim_world, make_population
from test_ranking_simulator import WORLD_KW, proxy_content

CONTROL = Formula.linear({"ctr": 1.0, "lvtr": 1.0})
TREATMENT = CONTROL.with_weight("content", 1.0)
T = 0.2


@pytest.fixture(scope="module")
def sim_and_values():
    world = generate_world(load_world_config("tiny", **WORLD_KW))
    sim = load_sim_world(world, days="auto")
    ctx = sim.context()
    sources = {"ctr": load_scores("cum_ctr"), "lvtr": load_scores("cum_lvtr"),
               "content": load_scores(proxy_content(world), name="content", label="lvtr")}
    return sim, {k: resolve_term(Term(k, s), ctx).values for k, s in sources.items()}


def _log(sim, values, seed, n_users, click_model="cascade", validate=True):
    cfg = OpeSimConfig(temperature=T, click_model=click_model, truth_replicates=4)
    pop = make_population(sim, n_users, seed, pre_period=False)
    out = simulate_log(sim, values, StochasticPolicy(CONTROL, T), {"treatment": StochasticPolicy(TREATMENT, T)}, pop,
                       cfg=cfg, seed=seed)
    imp = validate_impressions(out.impressions) if validate else out.impressions
    cand = validate_candidates(out.candidates, imp) if validate else out.candidates  # simulate_log sorts both
    return LoggedData(imp, cand, {**out.meta, "truth": out.truth})


def test_logged_propensities_are_the_logging_policys_exact_ones(sim_and_values):
    data = _log(*sim_and_values, seed=3, n_users=600)
    arrays = RequestArrays.from_logs(data)
    at = PolicyProbabilities.of(StochasticPolicy(CONTROL, T), arrays).at_rows(arrays)
    np.testing.assert_allclose(data.impressions["propensity"], at["marginal"], rtol=1e-12)
    np.testing.assert_allclose(data.impressions["prefix_propensity"], at["prefix"], rtol=1e-12)
    # every request shows min(5, candidates) positions; the cascade clicks at most once per list
    n_cand = data.candidates.groupby("request_id").size()
    n_shown = data.impressions.groupby("request_id").size()
    assert (n_shown == np.minimum(n_cand, 5)).all()
    assert data.impressions.groupby("request_id")["click"].sum().max() == 1
    assert ((data.impressions["watch_s"] > 0) <= (data.impressions["click"] == 1)).all()


def _errors(sim_and_values, click_model, estimators, seeds=16, n_users=800):
    diffs = {name: [] for name in estimators}
    on_policy = []
    for seed in range(seeds):
        data = _log(*sim_and_values, seed=seed, n_users=n_users, click_model=click_model, validate=False)
        res = evaluate_log(data, {"treatment": StochasticPolicy(TREATMENT, T)}, rewards=("click",), n_boot=0,
                           estimators=estimators)
        block = res["policies"]["treatment"]["rewards"]["click"]
        for name in estimators:
            diffs[name].append(block["estimates"][name]["value"] - block["truth"]["value"])
        on_policy.append(res["on_policy"]["click"]["value"] - data.meta["truth"]["__logging__"]["click"]["value"])
    truth = block["truth"]["value"]
    return {k: np.asarray(v) for k, v in diffs.items()}, np.asarray(on_policy), truth


def _within_standard_error(diff, truth, name, z=3.5):
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    assert se < 0.05 * truth, f"{name}: the check is too loose (se {se:.4f} of a truth {truth:.4f})"
    assert abs(diff.mean()) < z * se, f"{name}: mean error {diff.mean():+.5f}, standard error {se:.5f}"


def test_ips_snips_rips_dr_are_unbiased_on_cascade_logs(sim_and_values):
    diffs, on_policy, truth = _errors(sim_and_values, "cascade", ("ips", "snips", "rips", "dr"))
    for name, diff in diffs.items():
        _within_standard_error(diff, truth, name)
    _within_standard_error(on_policy, truth, "the log's own mean vs the logging policy's online truth")


def test_independent_item_ips_is_unbiased_on_position_based_logs(sim_and_values):
    diffs, _, truth = _errors(sim_and_values, "pbm", ("iips",))
    _within_standard_error(diffs["iips"], truth, "iips")


@pytest.mark.slow
def test_kuaihl_ope_simulates_and_evaluates_a_world(tiny_world, tmp_path, capsys):
    from kuaihl_rec.apps.cli import main

    status = main(["ope", "--world", str(tiny_world), "--out", str(tmp_path / "out"), "--users", "1500",
                   "--n-boot", "50", "--days", "3", "-q"])
    assert status == 0, capsys.readouterr().err
    out = tmp_path / "out"
    result = json.loads((out / "ope.json").read_text())
    block = result["policies"]["control"]["rewards"]["click"]
    assert "truth" in block and set(block["estimates"]) == {"dm", "ips", "snips", "iips", "rips", "dr"}
    # the control is the logging policy: every weight is 1 and IPS is the log's mean
    assert result["policies"]["control"]["diagnostics"]["slate"]["max_weight"] == pytest.approx(1.0)
    assert block["estimates"]["ips"]["value"] == pytest.approx(result["on_policy"]["click"]["value"])
    assert block["truth"]["lift"]["value"] == 0.0  # common random numbers: the same policy online is the same
    assert (out / "figures" / "ope_vs_truth.png").stat().st_size > 0 and (out / "logs" / "log.json").exists()
    # the written log evaluates again to the same numbers
    assert main(["ope", "--logs", str(out / "logs"), "--out", str(tmp_path / "again"), "--n-boot", "50", "-q"]) == 0
    again = json.loads((tmp_path / "again" / "ope.json").read_text())
    assert again["policies"] == result["policies"]
