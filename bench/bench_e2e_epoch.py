"""What one training epoch of the end-to-end content model (``content_e2e``) costs, against its twins.

Builds a raw-media world (default: preset ``tiny_media``), extracts its frozen-feature twin with
``kuaihl extract`` (encoder preset ``swin_media``), then trains one epoch, through the real trainer
(``kuaihl_rec.train.loop.train``: DMP, pipeline, validation), of

* ``content``          on the extracted twin (pre-extracted vectors: the reference),
* ``content_e2e``      frozen (``finetune=False``: encoders run forward only, every step),
* ``content_e2e``      fine-tuned (``finetune=True``: gradients through Swin and MiniLM),

each ``content_e2e`` run with its media bank's frames in memory (``model.media_frames=ram``: decoded up
front) and/or decoded per batch (``lazy``: only the batch's distinct rows, at every step), ``--media-frames``,
and prints each run's epoch seconds (the trainer's own ``epoch_seconds``: the training steps, without
the validation pass), its steps, seconds per step and the ratio to the reference; plus the one-off
seconds of building the media bank (decoding every frame, tokenising every text) and of the
extraction; with both frame modes, the lazy epoch over the ram one and the milliseconds a lazy step pays
to decode one distinct row. Synthetic data; timings are printed, never asserted.

Usage::

    OMP_NUM_THREADS=2 nice -n 10 python bench/bench_e2e_epoch.py              # tiny_media, train preset tiny
    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_e2e_epoch.py --media-frames both   # ram vs lazy (default)
    python bench/bench_e2e_epoch.py --world-set n_rooms=16 --train-preset tiny --json out.json
    python bench/bench_e2e_epoch.py --media-frames lazy --skip content   # lazy frames only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

from kuaihl_rec.data.world import generate_world, load_world_config, write_world  # noqa: E402
from kuaihl_rec.encoders import RandomInitWarning  # noqa: E402
from kuaihl_rec.extract import run_extract  # noqa: E402
from kuaihl_rec.train.config import train_config  # noqa: E402
from kuaihl_rec.train.loop import train  # noqa: E402


def _parse_set(items):
    out: Dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _run(name: str, data: Path, out: Path, preset: str, overrides: Dict[str, Any]) -> Dict[str, Any]:
    model = name.split(":")[0]
    cfg = train_config(preset, model={"name": model, "overrides": overrides}, epochs=1)
    t0 = time.perf_counter()
    summary = train(data, out, cfg, progress=False)
    total = time.perf_counter() - t0
    epoch = summary["history"][0]
    return {"epoch_seconds": epoch["epoch_seconds"], "steps": summary["steps"], "total_seconds": round(total, 2),
            "val_tau": epoch.get("val_tau")}


def _bank_seconds(world: Path, modes, results: Dict[str, Any]) -> None:
    """The one-off cost of building the media bank in each frame mode (ram: decode every frame; lazy: stat them)."""
    # why: function-level import: the bank's one-off cost is measured on its own
    from kuaihl_rec.encoders import EndToEndFeaturizer, preset_config
    from kuaihl_rec.model.content_e2e import load_media_bank

    enc = preset_config("swin_media")
    featurizer = EndToEndFeaturizer(enc, trainable=False)
    for mode in modes:
        t0 = time.perf_counter()
        bank = load_media_bank(world, enc, featurizer, frames=mode)
        results[f"bank_seconds_{mode}"] = round(time.perf_counter() - t0, 2)
        if mode == "lazy":  # what a step pays a distinct row: decoding its frames (the ram bank indexes them)
            t0 = time.perf_counter()
            bank.images(torch.arange(len(bank.paths)))
            results["lazy_decode_ms_per_row"] = round(1e3 * (time.perf_counter() - t0) / len(bank.paths), 3)


def _print_ratios(results: Dict[str, Any]) -> None:
    ref = results.get("content", {}).get("epoch_seconds")
    keys = [k for k in ("frozen", "finetune", "frozen_lazy", "finetune_lazy") if k in results]
    for key in keys:
        if ref:
            results[key]["ratio_to_content"] = round(results[key]["epoch_seconds"] / ref, 1)
        if key.endswith("_lazy") and key[:-5] in results:
            results[key]["ratio_to_ram"] = round(results[key]["epoch_seconds"] / results[key[:-5]]["epoch_seconds"], 2)
    banks = ", ".join(f"media bank ({k[13:]}) {v} s" for k, v in results.items() if k.startswith("bank_seconds_"))
    print(f"world: {results['segments']} segments ({results['world_seconds']} s); "
          f"extract {results['extract_seconds']} s; {banks}; {results['threads']} threads")
    if "lazy_decode_ms_per_row" in results:
        print(f"lazy frames: {results['lazy_decode_ms_per_row']} ms to decode one row's frames")
    for key in keys:
        if "ratio_to_content" in results[key]:
            print(f"{key}: {results[key]['ratio_to_content']}x the epoch of `content` on the extracted twin")
        if "ratio_to_ram" in results[key]:
            print(f"{key}: {results[key]['ratio_to_ram']}x the epoch of the same run with its frames in memory (ram)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="tiny_media", help="world preset (raw_media is forced on)")
    ap.add_argument("--world-set", action="append", default=[], help="world knob KEY=VALUE")
    ap.add_argument("--train-preset", default="tiny")
    ap.add_argument("--encoder-lr", type=float, default=1e-4)
    ap.add_argument("--skip", action="append", default=[], help="skip a run: content | frozen | finetune")
    ap.add_argument("--media-frames", choices=("ram", "lazy", "both"), default="both",
                    help="how content_e2e holds the frames (model.media_frames); both: each e2e run in each mode")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", RandomInitWarning)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    results: Dict[str, Any] = {"threads": torch.get_num_threads(), "world": args.world,
                               "world_set": _parse_set(args.world_set), "train_preset": args.train_preset}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        world = generate_world(load_world_config(args.world, raw_media=True, **results["world_set"]))
        write_world(world, root / "w", figure=False)
        results["segments"] = world.segments.num_rows
        results["world_seconds"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        run_extract(root / "w", root / "x", preset="swin_media", progress=False)
        results["extract_seconds"] = round(time.perf_counter() - t0, 2)
        modes = ("ram", "lazy") if args.media_frames == "both" else (args.media_frames,)
        _bank_seconds(root / "w", modes, results)
        runs = {"content": ("content", root / "x", {})}
        tuned = {"finetune": True, "encoder_lr": args.encoder_lr}
        for key, extra in (("frozen", {"finetune": False}), ("finetune", tuned)):
            for mode in modes:  # ram and lazy one after the other: the machine's load drifts less between them
                media = {"media": str(root / "w"), "media_frames": mode}
                runs[key + ("" if mode == "ram" else "_lazy")] = ("content_e2e", root / "w", {**media, **extra})
        for key, (model, data, overrides) in runs.items():
            if key.replace("_lazy", "") in args.skip:
                continue
            results[key] = _run(model, data, root / f"run_{key}", args.train_preset, overrides)
            r = results[key]
            r["seconds_per_step"] = round(r["epoch_seconds"] / max(r["steps"], 1), 3)
            print(f"{key:>13}: epoch {r['epoch_seconds']:.1f} s, {r['steps']} steps, "
                  f"{r['seconds_per_step']:.2f} s/step, val tau {r['val_tau']}", flush=True)
    _print_ratios(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
