"""The synthetic personalised world (determinism, truth apart, preference_signal 0 independence) and the
PHD evaluation protocol on a hand-computed case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kuaihl_rec.data.phd.world import generate_phd_world, phd_world_config, utility
from kuaihl_rec.metrics.phd import (
    PHDItem,
    block_average,
    frame_labels,
    frame_scores,
    phd_evaluate,
    position_prior_scores,
    random_scores,
)


def _tiny(**knobs):
    return generate_phd_world(phd_world_config("tiny", **knobs))


def test_world_is_deterministic_by_seed_and_keeps_truth_apart():
    (a, ta), (b, _), (c, _) = _tiny(seed=3), _tiny(seed=3), _tiny(seed=4)
    pd.testing.assert_frame_equal(a.labels.selections, b.labels.selections)
    assert all(np.array_equal(a.videos[v].visual, b.videos[v].visual) for v in a.videos)
    assert not a.labels.selections.equals(c.labels.selections)
    assert set(a.labels.selections.columns) == {"user_id", "video_id", "start", "duration", "role"}
    assert set(a.labels.users.columns) == {"user_id", "split"}
    assert {"topic", "generic"} <= set(ta.shots.columns) and {"topic", "weight"} <= set(ta.interests.columns)
    counts = ta.interests.groupby("user_id").size()
    assert (counts == 3).all()  # several distinct interests per user (a mixture)
    hist = a.labels.selections[a.labels.selections["role"] == "history"].groupby("user_id").size()
    assert (hist == 4).all()


def test_utility_ignores_the_user_at_preference_signal_zero():
    cfg = phd_world_config("tiny", preference_signal=0.0)
    topics, generic, noise = np.array([0, 3, 5, 3]), np.array([0.2, -1.0, 0.5, 1.5]), np.array([0.1, 0.0, -0.2, 0.3])
    one, other = np.zeros(cfg.n_topics), np.zeros(cfg.n_topics)
    one[3], other[[0, 5]] = 3.0, [1.0, 2.0]
    assert np.array_equal(utility(topics, generic, one, noise, cfg), utility(topics, generic, other, noise, cfg))
    cfg = phd_world_config("tiny")
    assert not np.array_equal(utility(topics, generic, one, noise, cfg), utility(topics, generic, other, noise, cfg))


def test_twin_highlights_do_not_depend_on_the_users_interests():
    """At preference_signal 0, users with other interests (interests_per_user 1 vs 5) make exactly the
    same selections; with a preference signal they do not, and they favour their interests."""
    (few, _), (many, _) = _tiny(preference_signal=0.0, interests_per_user=1), _tiny(preference_signal=0.0,
                                                                                     interests_per_user=5)
    pd.testing.assert_frame_equal(few.labels.selections, many.labels.selections)
    (few, t_few), (many, _) = _tiny(interests_per_user=1), _tiny(interests_per_user=5)
    assert not few.labels.selections.equals(many.labels.selections)
    data, truth = generate_phd_world(phd_world_config("default", n_videos=200, n_train_users=300, n_test_users=0))
    twin, _ = generate_phd_world(phd_world_config("default", n_videos=200, n_train_users=300, n_test_users=0,
                                                  preference_signal=0.0))
    assert _on_interest_share(data, truth) > _on_interest_share(twin, truth) + 0.2
    assert abs(_on_interest_share(twin, truth) - _base_share(twin, truth)) < 0.06


def _shots(truth):
    return {v: (g["first"].to_numpy(), g["end"].to_numpy(), g["topic"].to_numpy())
            for v, g in truth.shots.groupby("video_id")}


def _on_interest_share(data, truth):
    interests, shots = truth.interests.groupby("user_id")["topic"].apply(set), _shots(truth)
    sel = data.labels.selections
    hits = []
    for u, v, st in zip(sel["user_id"], sel["video_id"], sel["start"]):
        first, end, topic = shots[v]
        hits.append(int(topic[(first <= st) & (end > st)][0]) in interests[u])
    return float(np.mean(hits))


def _base_share(data, truth):
    """Share of the selected videos' segments whose topic is among the user's interests."""
    interests, shots = truth.interests.groupby("user_id")["topic"].apply(set), _shots(truth)
    sel = data.labels.selections
    shares = []
    for u, v in zip(sel["user_id"], sel["video_id"]):
        first, end, topic = shots[v]
        shares.append(float(((end - first) * np.isin(topic, list(interests[u]))).sum() / (end - first).sum()))
    return float(np.mean(shares))


def test_phd_map_on_a_hand_computed_case():
    # 15 s video, 1 s segments, one selection [2 s, 6 s): frames 60..179 positive.
    scores = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 5, 5, 5, 5, 5], dtype=float)
    item = PHDItem("u", [(2.0, 4.0)], 15.0, scores, 1.0)
    labels = frame_labels([(2.0, 4.0)], 450)
    assert labels.sum() == 120 and labels[60] == 1 and labels[59] == 0 and labels[180] == 0
    blocks = block_average(frame_scores(scores, 1.0, 450), 150)
    assert np.allclose(blocks[[0, 149, 150, 300]], [0.6, 0.6, 0.0, 5.0])
    # ranking: block 3 (0 of 150 positive), block 1 (90), block 2 (30): P = 0, 90/300, 120/450 at recall
    # 0, 0.75, 1; interpolated AP = mean(max(0.3, 0.2667), 0.2667) = 0.28333
    perfect = PHDItem("v", [(0.0, 5.0)], 10.0, np.array([1.0] * 5 + [0.0] * 5), 1.0)
    result = phd_evaluate([item, perfect])
    assert result["ap"] == pytest.approx([(0.3 + 120 / 450) / 2, 1.0])
    assert result["map"] == pytest.approx(100 * ((0.3 + 120 / 450) / 2 + 1.0) / 2)
    assert result["hit1"] == 50.0  # the top block of the first video holds no positive frame


def test_references_and_block_edges():
    assert np.array_equal(position_prior_scores(4), [0, -1, -2, -3])
    a, b = random_scores(5, np.random.default_rng(1)), random_scores(5, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert np.allclose(block_average(np.arange(7.0), 3), [1, 1, 1, 4, 4, 4, 6])  # the last block is shorter
    assert np.array_equal(frame_scores(np.array([1.0, 2.0]), 0.5, 45), [1.0] * 15 + [2.0] * 30)  # past the end: last


def test_frame_scores_map_frames_to_segments_exactly():
    """Frame f -> segment f // (segment_seconds * fps) with no float drift (0.2 s: frame 18 is segment 3)."""
    for ss, per in ((0.2, 6), (0.1, 3), (0.4, 12), (1.0, 30), (1.1, 33), (0.9, 27)):
        n_seg = 40
        got = frame_scores(np.arange(n_seg, dtype=float), ss, n_seg * per)
        assert np.array_equal(got, np.arange(n_seg * per) // per), ss
