"""``kuaihl compare``: the content model, its variants and the ID baselines on one budget.

For every *entry* (a registered model plus an optional loss preset) and every world:

1. learning-rate search: the entry is trained with each rate of ``budget.lr_grid`` on seed 0 and
   the rate with the best validation tau-b is kept (the same grid and rule for every entry);
2. seeds: the entry is trained with the chosen rate on seeds ``0 .. K-1`` (seed 0 is reused from
   the search) and scored on the test rooms with ``kuaihl eval``'s protocol;
3. the report gives mean +- standard deviation over seeds; a difference to the reference row
   smaller than two standard errors (Welch) is marked "n.s." (not significant).

Two reference rows frame every number: the *trivial* predictor (the previous segment's label) and
the *ceiling*: the world's hidden true next-segment rate scored against the noisy labels (no model
can do better in expectation). Both are computed on exactly the segments the models are scored on.

Outputs: ``REPORT/results.json`` (``{"worlds": {name: {"models": {entry: {metric: {mean, std,
values}}}, "references": ..., "world": config}}, "budget": ...}``), ``REPORT/report.md`` with the
paper-style tables next to the papers' numbers, and figures (``fig4_room_timeline.png``,
``fig6_dtw_alignment.png``). Everything here is on synthetic data and says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from kuaihl_rec.apps.compare_entries import (  # noqa: F401  (re-exported: the rows are part of this command's API)
    ALL_ENTRIES,
    ID_BASELINES,
    LOSS_ABLATION,
    LOSS_ABLATION_SUM,
    METRIC_KEYS,
    MODALITY_ABLATION,
    RAW_MEDIA,
    TABLE1_VARIANTS,
    WORLD_DIR,
    CompareBudget,
    Entry,
    _training_key,
    default_loss,
    entries_for,
)
from kuaihl_rec.apps.compare_figures import figure4, figure5, figure6
from kuaihl_rec.apps.compare_report import (  # noqa: F401  (re-exported)
    CEILING_ROW,
    COMPLETE_ROW,
    TRIVIAL_ROW,
    _aggregate,
    _margin_section,
    best_id_model,
    margin_over_best_id,
    significant,
    welch_se,
    write_report,
)
from kuaihl_rec.data.io import atomic_write_json
from kuaihl_rec.data.windows import IdVocab, WindowConfig
from kuaihl_rec.metrics import evaluate_segments
from kuaihl_rec.train.cold_start import cold_start_mask, slice_metrics
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.evaluate import evaluate_run, reference_scores
from kuaihl_rec.train.loop import train

logger = logging.getLogger(__name__)

def _train_and_eval(
    data_dir: Path, run_dir: Path, entry: Entry, lr: float, seed: int, budget: CompareBudget, progress: bool
) -> Dict[str, Any]:

    cfg = train_config(
        "small",
        {"data.stride": budget.stride},
        model={"name": entry.model, "overrides": dict(entry.overrides)},
        loss=entry.loss,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        patience=budget.patience,
        seed=seed,
        optim={"lr": lr},
        checkpoint_every=0,
        keep_checkpoints=1,
    )
    if (run_dir / "test.json").exists() and (run_dir / "summary.json").exists():
        saved = json.loads((run_dir / "config.json").read_text())["train"]
        if saved == json.loads(json.dumps(cfg.to_dict())):
            logger.info("reusing finished run %s", run_dir)
            return {
                "summary": json.loads((run_dir / "summary.json").read_text()),
                "test": json.loads((run_dir / "test.json").read_text()),
            }
    t0 = time.perf_counter()
    # a cached run directory is retrained when its config changed or it is unfinished: replace it explicitly
    summary = train(data_dir, run_dir, cfg, progress=progress, overwrite=(run_dir / "config.json").exists())
    test = evaluate_run(
        run_dir,
        data_dir,
        "test",
        json_out=run_dir / "test.json",
        predictions_out=run_dir / "test_predictions.parquet",
        progress=False,
    )
    logger.info(
        "%s lr=%g seed=%d: val tau %s, test tau %.4f (%.0f s)",
        entry.name,
        lr,
        seed,
        "n/a" if summary["best_val_tau"] is None else f"{summary['best_val_tau']:.4f}",
        test["tau"],
        time.perf_counter() - t0,
    )
    return {"summary": summary, "test": test}


def reference_rows(data_dir: Path, predictions: Path, label_delay: int = 2) -> Dict[str, Dict[str, float]]:
    """The reference rows on exactly the scored segments of ``predictions``:

    * trivial: the previous segment's label (the issue's trivial predictor; for LVTR not yet known
      when the target is scored, its 60 s outcome is still open),
    * last complete label: the label of segment u - 1 - ``label_delay`` (what the platform knows),
    * ceiling: the world's hidden true rate (only with a synthetic world's truth sidecar).
    """
    import pyarrow.parquet as pq

    preds = pq.read_table(predictions).to_pandas()
    seg = pq.read_table(Path(data_dir) / "segments", columns=["live_id", "segment", "lvtr"]).to_pandas()
    live, segment = preds["live_id"].to_numpy(), preds["segment"].to_numpy()
    refs = reference_scores(
        seg["live_id"].to_numpy(), seg["segment"].to_numpy(), seg["lvtr"].to_numpy(), live, segment, label_delay
    )
    labels = preds["label"].to_numpy()
    vocab = IdVocab(np.load(Path(predictions).parent / "vocab.npz")["streamer"])  # the run's training vocabulary
    cold, source = cold_start_mask(Path(data_dir), vocab, live, preds["streamer_id"].to_numpy())

    def scored(scores) -> Dict[str, Any]:
        return {**evaluate_segments(labels, scores, room_ids=live), **slice_metrics(labels, scores, cold, source)}

    out = {TRIVIAL_ROW: scored(refs["previous_segment_label"]), COMPLETE_ROW: scored(refs["last_complete_label"])}
    truth_path = Path(data_dir) / "truth" / "segments_truth.parquet"
    if truth_path.exists():
        truth = pq.read_table(truth_path, columns=["live_id", "segment", "true_lvtr"]).to_pandas()
        merged = preds.merge(truth, on=["live_id", "segment"], how="left")
        if merged["true_lvtr"].isna().any():
            raise ValueError(f"{truth_path}: {int(merged['true_lvtr'].isna().sum())} scored segments have no true rate")
        out[CEILING_ROW] = scored(merged["true_lvtr"].to_numpy())
    return out


def _job(args: Tuple[str, str, Entry, float, int, CompareBudget, int]) -> Dict[str, Any]:
    """One training + test scoring in a worker process (``threads`` intra-op threads)."""
    data_dir, run_dir, entry, lr, seed, budget, threads = args
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    return _train_and_eval(Path(data_dir), Path(run_dir), entry, lr, seed, budget, progress=False)


class _Runner:
    """Runs training jobs in order (``jobs`` = 1, in this process) or on a pool of ``jobs`` worker
    processes with ``cpu_count // jobs`` threads each (small models use cores better as several
    single-threaded runs than as one multi-threaded run)."""

    def __init__(self, jobs: int) -> None:
        self.pool = None
        if jobs > 1:
            import multiprocessing as mp
            import os
            from concurrent.futures import ProcessPoolExecutor

            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            self.threads = max(1, cores // jobs)
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))

    def map(self, tasks: List[Tuple[Path, Path, Entry, float, int, CompareBudget]], on_done) -> List[Dict[str, Any]]:
        if self.pool is None:
            out = []
            for t in tasks:
                out.append(_train_and_eval(*t, progress=False))
                on_done()
            return out
        from concurrent.futures import as_completed

        futures = {
            self.pool.submit(_job, (str(t[0]), str(t[1]), t[2], t[3], t[4], t[5], self.threads)): i
            for i, t in enumerate(tasks)
        }
        out: List[Optional[Dict[str, Any]]] = [None] * len(tasks)
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
            on_done()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _val_tau(result: Dict[str, Any]) -> float:
    """A run's best validation tau-b for the lr search; -inf when it had none (no val rooms, undefined)."""
    value = result["summary"]["best_val_tau"]
    return -math.inf if value is None else float(value)


