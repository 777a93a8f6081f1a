"""A pretrained streamer embedding (ContentCTR 3.1): the content model's table initialised from another
run's, through a fixed projection, fine-tuned or frozen; and the compare rows that read another row's runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import baselines  # noqa: F401  (registers the ID baselines)
from kuaihl_rec.losses import ContentLoss
from kuaihl_rec.model import create_model
from kuaihl_rec.model.streamer import STREAMER_TABLE, check_same_vocabulary, project_table, source_streamer_table


def _save_run(tmp_path, model, name="src"):
    run = tmp_path / name
    run.mkdir()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "config": {}},
               run / "model.pt")
    return run


def _table(model):
    return model.embedding_collection.embeddings[STREAMER_TABLE].weight


def test_the_fixed_projection_by_brute_force():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(9, 6, generator=gen)
    assert torch.equal(project_table(table, 6), table)
    padded = project_table(table, 8)
    assert torch.equal(padded[:, :6], table) and torch.equal(padded[:, 6:], torch.zeros(9, 2))
    small = project_table(table, 3).double()
    u, s, vt = np.linalg.svd(table.double().numpy(), full_matrices=False)
    # the Gram matrix of the projected rows is the best rank-3 approximation of the rows' Gram matrix
    np.testing.assert_allclose(small @ small.T, (u[:, :3] * s[:3] ** 2) @ u[:, :3].T, atol=1e-5)
    v = vt[:3].T * np.sign(vt[:3].T[np.abs(vt[:3].T).argmax(axis=0), range(3)])  # largest entry positive
    np.testing.assert_allclose(small.numpy(), table.double().numpy() @ v, atol=1e-5)


@pytest.mark.parametrize("source_name", ["dcn_m", "wide_deep", "content"])
def test_the_initialised_table_equals_the_projected_source_table(tmp_path, model_spec, source_name):
    torch.manual_seed(0)
    source = create_model(source_name, model_spec)
    run = _save_run(tmp_path, source)
    src = source_streamer_table(run)
    assert src.shape[0] == model_spec.num_streamers
    torch.manual_seed(1)
    model = create_model("content", model_spec, streamer_init=str(run))
    assert torch.equal(_table(model), project_table(src, model.config.d))
    narrow = create_model("content", model_spec, streamer_init=str(run), id_dim=src.shape[1])
    assert torch.equal(_table(narrow), src)  # same width: the source table itself


def _step(model, batch):
    out = model.encode(batch)
    ContentLoss("point+L1")(out.logits, batch.labels, batch.label_mask)["loss"].backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()


def test_frozen_keeps_the_table_fine_tuned_moves_it(tmp_path, model_split, model_spec):
    torch.manual_seed(0)
    run = _save_run(tmp_path, create_model("dcn_m", model_spec))
    batch = model_split.batch(np.arange(4))
    moved = {}
    for freeze in (False, True):
        torch.manual_seed(1)
        model = create_model("content", model_spec, streamer_init=str(run), streamer_freeze=freeze).train()
        before = _table(model).detach().clone()
        _step(model, batch)
        moved[freeze] = not torch.equal(_table(model), before)
        if freeze:
            assert _table(model).grad is None
    assert moved == {False: True, True: False}


def test_wrong_sources_are_named(tmp_path, model_spec):
    from kuaihl_rec.data.batch import BatchSpec
    import dataclasses

    with pytest.raises(FileNotFoundError, match="model.pt: no trained model"):
        create_model("content", model_spec, streamer_init=str(tmp_path / "nowhere"))
    other = dataclasses.replace(model_spec, num_streamers=model_spec.num_streamers + 3)
    assert isinstance(other, BatchSpec)
    run = _save_run(tmp_path, create_model("dcn_m", other))
    with pytest.raises(ValueError, match=r"has \d+ rows, this model's \d+: streamer_init needs"):
        create_model("content", model_spec, streamer_init=str(run))
    no_table = _save_run(tmp_path, create_model("content_no_id", model_spec), "noid")
    with pytest.raises(ValueError, match="expected exactly one streamer table"):
        create_model("content", model_spec, streamer_init=str(no_table))
    with pytest.raises(ValueError, match="need a streamer table"):
        create_model("content_no_id", model_spec, streamer_freeze=True)
    np.savez(run / "vocab.npz", streamer=np.array([3, 5, 8]), live=np.array([1]))
    check_same_vocabulary(run, np.array([3, 5, 8]))
    with pytest.raises(ValueError, match="vocab.npz: the source run's streamer vocabulary"):
        check_same_vocabulary(run, np.array([3, 5, 9]))


def test_compare_rows_read_the_source_row_of_the_same_seed():
    from kuaihl_rec.apps.compare import _stages, _with_source_runs
    from kuaihl_rec.apps.compare_entries import PRETRAINED_ID, entries_for

    rows = entries_for(["content+pretrained_id"])
    assert [e.name for e in rows] == ["content+pretrained_id", "dcn_m"]  # the source row comes along
    assert [[e.name for e in stage] for stage in _stages(rows)] == [["dcn_m"], ["content+pretrained_id"]]
    resolved = _with_source_runs(PRETRAINED_ID[1], 2, lambda row: f"/runs/{row}/lr0.001-seed2")
    assert dict(resolved.overrides) == {"streamer_freeze": True, "streamer_init": "/runs/dcn_m/lr0.001-seed2"}
    assert resolved.name == PRETRAINED_ID[1].name


@pytest.mark.slow
def test_trainer_initialises_from_a_finished_run(tiny_world, tmp_path):
    """Through `kuaihl train`: a DCN-M run, then a content run from its table (frozen: the trained
    model's table is still the projected DCN-M table)."""
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    src = tmp_path / "dcn"
    train(tiny_world, src, train_config("tiny", model="dcn_m", epochs=1), progress=False)
    out = tmp_path / "content"
    cfg = train_config("tiny", model={"name": "content", "overrides": {"streamer_init": str(src),
                                                                       "streamer_freeze": True}}, epochs=1)
    train(tiny_world, out, cfg, progress=False)
    state = torch.load(out / "model.pt", weights_only=False)["state_dict"]
    table = state["model.embedding_collection.embeddings.streamer.weight"]
    assert torch.equal(table, project_table(source_streamer_table(src), table.shape[1]))
    import shutil

    from kuaihl_rec.train.evaluate import load_trained_model

    shutil.rmtree(src)  # scoring reads the trained table from model.pt, not the source run
    model, _ = load_trained_model(out)
    assert torch.equal(model.embedding_collection.embeddings["streamer"].weight, table)
