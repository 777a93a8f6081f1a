"""Off-policy estimators (ranking/ope): each against a hand-computed log, Plackett-Luce probabilities against
brute-force enumeration of every list, and exact expectations over every list a logging policy can show:
the position-based variant (IIPS) is exactly unbiased under a position-based click model and not under the
cascade, where the reward-interaction IPS, slate IPS and cascade DR stay exact."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ranking.blend import Formula
from ranking.ope.estimators import SlateData, contributions, estimate
from ranking.ope.evaluate import evaluate_log
from ranking.ope.intervals import SessionBootstrap, weight_diagnostics
from ranking.ope.plackett_luce import gumbel_top_k, position_marginals, prefix_probabilities
from ranking.ope.policy import StochasticPolicy
from ranking.ope.schema import LoggedData, validate_candidates, validate_impressions

# two requests of two positions (hand-made propensities, rewards and reward-model values)
HAND = SlateData(
    request=np.array([0, 0, 1, 1]),
    reward=np.array([1.0, 0.0, 0.0, 1.0]),
    p_log=np.array([0.5, 0.4, 0.25, 0.5]),
    p_eval=np.array([0.25, 0.5, 0.5, 0.25]),
    session=np.array([0, 1]),
    prefix_log=np.array([0.5, 0.2, 0.25, 0.1]),
    prefix_eval=np.array([0.25, 0.2, 0.5, 0.3]),
    q_logged=np.array([0.4, 0.2, 0.1, 0.3]),
    q_eval=np.array([0.3, 0.25, 0.3, 0.25]),
    q_next=np.array([0.3, 0.1, 0.3, 0.2]),
)


def test_each_estimator_on_a_hand_computed_log():
    expected = {
        "dm": ((0.3 + 0.25) + (0.3 + 0.25)) / 2,
        "ips": ((0.2 / 0.2) * (1 + 0) + (0.3 / 0.1) * (0 + 1)) / 2,
        "snips": ((0.2 / 0.2) * 1 + (0.3 / 0.1) * 1) / (0.2 / 0.2 + 0.3 / 0.1),
        "iips": ((0.25 / 0.5) * 1 + (0.5 / 0.4) * 0 + (0.5 / 0.25) * 0 + (0.25 / 0.5) * 1) / 2,
        "rips": ((0.25 / 0.5) * 1 + (0.2 / 0.2) * 0 + (0.5 / 0.25) * 0 + (0.3 / 0.1) * 1) / 2,
        # sum_k [w_0:k (r_k - q_k) + w_0:k-1 q_next_k]
        "dr": ((0.5 * (1 - 0.4) + 1 * 0.3) + (1.0 * (0 - 0.2) + 0.5 * 0.1)
               + (2.0 * (0 - 0.1) + 1 * 0.3) + (3.0 * (1 - 0.3) + 2.0 * 0.2)) / 2,
    }
    for name, value in expected.items():
        assert estimate(HAND, name) == pytest.approx(value, abs=1e-12), name


def test_evaluate_log_on_a_two_candidate_log_matches_the_plackett_luce_formula():
    """Two candidates per request, lists of two: P(a first) = e^{s_a/t} / (e^{s_a/t} + e^{s_b/t})."""
    imp = pd.DataFrame({"request_id": [7, 7, 9, 9], "session_id": [1, 1, 2, 2], "position": [0, 1, 0, 1],
                        "item_id": [10, 11, 11, 12], "propensity": [0.6, 0.6, 0.3, 0.3],
                        "click": [0, 1, 1, 0], "watch_s": [0.0, 40.0, 5.0, 0.0],
                        "prefix_propensity": [0.6, 0.6, 0.3, 0.3]})
    cand = pd.DataFrame({"request_id": [7, 7, 9, 9], "item_id": [10, 11, 11, 12], "x": [1.0, 2.0, 0.5, 0.0]})
    data = LoggedData(validate_impressions(imp), validate_candidates(cand, validate_impressions(imp)), {})
    t = 0.5
    res = evaluate_log(data, {"p": StochasticPolicy(Formula.linear({"x": 1.0}), t)}, n_boot=0,
                       estimators=("iips", "ips", "rips"))
    first = lambda a, b: np.exp(a / t) / (np.exp(a / t) + np.exp(b / t))  # noqa: E731
    # request 7: item 11 (x=2) clicked at position 1; request 9: item 11 (x=0.5) clicked at position 0
    p7_second = 1 - first(2.0, 1.0)  # item 11 second = item 10 first
    p9_first = first(0.5, 0.0)
    iips = (p7_second / 0.6 * 1 + p9_first / 0.3 * 1) / 2
    whole = (first(1.0, 2.0) / 0.6 * 1 + p9_first / 0.3 * 1) / 2  # a 2-item list is fixed by its first item
    got = res["policies"]["p"]["rewards"]["click"]["estimates"]
    assert got["iips"]["value"] == pytest.approx(iips, rel=1e-12)
    assert got["ips"]["value"] == pytest.approx(whole, rel=1e-12)
    assert got["rips"]["value"] == pytest.approx(whole, rel=1e-12)
    watch = res["policies"]["p"]["rewards"]["watch_s"]["estimates"]["iips"]["value"]
    assert watch == pytest.approx((p7_second / 0.6 * 40 + p9_first / 0.3 * 5) / 2, rel=1e-12)


def _all_lists(scores, k):
    """Every list of k of the items (ordered) and its Plackett-Luce probability, by brute force."""
    w = np.exp(scores)
    out = []
    for perm in itertools.permutations(range(len(scores)), k):
        p, left = 1.0, w.sum()
        for a in perm:
            p *= w[a] / left
            left -= w[a]
        out.append((perm, p))
    return out


def test_plackett_luce_probabilities_against_enumeration():
    rng = np.random.default_rng(3)
    logw = np.full((3, 6), -np.inf)
    logw[0, :5], logw[1, :], logw[2, [1, 4]] = rng.normal(size=5), rng.normal(size=6), rng.normal(size=2)
    marg = position_marginals(logw, 4)
    for r in range(3):
        items = np.flatnonzero(np.isfinite(logw[r]))
        brute = np.zeros((len(items), 4))
        for perm, p in _all_lists(logw[r, items], min(4, len(items))):
            for j, a in enumerate(perm):
                brute[a, j] += p
        np.testing.assert_allclose(marg[r][items], brute, atol=1e-13)
        assert np.all(marg[r][~np.isfinite(logw[r])] == 0)
    perm, p = _all_lists(logw[1], 3)[17]
    chosen = np.array([list(perm) + [-1]])
    got = prefix_probabilities(logw[1:2], chosen)[0]
    assert got[2] == pytest.approx(p, rel=1e-12) and np.isnan(got[3])
    # Gumbel-max draws follow the marginals
    draws = gumbel_top_k(np.repeat(logw[1:2], 40_000, 0), 4, rng.random((40_000, 6)))
    freq = np.stack([np.bincount(draws[:, j], minlength=6) for j in range(4)], axis=1) / 40_000
    assert np.abs(freq - marg[1]).max() < 0.015


def _exact_expectations(click_model: str):
    """E_0[estimate] over every list of 3 of 4 items (exact), and the evaluation policy's true value."""
    rng = np.random.default_rng(0)
    s_log, s_eval = rng.normal(size=4), 1.5 * rng.normal(size=4)
    attract, examine, patience = np.array([0.6, 0.3, 0.5, 0.2]), np.array([1.0, 0.6, 0.4]), 0.7
    q = rng.uniform(0, 0.5, size=(4, 3))  # an arbitrary reward model q(a, k)
    log_lists, eval_lists = _all_lists(s_log, 3), dict(_all_lists(s_eval, 3))
    marg_log = position_marginals(s_log[None], 3)[0]
    marg_eval = position_marginals(s_eval[None], 3)[0]
    rows = {k: [] for k in ("request", "reward", "p_log", "p_eval", "prefix_log", "prefix_eval", "q_logged",
                            "q_eval", "q_next")}
    prob_log, truth = [], 0.0
    for i, (items, p0) in enumerate(log_lists):
        c = attract[list(items)] * examine
        if click_model == "pbm":
            expected_click = c
        else:  # the cascade: click at k if reached; reach k + 1 without a click, with probability `patience`
            reach = np.r_[1.0, np.cumprod((1 - c) * patience)[:-1]]
            expected_click = reach * c
        truth += eval_lists[items] * expected_click.sum()
        prob_log.append(p0)
        placed = []
        for k, a in enumerate(items):
            free = [b for b in range(4) if b not in placed]
            w = np.exp(s_eval[free])
            rows["q_next"].append(float(np.dot(w / w.sum(), q[free, k])))
            placed.append(a)
            rows["request"].append(i)
            rows["reward"].append(expected_click[k])  # estimators are linear in the reward: E over clicks
            rows["p_log"].append(marg_log[a, k])
            rows["p_eval"].append(marg_eval[a, k])
            rows["prefix_log"].append(prefix_probabilities(s_log[None], np.array([items]))[0, k])
            rows["prefix_eval"].append(prefix_probabilities(s_eval[None], np.array([items]))[0, k])
            rows["q_logged"].append(q[a, k])
            rows["q_eval"].append(float(np.dot(marg_eval[:, k], q[:, k])))
    data = SlateData(session=np.arange(len(log_lists)), **{k: np.asarray(v) for k, v in rows.items()})
    expectation = {name: float(np.dot(prob_log, contributions(data, name).num)) for name in ("ips", "iips", "rips",
                                                                                               "dr")}
    return expectation, truth


