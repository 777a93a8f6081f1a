"""One way to read, write and change every frozen config dataclass of the project.

A config is a frozen dataclass whose fields are plain values, tuples, other config dataclasses
(a *tree*: ``TrainConfig.data`` is a ``WindowConfig``, ``TrainConfig.optim`` an ``OptimConfig``)
or *override maps* (``Tuple[Tuple[str, Any], ...]``, e.g. ``ModelChoice.overrides``: keyword
overrides of a factory, kept as sorted pairs so the config stays hashable).

::

    to_dict(cfg)                       -> a JSON-ready dict (override maps as dicts)
    from_dict(TrainConfig, d)          -> the same config back (lists -> tuples, nested dicts ->
                                          nested configs); an unknown key is a ValueError naming
                                          its dotted path and the known keys
    set_path(cfg, "data.stride", 8)    -> a copy with one leaf replaced; a key below an override
                                          map lands in the map ("model.overrides.d"), and a key
                                          that is not a field of a config holding an override map
                                          goes into that map ("model.d" = "model.overrides.d")
    apply(cfg, {"epochs": 2, "optim.lr": 1e-3})   several set_path at once (``--set a.b=c``)

A value for a nested config may be a dict of its fields (merged into the current value) or, where
the nested config declares a ``SHORTHAND`` field, a plain value for it (``model="deepfm"`` is
``model.name = "deepfm"``).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict, Mapping, Tuple, Type, TypeVar

C = TypeVar("C")
OVERRIDES = "overrides"  # the conventional name of an override-map field


def _field_types(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_override_map(cls: type, name: str) -> bool:
    return name == OVERRIDES and name in {f.name for f in dataclasses.fields(cls)}


def to_dict(cfg: Any) -> Dict[str, Any]:
    """``cfg`` as a JSON-ready dict (nested configs as dicts, override maps as dicts, tuples kept)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif _is_override_map(type(cfg), f.name):
            value = dict(value)
        out[f.name] = value
    return out


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if _is_config(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, path)
        shorthand = getattr(tp, "SHORTHAND", None)
        if shorthand:
            return dataclasses.replace(tp(), **{shorthand: value})
        raise ValueError(f"config {path}: expected a mapping of {tp.__name__} fields, got {value!r}")
    if isinstance(value, list):
        return tuple(value)
    return value


def from_dict(cls: Type[C], data: Mapping[str, Any], path: str = "") -> C:
    """The ``cls`` config described by ``data`` (as :func:`to_dict` writes it)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"config {path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    types = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        where = f" under {path!r}" if path else ""
        raise ValueError(f"unknown config key(s) {unknown}{where} of {cls.__name__}; known: {known}")
    values = {}
    for name, value in data.items():
        if _is_override_map(cls, name):
            values[name] = tuple(sorted(dict(value).items()))
        else:
            values[name] = _coerce(types[name], value, f"{path}.{name}" if path else name)
    return cls(**values)


def set_path(cfg: C, dotted: str, value: Any) -> C:
    """A copy of ``cfg`` with the leaf at ``dotted`` replaced (see the module docstring)."""
    head, _, rest = dotted.partition(".")
    names = {f.name for f in dataclasses.fields(cfg)}
    if head not in names:
        if OVERRIDES in names:  # "model.d" -> "model.overrides.d"
            return set_path(cfg, f"{OVERRIDES}.{dotted}", value)
        hint = _suggest(cfg, head)
        raise ValueError(f"unknown config key {head!r} of {type(cfg).__name__}{hint}; known: {sorted(names)}")
    current = getattr(cfg, head)
    if _is_override_map(type(cfg), head):
        if not rest:
            return dataclasses.replace(cfg, **{head: tuple(sorted(dict(value).items()))})
        merged = dict(current)
        merged[rest] = value
        return dataclasses.replace(cfg, **{head: tuple(sorted(merged.items()))})
    if rest:
        if not dataclasses.is_dataclass(current):
            raise ValueError(
                f"config key {head!r} of {type(cfg).__name__} is a value, not a section: cannot set {dotted!r}"
            )
        return dataclasses.replace(cfg, **{head: set_path(current, rest, value)})
    tp = _field_types(type(cfg))[head]
    if _is_config(tp) and isinstance(value, Mapping):
        return dataclasses.replace(cfg, **{head: apply(current, _flatten(value))})
    return dataclasses.replace(cfg, **{head: _coerce(tp, value, head)})


def _flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != OVERRIDES:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def apply(cfg: C, changes: Mapping[str, Any]) -> C:
    """``set_path`` for every ``dotted key -> value`` of ``changes``, in order."""
    for dotted, value in changes.items():
        cfg = set_path(cfg, dotted, value)
    return cfg


def _suggest(cfg: Any, key: str) -> str:
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(sub) and key in {g.name for g in dataclasses.fields(sub)}:
            return f" (did you mean {f.name}.{key}?)"
    return ""


def pairs(mapping: Mapping[str, Any]) -> Tuple[Tuple[str, Any], ...]:
    """An override map's stored form: sorted ``(key, value)`` pairs."""
    return tuple(sorted(dict(mapping).items()))
