"""``kuaihl phd``'s summary and report.md: mean +- sd over seeds, paired differences against the
generic (history-free) model and the references, beside the papers' PHD-GIFs numbers (synthetic)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from kuaihl_rec.apps.phd_models import GENERIC_OF, GENERIC_ROW, PAPER_OTHER_ROWS, PHD_ROWS
from kuaihl_rec.data.io import atomic_write_bytes

WORLD_TITLES = {"personalised": "Personalised world (history carries signal)",
                "twin": "Twin world (preference_signal = 0: highlights independent of the user)"}


def _stats(values: List[float]) -> Dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0, "n": int(arr.size)}


def summarise(runs: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> Dict[str, Dict[str, Any]]:
    """Per world and row: mAP / HIT@1 stats and the per-seed paired mAP difference against the
    generic row and the best reference (where those rows ran)."""
    out: Dict[str, Dict[str, Any]] = {}
    for world, rows in runs.items():
        out[world] = {}
        refs = [r for r in ("random", "position_prior") if r in rows]
        for name in [r for r in PHD_ROWS if r in rows]:  # the table order, whatever order the runs came in
            results = rows[name]
            maps = [r["map"] for r in results]
            entry = {"map": _stats(maps), "hit1": _stats([r["hit1"] for r in results]),
                     "uses_history": PHD_ROWS[name].uses_history}
            if GENERIC_ROW in rows and name != GENERIC_ROW:
                diff = [a - r["map"] for a, r in zip(maps, rows[GENERIC_ROW])]
                entry["vs_generic"] = {**_stats(diff), "wins": int(sum(d > 0 for d in diff))}
            twin = GENERIC_OF.get(name)
            if twin in rows and twin != name:
                diff = [a - r["map"] for a, r in zip(maps, rows[twin])]
                entry["vs_own_generic"] = {**_stats(diff), "wins": int(sum(d > 0 for d in diff)), "row": twin}
            if all("map_other_history" in r for r in results):
                diff = [r["map"] - r["map_other_history"] for r in results]
                entry["vs_other_history"] = {**_stats(diff), "wins": int(sum(d > 0 for d in diff))}
            if refs:
                best = [max(rows[r][i]["map"] for r in refs) for i in range(len(maps))]
                diff = [a - b for a, b in zip(maps, best)]
                entry["vs_best_reference"] = {**_stats(diff), "wins": int(sum(d > 0 for d in diff))}
            out[world][name] = entry
    return out


def _pm(s: Dict[str, float]) -> str:
    return f"{s['mean']:.2f} ± {s['sd']:.2f}"


def _diff(entry: Dict[str, Any], key: str) -> str:
    d = entry.get(key)
    return "" if d is None else f"{d['mean']:+.2f} ± {d['sd']:.2f} ({d['wins']}/{d['n']})"


def _table(rows: Dict[str, Any]) -> List[str]:
    lines = ["| row | history | mAP (%) | HIT@1 (%) | mAP − generic (wins) | mAP − same-architecture generic (wins) "
             "| mAP − best reference (wins) | own − other user's history (wins) | paper mAP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, e in rows.items():
        paper = PHD_ROWS[name].paper_map
        lines.append(f"| {name} | {'yes' if e['uses_history'] else 'no'} | {_pm(e['map'])} | {_pm(e['hit1'])} | "
                     f"{_diff(e, 'vs_generic')} | {_diff(e, 'vs_own_generic')} | {_diff(e, 'vs_best_reference')} | "
                     f"{_diff(e, 'vs_other_history')} | "
                     f"{'' if paper is None else f'{paper:.2f}'} |")
    return lines


def _always(hist: Dict[str, Any], key: str) -> List[str]:
    return [n for n, e in hist.items() if key in e and e[key]["wins"] == e[key]["n"]]


def _verdict(world: str, rows: Dict[str, Any]) -> List[str]:
    hist = {n: e for n, e in rows.items() if e["uses_history"]}
    if not hist:
        return []
    out = []
    for key, what in (("vs_generic", "the generic model (ContentCTR-HL w/o history)"),
                      ("vs_own_generic", "their same-architecture generic row"),
                      ("vs_best_reference", "the best reference"),
                      ("vs_other_history", "themselves scored with another user's history")):
        names = _always(hist, key)
        out.append(f"- history-using rows above {what} in every seed: {', '.join(names) or 'none'} "
                   f"({len(names)}/{len(hist)})")
    return out


def write_report(path: Path, summary: Dict[str, Any], worlds: Dict[str, Any], args: argparse.Namespace) -> None:
    """report.md (see module doc)."""
    lines = ["# Personalised highlight detection — **synthetic** comparison", "",
             f"Command: `kuaihl phd --out {args.out} --seeds {args.seeds} --epochs {args.epochs}"
             + (f" --models {args.models}" if args.models else "") + "".join(f" --set {s}" for s in args.set or [])
             + "`", "",
             "All numbers are on the **synthetic** personalised world (docs/HIGHLIGHTS.md), not PHD-GIFs; the paper "
             "column is the papers' PHD-GIFs mAP, for orientation only (different data, features and scale). "
             "mean ± sd over seeds (each seed draws its own world and training); differences are paired per seed, "
             "wins = seeds where the row is higher. Protocol: per test user, 30 fps frames of the target video, "
             "union of the user's selections, scores averaged in 5 s blocks, Video2GIF interpolated AP, mean × 100; "
             "HIT@1 = the top 5 s block holds a positive frame. \"generic\" = ContentCTR-HL w/o history; "
             "\"same-architecture generic\" = ContentCTR-HL w/o history for the ContentCTR-HL rows, PR-Net_G for "
             "the PR-Net rows. \"own − other user's history\": the same trained "
             "model scored with each test user's own history minus with the next test user's history (does the "
             "model use *this* user's history?).", ""]
    for world, rows in summary.items():
        cfg = worlds.get(world, {}).get("config")
        knobs = "" if cfg is None else (f" (preference_signal = {cfg.preference_signal}, generic_weight = "
                                        f"{cfg.generic_weight}, interests_per_user = {cfg.interests_per_user}, "
                                        f"history_size = {cfg.history_size}, {cfg.n_train_users} train / "
                                        f"{cfg.n_test_users} test users)")
        lines += [f"## {WORLD_TITLES.get(world, world)}{knobs}", ""] + _table(rows) + [""]
        lines += _verdict(world, rows) + [""]
    lines += ["Papers' other PHD-GIFs rows (mAP %): "
              + ", ".join(f"{k} {v:.2f}" for k, v in PAPER_OTHER_ROWS.items()) + ".", ""]
    atomic_write_bytes(path, "\n".join(lines).encode())


__all__ = ["summarise", "write_report"]
