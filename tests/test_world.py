"""Tests of the synthetic live-streaming world (kuaihl_rec.data.world, world_config)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from kuaihl_rec.data.schema import COUNTER_COLUMNS, OPTIONAL_TYPES, REQUIRED_TYPES, SEGMENT_SECONDS
from kuaihl_rec.data.world import (
    HIGHLIGHT,
    PERFORMANCE,
    STATE_NAMES,
    generate_world,
    summarize_world,
    transition_matrices,
    write_world,
)
from kuaihl_rec.data.world_config import (
    WORLD_PRESETS,
    WorldConfig,
    WorldConfigError,
    config_to_yaml,
    load_world_config,
)


# ------------------------------------------------------------------------------------------------
# fixtures and helpers
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return generate_world(load_world_config("tiny"))


@pytest.fixture(scope="module")
def default_world():
    return generate_world(load_world_config("default"))


@pytest.fixture(scope="module")
def no_content_world():
    return generate_world(load_world_config("no_content"))


@pytest.fixture(scope="module")
def tiny_written(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("tiny_world")
    return out, write_world(tiny, out)


def col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False) if table.column(name).num_chunks else np.zeros(0)


def features(world) -> np.ndarray:
    n = world.segments.num_rows
    v = world.segments.column("visual").combine_chunks().flatten().to_numpy().reshape(n, -1)
    t = world.segments.column("text").combine_chunks().flatten().to_numpy().reshape(n, -1)
    return np.hstack([v, t]).astype(np.float64)


def ridge_r2(X: np.ndarray, y: np.ndarray, alpha: float = 0.01, seed: int = 0) -> float:
    """Held-out R^2 of a ridge probe (half train / half test by row, penalty alpha * n_train)."""
    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = idx[: len(y) // 2], idx[len(y) // 2 :]
    xm, ym = X[tr].mean(0), y[tr].mean()
    A, b = X[tr] - xm, y[tr] - ym
    w = np.linalg.solve(A.T @ A + alpha * len(tr) * np.eye(X.shape[1]), A.T @ b)
    pred = (X[te] - xm) @ w + ym
    return 1.0 - float(((y[te] - pred) ** 2).sum() / ((y[te] - y[te].mean()) ** 2).sum())


def lagged(x: np.ndarray, seg: np.ndarray, live: np.ndarray, lag: int):
    """(x_t, x_{t-lag}) pairs within rooms (negative lag = future)."""
    n = len(x)
    idx = np.arange(n)
    src = idx - lag
    ok = (src >= 0) & (src < n)
    ok[ok] &= live[src[ok]] == live[idx[ok]]
    return idx[ok], src[ok]


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------


def test_presets_and_default_equal_dataclass():
    assert {"default", "tiny", "no_content", "bench_1m"} <= set(WORLD_PRESETS)
    assert load_world_config() == WorldConfig()
    assert load_world_config("default") == WorldConfig()
    nc = WORLD_PRESETS["no_content"]
    assert nc.content_signal == 0.0 and nc.replace(content_signal=1.0, preset="default") == WorldConfig()
    assert WORLD_PRESETS["bench_1m"].total_segments == 1_000_000
    cfg = WORLD_PRESETS["tiny"]
    assert cfg.n_streamers <= 20 and cfg.n_rooms <= 60


def test_required_knob_names_exist():
    cfg = WorldConfig()
    for knob in ("seed", "n_streamers", "n_rooms", "segments_per_room", "content_signal", "text_lag",
                 "cold_start_fraction", "min_viewers", "visual_tokens", "visual_dim", "text_dim"):
        assert hasattr(cfg, knob), knob
    assert dict(cfg.text_lag) == {-2: 0.1, -1: 0.25, 0: 0.4, 1: 0.25}


def test_config_loader_file_and_overrides(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text("preset: tiny\nseed: 7\ncontent_signal: 0.5\ntext_lag: {-1: 0.5, '+1': 0.5}\n")
    cfg = load_world_config(path=p)
    assert cfg.preset == "tiny" and cfg.n_rooms == WORLD_PRESETS["tiny"].n_rooms
    assert cfg.seed == 7 and cfg.content_signal == 0.5 and dict(cfg.text_lag) == {-1: 0.5, 1: 0.5}
    # The explicit preset wins over the file's; overrides apply last.
    cfg2 = load_world_config("default", path=p, seed=3)
    assert cfg2.n_rooms == WorldConfig().n_rooms and cfg2.seed == 3 and cfg2.content_signal == 0.5
    # A presets file of the packaged shape.
    q = tmp_path / "presets.yaml"
    q.write_text("presets:\n  mine: {preset: tiny, n_rooms: 50}\n")
    assert load_world_config("mine", path=q).n_rooms == 50
    # The resolved config round-trips through YAML.
    r = tmp_path / "resolved.yaml"
    r.write_text(config_to_yaml(cfg))
    assert load_world_config(path=r) == cfg


@pytest.mark.parametrize(
    "text, match",
    [
        ("n_streamer: 5\n", "unknown world config key 'n_streamer'.*n_streamers"),
        ("preset: nope\n", "unknown world preset 'nope'"),
        ("text_lag: {0: 0.5, 1: 0.4}\n", "text_lag.*sum to 1"),
        ("n_rooms: many\n", "n_rooms.*integer"),
        ("cold_start_fraction: 1.5\n", "cold_start_fraction"),
        ("n_streamers: 50\nn_rooms: 10\n", "n_rooms"),
        ("category_weights: {cooking: 1}\n", "category_weights.*cooking"),
        ("- 1\n- 2\n", "mapping"),
        ("presets:\n  a: {bogus_knob: 1}\n", "bogus_knob"),
    ],
)
def test_config_loader_errors(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(WorldConfigError, match=match):
        load_world_config("a" if text.startswith("presets") else None, path=p)


def test_config_override_errors():
    with pytest.raises(WorldConfigError, match="unknown world config key 'contentsignal'"):
        load_world_config("tiny", contentsignal=0.0)
    with pytest.raises(WorldConfigError, match="unknown world preset"):
        load_world_config("huge")
    with pytest.raises(WorldConfigError, match="state_effects"):
        WorldConfig(state_effects={"idle": 0.0})
    with pytest.raises(WorldConfigError, match="file"):
        load_world_config(path="/nonexistent/world.yaml")


def test_transition_matrices_are_stochastic():
    P, exits, cats = transition_matrices(WorldConfig())
    assert P.shape == (len(cats), 5, 5)
    np.testing.assert_allclose(P.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(exits.sum(-1), 1.0, atol=1e-12)
    assert (P >= 0).all() and (P[:, :, HIGHLIGHT][:, 0] == 0).all()  # no highlight straight out of idle


# ------------------------------------------------------------------------------------------------
# determinism and schema
# ------------------------------------------------------------------------------------------------


def _files(root: Path):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.suffix in {".parquet", ".json", ".yaml"})


def test_same_seed_gives_byte_identical_files(tmp_path, tiny_written):
    out1, _ = tiny_written
    out2 = tmp_path / "again"
    write_world(generate_world(load_world_config("tiny")), out2, figure=False)
    files = _files(out1)
    assert files == _files(out2) and any(str(f).startswith("segments/") for f in files)
    for f in files:
        assert (out1 / f).read_bytes() == (out2 / f).read_bytes(), f
    out3 = tmp_path / "other_seed"
    write_world(generate_world(load_world_config("tiny", seed=1)), out3, figure=False)
    seg = Path("segments/part-00000.parquet")
    assert (out1 / seg).read_bytes() != (out3 / seg).read_bytes()
    assert (out1 / "truth/segments_truth.parquet").read_bytes() != (out3 / "truth/segments_truth.parquet").read_bytes()


def test_schema_matches_contract(tiny):
    seg = tiny.segments
    expected = {**REQUIRED_TYPES, **OPTIONAL_TYPES}
    for name in list(REQUIRED_TYPES) + ["ctr", "split", *COUNTER_COLUMNS]:
        assert name in seg.column_names, name
        assert seg.schema.field(name).type == expected[name], name
    assert not set(seg.column_names) - set(expected)
    assert "state" not in seg.column_names and "true_lvtr" not in seg.column_names  # truth stays hidden
    lens_v = np.unique(seg.column("visual").combine_chunks().value_lengths().to_numpy())
    lens_t = np.unique(seg.column("text").combine_chunks().value_lengths().to_numpy())
    assert lens_v.tolist() == [tiny.sizes.visual_len] and lens_t.tolist() == [tiny.sizes.text_dim]
    assert all(c.null_count == 0 for c in seg.columns)


def test_feature_sizes_knobs():
    w = generate_world(load_world_config("tiny", visual_tokens=3, visual_dim=8, text_dim=5))
    assert w.sizes.visual_len == 24
    assert w.segments.column("visual")[0].values.to_numpy().shape == (24,)
    assert w.segments.column("text")[0].values.to_numpy().shape == (5,)


def test_invariants(default_world):
    w = default_world
    s = w.segments
    live, seg, ts = col(s, "live_id"), col(s, "segment"), col(s, "timestamp")
    viewers, long_v = col(s, "n_viewers"), col(s, "n_long_viewers")
    expo, clicks = col(s, "n_exposures"), col(s, "n_clicks")
    assert (np.diff(live) >= 0).all()
    new_room = np.r_[True, live[1:] != live[:-1]]
    assert (seg[new_room] == 0).all() and (np.diff(seg)[~new_room[1:]] == 1).all()
    assert (np.diff(ts)[~new_room[1:]] == SEGMENT_SECONDS).all()
    assert (viewers >= 1).all() and (expo >= 1).all()
    assert (long_v <= viewers).all() and (clicks <= expo).all()
    for name in COUNTER_COLUMNS:
        assert (col(s, name) >= 0).all(), name
    np.testing.assert_allclose(col(s, "lvtr"), (long_v / viewers).astype(np.float32))
    np.testing.assert_allclose(col(s, "ctr"), (clicks / expo).astype(np.float32))
    for name in ("lvtr", "ctr"):
        x = col(s, name)
        assert x.dtype == np.float32 and (x >= 0).all() and (x <= 1).all()
    # Viewers flow: viewers_t = viewers_{t-1} - exits_t + entries_t (floored at 1).
    cont = ~new_room
    flow = viewers[:-1] - col(s, "n_exits")[1:] + col(s, "n_entries")[1:]
    np.testing.assert_array_equal(np.maximum(flow, 1)[cont[1:]], viewers[1:][cont[1:]])
    # One streamer and one split per room; rooms table agrees; a streamer's rooms never overlap.
    starts = np.flatnonzero(new_room)
    for name in ("streamer_id", "split"):
        x = col(s, name)
        assert (x == np.repeat(x[starts], np.diff(np.r_[starts, len(x)]))).all(), name
    rooms = w.rooms
    np.testing.assert_array_equal(col(rooms, "live_id"), live[starts])
    np.testing.assert_array_equal(col(rooms, "start_timestamp"), ts[starts])
    np.testing.assert_array_equal(col(rooms, "n_segments"), np.diff(np.r_[starts, len(live)]))
    assert (col(rooms, "start_timestamp") % SEGMENT_SECONDS == 0).all()
    order = np.lexsort((col(rooms, "start_timestamp"), col(rooms, "streamer_id")))
    sid, st, en = col(rooms, "streamer_id")[order], col(rooms, "start_timestamp")[order], col(rooms, "end_timestamp")[order]
    same = sid[1:] == sid[:-1]
    assert (st[1:][same] >= en[:-1][same]).all()
    days = (col(rooms, "end_timestamp").max() - col(rooms, "start_timestamp").min()) / 86400
    assert days > 0.8 * w.config.n_days
    # Truth is row-aligned and the logit decomposes as documented.
    t = w.truth
    np.testing.assert_array_equal(col(t, "live_id"), live)
    np.testing.assert_array_equal(col(t, "segment"), seg)
    appeal = dict(zip(col(w.streamers, "streamer_id"), col(w.streamers, "appeal")))
    rebuilt = (w.config.lvtr_base_logit + col(t, "state_term") + np.vectorize(appeal.get)(col(s, "streamer_id"))
               + col(t, "quality_term") + col(t, "taste_term") + col(t, "trend"))
    np.testing.assert_allclose(rebuilt, col(t, "attract_logit"), atol=1e-4)
    np.testing.assert_allclose(col(t, "true_lvtr"), 1 / (1 + np.exp(-col(t, "attract_logit").astype(np.float64))), atol=1e-5)
    assert json.loads(t.schema.metadata[b"state_names"]) == list(STATE_NAMES)


def test_total_segments_exact():
    cfg = load_world_config("tiny", total_segments=1000)
    w = generate_world(cfg)
    assert w.segments.num_rows == 1000


# ------------------------------------------------------------------------------------------------
# splits, labels, dynamics
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny", "default_world"])
def test_cold_start_rooms(request, which):
    w = request.getfixturevalue(which)
    rooms = w.rooms
    split, sid = col(rooms, "split").astype(str), col(rooms, "streamer_id")
    seen = set(sid[split != "test"].tolist())
    test_sids = sid[split == "test"]
    cold = np.array([s not in seen for s in test_sids])
    assert cold.sum() >= 1
    np.testing.assert_array_equal(cold, col(rooms, "cold_start")[split == "test"])
    n_test = len(test_sids)
    assert n_test == round(w.config.test_fraction * rooms.num_rows)
    assert (split == "val").sum() == round(w.config.val_fraction * rooms.num_rows)
    assert abs(cold.mean() - w.config.cold_start_fraction) <= max(1.0 / n_test, 0.02) + 1e-9
    # Every warm test streamer has a train room.
    train = set(sid[split == "train"].tolist())
    assert all(s in train for s in test_sids[~cold])
    # Cold streamers never appear outside test in the segment table either.
    seg_split, seg_sid = col(w.segments, "split").astype(str), col(w.segments, "streamer_id")
    assert not set(test_sids[cold].tolist()) & set(seg_sid[seg_split != "test"].tolist())


def test_cold_start_fraction_zero():
    w = generate_world(load_world_config("tiny", cold_start_fraction=0.0))
    assert not col(w.rooms, "cold_start").any()


def test_label_statistics_match_klive(default_world):
    w = default_world
    summary = summarize_world(w)
    lvtr = col(w.segments, "lvtr")
    viewers = col(w.segments, "n_viewers")
    eligible = viewers >= w.config.min_viewers
    for x in (lvtr, lvtr[eligible]):
        for th in (0.2, 0.4, 0.6):
            assert (x > th).sum() > 0.05 * len(x), th
        assert ((x >= 0.2) & (x <= 0.9)).mean() > 0.85
    assert 0.05 <= summary["share_below_min_viewers"] <= 0.20
    bursts = summary["highlight_bursts"]
    assert bursts["count"] > 100 and 1.5 <= bursts["mean_length"] <= 4.0
    assert max(int(k) for k in bursts["length_hist"]) <= w.config.highlight_max_length
    assert 0.02 <= summary["state_share"]["highlight"] <= 0.12
    assert 100 <= summary["room_length_segments"]["mean"] <= 140  # about 1 h
    assert summary["room_length_segments"]["quantiles"]["q99"] > 2.5 * summary["room_length_segments"]["quantiles"]["q50"]
    assert 70_000 <= summary["n_segments"] <= 100_000
    # Small audiences give noisier labels.
    err = np.abs(lvtr - col(w.truth, "true_lvtr"))
    assert err[viewers < 30].mean() > 2 * err[viewers >= 300].mean()


def test_counters_lag_content(default_world):
    w = default_world
    s, t = w.segments, w.truth
    live, seg = col(s, "live_id"), col(s, "segment")
    attract = col(t, "attract_logit").astype(np.float64)
    viewers = col(s, "n_viewers").astype(np.float64)
    big = viewers >= 200
    rate = np.log((col(s, "n_comments") + 0.5) / viewers)
    dlogv = np.r_[0.0, np.diff(np.log(viewers))]

    def corr(x, lag):
        i, j = lagged(x, seg, live, lag)
        keep = big[i] & (seg[i] >= 2)
        return np.corrcoef(x[i][keep], attract[j][keep])[0, 1]

    assert corr(rate, 1) > corr(rate, -1) + 0.05  # comments react to the previous segment
    assert corr(dlogv, 1) > corr(dlogv, -1) + 0.05  # viewers respond to attractiveness with a lag
    # Labels track the hidden rate of the same segment.
    assert np.corrcoef(col(s, "lvtr")[big], col(t, "true_lvtr")[big])[0, 1] > 0.9


def test_text_misalignment(default_world):
    w = default_world
    cfg = w.config
    t = w.truth
    shift, seg = col(t, "text_shift"), col(t, "segment")
    lens = np.repeat(col(w.rooms, "n_segments"), col(w.rooms, "n_segments"))
    interior = (seg >= 2) & (seg < lens - 2)  # no clipping at the room edges
    share = {k: float((shift[interior] == k).mean()) for k in range(-3, 4)}
    for k, p in cfg.text_lag:
        assert abs(share[k] - p) < 0.01, (k, share[k], p)
    assert share[2] == 0 and share[-3] == 0
    assert 0.0 < col(t, "text_nonseq").mean() < cfg.lyrics_rate
    # The text encodes the state of the shifted segment: a nearest-centroid decoder fitted on
    # aligned rows reads state_{t+1} (not state_t) from rows whose ASR announces the next segment.
    n = w.segments.num_rows
    text = w.segments.column("text").combine_chunks().flatten().to_numpy().reshape(n, -1).astype(np.float64)
    state = col(t, "state").astype(np.int64)
    nonseq = col(t, "text_nonseq")
    fit = interior & (shift == 0) & ~nonseq
    cent = np.stack([text[fit & (state == k)].mean(0) for k in range(len(STATE_NAMES))])
    for k in (1, -1):
        rows = np.flatnonzero(interior & (shift == k) & ~nonseq)
        rows = rows[state[rows] != state[rows + k]]  # only rows where the two states differ
        pred = np.argmin(((text[rows, None, :] - cent[None]) ** 2).sum(-1), axis=1)
        acc_shifted, acc_now = (pred == state[rows + k]).mean(), (pred == state[rows]).mean()
        assert acc_shifted > acc_now + 0.2, (k, acc_shifted, acc_now)
    # Lyrics only during performances.
    assert (state[nonseq] == PERFORMANCE).all()


# ------------------------------------------------------------------------------------------------
# content_signal
# ------------------------------------------------------------------------------------------------


def test_content_signal_probe(default_world, no_content_world):
    y1 = col(default_world.truth, "attract_logit").astype(np.float64)
    r2_on = ridge_r2(features(default_world), y1)
    y0 = col(no_content_world.truth, "attract_logit").astype(np.float64)
    r2_off = ridge_r2(features(no_content_world), y0)
    assert r2_on > 0.2, r2_on
    assert abs(r2_off) < 0.02, r2_off
    # Same seed: no_content changes the features only, not the audience or the labels.
    for name in ("lvtr", "ctr", "n_viewers", "timestamp"):
        np.testing.assert_array_equal(col(default_world.segments, name), col(no_content_world.segments, name))


def test_content_signal_zero_features_ignore_hidden_chain():
    base = load_world_config("tiny", content_signal=0.0)
    a = generate_world(base.replace(chain_seed=1))
    b = generate_world(base.replace(chain_seed=2))
    assert not np.array_equal(col(a.truth, "attract_logit"), col(b.truth, "attract_logit"))
    assert not np.array_equal(col(a.truth, "state"), col(b.truth, "state"))
    for name in ("visual", "text"):
        assert a.segments.column(name).equals(b.segments.column(name)), name
    # ... whereas with content the features follow the hidden chain.
    c = generate_world(base.replace(chain_seed=1, content_signal=1.0))
    d = generate_world(base.replace(chain_seed=2, content_signal=1.0))
    assert not c.segments.column("visual").equals(d.segments.column("visual"))
    assert not c.segments.column("text").equals(d.segments.column("text"))
    # chain_seed leaves the structure (rooms, schedules, splits) alone.
    assert a.rooms.equals(b.rooms)


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------


def test_write_world_writes_every_file(tiny_written, tiny):
    out, paths = tiny_written
    expected = {
        "dataset": out / "dataset.json",
        "truth": out / "truth" / "segments_truth.parquet",
        "truth_streamers": out / "truth" / "streamers.parquet",
        "truth_rooms": out / "truth" / "rooms.parquet",
        "config": out / "world_config.yaml",
        "summary": out / "world_summary.json",
        "figure": out / "figures" / "room_timeline.png",
    }
    for key, path in expected.items():
        assert paths[key] == path and path.is_file() and path.stat().st_size > 0, key
    assert paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["source"] == "synthetic world" and manifest["preset"] == "tiny"
    assert manifest["n_rows"] == tiny.segments.num_rows
    for f in manifest["files"]:
        assert (out / f).is_file()
    assert load_world_config(path=out / "world_config.yaml") == tiny.config
    assert yaml.safe_load((out / "world_config.yaml").read_text())["preset"] == "tiny"
    summary = json.loads((out / "world_summary.json").read_text())
    for key in ("lvtr", "share_below_min_viewers", "highlight_bursts", "rooms_per_split", "cold_start_rooms",
                "room_length_segments"):
        assert key in summary, key
    truth = pq.read_table(out / "truth" / "segments_truth.parquet")
    for name in ("live_id", "segment", "state", "attract_logit", "true_lvtr", "true_ctr", "text_shift"):
        assert name in truth.column_names
    streamers = pq.read_table(out / "truth" / "streamers.parquet")
    for name in ("streamer_id", "category", "appeal", "popularity", "talent_performance"):
        assert name in streamers.column_names


def test_written_world_passes_validation(tiny_written, tmp_path, default_world):
    from kuaihl_rec.data import validate
    out, _ = tiny_written
    report = validate.validate_path(out)
    assert report.ok, report.format()
    assert report.n_rows == json.loads((out / "dataset.json").read_text())["n_rows"]
    write_world(default_world, tmp_path / "default", figure=False)
    report = validate.validate_path(tmp_path / "default")
    assert report.ok, report.format()
    assert report.splits == summarize_world(default_world)["rooms_per_split"]


def test_progress_bar_and_room_length_knobs():
    w = generate_world(load_world_config("tiny", room_length_sigma=0.0, segments_per_room=25.0, n_days=1), progress=True)
    assert set(col(w.rooms, "n_segments").tolist()) == {25}
    rooms = w.rooms
    order = np.lexsort((col(rooms, "start_timestamp"), col(rooms, "streamer_id")))
    sid, st, en = (col(rooms, k)[order] for k in ("streamer_id", "start_timestamp", "end_timestamp"))
    assert (st[1:][sid[1:] == sid[:-1]] >= en[:-1][sid[1:] == sid[:-1]]).all()  # more rooms than days: still no overlap
