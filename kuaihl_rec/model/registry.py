"""A small model registry shared by the content models and the ID baselines (timm style).

::

    @register_model("my_model", family="id_baseline", default_loss="point", description="...",
                    paper={"tau": 0.56})
    def my_model(spec: BatchSpec, *, width: int = 16) -> nn.Module: ...

    model = create_model("my_model", spec, width=32)
    list_models()                      # sorted names
    list_models(family="id_baseline")  # names of one family, in registration order
    model_info("my_model")             # ModelInfo: family, default loss, description, paper numbers

Every fact about a model lives in its :class:`ModelInfo` (as timm keeps ``default_cfg``): which
family it belongs to (``"content"`` or ``"id_baseline"``), the loss preset a trainer uses when none
is asked for (:data:`kuaihl_rec.losses.LOSS_PRESETS`), a one-line description, and the numbers the
papers report for it on KLive, as data (``paper``: e.g. ``{"tau": 0.5919}``; the content model also
carries its loss-ablation rows). ``create_model`` sets ``model.default_loss`` from it.

Every registered factory takes the :class:`~kuaihl_rec.data.batch.BatchSpec` first and keyword
overrides after it, and returns an ``nn.Module`` whose ``forward(batch: LiveBatch)`` returns
float32 logits ``[b, n]``.

The override names a factory accepts are its keyword parameters (read from its signature), or,
for a factory taking ``**overrides``, the ``overrides=`` list given to :func:`register_model`.
An unknown override is a ``TypeError`` naming it and the valid ones (no silently swallowed
typos); an unknown model name is a ``KeyError`` listing the registered names.

Registration happens in the module that defines the model. The registry knows no package by
name: on first use it imports ``kuaihl_rec.model`` (its own content models) and every package that
declares the entry point group ``kuaihl_rec.models`` (``pyproject.toml``: the ``baselines`` package
does; a plug-in package declares its own), or a caller registers models explicitly by importing
their package before use.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from importlib import metadata
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from torch import nn

from kuaihl_rec.data.batch import BatchSpec

ModelFactory = Callable[..., nn.Module]

ENTRY_POINT_GROUP = "kuaihl_rec.models"
FAMILIES = ("content", "id_baseline", "other")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    name: registry name.  family: ``"content"`` (content models), ``"id_baseline"`` (ID-based CTR
    models) or ``"other"``.  default_loss: the loss preset a trainer uses when none is given.
    description: one line.  paper: the papers' reported numbers for this model (KLive), as data:
    ``{"tau": ...}`` for Table 1 rows, ``{"drop_pct": ...}`` for modality ablations,
    ``{"loss_ablation": {preset: tau}}`` for the loss rows of Table 4 (empty when the papers report
    none).  overrides: the keyword overrides ``create_model`` accepts.
    """

    name: str
    family: str
    default_loss: str
    description: str
    paper: Mapping[str, Any]
    overrides: Tuple[str, ...]


_FACTORIES: Dict[str, ModelFactory] = {}
_INFO: Dict[str, ModelInfo] = {}


def _signature_overrides(fn: ModelFactory) -> Optional[Tuple[str, ...]]:
    """Keyword parameters after the first (the spec); None when the factory takes ``**kwargs``."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"model factory {fn!r} must take the BatchSpec as its first parameter")
    names = []
    for p in params[1:]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        names.append(p.name)
    return tuple(names)


def register_model(
    name: str,
    *,
    family: str = "other",
    default_loss: str = "point",
    description: str = "",
    paper: Optional[Mapping[str, Any]] = None,
    overrides: Optional[Iterable[str]] = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(spec: BatchSpec, **overrides) -> nn.Module`` under ``name``.

    Args:
        name: registry name (unique; registering a second factory under it is a ``ValueError``).
        family, default_loss, description, paper: the model's :class:`ModelInfo`.
        overrides: the override names the factory accepts; required when it takes ``**kwargs``,
            otherwise read from its signature.
    """
    if family not in FAMILIES:
        raise ValueError(f"model family must be one of {FAMILIES}, got {family!r}")

    def decorator(fn: ModelFactory) -> ModelFactory:
        if not isinstance(name, str) or not name:
            raise ValueError(f"model name must be a non-empty string, got {name!r}")
        if name in _FACTORIES and _FACTORIES[name] is not fn:
            raise ValueError(f"a model named {name!r} is already registered ({_FACTORIES[name]!r})")
        valid = tuple(overrides) if overrides is not None else _signature_overrides(fn)
        if valid is None:
            raise TypeError(
                f"model factory for {name!r} takes **kwargs: pass overrides=[...] to register_model so "
                "unknown override keys can be rejected"
            )
        _FACTORIES[name] = fn
        _INFO[name] = ModelInfo(name, family, default_loss, description or (fn.__doc__ or "").strip().split("\n")[0],
                                dict(paper or {}), tuple(sorted(valid)))
        return fn

    return decorator


_OWN_PACKAGE = "kuaihl_rec.model"
_builtins_loaded = False


def _load_builtin_models() -> None:
    """On first use, import the content models (``kuaihl_rec.model``) and every package declaring
    the ``kuaihl_rec.models`` entry point (the ``baselines`` package, plug-ins), so
    ``create_model("deepfm", ...)`` works without the caller importing ``baselines``.

    The flag is set before importing, so a lookup made while those packages import (an import
    cycle) does not recurse; a failed import resets it and raises.
    """
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    try:
        importlib.import_module(_OWN_PACKAGE)
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
    except BaseException:
        _builtins_loaded = False
        raise


def list_models(family: Optional[str] = None) -> List[str]:
    """Names of every registered model, sorted; with ``family``, that family's names in
    registration order (the order its package registers them: the papers' table order)."""
    _load_builtin_models()
    if family is None:
        return sorted(_FACTORIES)
    return [name for name, info in _INFO.items() if info.family == family]


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered model."""
    _check_name(name)
    return _INFO[name]


def model_overrides(name: str) -> Tuple[str, ...]:
    """The override keys ``create_model(name, spec, **overrides)`` accepts (sorted)."""
    return model_info(name).overrides


def _check_name(name: str) -> None:
    _load_builtin_models()
    if name not in _FACTORIES:
        raise KeyError(f"unknown model {name!r}; registered models: {list_models()}")


def create_model(name: str, spec: BatchSpec, **overrides: object) -> nn.Module:
    """Build the registered model ``name`` for batches described by ``spec``.

    Raises:
        KeyError: unknown ``name`` (the message lists :func:`list_models`).
        TypeError: an override key the factory does not accept (the message names it and the
            valid keys).
    """
    _check_name(name)
    if not isinstance(spec, BatchSpec):
        raise TypeError(f"create_model({name!r}, spec, ...): spec must be a BatchSpec, got {type(spec).__name__}")
    info = _INFO[name]
    unknown = sorted(k for k in overrides if k not in info.overrides)
    if unknown:
        raise TypeError(f"model {name!r} got unknown override(s) {unknown}; valid overrides: {list(info.overrides)}")
    model = _FACTORIES[name](spec, **overrides)
    model.default_loss = info.default_loss  # the registry is the one source of this fact
    return model
