"""Raw media of the synthetic world (``raw_media: true``): frames and ASR / comment text from the hidden state.

Implements ``docs/WORLD.md`` section 7b. The raw-media twin of a world has the same segment table
(same labels, counters and vector features, bit for bit) plus the contract's optional columns
``frame_paths`` (one PNG of ``frame_size`` x ``frame_size`` RGB per segment, under
``OUT/media/<live_id>/<segment>.png``), ``asr_text`` and ``comment_text``, so ``kuaihl extract``
turns it into a frozen-feature table and the end-to-end model reads the media itself.

With s = ``content_signal``, pixel coordinates (u, v) in [0, 1)^2, and every draw from the ``media``
stream (``SeedSequence([seed, MEDIA_SALT])``, independent of the other streams)::

    frame_t(u, v) = 128 + s (PALETTE[state_t] + 40 tanh(q_t A) + style_s)
                    + s 50 sin(2 pi f_t (u cos theta_t + v sin theta_t)) + o_room + 40 visual_noise eps_t(u, v)
    f_t = 2.5 + 1.5 tanh(q_t[0]),  theta_t = ANGLES[state_t]
    A ~ N(0, 1 / quality_dim) [quality_dim, 3],  style_s ~ N(0, (60 streamer_style_sigma)^2 I_3),
    o_room ~ N(0, (60 room_style_sigma)^2 I_3),  eps ~ N(0, 1) per pixel and channel; clipped to [0, 255].

Text: with p = s / (s + text_noise) (0 when s = 0), every *content word* is kept with probability p
and replaced by a filler word otherwise (the text counterpart of the feature noise)::

    asr_t     = 3 words of STATE_WORDS[state_a] + a QUALITY word (sign of quality_sigma <w, q_a>)
                + the streamer's catchphrase + a filler,   a = t + text_shift_t (the feature world's shift)
                or, where the feature world's text is non-sequential (lyrics), the line of the current
                song (songs: 16 lines, one per 4 segments, the room's first song drawn here)
    comment_t = EXCITEMENT word of tanh(d_c) + a STATE word of state_c + EXCITEMENT word + a filler,
                c = max(t - comment_lag, 0) in the room

so the ASR is lagged and misaligned exactly as the ``text`` features are (same shifts, same lyric
segments) and comments trail by ``comment_lag``. With s = 0 every word is a filler or noise draw:
the media are then independent of attractiveness by construction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.world_config import WorldConfig
from kuaihl_rec.data.world_latent import HiddenContent
from kuaihl_rec.data.world_layout import SegmentLayout

__all__ = ["MEDIA_DIR", "WorldMedia", "frame_relpath", "media_columns", "plan_media", "render_frames",
           "write_frames"]

MEDIA_SALT = 0x6D656469  # "medi": the media stream's SeedSequence key beside the seed
MEDIA_DIR = "media"
# Colour offsets from grey per state (idle, talk, performance, pk, highlight) and stripe angles.
PALETTE = np.array([[-50, -50, -50], [-20, 10, 60], [70, -40, 60], [80, -30, -40], [70, 70, -60]], np.float32)
ANGLES = np.deg2rad(np.array([0.0, 36.0, 72.0, 108.0, 144.0], np.float32))
STATE_WORDS = (
    ("waiting", "break", "quiet", "pause", "loading", "later", "back", "soon"),
    ("chat", "story", "question", "talk", "tell", "friends", "ask", "answer"),
    ("song", "dance", "sing", "music", "stage", "rhythm", "melody", "move"),
    ("battle", "versus", "score", "vote", "challenge", "opponent", "points", "match"),
    ("incredible", "record", "winner", "surprise", "climax", "jackpot", "legendary", "unbelievable"),
)
QUALITY_WORDS = (("blurry", "choppy", "dim", "laggy"), ("clear", "smooth", "bright", "sharp"))
EXCITEMENT_WORDS = (
    ("boring", "bye", "meh", "sleepy"),
    ("ok", "hello", "hi", "nice"),
    ("wow", "amazing", "666", "fire"),
)
FILLERS = ("um", "okay", "so", "yeah", "right", "well", "like", "hmm", "and", "then", "the", "now")
CATCHPHRASES = ("dudes", "family", "legends", "fam", "team", "crew", "darlings", "gang", "folks", "buddies")
LYRIC_WORDS = ("moon", "heart", "night", "love", "rain", "fire", "dream", "sky", "tears", "light", "road", "home")
N_SONGS = 16
SONG_SEGMENTS = 4


def frame_relpath(live_id: int, segment: int) -> str:
    """Where a segment's frame lives, relative to the world directory."""
    return f"{MEDIA_DIR}/{int(live_id)}/{int(segment):04d}.png"


