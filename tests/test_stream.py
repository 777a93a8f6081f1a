"""Per-rank streaming input (kuaihl_rec/data/catalog.py, stream.py; docs/STREAMING.md): parity with the
in-memory path, every window once, rooms never split, eval exactly once across ranks, resume equals
uninterrupted, block batches equal copied ones, vocabularies, clear errors on broken tables."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from kuaihl_rec.data import batch as batch_module
from kuaihl_rec.data.catalog import (
    HashedVocab, assign_ranks, build_catalog, catalog_vocabs, chunk_ids, load_vocabs, save_vocabs,
)
from kuaihl_rec.data.io import DataError
from kuaihl_rec.data.stream import StreamSplit
from kuaihl_rec.data.validate import load_segments
from kuaihl_rec.data.windows import SegmentArrays, build_windows, fit_vocabs
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.data_path import epoch_batches, epoch_steps, global_batches
from kuaihl_rec.train.loop import load_run_data


def _cfg(**stream):
    return train_config("tiny", {f"stream.{k}": v for k, v in {"enabled": True, **stream}.items()})


def _same(a, b) -> bool:
    fields = [f for f in a._TENSOR_FIELDS if f != "gather"]
    return all(
        (getattr(a, f) is None and getattr(b, f) is None) or torch.equal(getattr(a, f), getattr(b, f)) for f in fields
    ) and torch.equal(a.sparse_features.values(), b.sparse_features.values())


@pytest.fixture(scope="module")
def full(tiny_world):
    cfg = train_config("tiny")
    table, sizes, _ = load_segments(tiny_world, min_viewers=cfg.data.min_viewers)
    return SegmentArrays.from_table(table, sizes, cfg.data)


def test_catalog_counts_the_windows_and_vocabularies_of_the_full_table(tiny_world, full):
    cfg = train_config("tiny").data
    catalog = build_catalog(tiny_world, cfg)
    for split, mode in (("train", "train"), ("val", "eval"), ("test", "eval")):
        index = build_windows(full, cfg, split, mode)
        assert catalog.windows[catalog.rooms_of(split)].sum() == len(index.first_row)
        assert catalog.stats[split].n_scored_targets == index.stats.n_scored_targets
    s_ref, l_ref = fit_vocabs(full)
    s, lv = catalog_vocabs(catalog)
    assert np.array_equal(s.raw, s_ref.raw) and np.array_equal(lv.raw, l_ref.raw)


def test_rooms_go_to_one_rank_each_balanced_by_segment_count():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 300, size=500)
    for world in (1, 2, 3, 8):
        rank = assign_ranks(lengths, world)
        assert np.all(np.diff(rank) >= 0) and set(rank) == set(range(world))  # contiguous runs, every rank
        load = np.bincount(rank, weights=lengths)
        assert np.all(np.abs(load - lengths.sum() / world) <= lengths.max())
    chunks = chunk_ids(lengths, 1000)
    per_chunk = np.bincount(chunks, weights=lengths)
    assert np.all(np.diff(chunks) >= 0) and per_chunk.max() <= 1000 + lengths.max()


def test_one_chunk_on_one_rank_gives_the_in_memory_batches(tiny_world):
    cfg = train_config("tiny")
    mem = load_run_data(tiny_world, cfg).train
    for gather in (False, True):
        st = load_run_data(tiny_world, _cfg(chunk_rows=10**7, gather_on_device=gather)).train
        for epoch in (0, 1):
            steps = epoch_steps(st, cfg.batch_size, cfg.seed, 0, 1)
            assert steps == len(global_batches(mem, cfg.batch_size, cfg.seed, epoch, 0, 1))
            ours = list(epoch_batches(st, cfg.batch_size, cfg.seed, epoch, 0, 1, 0, steps))
            ref = list(epoch_batches(mem, cfg.batch_size, cfg.seed, epoch, 0, 1, 0, steps))
            assert all(_same(a, b.to(torch.device("cpu"))) for a, b in zip(ref, ours))


def test_block_batches_equal_copied_batches_padding_included(model_split):
    ids = np.arange(len(model_split))
    assert (model_split.index.n_valid < model_split.cfg.window).any()  # a right-padded window is in there
    copied, block = model_split.batch(ids), model_split.batch(ids, gather=True)
    assert block.visual.shape[0] == len(model_split.arr.live_id)  # the whole block, not [b, n, ...]
    assert _same(copied, block.to(torch.device("cpu"))) and _same(copied, block.materialize())
    assert _same(copied.select(torch.tensor([1, 0])), block.select(torch.tensor([1, 0])))


def test_chunks_and_buffer_see_each_window_at_most_once_and_resume_exactly(tiny_world):
    cfg = _cfg(chunk_rows=150, buffer_chunks=2)
    for world in (1, 2):
        splits = [load_run_data(tiny_world, cfg, rank, world).train for rank in range(world)]
        steps = epoch_steps(splits[0], 8, 0, 0, world)
        seen = []
        for split in splits:
            assert split.n_chunks > 2
            batches = list(split.train_batches(8 // world, 0, 3, steps))
            assert len(batches) == steps
            seen += [(int(b.live_raw[w]), int(b.segment[w, 0])) for b in batches for w in range(b.batch_size)]
            resumed = list(split.train_batches(8 // world, 0, 3, steps, split.position_at(3, 5)))
            assert all(_same(a, b) for a, b in zip(batches[5:], resumed)) and len(resumed) == steps - 5
        assert len(set(seen)) == len(seen) == steps * 8
        rooms = [set(s.catalog.live_id[s.rooms]) for s in splits]
        assert not rooms[0] & rooms[-1] or world == 1


def test_eval_scores_every_target_once_across_ranks(tiny_world, full):
    cfg = train_config("tiny").data
    catalog = build_catalog(tiny_world, cfg)
    vocabs = catalog_vocabs(catalog)
    index = build_windows(full, cfg, "val", "eval")
    from kuaihl_rec.data.windows import WindowedSplit

    ref_split = WindowedSplit(full, index, cfg, *vocabs, "eval")
    want = _scored_units([ref_split.eval_batches(16)])
    for world in (1, 3):
        splits = [StreamSplit(catalog, "val", cfg, _cfg(chunk_rows=200).stream, *vocabs, r, world)
                  for r in range(world)]
        runs = [s.eval_batches(16, r, world) for r, s in enumerate(splits)]
        assert len({steps for steps, _ in runs}) == 1  # every rank runs the same number of forwards
        got = _scored_units(runs)
        assert sorted(got) == sorted(want) and len(set(got)) == len(got)


def _scored_units(runs):
    units = []
    for steps, pairs in runs:
        n = 0
        for batch, keep in pairs:
            n += 1
            w, i = torch.nonzero(batch.score_mask & keep, as_tuple=True)
            units += list(zip(batch.live_raw[w].tolist(), (batch.segment[w, i] + 1).tolist(),
                              batch.labels[w, i].tolist()))
        assert n == steps
    return units


def test_hashed_vocabularies_and_their_file(tmp_path):
    vocab = HashedVocab(97)
    rows = vocab.lookup(np.array([0, 5, 2**62, -3]))
    assert rows.min() >= 1 and rows.max() <= 97 and vocab.num_rows == 98
    save_vocabs(tmp_path / "vocab.npz", vocab, HashedVocab(11))
    s, lv = load_vocabs(tmp_path / "vocab.npz")
    assert (s.buckets, lv.buckets) == (97, 11)
    assert np.array_equal(s.lookup(np.array([5, 6])), vocab.lookup(np.array([5, 6])))


def test_streaming_training_run_with_hashed_ids_writes_its_vocab(tiny_world, tmp_path):
    from kuaihl_rec.train.loop import train

    cfg = train_config("tiny", {"stream.enabled": True, "stream.chunk_rows": 400, "stream.id_hash_buckets": 64},
                       epochs=1, max_steps=6)
    summary = train(tiny_world, tmp_path / "run", cfg, progress=False)
    assert summary["steps"] == 6
    s, _ = load_vocabs(tmp_path / "run" / "vocab.npz")
    assert isinstance(s, HashedVocab) and s.buckets == 64
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["spec"]["num_streamers"] == 65
    in_memory = load_run_data(tiny_world, train_config("tiny", {"stream.id_hash_buckets": 64}))
    assert in_memory.spec.num_lives == 65 and isinstance(in_memory.val.streamer_vocab, HashedVocab)


def test_a_room_split_inside_a_file_is_one_clear_error(tiny_world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    part = sorted((data / "segments").glob("*.parquet"))[0]
    table = pq.read_table(part)
    order = np.r_[np.arange(5, 12), np.arange(0, 5), np.arange(12, table.num_rows)]
    pq.write_table(table.take(order), part)
    with pytest.raises(DataError, match=r"part-00000\.parquet: row \d+, field 'segment'"):
        build_catalog(data, train_config("tiny").data)


@pytest.mark.slow
def test_streaming_resume_after_a_kill_reproduces_the_losses(tiny_world, tmp_path):
    """Several chunks, a buffer of two: a run killed after step 13 (checkpoint at step 10, mid-epoch)
    and resumed logs exactly the uninterrupted run's losses and validation metrics."""
    from test_train import _run_py, _steps

    common = ("from kuaihl_rec.train.config import train_config\nfrom kuaihl_rec.train.loop import train\n"
              "cfg = train_config('tiny', {'stream.enabled': True, 'stream.chunk_rows': 300, "
              "'stream.buffer_chunks': 2}, checkpoint_every=5)\n")
    full = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'full'}', cfg, progress=False)")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'cut'}', cfg, progress=False, "
                              "stop_after_steps=13)")
    assert killed.returncode == 17, killed.stderr[-3000:]
    resumed = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'cut'}', cfg, progress=False, resume=True)")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _steps(tmp_path / "full"), _steps(tmp_path / "cut")
    assert [s["loss"] for s in a] == [s["loss"] for s in b] and len(a) > 13
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "epoch_seconds"}  # noqa: E731
                       for x in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "full") == strip(tmp_path / "cut")


