"""``OUT/report.md`` and ``OUT/figures/*.png`` of an offline A/B run, from the ``ab.json`` content.

Figures: the lift intervals per metric and arm (``lifts.png``), the daily lifts of the treatment
(``daily.png``), the weight sweep as a CTR-lift vs play-duration-lift curve next to what
re-weighting only the existing terms reaches, and the oracle curve (``sweep.png``), and CTR by
feed position (``positions.png``).

The report's sections (setup, randomised experiment, paired design, sanity arms, weight sweep,
position effect, reproduce) are written by one function each; figures need matplotlib, imported on
first use.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from kuaihl_rec.data.io import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = ["summary_lines", "write_report"]

KEY_METRICS = ("ctr", "long_view_rate", "play_duration_per_user", "clicks_per_user", "impressions_per_user",
               "sessions_per_user", "short_views_per_user")
_LABEL = {
    "ctr": "CTR",
    "long_view_rate": "long-view rate (> 60 s)",
    "play_duration_per_user": "play duration / user",
    "clicks_per_user": "clicks / user",
    "impressions_per_user": "impressions / user",
    "sessions_per_user": "sessions / user",
    "short_views_per_user": "short views (< 3 s) / user",
    "short_view_rate": "short-view rate",
}


def _pct(x: Optional[float], digits: int = 2) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.{digits}f}%"


def _p(x: Optional[float]) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return "<1e-4" if x < 1e-4 else f"{x:.4f}"


def _val(metric: str, v: float) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "n/a"
    if metric == "play_duration_per_user":
        return f"{v / 60:.2f} min"
    if metric in ("ctr", "long_view_rate", "short_view_rate"):
        return f"{100 * v:.2f}%"
    return f"{v:.3f}"


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


_ROLE_ORDER = {"control": 0, "treatment": 1, "arm": 2, "aa": 3, "placebo": 4, "oracle": 5}


def _by_role(arms: Mapping[str, Any]) -> List[Any]:
    """Arms in reading order: control, treatment, other arms, then the sanity arms (stable within a role)."""
    return sorted(arms.items(), key=lambda kv: _ROLE_ORDER.get(kv[1].get("role"), 2))


def _ci(ci: Sequence[float]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def _arm_table(block: Mapping[str, Any], with_extras: bool, skip_roles: Sequence[str] = ()) -> str:
    control = block["control"]
    rows = []
    for arm, entry in _by_role(block["arms"]):
        if arm == control or "metrics" not in entry or entry.get("role") in skip_roles:
            continue
        for metric in KEY_METRICS:
            lift = entry["metrics"].get(metric)
            if lift is None:
                continue
            row = [arm, _LABEL[metric], _val(metric, lift["control"]), _val(metric, lift["treatment"]),
                   _pct(lift["lift"]), _ci(lift["ci"]), _p(lift["p_value"]), _p(lift.get("p_holm"))]
            if with_extras:
                boot = lift.get("bootstrap") or {}
                cuped = lift.get("cuped") or {}
                row += [_ci(boot["ci"]) if boot else "", f"{_pct(cuped['lift'])} {_ci(cuped['ci'])}" if cuped else ""]
            rows.append(row)
    header = ["arm", "metric", "control", "arm value", "lift", "95% CI", "p", "p (Holm)"]
    if with_extras:
        header += ["bootstrap 95% CI", "CUPED lift [95% CI]"]
    return _table(rows, header)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def _pyplot():
    """matplotlib's pyplot on the Agg backend."""
    import matplotlib  # lazy: heavy, and only needed when figures are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def plot_lifts(block: Mapping[str, Any], title: str) -> bytes:
    plt = _pyplot()
    control = block["control"]
    arms = [a for a, e in _by_role(block["arms"]) if a != control and "metrics" in e]
    metrics = [m for m in KEY_METRICS if m != "sessions_per_user"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.42 * len(metrics) * max(len(arms), 1)))
    y, ticks, labels = 0, [], []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for metric_index, metric in enumerate(metrics):
        for arm_index, arm in enumerate(arms):
            lift = block["arms"][arm]["metrics"][metric]
            lo, hi = lift["ci"]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lift["lift"], lo, hi)):
                ax.errorbar(100 * lift["lift"], y, xerr=[[100 * (lift["lift"] - lo)], [100 * (hi - lift["lift"])]],
                            fmt="o", color=colors[arm_index % len(colors)], capsize=3,
                            label=arm if metric_index == 0 else None)
            ticks.append(y)
            labels.append(f"{_LABEL[metric]} · {arm}")
            y -= 1
        y -= 0.6
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(ticks)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("relative lift vs control (%), 95% CI")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    return _fig_bytes(fig)


