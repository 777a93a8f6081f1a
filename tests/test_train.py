"""The trainer: run directory, eval outputs, resume after a kill, atomic checkpoints, clear errors,
and 2 ranks under torchrun against single-process training on the same global batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kuaihl_rec.data.io import DataError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run_py(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _steps(run: Path):
    return [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    run = tmp_path_factory.mktemp("run")
    summary = train(tiny_world, run, train_config("tiny", checkpoint_every=10), progress=False)
    return run, summary


def test_run_directory_holds_everything(trained):
    run, summary = trained
    for name in ("config.json", "metrics.jsonl", "steps.jsonl", "loss_curve.png", "model.pt", "summary.json", "vocab.npz"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 0 and "torch" in cfg["versions"] and cfg["train"]["model"]["name"] == "content"
    from kuaihl_rec.train.config import TrainConfig, train_config

    assert TrainConfig.from_dict(cfg["train"]) == train_config("tiny", checkpoint_every=10)  # loads back as the same config
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, summary["epochs"] + 1))
    assert all(np.isfinite(e["val_tau"]) for e in epochs)
    assert (run / "checkpoints" / "latest").read_text().startswith("step-")
    steps = _steps(run)
    assert steps[-1]["loss"] < steps[0]["loss"]  # it learns


def test_eval_writes_metrics_and_recomputable_predictions(trained, tiny_world, tmp_path):
    from kuaihl_rec.metrics import evaluate_segments
    from kuaihl_rec.train.evaluate import evaluate_run

    run, _ = trained
    result = evaluate_run(run, tiny_world, "test", json_out=tmp_path / "e.json", predictions_out=tmp_path / "p.parquet", progress=False)
    saved = json.loads((tmp_path / "e.json").read_text())
    for key in ("model", "n_segments", "tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc", "logloss", "mean_pred_over_true", "per_room_tau"):
        assert key in saved
    preds = pq.read_table(tmp_path / "p.parquet").to_pandas()
    assert list(preds.columns) == ["live_id", "streamer_id", "segment", "label", "score"]
    assert len(preds) == saved["n_segments"] and not preds.duplicated(["live_id", "segment"]).any()
    again = evaluate_segments(preds["label"].to_numpy(), preds["score"].to_numpy(), room_ids=preds["live_id"].to_numpy())
    assert again["tau"] == pytest.approx(result["tau"], abs=1e-12)
    # every scored segment is a test-room target with >= min_viewers viewers
    seg = pq.read_table(tiny_world / "segments").to_pandas()
    test_rooms = set(seg.loc[seg.split == "test", "live_id"])
    assert set(preds.live_id) <= test_rooms
    # the two trivial predictors, rebuilt by a dict lookup per scored segment (LVTR: delay 2)
    by_key = {(r.live_id, r.segment): r.lvtr for r in seg.itertuples()}
    for name, lag in (("previous_segment_label", 1), ("last_complete_label", 3)):
        found = [by_key.get((r.live_id, r.segment - lag)) for r in preds.itertuples()]
        known = [v for v in found if v is not None]
        # every target has a previous segment; the first two targets of each room have no u - 3
        assert (len(known) < len(found)) == (lag == 3)
        fill = float(np.mean(known))
        scores = np.array([fill if v is None else v for v in found], dtype=np.float64)
        ref = evaluate_segments(preds["label"].to_numpy(), scores, room_ids=preds["live_id"].to_numpy())
        assert result["reference"][name]["tau"] == pytest.approx(ref["tau"], abs=1e-12), name
    assert result["reference"]["last_complete_label"]["tau"] != result["reference"]["previous_segment_label"]["tau"]


@pytest.mark.slow
def test_resume_after_a_kill_reproduces_the_losses(tiny_world, tmp_path):
    """Uninterrupted run vs. a run killed mid-epoch (os._exit after step 13, checkpoint at step 10)
    and resumed: the per-step losses and the final validation metrics agree exactly."""
    common = "from kuaihl_rec.train.config import train_config\nfrom kuaihl_rec.train.loop import train\ncfg = train_config('tiny', checkpoint_every=5)\n"
    full = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'full'}', cfg, progress=False)")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'cut'}', cfg, progress=False, stop_after_steps=13)")
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text() == "step-00000010"
    resumed = _run_py(common + f"train(r'{tiny_world}', r'{tmp_path / 'cut'}', cfg, progress=False, resume=True)")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _steps(tmp_path / "full"), _steps(tmp_path / "cut")
    assert [s["step"] for s in a] == [s["step"] for s in b]
    assert [s["loss"] for s in a] == [s["loss"] for s in b]
    ma = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    mb = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [{k: v for k, v in json.loads(x).items() if k != "epoch_seconds"} for x in lines]
    assert strip(ma) == strip(mb)


def test_crash_during_save_keeps_the_previous_checkpoint(trained, monkeypatch, tmp_path):
    import shutil

    import torch.distributed.checkpoint as dcp

    from kuaihl_rec.train import checkpoint as ck

    run, _ = trained
    root = tmp_path / "ckpts"
    shutil.copytree(run / "checkpoints", root)
    before = (root / "latest").read_text()

    def boom(*args, **kwargs):
        Path(kwargs["checkpoint_id"], "__0_0.distcp").write_bytes(b"half a file")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(dcp, "save", boom)
    with pytest.raises(OSError, match="simulated"):
        ck.save_checkpoint(root, 999, dmp=_Stub(), optimizer=_Stub(), meta={}, rank_local={})
    assert (root / "latest").read_text() == before
    assert not (root / "step-00000999").exists()
    assert ck.latest_checkpoint(root).name == before


def test_a_full_disk_during_a_checkpoint_is_one_clear_error(trained, monkeypatch, tmp_path):
    import shutil

    import torch.distributed.checkpoint as dcp

    from kuaihl_rec.train import checkpoint as ck

    run, _ = trained
    root = tmp_path / "ckpts"
    shutil.copytree(run / "checkpoints", root)
    before = (root / "latest").read_text()

    def full(*args, **kwargs):  # what torch's writer raises when the disk is full
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nmore detail")

    monkeypatch.setattr(dcp, "save", full)
    with pytest.raises(OSError, match=r"writing checkpoint step-00000999 failed \(RuntimeError: \[enforce fail.*Is the disk full\?"):
        ck.save_checkpoint(root, 999, dmp=_Stub(), optimizer=_Stub(), meta={}, rank_local={})
    assert ck.latest_checkpoint(root).name == before


class _Stub:
    def state_dict(self):
        return {}


def test_clear_errors(tiny_world, trained, tmp_path):
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train
    from kuaihl_rec.train.sharding import TableTooLargeError, check_table_memory

    with pytest.raises(DataError, match="does not exist"):
        train(tmp_path / "missing", tmp_path / "r1", train_config("tiny"), progress=False)
    run, _ = trained
    with pytest.raises(ValueError, match="differs in \\['epochs'\\]"):
        train(tiny_world, run, train_config("tiny", checkpoint_every=10, epochs=7), resume=True, progress=False)
    with pytest.raises(TableTooLargeError, match="'streamer' with 2,000,000,000 rows"):
        check_table_memory([("streamer", 2_000_000_000, 64)], world_size=2, memory_bytes=24 * 2**30)
    check_table_memory([("streamer", 1_000_000, 64)], world_size=1, memory_bytes=24 * 2**30)


@pytest.mark.slow
def test_two_ranks_under_torchrun_match_single_process(tiny_world, tmp_path):
    """The same global batches on 1 process and on 2 torchrun ranks (streamer table row-wise):
    the per-step losses agree to float tolerance and the validation metrics match."""
    # no dropout and no alignment negatives: both draw random numbers per rank, which no
    # data-parallel run can share with a single process
    args = ["train", "content", "--data", str(tiny_world), "--preset", "tiny", "--loss", "point+L1", "--set", "epochs=1", "--set", "model.dropout=0", "-q"]
    single = subprocess.run([sys.executable, "-m", "kuaihl_rec.apps.cli", "-q", *args[:-1], "--out", str(tmp_path / "one")], env=ENV, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kuaihl_rec.apps.cli", "-q", *args[:-1], "--out", str(tmp_path / "two")]
    two = subprocess.run(torchrun, env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["world_size"] == 2
    a, b = _steps(tmp_path / "one"), _steps(tmp_path / "two")
    assert len(a) == len(b) > 5
    np.testing.assert_allclose([s["loss"] for s in b], [s["loss"] for s in a], rtol=2e-4, atol=1e-5)
    ea = json.loads((tmp_path / "one" / "metrics.jsonl").read_text().splitlines()[-1])
    eb = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[-1])
    assert eb["val_n_segments"] == ea["val_n_segments"]
    assert eb["val_tau"] == pytest.approx(ea["val_tau"], abs=2e-3)


def test_global_normalizer_makes_rank_losses_average_to_the_global_batch_loss():
    """Two simulated ranks with unequal label counts: with normalizer(c) = (c_A + c_B) / 2 the mean of
    the two ranks' losses (what DDP's gradient averaging optimises) equals the loss of the whole batch."""
    import torch

    from kuaihl_rec.losses import pairwise_loss, pointwise_loss

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 8, generator=g), torch.rand(6, 8, generator=g)
    mask = torch.rand(6, 8, generator=g) > 0.3
    mask[:3, 5:] = False  # rank A has fewer labels than rank B
    halves = (slice(0, 3), slice(3, 6))
    for fn, count in ((pointwise_loss, lambda m, lo, y: m.sum()), (pairwise_loss, None)):
        whole = fn(logits, labels, mask)
        if count is None:  # pair counts: run once to read them through a recording normalizer
            seen = []
            for h in halves:
                fn(logits[h], labels[h], mask[h], normalizer=lambda c: seen.append(c) or c)
            counts = seen
        else:
            counts = [count(mask[h], logits[h], labels[h]).float() for h in halves]
        mean_count = (counts[0] + counts[1]) / 2
        per_rank = [fn(logits[h], labels[h], mask[h], normalizer=lambda c: mean_count) for h in halves]
        assert torch.allclose((per_rank[0] + per_rank[1]) / 2, whole, atol=1e-6)
        naive = [fn(logits[h], labels[h], mask[h]) for h in halves]
        assert not torch.allclose((naive[0] + naive[1]) / 2, whole, atol=1e-4)  # the naive mean differs


def test_models_without_tables_train_too(tiny_world, tmp_path):
    """SelfAttention-plain has no embedding table: nothing for TrainPipelineSparseDist to trace; the
    trainer runs the same step contract without it."""
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    summary = train(tiny_world, tmp_path / "plain", train_config("tiny", model="self_attention_plain", epochs=1), progress=False)
    assert summary["steps"] > 0 and np.isfinite(summary["best_val_tau"])
    steps = _steps(tmp_path / "plain")
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.fixture(scope="module")
def every_model_trained(tiny_world, tmp_path_factory):
    """One short run of every registered model with its own default loss (one module-scoped
    fixture so the world is generated once)."""
    from kuaihl_rec.model.registry import list_models
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    root = tmp_path_factory.mktemp("every_model")
    return {
        name: (root / name, train(tiny_world, root / name, train_config("tiny", {"data.stride": 5}, model=name, epochs=1), progress=False))
        for name in list_models() if name != "content_e2e"  # reads raw media: tests/test_content_e2e.py
    }


def test_every_registered_model_trains_with_its_default_loss(every_model_trained):
    """The shared trainer runs every registry entry (content variants, ablations, ContentCTR-HL,
    baselines) end to end with the loss it declares: finite losses, a validation tau-b, the
    alignment term present exactly when the loss preset has it, and a scoring checkpoint."""
    from kuaihl_rec.losses import LOSS_PRESETS
    from kuaihl_rec.model.registry import list_models

    assert set(every_model_trained) == set(list_models()) - {"content_e2e"}
    for name, (run, summary) in every_model_trained.items():
        config = json.loads((run / "config.json").read_text())
        loss_name = config["loss"]
        assert loss_name in LOSS_PRESETS, (name, loss_name)
        steps = _steps(run)
        assert summary["steps"] == len(steps) > 0, name
        assert all(np.isfinite(s["loss"]) for s in steps), name
        assert np.isfinite(summary["best_val_tau"]), name
        has_align = LOSS_PRESETS[loss_name].align and LOSS_PRESETS[loss_name].w_align > 0
        assert any(s["align"] != 0 for s in steps) == has_align, (name, loss_name)
        assert (run / "model.pt").is_file(), name


def test_alignment_loss_with_a_missing_modality_is_refused_up_front():
    """A model without text (or visual) cannot be aligned: the wrapper says so when it is built,
    not at the first step."""
    from kuaihl_rec.data.batch import BatchSpec
    from kuaihl_rec.losses import ContentLoss
    from kuaihl_rec.model.registry import create_model
    from kuaihl_rec.train.wrapper import TrainWrapper

    spec = BatchSpec(visual_tokens=1, visual_dim=8, text_dim=6, num_streamers=5, num_lives=9, n_counters=10, window=4)
    for name, missing in (("content_no_text", "text"), ("content_no_visual", "visual")):
        model = create_model(name, spec, d=8, n_heads=2, d_head=4, n_perceiver_layers=1, n_decoder_layers=1)
        assert model.default_loss == "point+L1"
        with pytest.raises(ValueError, match=f"no {missing} input"):
            TrainWrapper(model, ContentLoss("contentctr"))
        TrainWrapper(model, ContentLoss(model.default_loss))  # the default works
