"""The offline A/B simulator: calibration (A/A, planted effects), sanity arms, causality, determinism,
randomisation. Runs on a small synthetic world generated in memory (well under a second)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from kuaihl_rec.data.world import generate_world, load_world_config
from ranking.blend import Formula, Term, resolve_term
from ranking.experiment import Arm, Experiment, assign_arms
from ranking.scores import (
    LeakageError,
    ObservableTerm,
    ScoreTable,
    check_causal,
    load_scores,
)
from ranking.simulator import (
    TICKS_PER_DAY,
    aggregate_users,
    build_feed,
    load_sim_world,
    make_population,
    simulate,
)
from ranking.stats import srm_test

#: ~240 rooms of ~40 min on one day, half of them held out: ~5 rooms on air when sessions start.
WORLD_KW = dict(n_streamers=60, n_rooms=240, segments_per_room=80, n_days=1, test_fraction=0.5, visual_dim=4, text_dim=4)
BASE = Formula.linear({"ctr": 1.0, "lvtr": 1.0})
KEY = ("ctr", "long_view_rate", "play_duration_per_user", "clicks_per_user")


@pytest.fixture(scope="module")
def world():
    return generate_world(load_world_config("tiny", **WORLD_KW))


@pytest.fixture(scope="module")
def sim(world):
    return load_sim_world(world, days="auto")


def proxy_content(world, noise: float = 0.4, seed: int = 0):
    """A causal stand-in for a trained content model: the hidden attractiveness of segment u - 1 plus
    noise, as a score for target u (NaN at u = 0, which has no past)."""
    tr = world.truth.select(["live_id", "segment", "attract_logit"]).to_pandas()
    rng = np.random.default_rng(seed)
    prev = tr["attract_logit"].to_numpy(np.float64)
    keys = tr["live_id"].to_numpy(np.int64) * (1 << 20) + tr["segment"].to_numpy(np.int64) + 1  # row u-1 -> key of u
    score = 1 / (1 + np.exp(-(prev + noise * rng.standard_normal(len(prev)))))
    order = np.argsort(keys)
    keys, score = keys[order], score[order]

    def fn(live_id, segment):
        k = live_id * (1 << 20) + segment
        pos = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
        return np.where(keys[pos] == k, score[pos], np.nan)

    return fn


@pytest.fixture(scope="module")
def values(world, sim):
    ctx = sim.context()
    terms = {
        "ctr": Term("ctr", load_scores("cum_ctr")),
        "lvtr": Term("lvtr", load_scores("cum_lvtr")),
        "content": Term("content", load_scores(proxy_content(world), name="content", label="lvtr")),
        "oracle": Term("oracle", load_scores("truth:true_lvtr"), "zscore", "prior"),
    }
    out = {k: resolve_term(t, ctx) for k, t in terms.items()}
    perm = np.random.default_rng(0).permutation(len(sim.live_id))
    out["placebo"] = dataclasses.replace(out["content"], name="placebo", values=out["content"].values[perm])
    return out


@pytest.fixture(scope="module")
def exp(sim, values):
    return Experiment(sim, {k: v.values for k, v in values.items()})


def test_world_is_laid_out_causally(sim):
    assert sim.feed_stats()["mean_rooms_on_air"] > 3.0
    # a room broadcasts segment u at tick start + u; rows of a room copy are contiguous
    start = sim.tick - sim.segment[sim.base_row]
    assert np.all(start == start[np.r_[0, np.flatnonzero(np.diff(sim.room)) + 1]][sim.room])
    assert np.all(np.diff(sim.hazard_cum) > 0)
    assert np.array_equal(sim.count, np.bincount(sim.tick, minlength=sim.n_ticks))


def test_folding_keeps_time_of_day(world):
    full = load_sim_world(world, days=None)
    one = load_sim_world(world, days=1)
    assert full.world_days >= 2 and one.days == 1
    assert np.array_equal(full.base_row, one.base_row)
    assert np.array_equal(full.tick % TICKS_PER_DAY, one.tick % TICKS_PER_DAY)
    three = load_sim_world(world, days=full.world_days + 1)  # replayed: some rooms twice
    assert three.n_rows > full.n_rows and set(np.unique(three.live_id)) == set(np.unique(full.live_id))


def test_aa_coverage_and_exact_planted_effect(exp, sim):
    """1000 independent A/A experiments (fresh users, fresh assignment salt each): the 95% intervals
    cover 0 in 93-97% of them; an exactly planted +5% play duration is covered as often."""
    arms = [Arm("control", BASE, "control"), Arm("aa", BASE, "aa"), Arm("planted", BASE, "arm", (("play_multiplier", 1.05),))]
    n_exp = 1000
    cover = {m: 0 for m in KEY}
    planted_cover, planted_other = 0, 0
    for seed in range(n_exp):
        pop = make_population(sim, 1500, seed=1000 + seed, pre_period=False)
        res = exp.run(arms, pop, "randomised", cuped=False, daily=False, metrics=KEY)
        for m in KEY:
            cover[m] += res.lifts["aa"][m].covers(0.0)
        planted_cover += res.lifts["planted"]["play_duration_per_user"].covers(0.05)
        planted_other += res.lifts["planted"]["ctr"].covers(0.0)
    rates = {m: c / n_exp for m, c in cover.items()}
    assert all(0.93 <= r <= 0.97 for r in rates.values()), rates
    assert 0.93 <= planted_cover / n_exp <= 0.97, planted_cover / n_exp
    assert 0.93 <= planted_other / n_exp <= 0.97


def test_behavioural_planted_effect_is_recovered(exp, sim):
    """A +15% click probability: its lift, measured precisely by a large paired run, lies inside the
    95% interval of small randomised experiments about 95% of the time."""
    arms = [Arm("control", BASE, "control"), Arm("boost", BASE, "arm", (("click_multiplier", 1.15),))]
    big = exp.run(arms, make_population(sim, 40_000, seed=7, pre_period=False), "paired", cuped=False, daily=False, metrics=KEY)
    truth = {m: big.lifts["boost"][m].lift for m in ("ctr", "clicks_per_user")}
    assert 0.10 < truth["ctr"] < 0.25 and big.lifts["boost"]["ctr"].p_value < 1e-6
    hits = {m: 0 for m in truth}
    n_exp = 300
    for seed in range(n_exp):
        res = exp.run(arms, make_population(sim, 3000, seed=5000 + seed, pre_period=False), "randomised", cuped=False, daily=False,
                      metrics=tuple(truth))
        for m in truth:
            hits[m] += res.lifts["boost"][m].covers(truth[m])
    assert all(0.91 <= h / n_exp <= 0.985 for h in hits.values()), hits


def test_sanity_arms_placebo_oracle_treatment(exp, sim):
    arms = [
        Arm("control", BASE, "control"),
        Arm("treatment", BASE.with_weight("content", 1.0), "treatment"),
        Arm("placebo", BASE.with_weight("placebo", 1.0), "placebo"),
        Arm("oracle", BASE.with_weight("oracle", 1.0), "oracle"),
    ]
    pop = make_population(sim, 30_000, seed=11)
    paired = exp.run(arms, pop, "paired", cuped=False, daily=False, metrics=KEY)
    rand = exp.run(arms, pop, "randomised", daily=False, metrics=KEY)
    t, pl, o = paired.lifts["treatment"], paired.lifts["placebo"], paired.lifts["oracle"]
    for m in ("ctr", "play_duration_per_user"):
        assert t[m].lift > 0 and t[m].p_value < 0.01  # the content proxy helps
        assert o[m].lift >= t[m].lift  # the oracle bounds it
        assert not (pl[m].p_value < 0.05 and pl[m].lift > 0)  # a shuffled score never gains
        assert pl[m].lift < t[m].lift
        r = rand.lifts["placebo"][m]
        assert not (r.p_value < 0.05 and r.lift > 0)
    assert rand.srm["p_value"] > 1e-3


def _perturbed_future(values, sim, cut_tick, seed=0):
    """Term values with every base row on air after ``cut_tick`` replaced by noise."""
    future_base = np.unique(sim.base_row[sim.tick > cut_tick])
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in values.items():
        w = v.copy()
        w[future_base] = rng.normal(size=len(future_base)) * 10
        out[k] = w
    return out


def test_only_the_segment_on_air_is_scored_and_the_future_changes_no_decision(exp, sim, values):
    pop = make_population(sim, 4000, seed=3, pre_period=False)
    f = BASE.with_weight("content", 1.0)
    feed = exp.feed(f)
    out = simulate(sim, feed, pop, pop.sessions, exp.sim, log=True)
    log = out.log
    assert out.impressions == len(log["row"]) > 1000
    # every impression shows the room's segment on air at that tick
    assert np.array_equal(sim.tick[log["row"]], log["tick"])
    # the feed at tick t is ordered by the scores of the segments on air at t only
    t = int(np.median(log["tick"]))
    rows = feed.order[feed.ptr[t]: feed.ptr[t] + feed.count[t]]
    assert np.all(sim.tick[rows] == t) and np.all(np.diff(feed.score[rows]) <= 0)
    # perturbing every score (of every term) of the segments after tick t changes nothing up to t
    base = {k: v.values for k, v in values.items()}
    pert = Experiment(sim, _perturbed_future(base, sim, t))
    out2 = simulate(sim, pert.feed(f), pop, pop.sessions, exp.sim, log=True)
    log2 = out2.log

    def upto(lg):
        m = lg["tick"] <= t
        return pd.DataFrame({k: v[m] for k, v in lg.items()}).sort_values(["session", "round", "position"]).reset_index(drop=True)

    a, b = upto(log), upto(log2)
    assert len(a) > 100
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(out.values, out2.values)  # ... while the future itself did change


def test_future_labels_do_not_reach_earlier_scores(world, sim):
    """Observable counters and labels of segments on air after tick t are perturbed; every built-in
    term's calibrated, filled value for the segments on air up to t is unchanged."""
    t = int(np.quantile(sim.tick, 0.5))
    ctx = sim.context()
    obs2 = ctx.obs.copy()
    fut = np.zeros(len(obs2), dtype=bool)
    fut[np.unique(sim.base_row[sim.tick > t])] = True
    rng = np.random.default_rng(0)
    for col in ("lvtr", "ctr"):
        obs2.loc[fut, col] = rng.random(fut.sum()).astype(np.float32)
    for col in ("n_clicks", "n_exposures", "n_viewers", "n_long_viewers"):
        obs2.loc[fut, col] = rng.integers(1, 10_000, fut.sum())
    obs2["n_clicks"] = np.minimum(obs2["n_clicks"], obs2["n_exposures"])
    obs2["n_long_viewers"] = np.minimum(obs2["n_long_viewers"], obs2["n_viewers"])
    ctx2 = dataclasses.replace(ctx, obs=obs2)
    past = np.zeros(len(obs2), dtype=bool)
    past[np.unique(sim.base_row[sim.tick <= t])] = True
    for name in ("prev_ctr", "prev_lvtr", "cum_ctr", "cum_lvtr", "prev_viewers"):
        v1 = resolve_term(Term(name, load_scores(name)), ctx).values
        v2 = resolve_term(Term(name, load_scores(name)), ctx2).values
        assert np.array_equal(v1[past], v2[past]), name
        assert not np.array_equal(v1, v2), name


