"""Visual and text features of the synthetic world, generated from the hidden state.

Implements ``docs/WORLD.md`` section 7. Latent code x_t = [onehot(state_t) ; q_t]; a fixed random map
f(x) = tanh(x W1 + b1) W2 with W1 ~ N(0, 1.5^2 / d_in), b1 ~ N(0, 0.25), W2 ~ N(0, 1.6^2 / map_hidden).
With s = ``content_signal``, eps ~ N(0, I), room offsets o_room ~ N(0, room_style_sigma^2 I) and
streamer styles style_s ~ N(0, streamer_style_sigma^2 I)::

    visual_t = s (f_v(x_t) + style^v_s) + o^v_room + visual_noise eps_t
    text_t   = s (asr_t + comment_weight com_t + style^t_s) + o^t_room + text_noise eps_t
    asr_t    = f_a(x_{t + delta_t}),  delta_t ~ text_lag (clipped to the room),
               or lyric_code[song] on a performance segment with probability lyrics_rate
    com_t    = f_c([onehot(state_{t-L}) ; tanh(d_{t-L})]),  L = comment_lag (clipped at the room start)

A song (one of 16 lyric codes) changes every 4 segments. Draws come from the ``visual`` / ``text``
streams only, in a fixed order that does not depend on the hidden chain; with s = 0 the content
terms are not computed, so the features are independent of attractiveness by construction.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np

from kuaihl_rec.data.world_config import WorldConfig
from kuaihl_rec.data.world_latent import HiddenContent
from kuaihl_rec.data.world_layout import SegmentLayout
from kuaihl_rec.data.world_profiles import N_STATES, PERFORMANCE

__all__ = ["TextFeatures", "apply_map", "latent_code", "random_map", "text_features", "visual_features"]

N_LYRIC_CODES = 16
SONG_SEGMENTS = 4  # a lyric code (one song) lasts this many segments
CHUNK_ROWS = 65_536  # rows of features assembled at a time

RandomMap = Tuple[np.ndarray, np.ndarray, np.ndarray]


def random_map(rng: np.random.Generator, d_in: int, hidden: int, d_out: int) -> RandomMap:
    """A fixed random two-layer map ``tanh(x W1 + b1) W2``: float32 ``(W1 [d_in, hidden], b1 [hidden], W2)``."""
    w1 = (1.5 / np.sqrt(d_in)) * rng.standard_normal((d_in, hidden))
    b1 = 0.5 * rng.standard_normal(hidden)
    w2 = (1.6 / np.sqrt(hidden)) * rng.standard_normal((hidden, d_out))
    return w1.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32)


def apply_map(maps: RandomMap, x: np.ndarray) -> np.ndarray:
    """``tanh(x W1 + b1) W2``: [n, d_in] -> [n, d_out]."""
    w1, b1, w2 = maps
    return np.tanh(x @ w1 + b1) @ w2


def latent_code(state: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """[n, N_STATES + e] float32 ``[onehot(state) ; extra]`` of ``state`` [n] and ``extra`` [n, e]."""
    out = np.zeros((len(state), N_STATES + extra.shape[1]), dtype=np.float32)
    out[np.arange(len(state)), state] = 1.0
    out[:, N_STATES:] = extra
    return out


def _chunks(n_rows: int):
    """Slices of at most :data:`CHUNK_ROWS` rows covering ``0 .. n_rows``."""
    for lo in range(0, n_rows, CHUNK_ROWS):
        yield slice(lo, min(lo + CHUNK_ROWS, n_rows))


def visual_features(
    cfg: WorldConfig, layout: SegmentLayout, hidden: HiddenContent, rng: np.random.Generator
) -> np.ndarray:
    """[N, visual_tokens * visual_dim] float32 visual features, from the ``visual`` stream ``rng``."""
    content_signal = float(cfg.content_signal)
    width = cfg.sizes.visual_len
    n_rooms = len(layout.offsets)
    visual_map = random_map(rng, N_STATES + cfg.quality_dim, cfg.map_hidden, width)
    streamer_style = (cfg.streamer_style_sigma * rng.standard_normal((cfg.n_streamers, width))).astype(np.float32)
    room_offset = (cfg.room_style_sigma * rng.standard_normal((n_rooms, width))).astype(np.float32)
    visual = rng.standard_normal((layout.n_segments, width), dtype=np.float32)
    for rows in _chunks(layout.n_segments):
        block = visual[rows]
        block *= np.float32(cfg.visual_noise)
        block += room_offset[layout.room[rows]]
        if content_signal != 0.0:
            code = latent_code(hidden.state[rows], hidden.quality[rows])
            content = apply_map(visual_map, code) + streamer_style[layout.streamer[rows]]
            block += np.float32(content_signal) * content
    return visual


@dataclasses.dataclass
class TextFeatures:
    """Text features and their hidden alignment (N segment rows).

    text:          [N, text_dim] float32
    shift:         [N] int8 effective shift of the ASR source row (``text_shift`` in the truth)
    nonsequential: [N] bool, the ASR is a lyric code (``text_nonseq`` in the truth)
    """

    text: np.ndarray
    shift: np.ndarray
    nonsequential: np.ndarray


@dataclasses.dataclass
class _TextDraws:
    """The ``text`` stream's draws before the noise: maps, codes, styles, songs, shifts, lyric uniforms."""

    asr_map: RandomMap
    comment_map: RandomMap
    lyric_codes: np.ndarray  # [N_LYRIC_CODES, text_dim] float32
    streamer_style: np.ndarray  # [S, text_dim] float32
    room_offset: np.ndarray  # [R, text_dim] float32
    first_song: np.ndarray  # [R] lyric code of each room's first song
    drawn_shift: np.ndarray  # [N] int64 delta_t before clipping to the room
    lyric_u: np.ndarray  # [N] uniforms of the lyrics draw


