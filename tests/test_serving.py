"""Serving: plain-tensor inference, streaming scorer, replay, export (kuaihl_rec.serving).

Parity is checked against ``kuaihl eval --predictions`` on trained runs of the tiny world (the
papers' configuration and the engagement-token configuration with its skip path), and the
streaming path against full windows for every servable fusion variant (random weights).
"""

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
import torch

from kuaihl_rec.data.batch import BatchSpec
from kuaihl_rec.model import create_model
from kuaihl_rec.serving import ClosedSegments, ContentInference, NotServable, ServingInputError, StreamingScorer, load_inference
from kuaihl_rec.serving.export import example_inputs
from kuaihl_rec.serving.inference import INPUT_NAMES

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TOL = 1e-5

CONFIGS = {
    "paper": {},  # the papers' inputs and loss
    "engagement": {"loss": "point", "model": {"overrides": {"use_counters": True, "engagement_skip": True}}},
    # ours (README): engagement token, pointwise loss, id dropout into the unknown streamer row
    "ours": {"loss": "point", "model": {"overrides": {"use_counters": True, "id_dropout": 0.2}}},
}


@pytest.fixture(scope="module")
def runs(tiny_world, tmp_path_factory):
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.loop import train

    out = {}
    for name, changes in CONFIGS.items():
        run = tmp_path_factory.mktemp(f"run_{name}")
        train(tiny_world, run, train_config("tiny", epochs=1, **changes), progress=False)
        out[name] = run
    return out


@pytest.fixture(scope="module")
def eval_predictions(runs, tiny_world, tmp_path_factory):
    from kuaihl_rec.train.evaluate import evaluate_run

    out = {}
    for name, run in runs.items():
        path = tmp_path_factory.mktemp(f"eval_{name}") / "p.parquet"
        evaluate_run(run, tiny_world, "test", predictions_out=path, progress=False)
        out[name] = pq.read_table(path).to_pandas()
    return out


@pytest.fixture(scope="module")
def replays(runs, tiny_world, tmp_path_factory):
    from kuaihl_rec.serving.replay import replay

    out = {}
    for name, run in runs.items():
        d = tmp_path_factory.mktemp(f"replay_{name}")
        summary = replay(run, tiny_world, d / "out", progress=False)
        out[name] = (summary, pq.read_table(d / "out" / "predictions.parquet").to_pandas())
    return out


# ------------------------------------------------------------------------------ parity with eval


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_streaming_replay_equals_eval_predictions(config, eval_predictions, replays, runs):
    ev = eval_predictions[config]
    summary, rp = replays[config]
    merged = ev.merge(rp, on=["live_id", "segment"], how="left", suffixes=("_eval", "_stream"))
    assert merged["score_stream"].notna().all(), "a segment kuaihl eval scores is missing from the replay"
    assert np.abs(merged["score_eval"] - merged["score_stream"]).max() <= TOL
    assert (merged["label_eval"] == merged["label_stream"]).all()
    # the rows eval scores are exactly the replay's rows that pass the viewer filter
    assert len(ev) == int(rp["label_mask"].sum())
    # the hard cases are in there: first targets (segment 1), windows shorter than n, cold starts
    window = json.loads((runs[config] / "config.json").read_text())["window"]["window"]
    assert (merged["segment"] == 1).any()
    assert (merged["segment"] < window).sum() > 0 and (merged["segment"] > window).sum() > 0
    assert (~merged["known_streamer"]).sum() > 0
    assert summary["scorer"]["rooms_unknown_streamer"] > 0
    assert summary["scorer"]["rooms_started"] == summary["scorer"]["rooms_ended"]