def test_leaky_sources_are_refused(sim, world):
    ctx = sim.context()
    # reads the label of the segment on air (u) instead of u - 1
    leaky = ObservableTerm(lambda obs: obs["lvtr"].to_numpy(np.float64), name="current_lvtr", label="lvtr")
    with pytest.raises(LeakageError, match="not causal"):
        leaky.values(ctx)
    # reads the next segment (a centred moving average)
    centred = ObservableTerm(lambda obs: obs.groupby("live_id")["ctr"].transform(lambda s: s.rolling(3, center=True, min_periods=1).mean()).to_numpy(),
                             name="centred_ctr", label="ctr")
    with pytest.raises(LeakageError):
        centred.values(ctx)
    check_causal(lambda obs: obs.groupby("live_id")["ctr"].shift(1).to_numpy(), ctx.obs)  # causal: passes
    # the LVTR of segment u - 1 (or u - 2) is not complete at tick u (its 60 s outcome is open)
    for lag in (1, 2):
        with pytest.raises(LeakageError, match="incomplete"):
            check_causal(lambda obs: obs.groupby("live_id")["lvtr"].shift(lag).to_numpy(), ctx.obs, name=f"lvtr_lag{lag}")
    check_causal(lambda obs: obs.groupby("live_id")["lvtr"].shift(3).to_numpy(), ctx.obs)  # complete: passes
    # a predictions table keyed by the INPUT segment (it scores segment 0) is refused
    table = pd.DataFrame({"live_id": sim.live_id, "segment": sim.segment, "score": np.zeros(len(sim.live_id))})
    with pytest.raises(LeakageError, match="segment 0"):
        ScoreTable(table, name="shifted")
    ScoreTable(table[table.segment > 0], name="ok")


