"""A small model registry shared by the content models and the ID baselines (timm style).

::

    @register_model("my_model")
    def my_model(spec: BatchSpec, *, width: int = 16) -> nn.Module: ...

    model = create_model("my_model", spec, width=32)
    list_models()   # sorted names

Every registered factory takes the :class:`~kuaihl_rec.data.batch.BatchSpec` first and keyword
overrides after it, and returns an ``nn.Module`` whose ``forward(batch: LiveBatch)`` returns
float32 logits ``[b, n]``.

The override names a factory accepts are its keyword parameters (read from its signature), or,
for a factory taking ``**overrides``, the ``overrides=`` list given to :func:`register_model`.
An unknown override is a ``TypeError`` naming it and the valid ones (no silently swallowed
typos); an unknown model name is a ``KeyError`` listing the registered names.

Registration happens in the module that defines the model; ``kuaihl_rec.model`` imports its
model modules explicitly, and the ``baselines`` package does the same for its own.
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from torch import nn

from kuaihl_rec.data.batch import BatchSpec

ModelFactory = Callable[..., nn.Module]

_FACTORIES: Dict[str, ModelFactory] = {}
_OVERRIDES: Dict[str, Tuple[str, ...]] = {}


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


def register_model(name: str, *, overrides: Optional[Iterable[str]] = None) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering ``fn(spec: BatchSpec, **overrides) -> nn.Module`` under ``name``.

    Args:
        name: registry name (unique; registering a second factory under it is a ``ValueError``).
        overrides: the override names the factory accepts; required when it takes ``**kwargs``,
            otherwise read from its signature.
    """

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
        _OVERRIDES[name] = tuple(sorted(valid))
        return fn

    return decorator


_BUILTIN_PACKAGES = ("kuaihl_rec.model", "baselines")
_builtins_loaded = False


def _load_builtin_models() -> None:
    """Import the packages that register the built-in models (content models, ID baselines) on first
    use, so ``create_model("deepfm", ...)`` works without the caller importing ``baselines``.

    The flag is set before importing, so a lookup made while those packages import (an import
    cycle) does not recurse; a failed import resets it and raises.
    """
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import importlib

    try:
        for package in _BUILTIN_PACKAGES:
            importlib.import_module(package)
    except BaseException:
        _builtins_loaded = False
        raise


def list_models() -> List[str]:
    """Names of every registered model, sorted."""
    _load_builtin_models()
    return sorted(_FACTORIES)


def model_overrides(name: str) -> Tuple[str, ...]:
    """The override keys ``create_model(name, spec, **overrides)`` accepts (sorted)."""
    _check_name(name)
    return _OVERRIDES[name]


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
    valid = _OVERRIDES[name]
    unknown = sorted(k for k in overrides if k not in valid)
    if unknown:
        raise TypeError(f"model {name!r} got unknown override(s) {unknown}; valid overrides: {list(valid)}")
    return _FACTORIES[name](spec, **overrides)