def test_position_based_variant_is_exact_under_a_position_based_click_model():
    expectation, truth = _exact_expectations("pbm")
    for name in ("iips", "ips", "rips", "dr"):
        assert expectation[name] == pytest.approx(truth, abs=1e-12), name


def test_under_the_cascade_only_the_reward_interaction_estimators_stay_exact():
    expectation, truth = _exact_expectations("cascade")
    for name in ("ips", "rips", "dr"):
        assert expectation[name] == pytest.approx(truth, abs=1e-12), name
    assert abs(expectation["iips"] - truth) > 1e-3  # IIPS assumes no interaction between positions


def test_bootstrap_and_diagnostics():
    c = contributions(HAND, "ips")
    boot = SessionBootstrap(HAND.session, n_boot=400, seed=1)
    reps = boot.replicates(c)
    # two sessions: each replicate is one of the 3 possible resamples (0,0), (0,1), (1,1)
    assert set(np.round(reps, 12)) <= {1.0, 2.0, 3.0}
    summary = boot.summary(c)
    assert summary["ci"][0] >= 1.0 - 1e-12 and summary["ci"][1] <= 3.0 + 1e-12
    assert summary["value"] == pytest.approx(2.0)
    good = weight_diagnostics(np.ones(1000))
    assert good["trustworthy"] and good["ess"] == pytest.approx(1000)
    skew = np.r_[np.full(999, 0.01), 500.0]
    bad = weight_diagnostics(skew)
    assert not bad["trustworthy"] and bad["ess"] == pytest.approx(skew.sum() ** 2 / np.square(skew).sum())
    assert any("effective sample size" in w for w in bad["warnings"])
    # correlated weights (30 equal weights per session): the mean weight's standard error is the clustered one,
    # with equal cluster sizes the standard error of the session means
    rng = np.random.default_rng(2)
    per_session = rng.exponential(1.0, 200)
    clustered = weight_diagnostics(np.repeat(per_session, 30), cluster=np.repeat(np.arange(200), 30))
    assert clustered["mean_weight_se"] == pytest.approx(per_session.std(ddof=1) / np.sqrt(200), rel=1e-9)
    naive = weight_diagnostics(np.repeat(per_session, 30))
    assert naive["mean_weight_se"] < clustered["mean_weight_se"] / 4