def test_missing_scores_are_counted_and_filled(sim, values):
    rep = values["content"].missing
    n_rooms = len(np.unique(sim.live_id))
    assert rep.n_first_segment == n_rooms and rep.n_missing == n_rooms and rep.n_prior == n_rooms
    # a table with every third segment missing: carried from the room's previous score
    keep = (sim.segment % 3 != 0)
    table = pd.DataFrame({"live_id": sim.live_id[keep], "segment": sim.segment[keep], "score": sim.segment[keep].astype(float)})
    tv = resolve_term(Term("t", ScoreTable(table, name="t"), calibrate="none", missing="carry"), sim.context())
    assert tv.missing.n_missing == int((~keep).sum())
    assert tv.missing.n_prior == n_rooms and tv.missing.n_carried == int((~keep).sum()) - n_rooms
    gap = np.flatnonzero(~keep & (sim.segment > 0))
    assert np.array_equal(tv.values[gap], sim.segment[gap - 1].astype(float))
    tv = resolve_term(Term("t", ScoreTable(table, name="t"), calibrate="none", missing="prior"), sim.context())
    assert tv.missing.n_carried == 0 and tv.missing.n_prior == int((~keep).sum())
    with pytest.raises(ValueError, match="no score for any"):
        other = pd.DataFrame({"live_id": [1], "segment": [1], "score": [0.5]})
        resolve_term(Term("x", ScoreTable(other, name="x")), sim.context())


