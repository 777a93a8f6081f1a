import logging
import os
import sys
from pathlib import Path

# tests import their helpers as top-level modules (tests/helpers.py)
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


# ------------------------------------------------------------------------------------------------
# Shared model fixtures (tests/test_smoke_models.py, tests/test_model.py, tests/test_baselines.py):
# a small hand-made table, windows of 8, rooms of 30, 6 and 25 segments (the 6-segment room gives
# one right-padded window).
# ------------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402

MODEL_WINDOW = 8


@pytest.fixture(scope="session")
def model_split():
    from helpers import make_table

    from kuaihl_rec.data.schema import FeatureSizes
    from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits

    sizes = FeatureSizes(visual_tokens=2, visual_dim=5, text_dim=3)
    table = make_table(room_lengths=(30, 6, 25), sizes=sizes)
    cfg = WindowConfig(window=MODEL_WINDOW, min_viewers=0)
    arr = SegmentArrays.from_table(table, sizes, cfg)
    return window_splits(arr, cfg, {"train": "train"})["train"]


@pytest.fixture(scope="session")
def model_spec(model_split):
    from kuaihl_rec.data.batch import BatchSpec

    return BatchSpec.of(model_split)


def model_batch(split, b: int):
    """b = 1: one full window; b = 2: a full window and a right-padded one (different streamers)."""
    padded = int(np.flatnonzero(split.index.n_valid < MODEL_WINDOW)[0])
    return split.batch(np.array([0] if b == 1 else [0, padded]))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The ``tiny`` synthetic world, written once per test session. Read-only: a test that changes
    data copies it first."""
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    out = tmp_path_factory.mktemp("tiny_world")
    write_world(generate_world(load_world_config(preset="tiny")), out)
    return out