def _full_windows(tiny_world, run, ev):
    """Inputs of ContentInference.forward for every eval target (the window ending just before it)."""
    from kuaihl_rec.data.windows import WindowConfig
    from kuaihl_rec.serving.replay import plan_replay

    inference = load_inference(run)
    wcfg = WindowConfig.from_dict(json.loads((run / "config.json").read_text())["window"])
    plan = plan_replay(tiny_world, wcfg, "test", inference.label_delay)
    a, n = plan.arr, inference.window
    key = a.live_id * 100_000 + a.segment
    target_rows = np.searchsorted(key, ev["live_id"].to_numpy() * 100_000 + ev["segment"].to_numpy())
    last = target_rows - 1  # the content segment t = u - 1
    lengths = np.minimum(a.segment[last] + 1, n)
    pos = np.arange(n)
    rows = np.where(pos[None, :] < lengths[:, None], last[:, None] - lengths[:, None] + 1 + pos[None, :], last[:, None])
    k = a.sizes
    return {
        "visual": torch.from_numpy(a.visual[rows].reshape(len(rows), n, k.visual_tokens, k.visual_dim)),
        "text": torch.from_numpy(a.text[rows]),
        "counters": torch.from_numpy(a.counters[rows]),
        "observed": torch.from_numpy(plan.observed[rows]),
        "timestamp": torch.from_numpy(a.timestamp[rows]),
        "segment": torch.from_numpy(a.segment[rows]),
        "streamer_id": torch.from_numpy(a.streamer_id[last]),
        "lengths": torch.from_numpy(lengths.astype(np.int64)),
    }


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_exported_program_in_plain_torch_equals_eval(config, runs, eval_predictions, tiny_world, tmp_path):
    from kuaihl_rec.serving.export import export_run

    run, ev = runs[config], eval_predictions[config]
    manifest = export_run(run, tmp_path / "export", aoti=False)
    assert manifest["aoti"]["status"].startswith("skipped")
    inputs = _full_windows(tiny_world, run, ev)
    torch.save(inputs, tmp_path / "inputs.pt")
    code = f"""
        import sys, torch
        program = torch.export.load(r"{tmp_path / 'export' / 'score_windows.pt2'}").module()
        x = torch.load(r"{tmp_path / 'inputs.pt'}")
        with torch.no_grad():
            score, known = program(*[x[k] for k in {list(INPUT_NAMES)!r}])
        torch.save({{"score": score, "known": known}}, r"{tmp_path / 'out.pt'}")
        ours = [m for m in sys.modules if m.split(".")[0] in ("kuaihl_rec", "baselines", "ranking")]
        assert not ours, ours
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**ENV, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert np.abs(got["score"].double().numpy() - ev["score"].to_numpy()).max() <= TOL
    vocab = np.load(run / "vocab.npz")["streamer"]
    assert (got["known"].numpy() == np.isin(ev["streamer_id"].to_numpy(), vocab)).all()
    # the manifest describes what was written
    assert manifest["window"] == json.loads((run / "config.json").read_text())["window"]["window"]
    assert [i["name"] for i in manifest["programs"]["score_windows"]["inputs"]] == list(INPUT_NAMES)
    assert manifest["programs"]["score_windows"]["inputs"][0]["shape"][0] == "b"
    for name in ("encode_segments", "decode_windows"):
        assert (tmp_path / "export" / manifest["programs"][name]["file"]).exists()


# ------------------------------------------------------------------------------ streaming vs full windows


SPEC = BatchSpec(visual_tokens=2, visual_dim=6, text_dim=5, num_streamers=4, num_lives=2, n_counters=10, window=6)
VOCAB = np.array([11, 22, 33], np.int64)
VARIANTS = {
    "content": {},
    "content_engagement_skip": {"use_counters": True, "engagement_skip": True},
    "self_attention_plain": {},
    "self_attention_input": {},
    "cross_attention_q": {},
    "cross_attention_kv": {"id_dim": 4},
    "content_no_id": {},
    "content_no_text": {"use_counters": True},
}


def _inference(name: str, seed: int = 0, **overrides) -> ContentInference:
    torch.manual_seed(seed)
    model_name = name if name in ("self_attention_plain", "self_attention_input", "cross_attention_q", "cross_attention_kv", "content_no_id", "content_no_text") else "content"
    model = create_model(model_name, SPEC, preset="small", d=16, n_heads=2, d_head=8, n_perceiver_layers=2, n_decoder_layers=2, **{**VARIANTS.get(name, {}), **overrides})
    return ContentInference(model.eval(), VOCAB, label_delay=2, model_name=model_name)


class Room:
    """A synthetic room: its segments' features, to feed tick by tick and as full windows."""

    def __init__(self, live: int, streamer: int, length: int, rng: np.random.Generator, start: int = 0) -> None:
        self.live, self.streamer, self.start = live, streamer, start
        self.visual = rng.normal(size=(length, SPEC.visual_tokens, SPEC.visual_dim)).astype(np.float32)
        self.text = rng.normal(size=(length, SPEC.text_dim)).astype(np.float32)
        self.counters = rng.integers(0, 300, size=(length, 10)).astype(np.float32)
        self.observed = np.where(np.arange(length) < 2, -1.0, rng.uniform(size=length)).astype(np.float32)

    def records(self, rooms_at):
        """ClosedSegments of the given (room, index) pairs."""
        return ClosedSegments(
            live_id=[r.live for r, _ in rooms_at], streamer_id=[r.streamer for r, _ in rooms_at],
            segment=[r.start + i for r, i in rooms_at], timestamp=[1_700_000_000 + 30 * (r.start + i) for r, i in rooms_at],
            visual=np.stack([r.visual[i] for r, i in rooms_at]), text=np.stack([r.text[i] for r, i in rooms_at]),
            counters=np.stack([r.counters[i] for r, i in rooms_at]), observed=np.array([r.observed[i] for r, i in rooms_at]),
        )

    def window_logit(self, inference: ContentInference, i: int) -> float:
        n = inference.window
        lo = max(0, i + 1 - n)
        length = i + 1 - lo
        pad = n - length

        def win(x):
            w = x[lo : i + 1]
            return torch.from_numpy(np.concatenate([w, np.repeat(w[-1:] * 0 + 7.0, pad, axis=0)])[None])  # padding: garbage

        seg = torch.from_numpy(np.r_[np.arange(self.start + lo, self.start + i + 1), np.full(pad, 999)][None].astype(np.int64))
        rows, _ = inference.lookup(torch.tensor([self.streamer]))
        with torch.no_grad():
            return float(inference.window_logits(win(self.visual), win(self.text), win(self.counters), win(self.observed), 1_700_000_000 + 30 * seg, seg, rows, torch.tensor([length]))[0])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_streaming_equals_full_windows_for_every_servable_variant(variant):
    inference = _inference(variant)
    rng = np.random.default_rng(1)
    rooms = [Room(100 + j, [11, 22, 33, 99][j % 4], length, rng) for j, length in enumerate([3, 9, 14, 1, 6])]
    rooms.append(Room(200, 22, 8, rng, start=40))  # joins mid-stream
    scorer = StreamingScorer(inference, max_batch=3, initial_capacity=2)  # chunks and growth exercised
    horizon = max(len(r.text) for r in rooms) + 2  # the latest room starts at tick 2
    for tick in range(horizon):
        # rooms start at different ticks: room j starts at tick j % 3
        active = [(r, tick - j % 3) for j, r in enumerate(rooms) if 0 <= tick - j % 3 < len(r.text)]
        if not active:
            continue
        out = scorer.tick(rooms[0].records(active))
        for (room, i), logit, seg in zip(active, out.logit, out.segment):
            assert seg == room.start + i + 1
            assert abs(logit - room.window_logit(inference, i)) <= TOL, (variant, room.live, i)
        scorer.end_rooms([r.live for r, i in active if i == len(r.text) - 1])
    assert scorer.rooms == 0
    assert scorer.stats["rooms_joined_mid_stream"] == 1
    assert scorer.stats["rooms_unknown_streamer"] == 1  # streamer 99 (room 103) is not in VOCAB


