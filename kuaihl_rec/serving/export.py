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
from kuaihl_rec.data.schema import COUNTER_COLUMNS
from kuaihl_rec.serving.inference import INPUT_NAMES, ContentInference, load_inference
from kuaihl_rec.train.loop import versions

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "kuaihl-export"
EXPORT_VERSION = 1
TOLERANCE = 1e-5


class EncodeSegments(nn.Module):
    """Export wrapper: segments with raw streamer ids -> (E_p ``[B, d]``, known ``[B]``)."""

    def __init__(self, inference: ContentInference) -> None:
        super().__init__()
        self.inference = inference

    def forward(
        self,
        visual: Tensor,
        text: Tensor,
        counters: Tensor,
        observed: Tensor,
        timestamp: Tensor,
        segment: Tensor,
        streamer_id: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        rows, known = self.inference.lookup(streamer_id)
        return self.inference.encode_segments(visual, text, counters, observed, timestamp, segment, rows), known


class DecodeWindows(nn.Module):
    """Export wrapper: cached windows ``e_p [b, n, d]``, ``lengths [b]``, ``observed_last [b]`` -> logit ``[b]``."""

    def __init__(self, inference: ContentInference) -> None:
        super().__init__()
        self.inference = inference

    def forward(self, e_p: Tensor, lengths: Tensor, observed_last: Tensor) -> Tensor:
        return self.inference.decode_logits(e_p, lengths, observed_last)


def example_inputs(
    inference: ContentInference, b: int = 3, n: Optional[int] = None, seed: int = 0
) -> Dict[str, Tensor]:
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


def _describe(names: List[str], tensors: List[Tensor], dims: Dict[str, Dict[int, str]]) -> List[Dict[str, Any]]:
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


BATCH_LIMIT = 1 << 24


def _program(
    module: nn.Module,
    name: str,
    names: Tuple[str, ...],
    args: Tuple[Tensor, ...],
    outputs: List[Dict[str, Any]],
    out_dir: Path,
):
    """Export ``module`` on ``args`` with every input's dimension 0 dynamic ("b"), save it as
    ``out_dir/name.pt2``; returns (program, its manifest entry, the eager outputs on ``args``)."""
    from torch.export import Dim, export

    batch = Dim("b", min=1, max=BATCH_LIMIT)
    with torch.no_grad():
        expected = module(*args)
    program = export(module, args, dynamic_shapes={k: {0: batch} for k in names}, strict=False)
    path = out_dir / f"{name}.pt2"
    torch.export.save(program, str(path))
    entry = {
        "file": path.name,
        "inputs": _describe(list(names), list(args), {k: {0: "b"} for k in names}),
        "outputs": outputs,
    }
    return program, entry, expected


def _programs(inference: ContentInference, out_dir: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Export the three programs; returns (manifest entries, {name: (program, args, expected)})."""
    n, d = inference.window, inference.d
    ex = example_inputs(inference, b=3, n=n)
    full_args = tuple(ex[k] for k in INPUT_NAMES)
    enc_names = INPUT_NAMES[:-1]  # one segment per row: no lengths
    enc_args = tuple(ex[k] if k == "streamer_id" else ex[k][:, 0] for k in enc_names)
    dec_names = ("e_p", "lengths", "observed_last")
    dec_args = (
        torch.randn(3, n, d, generator=torch.Generator().manual_seed(1)),
        ex["lengths"],
        ex["observed"][:, -1].contiguous(),
    )
    specs = [
        (
            "score_windows", inference, INPUT_NAMES, full_args,
            [_out("score", "float32", ["b"]), _out("known", "bool", ["b"])],
        ),
        (
            "encode_segments", EncodeSegments(inference).eval(), enc_names, enc_args,
            [_out("e_p", "float32", ["b", d]), _out("known", "bool", ["b"])],
        ),
        ("decode_windows", DecodeWindows(inference).eval(), dec_names, dec_args, [_out("logit", "float32", ["b"])]),
    ]
    entries, made = {}, {}
    for name, module, names, args, outputs in specs:
        program, entries[name], expected = _program(module, name, names, args, outputs, out_dir)
        made[name] = (program, args, expected)
    return entries, made


def _out(name: str, dtype: str, shape: List[Any]) -> Dict[str, Any]:
    return {"name": name, "dtype": dtype, "shape": shape}


def _check(
    inference: ContentInference, entries: Dict[str, Any], made: Dict[str, Any], out_dir: Path, aoti: bool
) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Load every saved program back and compare with the eager outputs (the full-window program
    and its AOTInductor package also on a second batch size: the batch dimension is dynamic)."""
    ex2 = example_inputs(inference, b=5, n=inference.window, seed=7)
    args2 = tuple(ex2[k] for k in INPUT_NAMES)
    checks: Dict[str, float] = {}
    with torch.no_grad():
        expected2 = inference(*args2)
        for name, (_, args, expected) in made.items():
            loaded = torch.export.load(str(out_dir / entries[name]["file"])).module()
            checks[name] = _max_diff(loaded(*args), expected)
            if name == "score_windows":
                checks[name] = max(checks[name], _max_diff(loaded(*args2), expected2))
    program, args, expected = made["score_windows"]
    aoti_info = (
        _compile_aoti(program, out_dir, args, expected, args2, expected2) if aoti else {"status": "skipped (--no-aoti)"}
    )
    if "max_abs_diff" in aoti_info:
        checks["score_windows.aoti"] = aoti_info["max_abs_diff"]
    bad = {k: v for k, v in checks.items() if not v <= TOLERANCE}
    if bad:
        raise RuntimeError(f"exported program(s) disagree with the eager model beyond {TOLERANCE}: {bad}")
    return checks, aoti_info


def export_run(run_dir: Path, out_dir: Path, aoti: bool = True) -> Dict[str, Any]:
    """Export the inference path of ``run_dir`` into ``out_dir`` (see the module docstring); returns the manifest."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    inference = load_inference(run_dir)
    fingerprint = inference.fingerprint()
    if (out_dir / "manifest.json").exists():
        old = json.loads((out_dir / "manifest.json").read_text())
        if old.get("model_fingerprint") != fingerprint:
            raise FileExistsError(f"{out_dir}: holds the export of another model ({old.get('run')}); use another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entries, made = _programs(inference, out_dir)
    logger.info("exported %d programs in %.1f s", len(entries), time.perf_counter() - t0)
    checks, aoti_info = _check(inference, entries, made, out_dir, aoti)

    files = [e["file"] for e in entries.values()] + ["example.pt"]
    if hasattr(inference.id_lookup, "raw"):
        np.savez(out_dir / "vocab.npz", streamer=inference.id_lookup.raw.cpu().numpy())
        files.append("vocab.npz")
    example = {k: t for k, t in zip(INPUT_NAMES, made["score_windows"][1])}
    score, known = made["score_windows"][2]
    torch.save({"inputs": example, "score": score, "known": known}, out_dir / "example.pt")
    files += [aoti_info["file"]] if "file" in aoti_info else []
    manifest = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "run": str(run_dir.resolve()),
        "model": inference.model_name,
        "model_fingerprint": fingerprint,
        "config": _asdict(inference.config),
        "window": inference.window,
        "label_delay": inference.label_delay,
        "reads": list(inference.reads),
        "score": (
            "sigmoid(logit): predicted label of the segment after each window's newest segment "
            "(position lengths - 1)"
        ),
        "observed": f"label of segment t - {inference.label_delay} at segment t, -1 when the room has none yet",
        "counters_order": list(COUNTER_COLUMNS),
        "unknown_streamer": "ids without a row read the cold-start row 0; output 'known' is False for them",
        "batch_limit": BATCH_LIMIT,
        "programs": entries,
        "aoti": aoti_info,
        "check_max_abs_diff": checks,
        "versions": _versions(),
        "sha256": {f: _sha256(out_dir / f) for f in files},
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


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
        logger.warning(
            "AOTInductor compilation failed (%s: %s); the torch.export programs are still written",
            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
        )
        if path.exists():
            path.unlink()
        return {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
    return {
        "status": "ok",
        "file": path.name,
        "compile_seconds": round(time.perf_counter() - t0, 1),
        "max_abs_diff": diff,
    }


def _asdict(config: Any) -> Dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(config)


def _versions() -> Dict[str, str]:
    return versions()