def plot_daily(block: Mapping[str, Any], arm: str) -> bytes:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator  # lazy: with pyplot

    metrics = ("ctr", "play_duration_per_user")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, metric in zip(axes, metrics):
        points = block["daily"].get(arm, {}).get(metric, [])
        points = [p for p in points if all(math.isfinite(v) for v in (p["lift"], *p["ci"]))]
        if points:
            day = [p["day"] for p in points]
            lift = [100 * p["lift"] for p in points]
            below = [100 * (p["lift"] - p["ci"][0]) for p in points]
            above = [100 * (p["ci"][1] - p["lift"]) for p in points]
            ax.errorbar(day, lift, yerr=[below, above], fmt="o-", capsize=3)
            pooled = block["arms"][arm]["metrics"][metric]
            ax.axhline(100 * pooled["lift"], color="C1", ls="--", lw=1, label=f"pooled {_pct(pooled['lift'])}")
            ax.legend(fontsize=8)
        ax.axhline(0, color="grey", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("simulated day")
        ax.set_ylabel("lift vs control (%)")
        ax.set_title(f"{arm}: {_LABEL[metric]}")
    fig.tight_layout()
    return _fig_bytes(fig)


def _lift_and_error(points: Sequence[Mapping[str, Any]], metric: str) -> Tuple[List[float], List[List[float]]]:
    """Lifts (%) of ``metric`` at the sweep's points and their error bars (%, below and above)."""
    lift = [100 * p[metric]["lift"] for p in points]
    error = [[100 * (p[metric]["lift"] - p[metric]["ci"][0]) for p in points],
             [100 * (p[metric]["ci"][1] - p[metric]["lift"]) for p in points]]
    return lift, error


def plot_sweep(sweep: Mapping[str, Any]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    existing = sweep.get("existing_points") or []
    if existing:
        ax.scatter([100 * p["ctr"]["lift"] for p in existing],
                   [100 * p["play_duration_per_user"]["lift"] for p in existing], s=14, color="grey", alpha=0.7,
                   label="re-weighting existing terms only")
    curves = (("points", "C0", f"+ w x {sweep['term']}"), ("oracle_points", "C3", "+ w x oracle (true LVTR)"))
    for key, color, name in curves:
        points = sweep.get(key) or []
        if not points:
            continue
        x, x_error = _lift_and_error(points, "ctr")
        y, y_error = _lift_and_error(points, "play_duration_per_user")
        ax.errorbar(x, y, xerr=x_error, yerr=y_error, fmt="o-", color=color, capsize=2, label=name)
        for p, xi, yi in zip(points, x, y):
            ax.annotate(f"{p['weight']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=color)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("CTR lift vs control (%)")
    ax.set_ylabel("play-duration lift vs control (%)")
    ax.set_title("weight sweep (paired, common random numbers)")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def plot_positions(block: Mapping[str, Any]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for arm, entry in block["arms"].items():
        position = entry.get("position")
        if not position:
            continue
        impressions, clicks = position["impressions"], position["clicks"]
        shown = [k for k in range(len(impressions)) if impressions[k] >= 50]
        ax.plot([k + 1 for k in shown], [100 * clicks[k] / impressions[k] for k in shown], "o-", ms=3, label=arm)
    ax.set_xlabel("feed position")
    ax.set_ylabel("CTR (%)")
    ax.set_title("CTR by position (positions with >= 50 impressions)")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def _write_figures(result: Mapping[str, Any], out_dir: Path) -> Dict[str, str]:
    """Draw the figures into ``out_dir/figures``; figure name -> path relative to ``out_dir``."""
    randomised = result["randomised"]
    treatment = _treatment(randomised)
    figures: Dict[str, str] = {}
    try:
        items: List[Tuple[str, Callable[[], bytes]]] = [
            ("lifts", lambda: plot_lifts(randomised, "randomised experiment: lift vs control"))]
        if "paired" in result:
            items.append(("lifts_paired",
                          lambda: plot_lifts(result["paired"], "paired (common random numbers): lift vs control")))
        if treatment:
            items.append(("daily", lambda: plot_daily(randomised, treatment)))
        if result.get("sweep"):
            items.append(("sweep", lambda: plot_sweep(result["sweep"])))
        items.append(("positions", lambda: plot_positions(randomised)))
        for name, draw in items:
            atomic_write_bytes(out_dir / "figures" / f"{name}.png", draw())
            figures[name] = f"figures/{name}.png"
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        logger.warning("matplotlib not available: report without figures")
    return figures


# ------------------------------------------------------------------------------------------------
# Text
# ------------------------------------------------------------------------------------------------


def _treatment(block: Mapping[str, Any]) -> Optional[str]:
    return next((a for a, e in block["arms"].items() if e.get("role") == "treatment"), None)


def summary_lines(result: Mapping[str, Any],
                  metrics: Sequence[str] = ("ctr", "play_duration_per_user", "long_view_rate")) -> List[str]:
    """A few lines for a terminal: each arm's lifts (randomised design, and paired when run) and the sanity
    verdicts."""
    feed = result["world"]["feed"]
    lines = [f"{feed['rooms']} {result['world']['split']} rooms on {result['world']['days']} simulated day(s), "
             f"{feed['mean_rooms_on_air']:.1f} rooms on air at session starts; "
             f"{result['design']['users_observed']:,} users with a session"]
    for design in ("randomised", "paired"):
        block = result.get(design)
        if not block:
            continue
        for arm, entry in _by_role(block["arms"]):
            if "metrics" not in entry or (design == "paired" and entry.get("role") == "aa"):
                continue
            parts = [f"{_LABEL[m]} {_pct(entry['metrics'][m]['lift'])} {_ci(entry['metrics'][m]['ci'])}"
                     for m in metrics]
            lines.append(f"{design:<10} {arm:<10} " + "; ".join(parts))
    sanity = result.get("sanity") or {}
    if sanity:
        lines.append("sanity: " + ", ".join(f"{k}={v}" for k, v in sanity.items() if isinstance(v, bool)))
    return lines


def _missing_summary(missing: Mapping[str, Any]) -> str:
    return (f"{missing['n_missing']} / {missing['n_rows']} ({100 * missing['share_missing']:.1f}%): "
            f"{missing['n_carried']} carried, {missing['n_prior']} prior ({missing['prior']:.3g})")


def _terms_table(terms: Mapping[str, Any]) -> str:
    rows = []
    for name, term in terms.items():
        calibration = term["calibration"]
        fitted_on = f" ({calibration['fitted_on']})" if calibration.get("fitted_on") else ""
        rows.append([name, term["source"], calibration["kind"] + fitted_on, _missing_summary(term["missing"])])
    return _table(rows, ["term", "source", "calibration", "missing scores (filled)"])


def _setup_section(result: Mapping[str, Any]) -> List[str]:
    world, feed, design = result["world"], result["world"]["feed"], result["design"]
    span = (("; its days are folded together, each room keeping its time of day" if world.get("folded") else "")
            + ("; its days are replayed cyclically" if world.get("replayed") else ""))
    return [
        "# Offline A/B test of a ranking change",
        "",
        "All numbers are from the **simulator on the synthetic world's hidden truth** (`ranking.simulator`), "
        "not from a real platform.",
        "",
        "## Setup",
        "",
        f"- world: `{world['dir']}` (preset `{world.get('world_preset')}`, content_signal "
        f"{world.get('content_signal')}); simulated: the `{world['split']}` split only ({design['out_of_sample']})",
        f"- {feed['rooms']} rooms ({feed['segments']} room-segments) on {world['days']} simulated day(s) "
        f"(the world spans {world['world_days']}{span})",
        f"- feed: {feed['mean_rooms_on_air']:.2f} rooms on air on average when a session starts; "
        f"{100 * feed['share_ge2']:.0f}% of starts see >= 2 rooms, {100 * feed['share_ge5']:.0f}% see >= 5 "
        f"(max {feed['max_rooms_on_air']})",
        f"- users: {design['n_users']} simulated ({design['users_observed']} with a session), seed {design['seed']}; "
        f"randomisation: {design['randomisation']}",
        f"- CUPED pre-period: {design['pre_period']}; bootstrap: {design['n_boot']} Poisson replicates of users",
        "",
        "### Arms",
        "",
        _table([[a, e["role"], f"`{e['formula']}`"] for a, e in _by_role(result["arms"])], ["arm", "role", "formula"]),
        "",
        "### Terms",
        "",
        _terms_table(result["terms"]),
        "",
    ]


def _randomised_section(result: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
    randomised = result["randomised"]
    lines = ["## Randomised experiment (users split between arms by hashed id)", ""]
    srm = randomised.get("srm")
    if srm:
        verdict = "**MISMATCH: do not trust the lifts**" if srm["mismatch"] else "no mismatch"
        lines += [f"Sample-ratio check: users per arm {dict(zip(srm['arms'], srm['counts']))}, "
                  f"chi2 = {srm['chi2']:.2f} (dof {srm['dof']}), p = {_p(srm['p_value'])} -> {verdict}", ""]
    lines += [_arm_table(randomised, with_extras=True), ""]
    if "lifts" in figures:
        lines += [f"![lift intervals]({figures['lifts']})", ""]
    if "daily" in figures:
        lines += ["### Daily lifts of the treatment", "", f"![daily lifts]({figures['daily']})", ""]
    return lines


def _paired_section(result: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
    if "paired" not in result:
        return []
    lines = ["## Paired design (every user in every arm, common random numbers)", "",
             "The same users, sessions and random draws in every arm: differences come from the ranking alone "
             "(so an A/A arm is identical to control by construction and is left out; sessions per user are "
             "exogenous in the simulator and never differ).", "",
             _arm_table(result["paired"], with_extras=False, skip_roles=("aa",)), ""]
    if "lifts_paired" in figures:
        lines += [f"![paired lift intervals]({figures['lifts_paired']})", ""]
    return lines


def _sanity_section(result: Mapping[str, Any]) -> List[str]:
    sanity = result.get("sanity") or {}
    if not sanity:
        return []
    lines = ["## Sanity arms", ""]
    if "aa_ok" in sanity:
        lines.append(f"- A/A: CTR and play duration not significant: **{sanity['aa_ok']}** "
                     f"(significant metrics at 5%: {sanity['aa_significant_metrics'] or 'none'})")
    if "placebo" in sanity:
        lifts = ", ".join(f"{_LABEL[k]} {_pct(v['lift'])} {_ci(v['ci'])} p={_p(v['p_value'])}"
                          for k, v in sanity["placebo"].items())
        lines.append(f"- placebo (content scores shuffled): {lifts}; no significant gain: "
                     f"**{sanity['placebo_no_significant_gain']}** (a shuffled term can only add noise to the "
                     "ranking, so its lift is at most 0)")
    if "oracle_vs_treatment" in sanity:
        lifts = ", ".join(f"{_LABEL[k]} oracle {_pct(v['oracle'])} vs treatment {_pct(v['treatment'])}"
                          for k, v in sanity["oracle_vs_treatment"].items())
        lines.append(f"- oracle (true LVTR of the segment on air in place of the content score): {lifts}; "
                     f"oracle bounds treatment: **{sanity['oracle_bounds_treatment']}**")
    lines.append("")
    return lines


def _sweep_section(result: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
    sweep = result.get("sweep")
    if not sweep:
        return []
    lines = [f"## Weight sweep of `{sweep['term']}` (paired)", ""]
    rows = [[f"{p['weight']:g}", _pct(p["ctr"]["lift"]), _ci(p["ctr"]["ci"]), _pct(p["play_duration_per_user"]["lift"]),
             _ci(p["play_duration_per_user"]["ci"])] for p in sweep["points"]]
    lines += [_table(rows, ["weight", "CTR lift", "95% CI", "play-duration lift", "95% CI"]), ""]
    existing = sweep.get("existing_points") or []
    if existing:
        best_ctr = max(existing, key=lambda p: p["ctr"]["lift"])
        best_duration = max(existing, key=lambda p: p["play_duration_per_user"]["lift"])
        lines += [f"Re-weighting only the existing terms ({len(existing)} weightings) reaches at best CTR "
                  f"{_pct(best_ctr['ctr']['lift'])} (`{best_ctr['formula']}`) and play duration "
                  f"{_pct(best_duration['play_duration_per_user']['lift'])} (`{best_duration['formula']}`).", ""]
    if "sweep" in figures:
        lines += [f"![weight sweep]({figures['sweep']})", ""]
    return lines


def _closing_sections(result: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
    """The position effect and how to reproduce the run."""
    lines = []
    if "positions" in figures:
        lines += ["## Position effect", "", f"![CTR by position]({figures['positions']})", ""]
    call = result.get("call") or {}
    impressions = result.get("throughput", {}).get("impressions_simulated", 0)
    lines += ["## Reproduce", "", "```python",
              "from ranking.experiment import run_ab",
              f"run_ab({call.get('world_dir')!r}, {call.get('out_dir')!r}, {call.get('arms_config')!r}, "
              f"n_users={call.get('n_users')}, days={call.get('days')!r}, seed={call.get('seed')})",
              "```", "",
              f"`ab.json` holds every number above (timings in seconds: {result.get('timings_s')}; "
              f"{impressions:,} impressions simulated).", ""]
    return lines


def write_report(result: Mapping[str, Any], out_dir: Path, figures: bool = True) -> Path:
    """Write ``out_dir/report.md`` (and figures under ``out_dir/figures``); returns the report path."""
    out_dir = Path(out_dir)
    figure_paths = _write_figures(result, out_dir) if figures else {}
    lines = (_setup_section(result) + _randomised_section(result, figure_paths) + _paired_section(result, figure_paths)
             + _sanity_section(result) + _sweep_section(result, figure_paths) + _closing_sections(result, figure_paths))
    path = out_dir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
