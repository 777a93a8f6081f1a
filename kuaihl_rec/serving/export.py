"""``kuaihl export RUN --out DIR``: the inference path as ``torch.export`` programs.

Writes into ``DIR``::

    score_windows.pt2          ContentInference.forward: full windows of raw features and RAW
                               streamer ids -> (score [b], known [b]); batch size b dynamic,
                               windows always ``window`` positions wide (right-padded; ``lengths``
                               says how many are real)
    encode_segments.pt2        the streaming halves (what StreamingScorer runs):
    decode_windows.pt2           segments -> (E_p [B, d], known [B]);  cached windows -> logit [b]
    score_windows.aoti.pt2     score_windows compiled ahead of time with AOTInductor (where the
                               compiler works on this machine; manifest "aoti" says what happened)
    vocab.npz                  the streamer vocabulary (also inside the programs, as a buffer)
    example.pt                 example inputs and the eager model's outputs, for a self-check
    manifest.json              model, run, fingerprint, versions, every program's inputs and
                               outputs (names, dtypes, shapes with "b" / "n" symbols), label
                               delay, window, file SHA-256

Loading needs plain ``torch`` only (no import of this project)::

    import torch
    program = torch.export.load("DIR/score_windows.pt2").module()
    score, known = program(visual, text, counters, observed, timestamp, segment, streamer_id, lengths)

    aoti = torch._inductor.aoti_load_package("DIR/score_windows.aoti.pt2")
    score, known = aoti(visual, text, counters, observed, timestamp, segment, streamer_id, lengths)

Before writing the manifest, every program is loaded back and run on the example inputs; its
outputs must equal the eager module's to 1e-5, or the export fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from kuaihl_rec.data.io import atomic_write_json
from kuaihl_rec.serving.inference import INPUT_NAMES, OUTPUT_NAMES, ContentInference, load_inference

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "kuaihl-export"
EXPORT_VERSION = 1
TOLERANCE = 1e-5


class EncodeSegments(nn.Module):
    """Export wrapper: segments with raw streamer ids -> (E_p ``[B, d]``, known ``[B]``)."""

    def __init__(self, inference: ContentInference) -> None:
        super().__init__()
        self.inference = inference

    def forward(self, visual: Tensor, text: Tensor, counters: Tensor, observed: Tensor, timestamp: Tensor, segment: Tensor, streamer_id: Tensor) -> Tuple[Tensor, Tensor]:
        rows, known = self.inference.lookup(streamer_id)
        return self.inference.encode_segments(visual, text, counters, observed, timestamp, segment, rows), known


class DecodeWindows(nn.Module):
    """Export wrapper: cached windows ``e_p [b, n, d]``, ``lengths [b]``, ``observed_last [b]`` -> logit ``[b]``."""

    def __init__(self, inference: ContentInference) -> None:
        super().__init__()
        self.inference = inference

    def forward(self, e_p: Tensor, lengths: Tensor, observed_last: Tensor) -> Tensor:
        return self.inference.decode_logits(e_p, lengths, observed_last)


def example_inputs(inference: ContentInference, b: int = 3, n: Optional[int] = None, seed: int = 0) -> Dict[str, Tensor]:
    """Random but valid inputs of :meth:`ContentInference.forward` (known and unknown streamers, short windows)."""
    g = torch.Generator().manual_seed(seed)
    s = inference.spec
    n = n or inference.window
    vocab = getattr(inference.id_lookup, "raw", None)  # VocabLookup; another lookup: any ids
    vocab = vocab.cpu() if vocab is not None else torch.arange(1, 1000)
    ids = vocab[torch.randint(len(vocab), (b,), generator=g)].clone()
    ids[0] = int(vocab.max()) + 12345  # a cold-start streamer (for a vocabulary)
    lengths = torch.randint(1, n + 1, (b,), generator=g)
    lengths[-1] = n
    segment = torch.arange(n)[None, :].expand(b, n).clone() + torch.randint(0, 50, (b, 1), generator=g)
    observed = torch.rand(b, n, generator=g)
    observed[:, :2] = -1.0
    return {
        "visual": torch.randn(b, n, s.visual_tokens, s.visual_dim, generator=g),
        "text": torch.randn(b, n, s.text_dim, generator=g),
        "counters": torch.randint(0, 500, (b, n, s.n_counters), generator=g).float(),
        "observed": observed,
        "timestamp": 1_700_000_000 + 30 * segment,
        "segment": segment,
        "streamer_id": ids,
        "lengths": lengths,
    }


def _dtype_name(t: Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _describe(names: List[str], tensors: List[Tensor], dims: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for name, t in zip(names, tensors):
        symbolic = dims.get(name, {})
        shape = [symbolic.get(i, int(size)) for i, size in enumerate(t.shape)]
        out.append({"name": name, "dtype": _dtype_name(t), "shape": shape})
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _max_diff(a: Any, b: Any) -> float:
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def _export(module: nn.Module, args: Tuple[Tensor, ...], dynamic: Dict[str, Dict[int, Any]], names: Tuple[str, ...]):
    from torch.export import export

    dynamic_shapes = {name: dynamic.get(name) for name in names}
    return export(module, args, dynamic_shapes=dynamic_shapes, strict=False)


def export_run(run_dir: Path, out_dir: Path, aoti: bool = True) -> Dict[str, Any]:
    """Export the inference path of ``run_dir`` into ``out_dir`` (see the module docstring); returns the manifest."""
    from torch.export import Dim

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    inference = load_inference(run_dir)
    if (out_dir / "manifest.json").exists():
        old = json.loads((out_dir / "manifest.json").read_text())
        if old.get("model_fingerprint") != inference.fingerprint():
            raise FileExistsError(f"{out_dir}: holds the export of another model ({old.get('run')}); use another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    n = inference.window
    batch = Dim("b", min=1, max=1 << 24)
    programs: Dict[str, Any] = {}
    checks: Dict[str, float] = {}
    t0 = time.perf_counter()

    # full windows
    ex = example_inputs(inference, b=3, n=n)
    args = tuple(ex[k] for k in INPUT_NAMES)
    dims = {k: {0: batch} for k in ("visual", "text", "counters", "observed", "timestamp", "segment")}
    dims |= {"streamer_id": {0: batch}, "lengths": {0: batch}}
    with torch.no_grad():
        expected = inference(*args)
    ep = _export(inference, args, dims, INPUT_NAMES)
    path = out_dir / "score_windows.pt2"
    torch.export.save(ep, str(path))
    programs["score_windows"] = {"file": path.name, "inputs": _describe(list(INPUT_NAMES), list(args), _symbols(dims)),
                                 "outputs": [{"name": "score", "dtype": "float32", "shape": ["b"]}, {"name": "known", "dtype": "bool", "shape": ["b"]}]}

    # streaming halves
    enc = EncodeSegments(inference).eval()
    enc_names = ("visual", "text", "counters", "observed", "timestamp", "segment", "streamer_id")
    enc_args = tuple(ex[k][:, 0] if k != "streamer_id" else ex[k] for k in enc_names)
    enc_dims = {k: {0: batch} for k in enc_names}
    with torch.no_grad():
        enc_expected = enc(*enc_args)
    enc_ep = _export(enc, enc_args, enc_dims, enc_names)
    enc_path = out_dir / "encode_segments.pt2"
    torch.export.save(enc_ep, str(enc_path))
    programs["encode_segments"] = {"file": enc_path.name, "inputs": _describe(list(enc_names), list(enc_args), _symbols(enc_dims)),
                                   "outputs": [{"name": "e_p", "dtype": "float32", "shape": ["b", inference.d]}, {"name": "known", "dtype": "bool", "shape": ["b"]}]}
    dec = DecodeWindows(inference).eval()
    g = torch.Generator().manual_seed(1)
    dec_names = ("e_p", "lengths", "observed_last")
    dec_args = (torch.randn(3, n, inference.d, generator=g), ex["lengths"], ex["observed"][:, -1].contiguous())
    dec_dims = {"e_p": {0: batch}, "lengths": {0: batch}, "observed_last": {0: batch}}
    with torch.no_grad():
        dec_expected = dec(*dec_args)
    dec_ep = _export(dec, dec_args, dec_dims, dec_names)
    dec_path = out_dir / "decode_windows.pt2"
    torch.export.save(dec_ep, str(dec_path))
    programs["decode_windows"] = {"file": dec_path.name, "inputs": _describe(list(dec_names), list(dec_args), _symbols(dec_dims)),
                                  "outputs": [{"name": "logit", "dtype": "float32", "shape": ["b"]}]}
    logger.info("exported 3 programs in %.1f s", time.perf_counter() - t0)

    # load back and check (a second batch size too: the batch dimension is really dynamic)
    ex2 = example_inputs(inference, b=5, n=n, seed=7)
    args2 = tuple(ex2[k] for k in INPUT_NAMES)
    with torch.no_grad():
        expected2 = inference(*args2)
        loaded = torch.export.load(str(path)).module()
        checks["score_windows"] = max(_max_diff(loaded(*args), expected), _max_diff(loaded(*args2), expected2))
        checks["encode_segments"] = _max_diff(torch.export.load(str(enc_path)).module()(*enc_args), enc_expected)
        checks["decode_windows"] = _max_diff(torch.export.load(str(dec_path)).module()(*dec_args), dec_expected)

    aoti_info = _compile_aoti(ep, out_dir, args, expected, args2, expected2) if aoti else {"status": "skipped (--no-aoti)"}
    if "max_abs_diff" in aoti_info:
        checks["score_windows.aoti"] = aoti_info["max_abs_diff"]
    bad = {k: v for k, v in checks.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"exported program(s) disagree with the eager model beyond {TOLERANCE}: {bad}")

    files = [p["file"] for p in programs.values()] + ["example.pt"]
    if hasattr(inference.id_lookup, "raw"):
        np.savez(out_dir / "vocab.npz", streamer=inference.id_lookup.raw.cpu().numpy())
        files.append("vocab.npz")
    torch.save({"inputs": ex, "score": expected[0], "known": expected[1]}, out_dir / "example.pt")
    files += [aoti_info["file"]] if "file" in aoti_info else []
    manifest = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "run": str(run_dir.resolve()),
        "model": inference.model_name,
        "model_fingerprint": inference.fingerprint(),
        "config": _asdict(inference.config),
        "window": n,
        "label_delay": inference.label_delay,
        "reads": list(inference.reads),
        "score": "sigmoid(logit): predicted label of the segment after each window's newest segment (position lengths - 1)",
        "observed": f"label of segment t - {inference.label_delay} at segment t, -1 when the room has none yet",
        "counters_order": list(_counter_columns()),
        "unknown_streamer": "ids not in vocab.npz read the cold-start row 0; output 'known' is False for them",
        "programs": programs,
        "aoti": aoti_info,
        "check_max_abs_diff": checks,
        "versions": _versions(),
        "sha256": {f: _sha256(out_dir / f) for f in files},
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def _symbols(dims: Dict[str, Dict[int, Any]]) -> Dict[str, Dict[int, str]]:
    return {k: {i: d.__name__ for i, d in v.items()} for k, v in dims.items()}


def _compile_aoti(ep, out_dir: Path, args, expected, args2, expected2) -> Dict[str, Any]:
    """AOTInductor package of the full-window program; a failure is recorded, not raised."""
    path = out_dir / "score_windows.aoti.pt2"
    t0 = time.perf_counter()
    try:
        from torch._inductor import aoti_compile_and_package, aoti_load_package

        aoti_compile_and_package(ep, package_path=str(path))
        runner = aoti_load_package(str(path))
        with torch.no_grad():
            diff = max(_max_diff(runner(*args), expected), _max_diff(runner(*args2), expected2))
    except Exception as exc:  # the compiler needs a working C++ toolchain; say why it did not work
        logger.warning("AOTInductor compilation failed (%s: %s); the torch.export programs are still written", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        if path.exists():
            path.unlink()
        return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return {"status": "ok", "file": path.name, "compile_seconds": round(time.perf_counter() - t0, 1), "max_abs_diff": diff}


def _asdict(config: Any) -> Dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def _counter_columns():
    from kuaihl_rec.data.schema import COUNTER_COLUMNS

    return COUNTER_COLUMNS


def _versions() -> Dict[str, str]:
    from kuaihl_rec.train.loop import versions

    return versions()