@pytest.mark.parametrize("setting, words", [
    ("stream.chunk_rows=0", ["stream.chunk_rows", ">= 1"]),
    ("stream.id_hash_buckets=-1", ["stream.id_hash_buckets", ">= 0"]),
    ("stream.prefetch_chunks=x", ["stream.prefetch_chunks"]),
])
def test_cli_refuses_bad_stream_settings_with_one_line(setting, words, tiny_world, tmp_path, capsys):
    from kuaihl_rec.apps.cli import main

    try:
        status = main(["train", "content", "--data", str(tiny_world), "--out", str(tmp_path / "run"), "--set", setting])
    except SystemExit as exc:
        status = exc.code
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_streaming_ranks_under_torchrun_score_every_validation_target_once(tiny_world, tmp_path):
    """2 torchrun ranks, each reading only its own rooms: the run finishes, and the validation
    metrics gathered from both ranks cover exactly the targets one in-memory process scores."""
    import subprocess

    from test_train import ENV, _steps

    args = ["-m", "kuaihl_rec.apps.cli", "-q", "train", "content", "--data", str(tiny_world), "--preset", "tiny",
            "--set", "epochs=1"]
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
                          "--set", "stream.enabled=true", "--set", "stream.chunk_rows=200",
                          "--out", str(tmp_path / "two")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    ea = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[-1])
    eb = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert eb["val_n_segments"] == ea["val_n_segments"] > 0
    assert len(_steps(tmp_path / "two")) > 5


