"""``kuaihl compare``'s report: per-world tables in the papers' layouts (Tables 1, 3, 4), the margin
of each content row over the best ID model, Welch standard errors and significance marks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from kuaihl_rec.apps.compare_entries import (
    ALL_ENTRIES,
    COLD_START,
    PRETRAINED_ID,
    ID_BASELINES,
    LOSS_ABLATION,
    LOSS_ABLATION_SUM,
    METRIC_KEYS,
    MODALITY_ABLATION,
    RAW_MEDIA,
    TABLE1_VARIANTS,
)
from kuaihl_rec.data.io import atomic_write_bytes
from kuaihl_rec.model.registry import model_info
from kuaihl_rec.train.cold_start import SLICE_METRICS


def _aggregate(values: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key in METRIC_KEYS + SLICE_METRICS:  # a run scored before the slices existed has none: NaN
        xs = [float(v.get(key, math.nan)) for v in values]
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


def _fmt(stat: Dict[str, Any]) -> str:
    if math.isnan(stat["std"]):
        return f"{stat['mean']:.4f}"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


# The metric columns of the paper-style tables: Table 1 / 4 layout, then the warm / cold-start slices.
_COLUMNS = ("tau", "tau@0.2", "tau@0.4", "tau@0.6", "per_room_tau") + SLICE_METRICS


def _table(rows: List[List[str]], header: List[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _world_section(name: str, res: Dict[str, Any]) -> List[str]:
    models = res["models"]
    entries = {e.name: e for e in ALL_ENTRIES + RAW_MEDIA}
    best_baseline = best_id_model(models)
    ref_name = "content" if "content" in models else None

    def row(n: str) -> List[str]:
        m = models[n]
        cells = [n] + [_fmt(m[k]) if k in m else "" for k in _COLUMNS]
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
        "tau warm",
        "tau cold-start",
        f"Δ tau vs best ID model ({best_baseline})",
        "paper (KLive)",
    ]
    out = [f"## World `{name}`", "", f"{res['seconds'] / 60:.1f} minutes of training and scoring.", ""]
    refs = [
        [k] + [f"{v[m]:.4f}" if m in v else "" for m in _COLUMNS] + ["", ""]
        for k, v in res["references"].items()
    ]
    t1 = [n for n in [e.name for e in ID_BASELINES + TABLE1_VARIANTS + COLD_START + PRETRAINED_ID + RAW_MEDIA]
          if n in models]
    if t1:
        out += ["### Table 1: methods (test rooms)", "", _table(refs + [row(n) for n in t1], header), ""]
    t4 = [e.name for e in LOSS_ABLATION + LOSS_ABLATION_SUM if e.name in models]
    if t4:
        out += ["### Table 4: loss ablation (content model)", "", _table([row(n) for n in t4], header), ""]
    t3 = [e.name for e in MODALITY_ABLATION if e.name in models]
    if t3 and ref_name:
        base = models[ref_name]["tau"]["mean"]
        rows = [
            [
                n,
                _fmt(models[n]["tau"]),
                *(_fmt(models[n][k]) if k in models[n] else "" for k in SLICE_METRICS),
                f"{100 * (models[n]['tau']['mean'] - base) / base:+.2f}%",
                ("n.s." if significant(models[n]["tau"], models[ref_name]["tau"]) is False else ""),
                f"{model_info(n).paper['drop_pct']:+.2f}%",
            ]
            for n in t3
        ]
        out += [
            "### Table 3: modality ablation",
            "",
            _table(rows, ["method", "tau", "tau warm", "tau cold-start", "change vs content", "", "paper"]),
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
    for fig in ("fig4_room_timeline.png", "fig5_loss_terms.png", "fig6_dtw_alignment.png"):
        if (out_dir / fig).exists():
            lines += [f"![{fig}]({fig})", ""]
    path = out_dir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
