"""Reference check of the ID baselines against DeepCTR-Torch: test tau-b and training throughput.

Our four baselines (``wide_deep``, ``deepfm``, ``difm``, ``dcn_m``, trained by the shared trainer
``kuaihl_rec.train.loop.train``: DMP-sharded tables, TrainPipelineSparseDist) against DeepCTR-Torch's
``WDL``, ``DeepFM``, ``DIFM`` and ``DCNMix`` trained with ``binary_crossentropy`` on the same soft
labels and the same features (ContentCTR 4.3.2, :mod:`baselines.features`).

Same data, same budget:

* One sample per scored segment. Ours trains on windows of n = 1 (stride 1), so a window is one
  target and "batch size" means samples for both. DeepCTR gets a flat table (one row per training
  target) whose columns are built from the very same ``LiveBatch``es by
  :func:`baselines.features.position_features` (same ids, buckets, vocabulary sizes, dense log1p
  counters), so the features cannot drift apart.
* Same epochs, batch size, dense learning rate (Adam(W) with no weight decay, constant rate, no
  warm-up, no clipping), embedding width 16, MLP (128, 64), dropout 0.1, no L2. Tables: ours use
  the trainer's fused row-wise Adagrad (``--sparse-lr``; Adam is not available for fused tables on
  CPU), DeepCTR trains its embeddings with the same Adam as everything else.
* Model selection: both keep the epoch with the best validation tau-b (ours: the trainer's best
  checkpoint; theirs: the epoch whose validation tau-b is best) and score the test split once per
  target (``score_mask``, eval-mode windows) with ``kuaihl_rec.metrics.evaluate_segments``.
* Throughput: training samples per second of the training loop only (ours: the trainer's
  ``epoch_seconds``, which include batch assembly; theirs: ``fit`` wall time), same process, same
  threads.

Known differences (documented, not hidden): ours trains with ``id_dropout`` 0.2 by default (each
sample's streamer and room id emptied with probability 0.2, so the cold-start case of the by-room
test split is learnt; ``--id-dropout 0`` turns it off), DeepCTR has no such option; an unknown streamer / room is an empty bag (zero
embedding) for us and the never-trained row 0 (initialised near zero) for DeepCTR; DeepCTR's DIFM scales its attention by 1/sqrt(d)
(the paper does not), its DCNMix adds a first-order linear logit (DCN-V2 has none), and its
embeddings start from N(0, 1e-4^2) instead of TorchRec's uniform initialisation.

The check: DeepCTR's test tau-b is within 0.01 of ours or below (``tau_theirs - tau_ours <= 0.01``),
on the mean over ``--seeds`` (default 0 1 2: with cold-start streamers in the test split, one run's
pooled tau-b moves by a few hundredths with the seed, so a single run cannot resolve 0.01).

Usage::

    kuaihl world --preset default --out /tmp/world_default
    OMP_NUM_THREADS=1 python bench/bench_baselines_deepctr.py /tmp/world_default
    python bench/bench_baselines_deepctr.py --world-preset tiny --epochs 2     # generates a world itself
    python bench/bench_baselines_deepctr.py DATA --models deepfm dcn_m --json out.json

Needs ``pip install deepctr-torch scikit-learn requests`` (a benchmark-only reference; not a
dependency of the package).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("wide_deep", "deepfm", "difm", "dcn_m")
THEIRS = {"wide_deep": "WDL", "deepfm": "DeepFM", "difm": "DIFM", "dcn_m": "DCNMix"}
TOLERANCE = 0.01


def _import_deepctr():
    try:
        import deepctr_torch  # noqa: F401
        from deepctr_torch.inputs import DenseFeat, SparseFeat
        from deepctr_torch.models import DCNMix, DIFM, WDL, DeepFM
    except ImportError as exc:
        sys.exit(
            f"bench_baselines_deepctr: DeepCTR-Torch is not importable ({exc}).\n"
            "Install the reference into this environment (benchmark only, not a package dependency):\n"
            f"    {sys.executable} -m pip install deepctr-torch scikit-learn requests"
        )
    return {"SparseFeat": SparseFeat, "DenseFeat": DenseFeat, "WDL": WDL, "DeepFM": DeepFM, "DIFM": DIFM, "DCNMix": DCNMix}


# ------------------------------------------------------------------------------------ data


def world_dir(args: argparse.Namespace, tmp: Path) -> Path:
    if args.data:
        return Path(args.data)
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    out = tmp / f"world_{args.world_preset}"
    t0 = time.perf_counter()
    write_world(generate_world(load_world_config(preset=args.world_preset)), out, figure=False)
    print(f"generated world preset {args.world_preset!r} in {time.perf_counter() - t0:.1f} s: {out}")
    return out


def flat_tables(data_dir: Path, min_viewers: int, label: str) -> Tuple[Dict[str, Dict[str, np.ndarray]], object]:
    """One row per training target (train split) and per scored target (val, test), columns from
    :func:`baselines.features.position_features` on windows of n = 1 (what our trainer reads)."""
    from baselines.features import FeatureConfig, position_features
    from kuaihl_rec.data.batch import BatchSpec
    from kuaihl_rec.data.validate import load_segments
    from kuaihl_rec.data.windows import SegmentArrays, WindowConfig, window_splits

    table, sizes, _ = load_segments(data_dir, min_viewers=min_viewers)
    wcfg = WindowConfig(window=1, stride=1, min_viewers=min_viewers, label=label)
    arr = SegmentArrays.from_table(table, sizes, wcfg)
    splits = window_splits(arr, wcfg)
    spec = BatchSpec.of(splits["train"])
    cfg = FeatureConfig(crosses=True)  # the cross key only feeds WDL's linear part
    out: Dict[str, Dict[str, np.ndarray]] = {}
    for name, split in splits.items():
        cols: Dict[str, List[np.ndarray]] = {}
        for batch in split.iter_batches(4096):
            kjt, dense = position_features(batch.sparse_features, batch.counters, batch.timestamp, batch.segment, cfg)
            keep = (batch.label_mask if name == "train" else batch.score_mask).reshape(-1).numpy()
            for key in cfg.keys:
                jt = kjt[key]  # an unknown streamer / room is an empty bag for us, row 0 for DeepCTR
                ids = torch.zeros(jt.lengths().numel(), dtype=torch.int64)
                ids[jt.lengths().bool()] = jt.values()
                cols.setdefault(key, []).append(ids.numpy()[keep])
            for j, c in enumerate(cfg.counter_columns):
                cols.setdefault(f"dense_{c}", []).append(dense[:, j].numpy()[keep])
            cols.setdefault("label", []).append(batch.labels.reshape(-1).numpy()[keep])
            cols.setdefault("_room", []).append(batch.live_raw.repeat_interleave(batch.window).numpy()[keep])
        out[name] = {k: np.concatenate(v) for k, v in cols.items()}
    return out, (spec, cfg)


# ------------------------------------------------------------------------------------ ours


def train_ours(name: str, data_dir: Path, run_dir: Path, args: argparse.Namespace) -> Dict[str, float]:
    from kuaihl_rec.train.config import train_config
    from kuaihl_rec.train.evaluate import evaluate_run
    from kuaihl_rec.train.loop import train

    cfg = train_config(
        "small",
        model=name,
        data={"window": 1, "stride": 1, "min_viewers": args.min_viewers, "label": args.label},
        epochs=args.epochs,
        batch_size=args.batch_size,
        optim={"lr": args.lr, "weight_decay": 0.0, "grad_clip": 0.0, "sparse_lr": args.sparse_lr},
        warmup_steps=0,
        schedule="constant",
        patience=args.epochs + 1,
        checkpoint_every=0,
        eval_batch_size=4096,
        seed=args.seed,
        model={"overrides": {} if args.id_dropout is None else {"id_dropout": args.id_dropout}},
    )
    summary = train(data_dir, run_dir, cfg, progress=False)
    seconds = sum(e["epoch_seconds"] for e in summary["history"])
    result = evaluate_run(run_dir, data_dir, "test", progress=False)
    return {
        "tau": result["tau"],
        "n_test": result["n_segments"],
        "samples_per_s": summary["steps"] * args.batch_size / max(seconds, 1e-9),
        "train_seconds": seconds,
        "best_val_tau": summary["best_val_tau"],
        "reference_tau": result["reference"]["previous_segment_label"]["tau"],
    }


# ------------------------------------------------------------------------------------ theirs


def build_theirs(name: str, dc: dict, spec, cfg, args: argparse.Namespace):
    rows = cfg.table_rows(spec)
    emb = 16
    sparse = [dc["SparseFeat"](k, vocabulary_size=rows[k], embedding_dim=emb) for k in cfg.field_keys]
    dense = [dc["DenseFeat"](f"dense_{c}", 1) for c in cfg.counter_columns]
    common = dict(dnn_hidden_units=(128, 64), dnn_dropout=0.1, l2_reg_linear=0.0, l2_reg_embedding=0.0, seed=args.seed, device="cpu")
    if name == "wide_deep":
        cross = [dc["SparseFeat"](k, vocabulary_size=rows[k], embedding_dim=emb) for k in cfg.keys if k not in cfg.field_keys]
        return dc["WDL"](sparse + cross + dense, sparse + dense, **common)
    if name == "deepfm":
        return dc["DeepFM"](sparse + dense, sparse + dense, **common)
    if name == "difm":
        return dc["DIFM"](sparse + dense, sparse + dense, att_head_num=2, **common)
    return dc["DCNMix"](sparse + dense, sparse + dense, cross_num=2, low_rank=32, num_experts=4, l2_reg_cross=0.0, **common)


def train_theirs(name: str, dc: dict, tables, spec, cfg, args: argparse.Namespace) -> Dict[str, float]:
    from kuaihl_rec.metrics import evaluate_segments

    torch.manual_seed(args.seed)
    model = build_theirs(name, dc, spec, cfg, args)
    model.compile(torch.optim.Adam(model.parameters(), lr=args.lr), "binary_crossentropy")
    names = list(model.feature_index)
    x = {k: tables["train"][k] for k in names}
    y = tables["train"]["label"].astype(np.float32)
    best_val, test_scores, seconds = -math.inf, None, 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and a banner
            model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0, shuffle=True)
        seconds += time.perf_counter() - t0
        val = tables["val"]
        val_tau = evaluate_segments(val["label"], _predict(model, val, names), room_ids=val["_room"])["tau"] if len(val["label"]) else float(epoch)
        if val_tau > best_val:
            best_val, test_scores = val_tau, _predict(model, tables["test"], names)
    test = tables["test"]
    metrics = evaluate_segments(test["label"], test_scores, room_ids=test["_room"])
    return {"tau": metrics["tau"], "n_test": metrics["n_segments"], "samples_per_s": args.epochs * len(y) / seconds, "train_seconds": seconds, "best_val_tau": best_val}


def _predict(model, table: Dict[str, np.ndarray], names: List[str]) -> np.ndarray:
    return np.clip(model.predict({k: table[k] for k in names}, batch_size=4096).reshape(-1).astype(np.float64), 0.0, 1.0)


# ------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", default=None, help="a segment-table directory (e.g. `kuaihl world --preset default --out DIR`); default: generate --world-preset")
    p.add_argument("--world-preset", default="default", help="world preset generated when no data directory is given")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (dense parameters; all of DeepCTR's)")
    p.add_argument("--sparse-lr", type=float, default=0.05, help="row-wise Adagrad learning rate of our fused tables")
    p.add_argument("--min-viewers", type=int, default=60)
    p.add_argument("--label", default="lvtr")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run of each side per seed; the check compares the mean tau")
    p.add_argument("--id-dropout", type=float, default=None, help="our models' id_dropout (default: the registered default, 0.2; 0 = none, as DeepCTR)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    dc = _import_deepctr()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    for noisy in ("torchrec", "kuaihl_rec"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore")
    import baselines  # noqa: F401  (registers the baselines)

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    with tempfile.TemporaryDirectory(prefix="bench_baselines_") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = world_dir(args, tmp)
        t0 = time.perf_counter()
        tables, (spec, cfg) = flat_tables(data_dir, args.min_viewers, args.label)
        print(
            f"data {data_dir}: {len(tables['train']['label'])} train targets, {len(tables['val']['label'])} val, "
            f"{len(tables['test']['label'])} test (flat tables built in {time.perf_counter() - t0:.1f} s)"
        )
        print(f"budget: {args.epochs} epochs, batch {args.batch_size}, lr {args.lr} (ours: tables row-wise Adagrad lr {args.sparse_lr}); "
              f"ours id_dropout {'default' if args.id_dropout is None else args.id_dropout}\n")
        results = {}
        for name in args.models:
            runs = []
            for seed in args.seeds:
                run_args = argparse.Namespace(**{**vars(args), "seed": seed})
                ours = train_ours(name, data_dir, tmp / f"run_{name}_{seed}", run_args)
                theirs = train_theirs(name, dc, tables, spec, cfg, run_args)
                if ours["n_test"] != theirs["n_test"]:
                    raise RuntimeError(f"{name}: ours scored {ours['n_test']} test targets, the flat table has {theirs['n_test']}")
                runs.append({"seed": seed, "ours": ours, "theirs": theirs})
                print(
                    f"  {name} seed {seed}: ours tau {ours['tau']:.4f} ({ours['samples_per_s']:.0f}/s), "
                    f"{THEIRS[name]} tau {theirs['tau']:.4f} ({theirs['samples_per_s']:.0f}/s)",
                    flush=True,
                )
            summary = {}
            for side in ("ours", "theirs"):
                taus = np.array([r[side]["tau"] for r in runs])
                rates = np.array([r[side]["samples_per_s"] for r in runs])
                summary[side] = {"tau_mean": float(taus.mean()), "tau_sd": float(taus.std(ddof=1)) if len(taus) > 1 else 0.0, "samples_per_s": float(np.median(rates))}
            diff = summary["theirs"]["tau_mean"] - summary["ours"]["tau_mean"]
            results[name] = {
                **summary,
                "runs": runs,
                "tau_diff": diff,
                "within": bool(diff <= TOLERANCE),
                "throughput_ratio": summary["ours"]["samples_per_s"] / summary["theirs"]["samples_per_s"],
                "reference_tau": runs[0]["ours"]["reference_tau"],
                "n_test": runs[0]["ours"]["n_test"],
            }

    print(f"\ntest tau-b, mean +- sd over seeds {args.seeds}; samples/s: median over seeds (training loop only)")
    header = f"{'model':<10}{'deepctr':<8}{'tau ours':>16}{'tau theirs':>16}{'theirs-ours':>12}{'<=+0.01':>8}{'ours/s':>9}{'theirs/s':>9}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        o, t = r["ours"], r["theirs"]
        print(
            f"{name:<10}{THEIRS[name]:<8}{o['tau_mean']:>9.4f} +-{o['tau_sd']:.3f}{t['tau_mean']:>9.4f} +-{t['tau_sd']:.3f}{r['tau_diff']:>+12.4f}"
            f"{('yes' if r['within'] else 'NO'):>8}{o['samples_per_s']:>9.0f}{t['samples_per_s']:>9.0f}{r['throughput_ratio']:>7.2f}"
        )
    if results:
        first = next(iter(results.values()))
        print(f"\nreference: previous-segment-label predictor, test tau {first['reference_tau']:.4f}; n test targets {first['n_test']}")
        print("ratio = ours samples/s / DeepCTR samples/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
        print(f"json: {args.json}")
    return 0 if all(r["within"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
