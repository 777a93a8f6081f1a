"""The Open Bandit Dataset small sample (../shared/data/obd): its on-policy CTRs, the Bernoulli TS action
distribution against numerical integration, and our IPS / SNIPS / DR against the estimator formulas written
out here (and against the ``obp`` package where it can be imported: set KUAIHL_OBP_PATH to a directory it
was installed into, e.g. ``pip install --target DIR --no-deps --ignore-requires-python obp seaborn``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ranking.ope.estimators import estimate
from ranking.ope.obd import (
    bts_action_dist,
    bts_check,
    item_position_ctr,
    load_obd,
    obd_slate_data,
    recorded_action_dist,
)

REPO = Path(__file__).resolve().parents[1]
OBD = Path(os.environ.get("KUAIHL_SHARED_DATA", REPO.parent / "shared" / "data")) / "obd"
N_SIM = 50_000
pytestmark = pytest.mark.skipif(not (OBD / "random" / "all.csv").exists(), reason=f"no Open Bandit Dataset at {OBD}")


@pytest.fixture(scope="module")
def logs():
    return load_obd(OBD, "random"), load_obd(OBD, "bts")


@pytest.fixture(scope="module")
def dist():
    return bts_action_dist(OBD / "prior_bts.yaml", n_sim=N_SIM, seed=0)


def test_on_policy_ctrs_and_propensities(logs):
    random_log, bts = logs
    assert len(random_log) == len(bts) == 10_000
    assert random_log.click.sum() == 38 and bts.click.sum() == 42  # CTR 0.0038 and 0.0042
    np.testing.assert_allclose(random_log.pscore, 1 / 80)
    assert set(np.unique(random_log.position)) == {0, 1, 2}
    assert bts.pscore.min() == pytest.approx(4.5e-5) and bts.pscore.max() == pytest.approx(0.95424)


def test_bts_first_position_matches_numerical_integration(dist):
    """P(item a ranked first) = integral f_a(t) prod_{b != a} F_b(t) dt under independent Beta(alpha, beta)."""
    prior = yaml.safe_load((OBD / "prior_bts.yaml").read_text())["all"]
    alpha, beta = np.asarray(prior["alpha"], float), np.asarray(prior["beta"], float)
    low, high = stats.beta.ppf(1e-12, alpha, beta).min(), stats.beta.ppf(1 - 1e-12, alpha, beta).max()
    grid = np.linspace(float(low), float(high), 10_001)
    cdf = stats.beta.cdf(grid[:, None], alpha, beta)
    log_all = np.log(np.clip(cdf, 1e-300, None)).sum(axis=1, keepdims=True)
    density = stats.beta.pdf(grid[:, None], alpha, beta)
    others = np.exp(log_all - np.log(np.clip(cdf, 1e-300, None)))
    first = np.trapezoid(density * others, grid, axis=0)
    assert first.sum() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(dist.sum(axis=0), 1.0)
    se = np.sqrt(first * (1 - first) / N_SIM)
    assert np.all(np.abs(dist[:, 0] - first) < 5 * se + 2e-4)


def test_ips_snips_dr_equal_the_formulas_written_out(logs, dist):
    random_log, bts = logs
    df = pd.read_csv(OBD / "random" / "all.csv", usecols=["item_id", "position", "click", "propensity_score"])
    pi = dist[df["item_id"].to_numpy(), df["position"].to_numpy() - 1]
    w = pi / df["propensity_score"].to_numpy()
    r = df["click"].to_numpy(float)
    q = item_position_ctr(random_log)
    rows, pos, item = np.arange(len(df)), df["position"].to_numpy() - 1, df["item_id"].to_numpy()
    dm_part = np.array([np.dot(dist[:, k], q[i, :, k]) for i, k in zip(rows, pos)])
    expected = {"ips": np.mean(w * r), "snips": np.sum(w * r) / np.sum(w),
                "dr": np.mean(dm_part + w * (r - q[rows, item, pos])), "dm": np.mean(dm_part)}
    data = obd_slate_data(random_log, dist, q)
    for name, value in expected.items():
        assert estimate(data, name) == pytest.approx(value, rel=1e-12), name
    # the reward model on one fold is the smoothed click rate of each (item, position) of the other fold
    recorded = recorded_action_dist(bts)
    assert recorded["dist"].shape == (80, 3) and np.allclose(recorded["dist"].sum(axis=0), 1.0)


def test_bts_check_reports_both_action_distributions(logs):
    out = bts_check(OBD, n_sim=10_000, n_boot=100)
    assert out["bts_on_policy"]["value"] == pytest.approx(0.0042)
    for source in ("prior_monte_carlo", "bts_log_propensities"):
        block = out["estimates"][source]["estimators"]
        for name in ("ips", "snips", "dr"):
            low, high = block[name]["ci"]
            assert 0 <= low < block[name]["value"] < high


def _obp():
    path = os.environ.get("KUAIHL_OBP_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    return pytest.importorskip("obp", reason="obp is optional (see the module docstring)")


@pytest.mark.slow
def test_against_obp(logs, dist):
    _obp()
    from obp.ope import (
        DirectMethod,
        DoublyRobust,
        InverseProbabilityWeighting,
        SelfNormalizedInverseProbabilityWeighting,
    )
    from obp.policy import BernoulliTS

    random_log, _ = logs
    n = len(random_log)
    q = item_position_ctr(random_log)
    feedback = dict(reward=random_log.click, action=random_log.item, position=random_log.position,
                    pscore=random_log.pscore, action_dist=np.repeat(dist[None], n, axis=0))
    data = obd_slate_data(random_log, dist, q)
    for ours, theirs in (("ips", InverseProbabilityWeighting()), ("snips", SelfNormalizedInverseProbabilityWeighting()),
                         ("dr", DoublyRobust()), ("dm", DirectMethod())):
        kwargs = dict(feedback)
        if ours in ("dr", "dm"):
            kwargs["estimated_rewards_by_reg_model"] = q
        if ours == "dm":
            kwargs = {k: kwargs[k] for k in ("position", "action_dist", "estimated_rewards_by_reg_model")}
        assert estimate(data, ours) == pytest.approx(theirs.estimate_policy_value(**kwargs), rel=1e-10), ours
    policy = BernoulliTS(n_actions=80, len_list=3, is_zozotown_prior=True, campaign="all", random_state=12345)
    theirs = policy.compute_batch_action_dist(n_sim=20_000, n_rounds=1)[0]
    assert np.abs(theirs - dist).max() < 0.02  # two Monte Carlo estimates (20,000 and N_SIM draws)