def _draw_text_parts(cfg: WorldConfig, n_rooms: int, n_segments: int, rng: np.random.Generator) -> _TextDraws:
    dim = cfg.sizes.text_dim
    asr_map = random_map(rng, N_STATES + cfg.quality_dim, cfg.map_hidden, dim)
    comment_map = random_map(rng, N_STATES + 1, cfg.map_hidden, dim)
    lyric_codes = (1.2 * rng.standard_normal((N_LYRIC_CODES, dim))).astype(np.float32)
    streamer_style = (cfg.streamer_style_sigma * rng.standard_normal((cfg.n_streamers, dim))).astype(np.float32)
    room_offset = (cfg.room_style_sigma * rng.standard_normal((n_rooms, dim))).astype(np.float32)
    first_song = rng.integers(0, N_LYRIC_CODES, size=n_rooms)
    shift_values = np.array([shift for shift, _ in cfg.text_lag], dtype=np.int64)
    shift_probs = np.array([prob for _, prob in cfg.text_lag])
    drawn_shift = shift_values[rng.choice(len(shift_values), size=n_segments, p=shift_probs / shift_probs.sum())]
    lyric_u = rng.random(n_segments)
    return _TextDraws(asr_map, comment_map, lyric_codes, streamer_style, room_offset, first_song, drawn_shift, lyric_u)


def text_features(
    cfg: WorldConfig,
    room_length: np.ndarray,
    layout: SegmentLayout,
    hidden: HiddenContent,
    rng: np.random.Generator,
) -> TextFeatures:
    """:class:`TextFeatures` from the ``text`` stream ``rng``; ``room_length`` [R] segments per room."""
    content_signal = float(cfg.content_signal)
    n_segments = layout.n_segments
    segment, room, state = layout.segment, layout.room, hidden.state
    draws = _draw_text_parts(cfg, len(room_length), n_segments, rng)
    text = rng.standard_normal((n_segments, cfg.sizes.text_dim), dtype=np.float32)
    room_first_row = np.repeat(layout.offsets, room_length)
    asr_source = room_first_row + np.clip(segment + draws.drawn_shift, 0, room_length[room] - 1)
    shift = (asr_source - np.arange(n_segments)).astype(np.int8)
    lyrics = (draws.lyric_u < cfg.lyrics_rate) & (state == PERFORMANCE)
    song = ((draws.first_song[room] + segment // SONG_SEGMENTS) % N_LYRIC_CODES).astype(np.int64)
    comment_source = room_first_row + np.maximum(segment - cfg.comment_lag, 0)
    excitement = np.tanh(hidden.deviation).astype(np.float32)
    for rows in _chunks(n_segments):
        block = text[rows]
        block *= np.float32(cfg.text_noise)
        block += draws.room_offset[room[rows]]
        if content_signal != 0.0:
            asr_rows, comment_rows = asr_source[rows], comment_source[rows]
            asr = apply_map(draws.asr_map, latent_code(state[asr_rows], hidden.quality[asr_rows]))
            is_lyric = lyrics[rows]
            asr[is_lyric] = draws.lyric_codes[song[rows][is_lyric]]
            comment_code = latent_code(state[comment_rows], excitement[comment_rows][:, None])
            comment = apply_map(draws.comment_map, comment_code)
            style = draws.streamer_style[layout.streamer[rows]]
            block += np.float32(content_signal) * (asr + np.float32(cfg.comment_weight) * comment + style)
    return TextFeatures(text=text, shift=shift, nonsequential=lyrics)
