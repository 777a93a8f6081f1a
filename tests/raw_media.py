"""A small raw-media fixture for ``kuaihl extract``: generated PNG frames, ASR text and comments.

:func:`make_raw_media` writes ``root/media/room{r}/seg{s}_f{f}.png`` (each room its own colours
and pattern, each segment and frame its own shift, frames not square so they get resized) and a
segment table whose ``frame_paths`` are relative to ``root`` (the media root the extractor uses by
default). Room 0 talks about cooking, room 1 about football, room 2 (if asked) about a card game.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.io import atomic_write_parquet, write_segment_table
from kuaihl_rec.data.schema import FeatureSizes, arrow_schema

TOPICS: Sequence[Tuple[List[str], List[str]]] = (
    (
        [
            "today we are cooking beef noodles in my kitchen, first we boil the broth",
            "now I chop the green onions and add soy sauce to the noodle soup",
            "the noodles are ready, let me taste this delicious bowl of soup",
        ],
        ["looks so tasty", "what spices do you use in the broth", "I want to eat noodles now"],
    ),
    (
        [
            "the match has started, the striker runs down the wing with the ball",
            "what a shot! the goalkeeper saves it and the referee gives a corner",
            "goal in the last minute, the football team wins the game two to one",
        ],
        ["great goal", "the defence was terrible", "best football match this season"],
    ),
    (
        [
            "let me shuffle the deck and deal the poker cards to every player",
            "I raise the bet, my hand is a pair of aces",
            "he folds and I win the pot with my cards",
        ],
        ["nice bluff", "show your cards", "good hand"],
    ),
)
SENTENCES_CLOSE = ("I am cooking a pot of noodle soup with beef", "she makes a bowl of ramen noodles in broth")
SENTENCE_FAR = "the striker scored a goal in the football match"


def _frame(room: int, seg: int, frame: int, height: int, width: int) -> np.ndarray:
    """A distinct uint8 RGB image: room -> palette and pattern, segment/frame -> shifts."""
    yy, xx = np.mgrid[0:height, 0:width]
    shift = 5 * seg + 2 * frame
    if room % 3 == 0:  # warm horizontal stripes
        pattern = ((yy + shift) // 6) % 2
        base, alt = np.array([220, 80 + 20 * seg, 30]), np.array([250, 200, 60 + 30 * frame])
    elif room % 3 == 1:  # green/blue checkerboard
        pattern = (((yy + shift) // 8) + (xx // 8)) % 2
        base, alt = np.array([20, 140 + 20 * seg, 40]), np.array([30, 60, 200 - 30 * frame])
    else:  # purple diagonal gradient
        pattern = ((xx + yy + shift) % 32) / 31.0
        base, alt = np.array([90, 20, 120 + 20 * seg]), np.array([240, 180, 250 - 20 * frame])
    img = base[None, None, :] * (1 - pattern[..., None]) + alt[None, None, :] * pattern[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_raw_media(
    root: Path,
    rooms: int = 2,
    segments: int = 3,
    frames: int = 3,
    height: int = 40,
    width: int = 56,
    with_features: bool = False,
    seed: int = 0,
) -> Path:
    """Write the images and a raw segment table under ``root``; return the table's path.

    Without ``with_features`` the table is ``root/raw.parquet`` (no ``visual`` / ``text`` columns: a
    raw table); with it, ``root`` is a segment-table directory (``dataset.json``) holding placeholder
    features of sizes (1, 4, 3) that extraction must replace.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("streamer_id", "live_id", "segment", "timestamp", "lvtr", "ctr", "n_viewers", "n_long_viewers", "split")}
    frame_paths, asr, comments = [], [], []
    for r in range(rooms):
        asr_texts, comment_texts = TOPICS[r % len(TOPICS)]
        for s in range(segments):
            paths = []
            for f in range(frames):
                rel = Path("media") / f"room{r}" / f"seg{s}_f{f}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_frame(r, s, f, height, width)).save(root / rel)
                paths.append(rel.as_posix())
            frame_paths.append(paths)
            asr.append(asr_texts[s % len(asr_texts)])
            comments.append(comment_texts[s % len(comment_texts)])
            viewers = int(rng.integers(100, 400))
            lvtr = float(rng.uniform(0.1, 0.9))
            cols["streamer_id"].append(7 + r)
            cols["live_id"].append(100 + r)
            cols["segment"].append(s)
            cols["timestamp"].append(1_700_000_000 + 3600 * r + 30 * s)
            cols["lvtr"].append(lvtr)
            cols["ctr"].append(float(rng.uniform(0.0, 0.2)))
            cols["n_viewers"].append(viewers)
            cols["n_long_viewers"].append(int(viewers * lvtr))
            cols["split"].append("train")
    n = len(frame_paths)
    arrays = {c: pa.array(v, type=arrow_schema([c]).field(c).type) for c, v in cols.items()}
    arrays["frame_paths"] = pa.array(frame_paths, pa.list_(pa.string()))
    arrays["asr_text"] = pa.array(asr, pa.string())
    arrays["comment_text"] = pa.array(comments, pa.string())
    arrays["extra_note"] = pa.array([f"note {i}" for i in range(n)], pa.string())  # a column outside the contract
    if with_features:
        sizes = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=3)
        arrays["visual"] = pa.array(rng.normal(size=(n, 4)).astype(np.float32).tolist(), pa.list_(pa.float32()))
        arrays["text"] = pa.array(rng.normal(size=(n, 3)).astype(np.float32).tolist(), pa.list_(pa.float32()))
    known = [f.name for f in arrow_schema(arrays)]
    table = pa.table({c: arrays[c] for c in known + ["extra_note"]})
    if with_features:
        return write_segment_table(table, root, sizes)
    atomic_write_parquet(root / "raw.parquet", table)
    return root / "raw.parquet"


#: A raw-media synthetic world small enough for a test (``load_world_config("tiny_media", **SMALL_MEDIA_WORLD)``)
#: and a content network small enough to train on it in seconds (``content_e2e`` tests).
SMALL_MEDIA_WORLD = dict(n_streamers=3, n_rooms=4, segments_per_room=10.0, min_segments_per_room=8)
SMALL_NET = dict(d=16, n_heads=2, d_head=8, n_perceiver_layers=1, n_decoder_layers=1)
