"""Unseen streamers: the warm / cold-start slices of every report, and the content model's id dropout
into the unknown row (docs/MODEL.md, "Unseen streamers")."""

from __future__ import annotations

import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from kuaihl_rec.data import make_id_features
from kuaihl_rec.data.catalog import HashedVocab
from kuaihl_rec.data.windows import IdVocab
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.model import create_model
from kuaihl_rec.model.streamer import STREAMER_TABLE, StreamerIdDropout
from kuaihl_rec.train.cold_start import cold_start_mask, slice_metrics


# ------------------------------------------------------------------------------------------
# Slices
# ------------------------------------------------------------------------------------------
def test_slices_are_tau_b_of_each_part_by_brute_force():
    rng = np.random.default_rng(0)
    y, p = rng.uniform(size=60).round(2), rng.uniform(size=60)
    cold = rng.uniform(size=60) < 0.3
    out = slice_metrics(y, p, cold, "truth")
    assert out["tau_warm"] == pytest.approx(stats.kendalltau(y[~cold], p[~cold], variant="b")[0], abs=1e-12)
    assert out["tau_cold"] == pytest.approx(stats.kendalltau(y[cold], p[cold], variant="b")[0], abs=1e-12)
    assert (out["n_segments_warm"], out["n_segments_cold"]) == (int((~cold).sum()), int(cold.sum()))
    none = slice_metrics(y, p, np.zeros(60, dtype=bool), "vocabulary")
    assert math.isnan(none["tau_cold"]) and none["n_segments_cold"] == 0
    with pytest.raises(ValueError, match="one shape"):
        slice_metrics(y, p, cold[:10], "truth")


def test_cold_start_from_truth_agrees_with_the_vocabulary(tiny_world, tmp_path):
    """The truth sidecar's flag and 'streamer not in the training vocabulary' name the same segments
    (every warm streamer keeps a training room); without the sidecar the vocabulary decides."""
    import pyarrow.parquet as pq

    rooms = pq.read_table(tiny_world / "truth" / "rooms.parquet").to_pandas()
    segs = pq.read_table(tiny_world / "segments", columns=["live_id", "streamer_id"]).to_pandas()
    segs = segs.merge(rooms[["live_id", "split"]], on="live_id")
    train_streamers = np.unique(segs.loc[segs["split"] == "train", "streamer_id"].to_numpy())
    vocab = IdVocab(train_streamers)
    test = segs[segs["split"] == "test"]
    live, streamer = test["live_id"].to_numpy(), test["streamer_id"].to_numpy()
    truth, source = cold_start_mask(tiny_world, vocab, live, streamer)
    assert source == "truth" and truth.any() and (~truth).any()
    bare = tmp_path / "bare"
    shutil.copytree(tiny_world / "segments", bare / "segments")
    by_vocab, source = cold_start_mask(bare, vocab, live, streamer)
    assert source == "vocabulary"
    np.testing.assert_array_equal(truth, by_vocab)


def test_a_room_missing_from_the_truth_is_named(tiny_world):
    from kuaihl_rec.data.io import DataError

    with pytest.raises(DataError, match=r"rooms.parquet: room live_id=-5"):
        cold_start_mask(tiny_world, IdVocab(np.array([1])), np.array([-5]), np.array([1]))


# ------------------------------------------------------------------------------------------
# Id dropout into the unknown row
# ------------------------------------------------------------------------------------------
def _batch(split):
    return split.batch(np.arange(min(6, len(split.index.first_row))))


def _table(model):
    return model.embedding_collection.embeddings[STREAMER_TABLE].weight


def _loss(model, batch):
    out = model.encode(batch)
    return ContentLoss("point+L1")(out.logits, batch.labels, batch.label_mask)["loss"]


def test_the_unknown_row_gets_gradient_only_with_id_dropout(model_split, model_spec):
    batch = _batch(model_split)
    assert (batch.streamer_ids() > 0).all(), "training windows have known streamers"
    grads = {}
    for p in (0.0, 0.5):
        torch.manual_seed(0)
        model = create_model("content", model_spec, id_dropout=p).train()
        torch.manual_seed(1)
        _loss(model, batch).backward()
        grads[p] = _table(model).grad
    assert torch.count_nonzero(grads[0.0][0]) == 0  # never read without dropout: never trained
    assert torch.count_nonzero(grads[0.5][0]) > 0


def test_id_dropout_maps_to_row_0_in_training_and_is_off_in_eval(model_split, model_spec):
    batch = _batch(model_split)
    torch.manual_seed(0)
    model = create_model("content", model_spec, id_dropout=0.999, dropout=0.0).train()
    unknown = dataclasses.replace(
        batch, sparse_features=make_id_features({"streamer_id": torch.zeros_like(batch.streamer_ids())})
    )
    torch.manual_seed(3)  # every row dropped: rand() < 0.999 for all of the few windows
    assert torch.equal(model(batch), model(unknown))
    model.eval()
    torch.manual_seed(0)
    twin = create_model("content", model_spec, dropout=0.0).eval()
    twin.load_state_dict(model.state_dict())
    assert torch.equal(model(batch), twin(batch))  # eval: the rows pass unchanged
    assert not torch.equal(model(batch), model(unknown))