def _two_candidate_log(clicks=(0, 1, 1, 0), prefix=True):
    imp = pd.DataFrame({"request_id": [7, 7, 9, 9], "session_id": [1, 1, 2, 2], "position": [0, 1, 0, 1],
                        "item_id": [10, 11, 11, 12], "propensity": [0.6, 0.6, 0.3, 0.3],
                        "click": list(clicks), "watch_s": [0.0, 40.0, 5.0, 0.0],
                        "prefix_propensity": [0.6, 0.6, 0.3, 0.3]})
    if not prefix:
        imp = imp.drop(columns="prefix_propensity")
    cand = pd.DataFrame({"request_id": [7, 7, 9, 9], "item_id": [10, 11, 11, 12], "x": [1.0, 2.0, 0.5, 0.0]})
    imp = validate_impressions(imp)
    return imp, validate_candidates(cand, imp)


def test_lift_over_a_zero_baseline_is_none():
    from ranking.ope.estimators import Contributions
    boot = SessionBootstrap(np.array([0, 1]), n_boot=10)
    lift = boot.lift(Contributions(np.array([1.0, 0.0]), np.ones(2)), Contributions(np.zeros(2), np.ones(2)))
    assert lift["value"] is None
    # with the truth of a log without clicks: no lift, no lift error (not a ZeroDivisionError)
    policy = StochasticPolicy(Formula.linear({"x": 1.0}), 0.5)
    zero = {"value": 0.0, "se": 0.0}
    truth = {"p": {"policy": policy.to_dict(), "click": zero, "watch_s": {"value": 10.0, "se": 1.0},
                   "lift": {"click": {"value": None, "se": None}, "watch_s": {"value": 0.1, "se": 0.1}}}}
    imp, cand = _two_candidate_log(clicks=(0, 0, 0, 0))
    res = evaluate_log(LoggedData(imp, cand, {"truth": truth}), {"p": policy}, n_boot=0, estimators=("iips",))
    click = res["policies"]["p"]["rewards"]["click"]["estimates"]["iips"]
    assert click["lift"]["value"] is None and click["lift_error"] is None and click["relative_error"] is None