def _source_rows(entry: Entry) -> List[str]:
    """The rows whose runs ``entry`` reads: override values ``"@row"`` (e.g. ``streamer_init="@dcn_m"``,
    the streamer table of ``dcn_m``'s run of the same seed)."""
    return [v[1:] for _, v in entry.overrides if isinstance(v, str) and v.startswith("@")]


def _stages(entries: Sequence[Entry]) -> List[List[Entry]]:
    """``entries`` in two stages: the rows that read no other row's run, then those that do."""
    first = [e for e in entries if not _source_rows(e)]
    return [stage for stage in (first, [e for e in entries if _source_rows(e)]) if stage]


def _map_override_values(entry: Entry, value_of) -> Entry:
    """``entry`` with each override value v replaced by ``value_of(v)`` (the same entry when nothing changes)."""
    overrides = tuple((k, value_of(v)) for k, v in entry.overrides)
    return entry if overrides == entry.overrides else dataclasses.replace(entry, overrides=overrides)


def _with_source_runs(entry: Entry, seed: int, run_of) -> Entry:
    """``entry`` with each ``"@row"`` override replaced by the path of ``run_of(row)`` (a finished run)."""
    return _map_override_values(
        entry, lambda v: str(run_of(v[1:])) if isinstance(v, str) and v.startswith("@") else v)


