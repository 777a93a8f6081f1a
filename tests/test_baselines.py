"""ID baselines (ContentCTR 4.3.1-4.3.2): features, numeric checks against the papers' equations,
the time boundary, every model at batch sizes 1 and 2, a tiny overfit, and one short run of each
model through the shared trainer (DMP-sharded tables, TrainPipelineSparseDist)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from baselines import BASELINE_MODELS, PAPER_COUNTERS, FeatureConfig, fm_interaction, log_bucket, position_features
from baselines.features import LINEAR_WIDTH
from conftest import model_batch
from kuaihl_rec.data import BatchSpec, FeatureSizes
from kuaihl_rec.data.batch import LiveBatch, make_id_features
from kuaihl_rec.data.schema import COUNTER_COLUMNS
from kuaihl_rec.model.registry import create_model, list_models, model_overrides

REPO = Path(__file__).resolve().parents[1]
WINDOW = 8
SIZES = FeatureSizes(visual_tokens=1, visual_dim=4, text_dim=3)


@pytest.fixture(scope="module")
def split(model_split):
    """The shared table of tests/conftest.py: rooms of 30 and 25 segments (full windows) and 6 (one
    right-padded window)."""
    return model_split


@pytest.fixture(scope="module")
def spec(model_spec) -> BatchSpec:
    return model_spec


def _batch(split, b: int) -> LiveBatch:
    """b = 1: one full window; b = 2: a full window and the right-padded one."""
    return model_batch(split, b)


def _make(name: str, spec: BatchSpec, seed: int = 0, **overrides) -> torch.nn.Module:
    """A model with tables initialised in +-0.1 (the default +-1e-4 makes numeric checks vacuous)."""
    torch.manual_seed(seed)
    return create_model(name, spec, **{"init_scale": 0.1, **overrides})


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------
def test_registry_names_defaults_and_overrides(spec):
    assert set(BASELINE_MODELS) == {"wide_deep", "deepfm", "difm", "dcn_m"} <= set(list_models())
    for name in BASELINE_MODELS:
        model = create_model(name, spec)
        assert model.default_loss == "point"
        assert {"embedding_dim", "mlp", "dropout", "counters", "dense_counters", "id_dropout", "init_scale"} <= set(model_overrides(name))
        tables = model.embedding_bags.embedding_bag_configs()
        assert tables[0].embedding_dim == 16 and tables[0].weight_init_max == 1e-4
        assert model.feature_config.id_dropout == 0.2
        assert model.embedding_bags.embedding_bags["streamer_id"].weight.abs().max() <= 1e-4
    model = _make("dcn_m", spec, embedding_dim=8, mlp=[32], dropout=0.0, low_rank=4, experts=2, counters="all")
    assert model.embedding_bags.embedding_bag_configs()[0].embedding_dim == 8
    assert model.head.cross._low_rank == 4 and model.head.deep.out_dim == 32
    assert len(model.feature_config.field_keys) == 4 + len(COUNTER_COLUMNS)
    with pytest.raises(TypeError, match=r"unknown override\(s\) \['embeding_dim'\]"):
        create_model("deepfm", spec, embeding_dim=8)
    with pytest.raises(ValueError, match="counters must be one of"):
        create_model("difm", spec, counters="some")
    with pytest.raises(ValueError, match="structure must be one of"):
        create_model("dcn_m", spec, structure="diagonal")


def test_registry_loads_baselines_lazily():
    """create_model / list_models find the baselines without the caller importing ``baselines``."""
    code = "from kuaihl_rec.model import list_models; import sys; assert 'baselines' not in sys.modules; assert {'wide_deep', 'deepfm', 'difm', 'dcn_m'} <= set(list_models()), list_models()"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]


# ------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------
def test_log_bucket_values():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 7.0, 1000.0, 1e12, -5.0])
    assert log_bucket(x, buckets=64, per_octave=1).tolist() == [0, 1, 1, 2, 3, 9, 39, 0]
    # r = 2: floor(2 log2(1 + x)); 2^k - 1 lands exactly on bucket 2k
    assert log_bucket(x, buckets=64, per_octave=2).tolist() == [0, 2, 3, 4, 6, 19, 63, 0]
    assert log_bucket(torch.tensor([2.0**20 - 1]), buckets=64, per_octave=2).item() == 40


def test_features_kjt(split):
    cfg = FeatureConfig()
    batch = _batch(split, 2)
    b, n = batch.labels.shape
    counters = batch.counters.clone()
    known = torch.tensor([0.0, 1.0, 2.0, 3.0, 7.0, 1000.0, 2.0**20 - 1, 1e12])
    counters[0, :, COUNTER_COLUMNS.index("n_gifts")] = known
    batch = dataclasses.replace(batch, counters=counters)
    kjt, dense = position_features(batch.sparse_features, batch.counters, batch.timestamp, batch.segment, cfg)
    assert kjt.keys() == ["streamer_id", "live_id", "hour_id", "elapsed_id", *PAPER_COUNTERS]
    assert kjt.stride() == b * n and torch.all(kjt.lengths() == 1) and kjt.lengths().numel() == len(cfg.keys) * b * n
    feats = {k: kjt[k].values() for k in kjt.keys()}
    # the window's ids are repeated at each of its n positions (sample w * n + t)
    for key in ("streamer_id", "live_id"):
        assert feats[key].tolist() == batch.sparse_features[key].values().repeat_interleave(n).tolist()
    # known counter values -> r = 2 log buckets
    assert feats["n_gifts"][:n].tolist() == [0, 2, 3, 4, 6, 19, 40, 63]
    # every other counter: the formula, and the columns that are not in the paper's set are absent
    for c in PAPER_COUNTERS:
        x = batch.counters[:, :, COUNTER_COLUMNS.index(c)].reshape(-1).double()
        expect = torch.clamp(torch.floor(2 * torch.log2(1 + x)), max=63).long()
        assert torch.equal(feats[c], expect), c
    assert "n_viewers" not in feats and "n_long_viewers" not in feats
    # timestamp id: hour of day (UTC) and log2 position in the room
    ts, seg, valid = batch.timestamp.reshape(-1), batch.segment.reshape(-1), batch.valid.reshape(-1)
    for i in torch.nonzero(valid).flatten().tolist():
        assert feats["hour_id"][i] == datetime.fromtimestamp(int(ts[i]), tz=timezone.utc).hour
        assert feats["elapsed_id"][i] == min(int(math.floor(math.log2(1 + int(seg[i])))), cfg.elapsed_buckets - 1)
    # padding positions get in-range ids
    rows = cfg.table_rows(BatchSpec.of(split))
    for key, v in feats.items():
        assert 0 <= int(v.min()) and int(v.max()) < rows[key], key
    # dense: log1p of the used counters, in PAPER_COUNTERS order
    idx = [COUNTER_COLUMNS.index(c) for c in PAPER_COUNTERS]
    assert torch.allclose(dense, torch.log1p(batch.counters[:, :, idx].reshape(b * n, -1)))
    # Wide&Deep's cross key and the option without dense features
    kjt2, dense2 = position_features(batch.sparse_features, batch.counters, batch.timestamp, batch.segment, FeatureConfig(crosses=True, dense=False))
    assert kjt2.keys()[-1] == "streamer_x_hour" and dense2.shape == (b * n, 0)
    assert torch.equal(kjt2["streamer_x_hour"].values(), feats["streamer_id"] * 24 + feats["hour_id"])


def test_unknown_ids_and_id_dropout(split):
    """An unknown id (row 0) is an empty bag; id dropout empties known ids, in training only."""
    batch = _batch(split, 2)
    b, n = batch.labels.shape
    ids = {"streamer_id": torch.tensor([2, 0]), "live_id": torch.tensor([0, 2])}
    args = (make_id_features(ids), batch.counters, batch.timestamp, batch.segment)
    kjt, _ = position_features(*args, FeatureConfig(crosses=True))
    assert kjt["streamer_id"].lengths().tolist() == [1] * n + [0] * n
    assert kjt["streamer_id"].values().tolist() == [2] * n
    assert kjt["streamer_x_hour"].lengths().tolist() == [1] * n + [0] * n
    assert kjt["live_id"].lengths().tolist() == [0] * n + [1] * n
    assert torch.all(kjt["hour_id"].lengths() == 1)
    cfg = FeatureConfig(id_dropout=0.5)
    torch.manual_seed(0)
    known = (make_id_features({"streamer_id": torch.tensor([1, 2] * 50), "live_id": torch.tensor([1, 2] * 50)}), *(torch.cat([t] * 50) for t in args[1:]))
    assert torch.all(position_features(*known, cfg)[0].lengths() == 1)  # not training: nothing dropped
    dropped = position_features(*known, cfg, training=True)[0]
    for key in ("streamer_id", "live_id"):
        assert 0.4 < 1 - dropped[key].lengths().float().mean() < 0.6, key
    assert torch.all(dropped["n_clicks"].lengths() == 1)
    # an empty bag pools to a zero embedding and a zero first-order weight
    model = create_model("deepfm", BatchSpec.of(split), init_scale=0.1).eval()
    kjt, _ = position_features(*args, model.feature_config)
    assert torch.all(model.fields(model.embedding_bags(kjt))[n:, 0] == 0)
    assert torch.all(model.linear_fields(model.linear_bags(kjt))[:n, 1] == 0)


# ------------------------------------------------------------------------------------------
# Numeric checks against the papers' equations
# ------------------------------------------------------------------------------------------
def test_fm_term_matches_brute_force_pair_sum():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5, 7, 4, generator=g, dtype=torch.float64)
    brute = torch.zeros(5, dtype=torch.float64)
    for i, j in itertools.combinations(range(7), 2):
        brute += (emb[:, i] * emb[:, j]).sum(-1)
    assert torch.allclose(fm_interaction(emb), brute, atol=1e-12)
    # TorchRec's FactorizationMachine computes something else on the same input (why we wrote ours)
    from torchrec.modules.deepfm import FactorizationMachine

    assert not torch.allclose(FactorizationMachine()([emb.flatten(1)]).squeeze(-1), brute, atol=1e-3)


def _dense_head_inputs(model, batch):
    """(emb, w, dense) exactly as the model's forward builds them (unsharded)."""
    kjt, dense = model.inputs(batch)
    emb = model.fields(model.embedding_bags(kjt))
    w = model.linear_fields(model.linear_bags(kjt)) if model.linear_bags is not None else None
    return emb, w, dense