def test_requested_estimators_are_checked():
    policy = {"p": StochasticPolicy(Formula.linear({"x": 1.0}), 0.5)}
    imp, cand = _two_candidate_log()
    with pytest.raises(ValueError, match=r"unknown estimator\(s\) \['nope'\]"):
        evaluate_log(LoggedData(imp, cand, {}), policy, n_boot=0, estimators=("iips", "nope"))
    with pytest.raises(ValueError, match="no estimators to evaluate"):
        evaluate_log(LoggedData(imp, cand, {}), policy, n_boot=0, estimators=())
    imp, cand = _two_candidate_log(prefix=False)
    with pytest.raises(ValueError, match=r"\['ips'\] not supported by this log"):
        evaluate_log(LoggedData(imp, cand, {}), policy, n_boot=0, estimators=("ips", "iips"))


def test_mean_weight_z_test_needs_a_finite_standard_error():
    d = weight_diagnostics(np.array([2.0, 2.0, 2.0]), cluster=np.array([4, 4, 4]))  # one session: no se
    assert d["mean_weight_se"] is None and not any("standard errors from 1" in w for w in d["warnings"])
    d = weight_diagnostics(np.array([2.0, 2.0, 2.0]), cluster=np.array([1, 2, 3]))  # se 0, mean 2: flagged
    assert any("standard errors from 1" in w for w in d["warnings"])


def test_position_marginals_refuses_too_many_candidates():
    from ranking.ope.plackett_luce import MAX_MARGINAL_TERMS, marginal_terms
    assert marginal_terms(3, 2) == 3 + 3 * 2 and marginal_terms(2, 5) == 2 + 2 * 1
    assert marginal_terms(100, 5) > MAX_MARGINAL_TERMS
    logw = np.zeros((2, 100))
    logw[0, 10:] = -np.inf
    with pytest.raises(ValueError, match=r"N = 100 candidates for lists of K = 5.*limit"):
        position_marginals(logw, 5)
