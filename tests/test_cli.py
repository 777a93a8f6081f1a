"""``kuaihl`` command-line parsing."""

from __future__ import annotations

import pytest

from kuaihl_rec.apps.cli import _parse_overrides


def test_set_values_are_typed():
    """Numbers as Python reads them (``1e-3`` is a float, which YAML 1.1 would leave a string),
    booleans / lists / null as YAML, anything else a string."""
    got = _parse_overrides(["optim.lr=1e-3", "epochs=4", "model.d=3.5", "model.use_counters=true", "x=[1, 2]", "y=null", "loss=point+L1", "z= 2E-4 "])
    assert got == {"optim.lr": 1e-3, "epochs": 4, "model.d": 3.5, "model.use_counters": True, "x": [1, 2], "y": None, "loss": "point+L1", "z": 2e-4}
    assert type(got["epochs"]) is int and type(got["optim.lr"]) is float
    with pytest.raises(SystemExit, match="key=value"):
        _parse_overrides(["epochs"])
