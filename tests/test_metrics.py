"""Tests of kuaihl_rec.metrics: against scipy, brute-force pair sums, hand-computed
cases, and numbers published on real data (TVSum, QVHighlights; ../shared/data)."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from kuaihl_rec import metrics as M

def _shared_data() -> Path:
    """KUAIHL_SHARED_DATA, else ../shared/data beside the checkout, else the workplace's /work/shared/data."""
    if os.environ.get("KUAIHL_SHARED_DATA"):
        return Path(os.environ["KUAIHL_SHARED_DATA"])
    candidates = [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path("/work/shared/data")]
    return next((c for c in candidates if (c / "tvsum").is_dir()), candidates[0])


SHARED_DATA = _shared_data()
TVSUM_MAT = SHARED_DATA / "tvsum" / "ydata-tvsum50.mat"
QVH_DIR = SHARED_DATA / "qvhighlights"


def _tied_data(rng: np.random.Generator, n: int, levels: int = 5):
    """Heavily tied, positively correlated integer-valued pair."""
    y = rng.integers(0, levels, n).astype(float)
    s = np.clip(np.round(y + rng.normal(0, 1.5, n)), 0, levels - 1)
    return y, s


# --------------------------------------------------------------------------- brute-force references
def _brute_tau_b(y, s) -> float:
    """ContentCTR eq. 15 by enumerating all pairs."""
    p = q = t_s = t_y = 0
    for i, j in itertools.combinations(range(len(y)), 2):
        dy, ds = np.sign(y[i] - y[j]), np.sign(s[i] - s[j])
        if dy * ds > 0:
            p += 1
        elif dy * ds < 0:
            q += 1
        elif ds == 0 and dy != 0:
            t_s += 1
        elif dy == 0 and ds != 0:
            t_y += 1
    return (p - q) / math.sqrt((p + q + t_s) * (p + q + t_y))


def _brute_soft_auc(y, s) -> float:
    """sum_{i,j} y_i (1 - y_j) ([s_i > s_j] + [s_i = s_j] / 2) / (sum y * sum (1 - y)), i = j included."""
    y, s = np.asarray(y, float), np.asarray(s, float)
    win = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
    return float((y[:, None] * (1 - y)[None, :] * win).sum() / (y.sum() * (1 - y).sum()))


def _brute_interpolated_ap(labels, scores) -> float:
    """Video2GIF definition, literally: PR points at each distinct threshold (high to low),
    precision at recall r replaced by max precision at recall >= r, mean over distinct r > 0."""
    labels, scores = np.asarray(labels, float), np.asarray(scores, float)
    n_pos = labels.sum()
    if n_pos == 0:
        return 0.0
    points = []
    for thr in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= thr
        points.append((labels[sel].sum() / n_pos, labels[sel].sum() / sel.sum()))
    levels = sorted({r for r, _ in points if r > 0})
    return float(np.mean([max(p for r2, p in points if r2 >= r) for r in levels]))


# --------------------------------------------------------------------------- Kendall tau-b
def test_kendall_tau_b_hand_case():
    # P = 4, Q = 0, one pair tied in s only, one tied in y only: 4 / sqrt(5 * 5).
    assert M.kendall_tau_b([1, 2, 2, 3], [1, 1, 2, 3]) == pytest.approx(0.8, abs=1e-12)
    assert M.kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0, abs=1e-12)


def test_kendall_tau_b_matches_brute_force_and_scipy_on_ties():
    rng = np.random.default_rng(1)
    for n in (2, 3, 17, 250):
        y, s = _tied_data(rng, n, levels=4)
        if len(set(y)) < 2 or len(set(s)) < 2:
            continue
        got = M.kendall_tau_b(y, s)
        assert got == pytest.approx(_brute_tau_b(y, s), abs=1e-12)
        assert got == pytest.approx(stats.kendalltau(y, s, variant="b")[0], abs=1e-12)
        if n >= 17:  # tau-c differs on tied data: the variant matters
            assert abs(got - stats.kendalltau(y, s, variant="c")[0]) > 1e-3