def test_decoder_last_position_equals_full_decoder_and_ignores_padding():
    inference = _inference("content")
    tower = inference.model.tower
    g = torch.Generator().manual_seed(0)
    e_p = torch.randn(7, SPEC.window, 16, generator=g)
    last = torch.tensor([0, 1, 2, 3, 4, 5, 5])
    with torch.no_grad():
        full = tower.decode(e_p, torch.ones(7, SPEC.window, dtype=torch.bool))
        fast = tower.decode_last(e_p, last)
        assert torch.allclose(fast, full[torch.arange(7), last], atol=1e-6)
        noisy = e_p.clone()
        for w, lst in enumerate(last.tolist()):
            noisy[w, lst + 1 :] = 1e3  # the future / padding
        assert torch.equal(tower.decode_last(noisy, last), fast)


def test_fx_traceable_model_and_inference_module():
    import torchrec.fx

    inference = _inference("content_engagement_skip")
    ex = example_inputs(inference, b=4)
    args = [ex[k] for k in INPUT_NAMES]
    traced = torch.fx.symbolic_trace(inference)
    with torch.no_grad():
        assert torch.equal(traced(*args)[0], inference(*args)[0])
    traced_model = torchrec.fx.symbolic_trace(inference.model)  # the training module on LiveBatch
    assert "forward" in traced_model.code