def test_dcn_m_matches_dcn_v2_mixture_equations(split, spec):
    """x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l, E_i(x_l) = x_0 * (U_i tanh(C_i tanh(V_i^T x_l)) + b_l),
    G = softmax_i(a_i^T x_l) (Wang et al. 2021); parallel combination w^T [x_L, MLP(x_0)] + c."""
    model = _make("dcn_m", spec, experts=3, low_rank=4, cross_layers=3).eval()
    batch = _batch(split, 2)
    with torch.no_grad():
        emb, _, dense = _dense_head_inputs(model, batch)
        logits = model(batch).reshape(-1).double()
        cross_out = model.head.cross(torch.cat([emb.flatten(1), dense], dim=1)).double()
    model = model.double()  # the direct computation runs in float64 on the same parameters
    cross = model.head.cross
    x0 = torch.cat([emb.flatten(1), dense], dim=1).double()  # [N, D]
    x = x0
    for layer in range(3):
        gates = torch.stack([x @ cross.gates[i].weight[0] for i in range(3)], dim=1)  # [N, K]
        g = torch.softmax(gates, dim=1)
        experts = []
        for i in range(3):
            u, c, v = cross.U_kernels[layer][i], cross.C_kernels[layer][i], cross.V_kernels[layer][i]  # [D, r], [r, r], [r, D]
            inner = torch.tanh(torch.tanh(x @ v.T) @ c.T) @ u.T  # U g(C g(V^T x))
            experts.append(x0 * (inner + cross.bias[layer][:, 0]))
        x = sum(g[:, i : i + 1] * experts[i] for i in range(3)) + x
    assert torch.allclose(cross_out, x, atol=1e-5)
    assert torch.allclose(cross(x0), x, atol=1e-12)
    h = model.head.deep(x0)
    direct = (torch.cat([x, h], dim=1) @ model.head.out.weight[0]) + model.head.out.bias[0]
    assert torch.allclose(logits, direct, atol=1e-5)