def test_kendall_tau_b_constant_and_tiny_inputs_are_nan():
    assert math.isnan(M.kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(M.kendall_tau_b([1, 2, 3], [5, 5, 5]))
    assert math.isnan(M.kendall_tau_b([1.0], [2.0]))


def test_tau_at_thresholds_slices():
    rng = np.random.default_rng(2)
    y = np.round(rng.uniform(0, 1, 400), 1)
    s = y + rng.normal(0, 0.3, 400)
    got = M.tau_at_thresholds(y, s)
    assert set(got) == {"tau@0", "tau@0.2", "tau@0.4", "tau@0.6"}
    for lam in (0.0, 0.2, 0.4, 0.6):
        keep = y > lam  # strictly greater
        assert got[f"tau@{lam:g}"] == pytest.approx(stats.kendalltau(y[keep], s[keep])[0], abs=1e-12)
    # Slices get harder as the range of y shrinks.
    assert got["tau@0"] > got["tau@0.6"]
    few = M.tau_at_thresholds([0.1, 0.9, 0.3], [1, 2, 3], thresholds=(0.5,))
    assert list(few) == ["tau@0.5"] and math.isnan(few["tau@0.5"])


# --------------------------------------------------------------------------- Spearman
def test_spearman_hand_case_and_scipy():
    assert M.spearman_rho([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8, abs=1e-12)
    rng = np.random.default_rng(3)
    y, s = _tied_data(rng, 500)
    assert M.spearman_rho(y, s) == pytest.approx(stats.spearmanr(y, s)[0], abs=1e-12)
    assert math.isnan(M.spearman_rho([2, 2, 2], [1, 2, 3]))


# --------------------------------------------------------------------------- matrix fast path
def test_tau_b_and_rho_matrices_equal_scipy_on_heavy_ties():
    rng = np.random.default_rng(4)
    base = rng.integers(1, 6, 700)
    rankings = np.clip(base + rng.integers(-2, 3, (6, 700)), 1, 5)
    rankings[5] = 3  # a constant annotator
    tau, rho = M.kendall_tau_b_matrix(rankings), M.spearman_rho_matrix(rankings)
    assert tau.shape == rho.shape == (6, 6)
    for a in range(5):
        for b in range(5):
            assert tau[a, b] == pytest.approx(stats.kendalltau(rankings[a], rankings[b])[0], abs=1e-9)
            assert rho[a, b] == pytest.approx(stats.spearmanr(rankings[a], rankings[b])[0], abs=1e-9)
    assert np.isnan(tau[5]).all() and np.isnan(tau[:, 5]).all() and np.isnan(rho[5]).all()
    assert np.allclose(np.diag(tau)[:5], 1.0) and np.allclose(tau, tau.T, equal_nan=True)


def test_tau_b_matrix_many_levels_falls_back_and_agrees():
    rng = np.random.default_rng(5)
    rankings = np.round(rng.normal(size=(4, 300)), 1)  # ~60 levels
    fast = M.kendall_tau_b_matrix(rankings, max_levels=1000)  # contingency path
    slow = M.kendall_tau_b_matrix(rankings, max_levels=2)  # scipy per pair
    assert np.allclose(fast, slow, atol=1e-9)
    assert fast[0, 1] == pytest.approx(stats.kendalltau(rankings[0], rankings[1])[0], abs=1e-9)


def test_inter_annotator_agreement_protocol():
    rankings = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [4, 3, 2, 1]])
    got = M.inter_annotator_agreement(rankings)
    tau = np.array([[stats.kendalltau(a, b)[0] for b in rankings] for a in rankings])
    per_annotator = [(tau[i].sum() - tau[i, i]) / 2 for i in range(3)]
    assert got["kendall_tau_b"] == pytest.approx(np.mean(per_annotator), abs=1e-12)
    with pytest.raises(ValueError):
        M.inter_annotator_agreement(rankings[:1])


# --------------------------------------------------------------------------- grouped tau-b
def test_grouped_tau_b_matches_scipy_per_group():
    rng = np.random.default_rng(6)
    sizes = np.concatenate([rng.integers(1, 60, 200), [700, 1, 2, 513, 512]])  # > 512: scipy path
    groups = np.repeat(np.arange(sizes.size) * 7 + 3, sizes)
    rng.shuffle(groups)
    y, s = _tied_data(rng, groups.size, levels=5)
    s = s + 0.25 * (rng.random(groups.size) < 0.3)
    s[groups == groups[0]] = 1.0  # a constant-score group
    keys, taus = M.grouped_kendall_tau_b(y, s, groups)
    assert np.array_equal(keys, np.unique(groups))
    for key, tau in zip(keys, taus):
        m = groups == key
        want = stats.kendalltau(y[m], s[m])[0] if m.sum() >= 2 and np.ptp(y[m]) and np.ptp(s[m]) else np.nan
        if np.isnan(want):
            assert np.isnan(tau)
        else:
            assert tau == pytest.approx(want, abs=1e-9)


