"""Checks of the ``kuaihl`` command line, made before a command reads data or makes a directory.

A bad input is a :class:`UsageError` whose message names the input (the flag or argument) and what
was expected; ``kuaihl`` prints it as one line and exits 2. Only the standard library at import time, so the parser
(``kuaihl --help``) stays fast.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, Optional


class UsageError(Exception):
    """A bad command line: a value, key, name or path the user gave. ``kuaihl`` exits 2 with one line."""


def require_path(path: Any, flag: str, expected: str) -> None:
    """``path`` (given as ``flag``) must exist; ``expected`` says what it should be."""
    if path is not None and not Path(path).exists():
        raise UsageError(f"{flag} {path}: no such file or directory (expected {expected})")


def require_writable(path: Any, flag: str = "--out", *, directory: bool = True) -> None:
    """``path`` (a directory, or a file when not ``directory``) can be made: the nearest existing
    ancestor is a writable directory, and ``path`` itself is not a file (a directory, for a file)."""
    if path is None:
        return
    target = Path(path)
    if target.exists() and target.is_dir() != directory:
        kind = "a directory" if directory else "a file"
        raise UsageError(f"{flag} {path}: exists and is not {kind}")
    base = target if target.is_dir() else target.parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UsageError(f"{flag} {path}: cannot be made, {base} is a file")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write there ({base} is not writable)")


def require_at_least(value: Optional[float], flag: str, minimum: int = 1) -> None:
    """An integer flag (None: not given) is at least ``minimum``."""
    if value is not None and value < minimum:
        raise UsageError(f"{flag} expects an integer >= {minimum}, got {value}")


def require_choice(value: str, flag: str, choices: Iterable[str], what: str) -> None:
    """``value`` (given as ``flag``) is one of ``choices``; ``what`` names the kind (e.g. "training preset")."""
    choices = list(choices)
    if value not in choices:
        raise UsageError(f"{flag} {value!r}: unknown {what}; expected one of {', '.join(choices)}")


def require_split(split: str) -> None:
    """``--split`` names one of the table's splits (train, val, test)."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.data.schema import SPLITS

    require_choice(split, "--split", SPLITS, "split")


def _describe(tp: Any) -> str:
    """A type as the user reads it: ``int`` -> "an integer", ``Optional[int]`` -> "an integer or null"."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union:
        named = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(named + (["null"] if type(None) in args else []))
    if typing.get_origin(tp) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
            return f"a list of {plural.get(args[0], 'values')}"
        return f"a list of {len(args)} values"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` (as ``--set`` parsed it) is of the declared field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return any(_fits(a, value) for a in args)
    if tp is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(args[0], v) for v in value)
        return len(args) == len(value) and all(_fits(a, v) for a, v in zip(args, value, strict=True))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _declared_type(cls: type, dotted: str) -> Any:
    """The declared type of the leaf ``dotted`` of config class ``cls``; None when there is none to
    check (an override map's keys, a whole section, an unknown key: the config reports those)."""
    head, _, rest = dotted.partition(".")
    hints = typing.get_type_hints(cls)
    if head not in hints or head == "overrides":
        return None
    tp = hints[head]
    if dataclasses.is_dataclass(tp):
        return _declared_type(tp, rest) if rest else None
    return None if rest else tp


def check_config_types(cls: type, changes: Dict[str, Any]) -> None:
    """Every ``--set key=value`` of ``changes`` has the type its field of ``cls`` declares."""
    for dotted, value in changes.items():
        tp = _declared_type(cls, dotted)
        if tp is not None and not _fits(tp, value):
            raise UsageError(f"--set {dotted}={value!r}: {dotted} expects {_describe(tp)}")