def test_difm_matches_its_equations(split, spec):
    """DIFM (Lu et al. 2020), re-implemented with explicit loops over samples, heads and fields."""
    heads, head_dim = 2, 3
    model = _make("difm", spec, embedding_dim=4, att_heads=heads, att_head_dim=head_dim, mlp=[6, 5]).eval()
    batch = _batch(split, 2)
    with torch.no_grad():
        emb, w, dense = _dense_head_inputs(model, batch)
        logits_model = model(batch).reshape(-1).double()
        m_x_mod, m_vec_mod, m_bit_mod = (m.double() for m in model.head.factors(emb))
    model = model.double()  # the direct computation runs in float64 on the same parameters
    emb, w, dense = emb.double(), w.double(), dense.double()
    fac = model.head.factors
    att = fac.vector_wise
    n_samples, n_fields, _ = emb.shape
    wq, wk, wv, wres = (m.weight for m in (att.w_q, att.w_k, att.w_v, att.w_res))
    logits = []
    m_vecs, m_bits = [], []
    for s in range(n_samples):
        e = emb[s]  # [F, k]
        res = []
        for i in range(n_fields):
            per_head = []
            for h in range(heads):
                sl = slice(h * head_dim, (h + 1) * head_dim)
                q = wq[sl] @ e[i]
                scores = torch.stack([q @ (wk[sl] @ e[j]) for j in range(n_fields)])  # <W_Q e_i, W_K e_j>, unscaled
                alpha = torch.softmax(scores, dim=0)
                per_head.append(sum(alpha[j] * (wv[sl] @ e[j]) for j in range(n_fields)))
            res.append(torch.relu(torch.cat(per_head) + wres @ e[i]))
        m_vec = fac.p_vec.weight @ torch.cat(res)  # P_vec O_vec
        hidden = e.reshape(-1)
        for layer in fac.bit_wise.net:
            if isinstance(layer, torch.nn.Linear):
                hidden = torch.relu(layer.weight @ hidden + layer.bias)
        m_bit = fac.p_bit.weight @ hidden  # P_bit O_bit
        m_x = m_vec + m_bit
        first = model.head.first_order
        linear = first.bias + sum(m_x[i] * w[s, i] for i in range(n_fields)) + first.dense.weight[0] @ dense[s]
        v = m_x[:, None] * e
        pairs = sum(v[i] @ v[j] for i, j in itertools.combinations(range(n_fields), 2))
        logits.append(linear + pairs)
        m_vecs.append(m_vec)
        m_bits.append(m_bit)
    assert torch.allclose(m_vec_mod, torch.stack(m_vecs), atol=1e-5)
    assert torch.allclose(m_bit_mod, torch.stack(m_bits), atol=1e-5)
    assert torch.allclose(m_x_mod, torch.stack(m_vecs) + torch.stack(m_bits), atol=1e-5)
    assert torch.allclose(logits_model, torch.stack(logits), atol=1e-5)
    with torch.no_grad():  # and in float64 end to end (the head on the float64 inputs)
        assert torch.allclose(model.head(emb, w, dense), torch.stack(logits), atol=1e-10)


