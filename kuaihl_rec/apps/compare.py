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

from kuaihl_rec.apps.compare_figures import figure4, figure6
from kuaihl_rec.data.io import atomic_write_bytes, atomic_write_json
from kuaihl_rec.data.windows import WindowConfig
from kuaihl_rec.losses import LOSS_PRESETS
from kuaihl_rec.metrics import REPORTED_METRICS, evaluate_segments
from kuaihl_rec.model.registry import list_models, model_info
from kuaihl_rec.train.config import train_config
from kuaihl_rec.train.evaluate import evaluate_run, reference_scores
from kuaihl_rec.train.loop import train

logger = logging.getLogger(__name__)

METRIC_KEYS = REPORTED_METRICS


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a table: a registered model trained with a loss preset (None = the model's own)."""

    name: str
    model: str
    loss: Optional[str] = None
    overrides: Tuple[Tuple[str, Any], ...] = ()  # model overrides (create_model keywords)

    @property
    def paper_tau(self) -> Optional[float]:
        """The papers' KLive tau-b for this row, for orientation (read from the model registry): the
        model's own number when the row trains it as registered, the loss-ablation number when it
        trains it with another loss preset; None for rows the papers do not have."""
        if self.overrides:
            return None
        paper = model_info(self.model).paper
        return paper.get("tau") if self.loss is None else paper.get("loss_ablation", {}).get(self.loss)


def _family_rows(family: str, key: str) -> Tuple[Entry, ...]:
    """One row per registered model of ``family`` whose paper numbers hold ``key`` (registry order)."""
    return tuple(Entry(name, name) for name in list_models(family=family) if key in model_info(name).paper)


ID_BASELINES = tuple(Entry(name, name) for name in list_models(family="id_baseline"))
TABLE1_VARIANTS = _family_rows("content", "tau") + (
    # Our extension: the content model that also reads the room's measured engagement so far
    # when the score is needed: what the ID models read (counters, hour, position in the room) +
    # the freshest complete label (LVTR of segment t - 2, WindowConfig.label_delay).
    Entry("content+engagement", "content", overrides=(("use_counters", True),)),
    # ... trained with the pointwise loss alone: the loss ablation's best row on the *validation*
    # rooms of the default world (point 0.514 vs the papers' point+L1+align 0.496, 1 seed)
    Entry("content+engagement+point", "content", "point", overrides=(("use_counters", True),)),
)
LOSS_ABLATION = tuple(Entry(f"loss:{loss}", "content", loss) for loss in model_info("content").paper["loss_ablation"])
MODALITY_ABLATION = _family_rows("content", "drop_pct")
ALL_ENTRIES = ID_BASELINES + TABLE1_VARIANTS + LOSS_ABLATION + MODALITY_ABLATION


@dataclasses.dataclass(frozen=True)
class CompareBudget:
    """The same training budget for every entry: the ``small`` training preset's (4 epochs over
    windows at stride 4, early stopping after 2 epochs without a better validation tau-b). A
    smaller budget (2 epochs at stride 8) left the content model under-trained (test tau-b 0.45
    against 0.54) while the ID models had already converged: it measured the budget, not the models."""

    epochs: int = 4
    stride: int = 4
    batch_size: int = 48
    patience: int = 2
    lr_grid: Tuple[float, ...] = (1e-3, 3e-3)
    seeds: int = 3


def entries_for(names: Optional[Sequence[str]]) -> List[Entry]:
    """The entries named (registry names or row names), or all of them."""
    if not names:
        return list(ALL_ENTRIES)
    by_name = {e.name: e for e in ALL_ENTRIES}
    out = []
    for name in names:
        if name in by_name:
            out.append(by_name[name])
        else:
            if name not in list_models():
                raise KeyError(f"unknown model or row {name!r}; rows: {sorted(by_name)}; models: {list_models()}")
            out.append(Entry(name, name))
    return out


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
    summary = train(data_dir, run_dir, cfg, progress=progress)
    test = evaluate_run(
        run_dir,
        data_dir,
        "test",
        json_out=run_dir / "test.json",
        predictions_out=run_dir / "test_predictions.parquet",
        progress=False,
    )
    logger.info(
        "%s lr=%g seed=%d: val tau %.4f, test tau %.4f (%.0f s)",
        entry.name,
        lr,
        seed,
        summary["best_val_tau"],
        test["tau"],
        time.perf_counter() - t0,
    )
    return {"summary": summary, "test": test}


def _aggregate(values: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key in METRIC_KEYS:
        xs = [float(v[key]) for v in values]
        out[key] = {
            "mean": float(np.mean(xs)),
            "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else float("nan"),
            "values": xs,
        }
    return out


def welch_se(a: Dict[str, Any], b: Dict[str, Any]) -> float:
    """Standard error of mean(a) - mean(b) (Welch): ``sqrt(var_a / n_a + var_b / n_b)``; NaN with < 2 seeds each."""
    xa, xb = a["values"], b["values"]
    if len(xa) < 2 or len(xb) < 2:
        return float("nan")
    return math.sqrt(np.var(xa, ddof=1) / len(xa) + np.var(xb, ddof=1) / len(xb))


def significant(a: Dict[str, Any], b: Dict[str, Any]) -> Optional[bool]:
    """Is mean(a) - mean(b) at least two standard errors (Welch) from 0? None with < 2 seeds each."""
    se = welch_se(a, b)
    if math.isnan(se):
        return None
    diff = float(np.mean(a["values"]) - np.mean(b["values"]))
    return abs(diff) >= 2 * se if se > 0 else diff != 0


TRIVIAL_ROW = "trivial (previous segment's label)"
COMPLETE_ROW = "last complete label (known at scoring time)"
CEILING_ROW = "ceiling (hidden true rate)"


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
    out = {
        TRIVIAL_ROW: evaluate_segments(labels, refs["previous_segment_label"], room_ids=live),
        COMPLETE_ROW: evaluate_segments(labels, refs["last_complete_label"], room_ids=live),
    }
    truth_path = Path(data_dir) / "truth" / "segments_truth.parquet"
    if truth_path.exists():
        truth = pq.read_table(truth_path, columns=["live_id", "segment", "true_lvtr"]).to_pandas()
        merged = preds.merge(truth, on=["live_id", "segment"], how="left")
        if merged["true_lvtr"].isna().any():
            raise ValueError(f"{truth_path}: {int(merged['true_lvtr'].isna().sum())} scored segments have no true rate")
        out[CEILING_ROW] = evaluate_segments(labels, merged["true_lvtr"].to_numpy(), room_ids=live)
    return out


def _training_key(entry: Entry) -> Tuple[str, str, Tuple[Tuple[str, Any], ...]]:
    """What a run of ``entry`` trains: (model, resolved loss configuration, overrides). Two rows
    with the same key (e.g. ``content`` and ``loss:point+L1+align``, whose loss presets are equal)
    share their runs instead of training the same thing twice."""

    loss = entry.loss or default_loss(entry.model)
    return entry.model, repr(LOSS_PRESETS[loss]), tuple(sorted(entry.overrides))


def default_loss(model: str) -> str:
    """The loss preset a registered model trains with by default (its registry entry)."""
    return model_info(model).default_loss


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


def run_world(
    data_dir: Path, out_dir: Path, entries: Sequence[Entry], budget: CompareBudget, progress: bool = True, jobs: int = 1
) -> Dict[str, Any]:
    """Every entry on one world: lr search on seed 0, then ``budget.seeds`` seeds; aggregated metrics.

    Rows that train the same thing (:func:`_training_key`) share runs; ``jobs`` > 1 trains that
    many runs at once in worker processes (phase 1: every learning rate on seed 0; phase 2: the
    other seeds at each entry's chosen rate).
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
    try:
        search_tasks = [(data_dir, run_path(e, lr, 0), e, lr, 0, budget) for e in trained for lr in budget.lr_grid]
        search_out = runner.map(search_tasks, lambda: bar.update(1))
        search = {(t[2].name, t[3]): r for t, r in zip(search_tasks, search_out)}
        best = {
            e.name: max(budget.lr_grid, key=lambda lr: search[(e.name, lr)]["summary"]["best_val_tau"]) for e in trained
        }
        seed_tasks = [
            (data_dir, run_path(e, best[e.name], seed), e, best[e.name], seed, budget)
            for e in trained
            for seed in range(1, budget.seeds)
        ]
        seed_out = runner.map(seed_tasks, lambda: bar.update(1))
    finally:
        runner.close()
        bar.close()
    per_entry: Dict[str, List[Dict[str, Any]]] = {e.name: [search[(e.name, best[e.name])]] for e in trained}
    for t, r in zip(seed_tasks, seed_out):
        per_entry[t[2].name].append(r)
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


def _fmt(stat: Dict[str, Any]) -> str:
    if math.isnan(stat["std"]):
        return f"{stat['mean']:.4f}"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _table(rows: List[List[str]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _world_section(name: str, res: Dict[str, Any]) -> List[str]:
    models = res["models"]
    entries = {e.name: e for e in ALL_ENTRIES}
    best_baseline = best_id_model(models)
    ref_name = "content" if "content" in models else None

    def row(n: str) -> List[str]:
        m = models[n]
        cells = [n] + [_fmt(m[k]) for k in ("tau", "tau@0.2", "tau@0.4", "tau@0.6", "per_room_tau")]
        margin = margin_over_best_id(models, n) if n != best_baseline else None
        if margin is not None:
            cells.append(f"{margin['delta']:+.4f}" + _significance_mark(margin["significant"]))
        else:
            cells.append("")
        paper = entries.get(n).paper_tau if n in entries else None
        cells.append(f"{paper:.4f}" if paper else "")
        return cells

    header = [
        "method",
        "tau",
        "tau@0.2",
        "tau@0.4",
        "tau@0.6",
        "per-room tau",
        f"Δ tau vs best ID model ({best_baseline})",
        "paper (KLive)",
    ]
    out = [f"## World `{name}`", "", f"{res['seconds'] / 60:.1f} minutes of training and scoring.", ""]
    refs = [
        [k] + [f"{v[m]:.4f}" for m in ("tau", "tau@0.2", "tau@0.4", "tau@0.6", "per_room_tau")] + ["", ""]
        for k, v in res["references"].items()
    ]
    t1 = [n for n in [e.name for e in ID_BASELINES + TABLE1_VARIANTS] if n in models]
    if t1:
        out += ["### Table 1: methods (test rooms)", "", _table(refs + [row(n) for n in t1], header), ""]
    t4 = [e.name for e in LOSS_ABLATION if e.name in models]
    if t4:
        out += ["### Table 4: loss ablation (content model)", "", _table([row(n) for n in t4], header), ""]
    t3 = [e.name for e in MODALITY_ABLATION if e.name in models]
    if t3 and ref_name:
        base = models[ref_name]["tau"]["mean"]
        rows = [
            [
                n,
                _fmt(models[n]["tau"]),
                f"{100 * (models[n]['tau']['mean'] - base) / base:+.2f}%",
                ("n.s." if significant(models[n]["tau"], models[ref_name]["tau"]) is False else ""),
                f"{model_info(n).paper['drop_pct']:+.2f}%",
            ]
            for n in t3
        ]
        out += [
            "### Table 3: modality ablation",
            "",
            _table(rows, ["method", "tau", "change vs content", "", "paper"]),
            "",
        ]
    out += [
        "Learning rate chosen per entry (validation tau-b, seed 0): "
        + ", ".join(f"{k} {v['chosen']:g}" for k, v in res["lr"].items()),
        "",
    ]
    return out


def margin_over_best_id(models: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    """``name``'s tau minus the best ID baseline's (by mean) on one world: ``{"baseline", "delta",
    "se", "significant"}`` (Welch standard error; None when the world has no ID baseline)."""
    best = best_id_model(models)
    if best is None or name not in models:
        return None
    a, b = models[name]["tau"], models[best]["tau"]
    return {"baseline": best, "delta": a["mean"] - b["mean"], "se": welch_se(a, b), "significant": significant(a, b)}


def _significance_mark(sig: Optional[bool]) -> str:
    """'' (significant), ' (n.s.)' or ' (1 seed)' (no standard error) after a difference."""
    return "" if sig else " (n.s.)" if sig is False else " (1 seed)"


def best_id_model(models: Dict[str, Any]) -> Optional[str]:
    """The ID baseline with the highest mean tau among ``models`` (None when there is none)."""
    baselines = [e.name for e in ID_BASELINES if e.name in models]
    return max(baselines, key=lambda n: models[n]["tau"]["mean"]) if baselines else None


def _margin_section(results: Dict[str, Any]) -> List[str]:
    """With several worlds: every non-ID row's margin over the best ID model, world by world
    (the content model should gain where content carries signal and not on a content_signal 0 world)."""
    worlds = results["worlds"]
    if len(worlds) < 2:
        return []
    id_names = {e.name for e in ID_BASELINES}
    names = [
        n
        for n in next(iter(worlds.values()))["models"]
        if n not in id_names and all(n in w["models"] for w in worlds.values())
    ]
    rows = []
    for n in names:
        cells = [n]
        for w in worlds.values():
            m = margin_over_best_id(w["models"], n)
            if m is None:
                cells.append("")
                continue
            mark = _significance_mark(m["significant"])
            cells.append(
                f"{m['delta']:+.4f} ± {m['se']:.4f}{mark}" if not math.isnan(m["se"]) else f"{m['delta']:+.4f}{mark}"
            )
        rows.append(cells)
    header = ["method"] + [f"Δ tau vs best ID model, `{w}`" for w in worlds]
    return [
        "## Margin over the best ID model, world by world",
        "",
        "Mean difference ± its standard error (Welch); 'n.s.': smaller than two standard errors.",
        "",
        _table(rows, header),
        "",
    ]


def write_report(out_dir: Path, results: Dict[str, Any]) -> Path:
    lines = [
        "# kuaihl compare",
        "",
        "All numbers are on **synthetic data** (the `kuaihl world` generator), mean ± standard deviation over "
        f"{results['budget']['seeds']} seed(s); 'n.s.' marks a difference smaller than two standard errors. "
        "The papers' KLive numbers are shown for orientation only: a different dataset.",
        "",
    ]
    lines += _margin_section(results)
    for name, res in results["worlds"].items():
        lines += _world_section(name, res)
    for fig in ("fig4_room_timeline.png", "fig6_dtw_alignment.png"):
        if (out_dir / fig).exists():
            lines += [f"![{fig}]({fig})", ""]
    path = out_dir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


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
        figure6(first, res, out_dir / "fig6_dtw_alignment.png")
    except Exception as exc:  # a figure must not lose the tables; say why it is missing
        logger.error("figures not written: %s", exc)
        results["figure_error"] = str(exc)
        atomic_write_json(out_dir / "results.json", results)
    return write_report(out_dir, results)