def _with_world_dir(entry: Entry, data_dir: Path) -> Entry:
    """``entry`` with each :data:`WORLD_DIR` override value replaced by ``data_dir`` (e.g. ``model.media``)."""
    return _map_override_values(entry, lambda v: str(data_dir) if v == WORLD_DIR else v)


def _train_stage(stage, data_dir, budget, runner, run_path, resolve, bar, search, best, per_entry) -> None:
    """The lr search (seed 0) and the other seeds of the rows of ``stage``; fills ``search``, ``best``
    and ``per_entry`` (the test results of each row, seed by seed)."""
    search_tasks = [
        (data_dir, run_path(e, lr, 0), resolve(e, 0), lr, 0, budget) for e in stage for lr in budget.lr_grid
    ]
    search_out = runner.map(search_tasks, lambda: bar.update(1))
    search.update({(t[2].name, t[3]): r for t, r in zip(search_tasks, search_out)})
    best.update({e.name: max(budget.lr_grid, key=lambda lr: _val_tau(search[(e.name, lr)])) for e in stage})
    seed_tasks = [
        (data_dir, run_path(e, best[e.name], seed), resolve(e, seed), best[e.name], seed, budget)
        for e in stage
        for seed in range(1, budget.seeds)
    ]
    seed_out = runner.map(seed_tasks, lambda: bar.update(1))
    per_entry.update({e.name: [search[(e.name, best[e.name])]] for e in stage})
    for t, r in zip(seed_tasks, seed_out):
        per_entry[t[2].name].append(r)


