"""Content models: every registered model runs, overfits, is causal (or, HL mode, is not), the
modality ablations ignore their modality, and the Perceiver / decoder match independent
einsum implementations of ContentCTR Algorithms 1-2."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kuaihl_rec.data import BatchSpec, FeatureSizes, make_id_features
from kuaihl_rec.data.batch import LiveBatch
from kuaihl_rec.model import (
    CONTENT_PRESETS,
    CONTENT_VARIANTS,
    CausalDecoder,
    ContentConfig,
    ContentCTR,
    PerceiverFusion,
    build_streamer_embedding,
    create_model,
    list_models,
    model_overrides,
    register_model,
)

WINDOW = 8
SIZES = FeatureSizes(visual_tokens=2, visual_dim=5, text_dim=3)
CONTENT_NAMES = sorted(CONTENT_VARIANTS)
CAUSAL_NAMES = [n for n in CONTENT_NAMES if n != "content_hl"]


@pytest.fixture(scope="module")
def split(model_split):
    # The shared table of tests/conftest.py: rooms of 30 and 25 segments give full windows, 6 gives
    # one right-padded window (5 targets < 8).
    return model_split


@pytest.fixture(scope="module")
def spec(model_spec) -> BatchSpec:
    return model_spec


def _padded_window(split) -> int:
    n_valid = split.index.n_valid
    assert (n_valid < WINDOW).any(), "the fixture must contain a right-padded window"
    return int(np.flatnonzero(n_valid < WINDOW)[0])


def _batch(split, b: int) -> LiveBatch:
    """b = 1: one full window; b = 2: a full window and a right-padded one (different streamers)."""
    windows = [0] if b == 1 else [0, _padded_window(split)]
    return split.batch(np.array(windows))


def _make(name: str, spec: BatchSpec, seed: int = 0, **overrides) -> ContentCTR:
    torch.manual_seed(seed)
    return create_model(name, spec, **overrides)


def _replace(batch: LiveBatch, **fields) -> LiveBatch:
    return dataclasses.replace(batch, **fields)


# ------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------
def test_registry_lists_every_content_model():
    expected = {
        "content", "kuaihl", "self_attention_plain", "self_attention_input", "cross_attention_q",
        "cross_attention_kv", "cross_attention_qkv", "content_no_id", "content_no_text",
        "content_no_visual", "content_hl",
    }
    assert expected <= set(list_models())
    assert list_models() == sorted(list_models())


def test_registry_errors(spec):
    with pytest.raises(KeyError, match="registered models: .*'content'"):
        create_model("no_such_model", spec)
    with pytest.raises(TypeError, match=r"unknown override\(s\) \['dd'\]; valid overrides: .*'d'"):
        create_model("content", spec, dd=8)
    # a field fixed by the variant is not an override of that variant
    with pytest.raises(TypeError, match="use_text"):
        create_model("content_no_text", spec, use_text=True)
    with pytest.raises(ValueError, match="fusion must be one of"):
        create_model("content", spec, fusion="bogus")
    with pytest.raises(KeyError, match="unknown content preset"):
        create_model("content", spec, preset="huge")
    with pytest.raises(ValueError, match="needs causal=False"):
        create_model("content", spec, id_source="history")
    with pytest.raises(TypeError, match="spec must be a BatchSpec"):
        create_model("content", {"window": 8})
    assert "preset" in model_overrides("content") and "use_text" not in model_overrides("content_no_text")


def test_register_model_rules(spec):
    @register_model("_test_tiny_model")
    def _tiny(spec: BatchSpec, width: int = 3) -> torch.nn.Module:
        return torch.nn.Linear(width, 1)

    try:
        assert create_model("_test_tiny_model", spec, width=4).in_features == 4
        with pytest.raises(TypeError, match=r"\['wdth'\].*\['width'\]"):
            create_model("_test_tiny_model", spec, wdth=4)
        with pytest.raises(ValueError, match="already registered"):
            register_model("_test_tiny_model")(lambda spec: torch.nn.Identity())
        with pytest.raises(TypeError, match="overrides="):
            register_model("_test_kwargs_model")(lambda spec, **kw: torch.nn.Identity())
    finally:
        from kuaihl_rec.model import registry

        registry._FACTORIES.pop("_test_tiny_model", None)
        registry._INFO.pop("_test_tiny_model", None)


def test_the_registry_carries_every_models_facts(spec):
    from kuaihl_rec.losses import LOSS_PRESETS
    from kuaihl_rec.model.registry import list_models, model_info

    assert list_models(family="id_baseline") == ["wide_deep", "deepfm", "difm", "dcn_m"]  # Table 1 order
    assert set(list_models(family="content")) == set(CONTENT_VARIANTS) | {"content_e2e"}  # e2e: test_content_e2e.py
    assert sorted(list_models(family="content") + list_models(family="id_baseline")) == list_models()
    for name in (m for m in list_models() if m != "content_e2e"):  # needs a raw-media table
        info = model_info(name)
        assert info.default_loss in LOSS_PRESETS and info.description, name
        assert _make(name, spec).default_loss == info.default_loss if info.family == "content" else True
    assert model_info("content").paper["tau"] == 0.5919 and model_info("dcn_m").paper == {"tau": 0.5629}
    assert model_info("content").paper["loss_ablation"]["point+L2"] == 0.5256
    assert model_info("content_no_visual").paper == {"drop_pct": -4.72}
    with pytest.raises(ValueError, match="family must be one of"):
        register_model("_test_bad_family", family="cnn")


def test_default_loss_and_presets(spec):
    assert _make("kuaihl", spec).default_loss == "kuaihl"
    assert _make("content", spec).default_loss == "contentctr"
    assert _make("content_hl", spec).default_loss == "contentctr_hl"
    from kuaihl_rec import losses
    for name in CONTENT_NAMES:
        assert CONTENT_VARIANTS[name][1] in losses.LOSS_PRESETS, name
    paper = CONTENT_PRESETS["paper"]
    assert (paper.n_perceiver_layers, paper.n_decoder_layers, paper.d, paper.d_head, paper.n_heads, paper.window) == (3, 3, 512, 64, 8, 20)
    model = _make("content", spec, preset="paper")
    assert model.config.d == 512 and model.config.window == spec.window
    assert model.embedding_collection.embedding_configs()[0].num_embeddings == spec.num_streamers


def test_deterministic_init(spec):
    a, b = _make("content", spec, seed=3).state_dict(), _make("content", spec, seed=3).state_dict()
    assert a.keys() == b.keys() and "embedding_collection.embeddings.streamer.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _make("content", spec, seed=4).state_dict()
    assert not torch.equal(a["embedding_collection.embeddings.streamer.weight"], c["embedding_collection.embeddings.streamer.weight"])


# ------------------------------------------------------------------------------------------
# Every registered model: forward/backward at b = 1, 2, and a tiny overfit
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONTENT_NAMES)
@pytest.mark.parametrize("b", [1, 2])
def test_forward_backward(split, spec, name, b):
    model = _make(name, spec)
    batch = _batch(split, b)
    out = model.encode(batch)
    assert out.logits.shape == (b, WINDOW) and out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    d = model.config.d
    for seq, used in ((out.text_seq, model.config.use_text), (out.visual_seq, model.config.use_visual)):
        assert (seq is not None and seq.shape == (b, WINDOW, d)) if used else seq is None
    loss = F.binary_cross_entropy_with_logits(out.logits, batch.labels, weight=batch.label_mask.float())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    if model.config.uses_streamer_table:
        table_grad = model.embedding_collection.embeddings["streamer"].weight.grad
        assert table_grad is not None and table_grad.abs().sum() > 0


def test_dropout_only_in_training(split, spec):
    model = _make("content", spec, preset="paper", d=32, n_heads=2, d_head=16, dropout=0.3)
    batch = _batch(split, 2)
    assert not torch.equal(model(batch), model(batch))  # training: attention / FFN dropout
    model.eval()
    assert torch.equal(model(batch), model.encode(batch).logits)


# The fast tier overfits one model per fusion family (Perceiver, self-attention, cross-attention,
# fully visible); the equation tests cover every variant, the slow tier overfits all of them.
OVERFIT_FAST = ("content", "self_attention_input", "cross_attention_kv", "content_hl")


@pytest.mark.parametrize("name", [n if n in OVERFIT_FAST else pytest.param(n, marks=pytest.mark.slow) for n in CONTENT_NAMES])
def test_overfits_tiny_batch(split, spec, name):
    model = _make(name, spec, dropout=0.0)
    batch = _batch(split, 2)
    y, w = batch.labels, batch.label_mask.float()
    floor = float(-(y * torch.log(y.clamp(1e-6)) + (1 - y) * torch.log((1 - y).clamp(1e-6))).mul(w).sum() / w.sum())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(batch), y, weight=w, reduction="sum") / w.sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # soft labels: the minimum BCE is the labels' mean binary entropy `floor`
    assert losses[-1] - floor < 0.05 * (losses[0] - floor), (losses[0], losses[-1], floor)
    pred = torch.sigmoid(model(batch))
    assert float(((pred - y).abs() * w).max()) < 0.1


# ------------------------------------------------------------------------------------------
# Causality
# ------------------------------------------------------------------------------------------
def _perturb_after(batch: LiveBatch, i: int, seed: int) -> LiveBatch:
    """Every per-position input of positions > i replaced by fresh random values."""
    g = torch.Generator().manual_seed(seed)
    after = torch.arange(batch.window) > i  # [n]

    def noisy(x: torch.Tensor, scale: float) -> torch.Tensor:
        mask = after.view(1, -1, *([1] * (x.dim() - 2)))
        return torch.where(mask, torch.randn(x.shape, generator=g) * scale, x)

    def flipped(x: torch.Tensor) -> torch.Tensor:
        return torch.where(after[None, :], ~x, x)

    return _replace(
        batch,
        visual=noisy(batch.visual, 10.0),
        text=noisy(batch.text, 10.0),
        counters=noisy(batch.counters, 100.0).abs(),
        labels=noisy(batch.labels, 1.0).clamp(0, 1),
        label_mask=flipped(batch.label_mask),
        score_mask=flipped(batch.score_mask),
        valid=flipped(batch.valid),
        segment=torch.where(after[None, :], batch.segment + 1000, batch.segment),
        timestamp=torch.where(after[None, :], batch.timestamp + 1000, batch.timestamp),
        observed=noisy(batch.observed, 1.0).clamp(-1, 1),
    )


@pytest.mark.parametrize("name", CAUSAL_NAMES + ["content+counters", "content+counters+skip"])
def test_causality_exact(split, spec, name):
    if name == "content+counters":
        model = _make("content", spec, use_counters=True)
    elif name == "content+counters+skip":
        model = _make("content", spec, use_counters=True, engagement_skip=True)
        torch.nn.init.normal_(model.tower.head.weight)  # the zero-initialised head would hide the tower
    else:
        model = _make(name, spec)
    model.eval()
    batch = _batch(split, 2)
    with torch.no_grad():
        base = model(batch)
        for i in (0, 1, 3, WINDOW - 2):
            for seed in (0, 1):
                out = model(_perturb_after(batch, i, seed))
                assert torch.equal(out[:, : i + 1], base[:, : i + 1]), (name, i)
                assert not torch.equal(out[:, i + 1 :], base[:, i + 1 :]), (name, i)  # the perturbation reached the model


def test_hl_mode_sees_the_future_and_ignores_padding(split, spec):
    model = _make("content_hl", spec).eval()
    assert not model.config.causal
    batch = _batch(split, 2)
    with torch.no_grad():
        base = model(batch)
        out = model(_replace(batch, visual=batch.visual.clone().index_fill_(1, torch.tensor([WINDOW - 1]), 3.0)))
        assert not torch.equal(out[:, 0], base[:, 0])  # position 0 depends on the last segment
        # padded positions (valid False) are key-padded and left out of the history mean
        pad = ~batch.valid
        assert pad[1].any()
        vis = torch.where(pad[:, :, None, None], torch.full_like(batch.visual, 7.0), batch.visual)
        out = model(_replace(batch, visual=vis, text=torch.where(pad[:, :, None], 5.0, batch.text)))
        assert torch.equal(out[batch.valid], base[batch.valid])


# ------------------------------------------------------------------------------------------
# Modalities and the id
# ------------------------------------------------------------------------------------------
def _other_streamers(batch: LiveBatch, spec: BatchSpec) -> LiveBatch:
    ids = {k: batch.sparse_features[k].values() for k in batch.sparse_features.keys()}
    ids["streamer_id"] = (ids["streamer_id"] + 1) % spec.num_streamers
    return _replace(batch, sparse_features=make_id_features(ids))


@pytest.mark.parametrize(
    "name, ignored",
    [
        ("content_no_text", "text"),
        ("content_no_visual", "visual"),
        ("content_no_id", "id"),
        ("self_attention_plain", "id"),
        ("content_hl", "id"),
        ("content", "counters"),
        ("content", "live_id"),
    ],
)
def test_ablations_ignore_their_modality(split, spec, name, ignored):
    model = _make(name, spec).eval()
    batch = _batch(split, 2)
    changed = {
        "text": lambda b: _replace(b, text=b.text + 3.0),
        "visual": lambda b: _replace(b, visual=-b.visual),
        "counters": lambda b: _replace(b, counters=b.counters * 2 + 1),
        "id": lambda b: _other_streamers(b, spec),
        "live_id": lambda b: _replace(
            b, sparse_features=make_id_features({"streamer_id": b.sparse_features["streamer_id"].values(), "live_id": b.sparse_features["live_id"].values() + 1})
        ),
    }
    with torch.no_grad():
        assert torch.equal(model(changed[ignored](batch)), model(batch))


@pytest.mark.parametrize("modality", ["text", "visual", "id", "counters"])
def test_full_model_uses_every_modality(split, spec, modality):
    model = (_make("content", spec, use_counters=True) if modality == "counters" else _make("content", spec)).eval()
    batch = _batch(split, 2)
    changed = {
        "text": _replace(batch, text=batch.text + 3.0),
        "visual": _replace(batch, visual=-batch.visual),
        "counters": _replace(batch, counters=batch.counters * 2 + 1),
        "id": _other_streamers(batch, spec),
    }[modality]
    with torch.no_grad():
        assert not torch.equal(model(changed), model(batch))


def test_streamer_key_alone_and_id_projection(split, spec):
    batch = _batch(split, 2)
    only_streamer = _replace(batch, sparse_features=make_id_features({"streamer_id": batch.sparse_features["streamer_id"].values()}))
    for overrides in ({}, {"id_dim": 16}):
        model = _make("content", spec, **overrides).eval()
        assert model.embedding_collection.embedding_configs()[0].embedding_dim == overrides.get("id_dim", model.config.d)
        with torch.no_grad():
            assert torch.equal(model(only_streamer), model(batch))


def test_constructor_checks(spec):
    cfg = CONTENT_PRESETS["small"]
    with pytest.raises(ValueError, match="pass embedding_collection"):
        ContentCTR(spec, cfg)
    no_id = dataclasses.replace(cfg, use_id=False)
    with pytest.raises(ValueError, match="embedding_collection=None"):
        ContentCTR(spec, no_id, build_streamer_embedding(spec, cfg))
    with pytest.raises(ValueError, match="width"):
        ContentCTR(spec, cfg, build_streamer_embedding(spec, dataclasses.replace(cfg, id_dim=8)))


def test_window_longer_than_positional_embedding(split, spec):
    model = _make("content", spec, window=WINDOW - 1)
    with pytest.raises(ValueError, match="positional embedding covers 7"):
        model(_batch(split, 1))


def test_encode_is_traceable_for_the_sparse_pipeline(spec):
    """TrainPipelineSparseDist fx-traces the model with sub-modules free of sharded modules as
    leaves; the streamer lookup must read ``batch.sparse_features`` unchanged to be pipelined."""
    tracing = pytest.importorskip("torchrec.distributed.train_pipeline.tracing")
    model = _make("content", spec)
    leaves = [n for n, _ in model.named_children()]
    graph = tracing.Tracer(leaf_modules=leaves).trace(model)
    ec_nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == "embedding_collection"]
    assert len(ec_nodes) == 1
    (arg,) = ec_nodes[0].args
    assert arg.op == "call_function" and arg.args[1] == "sparse_features" and arg.args[0].op == "placeholder"


# ------------------------------------------------------------------------------------------
# Equations: independent einsum references of Algorithm 1 and Algorithm 2
# ------------------------------------------------------------------------------------------
def _ln(x, norm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _mha(q_in, kv_in, attn, n_h, d_h, mask=None):
    """eq. 3-5 with explicit per-head weights: head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_h) + M) V W_i^V."""
    Wq = attn.q_proj.weight.T.reshape(-1, n_h, d_h)  # [d, h, d_h]
    Wk = attn.k_proj.weight.T.reshape(-1, n_h, d_h)
    Wv = attn.v_proj.weight.T.reshape(-1, n_h, d_h)
    bq, bk, bv = (p.bias.reshape(n_h, d_h) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    Q = torch.einsum("bqd,dhe->bhqe", q_in, Wq) + bq[None, :, None, :]
    K = torch.einsum("bkd,dhe->bhke", kv_in, Wk) + bk[None, :, None, :]
    V = torch.einsum("bkd,dhe->bhke", kv_in, Wv) + bv[None, :, None, :]
    scores = torch.einsum("bhqe,bhke->bhqk", Q, K) / math.sqrt(d_h)
    if mask is not None:
        scores = scores + torch.where(mask, 0.0, float("-inf"))  # M: -inf where not allowed
    heads = torch.einsum("bhqk,bhke->bqhe", scores.softmax(-1), V).flatten(-2)  # Concat(head_1..head_h)
    return heads @ attn.o_proj.weight.T + attn.o_proj.bias


def _ffn(x, ffn):
    return F.gelu(_ln(x, ffn.norm) @ ffn.fc1.weight.T + ffn.fc1.bias) @ ffn.fc2.weight.T + ffn.fc2.bias


def _reference_fusion(x_f, u, fusion, cfg, carry_query=True, include_query=True):
    x = u
    for layer in fusion.layers:
        q = _ln(x if carry_query else u, layer.norm_q)
        kv = _ln(x_f, layer.norm_kv)
        if include_query:
            kv = torch.cat([kv, q], dim=1)  # Algorithm 1: kv = concat([x_f, x])
        x = x + _mha(q, kv, layer.attn, cfg.n_heads, cfg.d_head)
        x = x + _ffn(x, layer.ffn)
    return x[:, 0]


def _small_cfg(**kw):
    base = dict(d=4, n_heads=2, d_head=2, n_perceiver_layers=1, n_decoder_layers=1, ffn_mult=2, dropout=0.0, window=5)
    return ContentConfig(**{**base, **kw})


def test_perceiver_identity_weights_by_hand():
    """One layer, identity projections, unit LayerNorms and zero FFN: the latent's update is the
    softmax-weighted mean of the normalised tokens (including itself), computed by hand."""
    cfg = _small_cfg()
    fusion = PerceiverFusion(cfg).eval()
    layer = fusion.layers[0]
    with torch.no_grad():
        for lin in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj, layer.attn.o_proj):
            lin.weight.copy_(torch.eye(4))
            lin.bias.zero_()
        layer.ffn.fc2.weight.zero_()
        layer.ffn.fc2.bias.zero_()
    x_f = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]])  # [1, k=2, d=4]
    u = torch.tensor([[[0.0, 0.0, 3.0, 0.0]]])  # [1, 1, 4]

    def ln(v):
        v = torch.tensor(v)
        return (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)

    tokens = [ln([1.0, 0, 0, 0]), ln([0, 2.0, 0, 0]), ln([0, 0, 3.0, 0])]
    q = tokens[2]
    expected = u[0, 0].clone()
    for h in range(2):  # head h reads features 2h, 2h+1
        sl = slice(2 * h, 2 * h + 2)
        w = torch.softmax(torch.stack([q[sl] @ t[sl] for t in tokens]) / math.sqrt(2), 0)
        expected[sl] += sum(wi * t[sl] for wi, t in zip(w, tokens))
    with torch.no_grad():
        got = fusion(x_f, u)
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "fusion_mode, carry_query, include_query",
    [("perceiver", True, True), ("cross_qkv", True, False), ("cross_q", False, False)],
)
@pytest.mark.parametrize("layers", [1, 2])
def test_fusion_matches_einsum_reference(fusion_mode, carry_query, include_query, layers):
    torch.manual_seed(0)
    cfg = _small_cfg(fusion=fusion_mode, n_perceiver_layers=layers)
    fusion = PerceiverFusion(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for p in fusion.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x_f, u = torch.randn(6, 3, 4), torch.randn(6, 1, 4)
    with torch.no_grad():
        got = fusion(x_f, u)
        ref = _reference_fusion(x_f, u, fusion, cfg, carry_query, include_query)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_variants_differ_as_documented():
    """cross_q equals cross_qkv for one layer (the query is u either way) but not for two;
    the Perceiver differs from cross_qkv by the latent in its own key/value set."""
    x_f, u = torch.randn(5, 3, 4), torch.randn(5, 1, 4)
    outs = {}
    for layers in (1, 2):
        for mode in ("perceiver", "cross_qkv", "cross_q"):
            torch.manual_seed(1)
            outs[mode, layers] = PerceiverFusion(_small_cfg(fusion=mode, n_perceiver_layers=layers)).eval()(x_f, u).detach()
    torch.testing.assert_close(outs["cross_q", 1], outs["cross_qkv", 1])
    assert not torch.allclose(outs["cross_q", 2], outs["cross_qkv", 2])
    assert not torch.allclose(outs["perceiver", 1], outs["cross_qkv", 1])


def test_cross_kv_is_additive_id_conditioning():
    """A single key: every token gets W^O W^V LN(u) added (softmax of one score is 1), so tokens
    do not see each other before the mean."""
    torch.manual_seed(0)
    fusion = PerceiverFusion(_small_cfg(fusion="cross_kv")).eval()
    x_f, u = torch.randn(2, 3, 4), torch.randn(2, 1, 4)
    layer = fusion.layers[0]
    with torch.no_grad():
        t = x_f + layer.attn.o_proj(layer.attn.v_proj(layer.norm_kv(u)))
        t = t + layer.ffn(t)
        torch.testing.assert_close(fusion(x_f, u), t.mean(1))


def test_decoder_matches_algorithm_2():
    torch.manual_seed(0)
    cfg = _small_cfg(n_decoder_layers=2)
    dec = CausalDecoder(cfg).eval()
    e_p = torch.randn(3, 5, 4)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()  # M of eq. 5: position i sees j <= i
    with torch.no_grad():
        h = e_p + dec.pos.weight[:5]
        for layer in dec.layers:
            a = _ln(h, layer.norm)
            h = h + _mha(a, a, layer.attn, cfg.n_heads, cfg.d_head, mask)
            h = h + _ffn(h, layer.ffn)
        ref = _ln(h, dec.norm)
        torch.testing.assert_close(dec(e_p), ref, rtol=1e-5, atol=1e-5)
        # fully visible (HL) mode: no causal mask, only key padding
        dec_hl = CausalDecoder(dataclasses.replace(cfg, causal=False)).eval()
        dec_hl.load_state_dict(dec.state_dict())
        valid = torch.ones(3, 5, dtype=torch.bool)
        assert not torch.allclose(dec_hl(e_p, valid)[:, 0], dec(e_p)[:, 0])
        with pytest.raises(ValueError, match="key_valid"):
            dec_hl(e_p)


def test_engagement_skip_starts_at_the_causal_trivial_predictor(split, spec):
    """With ``engagement_skip`` the untrained model's logit is exactly logit(clip(observed)) where a
    complete label is known and 0 elsewhere (zero head), so it ranks like the trivial predictor;
    gradients reach the tower and the skip weight."""
    model = _make("content", spec, use_counters=True, engagement_skip=True)
    batch = _batch(split, 2)
    logits = model(batch)
    y = batch.observed
    want = torch.where(y >= 0, torch.logit(y.clamp(0.01, 0.99)), torch.zeros_like(y))
    assert torch.equal(logits, want)
    assert (y < 0).any() and (y >= 0).any()  # the fixture has rooms' first segments and later ones
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels, weight=batch.label_mask.float())
    loss.backward()
    assert model.skip.weight.grad is not None and model.skip.weight.grad != 0
    assert model.tower.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="use_counters"):
        ContentConfig(engagement_skip=True)


def test_engagement_token_reads_only_counters_known_at_scoring_time(split, spec):
    """The engagement token reads the eight ContentCTR 4.3.2 counters; n_viewers and n_long_viewers
    (whose ratio is the segment's LVTR, complete only two segments later) never reach the model."""
    from kuaihl_rec.data.schema import COUNTER_COLUMNS

    model = _make("content", spec, use_counters=True)
    model.eval()
    batch = _batch(split, 2)
    with torch.no_grad():
        base = model(batch)
        for column, reaches in (("n_long_viewers", False), ("n_viewers", False), ("n_clicks", True), ("n_exits", True)):
            bumped = batch.counters.clone()
            bumped[..., COUNTER_COLUMNS.index(column)] += 1000.0
            out = model(_replace(batch, counters=bumped))
            assert torch.equal(out, base) != reaches, column
        # the hour of day and the position in the room reach it too (what the ID models read)
        assert not torch.equal(model(_replace(batch, timestamp=batch.timestamp + 3 * 3600)), base)
        assert not torch.equal(model(_replace(batch, segment=batch.segment + 50)), base)
        assert torch.equal(model(_replace(batch, timestamp=batch.timestamp + 86_400)), base)  # a day later: same hour