# ------------------------------------------------------------------------------ ids, bad input, life cycle


def test_raw_ids_map_through_the_saved_vocabulary():
    inference = _inference("content")
    rows, known = inference.lookup(torch.tensor([22, 5, 33, 11, 34, -7, 2**62 + 11]))
    assert rows.tolist() == [2, 0, 3, 1, 0, 0, 0]
    assert known.tolist() == [True, False, True, True, False, False, False]


def _one(room: Room, i: int, **changes):
    rec = room.records([(room, i)])
    return ClosedSegments(**{**rec.__dict__, **changes})


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(visual=np.zeros((1, 2, 7), np.float32)), "visual: expected shape [1, 2, 6]"),
        (dict(text=np.zeros((1, 4), np.float32)), "text: expected shape [1, 5]"),
        (dict(text=np.full((1, 5), np.nan, np.float32)), "text: 5 non-finite"),
        (dict(visual=np.full((1, 2, 6), np.inf, np.float32)), "visual: 12 non-finite"),
        (dict(counters=np.zeros((1, 9), np.float32)), "counters: expected shape [1, 10]"),
        (dict(counters=-np.ones((1, 10), np.float32)), "counters: negative"),
        (dict(observed=np.array([1.5], np.float32)), "observed: row 0"),
        (dict(streamer_id=np.array([1.0])), "streamer_id: expected integer ids"),
        (dict(segment=np.array([-1])), "segment: row 0"),
        (dict(live_id=np.array([[100]])), "live_id: expected shape [m]"),
        (dict(counters=None), "counters: this model reads the counters"),
    ],
)
def test_bad_tick_input_is_refused_with_the_field(change, field):
    inference = _inference("content_engagement_skip")
    scorer = StreamingScorer(inference)
    room = Room(100, 11, 5, np.random.default_rng(0))
    with pytest.raises(ServingInputError, match=field.replace("[", r"\[").replace("]", r"\]")):
        scorer.tick(_one(room, 0, **change))
    assert scorer.rooms == 0 and scorer.stats["ticks"] == 0  # nothing happened


def test_sequence_errors_and_a_failed_tick_changes_nothing():
    inference = _inference("content")
    rng = np.random.default_rng(0)
    room, other = Room(100, 11, 6, rng), Room(101, 22, 6, rng)
    scorer, reference = StreamingScorer(inference), StreamingScorer(inference)
    for s in (scorer, reference):
        s.tick(room.records([(room, 0), (other, 0)]))
        s.tick(room.records([(room, 1), (other, 1)]))
    with pytest.raises(ServingInputError, match="segment: room 100 brought segment 1, expected 2.*goes backwards"):
        scorer.tick(room.records([(other, 2), (room, 1)]))
    with pytest.raises(ServingInputError, match="segment: room 100 brought segment 3, expected 2.*skips"):
        scorer.tick(room.records([(other, 2), (room, 3)]))
    with pytest.raises(ServingInputError, match="live_id: room 100 appears 2 times"):
        scorer.tick(room.records([(room, 2), (room, 2)]))
    with pytest.raises(ServingInputError, match="streamer_id: room 100 started with streamer 11, got 22"):
        scorer.tick(_one(room, 2, streamer_id=[22]))
    a = scorer.tick(room.records([(room, 2), (other, 2)]))
    b = reference.tick(room.records([(room, 2), (other, 2)]))
    assert np.array_equal(a.logit, b.logit)  # the refused ticks left no trace
    assert scorer.end_rooms([100, 12345]) == 1
    with pytest.raises(ServingInputError, match="live_id: room 100 was evicted"):
        scorer.tick(room.records([(room, 3)]))