def test_first_order_weight_is_the_mean_of_a_linear_row(split, spec):
    model = _make("deepfm", spec).eval()
    cfg = model.linear_bags.embedding_bag_configs()
    assert {c.embedding_dim for c in cfg} == {LINEAR_WIDTH}
    batch = _batch(split, 1)
    kjt, _ = model.inputs(batch)
    w = model.linear_fields(model.linear_bags(kjt))
    table = model.linear_bags.embedding_bags["w_streamer_id"].weight
    sid = batch.sparse_features["streamer_id"].values()[0]
    assert torch.allclose(w[:, 0], table[sid].mean().expand(w.shape[0]))


# ------------------------------------------------------------------------------------------
# Every model: shapes, batch sizes 1 and 2, backward, overfit, time boundary
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINE_MODELS)
@pytest.mark.parametrize("b", [1, 2])
def test_forward_backward(name, b, split, spec):
    model = _make(name, spec)
    batch = _batch(split, b)
    logits = model(batch)
    assert logits.shape == (b, WINDOW) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits[batch.label_mask], batch.labels[batch.label_mask]).backward()
    for table, param in model.embedding_bags.embedding_bags.items():
        assert param.weight.grad is not None and param.weight.grad.abs().sum() > 0, table
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()
    assert torch.isfinite(model(batch)).all()


@pytest.mark.parametrize("name", BASELINE_MODELS)
def test_overfits_a_tiny_batch(name, split, spec):
    model = _make(name, spec, dropout=0.0, id_dropout=0.0)
    batch = _batch(split, 2)
    m, y = batch.label_mask, batch.labels
    floor = F.binary_cross_entropy(y[m], y[m])  # entropy of the soft labels: the best reachable BCE
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        loss = F.binary_cross_entropy_with_logits(model(batch)[m], y[m])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] - float(floor) < 0.1 * (losses[0] - float(floor)), (losses[0], losses[-1], float(floor))


