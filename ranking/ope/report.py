"""``OUT/report.md`` and ``OUT/figures/ope_vs_truth.png`` of an off-policy evaluation, from the ``ope.json`` content.

The figure (drawn when the log carries the simulator's truth): per reward, each policy's estimate by
every estimator with its bootstrap interval, beside the true value and its standard error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from kuaihl_rec.data.io import atomic_write_bytes
from ranking.report import _fig_bytes, _pyplot

__all__ = ["FIGURE", "report_lines", "summary_lines", "write_report"]

FIGURE = "figures/ope_vs_truth.png"
_REWARD_LABEL = {"click": "clicks per request (request CTR)", "watch_s": "seconds watched per request"}


def _num(x: Optional[float], digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def _pct(x: Optional[float]) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    return f"{100 * x:+.1f}%"


def _ci(entry: Mapping[str, Any], digits: int = 4) -> str:
    low, high = entry.get("ci", [None, None])
    return f"[{_num(low, digits)}, {_num(high, digits)}]"


def _has_truth(result: Mapping[str, Any]) -> bool:
    return any("truth" in block for p in result["policies"].values() for block in p["rewards"].values())


def _reward_table(result: Mapping[str, Any], reward: str) -> List[str]:
    truth = _has_truth(result)
    head = "| policy | estimator | weights ok | estimate | 95% CI | lift vs logging | lift 95% CI |"
    rule = "|---|---|---|---:|---|---:|---|"
    if truth:
        head += " truth | relative error | true lift |"
        rule += "---:|---:|---:|"
    lines = [f"### {_REWARD_LABEL.get(reward, reward)}", "", head, rule]
    for name, entry in result["policies"].items():
        block = entry["rewards"][reward]
        for est, e in block["estimates"].items():
            ok = {True: "yes", False: "**no**", None: "(no weights)"}[e.get("trustworthy")]
            line = f"| {name} | {est} | {ok} | {_num(e['value'])} | {_ci(e)} | {_pct(e['lift']['value'])} | " \
                   f"[{_pct(e['lift']['ci'][0])}, {_pct(e['lift']['ci'][1])}] |"
            if truth:
                t = block.get("truth")
                line += (f" {_num(t['value'])} ± {_num(t['se'], 2)} | {_pct(e.get('relative_error'))} | "
                         f"{_pct(t.get('lift', {}).get('value'))} |" if t else " n/a | n/a | n/a |")
            lines.append(line)
    on = result["on_policy"][reward]
    lines += ["", f"Logging policy on-policy value (the log's mean): {_num(on['value'])} {_ci(on)}."]
    if "on_policy_truth" in result:
        t = result["on_policy_truth"][reward]
        lines[-1] += f" Its true value: {_num(t['value'])} ± {_num(t['se'], 2)}."
    return lines + [""]


def _diagnostics_table(result: Mapping[str, Any]) -> List[str]:
    lines = ["## Weight diagnostics", "",
             "| policy | weights | n | ESS | ESS share | max weight | mean weight (1 expected) | top 1% share | "
             "verdict |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, entry in result["policies"].items():
        for family, d in entry["diagnostics"].items():
            verdict = "ok" if d["trustworthy"] else "**untrustworthy**: " + "; ".join(d["warnings"])
            lines.append(f"| {name} | {family} | {d['n']} | {d['ess']:.0f} | {100 * d['ess_share']:.1f}% | "
                         f"{_num(d['max_weight'])} | {d['mean_weight']:.3f} ± {_num(d['mean_weight_se'], 2)} | "
                         f"{100 * d['top1pct_share']:.1f}% | {verdict} |")
    return lines + [""]


def report_lines(result: Mapping[str, Any]) -> List[str]:
    log = result["log"]
    meta = log.get("meta", {})
    lines = ["# Off-policy evaluation", "",
             f"Log: {log['path']}: {log['requests']} requests, {log['impressions']} impressions, {log['sessions']} "
             f"sessions (the bootstrap unit), lists of up to {log['positions']} positions from up to "
             f"{log['max_candidates']} candidates; prefix propensities: "
             f"{'yes' if log['has_prefix_propensity'] else 'no'}."]
    if meta.get("source") == "simulator":
        lines.append(f"Source: the simulator (synthetic world), click model {meta.get('click_model')}, logging policy "
                     f"{meta['logging']['describe']} at temperature {meta['logging']['temperature']:g}; truth: every "
                     f"policy run online on the same requests {meta.get('truth_replicates')} times.")
    lines += ["", "Policies (Plackett-Luce over the blended score / temperature):", ""]
    lines += [f"- `{n}`: {e['policy']['describe']}, temperature {e['policy']['temperature']:g}"
              for n, e in result["policies"].items()]
    lines += ["", f"Intervals: percentile bootstrap over sessions, {result['n_boot']} replicates. Estimators: "
              "docs/OPE.md.", ""]
    for reward in result["on_policy"]:
        lines += _reward_table(result, reward)
    lines += _diagnostics_table(result)
    if _has_truth(result):
        lines += [f"![estimates vs truth]({FIGURE})", ""]
    return lines


def summary_lines(result: Mapping[str, Any]) -> List[str]:
    """A few lines for the terminal: each policy's estimates of the click reward, and warnings."""
    out = []
    for name, entry in result["policies"].items():
        for reward, block in entry["rewards"].items():
            parts = [f"{est} {_num(e['value'])} {_ci(e)}" for est, e in block["estimates"].items()]
            truth = f" | truth {_num(block['truth']['value'])}" if "truth" in block else ""
            out.append(f"{name} {reward}: " + "; ".join(parts) + truth)
        for family, d in entry["diagnostics"].items():
            if not d["trustworthy"]:
                out.append(f"{name}: WARNING {family} weights untrustworthy ({'; '.join(d['warnings'])}): see "
                           "report.md, weight diagnostics")
    return out


