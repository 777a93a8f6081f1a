"""The synthetic live-streaming world: a documented generative model of a platform.

Streamers (category, talent per content state, appeal, popularity, schedule) broadcast
rooms over several simulated days. Every 30 s segment of a room has a *hidden* content
state (a category-specific Markov chain over idle / talk / performance / pk / highlight)
and a hidden attractiveness logit; the audience reacts to it (exposures, clicks, viewers,
long viewers, comments, ...), and visual / text features are generated from the hidden
state through fixed random maps plus noise, the text misaligned in time. The equations,
and every knob of :class:`~kuaihl_rec.data.world_config.WorldConfig`, are in
``docs/WORLD.md``.

What models see is the segment table (``kuaihl_rec.data.schema``). The hidden states and
true rates go to a separate ground-truth sidecar (``OUT/truth/``), for the A/B simulator
and for plots only.

:func:`generate_world` runs these stages, one module each (``docs/WORLD.md`` sections):

- structure  (``world_structure``, section 3): streamers, rooms, lengths, schedules, splits;
- latent     (``world_latent``, sections 4-5): streamer parameters, hidden content chain, quality,
  trend, attractiveness d_t and the true rates p_t, c_t, rho_t;
- audience   (``world_audience``, section 6): exposures, clicks, viewers, labels, counters;
- features   (``world_features``, section 7): visual / text from the hidden state, lags, noise;
- tables     (``world_tables``, section 1): the segment table and the truth sidecar.

Random streams (``np.random.SeedSequence(seed).spawn``, ``world_layout``), each used in a fixed order:

- ``structure``: categories, room counts, lengths, schedules, splits;
- ``latent``:    streamer talents, appeal, popularity, CTR cover term;
- ``chain``:     content-state chain, quality and trend processes, CTR noise;
- ``audience``:  exposures, clicks, viewers, counters;
- ``visual`` / ``text``: the fixed random maps, styles, text shifts, lyrics and noise.

``chain_seed`` (when set) re-seeds ``latent``, ``chain`` and ``audience`` only. With
``content_signal = 0`` the features are a function of the ``visual`` / ``text`` streams
and of the room structure only, so they are independent of attractiveness by construction.

Example::

    >>> from kuaihl_rec.data.world import generate_world, load_world_config
    >>> world = generate_world(load_world_config("tiny"))
    >>> world.segments.num_rows == world.truth.num_rows
    True
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from kuaihl_rec.data.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    write_segment_table,
)
from kuaihl_rec.data.world_audience import generate_audience
from kuaihl_rec.data.world_config import (
    STATE_NAMES,
    WORLD_PRESETS,
    WorldConfig,
    WorldConfigError,
    config_to_yaml,
    load_world_config,
)
from kuaihl_rec.data.world_features import text_features, visual_features
from kuaihl_rec.data.world_figure import plot_room_timeline
from kuaihl_rec.data.world_latent import generate_latent, transition_matrices
from kuaihl_rec.data.world_layout import random_streams, segment_layout
from kuaihl_rec.data.world_media import media_columns, plan_media, write_frames

# Re-exported: importable from here as they were before the generator was split into modules.
from kuaihl_rec.data.world_profiles import (  # noqa: F401, E402
    CATEGORY_PROFILES,
    HIGHLIGHT,
    IDLE,
    N_STATES,
    PERFORMANCE,
    PK,
    TALK,
    CategoryProfile,  # noqa: F401, E402
)
from kuaihl_rec.data.world_structure import build_structure
from kuaihl_rec.data.world_summary import summarize_world
from kuaihl_rec.data.world_tables import (  # noqa: F401, E402
    LIVE_ID_BASE,
    STREAMER_ID_BASE,
    World,
    segment_table,
    truth_sidecar,
)

__all__ = [
    "CATEGORY_PROFILES",
    "STATE_NAMES",
    "WORLD_PRESETS",
    "World",
    "WorldConfig",
    "WorldConfigError",
    "generate_world",
    "load_world_config",
    "plot_room_timeline",
    "summarize_world",
    "transition_matrices",
    "write_world",
]

logger = logging.getLogger(__name__)


class _StageTimer:
    """Wall-clock seconds of each stage, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: Dict[str, float] = {}
        self._clock = time.perf_counter()

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self._clock
        self._clock = now


