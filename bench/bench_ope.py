"""Benchmark of the off-policy estimators: how wrong they are where the answer is known, and the Open Bandit check.

    OMP_NUM_THREADS=1 python bench/bench_ope.py --world runs/world             # a world written by `kuaihl world`
    python bench/bench_ope.py --world runs/world --seeds 20 --users 20000 --obd DIR     # DIR: random/, bts/, prior
    python bench/bench_ope.py --preset tiny --seeds 5 --users 5000               # generates a world into --out

Simulator part (synthetic): the team's terms of examples/offline_ab.py (running CTR and LVTR counters and a
ridge content model on the features of the previous segment, each Platt-calibrated on the val rooms), the arms
config that example builds (control = ctr + lvtr; treatment = control + w x content, ``--weight``), both made
stochastic by Plackett-Luce at ``--temperature``. For each seed: a fresh population, the control arm's log, the
treatment's online truth on the same requests (``--truth-replicates`` runs), every estimator of the treatment's
value per request (clicks: the request CTR; seconds watched: play duration) and of its lift over the logging arm.
Prints, per estimator over the seeds: the mean and the mean absolute relative error of the value, the mean
error of the lift (percentage points) and how often the 95 % interval held the truth.

OBD part (real): ranking/ope/obd.py's check: the Bernoulli TS policy's CTR from the uniform-random log by IPS,
SNIPS and DR, with both action distributions, beside the BTS log's on-policy CTR; ``obp``'s own estimates on
the same inputs when it can be imported (KUAIHL_OBP_PATH: a directory it was installed into).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = ("dm", "ips", "snips", "iips", "rips", "dr")


def _world(args: argparse.Namespace) -> Path:
    if args.world:
        return Path(args.world)
    from kuaihl_rec.data.world import generate_world, load_world_config, write_world

    world = Path(args.out) / "world"
    if not (world / "world_summary.json").exists():
        write_world(generate_world(load_world_config(args.preset, seed=0)), world, figure=False)
    return world


def _config(world: Path, weight: float) -> Dict[str, Any]:
    sys.path.insert(0, str(REPO / "examples"))
    from offline_ab import build_config, team_scores  # the example's terms and arms config

    return build_config(team_scores(world), None, weight)


def _seed_run(args, world, cfg, seed: int) -> Dict[str, Any]:
    from ranking.ope.logsim import OpeSimConfig
    from ranking.ope.run import run_ope, write_simulated_logs

    ope_cfg = OpeSimConfig(temperature=args.temperature, slate_size=args.slate_size,
                           truth_replicates=args.truth_replicates)
    logs = Path(args.out) / f"seed{seed}" / "logs"
    write_simulated_logs(world, logs, cfg, n_users=args.users, seed=seed, ope_cfg=ope_cfg)
    return run_ope(logs, logs.parent, cfg, n_boot=args.n_boot, seed=seed, figures=seed == 0)


def _table(results: List[Dict[str, Any]]) -> List[str]:
    lines = ["| estimator | reward | mean estimate | truth (mean) | mean rel. error ± se | mean abs. rel. error | "
             "lift error (pp, mean ± sd) | CI coverage (value) | CI coverage (lift) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for reward in ("click", "watch_s"):
        for est in ESTIMATORS:
            blocks = [r["policies"]["treatment"]["rewards"][reward] for r in results]
            if est not in blocks[0]["estimates"]:
                continue
            e = [b["estimates"][est] for b in blocks]
            truth = np.array([b["truth"]["value"] for b in blocks])
            true_lift = np.array([b["truth"]["lift"]["value"] for b in blocks])
            value = np.array([x["value"] for x in e])
            rel = (value - truth) / truth
            lift_err = 100 * np.array([x["lift"]["value"] for x in e]) - 100 * true_lift
            cover = np.mean([x["ci"][0] <= t <= x["ci"][1] for x, t in zip(e, truth)])
            cover_lift = np.mean([x["lift"]["ci"][0] <= t <= x["lift"]["ci"][1] for x, t in zip(e, true_lift)])
            se = 100 * rel.std(ddof=1) / np.sqrt(len(rel)) if len(rel) > 1 else float("nan")
            lines.append(f"| {est} | {reward} | {value.mean():.4g} | {truth.mean():.4g} | "
                         f"{100 * rel.mean():+.2f}% ± {se:.2f}% | "
                         f"{100 * np.abs(rel).mean():.2f}% | {lift_err.mean():+.2f} ± {lift_err.std(ddof=1):.2f} | "
                         f"{100 * cover:.0f}% | {100 * cover_lift:.0f}% |")
    return lines


def _simulator_part(args) -> None:
    world = _world(args)
    t0 = time.perf_counter()
    cfg = _config(world, args.weight)
    print(f"world {world}; team terms in {time.perf_counter() - t0:.1f} s")
    results = []
    for seed in range(args.seeds):
        t1 = time.perf_counter()
        results.append(_seed_run(args, world, cfg, seed))
        r = results[-1]
        d = r["policies"]["treatment"]["diagnostics"]
        print(f"seed {seed}: {r['log']['requests']} requests, {r['log']['impressions']} impressions, "
              f"slate ESS {d['slate']['ess']:.0f}, prefix ESS {d['prefix']['ess']:.0f}, "
              f"trustworthy {r['policies']['treatment']['trustworthy']} ({time.perf_counter() - t1:.1f} s)", flush=True)
    first = results[0]
    lifts = {r: np.mean([x["policies"]["treatment"]["rewards"][r]["truth"]["lift"]["value"] for x in results])
             for r in ("click", "watch_s")}
    print(f"\ntreatment {first['policies']['treatment']['policy']['describe']} vs logging "
          f"{first['log']['meta']['logging']['describe']}, temperature {args.temperature}; "
          f"true lift (mean over seeds): CTR {100 * lifts['click']:+.2f}%, play {100 * lifts['watch_s']:+.2f}%")
    print(f"\nSimulator (synthetic), {args.seeds} seeds x {args.users} users:\n")
    print("\n".join(_table(results)))


def _obp_values(root: Path, dist_name: str, dist: np.ndarray) -> Dict[str, float]:
    path = os.environ.get("KUAIHL_OBP_PATH")
    if path:
        sys.path.insert(0, path)
    try:
        from obp.ope import DoublyRobust, InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting
    except ImportError:
        return {}
    from ranking.ope.obd import item_position_ctr, load_obd

    log = load_obd(root, "random")
    kw = dict(reward=log.click, action=log.item, position=log.position, pscore=log.pscore,
              action_dist=np.repeat(dist[None], len(log), axis=0))
    q = item_position_ctr(log)
    return {"ips": InverseProbabilityWeighting().estimate_policy_value(**kw),
            "snips": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw),
            "dr": DoublyRobust().estimate_policy_value(**kw, estimated_rewards_by_reg_model=q)}


def _obd_part(args) -> None:
    from ranking.ope.obd import bts_action_dist, bts_check, load_obd, recorded_action_dist

    root = Path(args.obd)
    t0 = time.perf_counter()
    out = bts_check(root, n_sim=args.obd_sim, n_boot=args.n_boot_obd)
    on = out["bts_on_policy"]
    print(f"\nOpen Bandit Dataset (real; {root}): BTS on-policy CTR {on['value']:.4f} [{on['ci'][0]:.4f}, "
          f"{on['ci'][1]:.4f}] ({on['clicks']} clicks / {on['rows']}); random log CTR {out['random_log']['ctr']:.4f}; "
          f"{time.perf_counter() - t0:.1f} s\n")
    dists = {"prior_monte_carlo": bts_action_dist(root / "prior_bts.yaml", n_sim=args.obd_sim, seed=0),
             "bts_log_propensities": recorded_action_dist(load_obd(root, "bts"))["dist"]}
    print("| action distribution | estimator | BTS CTR estimate | 95% CI | obp | ESS |")
    print("|---|---|---:|---|---:|---:|")
    for name, block in out["estimates"].items():
        theirs = _obp_values(root, name, dists[name])
        for est in ("ips", "snips", "dr", "dm"):
            e = block["estimators"][est]
            obp = f"{theirs[est]:.5f}" if est in theirs else "n/a"
            print(f"| {name} | {est} | {e['value']:.5f} | [{e['ci'][0]:.5f}, {e['ci'][1]:.5f}] | {obp} | "
                  f"{block['diagnostics']['ess']:.0f} |")
    print(json.dumps({"obd": {k: v for k, v in out.items() if k != "estimates"}}, default=float))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default=None, help="a world directory (default: generate --preset into --out)")
    p.add_argument("--preset", default="default")
    p.add_argument("--out", default="runs/bench_ope")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--weight", type=float, default=1.0, help="the content term's weight in the treatment")
    p.add_argument("--slate-size", type=int, default=5)
    p.add_argument("--truth-replicates", type=int, default=8)
    p.add_argument("--n-boot", type=int, default=200)
    shared = Path(os.environ.get("KUAIHL_SHARED_DATA", REPO.parent / "shared" / "data"))
    p.add_argument("--obd", default=str(shared / "obd"),
                   help="the Open Bandit Dataset small sample: random/, bts/, prior_bts.yaml ('' to skip)")
    p.add_argument("--obd-sim", type=int, default=100_000, help="Monte Carlo draws of the BTS action distribution")
    p.add_argument("--n-boot-obd", type=int, default=1000)
    p.add_argument("--skip-simulator", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if not args.skip_simulator:
        _simulator_part(args)
    if args.obd and (Path(args.obd) / "random" / "all.csv").exists():
        _obd_part(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
