"""The Open Bandit Dataset check: the Bernoulli Thompson sampling policy's CTR estimated from the
uniform-random logs, beside the CTR it reached on-policy (docs/OPE.md, "A real log").

The Open Bandit Dataset (Saito et al., NeurIPS 2021 Datasets & Benchmarks; ZOZOTOWN, campaign "all") logs
one row per impression: ``item_id`` (80 items), ``position`` (1..3, here 0..2), ``click``, and the logging
policy's ``propensity_score`` of the shown (item, position). Its standard check, reproduced here:

- the evaluation policy is Bernoulli TS with the prior ``prior_bts.yaml`` (alpha, beta per item); its action
  distribution ``pi(a at k)`` is the same for every row and is computed by Monte Carlo as the dataset's
  authors do: draw ``theta_a ~ Beta(alpha_a, beta_a)`` for every item, rank the items by theta, count how
  often each item lands at each of the 3 positions (:func:`bts_action_dist`); or it is read off the
  propensities recorded in the BTS logs (:func:`recorded_action_dist`: the mean recorded propensity of each
  (item, position) shown, each position's column renormalised to sum to 1);
- each random-log row is its own request of one impression, the position a context: the estimators of
  :mod:`ranking.ope.estimators` then reduce to the single-action IPS, SNIPS and DR (Dudik et al. 2011)
  with ``w_i = pi(a_i at k_i) / p_i``; the reward model of DM and DR is the cross-fitted, smoothed click
  rate of each (item, position) (:func:`item_position_ctr`);
- the truth to compare with is the CTR observed in the BTS logs (0.0042 on the small sample: 42 clicks in
  10,000 impressions).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import pandas as pd
import yaml

from kuaihl_rec.data.io import DataError
from ranking.ope.estimators import Contributions, SlateData, contributions
from ranking.ope.intervals import SessionBootstrap, weight_diagnostics
from ranking.random_numbers import splitmix64

__all__ = ["ObdLog", "bts_action_dist", "bts_check", "item_position_ctr", "load_obd", "obd_slate_data",
           "recorded_action_dist"]

N_POSITIONS = 3


@dataclasses.dataclass
class ObdLog:
    """One logging policy's rows: ``item [n]``, ``position [n]`` (0-based), ``click [n]``, ``pscore [n]``."""

    item: np.ndarray
    position: np.ndarray
    click: np.ndarray
    pscore: np.ndarray
    n_items: int
    path: Path

    def __len__(self) -> int:
        return len(self.item)


def load_obd(root: Union[str, Path], policy: str, campaign: str = "all", n_items: int = 80) -> ObdLog:
    """``ROOT/{policy}/{campaign}.csv``, checked: items in 0..n_items-1, positions 1..3, clicks 0/1,
    propensities in (0, 1]."""
    path = Path(root) / policy / f"{campaign}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Open Bandit Dataset file")
    df = pd.read_csv(path, usecols=["item_id", "position", "click", "propensity_score"])
    checks = {"item_id": (0, n_items - 1), "position": (1, N_POSITIONS), "click": (0, 1)}
    for column, (low, high) in checks.items():
        bad = df[column].isna() | (df[column] < low) | (df[column] > high) | (df[column] != df[column].round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{path}: row {row}: {column} = {df[column].iloc[row]!r}; expected an integer in "
                            f"{low}..{high}")
    p = df["propensity_score"].to_numpy(np.float64)
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {row}: propensity_score = {p[row]!r}; expected a probability in (0, 1]")
    return ObdLog(df["item_id"].to_numpy(np.int64), df["position"].to_numpy(np.int64) - 1,
                  df["click"].to_numpy(np.float64), p, n_items, path)


def bts_action_dist(prior: Union[str, Path], campaign: str = "all", n_sim: int = 100_000, seed: int = 0,
                    len_list: int = N_POSITIONS, chunk: int = 10_000) -> np.ndarray:
    """``[n_items, len_list]``: Monte Carlo probability of each item at each position under Bernoulli TS
    with the prior's (alpha, beta): ``theta_a ~ Beta(alpha_a, beta_a)``, the list = the items by theta, descending."""
    spec = yaml.safe_load(Path(prior).read_text())
    if campaign not in spec:
        raise DataError(f"{prior}: no campaign {campaign!r}; campaigns: {sorted(spec)}")
    alpha = np.asarray(spec[campaign]["alpha"], np.float64)
    beta = np.asarray(spec[campaign]["beta"], np.float64)
    if alpha.shape != beta.shape or np.any(alpha <= 0) or np.any(beta <= 0):
        raise DataError(f"{prior}: campaign {campaign!r}: alpha and beta must be positive, one per item")
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), len_list))
    for first in range(0, n_sim, chunk):
        theta = rng.beta(alpha, beta, size=(min(chunk, n_sim - first), len(alpha)))
        top = np.argsort(-theta, axis=1)[:, :len_list]
        for k in range(len_list):
            counts[:, k] += np.bincount(top[:, k], minlength=len(alpha))
    return counts / n_sim