def run_world(
    data_dir: Path, out_dir: Path, entries: Sequence[Entry], budget: CompareBudget, progress: bool = True, jobs: int = 1
) -> Dict[str, Any]:
    """Every entry on one world: lr search on seed 0, then ``budget.seeds`` seeds; aggregated metrics.

    Rows that train the same thing (:func:`_training_key`) share runs; ``jobs`` > 1 trains that
    many runs at once in worker processes (phase 1: every learning rate on seed 0; phase 2: the
    other seeds at each entry's chosen rate). Rows that read another row's runs (``"@row"``
    overrides, e.g. a pretrained streamer table) are trained after the other rows, seed by seed
    from that row's run at its chosen rate.
    """
    from tqdm.auto import tqdm

    results: Dict[str, Any] = {"models": {}, "lr": {}, "runs": {}, "shared_runs": {}}
    unique: Dict[Tuple[str, str, Tuple[Tuple[str, Any], ...]], Entry] = {}
    keys = {entry.name: _training_key(entry) for entry in entries}
    for entry in entries:
        key = keys[entry.name]
        if key in unique:
            results["shared_runs"][entry.name] = unique[key].name
        else:
            unique[key] = entry
    trained = list(unique.values())
    n_jobs = len(trained) * (len(budget.lr_grid) + budget.seeds - 1)
    bar = tqdm(total=n_jobs, desc=f"compare {Path(data_dir).name}", unit="run", disable=not progress)
    t0 = time.perf_counter()
    runner = _Runner(jobs)
    run_path = lambda e, lr, seed: out_dir / "runs" / e.name / f"lr{lr:g}-seed{seed}"
    search: Dict[Tuple[str, float], Dict[str, Any]] = {}
    best: Dict[str, float] = {}
    per_entry: Dict[str, List[Dict[str, Any]]] = {}
    trained_by_name = {e.name: e for e in trained}
    shared = {name: unique[keys[name]].name for name in keys}  # row -> the row whose runs it uses

    def resolve(entry: Entry, seed: int) -> Entry:  # "@row" -> that row's run of this seed; WORLD_DIR -> data_dir
        entry = _with_world_dir(entry, Path(data_dir))
        return _with_source_runs(entry, seed, lambda row: run_path(
            trained_by_name[shared[row]], best[shared[row]], seed))

    try:
        for stage in _stages(trained):
            _train_stage(stage, data_dir, budget, runner, run_path, resolve, bar, search, best, per_entry)
    finally:
        runner.close()
        bar.close()
    for entry in entries:
        source = unique[keys[entry.name]]
        results["lr"][entry.name] = {
            "chosen": best[source.name],
            "val_tau": {f"{lr:g}": search[(source.name, lr)]["summary"]["best_val_tau"] for lr in budget.lr_grid},
        }
        results["models"][entry.name] = _aggregate([r["test"] for r in per_entry[source.name]])
        results["runs"][entry.name] = [str(run_path(source, best[source.name], s)) for s in range(budget.seeds)]
    first_run = Path(next(iter(results["runs"].values()))[0])
    saved = json.loads((first_run / "config.json").read_text())

    delay = WindowConfig.from_dict(saved["window"]).observed_delay
    results["references"] = reference_rows(data_dir, first_run / "test_predictions.parquet", delay)
    results["label_delay"] = delay
    results["seconds"] = round(time.perf_counter() - t0, 1)
    world_cfg = Path(data_dir) / "world_config.yaml"
    results["world"] = world_cfg.read_text() if world_cfg.exists() else None
    return results


def run_compare(
    data_dirs: Sequence[Path],
    out_dir: Path,
    models: Optional[Sequence[str]] = None,
    budget: CompareBudget = CompareBudget(),
    progress: bool = True,
    jobs: int = 1,
) -> Path:

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = entries_for(models)
    results: Dict[str, Any] = {
        "worlds": {},
        "budget": dataclasses.asdict(budget),
        "entries": [dataclasses.asdict(e) for e in entries],
        "jobs": jobs,
    }
    for data_dir in data_dirs:
        name = Path(data_dir).name
        results["worlds"][name] = run_world(Path(data_dir), out_dir / name, entries, budget, progress, jobs=jobs)
        atomic_write_json(out_dir / "results.json", results)
    first = Path(data_dirs[0])
    res = results["worlds"][first.name]
    try:
        figure4(first, res, out_dir / "fig4_room_timeline.png")
        figure5(res, out_dir / "fig5_loss_terms.png")
        figure6(first, res, out_dir / "fig6_dtw_alignment.png")
    except Exception as exc:  # a figure must not lose the tables; say why it is missing
        logger.error("figures not written: %s", exc)
        results["figure_error"] = str(exc)
        atomic_write_json(out_dir / "results.json", results)
    return write_report(out_dir, results)
