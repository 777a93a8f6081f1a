"""``kuaihl`` command-line parsing, ``--version`` and ``kuaihl models``."""

from __future__ import annotations

from typing import Optional, Tuple

import pytest

from kuaihl_rec.apps.cli import _parse_overrides, main, package_version
from kuaihl_rec.apps.cli_checks import UsageError, check_config_types


def test_set_values_are_typed():
    """Numbers as Python reads them (``1e-3`` is a float, which YAML 1.1 would leave a string),
    booleans / lists / null as YAML, anything else a string."""
    got = _parse_overrides(["optim.lr=1e-3", "epochs=4", "model.d=3.5", "model.use_counters=true", "x=[1, 2]",
                            "y=null", "loss=point+L1", "z= 2E-4 "])
    assert got == {"optim.lr": 1e-3, "epochs": 4, "model.d": 3.5, "model.use_counters": True, "x": [1, 2],
                   "y": None, "loss": "point+L1", "z": 2e-4}
    assert type(got["epochs"]) is int and type(got["optim.lr"]) is float
    with pytest.raises(UsageError, match="key=value"):
        _parse_overrides(["epochs"])
    with pytest.raises(UsageError, match="key=value"):
        _parse_overrides(["=3"])


def test_set_values_are_checked_against_the_declared_field_types():
    from kuaihl_rec.train.config import TrainConfig

    ok = {"epochs": 2, "optim.lr": 1, "max_steps": None, "data.split_fractions": [0.8, 0.1, 0.1], "loss": "point",
          "model.d": "anything", "model.overrides.x": 1, "no_such": 1}  # model keys and unknown keys: not types
    check_config_types(TrainConfig, ok)
    bad = [("epochs", "abc", "an integer"), ("epochs", True, "an integer"), ("optim.lr", "fast", "a number"),
           ("max_steps", 1.5, "an integer or null"), ("schedule", 3, "a string"),
           ("data.split_fractions", [1, 2], "a list of 3 values")]
    for dotted, value, expected in bad:
        with pytest.raises(UsageError, match=f"{dotted} expects {expected}"):
            check_config_types(TrainConfig, {dotted: value})


def test_type_descriptions_cover_nested_types():
    from kuaihl_rec.apps.cli_checks import _describe

    assert _describe(Optional[int]) == "an integer or null"
    assert _describe(Tuple[float, ...]) == "a list of numbers"
    assert _describe(bool) == "true or false"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"kuaihl {package_version()}"
    assert package_version()[0].isdigit()


def test_models_lists_each_model_with_family_and_description(capsys):
    from kuaihl_rec.model.registry import list_models, model_info

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["model", "family", "default", "loss", "presets", "description"]
    assert lines[-1].startswith("presets: ")
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert sorted(rows) == list_models()
    for name, line in rows.items():
        info = model_info(name)
        assert line.split()[1:3] == [info.family, info.default_loss] and line.endswith(info.description)