def test_a_device_copy_leaves_the_block_cache_with_its_block():
    block = torch.arange(12.0)
    moved = batch_module._on_device(block, torch.device("meta"), non_blocking=False)
    key = (id(block), "meta")
    assert moved.device.type == "meta" and key in batch_module._BLOCK_CACHE
    del block
    assert key not in batch_module._BLOCK_CACHE  # no wait for eviction: the device copy is freed now


@pytest.mark.parametrize("column", ["timestamp", "visual"])
def test_a_missing_column_is_one_data_error_naming_it(column, tiny_world, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_world, data)
    for manifest in data.rglob("dataset.json"):
        manifest.unlink()  # sizes then come from the first file (read before the loop's column check)
    for part in sorted((data / "segments").glob("*.parquet")):
        pq.write_table(pq.read_table(part).drop_columns([column]), part)
    with pytest.raises(DataError, match=rf"part-00000\.parquet: missing column\(s\) \['{column}'\]"):
        build_catalog(data / "segments", train_config("tiny").data)


def test_a_rank_without_rooms_is_named_not_a_short_batch_count(tiny_world):
    cfg = _cfg()
    catalog = build_catalog(tiny_world, cfg.data)
    vocabs = catalog_vocabs(catalog)
    world = len(catalog.rooms_of("train")) + 1
    split = StreamSplit(catalog, "train", cfg.data, cfg.stream, *vocabs, rank=0, world_size=world)
    with pytest.raises(DataError, match=rf"rank \d+ of {world} gets no train room: the split has \d+ rooms"):
        split.train_steps(1)
    assert assign_ranks(np.array([1, 100]), 4).tolist() == [0, 2]  # the review's case: ranks 1 and 3 get none