# --------------------------------------------------------------------------- soft AUC / log loss / ratio
def test_soft_auc_hand_case_brute_force_and_hard_labels():
    # (1 * 0.5 * 1 + 0.5 * 0.5 * 1/2 [self tie]) / (1.5 * 0.5) = 5/6
    assert M.soft_auc([1.0, 0.5], [0.9, 0.1]) == pytest.approx(5 / 6, abs=1e-12)
    rng = np.random.default_rng(7)
    y = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], 300)
    s = np.round(y + rng.normal(0, 0.4, 300), 1)  # many tied scores
    assert M.soft_auc(y, s) == pytest.approx(_brute_soft_auc(y, s), abs=1e-12)
    hard = (rng.random(300) < 0.4).astype(float)
    u = stats.mannwhitneyu(s[hard == 1], s[hard == 0]).statistic
    assert M.soft_auc(hard, s) == pytest.approx(u / (hard.sum() * (1 - hard).sum()), abs=1e-12)
    assert math.isnan(M.soft_auc([1.0, 1.0], [0.1, 0.2]))
    with pytest.raises(ValueError):
        M.soft_auc([1.5, 0.0], [0.1, 0.2])


def test_soft_logloss_hand_cases_and_clipping():
    y, p = [1.0, 0.0, 0.5], [0.8, 0.1, 0.5]
    want = -(math.log(0.8) + math.log(0.9) + math.log(0.5)) / 3
    assert M.soft_logloss(y, p) == pytest.approx(want, abs=1e-12)
    assert M.soft_logloss([0.0], [1.0]) == pytest.approx(-math.log(M.LOGLOSS_EPS), rel=1e-9)
    assert M.soft_logloss([1.0, 0.0], [1.0, 0.0]) == pytest.approx(-math.log1p(-M.LOGLOSS_EPS), rel=1e-6)
    with pytest.raises(ValueError):
        M.soft_logloss([0.5], [1.3])  # a logit, not a probability


def test_mean_pred_over_true():
    assert M.mean_pred_over_true([0.1, 0.3], [0.4, 0.4]) == pytest.approx(2.0, abs=1e-12)
    assert math.isnan(M.mean_pred_over_true([0.0, 0.0], [0.4, 0.4]))


# --------------------------------------------------------------------------- AP / HIT@1
@pytest.mark.parametrize(
    "labels, scores, interp, plain",
    [
        ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6], 5 / 6, 5 / 6),
        ([0, 1, 1], [0.9, 0.8, 0.7], 2 / 3, 7 / 12),  # running max lifts recall 0.5 to 2/3
        ([1, 0, 1], [0.5, 0.5, 0.1], 2 / 3, 7 / 12),  # a tie enters as one threshold
        ([0, 0, 0], [0.3, 0.2, 0.1], 0.0, 0.0),
        ([1, 1], [0.3, 0.1], 1.0, 1.0),
    ],
)
def test_ap_hand_cases(labels, scores, interp, plain):
    assert M.interpolated_ap(labels, scores) == pytest.approx(interp, abs=1e-12)
    assert M.average_precision(labels, scores) == pytest.approx(plain, abs=1e-12)


def test_ap_random_vs_definition_and_sklearn():
    rng = np.random.default_rng(8)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    for _ in range(40):
        n = int(rng.integers(2, 40))
        labels = (rng.random(n) < 0.3).astype(float)
        scores = np.round(rng.random(n), 1)
        assert M.interpolated_ap(labels, scores) == pytest.approx(_brute_interpolated_ap(labels, scores), abs=1e-12)
        if labels.any():
            want = sklearn_metrics.average_precision_score(labels, scores)
            assert M.average_precision(labels, scores) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError):
        M.interpolated_ap([0, 2], [0.1, 0.2])


def test_map_and_hit_at_1_with_annotator_columns():
    labels = np.array([[1, 0], [0, 0], [0, 1]])
    scores = [0.9, 0.5, 0.1]
    col_aps = [M.interpolated_ap(labels[:, 0], scores), M.interpolated_ap(labels[:, 1], scores)]
    assert M.mean_average_precision([(labels, scores)]) == pytest.approx(np.mean(col_aps), abs=1e-12)
    assert col_aps == pytest.approx([1.0, 1 / 3])
    assert M.hit_at_1(labels, scores) == 1.0
    assert M.hit_at_1(labels, [0.1, 0.9, 0.2]) == 0.0
    assert M.hit_at_1([0, 1, 1], [0.5, 0.5, 0.1]) == 0.0  # first of the tied top scores
    assert M.mean_hit_at_1([(labels, scores), (labels, [0.1, 0.9, 0.2])]) == 0.5