def generate_world(cfg: Optional[WorldConfig] = None, progress: bool = False) -> World:
    """Generate the world described by ``cfg`` (default: the ``default`` preset).

    Deterministic: the same config gives identical tables. Vectorised over rooms; the only
    Python loops run over time steps (all rooms at once) and over streamers.
    ``World.timings`` holds the seconds of the stages structure, chain, audience, visual, text, tables.
    """
    cfg = cfg if cfg is not None else WORLD_PRESETS["default"]
    timer = _StageTimer()
    streams = random_streams(cfg)
    structure = build_structure(cfg, streams["structure"])
    layout = segment_layout(cfg, structure)
    timer.tick("structure")
    logger.info("world: %d streamers, %d rooms, %d segments", cfg.n_streamers, len(structure.room_length),
                layout.n_segments)

    params, hidden = generate_latent(cfg, structure, layout, streams["latent"], streams["chain"], progress)
    timer.tick("chain")
    audience = generate_audience(cfg, structure.room_length, layout, params, hidden, streams["audience"], progress)
    timer.tick("audience")
    visual = visual_features(cfg, layout, hidden, streams["visual"])
    timer.tick("visual")
    text = text_features(cfg, structure.room_length, layout, hidden, streams["text"])
    timer.tick("text")

    segments = segment_table(structure, layout, audience, visual, text.text)
    media = None
    if cfg.raw_media:
        media = plan_media(cfg, structure.room_length, layout, hidden, text.shift, text.nonsequential)
        raw = media_columns(media, segments.column("live_id").to_numpy(), layout.segment)
        for name in ("frame_paths", "asr_text", "comment_text"):
            segments = segments.append_column(name, raw[name])
        timer.tick("media")
    truth, streamers, rooms = truth_sidecar(structure, layout, params, hidden, text)
    timer.tick("tables")
    timings = timer.timings
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in timings.items())
    logger.info("world: generated in %.2f s (%s)", sum(timings.values()), stages)
    return World(segments=segments, truth=truth, streamers=streamers, rooms=rooms, sizes=cfg.sizes, config=cfg,
                 timings=timings, media=media)


def write_world(world: World, out_dir: Union[str, Path], figure: bool = True) -> Dict[str, Path]:
    """Write a world under ``out_dir``; returns ``{name: path}`` of everything written.

    ``out_dir/dataset.json`` + ``segments/``      the segment table (what models read)
    ``out_dir/truth/segments_truth.parquet``      hidden states and true rates, row-aligned
    ``out_dir/truth/streamers.parquet``           hidden streamer parameters
    ``out_dir/truth/rooms.parquet``               room schedules, splits, cold start
    ``out_dir/world_config.yaml``                 the resolved config (loadable again)
    ``out_dir/world_summary.json``                label statistics (:func:`summarize_world`)
    ``out_dir/figures/room_timeline.png``         one room's timeline (:func:`plot_room_timeline`)
    ``out_dir/media/<live_id>/<segment>.png``     the frames, when ``config.raw_media`` (docs/WORLD.md 7b)
    """
    out = Path(out_dir)
    cfg = world.config
    paths: Dict[str, Path] = {}
    extra = {"source": "synthetic world", "preset": cfg.preset, "seed": cfg.seed, "min_viewers": cfg.min_viewers}
    if world.media is not None:  # frames first: the table that points at them is written after them
        rooms = world.rooms.column("live_id").to_numpy()
        lengths = world.rooms.column("n_segments").to_numpy()
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        n = write_frames(world.media, offsets, lengths, rooms, out)
        paths["media"] = out / "media"
        logger.info("world: wrote %d frames under %s", n, paths["media"])
    write_segment_table(world.segments, out, world.sizes, extra=extra)
    paths["dataset"] = out / "dataset.json"
    paths["segments"] = out / "segments"
    for name, table in (("segments_truth", world.truth), ("streamers", world.streamers), ("rooms", world.rooms)):
        path = out / "truth" / f"{name}.parquet"
        atomic_write_parquet(path, table, compression="zstd", row_group_size=262_144)
        paths[f"truth_{name}" if name != "segments_truth" else "truth"] = path
    path = out / "world_config.yaml"
    atomic_write_bytes(path, config_to_yaml(cfg).encode())
    paths["config"] = path
    path = out / "world_summary.json"
    atomic_write_json(path, summarize_world(world))
    paths["summary"] = path
    if figure:
        path = out / "figures" / "room_timeline.png"
        atomic_write_bytes(path, plot_room_timeline(world))
        paths["figure"] = path
    logger.info("world: wrote %s", out)
    return paths
