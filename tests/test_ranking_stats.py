"""ranking.stats and ranking.blend calibration against brute force, reference libraries and hand examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from ranking.blend import Calibrator, Formula, isotonic_fit, parse_formula
from ranking.stats import (
    bootstrap_log_lifts,
    bootstrap_summary,
    cuped_log_lift,
    holm,
    linearize,
    log_ratio_se,
    ratio_lift,
    srm_test,
)


def _users(rng, n, ctr=0.1, reps=None):
    """Heterogeneous users: impressions ~ 1 + Poisson(Gamma), clicks ~ Binomial(impr, user CTR)."""
    shape = (n,) if reps is None else (reps, n)
    activity = rng.gamma(2.0, 4.0, shape)
    y = 1 + rng.poisson(activity)
    p = np.clip(ctr * rng.lognormal(0.0, 0.5, shape) / math.exp(0.125), 0, 1)
    x = rng.binomial(y, p)
    return x.astype(float), y.astype(float)


def test_linearize_matches_textbook_delta_formula():
    rng = np.random.default_rng(0)
    x, y = _users(rng, 500)
    n, xb, yb = len(x), x.mean(), y.mean()
    r = xb / yb
    cov = np.cov(x, y, ddof=1)
    var_r = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * yb * yb)
    L, phi = linearize(x, y)
    assert L == pytest.approx(math.log(r))
    assert abs(phi.mean()) < 1e-12
    assert log_ratio_se(x, y) ** 2 == pytest.approx(var_r / r**2, rel=1e-10)


def test_delta_se_matches_monte_carlo_spread():
    rng = np.random.default_rng(1)
    reps, n = 2000, 400
    x, y = _users(rng, n, reps=reps)
    logs = np.log(x.sum(1) / y.sum(1))
    mc_sd = logs.std(ddof=1)
    delta = np.array([log_ratio_se(x[i], y[i]) for i in range(200)])
    assert delta.mean() == pytest.approx(mc_sd, rel=0.05)


@pytest.mark.parametrize("paired", [False, True])
def test_delta_se_matches_bootstrap(paired):
    rng = np.random.default_rng(2)
    n = 3000
    x_c, y_c = _users(rng, n)
    if paired:  # the same users, treatment correlated with control
        y_t = y_c + rng.poisson(0.5, n)
        x_t = np.minimum(y_t, x_c + rng.binomial(1, 0.05, n))
    else:
        x_t, y_t = _users(rng, n, ctr=0.11)
    lf = ratio_lift(x_t, y_t, x_c, y_c, paired=paired)
    draws = bootstrap_log_lifts(x_t[:, None], y_t[:, None], x_c[:, None], y_c[:, None], paired=paired, n_boot=1500, seed=3)
    b = bootstrap_summary(draws[:, 0])
    assert b["se"] == pytest.approx(lf.se, rel=0.08)
    assert b["ci"][0] == pytest.approx(lf.ci[0], abs=0.25 * (lf.ci[1] - lf.ci[0]))


def test_lift_interval_coverage_on_synthetic_ratios():
    rng = np.random.default_rng(4)
    reps, n = 1000, 300
    x_c, y_c = _users(rng, n, ctr=0.10, reps=reps)
    x_t, y_t = _users(rng, n, ctr=0.12, reps=reps)
    # the true lift of the ratio of expectations: both arms share the design, so it is 0.12 / 0.10 - 1
    truth = 0.2
    cover = np.mean([ratio_lift(x_t[i], y_t[i], x_c[i], y_c[i]).covers(truth) for i in range(reps)])
    assert 0.93 <= cover <= 0.97


def test_paired_se_matches_monte_carlo():
    rng = np.random.default_rng(5)
    reps, n = 1500, 400
    x_c, y_c = _users(rng, n, reps=reps)
    y_t = y_c + rng.poisson(1.0, y_c.shape)
    x_t = np.minimum(y_t, x_c + rng.binomial(2, 0.1, y_c.shape))
    L = np.log(x_t.sum(1) / y_t.sum(1)) - np.log(x_c.sum(1) / y_c.sum(1))
    se = np.array([ratio_lift(x_t[i], y_t[i], x_c[i], y_c[i], paired=True).se for i in range(200)])
    assert se.mean() == pytest.approx(L.std(ddof=1), rel=0.07)
    # ignoring the pairing overstates the variance here (positively correlated arms)
    unpaired = ratio_lift(x_t[0], y_t[0], x_c[0], y_c[0]).se
    assert unpaired > 2 * se[0]


def test_per_user_mean_is_the_ratio_with_unit_denominator():
    rng = np.random.default_rng(6)
    a, b = rng.exponential(10.0, 4000), rng.exponential(11.0, 4000)
    lf = ratio_lift(b, np.ones_like(b), a, np.ones_like(a))
    assert lf.treatment == pytest.approx(b.mean())
    se_direct = math.sqrt(b.var(ddof=1) / len(b) / b.mean() ** 2 + a.var(ddof=1) / len(a) / a.mean() ** 2)
    assert lf.se == pytest.approx(se_direct, rel=1e-10)
    assert lf.lift == pytest.approx(b.mean() / a.mean() - 1)
    assert lf.ci[0] < lf.lift < lf.ci[1]
    assert lf.p_value == pytest.approx(2 * st.norm.sf(abs(math.log(b.mean() / a.mean())) / se_direct))


def test_cuped_unbiased_and_reduces_variance():
    rng = np.random.default_rng(7)
    reps, n = 800, 400
    plain, cuped, cover, vr = [], [], [], []
    truth = math.log(1.05)
    for _ in range(reps):
        act = rng.gamma(2.0, 5.0, 2 * n)  # persistent user activity drives both periods
        pre = rng.poisson(act).astype(float)
        post = rng.poisson(act).astype(float)
        post[:n] *= 1.05  # arm t: exactly +5% per user
        ones = np.ones(n)
        p = ratio_lift(post[:n], ones, post[n:], ones)
        c, info = cuped_log_lift(post[:n], ones, post[n:], ones, pre[:n], ones, pre[n:], ones)
        plain.append(p.log_lift)
        cuped.append(c.log_lift)
        cover.append(c.ci[0] <= 0.05 <= c.ci[1])
        vr.append(info["variance_reduction"])
    plain, cuped = np.array(plain), np.array(cuped)
    assert abs(cuped.mean() - truth) < 3 * cuped.std() / math.sqrt(reps)
    assert cuped.var() < 0.6 * plain.var()
    assert np.mean(vr) == pytest.approx(1 - cuped.var() / plain.var(), abs=0.08)
    assert 0.93 <= np.mean(cover) <= 0.97


def test_cuped_with_an_uninformative_covariate_changes_little():
    rng = np.random.default_rng(8)
    n = 5000
    x_t, y_t = _users(rng, n, 0.11)
    x_c, y_c = _users(rng, n, 0.10)
    px, py = _users(rng, 2 * n)
    c, info = cuped_log_lift(x_t, y_t, x_c, y_c, px[:n], py[:n], px[n:], py[n:])
    p = ratio_lift(x_t, y_t, x_c, y_c)
    assert abs(info["variance_reduction"]) < 0.01
    assert c.log_lift == pytest.approx(p.log_lift, abs=0.2 * p.se)


def test_srm_matches_scipy_chisquare():
    counts = [50_210, 49_790]
    r = srm_test(counts)
    ref = st.chisquare(counts)
    assert r["chi2"] == pytest.approx(ref.statistic)
    assert r["p_value"] == pytest.approx(ref.pvalue)
    assert not r["mismatch"]
    counts = [30_000, 21_000, 49_000]
    shares = [0.3, 0.2, 0.5]
    r = srm_test(counts, shares)
    ref = st.chisquare(counts, f_exp=np.array(shares) * sum(counts))
    assert r["chi2"] == pytest.approx(ref.statistic)
    assert r["p_value"] == pytest.approx(ref.pvalue)
    assert srm_test([10_500, 9_500])["mismatch"]


def test_holm_hand_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_holm_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(9).uniform(0, 0.2, 12)
    assert holm(p) == pytest.approx(sm.multipletests(p, method="holm")[1])


# ------------------------------------------------------------------------------------------------
# Calibration and formulas (ranking.blend)


def test_isotonic_fit_properties_and_reference():
    rng = np.random.default_rng(10)
    x = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * x))).astype(float)
    xs, ys = isotonic_fit(x, y)
    assert np.all(np.diff(ys) >= -1e-12)
    assert np.interp(x, xs, ys).mean() == pytest.approx(y.mean(), abs=1e-9)  # PAV preserves the mean
    iso = pytest.importorskip("sklearn.isotonic")
    ref = iso.IsotonicRegression().fit(x, y).predict(x)
    assert np.interp(x, xs, ys) == pytest.approx(ref, abs=1e-9)


def test_platt_recovers_a_known_link():
    rng = np.random.default_rng(11)
    s = rng.uniform(0.02, 0.98, 20000)
    logit = np.log(s / (1 - s))
    p_true = 1 / (1 + np.exp(-(0.5 * logit - 1.0)))
    y = (rng.random(len(s)) < p_true).astype(float)
    cal = Calibrator("platt").fit(s, y)
    assert cal.params["a"] == pytest.approx(0.5, abs=0.05)
    assert cal.params["b"] == pytest.approx(-1.0, abs=0.05)
    assert cal.transform(np.array([np.nan]))[0] != cal.transform(np.array([np.nan]))[0]  # NaN stays NaN


def test_zscore_and_rank_calibration():
    rng = np.random.default_rng(12)
    val = rng.normal(5.0, 2.0, 10000)
    z = Calibrator("zscore").fit(val)
    assert z.transform(np.array([5.0, 7.0])) == pytest.approx([0.0, 1.0], abs=0.05)
    r = Calibrator("rank").fit(val)
    assert r.transform(np.array([5.0])) == pytest.approx([0.5], abs=0.02)
    with pytest.raises(ValueError):
        Calibrator("isotonic").fit(val)  # needs labels


def test_formulas():
    v = {"a": np.array([0.1, 0.5, 0.9]), "b": np.array([0.3, 0.2, 0.1])}
    lin = parse_formula({"a": 1.0, "b": 2.0})
    assert lin.score(v) == pytest.approx(v["a"] + 2 * v["b"])
    prod = parse_formula({"product": {"a": [0.1, 2.0], "b": [0.0, 0.5]}})
    assert np.argsort(prod.score(v)).tolist() == np.argsort((v["a"] + 0.1) ** 2 * v["b"] ** 0.5).tolist()
    assert prod.with_weight("b", 1.0).weight("b") == 1.0
    assert lin.with_weight("c", 0.5).terms == ("a", "b", "c")
    assert lin.rename({"b": "x"}).terms == ("a", "x")
    with pytest.raises(ValueError):
        Formula.product({"a": (-0.5, 1.0)}).score(v)
    with pytest.raises(KeyError):
        parse_formula({"zz": 1.0}).score(v)
    with pytest.raises(ValueError):
        parse_formula({"a": "heavy"})