# --------------------------------------------------------------------------- evaluate_segments
def test_evaluate_segments_keys_values_and_per_room():
    rng = np.random.default_rng(9)
    n = 3000
    rooms = rng.integers(0, 40, n)
    y = np.round(rng.beta(2, 5, n), 2)
    p = np.clip(y + rng.normal(0, 0.2, n), 0, 1)
    y[rooms == 7] = 0.3  # one room with a single label level: not eligible
    p[rooms == 8] = 0.5  # one room with constant predictions: counts as 0
    out = M.evaluate_segments(y, p, room_ids=rooms)
    assert set(out) == {
        "n_segments", "tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc", "logloss",
        "mean_pred_over_true", "per_room_tau", "n_rooms_per_room_tau",
    }
    json.dumps(out)
    assert all(type(v) in (float, int) for v in out.values())
    assert out["n_segments"] == n
    assert out["tau"] == pytest.approx(stats.kendalltau(y, p)[0], abs=1e-12)
    assert out["tau@0.4"] == pytest.approx(stats.kendalltau(y[y > 0.4], p[y > 0.4])[0], abs=1e-12)
    assert out["spearman"] == pytest.approx(stats.spearmanr(y, p)[0], abs=1e-12)
    assert out["auc"] == pytest.approx(M.soft_auc(y, p), abs=1e-15)
    assert out["logloss"] == pytest.approx(M.soft_logloss(y, p), abs=1e-15)
    assert out["mean_pred_over_true"] == pytest.approx(p.mean() / y.mean(), abs=1e-12)
    per_room = [
        0.0 if np.ptp(p[rooms == r]) == 0 else stats.kendalltau(y[rooms == r], p[rooms == r])[0]
        for r in np.unique(rooms)
        if len(np.unique(y[rooms == r])) >= 2
    ]
    assert out["n_rooms_per_room_tau"] == len(per_room) == 39
    assert out["per_room_tau"] == pytest.approx(np.mean(per_room), abs=1e-9)

    no_rooms = M.evaluate_segments(y, p)
    assert math.isnan(no_rooms["per_room_tau"]) and no_rooms["n_rooms_per_room_tau"] == 0
    string_rooms = M.evaluate_segments(y, p, room_ids=np.char.add("room", rooms.astype(str)))
    assert string_rooms["per_room_tau"] == pytest.approx(out["per_room_tau"], abs=1e-12)


