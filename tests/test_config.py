"""The config tree (kuaihl_rec/config.py, kuaihl_rec/train/config.py): one way to read, write and change configs."""

from __future__ import annotations

import json

import pytest

from kuaihl_rec import config as configs
from kuaihl_rec.data.windows import WindowConfig
from kuaihl_rec.train.config import TRAIN_PRESETS, ModelChoice, TrainConfig, train_config


@pytest.mark.parametrize("preset", sorted(TRAIN_PRESETS))
def test_every_preset_round_trips_through_json(preset):
    cfg = train_config(preset, {"model.use_counters": True, "data.label_delay": 1}, model="dcn_m")
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.data.label_delay == 1 and cfg.data.observed_delay == 1  # settable from a training config
    assert WindowConfig.from_dict(json.loads(json.dumps(configs.to_dict(cfg.data)))) == cfg.data


def test_set_paths_sections_and_override_maps():
    cfg = train_config("small", {"data.stride": 8, "optim.lr": 3e-4, "model.d": 32, "model.overrides.n_heads": 4, "epochs": 2})
    assert (cfg.data.stride, cfg.optim.lr, cfg.epochs) == (8, 3e-4, 2)
    assert cfg.model == ModelChoice("content", (("d", 32), ("n_heads", 4)))
    merged = train_config("small", optim={"lr": 1e-2}, model={"overrides": {"d": 16}})
    assert merged.optim.lr == 1e-2 and merged.optim.weight_decay == TRAIN_PRESETS["small"].optim.weight_decay
    assert merged.model.overrides == (("d", 16),)
    assert train_config("paper", model="kuaihl").model == ModelChoice("kuaihl", (("preset", "paper"),))  # name only


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"stride": 3}, r"unknown config key 'stride' of TrainConfig \(did you mean data.stride\?\)"),
        ({"data.strid": 3}, "unknown config key 'strid' of WindowConfig"),
        ({"epochs.x": 3}, "is a value, not a section"),
    ],
)
def test_unknown_keys_name_the_path(changes, message):
    with pytest.raises(ValueError, match=message):
        train_config("tiny", changes)


def test_from_dict_refuses_unknown_keys_with_their_section():
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['strides'\] under 'data'"):
        TrainConfig.from_dict({"data": {"strides": 2}})


def test_a_pre_tree_run_config_loads_as_the_same_config():
    cfg = train_config("tiny", {"model.use_counters": True}, model="content", loss="point")
    flat = {k: v for k, v in cfg.to_dict().items() if k not in ("model", "data")}
    flat |= {"model": "content", "model_overrides": {"use_counters": True}, "window": 10, "stride": 2, "min_viewers": 60, "label": "lvtr"}
    assert TrainConfig.from_dict(flat) == cfg
