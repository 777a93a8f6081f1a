"""Arms: named ranking formulas, their hashed assignment to users, and the arms config of ``kuaihl ab``.

:data:`DEFAULT_CONFIG` is the built-in config (the production-like control terms ``cum_ctr`` and
``cum_lvtr``); :func:`load_arms_config` merges a mapping or a YAML / JSON file over it;
:func:`build_arms` turns it into the arms (control, treatment, the config's own arms, then the
sanity arms ``aa``, ``placebo`` and ``oracle``) and the derived terms the sanity arms use.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import yaml

from ranking.blend import Formula, Term, parse_formula
from ranking.random_numbers import (
    MANTISSA_SHIFT,
    TWO_POW_53,
    UINT64_MASK,
    splitmix64,
    stable_hash,
)
from ranking.scores import TruthTerm

__all__ = ["Arm", "DEFAULT_CONFIG", "assign_arms", "build_arms", "load_arms_config", "used_terms"]

DEFAULT_CONFIG: Dict[str, Any] = {
    "terms": {
        "ctr": {"source": "cum_ctr", "calibrate": "auto", "missing": "carry"},
        "lvtr": {"source": "cum_lvtr", "calibrate": "auto", "missing": "carry"},
    },
    "arms": {"control": {"ctr": 1.0, "lvtr": 1.0}},
    "control": "control",
    "treatment": "treatment",
    "content_term": "content",
    "treatment_weight": 1.0,
    "sanity": {"aa": True, "placebo": True, "oracle": True},
    "sweep": {"weights": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0], "existing": [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
              "oracle": True},
    "shares": None,
    "simulator": {},
    "split": "test",
    "n_boot": 200,
}
PLACEBO_SUFFIX = "~placebo"
ORACLE_SUFFIX = "~oracle"


@dataclasses.dataclass(frozen=True)
class Arm:
    """A named ranking formula; ``role`` says what it is for (control, treatment, aa, placebo, oracle, arm)."""

    name: str
    formula: Formula
    role: str = "arm"
    planted: Tuple[Tuple[str, float], ...] = ()

    @property
    def planted_dict(self) -> Dict[str, float]:
        return dict(self.planted)


def assign_arms(user_id: np.ndarray, n_arms: int, shares: Optional[Sequence[float]] = None,
                salt: Union[int, str] = 0) -> np.ndarray:
    """Arm index of every user: ``splitmix64(user_id ^ hash(salt))`` mapped onto the cumulative shares.

    Depends only on (user id, salt): stable across days, runs, population sizes and machines.
    """
    shares = np.full(n_arms, 1.0 / n_arms) if shares is None else np.asarray(shares, dtype=np.float64)
    if len(shares) != n_arms or np.any(shares <= 0):
        raise ValueError("shares must give one positive share per arm")
    salt_hash = np.uint64(stable_hash("assign", salt) & UINT64_MASK)
    h = splitmix64(np.asarray(user_id, dtype=np.int64).astype(np.uint64) ^ salt_hash)
    u = (h >> MANTISSA_SHIFT).astype(np.float64) / TWO_POW_53
    edges = np.cumsum(shares / shares.sum())
    return np.minimum(np.searchsorted(edges, u, side="right"), n_arms - 1)


# ------------------------------------------------------------------------------------------------
# The arms config
# ------------------------------------------------------------------------------------------------


def _read_config_file(path: Path) -> Dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such arms config")
    text = path.read_text()
    raw = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})
    return _resolve_paths(raw, path.parent)


def load_arms_config(spec: Union[Mapping[str, Any], str, Path, None]) -> Dict[str, Any]:
    """The arms config as a dict (a mapping, or a YAML / JSON file), merged over :data:`DEFAULT_CONFIG`."""
    if spec is None:
        raw: Dict[str, Any] = {}
    elif isinstance(spec, (str, Path)):
        raw = _read_config_file(Path(spec))
    else:
        raw = dict(spec)
    unknown = set(raw) - set(DEFAULT_CONFIG)
    if unknown:
        raise ValueError(f"arms config: unknown key(s) {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    cfg = json.loads(json.dumps({k: v for k, v in DEFAULT_CONFIG.items() if k not in ("terms", "arms")}))
    # terms and arms are merged over the defaults (the built-in control terms stay available; terms no
    # arm uses are not resolved); other mappings are merged key by key
    cfg["terms"] = {**DEFAULT_CONFIG["terms"], **dict(raw.get("terms") or {})}
    cfg["arms"] = {**DEFAULT_CONFIG["arms"], **dict(raw.get("arms") or {})}
    for key, value in raw.items():
        if key in ("terms", "arms"):
            continue
        if isinstance(value, Mapping) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    _check_finite(cfg)
    return cfg


def _check_finite(value: Any, path: str = "") -> None:
    """Refuse a NaN or infinite number anywhere in the arms config (a weight, a share, a knob), naming its key."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"arms config: {path!r} is {value}; expected a finite number")


