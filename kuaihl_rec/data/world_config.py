"""Configuration of the synthetic live-streaming world: :class:`WorldConfig`, presets, loader.

Every knob is a field of the frozen dataclass :class:`WorldConfig`; ``docs/WORLD.md`` section 10
documents each one with the section whose equation it enters (sections 3-7). Named presets
(section 9) live in the packaged ``kuaihl_rec/configs/world.yaml``::

    presets:
      default: {...}            # the embedded default (equal to WorldConfig())
      tiny:    {preset: default, n_streamers: 12, ...}

A user's config file is either a mapping of knobs with an optional ``preset:`` base::

    preset: default
    seed: 7
    content_signal: 0.5
    text_lag: {-1: 0.5, 0: 0.5}

or a presets file of the same shape as ``world.yaml`` (then ``preset=`` picks one of its
presets). Unknown keys are an error that names the key (and the closest known one); every value is
type- and range-checked (:func:`_validate`), e.g. ``n_rooms >= n_streamers``, fractions in [0, 1] with
``val_fraction + test_fraction < 1``, AR coefficients in [0, 1), ``text_lag`` probabilities summing to 1.

Example::

    >>> cfg = load_world_config("tiny", content_signal=0.0)
    >>> cfg.n_streamers, cfg.content_signal
    (12, 0.0)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import yaml

from kuaihl_rec.data.schema import FeatureSizes

PRESETS_FILE = Path(__file__).resolve().parent.parent / "configs" / "world.yaml"

#: Hidden content states of a segment, in code order (``state`` column of the truth sidecar).
STATE_NAMES: Tuple[str, ...] = ("idle", "talk", "performance", "pk", "highlight")
#: Streamer categories known to the world (their built-in profiles are in ``world_profiles.py``).
CATEGORY_NAMES: Tuple[str, ...] = ("dance", "singing", "gaming", "chat", "pk", "shopping")


class WorldConfigError(ValueError):
    """A world configuration that cannot be used; the message names the key (and file)."""


Pairs = Tuple[Tuple[Any, float], ...]


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Every knob of the synthetic world (see ``docs/WORLD.md`` for the equations).

    Mapping-valued knobs (``text_lag``, ``category_weights``, ``state_effects``) may be
    given as dicts; they are stored as sorted tuples of ``(key, value)`` pairs so the
    config stays hashable. :meth:`to_dict` gives them back as dicts.
    """

    preset: str = "default"
    seed: int = 0
    chain_seed: Optional[int] = None

    # --- population, rooms and schedules -------------------------------------------------
    n_streamers: int = 120
    n_rooms: int = 700
    segments_per_room: float = 120.0
    room_length_sigma: float = 0.6
    min_segments_per_room: int = 10
    max_segments_per_room: int = 720
    total_segments: Optional[int] = None
    n_days: int = 14
    start_time: int = 1_704_067_200
    utc_offset_hours: float = 8.0
    schedule_jitter_hours: float = 1.0
    category_weights: Pairs = (
        ("chat", 1.0),
        ("dance", 1.0),
        ("gaming", 1.0),
        ("pk", 0.6),
        ("shopping", 0.8),
        ("singing", 1.0),
    )
    activity_sigma: float = 0.8

    # --- splits ---------------------------------------------------------------------------
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    cold_start_fraction: float = 0.2

    # --- hidden content chain -------------------------------------------------------------
    state_dwell: float = 5.0
    highlight_rate: float = 1.0
    highlight_mean_length: float = 2.5
    highlight_max_length: int = 6

    # --- hidden attractiveness (LVTR logit) ----------------------------------------------
    lvtr_base_logit: float = 0.45
    state_effects: Pairs = (
        ("highlight", 1.5),
        ("idle", -0.9),
        ("performance", 0.4),
        ("pk", 0.5),
        ("talk", -0.2),
    )
    talent_sigma: float = 0.35
    appeal_sigma: float = 0.45
    quality_dim: int = 4
    quality_sigma: float = 0.35
    quality_ar: float = 0.7
    taste_amplitude: float = 0.15
    trend_ar: float = 0.97
    trend_sigma: float = 0.25

    # --- CTR ---------------------------------------------------------------------------------
    ctr_base_logit: float = -2.4
    ctr_attract_coef: float = 0.6
    ctr_cover_sigma: float = 0.3
    ctr_noise_sigma: float = 0.15

    # --- audience and counters -------------------------------------------------------------
    exposures_per_segment: float = 600.0
    popularity_sigma: float = 0.8
    popularity_appeal_corr: float = 0.4
    traffic_amplitude: float = 0.6
    traffic_peak_hour: float = 21.0
    exposure_feedback: float = 0.3
    organic_per_segment: float = 6.0
    retention_base_logit: float = 1.6
    retention_attract_coef: float = 0.8
    comment_rate: float = 0.05
    like_rate: float = 0.3
    gift_rate: float = 0.004
    follow_rate: float = 0.003
    reaction_coef: float = 1.0
    min_viewers: int = 60

    # --- features --------------------------------------------------------------------------
    content_signal: float = 1.0
    visual_tokens: int = 1
    visual_dim: int = 64
    text_dim: int = 64
    map_hidden: int = 32
    visual_noise: float = 1.0
    text_noise: float = 1.0
    streamer_style_sigma: float = 0.5
    room_style_sigma: float = 0.3
    text_lag: Pairs = ((-2, 0.1), (-1, 0.25), (0, 0.4), (1, 0.25))
    comment_weight: float = 0.5
    comment_lag: int = 1
    lyrics_rate: float = 0.2

    # --- raw media (docs/WORLD.md section 7b) ---------------------------------------------------
    raw_media: bool = False
    frame_size: int = 32

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name)))
        _validate(self)

    @property
    def sizes(self) -> FeatureSizes:
        return FeatureSizes(visual_tokens=self.visual_tokens, visual_dim=self.visual_dim, text_dim=self.text_dim)

    def to_dict(self) -> Dict[str, Any]:
        """Plain Python (YAML/JSON-ready) form; ``WorldConfig(**cfg.to_dict()) == cfg``."""
        out: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if f.name in _PAIR_FIELDS else value
        return out

    def replace(self, **overrides: Any) -> "WorldConfig":
        _check_keys(overrides, where="override")
        return dataclasses.replace(self, **overrides)


