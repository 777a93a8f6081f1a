"""``OUT/report.md`` and ``OUT/figures/*.png`` of an offline A/B run, from the ``ab.json`` content.

Figures: the lift intervals per metric and arm (``lifts.png``), the daily lifts of the treatment
(``daily.png``), the weight sweep as a CTR-lift vs play-duration-lift curve next to what
re-weighting only the existing terms reaches, and the oracle curve (``sweep.png``), and CTR by
feed position (``positions.png``).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

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


def _arm_table(block: Mapping[str, Any], with_extras: bool, skip_roles: Sequence[str] = ()) -> str:
    ctrl = block["control"]
    rows = []
    for arm, entry in _by_role(block["arms"]):
        if arm == ctrl or "metrics" not in entry or entry.get("role") in skip_roles:
            continue
        for m in KEY_METRICS:
            lf = entry["metrics"].get(m)
            if lf is None:
                continue
            row = [arm, _LABEL[m], _val(m, lf["control"]), _val(m, lf["treatment"]), _pct(lf["lift"]),
                   f"[{_pct(lf['ci'][0])}, {_pct(lf['ci'][1])}]", _p(lf["p_value"]), _p(lf.get("p_holm"))]
            if with_extras:
                b = lf.get("bootstrap") or {}
                c = lf.get("cuped") or {}
                row += [f"[{_pct(b['ci'][0])}, {_pct(b['ci'][1])}]" if b else "", f"{_pct(c['lift'])} [{_pct(c['ci'][0])}, {_pct(c['ci'][1])}]" if c else ""]
            rows.append(row)
    header = ["arm", "metric", "control", "arm value", "lift", "95% CI", "p", "p (Holm)"]
    if with_extras:
        header += ["bootstrap 95% CI", "CUPED lift [95% CI]"]
    return _table(rows, header)


def _fig_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_lifts(block: Mapping[str, Any], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctrl = block["control"]
    arms = [a for a, e in _by_role(block["arms"]) if a != ctrl and "metrics" in e]
    metrics = [m for m in KEY_METRICS if m != "sessions_per_user"]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.42 * len(metrics) * max(len(arms), 1)))
    y, ticks, labels = 0, [], []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for mi, m in enumerate(metrics):
        for ai, a in enumerate(arms):
            lf = block["arms"][a]["metrics"][m]
            lo, hi = lf["ci"]
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lf["lift"], lo, hi)):
                ax.errorbar(100 * lf["lift"], y, xerr=[[100 * (lf["lift"] - lo)], [100 * (hi - lf["lift"])]], fmt="o",
                            color=colors[ai % len(colors)], capsize=3, label=a if mi == 0 else None)
            ticks.append(y)
            labels.append(f"{_LABEL[m]} · {a}")
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("ctr", "play_duration_per_user")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, m in zip(axes, metrics):
        pts = block["daily"].get(arm, {}).get(m, [])
        pts = [p for p in pts if all(math.isfinite(v) for v in (p["lift"], *p["ci"]))]
        if pts:
            d = [p["day"] for p in pts]
            lift = [100 * p["lift"] for p in pts]
            lo = [100 * (p["lift"] - p["ci"][0]) for p in pts]
            hi = [100 * (p["ci"][1] - p["lift"]) for p in pts]
            ax.errorbar(d, lift, yerr=[lo, hi], fmt="o-", capsize=3)
            pooled = block["arms"][arm]["metrics"][m]
            ax.axhline(100 * pooled["lift"], color="C1", ls="--", lw=1, label=f"pooled {_pct(pooled['lift'])}")
            ax.legend(fontsize=8)
        ax.axhline(0, color="grey", lw=1)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("simulated day")
        ax.set_ylabel("lift vs control (%)")
        ax.set_title(f"{arm}: {_LABEL[m]}")
    fig.tight_layout()
    return _fig_bytes(fig)


def plot_sweep(sweep: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    ex = sweep.get("existing_points") or []
    if ex:
        ax.scatter([100 * p["ctr"]["lift"] for p in ex], [100 * p["play_duration_per_user"]["lift"] for p in ex], s=14, color="grey",
                   alpha=0.7, label="re-weighting existing terms only")
    for key, color, name in (("points", "C0", f"+ w x {sweep['term']}"), ("oracle_points", "C3", "+ w x oracle (true LVTR)")):
        pts = sweep.get(key) or []
        if not pts:
            continue
        x = [100 * p["ctr"]["lift"] for p in pts]
        y = [100 * p["play_duration_per_user"]["lift"] for p in pts]
        xe = [[100 * (p["ctr"]["lift"] - p["ctr"]["ci"][0]) for p in pts], [100 * (p["ctr"]["ci"][1] - p["ctr"]["lift"]) for p in pts]]
        ye = [[100 * (p["play_duration_per_user"]["lift"] - p["play_duration_per_user"]["ci"][0]) for p in pts],
              [100 * (p["play_duration_per_user"]["ci"][1] - p["play_duration_per_user"]["lift"]) for p in pts]]
        ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o-", color=color, capsize=2, label=name)
        for p, xi, yi in zip(pts, x, y):
            ax.annotate(f"{p['weight']:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("CTR lift vs control (%)")
    ax.set_ylabel("play-duration lift vs control (%)")
    ax.set_title("weight sweep (paired, common random numbers)")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def plot_positions(block: Mapping[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    for arm, e in block["arms"].items():
        pos = e.get("position")
        if not pos:
            continue
        imp, clk = pos["impressions"], pos["clicks"]
        ks = [k for k in range(len(imp)) if imp[k] >= 50]
        ax.plot([k + 1 for k in ks], [100 * clk[k] / imp[k] for k in ks], "o-", ms=3, label=arm)
    ax.set_xlabel("feed position")
    ax.set_ylabel("CTR (%)")
    ax.set_title("CTR by position (positions with >= 50 impressions)")
    ax.legend(fontsize=8)
    return _fig_bytes(fig)


def summary_lines(result: Mapping[str, Any], metrics: Sequence[str] = ("ctr", "play_duration_per_user", "long_view_rate")) -> List[str]:
    """A few lines for a terminal: each arm's lifts (randomised design, and paired when run) and the sanity verdicts."""
    lines = []
    f = result["world"]["feed"]
    lines.append(f"{f['rooms']} {result['world']['split']} rooms on {result['world']['days']} simulated day(s), "
                 f"{f['mean_rooms_on_air']:.1f} rooms on air at session starts; {result['design']['users_observed']:,} users with a session")
    for design in ("randomised", "paired"):
        block = result.get(design)
        if not block:
            continue
        for arm, e in _by_role(block["arms"]):
            if "metrics" not in e or (design == "paired" and e.get("role") == "aa"):
                continue
            parts = [f"{_LABEL[m]} {_pct(e['metrics'][m]['lift'])} [{_pct(e['metrics'][m]['ci'][0])}, {_pct(e['metrics'][m]['ci'][1])}]" for m in metrics]
            lines.append(f"{design:<10} {arm:<10} " + "; ".join(parts))
    s = result.get("sanity") or {}
    if s:
        lines.append("sanity: " + ", ".join(f"{k}={v}" for k, v in s.items() if isinstance(v, bool)))
    return lines