def test_idle_rooms_are_evicted_and_memory_per_room_is_stated():
    inference = _inference("content")
    rng = np.random.default_rng(0)
    rooms = [Room(100 + j, 11, 10, rng) for j in range(3)]
    scorer = StreamingScorer(inference, idle_ticks=2, max_rooms=3)
    scorer.tick(rooms[0].records([(r, 0) for r in rooms]))
    for i in range(1, 4):
        scorer.tick(rooms[0].records([(rooms[0], i)]))
    assert scorer.live_ids().tolist() == [100]
    assert scorer.stats["rooms_idle_evicted"] == 2
    assert scorer.bytes_per_room == SPEC.window * 16 * 4 + 8 * 6 + 1 + 16
    with pytest.raises(ServingInputError, match="max_rooms = 3"):
        scorer.tick(rooms[0].records([(Room(300 + j, 11, 2, rng), 0) for j in range(3)]))


def test_state_restored_in_a_fresh_scorer_continues_identically(tmp_path):
    inference = _inference("content_engagement_skip")
    rng = np.random.default_rng(3)
    rooms = [Room(100 + j, [11, 22, 99][j % 3], 12, rng) for j in range(4)]
    ticks = [[(r, i) for r in rooms] for i in range(12)]
    straight = StreamingScorer(inference)
    expected = [straight.tick(rooms[0].records(t)).logit for t in ticks]
    first = StreamingScorer(inference)
    for t in ticks[:7]:
        first.tick(rooms[0].records(t))
    first.end_rooms([103])
    first.save(tmp_path / "state.pt", extra={"note": "mid"})
    second = StreamingScorer(_inference("content_engagement_skip"))  # a new model object, same weights
    assert second.restore(tmp_path / "state.pt") == {"note": "mid"}
    assert second.rooms == 3 and second.stats["ticks"] == 7
    for t, want in zip(ticks[7:], expected[7:]):
        got = second.tick(rooms[0].records([p for p in t if p[0].live != 103]))
        assert np.array_equal(got.logit, want[:3])
    other = StreamingScorer(_inference("content_engagement_skip", seed=5))
    with pytest.raises(ValueError, match="written by model"):
        other.restore(tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a state")
    with pytest.raises(ValueError, match="unreadable scorer state"):
        other.restore(tmp_path / "junk.pt")


def test_models_without_a_streaming_path_are_refused():
    hl = create_model("content_hl", SPEC, preset="small", d=16, n_heads=2, d_head=8)
    with pytest.raises(NotServable, match="fully visible"):
        ContentInference(hl, VOCAB)
    dcn = create_model("dcn_m", SPEC)
    with pytest.raises(NotServable, match="not a content model"):
        ContentInference(dcn, VOCAB)


# ------------------------------------------------------------------------------ command line


def _kuaihl(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "kuaihl_rec.apps.cli", *map(str, args)], env=ENV, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.slow
def test_replay_restart_in_a_new_process_gives_identical_scores(runs, tiny_world, tmp_path):
    run = runs["engagement"]
    whole = _kuaihl("replay", run, "--world", tiny_world, "--out", tmp_path / "whole", "-q")
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "cut"
    first = _kuaihl("replay", run, "--world", tiny_world, "--out", out, "--stop-after-ticks", 60, "-q")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "stopped after tick 60" in first.stdout and (out / "replay_state.pt").exists()
    second = _kuaihl("replay", run, "--world", tiny_world, "--out", out, "--resume", "-q")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "rooms scored per second" in second.stdout and "p99" in second.stdout
    straight = pq.read_table(tmp_path / "whole" / "predictions.parquet").to_pandas()
    resumed = pq.read_table(out / "predictions.parquet").to_pandas()
    assert resumed.equals(straight)
    assert not (out / "replay_state.pt").exists()
    # a directory belongs to one replay; a state of another run is refused
    again = _kuaihl("replay", run, "--world", tiny_world, "--out", out, "-q")
    assert again.returncode == 1 and "holds an earlier replay" in again.stderr
    cut2 = tmp_path / "cut2"
    assert _kuaihl("replay", run, "--world", tiny_world, "--out", cut2, "--stop-after-ticks", 5, "-q").returncode == 0
    other = _kuaihl("replay", runs["paper"], "--world", tiny_world, "--out", cut2, "--resume", "-q")
    assert other.returncode == 1 and "replay_state.pt" in other.stderr and "Traceback" not in other.stderr


def test_replay_predictions_are_a_ranking_term_source(replays):
    from ranking.scores import ScoreTable

    summary, table = replays["paper"]
    scores = ScoreTable.read(summary["predictions"], name="content")
    assert np.allclose(scores.lookup(table["live_id"].to_numpy(), table["segment"].to_numpy()), table["score"].to_numpy())


@pytest.mark.slow
def test_export_command_with_aoti(runs, tmp_path):
    out = _kuaihl("export", runs["engagement"], "--out", tmp_path / "exp", "-q")
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert "manifest:" in out.stdout
    if manifest["aoti"]["status"] == "ok":
        assert manifest["aoti"]["max_abs_diff"] <= TOL
        code = f"""
            import torch
            x = torch.load(r"{tmp_path / 'exp' / 'example.pt'}")
            run = torch._inductor.aoti_load_package(r"{tmp_path / 'exp' / 'score_windows.aoti.pt2'}")
            score, known = run(*[x["inputs"][k] for k in {list(INPUT_NAMES)!r}])
            assert (score - x["score"]).abs().max() <= 1e-5 and torch.equal(known, x["known"])
        """
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**ENV, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
    else:  # where the compiler does not work, the manifest must say why
        assert manifest["aoti"]["status"] == "failed" and manifest["aoti"]["error"]
    for name, digest in manifest["sha256"].items():
        import hashlib

        assert hashlib.sha256((tmp_path / "exp" / name).read_bytes()).hexdigest() == digest
    # another model's export in the same directory is refused
    clash = _kuaihl("export", runs["paper"], "--out", tmp_path / "exp", "--no-aoti", "-q")
    assert clash.returncode == 1 and "holds the export of another model" in clash.stderr


class ModuloLookup(torch.nn.Module):
    """A stand-in for a hashed id space: row = 1 + raw mod 3 for every id (all 'known')."""

    def forward(self, raw):
        return 1 + torch.remainder(raw, 3), torch.ones_like(raw, dtype=torch.bool)


def test_a_custom_id_lookup_replaces_the_vocabulary():
    torch.manual_seed(0)
    model = create_model("content", SPEC, preset="small", d=16, n_heads=2, d_head=8).eval()
    inference = ContentInference(model, lookup=ModuloLookup())
    rows, known = inference.lookup(torch.tensor([10**15 + 1, 5]))
    assert rows.tolist() == [1 + (10**15 + 1) % 3, 3] and known.all()
    rng = np.random.default_rng(0)
    room = Room(100, 10**15 + 1, 4, rng)
    scorer = StreamingScorer(inference)
    for i in range(4):
        out = scorer.tick(room.records([(room, i)]))
        assert abs(out.logit[0] - room.window_logit(inference, i)) <= TOL
    assert scorer.stats["rooms_unknown_streamer"] == 0
    with pytest.raises(ValueError, match="exactly one of streamer_vocab"):
        ContentInference(model, VOCAB, lookup=ModuloLookup())