def _resolve_paths(raw: Dict[str, Any], base: Path) -> Dict[str, Any]:
    """Relative score paths in a config file are relative to the file (when they exist there)."""
    terms = raw.get("terms")
    if not isinstance(terms, Mapping):
        return raw
    out = {}
    for name, spec in terms.items():
        source = spec.get("source") if isinstance(spec, Mapping) else spec
        if (isinstance(source, str) and not Path(source).is_absolute() and not Path(source).exists()
                and (base / source).exists()):
            source = str(base / source)
            spec = {**spec, "source": source} if isinstance(spec, Mapping) else source
        out[name] = spec
    return {**raw, "terms": out}


def _arm_formula(spec: Mapping[str, Any]) -> Formula:
    return parse_formula({k: v for k, v in dict(spec).items() if k != "planted"})


def used_terms(cfg: Mapping[str, Any]) -> Set[str]:
    """The terms some arm of ``cfg`` uses, and the content term (only these are resolved)."""
    used = {t for spec in cfg["arms"].values() for t in _arm_formula(spec).terms}
    used.add(cfg.get("content_term"))
    return used


@dataclasses.dataclass
class _ConfigArms:
    """The config's own arms: formula, role and planted effects by arm name."""

    formulas: Dict[str, Formula]
    roles: Dict[str, str]
    planted: Dict[str, Tuple[Tuple[str, float], ...]]


def _config_arms(cfg: Mapping[str, Any], terms: Mapping[str, Term]) -> _ConfigArms:
    control, treatment, content = cfg["control"], cfg["treatment"], cfg.get("content_term")
    arms = _ConfigArms({}, {}, {})
    for name, spec in cfg["arms"].items():
        spec = dict(spec)
        planted = spec.pop("planted", None)
        arms.formulas[name] = parse_formula(spec)
        arms.roles[name] = "control" if name == control else ("treatment" if name == treatment else "arm")
        if planted:
            arms.planted[name] = tuple(sorted((str(k), float(v)) for k, v in planted.items()))
    if control not in arms.formulas:
        raise ValueError(f"arms config: no control arm {control!r} among {sorted(arms.formulas)}")
    if treatment not in arms.formulas and content in terms:
        weight = float(cfg.get("treatment_weight", 1.0))
        arms.formulas[treatment] = arms.formulas[control].with_weight(content, weight)
        arms.roles[treatment] = "treatment"
    for name, formula in arms.formulas.items():
        unknown = [t for t in formula.terms if t not in terms]
        if unknown:
            raise ValueError(f"arm {name!r} uses unknown term(s) {unknown}; terms: {sorted(terms)}")
    return arms


def build_arms(cfg: Mapping[str, Any], terms: Mapping[str, Term]) -> Tuple[List[Arm], Dict[str, Term]]:
    """The arms of a config (control, treatment, user arms, then sanity arms) and any derived terms."""
    control, treatment, content = cfg["control"], cfg["treatment"], cfg.get("content_term")
    own = _config_arms(cfg, terms)
    sanity = cfg.get("sanity") or {}
    arms = [Arm(n, f, own.roles[n], own.planted.get(n, ())) for n, f in own.formulas.items()]
    derived: Dict[str, Term] = {}
    if sanity.get("aa", True):
        arms.append(Arm("aa", own.formulas[control], "aa"))
    if content in terms and treatment in own.formulas:
        treatment_formula = own.formulas[treatment]
        content_term = terms[content]
        if sanity.get("placebo", True):
            placebo = f"{content}{PLACEBO_SUFFIX}"
            derived[placebo] = Term(placebo, content_term.source, content_term.calibrate, content_term.missing)
            arms.append(Arm("placebo", treatment_formula.rename({content: placebo}), "placebo"))
        if sanity.get("oracle", True):
            # calibrated like the content term once that is resolved (resolve_all): a probability stays as is
            oracle = f"{content}{ORACLE_SUFFIX}"
            derived[oracle] = Term(oracle, TruthTerm("true_lvtr"), "none", "prior")
            arms.append(Arm("oracle", treatment_formula.rename({content: oracle}), "oracle"))
    return arms, derived