def recorded_action_dist(bts: ObdLog) -> Dict[str, Any]:
    """The BTS policy's action distribution read off its logs: the mean recorded propensity of each shown
    (item, position), 0 for pairs never shown, each position renormalised; with the mass before renormalising."""
    key = bts.item * N_POSITIONS + bts.position
    sums = np.bincount(key, weights=bts.pscore, minlength=bts.n_items * N_POSITIONS)
    counts = np.bincount(key, minlength=bts.n_items * N_POSITIONS)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).reshape(bts.n_items, N_POSITIONS)
    mass = mean.sum(axis=0)
    return {"dist": mean / mass, "mass_before_normalising": mass.tolist()}


def item_position_ctr(log: ObdLog, folds: int = 2, prior_weight: float = 20.0, seed: int = 0) -> np.ndarray:
    """``q [n, n_items, 3]`` for every row: the smoothed click rate of each (item, position),
    ``(clicks + m c) / (shows + m)`` (c: the fold's overall CTR, m = ``prior_weight``), fitted on the other
    folds (rows split by a hash of their index)."""
    fold = (splitmix64(np.arange(len(log), dtype=np.uint64) ^ np.uint64(seed)) % np.uint64(folds)).astype(np.int64)
    key = log.item * N_POSITIONS + log.position
    size = log.n_items * N_POSITIONS
    q = np.zeros((len(log), log.n_items, N_POSITIONS))
    for f in range(folds):
        train = fold != f
        clicks = np.bincount(key[train], weights=log.click[train], minlength=size)
        shows = np.bincount(key[train], minlength=size)
        base = log.click[train].mean()
        table = ((clicks + prior_weight * base) / (shows + prior_weight)).reshape(log.n_items, N_POSITIONS)
        q[fold == f] = table
    return q


def obd_slate_data(log: ObdLog, action_dist: np.ndarray, q: Optional[np.ndarray] = None) -> SlateData:
    """Each row a request of one impression, its position a context (see the module docstring)."""
    n = len(log)
    p_eval = action_dist[log.item, log.position]
    rows = np.arange(n)
    extra: Dict[str, np.ndarray] = {}
    if q is not None:
        expected = np.einsum("ia,ia->i", action_dist.T[log.position], q[rows, :, log.position])
        extra = {"q_logged": q[rows, log.item, log.position], "q_eval": expected, "q_next": expected}
    return SlateData(request=rows, reward=log.click, p_log=log.pscore, p_eval=p_eval, session=rows,
                     prefix_log=log.pscore, prefix_eval=p_eval, **extra)


def bts_check(root: Union[str, Path], n_sim: int = 100_000, n_boot: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """The BTS policy's CTR by IPS, SNIPS and DR (and DM) from the random logs, under both action
    distributions, with bootstrap intervals, beside its on-policy CTR in the BTS logs."""
    root = Path(root)
    random_log, bts = load_obd(root, "random"), load_obd(root, "bts")
    dists = {"prior_monte_carlo": bts_action_dist(root / "prior_bts.yaml", n_sim=n_sim, seed=seed),
             "bts_log_propensities": recorded_action_dist(bts)["dist"]}
    q = item_position_ctr(random_log, seed=seed)
    boot = SessionBootstrap(np.arange(len(random_log)), n_boot, seed)
    on_policy = SessionBootstrap(np.arange(len(bts)), n_boot, seed + 1)
    out: Dict[str, Any] = {
        "random_log": {"rows": len(random_log), "clicks": int(random_log.click.sum()),
                       "ctr": float(random_log.click.mean())},
        "bts_on_policy": {"rows": len(bts), "clicks": int(bts.click.sum()),
                          **on_policy.summary(Contributions(bts.click, np.ones(len(bts))))},
        "n_sim": n_sim, "n_boot": n_boot, "estimates": {}}
    for name, dist in dists.items():
        data = obd_slate_data(random_log, dist, q)
        out["estimates"][name] = {
            "estimators": {est: boot.summary(contributions(data, est)) for est in ("ips", "snips", "dr", "dm")},
            "diagnostics": weight_diagnostics(data.marginal_weight, family="marginal"),
        }
    return out