@dataclasses.dataclass
class WorldMedia:
    """What the frames and texts are made of (N segment rows, R rooms).

    colour:     [N, 3] float32 s (PALETTE[state] + 40 tanh(q A) + style_s) + o_room
    amplitude:  float, s * 50 (stripe amplitude)
    frequency:  [N] float32 f_t;  angle: [N] float32 theta_t
    noise:      float, 40 * visual_noise;  frame_size: int;  seed: the media stream's seed
    asr_text, comment_text: [N] strings
    """

    colour: np.ndarray
    amplitude: float
    frequency: np.ndarray
    angle: np.ndarray
    noise: float
    frame_size: int
    seed: int
    asr_text: List[str]
    comment_text: List[str]


def _media_rng(cfg: WorldConfig) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, MEDIA_SALT])))


def _words(table, group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Word ``table[group][floor(u * len)]`` per row (object array)."""
    out = np.empty(len(group), dtype=object)
    for g, words in enumerate(table):
        rows = np.flatnonzero(group == g)
        out[rows] = np.asarray(words, dtype=object)[(u[rows] * len(words)).astype(np.int64)]
    return out


def plan_media(
    cfg: WorldConfig, room_length: np.ndarray, layout: SegmentLayout, hidden: HiddenContent,
    text_shift: np.ndarray, lyrics: np.ndarray,
) -> WorldMedia:
    """:class:`WorldMedia` from the hidden chain; ``text_shift`` [N] / ``lyrics`` [N] are the feature world's."""
    rng = _media_rng(cfg)
    s, n = float(cfg.content_signal), layout.n_segments
    a_map = rng.standard_normal((cfg.quality_dim, 3)) / np.sqrt(cfg.quality_dim)
    style = 60.0 * cfg.streamer_style_sigma * rng.standard_normal((cfg.n_streamers, 3))
    room_offset = 60.0 * cfg.room_style_sigma * rng.standard_normal((len(room_length), 3))
    first_song = rng.integers(0, N_SONGS, size=len(room_length))
    catchphrase = rng.integers(0, len(CATCHPHRASES), size=cfg.n_streamers)
    lyric_lines = [" ".join(rng.choice(LYRIC_WORDS, size=6)) for _ in range(N_SONGS)]
    u = rng.random((n, 24))  # word choices and keep/filler draws, a fixed number per row
    state, quality = hidden.state.astype(np.int64), hidden.quality
    colour = room_offset[layout.room].astype(np.float32)
    frequency = np.full(n, 2.5, np.float32)
    angle = np.zeros(n, np.float32)
    if s != 0.0:
        content = PALETTE[state] + 40.0 * np.tanh(quality @ a_map) + style[layout.streamer]
        colour += np.float32(s) * content.astype(np.float32)
        frequency = (2.5 + 1.5 * np.tanh(quality[:, 0])).astype(np.float32)
        angle = ANGLES[state]
    p_keep = s / (s + cfg.text_noise) if s > 0 else 0.0
    keep = u[:, :7] < p_keep
    room_first_row = np.repeat(layout.offsets, room_length)
    a_src = np.arange(n) + text_shift.astype(np.int64)
    c_src = room_first_row + np.maximum(layout.segment - cfg.comment_lag, 0)
    good = (hidden.quality_term[a_src] > 0).astype(np.int64)
    excitement = np.tanh(hidden.deviation[c_src])
    level = np.where(excitement > 0.3, 2, np.where(excitement < -0.3, 0, 1))
    fill = [np.asarray(FILLERS, dtype=object)[(u[:, k] * len(FILLERS)).astype(np.int64)] for k in range(14, 24)]
    asr_words = [
        np.where(keep[:, 0], _words(STATE_WORDS, state[a_src], u[:, 7]), fill[0]),
        np.where(keep[:, 1], _words(STATE_WORDS, state[a_src], u[:, 8]), fill[1]),
        np.where(keep[:, 2], _words(STATE_WORDS, state[a_src], u[:, 9]), fill[2]),
        np.where(keep[:, 3], _words(QUALITY_WORDS, good, u[:, 10]), fill[3]),
        np.where(keep[:, 4], np.asarray(CATCHPHRASES, dtype=object)[catchphrase[layout.streamer]], fill[4]),
        fill[5],
    ]
    song = (first_song[layout.room] + layout.segment // SONG_SEGMENTS) % N_SONGS
    is_lyric = lyrics & (s != 0.0)
    asr = [lyric_lines[song[i]] if is_lyric[i] else " ".join(w[i] for w in asr_words) for i in range(n)]
    comment_words = [
        np.where(keep[:, 5], _words(EXCITEMENT_WORDS, level, u[:, 11]), fill[6]),
        np.where(keep[:, 6], _words(STATE_WORDS, state[c_src], u[:, 12]), fill[7]),
        np.where(keep[:, 5], _words(EXCITEMENT_WORDS, level, u[:, 13]), fill[8]),
        fill[9],
    ]
    comments = [" ".join(w[i] for w in comment_words) for i in range(n)]
    return WorldMedia(colour, s * 50.0, frequency, angle, 40.0 * cfg.visual_noise, cfg.frame_size,
                      cfg.seed, asr, comments)


def render_frames(media: WorldMedia, rows: np.ndarray, room: int) -> np.ndarray:
    """uint8 ``[len(rows), S, S, 3]`` frames of segment ``rows`` (all of one ``room``: its noise stream)."""
    size = media.frame_size
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    uu, vv = np.meshgrid(grid, grid, indexing="xy")  # uu: column (x), vv: row (y)
    proj = (uu[None] * np.cos(media.angle[rows])[:, None, None] + vv[None] * np.sin(media.angle[rows])[:, None, None])
    stripes = np.float32(media.amplitude) * np.sin(2 * np.pi * media.frequency[rows][:, None, None] * proj)
    noise_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([media.seed, MEDIA_SALT, 1, room])))
    eps = noise_rng.standard_normal((len(rows), size, size, 3), dtype=np.float32)
    img = 128.0 + media.colour[rows][:, None, None, :] + stripes[..., None] + np.float32(media.noise) * eps
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def media_columns(media: WorldMedia, live_id: np.ndarray, segment: np.ndarray) -> Dict[str, pa.Array]:
    """The contract's raw-media columns (``frame_paths``, ``asr_text``, ``comment_text``) of every row."""
    paths = [[frame_relpath(lv, sg)] for lv, sg in zip(live_id.tolist(), segment.tolist())]
    return {
        "frame_paths": pa.array(paths, pa.list_(pa.string())),
        "asr_text": pa.array(media.asr_text, pa.string()),
        "comment_text": pa.array(media.comment_text, pa.string()),
    }


def write_frames(media: WorldMedia, layout_offsets: np.ndarray, room_length: np.ndarray, live_ids: np.ndarray,
                 out_dir: Path) -> int:
    """Write every frame as PNG under ``out_dir/media/``; returns the number written. Each file is
    written to a temporary name and renamed (a frame file is whole or absent)."""
    from PIL import Image

    written = 0
    for room, (lo, length) in enumerate(zip(layout_offsets.tolist(), room_length.tolist())):
        rows = np.arange(lo, lo + length)
        frames = render_frames(media, rows, room)
        folder = Path(out_dir) / MEDIA_DIR / str(int(live_ids[room]))
        folder.mkdir(parents=True, exist_ok=True)
        for seg, frame in enumerate(frames):
            path = Path(out_dir) / frame_relpath(live_ids[room], seg)
            tmp = path.with_name(path.name + ".tmp")
            Image.fromarray(frame).save(tmp, format="PNG")
            tmp.replace(path)
            written += 1
    return written