# ------------------------------------------------------------------------------------------------
# Coercion and validation
# ------------------------------------------------------------------------------------------------

_PAIR_FIELDS: Dict[str, type] = {"text_lag": int, "category_weights": str, "state_effects": str}
_OPTIONAL_INT = {"chain_seed", "total_segments"}
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(WorldConfig)}
FIELD_NAMES: Tuple[str, ...] = tuple(_FIELD_DEFAULTS)


def _coerce(name: str, value: Any) -> Any:
    if name in _PAIR_FIELDS:
        return _coerce_pairs(name, value, _PAIR_FIELDS[name])
    if name in _OPTIONAL_INT:
        return None if value is None else _as_int(name, value)
    default = _FIELD_DEFAULTS[name]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise WorldConfigError(f"world config key {name!r}: expected true/false, got {value!r}")
        return value
    if isinstance(default, int):
        return _as_int(name, value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorldConfigError(f"world config key {name!r}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise WorldConfigError(f"world config key {name!r}: expected a finite number, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise WorldConfigError(f"world config key {name!r}: expected a string, got {value!r}")
        return value
    return value


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise WorldConfigError(f"world config key {name!r}: expected an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        if isinstance(value, np.integer):
            return int(value)
        raise WorldConfigError(f"world config key {name!r}: expected an integer, got {value!r}")
    return int(value)


def _coerce_pairs(name: str, value: Any, key_type: type) -> Pairs:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        try:
            items = [(k, v) for k, v in value]
        except (TypeError, ValueError) as exc:
            raise WorldConfigError(f"world config key {name!r}: expected a mapping, got {value!r}") from exc
    else:
        raise WorldConfigError(f"world config key {name!r}: expected a mapping, got {value!r}")
    out = {}
    for k, v in items:
        if key_type is int:
            try:
                k = int(str(k).strip()) if not isinstance(k, bool) else None
            except ValueError:
                k = None
            if k is None:
                raise WorldConfigError(f"world config key {name!r}: keys must be integer shifts, got {items!r}")
        else:
            k = str(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise WorldConfigError(f"world config key {name!r}: value for {k!r} must be a number, got {v!r}")
        if k in out:
            raise WorldConfigError(f"world config key {name!r}: key {k!r} given twice")
        out[k] = float(v)
    return tuple(sorted(out.items()))


def _require(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise WorldConfigError(f"world config key {name!r}: {msg}")


def _validate(cfg: WorldConfig) -> None:
    """Raise :class:`WorldConfigError` naming the first knob out of its range (fixed check order)."""
    _validate_structure(cfg)
    _validate_dynamics(cfg)
    _validate_features(cfg)


def _validate_structure(cfg: WorldConfig) -> None:
    """Seeds, population, rooms, schedules, categories and splits (docs/WORLD.md section 3)."""
    _require(cfg.seed >= 0, "seed", "must be >= 0")
    _require(cfg.chain_seed is None or cfg.chain_seed >= 0, "chain_seed", "must be >= 0 or null")
    _require(cfg.n_streamers >= 1, "n_streamers", "must be >= 1")
    every_streamer = f"must be >= n_streamers ({cfg.n_streamers}): every streamer has a room"
    _require(cfg.n_rooms >= cfg.n_streamers, "n_rooms", every_streamer)
    _require(cfg.segments_per_room >= 1, "segments_per_room", "must be >= 1")
    _require(cfg.room_length_sigma >= 0, "room_length_sigma", "must be >= 0")
    _require(cfg.min_segments_per_room >= 1, "min_segments_per_room", "must be >= 1")
    _require(
        cfg.max_segments_per_room >= cfg.min_segments_per_room,
        "max_segments_per_room",
        f"must be >= min_segments_per_room ({cfg.min_segments_per_room})",
    )
    if cfg.total_segments is not None:
        lo, hi = cfg.n_rooms * cfg.min_segments_per_room, cfg.n_rooms * cfg.max_segments_per_room
        _require(lo <= cfg.total_segments <= hi, "total_segments", f"must lie in [{lo}, {hi}] for {cfg.n_rooms} rooms")
    _require(cfg.n_days >= 1, "n_days", "must be >= 1")
    _require(cfg.start_time >= 0, "start_time", "must be unix seconds >= 0")
    _require(-24 < cfg.utc_offset_hours < 24, "utc_offset_hours", "must lie in (-24, 24)")
    _require(cfg.schedule_jitter_hours >= 0, "schedule_jitter_hours", "must be >= 0")
    category_weights = dict(cfg.category_weights)
    unknown = sorted(set(category_weights) - set(CATEGORY_NAMES))
    _require(not unknown, "category_weights", f"unknown categories {unknown}; known: {list(CATEGORY_NAMES)}")
    weights = category_weights.values()
    _require(all(w >= 0 for w in weights) and sum(weights) > 0, "category_weights", "weights must be >= 0, not all 0")
    _require(cfg.activity_sigma >= 0, "activity_sigma", "must be >= 0")
    for name in ("val_fraction", "test_fraction", "cold_start_fraction"):
        _require(0.0 <= getattr(cfg, name) <= 1.0, name, "must lie in [0, 1]")
    _require(cfg.val_fraction + cfg.test_fraction < 1.0, "test_fraction", "val_fraction + test_fraction must be < 1")


def _validate_dynamics(cfg: WorldConfig) -> None:
    """Hidden chain, attractiveness, CTR and audience knobs (docs/WORLD.md sections 4-6)."""
    _require(cfg.state_dwell >= 1.0, "state_dwell", "must be >= 1 (mean segments in a state)")
    _require(cfg.highlight_rate >= 0, "highlight_rate", "must be >= 0")
    _require(cfg.highlight_mean_length >= 1.0, "highlight_mean_length", "must be >= 1")
    _require(cfg.highlight_max_length >= 1, "highlight_max_length", "must be >= 1")
    effects = dict(cfg.state_effects)
    _require(set(effects) == set(STATE_NAMES), "state_effects", f"must give exactly the states {list(STATE_NAMES)}")
    for name in ("talent_sigma", "appeal_sigma", "quality_sigma", "taste_amplitude", "trend_sigma", "ctr_cover_sigma",
                 "ctr_noise_sigma", "popularity_sigma", "traffic_amplitude", "organic_per_segment", "comment_rate",
                 "like_rate", "gift_rate", "follow_rate", "reaction_coef", "content_signal", "visual_noise",
                 "text_noise", "streamer_style_sigma", "room_style_sigma", "comment_weight"):
        _require(getattr(cfg, name) >= 0, name, "must be >= 0")
    _require(cfg.quality_dim >= 1, "quality_dim", "must be >= 1")
    _require(0.0 <= cfg.quality_ar < 1.0, "quality_ar", "must lie in [0, 1)")
    _require(0.0 <= cfg.trend_ar < 1.0, "trend_ar", "must lie in [0, 1)")
    _require(cfg.exposures_per_segment > 0, "exposures_per_segment", "must be > 0")
    _require(-1.0 <= cfg.popularity_appeal_corr <= 1.0, "popularity_appeal_corr", "must lie in [-1, 1]")
    _require(0 <= cfg.traffic_peak_hour < 24, "traffic_peak_hour", "must lie in [0, 24)")
    _require(cfg.min_viewers >= 0, "min_viewers", "must be >= 0")


def _validate_features(cfg: WorldConfig) -> None:
    """Feature sizes, text lag, comment lag and lyrics (docs/WORLD.md section 7)."""
    for name in ("visual_tokens", "visual_dim", "text_dim", "map_hidden"):
        _require(getattr(cfg, name) >= 1, name, "must be >= 1")
    shift_probs = dict(cfg.text_lag)
    total = sum(shift_probs.values())
    _require(len(shift_probs) > 0, "text_lag", "must give at least one shift")
    _require(all(-10 <= k <= 10 for k in shift_probs), "text_lag", "shifts must lie in [-10, 10] segments")
    _require(all(p >= 0 for p in shift_probs.values()), "text_lag", "probabilities must be >= 0")
    _require(abs(total - 1.0) < 1e-6, "text_lag", f"probabilities must sum to 1 (got {total:g})")
    _require(cfg.comment_lag >= 0, "comment_lag", "must be >= 0")
    _require(0.0 <= cfg.lyrics_rate <= 1.0, "lyrics_rate", "must lie in [0, 1]")
    _require(8 <= cfg.frame_size <= 256, "frame_size", "must lie in [8, 256] pixels")


# ------------------------------------------------------------------------------------------------
# Presets and loading
# ------------------------------------------------------------------------------------------------


def _check_keys(mapping: Mapping[str, Any], where: str) -> None:
    for key in mapping:
        if key not in _FIELD_DEFAULTS:
            close = difflib.get_close_matches(str(key), FIELD_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WorldConfigError(f"{where}: unknown world config key {key!r}{hint}")


def _read_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise WorldConfigError(f"{path}: no such world config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise WorldConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WorldConfigError(f"{path}: expected a mapping of world config keys, got {type(data).__name__}")
    return data


def _resolve_presets(
    raw: Mapping[str, Any], where: str, fallback: Optional[Mapping[str, WorldConfig]] = None
) -> Dict[str, WorldConfig]:
    """Resolve a ``presets:`` mapping; a preset may name a base with ``preset: NAME``
    (another preset of the same mapping, else one of ``fallback``)."""
    if not isinstance(raw, Mapping) or not raw:
        raise WorldConfigError(f"{where}: 'presets' must be a non-empty mapping of name -> knobs")
    resolved: Dict[str, WorldConfig] = {}

    def resolve(name: str, stack: Tuple[str, ...]) -> WorldConfig:
        if name in resolved:
            return resolved[name]
        if name in stack:
            raise WorldConfigError(f"{where}: presets refer to each other in a cycle: {' -> '.join(stack + (name,))}")
        if name not in raw:
            if fallback and name in fallback:
                return fallback[name]
            known = sorted(set(raw) | set(fallback or {}))
            raise WorldConfigError(f"{where}: unknown preset {name!r}; known: {known}")
        body = dict(raw[name] or {})
        if not isinstance(raw[name] or {}, Mapping):
            raise WorldConfigError(f"{where}: preset {name!r} must be a mapping of knobs")
        base_name = body.pop("preset", None)
        _check_keys(body, where=f"{where}, preset {name!r}")
        base = resolve(str(base_name), stack + (name,)) if base_name is not None else WorldConfig()
        try:
            cfg = dataclasses.replace(base, preset=name, **body)
        except WorldConfigError as exc:
            raise WorldConfigError(f"{where}, preset {name!r}: {exc}") from exc
        resolved[name] = cfg
        return cfg

    for name in raw:
        resolve(str(name), ())
    return resolved


def _load_packaged_presets() -> Dict[str, WorldConfig]:
    data = _read_yaml(PRESETS_FILE)
    if set(data) != {"presets"}:
        raise WorldConfigError(f"{PRESETS_FILE}: expected a single top-level key 'presets'")
    return _resolve_presets(data["presets"], str(PRESETS_FILE))


#: Named presets from ``kuaihl_rec/configs/world.yaml`` (``default``, ``tiny``, ``tiny_media``, ``media``,
#: ``media_small``, ``no_content``, ``bench_1m``).
WORLD_PRESETS: Dict[str, WorldConfig] = _load_packaged_presets()


def load_world_config(
    preset: Optional[str] = None, path: Optional[Union[str, Path]] = None, **overrides: Any
) -> WorldConfig:
    """Resolve a world config: a preset, then a user's YAML file, then keyword overrides.

    - ``preset``: a name from :data:`WORLD_PRESETS` (or, when ``path`` is a presets file, from
      that file). It wins over a ``preset:`` key inside the file. Default: ``"default"``.
    - ``path``: a YAML mapping of knobs (optionally with ``preset: NAME`` as its base), or a
      presets file with a top-level ``presets:`` mapping like the packaged one.
    - ``overrides``: knob values applied last.

    Unknown keys raise :class:`WorldConfigError` naming the key.
    """
    presets = WORLD_PRESETS
    body: Dict[str, Any] = {}
    where = "load_world_config"
    if path is not None:
        where = str(path)
        data = _read_yaml(path)
        if "presets" in data:
            extra = sorted(set(data) - {"presets"})
            if extra:
                raise WorldConfigError(f"{path}: a presets file has only the key 'presets'; also found {extra}")
            presets = {**WORLD_PRESETS, **_resolve_presets(data["presets"], str(path), fallback=WORLD_PRESETS)}
        else:
            body = dict(data)
            file_preset = body.pop("preset", None)
            if preset is None and file_preset is not None:
                preset = str(file_preset)
            _check_keys(body, where=str(path))
    name = preset or "default"
    if name not in presets:
        raise WorldConfigError(f"{where}: unknown world preset {name!r}; known: {sorted(presets)}")
    cfg = presets[name]
    _check_keys(overrides, where="override")
    try:
        if body:
            cfg = dataclasses.replace(cfg, **body)
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
    except WorldConfigError as exc:
        raise WorldConfigError(f"{where}: {exc}") from exc
    return cfg


def config_to_yaml(cfg: WorldConfig) -> str:
    """The resolved config as YAML; :func:`load_world_config` ``(path=...)`` reads it back equal."""
    header = "# Resolved synthetic-world config (kuaihl_rec.data.world_config.WorldConfig); see docs/WORLD.md.\n"
    return header + yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