def test_deterministic_by_seed(exp, sim):
    arms = [Arm("control", BASE, "control"), Arm("treatment", BASE.with_weight("content", 1.0), "treatment")]
    r1 = exp.run(arms, make_population(sim, 3000, seed=5), "randomised", n_boot=20)
    r2 = exp.run(arms, make_population(sim, 3000, seed=5), "randomised", n_boot=20)
    r3 = exp.run(arms, make_population(sim, 3000, seed=6), "randomised", n_boot=20)
    for a in ("control", "treatment"):
        assert np.array_equal(r1.totals[a], r2.totals[a])
    def no_timing(d):
        for e in d["arms"].values():
            e.pop("simulation_s")
        return d

    assert no_timing(r1.to_dict()) == no_timing(r2.to_dict())
    assert not np.array_equal(r1.totals["control"], r3.totals["control"])
    # a fresh world from the same config gives the same simulation
    sim2 = load_sim_world(generate_world(load_world_config("tiny", **WORLD_KW)), days="auto")
    f = build_feed(sim2, BASE.score(exp.values))
    pop = make_population(sim2, 2000, seed=5)
    a = simulate(sim2, f, pop, pop.sessions)
    b = simulate(sim, exp.feed(BASE), make_population(sim, 2000, seed=5), pop.sessions)
    assert np.array_equal(a.values, b.values)


def test_per_user_sums_match_the_sessions(exp, sim):
    pop = make_population(sim, 3000, seed=4, pre_period=False)
    feed = exp.feed(BASE)
    small = dataclasses.replace(exp.sim, chunk_sessions=257)  # many chunks, users split across chunk borders
    a = simulate(sim, feed, pop, pop.sessions, small, n_users=pop.n_users)
    b = simulate(sim, feed, pop, pop.sessions, exp.sim)
    assert np.array_equal(a.values, b.values)
    assert np.allclose(a.user_days, aggregate_users(pop.sessions, b, pop.n_users, sim.days))
    assert a.impressions == int(b.values[:, 0].sum()) == int(a.position_impressions.sum())
    assert int(b.values[:, 1].sum()) == int(a.position_clicks.sum())
    v = b.values
    assert np.all(v[:, 1] <= v[:, 0]) and np.all(v[:, 2] + v[:, 3] <= v[:, 1]) and np.all(v[:, 5] == 1)