def _figure(result: Mapping[str, Any]) -> bytes:
    plt = _pyplot()
    rewards = list(result["on_policy"])
    fig, axes = plt.subplots(1, len(rewards), figsize=(6 * len(rewards), 4), squeeze=False)
    for ax, reward in zip(axes[0], rewards):
        x = 0
        ticks, labels = [], []
        for name, entry in result["policies"].items():
            block = entry["rewards"][reward]
            if "truth" not in block:
                continue
            t = block["truth"]
            names = list(block["estimates"])
            ax.fill_between([x - 0.5, x + len(names) - 0.5], t["value"] - 2 * t["se"], t["value"] + 2 * t["se"],
                            color="k", alpha=0.12, linewidth=0, label="truth ± 2 SE" if x == 0 else None)
            ax.hlines(t["value"], x - 0.5, x + len(names) - 0.5, colors="k", linestyles="--",
                      label="truth" if x == 0 else None)
            for i, est in enumerate(names):
                e = block["estimates"][est]
                low, high = e["ci"]
                err = [[e["value"] - low], [high - e["value"]]] if low is not None else None
                ax.errorbar([x + i], [e["value"]], yerr=err, fmt="o", capsize=3, color=f"C{i}")
                ticks.append(x + i)
                labels.append(f"{name}\n{est}")
            x += len(names) + 1
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_title(_REWARD_LABEL.get(reward, reward))
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("off-policy estimates (95% bootstrap CI) vs the simulator's truth (synthetic)")
    return _fig_bytes(fig)


def write_report(result: Mapping[str, Any], out_dir: Path, figures: bool = True) -> Dict[str, str]:
    """``report.md`` and, when the log carries truth, the estimate-vs-truth figure; returns their paths."""
    out_dir = Path(out_dir)
    written = {}
    if figures and _has_truth(result):
        atomic_write_bytes(out_dir / FIGURE, _figure(result))
        written["figure"] = str(out_dir / FIGURE)
    atomic_write_bytes(out_dir / "report.md", ("\n".join(report_lines(result)) + "\n").encode())
    written["report"] = str(out_dir / "report.md")
    return written
