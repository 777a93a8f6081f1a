"""``kuaihl plan``: TorchRec's plan for a 10M-row streamer table without allocating it, the memory
per rank against brute-force arithmetic, and the refusal of a topology that cannot hold it."""

from __future__ import annotations

import math

import pytest

from kuaihl_rec.apps.cli import main

GIB = 2**30
ROWS, DIM = 10_000_001, 512  # 10M streamers + the unknown row; the paper preset's d


@pytest.fixture(scope="module")
def plan8():
    from kuaihl_rec.train.planning import PlanRequest, plan_at_scale

    return plan_at_scale(PlanRequest(streamers=10_000_000, world_size=8))


def test_the_table_is_planned_without_being_allocated():
    from torch._subclasses.fake_tensor import FakeTensor

    from kuaihl_rec.train.planning import PlanRequest, fake_model

    model = fake_model(PlanRequest(streamers=10_000_000, world_size=8))
    params = dict(model.named_parameters())
    table = params["embedding_collection.embeddings.streamer.weight"]
    assert tuple(table.shape) == (ROWS, DIM)
    assert all(isinstance(p, FakeTensor) for p in params.values())  # no byte of the 19 GiB exists


def test_row_wise_shards_cover_every_row_once_and_memory_matches_the_arithmetic(plan8):
    shards = sorted(plan8.shards, key=lambda s: s.offsets[0])
    assert {s.sharding_type for s in shards} == {"row_wise"} and {s.rank for s in shards} == set(range(8))
    assert shards[0].offsets[0] == 0
    for a, b in zip(shards, shards[1:]):
        assert b.offsets[0] == a.offsets[0] + a.sizes[0]
    assert sum(s.sizes[0] for s in shards) == ROWS and all(s.sizes[1] == DIM for s in shards)
    for s in shards:  # fp32 weights + row-wise Adagrad (one float per row) + a few MB of buffers
        floor = s.sizes[0] * (DIM + 1) * 4
        assert floor <= s.hbm_bytes <= floor + 64 * 2**20
        assert plan8.rank_bytes(s.rank)["hbm"] == s.hbm_bytes
    assert plan8.dense_bytes == plan8.dense_params * 16 and 1e7 < plan8.dense_params < 1e8


def test_a_topology_too_small_is_refused_with_the_numbers():
    from kuaihl_rec.train.planning import PlanDoesNotFitError, PlanRequest, plan_at_scale

    need = ROWS * (DIM + 1) * 4
    fewest = math.ceil(need / (2 * GIB * 0.85))
    with pytest.raises(PlanDoesNotFitError) as err:
        plan_at_scale(PlanRequest(streamers=10_000_000, world_size=8, hbm_gib=2, ddr_gib=2))
    text = str(err.value)
    assert f"{need / GIB:.1f} GiB" in text and "'streamer' 10,000,001 x 512" in text
    assert f"{need / 8 / GIB:.2f} GiB per rank on 8 ranks" in text and f"needs at least {fewest} ranks" in text
    # the same table on that many ranks of that size fits
    plan_at_scale(PlanRequest(streamers=10_000_000, world_size=fewest, hbm_gib=2, ddr_gib=2, local_world_size=4))


def test_cli_prints_the_plan_and_refuses_bad_topologies(capsys):
    assert main(["plan", "--streamers", "10000000", "--world-size", "64", "--batch-size", "3072"]) == 0
    out = capsys.readouterr().out
    assert "table streamer: 10,000,001 rows x 512" in out and "64 shard(s)" in out and "ranks 0-63:" in out
    assert main(["plan", "--streamers", "10000000", "--world-size", "64"]) == 2  # batch 48 < 64 ranks
    assert "--batch-size 3072" in capsys.readouterr().err
    assert main(["plan", "--streamers", "10000000", "--world-size", "8", "--compute-device", "cpu",
                 "--ddr-gib", "2"]) == 1
    assert "the tables do not fit" in capsys.readouterr().err
    assert main(["plan", "--streamers", "0", "--world-size", "8"]) == 2
    assert main(["plan", "--streamers", "10", "--world-size", "8", "--model", "deepfm"]) == 2  # paper preset: d=512
    assert "use --preset small" in capsys.readouterr().err
    assert main(["plan", "--streamers", "10", "--world-size", "8", "--compute-device", "tpu"]) == 2