def test_paired_mode_uses_common_random_numbers(exp, sim):
    pop = make_population(sim, 3000, seed=9, pre_period=False)
    same = exp.run([Arm("control", BASE, "control"), Arm("copy", Formula.linear({"lvtr": 2.0, "ctr": 2.0}))], pop, "paired", daily=False)
    assert np.array_equal(same.totals["control"], same.totals["copy"])  # same ranking -> identical outcomes
    # a randomised experiment is the paired one restricted to each user's arm
    arms = [Arm("control", BASE, "control"), Arm("treatment", BASE.with_weight("content", 1.0), "treatment")]
    pr = exp.run(arms, pop, "paired", daily=False)
    rd = exp.run(arms, pop, "randomised", cuped=False, daily=False)
    for a in ("control", "treatment"):
        pos = np.searchsorted(pr.users[a], rd.users[a])
        assert np.array_equal(pr.totals[a][pos], rd.totals[a])


def test_randomisation_stable_across_days_and_srm(world, exp, sim):
    ids = np.arange(1, 200_001)
    arm = assign_arms(ids, 2, salt="exp-1")
    assert np.array_equal(arm, assign_arms(ids[::-1], 2, salt="exp-1")[::-1])  # order-free
    assert np.array_equal(arm[:1000], assign_arms(ids[:1000], 2, salt="exp-1"))  # population-size-free
    assert not np.array_equal(arm, assign_arms(ids, 2, salt="exp-2"))
    assert srm_test(np.bincount(arm))["p_value"] > 1e-3
    kept = np.flatnonzero(~((arm == 1) & (ids % 20 == 0)))  # lose 5% of one arm's users: detected
    assert srm_test(np.bincount(arm[kept]))["mismatch"]
    # over several simulated days (the world replayed), every user keeps one arm on every day
    sim3 = load_sim_world(world, days=3)
    exp3 = Experiment(sim3, exp.values)
    arms = [Arm("control", BASE, "control"), Arm("treatment", BASE.with_weight("content", 1.0), "treatment")]
    pop = make_population(sim3, 6000, seed=2, pre_period=False)
    res = exp3.run(arms, pop, "randomised", cuped=False, salt="exp-1")
    assert set(res.users["control"]).isdisjoint(res.users["treatment"])
    idx = assign_arms(pop.user_id, 2, salt="exp-1")
    assert np.all(idx[res.users["control"]] == 0) and np.all(idx[res.users["treatment"]] == 1)
    days_per_user = pd.Series(pop.sessions.day).groupby(pop.sessions.user).nunique()
    assert (days_per_user >= 2).sum() > 1000  # many users are active on several days ...
    assert res.srm["p_value"] > 1e-3  # ... and the 50/50 split holds
    assert len(res.daily["treatment"]["ctr"]) == 3


def test_lvtr_terms_read_only_complete_segments(sim):
    """prev_lvtr = LVTR of segment u - 3; cum_lvtr sums segments <= u - 3 (brute force per row)."""
    from ranking.scores import cum_lvtr, prev_lvtr

    obs = sim.context().obs
    rows = {(r.live_id, r.segment): r for r in obs.itertuples()}
    got_prev, got_cum = prev_lvtr(obs), cum_lvtr(obs)
    for i, r in enumerate(obs.itertuples()):
        back = rows.get((r.live_id, r.segment - 3))
        if back is None:
            assert np.isnan(got_prev[i])
        else:
            assert got_prev[i] == pytest.approx(float(back.lvtr))
        if r.segment == 0:
            assert np.isnan(got_cum[i])
            continue
        done = [rows[(r.live_id, j)] for j in range(0, r.segment - 2) if (r.live_id, j) in rows]
        want = (sum(x.n_long_viewers for x in done) + 3.0) / (sum(x.n_viewers for x in done) + 5.0)
        assert got_cum[i] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("config, key", [
    ({"treatment_weight": float("nan")}, "treatment_weight"),
    ({"arms": {"control": {"ctr": 1.0, "lvtr": float("inf")}}}, "arms.control.lvtr"),
    ({"sweep": {"weights": [0.0, float("nan")]}}, r"sweep.weights\[1\]"),
])
def test_a_non_finite_number_in_the_arms_config_is_refused(config, key):
    from ranking.arms import load_arms_config

    with pytest.raises(ValueError, match=f"arms config: '{key}' is (nan|inf); expected a finite number"):
        load_arms_config(config)