def write_report(result: Mapping[str, Any], out_dir: Path, figures: bool = True) -> Path:
    """Write ``out_dir/report.md`` (and figures under ``out_dir/figures``); returns the report path."""
    from kuaihl_rec.data.io import atomic_write_bytes

    out_dir = Path(out_dir)
    figs: Dict[str, str] = {}
    rand = result["randomised"]
    treat = next((a for a, e in rand["arms"].items() if e.get("role") == "treatment"), None)
    if figures:
        try:
            items = [("lifts", lambda: plot_lifts(rand, "randomised experiment: lift vs control"))]
            if "paired" in result:
                items.append(("lifts_paired", lambda: plot_lifts(result["paired"], "paired (common random numbers): lift vs control")))
            if treat:
                items.append(("daily", lambda: plot_daily(rand, treat)))
            if result.get("sweep"):
                items.append(("sweep", lambda: plot_sweep(result["sweep"])))
            items.append(("positions", lambda: plot_positions(rand)))
            for name, fn in items:
                p = out_dir / "figures" / f"{name}.png"
                atomic_write_bytes(p, fn())
                figs[name] = f"figures/{name}.png"
        except ImportError:  # pragma: no cover - matplotlib is a dependency
            logger.warning("matplotlib not available: report without figures")

    w = result["world"]
    f = w["feed"]
    d = result["design"]
    lines: List[str] = [
        "# Offline A/B test of a ranking change",
        "",
        "All numbers are from the **simulator on the synthetic world's hidden truth** (`ranking.simulator`), not from a real platform.",
        "",
        "## Setup",
        "",
        f"- world: `{w['dir']}` (preset `{w.get('world_preset')}`, content_signal {w.get('content_signal')}); simulated: the "
        f"`{w['split']}` split only ({d['out_of_sample']})",
        f"- {f['rooms']} rooms ({f['segments']} room-segments) on {w['days']} simulated day(s) (the world spans {w['world_days']}"
        + ("; its days are folded together, each room keeping its time of day" if w.get("folded") else "")
        + ("; its days are replayed cyclically" if w.get("replayed") else "") + ")",
        f"- feed: {f['mean_rooms_on_air']:.2f} rooms on air on average when a session starts; {100 * f['share_ge2']:.0f}% of starts see >= 2 rooms, "
        f"{100 * f['share_ge5']:.0f}% see >= 5 (max {f['max_rooms_on_air']})",
        f"- users: {d['n_users']} simulated ({d['users_observed']} with a session), seed {d['seed']}; randomisation: {d['randomisation']}",
        f"- CUPED pre-period: {d['pre_period']}; bootstrap: {d['n_boot']} Poisson replicates of users",
        "",
        "### Arms",
        "",
        _table([[a, e["role"], f"`{e['formula']}`"] for a, e in _by_role(result["arms"])], ["arm", "role", "formula"]),
        "",
        "### Terms",
        "",
        _table(
            [[k, v["source"], v["calibration"]["kind"] + (f" ({v['calibration']['fitted_on']})" if v["calibration"].get("fitted_on") else ""),
              f"{v['missing']['n_missing']} / {v['missing']['n_rows']} ({100 * v['missing']['share_missing']:.1f}%): "
              f"{v['missing']['n_carried']} carried, {v['missing']['n_prior']} prior ({v['missing']['prior']:.3g})"]
             for k, v in result["terms"].items()],
            ["term", "source", "calibration", "missing scores (filled)"],
        ),
        "",
        "## Randomised experiment (users split between arms by hashed id)",
        "",
    ]
    srm = rand.get("srm")
    if srm:
        lines += [f"Sample-ratio check: users per arm {dict(zip(srm['arms'], srm['counts']))}, chi2 = {srm['chi2']:.2f} "
                  f"(dof {srm['dof']}), p = {_p(srm['p_value'])} -> " + ("**MISMATCH: do not trust the lifts**" if srm["mismatch"] else "no mismatch"), ""]
    lines += [_arm_table(rand, with_extras=True), ""]
    if "lifts" in figs:
        lines += [f"![lift intervals]({figs['lifts']})", ""]
    if "daily" in figs:
        lines += ["### Daily lifts of the treatment", "", f"![daily lifts]({figs['daily']})", ""]
    if "paired" in result:
        lines += ["## Paired design (every user in every arm, common random numbers)", "",
                  "The same users, sessions and random draws in every arm: differences come from the ranking alone "
                  "(so an A/A arm is identical to control by construction and is left out; sessions per user are "
                  "exogenous in the simulator and never differ).", "",
                  _arm_table(result["paired"], with_extras=False, skip_roles=("aa",)), ""]
        if "lifts_paired" in figs:
            lines += [f"![paired lift intervals]({figs['lifts_paired']})", ""]
    s = result.get("sanity") or {}
    if s:
        lines += ["## Sanity arms", ""]
        if "aa_ok" in s:
            lines.append(f"- A/A: CTR and play duration not significant: **{s['aa_ok']}** (significant metrics at 5%: {s['aa_significant_metrics'] or 'none'})")
        if "placebo" in s:
            pl = s["placebo"]
            lines.append("- placebo (content scores shuffled): " + ", ".join(f"{_LABEL[k]} {_pct(v['lift'])} [{_pct(v['ci'][0])}, {_pct(v['ci'][1])}] p={_p(v['p_value'])}" for k, v in pl.items())
                         + f"; no significant gain: **{s['placebo_no_significant_gain']}** (a shuffled term can only add noise to the ranking, so its lift is at most 0)")
        if "oracle_vs_treatment" in s:
            lines.append("- oracle (true LVTR of the segment on air in place of the content score): " + ", ".join(
                f"{_LABEL[k]} oracle {_pct(v['oracle'])} vs treatment {_pct(v['treatment'])}" for k, v in s["oracle_vs_treatment"].items())
                + f"; oracle bounds treatment: **{s['oracle_bounds_treatment']}**")
        lines.append("")
    sw = result.get("sweep")
    if sw:
        lines += [f"## Weight sweep of `{sw['term']}` (paired)", ""]
        rows = [[f"{p['weight']:g}", _pct(p["ctr"]["lift"]), f"[{_pct(p['ctr']['ci'][0])}, {_pct(p['ctr']['ci'][1])}]",
                 _pct(p["play_duration_per_user"]["lift"]), f"[{_pct(p['play_duration_per_user']['ci'][0])}, {_pct(p['play_duration_per_user']['ci'][1])}]"]
                for p in sw["points"]]
        lines += [_table(rows, ["weight", "CTR lift", "95% CI", "play-duration lift", "95% CI"]), ""]
        ex = sw.get("existing_points") or []
        if ex:
            best_c = max(ex, key=lambda p: p["ctr"]["lift"])
            best_d = max(ex, key=lambda p: p["play_duration_per_user"]["lift"])
            lines += [f"Re-weighting only the existing terms ({len(ex)} weightings) reaches at best CTR {_pct(best_c['ctr']['lift'])} "
                      f"(`{best_c['formula']}`) and play duration {_pct(best_d['play_duration_per_user']['lift'])} (`{best_d['formula']}`).", ""]
        if "sweep" in figs:
            lines += [f"![weight sweep]({figs['sweep']})", ""]
    if "positions" in figs:
        lines += ["## Position effect", "", f"![CTR by position]({figs['positions']})", ""]
    call = result.get("call") or {}
    lines += ["## Reproduce", "", "```python",
              "from ranking.experiment import run_ab",
              f"run_ab({call.get('world_dir')!r}, {call.get('out_dir')!r}, {call.get('arms_config')!r}, n_users={call.get('n_users')}, "
              f"days={call.get('days')!r}, seed={call.get('seed')})",
              "```", "",
              f"`ab.json` holds every number above (timings in seconds: {result.get('timings_s')}; "
              f"{result.get('throughput', {}).get('impressions_simulated', 0):,} impressions simulated).", ""]
    path = out_dir / "report.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path
