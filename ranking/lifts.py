"""The experiment's metrics (:data:`METRICS`, ratios of per-user outcome sums) and arm-vs-control lifts.

Per-user totals are outcome arrays ``[n_users, N_OUTCOMES]`` (columns :class:`ranking.outcomes.Outcome`);
a metric is the ratio of the sums of two columns, or a per-user mean of one. The statistics are
:mod:`ranking.stats`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ranking.outcomes import Outcome
from ranking.stats import Lift, apply_holm, bootstrap_log_lifts, bootstrap_summary, cuped_log_lift, ratio_lift

__all__ = ["METRICS", "arm_values", "compare_arms", "daily_lifts", "metric_sums"]

#: metric -> (numerator column, denominator column or None for a per-user mean)
METRICS: Dict[str, Tuple[Outcome, Optional[Outcome]]] = {
    "ctr": (Outcome.CLICKS, Outcome.IMPRESSIONS),
    "long_view_rate": (Outcome.LONG_VIEWS, Outcome.CLICKS),
    "play_duration_per_user": (Outcome.PLAY_S, None),
    "clicks_per_user": (Outcome.CLICKS, None),
    "impressions_per_user": (Outcome.IMPRESSIONS, None),
    "sessions_per_user": (Outcome.SESSIONS, None),
    "short_views_per_user": (Outcome.SHORT_VIEWS, None),
    "short_view_rate": (Outcome.SHORT_VIEWS, Outcome.CLICKS),
}


def metric_sums(totals: np.ndarray, metrics: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """``[n, M]`` numerators and denominators of ``metrics`` from per-user totals ``[n, N_OUTCOMES]``."""
    numerators = np.stack([totals[:, METRICS[m][0]] for m in metrics], axis=1)
    denominators = np.stack([totals[:, METRICS[m][1]] if METRICS[m][1] is not None else np.ones(len(totals))
                             for m in metrics], axis=1)
    return numerators, denominators


def arm_values(totals: np.ndarray) -> Dict[str, float]:
    """Every metric's value (ratio of sums) over an arm's users."""
    out = {}
    for metric, (numerator, denominator) in METRICS.items():
        x = totals[:, numerator].sum()
        y = totals[:, denominator].sum() if denominator is not None else len(totals)
        out[metric] = float(x / y) if y > 0 else float("nan")
    return out


def _add_bootstrap(lifts: Dict[str, Lift], sums_t, sums_c, metrics: Sequence[str], paired: bool, n_boot: int,
                   seed: int, alpha: float) -> None:
    draws = bootstrap_log_lifts(*sums_t, *sums_c, paired=paired, n_boot=n_boot, seed=seed)
    for j, metric in enumerate(metrics):
        summary = bootstrap_summary(draws[:, j], alpha)
        se = lifts[metric].se
        summary["se_ratio_to_delta"] = float(summary["se"] / se) if se and np.isfinite(se) and se > 0 else float("nan")
        lifts[metric].bootstrap = summary


def _add_cuped(lifts: Dict[str, Lift], sums_t, sums_c, pre_t: np.ndarray, pre_c: np.ndarray, metrics: Sequence[str],
               alpha: float) -> None:
    (num_t, den_t), (num_c, den_c) = sums_t, sums_c
    (pre_num_t, pre_den_t), (pre_num_c, pre_den_c) = metric_sums(pre_t, metrics), metric_sums(pre_c, metrics)
    for j, metric in enumerate(metrics):
        lift, info = cuped_log_lift(num_t[:, j], den_t[:, j], num_c[:, j], den_c[:, j], pre_num_t[:, j],
                                    pre_den_t[:, j], pre_num_c[:, j], pre_den_c[:, j], metric=metric, alpha=alpha)
        lifts[metric].cuped = {"lift": lift.lift, "ci": list(lift.ci), "p_value": lift.p_value, "se": lift.se, **info}


def compare_arms(tot_t: np.ndarray, tot_c: np.ndarray, paired: bool, metrics: Sequence[str] = tuple(METRICS),
                 pre_t: Optional[np.ndarray] = None, pre_c: Optional[np.ndarray] = None, n_boot: int = 0, seed: int = 0,
                 alpha: float = 0.05) -> Dict[str, Lift]:
    """Lift of every metric of arm t over control from per-user totals ``[n_users, N_OUTCOMES]``.

    Delta method on the log scale; plus the user bootstrap (``n_boot`` > 0), CUPED (independent arms
    with pre-period totals) and Holm across the metrics.
    """
    sums_t, sums_c = metric_sums(tot_t, metrics), metric_sums(tot_c, metrics)
    (num_t, den_t), (num_c, den_c) = sums_t, sums_c
    lifts: Dict[str, Lift] = {}
    for j, metric in enumerate(metrics):
        lifts[metric] = ratio_lift(num_t[:, j], den_t[:, j], num_c[:, j], den_c[:, j], metric=metric, paired=paired,
                                   alpha=alpha)
    if n_boot > 0 and len(tot_t) > 1 and len(tot_c) > 1:
        _add_bootstrap(lifts, sums_t, sums_c, metrics, paired, n_boot, seed, alpha)
    if pre_t is not None and pre_c is not None and not paired:
        _add_cuped(lifts, sums_t, sums_c, pre_t, pre_c, metrics, alpha)
    apply_holm(lifts)
    return lifts


def daily_lifts(days_t: np.ndarray, days_c: np.ndarray, paired: bool,
                metrics: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Per simulated day, each metric's lift among the users active that day (``[n, days, N_OUTCOMES]``
    totals; paired: the users active under control)."""
    out: Dict[str, List[Dict[str, Any]]] = {m: [] for m in metrics}
    sessions = Outcome.SESSIONS
    for day in range(days_t.shape[1]):
        if paired:
            active = days_c[:, day, sessions] > 0
            day_t, day_c = days_t[active, day], days_c[active, day]
        else:
            day_t = days_t[days_t[:, day, sessions] > 0, day]
            day_c = days_c[days_c[:, day, sessions] > 0, day]
        if len(day_t) < 2 or len(day_c) < 2:
            continue
        (num_t, den_t), (num_c, den_c) = metric_sums(day_t, metrics), metric_sums(day_c, metrics)
        for j, metric in enumerate(metrics):
            lift = ratio_lift(num_t[:, j], den_t[:, j], num_c[:, j], den_c[:, j], metric=metric, paired=paired)
            out[metric].append({"day": day, "lift": lift.lift, "ci": list(lift.ci), "p_value": lift.p_value,
                                "users": int(len(day_t) if not paired else len(day_c))})
    return out