@pytest.mark.parametrize("name", BASELINE_MODELS)
def test_time_boundary(name, split, spec):
    """Features of segment t predict the label of t+1: changing the counters, timestamps and segment
    indices (and labels) of positions > t leaves the logits at <= t bit-identical."""
    model = _make(name, spec).eval()
    batch = _batch(split, 2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        base = model(batch)
        for t in (0, 3, WINDOW - 2):
            future = torch.zeros_like(batch.valid)
            future[:, t + 1 :] = True
            counters = torch.where(future[..., None], torch.randint(0, 10**6, batch.counters.shape, generator=g).float(), batch.counters)
            timestamp = torch.where(future, torch.randint(0, 2**31, batch.timestamp.shape, generator=g), batch.timestamp)
            segment = torch.where(future, torch.randint(0, 10**4, batch.segment.shape, generator=g), batch.segment)
            labels = torch.where(future, torch.rand(batch.labels.shape, generator=g), batch.labels)
            out = model(dataclasses.replace(batch, counters=counters, timestamp=timestamp, segment=segment, labels=labels))
            assert torch.equal(out[:, : t + 1], base[:, : t + 1]), t
            assert not torch.equal(out[:, t + 1 :], base[:, t + 1 :]), t  # the perturbation does reach later positions
    # and the window ids are the only thing positions share
    ids = {"streamer_id": batch.sparse_features["streamer_id"].values(), "live_id": batch.sparse_features["live_id"].values() * 0}
    with torch.no_grad():
        assert not torch.equal(model(dataclasses.replace(batch, sparse_features=make_id_features(ids))), base)


# ------------------------------------------------------------------------------------------
# The shared trainer: DMP (sharded tables) + TrainPipelineSparseDist, then eval from model.pt
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BASELINE_MODELS)
def test_trains_with_the_shared_trainer(name, tiny_world, tmp_path):
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    run = tmp_path / "run"
    summary = train(tiny_world, run, train_config("tiny", model=name, epochs=1), progress=False)
    assert summary["loss"] == "point" and summary["steps"] > 5
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert all(math.isfinite(s["loss"]) for s in steps)
    assert math.isfinite(summary["best_val_tau"])
    if name == "deepfm":  # the checkpoint loads back into an unsharded model and scores the test split
        from kuaihl_rec.train.evaluate import evaluate_run

        result = evaluate_run(run, tiny_world, "test", progress=False)
        assert result["n_segments"] > 0 and math.isfinite(result["tau"])


TWO_RANK_CHECK = r"""
import collections, sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[1])
import baselines
from helpers import make_table
from kuaihl_rec.data import BatchSpec, FeatureSizes, SegmentArrays, WindowConfig, window_splits
from kuaihl_rec.model.registry import create_model
from kuaihl_rec.train.loop import init_distributed
from kuaihl_rec.train.sharding import wrap_model

device = init_distributed()
rank = dist.get_rank()
sizes = FeatureSizes(1, 4, 3)
cfg = WindowConfig(window=8, min_viewers=0)
split = window_splits(SegmentArrays.from_table(make_table(room_lengths=(30, 6, 25, 40), sizes=sizes), sizes, cfg), cfg, {"train": "train"})["train"]
spec = BatchSpec.of(split)
for name in baselines.BASELINE_MODELS:
    torch.manual_seed(0)
    ref = create_model(name, spec, init_scale=0.1).eval()
    full = collections.OrderedDict((k, v.clone()) for k, v in ref.state_dict().items())
    dmp = wrap_model(create_model(name, spec, init_scale=0.1), device).eval()
    dmp.load_state_dict(full)  # DMP re-initialises bag tables: load the reference weights into the shards
    batch = split.batch(np.arange(8)[rank * 4 : (rank + 1) * 4])
    with torch.no_grad():
        err = (dmp(batch) - ref(batch)).abs().max().item()
    assert err < 1e-5, (name, rank, err)
    print(f"rank {rank} {name}: {err:.1e}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_ranks_sharded_tables_match_unsharded(tmp_path):
    """Under torchrun with 2 ranks (tables placed table-wise over the ranks, the per-position KJT
    built on each rank), every baseline's logits equal the unsharded model's."""
    script = tmp_path / "two_rank_check.py"
    script.write_text(TWO_RANK_CHECK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(REPO / "tests")]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count(": ") == 2 * len(BASELINE_MODELS), out.stdout
