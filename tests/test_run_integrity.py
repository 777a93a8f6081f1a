"""Nothing lost, nothing silently wrong: a run directory belongs to one run, a resume checks that it
continues the same run (config, seed, data), checkpoints are verified against their SHA-256
manifest (damaged ones are skipped with a warning, never loaded, never turned into model.pt), and a
run without a usable validation tau-b says so instead of reporting a number."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from kuaihl_rec.train.checkpoint import CheckpointError, verify_checkpoint
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.loop import train
from kuaihl_rec.train.records import data_fingerprint

CFG = train_config("tiny", checkpoint_every=5, keep_checkpoints=20)


@pytest.fixture(scope="module")
def finished(tiny_world, tmp_path_factory):
    """One finished tiny run that keeps every checkpoint (tests copy it before changing anything)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    summary = train(tiny_world, run, CFG, progress=False)
    return run, summary


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tree(root: Path) -> dict:
    """Every file under ``root`` -> its bytes (to show that nothing changed)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ckpts(run: Path) -> list:
    return sorted(p.name for p in (run / "checkpoints").glob("step-*"))


def _steps(run: Path) -> list:
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


def _epochs(run: Path) -> list:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "epoch_seconds"} for x in lines]


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path}: non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _rewrite_segments(world: Path, dst: Path, change) -> Path:
    """A copy of ``world`` whose segment Parquet files went through ``change(table) -> table``."""
    _copy(world, dst)
    for part in sorted((dst / "segments").glob("*.parquet")):
        pq.write_table(change(pq.read_table(part)), part, compression="zstd")
    return dst


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), table.schema.field(name), pa.array(values))


def _flip_byte(path: Path, at: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _shard(ckpt: Path) -> Path:
    return next(ckpt.glob("*.distcp"))


# ------------------------------------------------------------------------------------ ownership


def test_a_second_run_into_an_occupied_directory_is_refused_and_touches_nothing(finished, tiny_world):
    run, _ = finished
    before = _tree(run)
    with pytest.raises(FileExistsError, match="already holds a run .*config.json.*model.pt.*--overwrite"):
        train(tiny_world, run, CFG, progress=False)
    assert _tree(run) == before


def test_overwrite_moves_the_earlier_run_aside(finished, tiny_world, tmp_path):
    run = _copy(finished[0], tmp_path / "run")
    (run / "test.json").write_text("{}")  # an eval output written next to the run belongs to it
    old_config = (run / "config.json").read_bytes()
    summary = train(tiny_world, run, train_config("tiny", epochs=1), progress=False, overwrite=True)
    replaced = list(run.glob(".replaced-*"))
    assert len(replaced) == 1
    assert (replaced[0] / "config.json").read_bytes() == old_config
    assert (replaced[0] / "test.json").exists() and not (run / "test.json").exists()
    assert len(_ckpts(replaced[0])) > 2
    assert summary["epochs"] == 1 and _ckpts(run) == [summary["best_checkpoint"]]
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 1
    with pytest.raises(ValueError, match="exclude each other"):
        train(tiny_world, run, CFG, progress=False, overwrite=True, resume=True)


def test_an_empty_or_unrelated_directory_is_free(tiny_world, tmp_path):
    from kuaihl_rec.train.records import check_run_dir_free

    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "checkpoints").mkdir()  # empty: a run that died before its first checkpoint
    assert check_run_dir_free(tmp_path, overwrite=False) == []
    assert check_run_dir_free(tmp_path / "missing", overwrite=False) == []


# ------------------------------------------------------------------------------------ identity


def test_resume_refuses_another_seed_or_config(finished, tiny_world, tmp_path):
    run = _copy(finished[0], tmp_path / "run")
    before = _tree(run)
    with pytest.raises(ValueError, match=r"differs in \['seed'\]"):
        train(tiny_world, run, train_config("tiny", checkpoint_every=5, keep_checkpoints=20, seed=1),
              resume=True, progress=False)
    with pytest.raises(ValueError, match=r"differs in \['batch_size'\]"):
        train(tiny_world, run, train_config("tiny", checkpoint_every=5, keep_checkpoints=20, batch_size=4),
              resume=True, progress=False)
    assert _tree(run) == before


def test_resume_refuses_other_data_content_but_accepts_a_moved_copy(finished, tiny_world, tmp_path, caplog):
    run = _copy(finished[0], tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    assert saved["data_fingerprint"] == data_fingerprint(tiny_world)
    assert saved["identity"]["data_fingerprint"] == saved["data_fingerprint"]["sha256"]
    # same rooms, same row counts, same file layout; one label nudged
    other = _rewrite_segments(
        tiny_world, tmp_path / "other",
        lambda t: _set_column(t, "lvtr", np.r_[t.column("lvtr").to_numpy()[:-1], 0.123].astype(np.float32)),
    )
    assert data_fingerprint(other)["sha256"] != saved["data_fingerprint"]["sha256"]
    before = _tree(run)
    with pytest.raises(ValueError, match="not the data the run .* was trained on"):
        train(other, run, CFG, resume=True, progress=False)
    assert _tree(run) == before
    moved = _copy(tiny_world, tmp_path / "moved")
    with caplog.at_level(logging.WARNING):
        summary = train(moved, run, CFG, resume=True, progress=False)
    assert "same data fingerprint" in caplog.text
    assert summary["steps"] == finished[1]["steps"]


# ------------------------------------------------------------------------------------ checkpoints


def test_every_checkpoint_has_a_manifest_with_hashes_and_the_run_identity(finished):
    run, _ = finished
    identity = json.loads((run / "config.json").read_text())["identity"]
    for name in _ckpts(run):
        manifest = json.loads((run / "checkpoints" / name / "manifest.json").read_text())
        assert {"meta.json", "rank-0.pt", ".metadata"} <= set(manifest["files"])
        assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
        assert manifest["identity"] == identity
        assert verify_checkpoint(run / "checkpoints" / name) is None


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(finished, tmp_path, tiny_world, caplog, damage):
    """The newest checkpoint's shard is damaged: the resume warns, moves it aside, continues from the
    one before and ends with exactly the losses and metrics of the uninterrupted run."""
    run = _copy(finished[0], tmp_path / "run")
    newest, previous = _ckpts(run)[-1], _ckpts(run)[-2]
    shard = _shard(run / "checkpoints" / newest)
    if damage == "flipped_byte":
        _flip_byte(shard)
    else:
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert "SHA-256" in verify_checkpoint(run / "checkpoints" / newest) or damage == "truncated"
    with caplog.at_level(logging.WARNING):
        summary = train(tiny_world, run, CFG, resume=True, progress=False)
    assert "failed verification" in caplog.text and f"resuming from {previous}" in caplog.text
    assert (run / "checkpoints" / f".corrupt-{newest}").is_dir()  # kept for inspection, never loaded
    assert verify_checkpoint(run / "checkpoints" / newest) is None  # written again by the resumed run
    ref = finished[0]
    assert [s["loss"] for s in _steps(run)] == [s["loss"] for s in _steps(ref)]
    assert _epochs(run) == _epochs(ref)
    assert summary["best_val_tau"] == finished[1]["best_val_tau"]
    weights = torch.load(run / "model.pt", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in weights.values() if torch.is_tensor(v) and v.is_floating_point())


def test_every_checkpoint_damaged_is_a_clear_refusal_and_model_pt_stays(finished, tmp_path, tiny_world):
    run = _copy(finished[0], tmp_path / "run")
    model_before = (run / "model.pt").read_bytes()
    for name in _ckpts(run):
        _flip_byte(_shard(run / "checkpoints" / name))
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from"):
        train(tiny_world, run, CFG, resume=True, progress=False)
    assert (run / "model.pt").read_bytes() == model_before
    assert _ckpts(run) == []  # all moved aside to .corrupt-*, none deleted
    assert len(list((run / "checkpoints").glob(".corrupt-step-*"))) == len(_ckpts(finished[0]))


def test_a_damaged_best_checkpoint_never_becomes_model_pt(finished, tmp_path, tiny_world):
    """The resume itself is fine, but the best checkpoint is damaged before the run finishes: finishing
    refuses to convert it and model.pt keeps its good weights."""
    from kuaihl_rec.train.loop import Trainer

    run = _copy(finished[0], tmp_path / "run")
    model_before = (run / "model.pt").read_bytes()
    trainer = Trainer(tiny_world, run, CFG, resume=True, progress=False)
    trainer.setup()
    trainer.restore()
    trainer.fit()
    _flip_byte(_shard(run / "checkpoints" / (run / "checkpoints" / "best").read_text()))
    with pytest.raises(CheckpointError, match="refusing to convert a damaged checkpoint into model.pt"):
        trainer.finish()
    assert (run / "model.pt").read_bytes() == model_before


# ------------------------------------------------------------------------------------ degenerate runs


def test_no_validation_rooms_is_reported_not_dressed_up(tiny_world, tmp_path, caplog):
    world = _rewrite_segments(
        tiny_world, tmp_path / "noval",
        lambda t: _set_column(t, "split", ["test" if s == "val" else s for s in t.column("split").to_pylist()]),
    )
    with caplog.at_level(logging.WARNING):
        summary = train(world, tmp_path / "run", train_config("tiny"), progress=False)
    assert "no validation rooms" in caplog.text
    assert summary["validation"] == "none" and summary["best_val_tau"] is None
    assert summary["epochs"] == 2 and not summary["stopped_early"]
    saved = _strict_json(tmp_path / "run" / "summary.json")
    assert saved["validation"] == "none" and saved["best_val_tau"] is None
    last = (tmp_path / "run" / "checkpoints" / "latest").read_text()
    assert summary["best_checkpoint"] == last
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=False)["checkpoint"] == last


def test_constant_validation_labels_end_as_undefined(tiny_world, tmp_path, caplog):
    def constant_val(t: pa.Table) -> pa.Table:
        is_val = np.array(t.column("split").to_pylist()) == "val"
        return _set_column(t, "lvtr", np.where(is_val, 0.5, t.column("lvtr").to_numpy()).astype(np.float32))

    world = _rewrite_segments(tiny_world, tmp_path / "const", constant_val)
    with caplog.at_level(logging.WARNING):
        summary = train(world, tmp_path / "run", train_config("tiny"), progress=False)
    assert "validation tau-b is undefined" in caplog.text
    assert summary["validation"] == "undefined" and summary["best_val_tau"] is None
    saved = _strict_json(tmp_path / "run" / "summary.json")
    assert saved["validation"] == "undefined"
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        assert json.loads(line)["val_tau"] is None and "NaN" not in line and "Infinity" not in line
    assert summary["best_checkpoint"] == (tmp_path / "run" / "checkpoints" / "latest").read_text()