def test_id_dropout_0_builds_nothing_and_trains_bit_identically(model_split, model_spec):
    """id_dropout=0 is the model before the knob: no module, no RNG draw, the same losses and
    gradients step after step as the lookup of batch.sparse_features itself."""
    batch = _batch(model_split)
    torch.manual_seed(0)
    model = create_model("content", model_spec, id_dropout=0.0)
    assert model.id_drop is None and not any(isinstance(m, StreamerIdDropout) for m in model.modules())

    def reference_loss(m):  # the pre-knob encode, written out
        e_f, _, _ = m.features(batch.visual, batch.text, batch.counters, batch.observed, batch.timestamp,
                               batch.segment)
        u = m.id_proj(m.embedding_collection(batch.sparse_features)["streamer_id"].values())
        logits = m.tower(e_f, u, batch.valid)
        return ContentLoss("point+L1")(logits, batch.labels, batch.label_mask)["loss"]

    twin = create_model("content", model_spec)
    twin.load_state_dict(model.state_dict())
    opt_a = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(twin.parameters(), lr=1e-2)
    for step in range(3):
        torch.manual_seed(step)
        a = _loss(model, batch)
        state_a = torch.get_rng_state()
        torch.manual_seed(step)
        b = reference_loss(twin)
        assert torch.equal(torch.get_rng_state(), state_a)
        assert torch.equal(a, b), step
        for opt, loss in ((opt_a, a), (opt_b, b)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), twin.state_dict().values()))


def test_id_dropout_is_validated(model_spec):
    with pytest.raises(ValueError, match=r"id_dropout must be in \[0, 1\)"):
        create_model("content", model_spec, id_dropout=1.0)


# ------------------------------------------------------------------------------------------
# The compare tables carry the slices
# ------------------------------------------------------------------------------------------
def test_every_compare_table_shows_warm_and_cold_columns():
    from kuaihl_rec.apps.compare_report import _aggregate, _world_section

    def run(tau, warm, cold):
        base = {k: tau for k in ("tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc", "logloss",
                                 "mean_pred_over_true", "per_room_tau")}
        return {**base, "tau_warm": warm, "tau_cold": cold}

    models = {
        "dcn_m": _aggregate([run(0.50, 0.52, 0.43)]),
        "content": _aggregate([run(0.46, 0.47, 0.42), run(0.48, 0.49, 0.44)]),
        "loss:point": _aggregate([run(0.49, 0.50, 0.45)]),
        "content_no_id": _aggregate([{k: 0.4 for k in ("tau", "tau@0.2", "tau@0.4", "tau@0.6", "spearman", "auc",
                                                       "logloss", "mean_pred_over_true", "per_room_tau")}]),
    }
    assert models["content"]["tau_cold"]["mean"] == pytest.approx(0.43)
    assert math.isnan(models["content_no_id"]["tau_cold"]["mean"])  # a run scored before the slices
    refs = {"trivial": {**run(0.56, 0.57, 0.51)}}
    text = "\n".join(_world_section("w", {"models": models, "references": refs, "seconds": 60,
                                          "lr": {"content": {"chosen": 1e-3}}}))
    tables = [block for block in text.split("###")[1:]]
    assert len(tables) == 3 and all("tau warm | tau cold-start" in t for t in tables)
    assert "| content | 0.4700 ± 0.0141 |" in text and "| 0.4800 ± 0.0141 | 0.4300 ± 0.0141 |" in text
    assert "| trivial | 0.5600 |" in text and "| 0.5700 | 0.5100 |" in text


def test_hashed_ids_without_truth_leave_the_slices_unavailable(tiny_world, tmp_path):
    """A hashed vocabulary maps every id to a trained row: it cannot name a cold streamer, so without
    the truth sidecar both slices are reported unavailable (source "none"), not 'everything warm'."""
    bare = tmp_path / "bare"
    shutil.copytree(tiny_world / "segments", bare / "segments")
    live, streamer = np.array([1, 2, 3]), np.array([7, 8, 9])
    cold, source = cold_start_mask(bare, HashedVocab(16), live, streamer)
    assert source == "none" and not cold.any() and cold.shape == (3,)
    out = slice_metrics(np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.4, 0.8]), cold, source)
    assert math.isnan(out["tau_warm"]) and math.isnan(out["tau_cold"])
    assert (out["n_segments_warm"], out["n_segments_cold"], out["cold_start_source"]) == (0, 0, "none")