@pytest.mark.parametrize(
    "fn",
    [M.kendall_tau_b, M.spearman_rho, M.soft_auc, M.soft_logloss, M.mean_pred_over_true,
     M.tau_at_thresholds, M.interpolated_ap, M.average_precision, M.evaluate_segments],
)
def test_input_validation(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([0.0, 1.0, 1.0], [0.2, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.0, 1.0], [0.2, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_matrix_and_room_validation():
    with pytest.raises(ValueError):
        M.kendall_tau_b_matrix(np.ones(5))
    with pytest.raises(ValueError):
        M.spearman_rho_matrix(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        M.evaluate_segments([0.1, 0.2], [0.3, 0.4], room_ids=[1])
    with pytest.raises(ValueError, match="differ in length"):
        M.hit_at_1([0, 1], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- real data
needs_tvsum = pytest.mark.skipif(
    not TVSUM_MAT.is_file(), reason=f"TVSum reference data not found at {TVSUM_MAT} (set KUAIHL_SHARED_DATA)"
)
needs_qvh = pytest.mark.skipif(
    not (QVH_DIR / "sample_val_preds.jsonl").is_file(),
    reason=f"QVHighlights reference data not found in {QVH_DIR} (set KUAIHL_SHARED_DATA)",
)


@pytest.fixture(scope="module")
def tvsum_videos():
    pytest.importorskip("h5py")
    return M.read_tvsum_user_anno(TVSUM_MAT)


@needs_tvsum
def test_tvsum_inter_annotator_published_numbers(tvsum_videos):
    """Otani et al. 2019: tau-b 0.177, rho 0.204 (here 0.1774 / 0.2042), all 50 videos, fast path."""
    assert len(tvsum_videos) == 50
    assert all(v.shape[0] == 20 and set(np.unique(v)) <= {1, 2, 3, 4, 5} for v in tvsum_videos)
    per_video = [M.inter_annotator_agreement(v) for v in tvsum_videos]
    tau = np.mean([d["kendall_tau_b"] for d in per_video])
    rho = np.mean([d["spearman_rho"] for d in per_video])
    assert round(tau, 4) == 0.1774
    assert round(rho, 4) == 0.2042


@needs_tvsum
def test_tvsum_fast_path_equals_scipy_on_a_subset(tvsum_videos):
    lengths = [v.shape[1] for v in tvsum_videos]
    # Shortest, longest and every 10th video (the full scipy loop takes ~50 s; see bench/).
    for vid in sorted({int(np.argmin(lengths)), int(np.argmax(lengths)), *range(0, 50, 10)}):
        v = tvsum_videos[vid]
        tau, rho = M.kendall_tau_b_matrix(v), M.spearman_rho_matrix(v)
        for a, b in itertools.combinations(range(v.shape[0]), 2):
            assert tau[a, b] == pytest.approx(stats.kendalltau(v[a], v[b])[0], abs=1e-9)
        for a in range(0, 20, 4):
            for b in range(a + 1, 20):
                assert rho[a, b] == pytest.approx(stats.spearmanr(v[a], v[b])[0], abs=1e-9)


def _read_jsonl(path: Path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def qvh_queries():
    """(labels [n_clips, 3] saliency 0-4, predicted scores) per query of the released predictions.

    Protocol of the QVHighlights evaluation: a query's video has int(duration / 2) clips;
    clips outside relevant_clip_ids have saliency 0.
    """
    gt = {d["qid"]: d for d in _read_jsonl(QVH_DIR / "highlight_val_release.jsonl")}
    out = []
    for pred in _read_jsonl(QVH_DIR / "sample_val_preds.jsonl"):
        g = gt[pred["qid"]]
        sal = np.zeros((int(g["duration"] / 2), 3))
        sal[g["relevant_clip_ids"]] = g["saliency_scores"]
        out.append((sal, np.asarray(pred["pred_saliency_scores"], dtype=float)))
    return out


def _qvh_metric(queries, threshold: int, kind: str) -> float:
    """AP: predictions truncated / zero-padded to the clip count (13 queries have one score
    fewer than clips), as the official evaluation does. HIT@1: argmax of the raw predictions,
    a clip beyond the video counts as a miss."""
    items = []
    for sal, scores in queries:
        labels = (sal >= threshold).astype(float)
        n = labels.shape[0]
        if kind == "hit1":
            padded = np.zeros((max(n, scores.size), 3))
            padded[:n] = labels
            items.append((padded[: scores.size], scores))
        else:
            aligned = np.zeros(n)
            aligned[: min(n, scores.size)] = scores[:n]
            items.append((labels, aligned))
    if kind == "hit1":
        return round(100 * M.mean_hit_at_1(items), 2)
    return round(100 * M.mean_average_precision(items, interpolated=(kind == "interp")), 2)


@needs_qvh
@pytest.mark.parametrize(
    "threshold, hl_map, hit1, plain_ap",
    [(2, 67.77, 66.45, 64.50), (3, 58.09, 64.45, 55.04), (4, 35.65, 55.55, 33.69)],
)
def test_qvhighlights_released_predictions(qvh_queries, threshold, hl_map, hit1, plain_ap):
    assert len(qvh_queries) == 1550
    assert _qvh_metric(qvh_queries, threshold, "interp") == hl_map
    assert _qvh_metric(qvh_queries, threshold, "hit1") == hit1
    assert _qvh_metric(qvh_queries, threshold, "plain") == plain_ap  # the wrong variant, told apart


@needs_qvh
def test_qvhighlights_published_file_agrees():
    raw = json.loads((QVH_DIR / "sample_val_preds_metrics_raw.json").read_text())["brief"]
    assert (raw["HL-min-Fair-mAP"], raw["HL-min-Good-mAP"], raw["HL-min-VeryGood-mAP"]) == (67.77, 58.09, 35.65)
    assert (raw["HL-min-Fair-Hit1"], raw["HL-min-Good-Hit1"], raw["HL-min-VeryGood-Hit1"]) == (66.45, 64.45, 55.55)
