"""Benchmark of the offline A/B simulator: impressions simulated per minute, per arm.

    OMP_NUM_THREADS=1 python bench/bench_simulator.py                       # default world, 200k users
    python bench/bench_simulator.py --world runs/world --users 1000000      # a written world, more users
    python bench/bench_simulator.py --preset tiny --users 20000

Prints figures; asserts nothing (the acceptance target is >= 1,000,000 impressions per minute per
arm on the 2-core CPU machine, vectorised over users). Each arm is timed on its own: building its
feed (sorting the rooms on air at every tick by the blended score) and simulating every session of
every user through it (the paired design: all users in every arm), summing the outcomes per user
and day as it goes. Peak memory is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=None, help="a world directory (default: generate --preset in memory)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", default="auto", help="simulated days: 'auto' (fold to ~5 rooms on air), an int, or 'world'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="time each arm this many times, report the best")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from ranking.blend import Formula, Term, resolve_term
    from ranking.scores import load_scores
    from ranking.simulator import SimConfig, build_feed, load_sim_world, make_population, simulate

    days = None if args.days == "world" else (args.days if args.days == "auto" else int(args.days))
    t0 = time.perf_counter()
    if args.world:
        sim = load_sim_world(args.world, days=days, seed=args.seed)
        src = args.world
    else:
        from kuaihl_rec.data.world import generate_world, load_world_config

        sim = load_sim_world(generate_world(load_world_config(args.preset)), days=days, seed=args.seed)
        src = f"preset {args.preset} (in memory)"
    t_world = time.perf_counter() - t0
    ctx = sim.context()
    values = {n: resolve_term(Term(n, load_scores(s), "zscore", "carry" if n != "oracle" else "prior"), ctx).values
              for n, s in (("ctr", "cum_ctr"), ("lvtr", "cum_lvtr"), ("oracle", "truth:true_lvtr"))}
    t0 = time.perf_counter()
    pop = make_population(sim, args.users, seed=args.seed, pre_period=False)
    t_pop = time.perf_counter() - t0
    cfg = SimConfig()
    arms = {
        "control": Formula.linear({"ctr": 1.0, "lvtr": 1.0}),
        "treatment": Formula.linear({"ctr": 1.0, "lvtr": 1.0, "oracle": 1.0}),
        "ctr_only": Formula.linear({"ctr": 1.0}),
    }
    rows = []
    for name, f in arms.items():
        best = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            feed = build_feed(sim, f.score(values))
            t_feed = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = simulate(sim, feed, pop, pop.sessions, cfg, seed=args.seed, n_users=pop.n_users, per_session=False)
            t_sim = time.perf_counter() - t0
            cand = (t_feed + t_sim, t_feed, t_sim, out)
            if best is None or cand[0] < best[0]:
                best = cand
        _, t_feed, t_sim, out = best
        n_imp = out.impressions
        rows.append({
            "arm": name, "impressions": n_imp, "sessions": len(pop.sessions), "clicks": int(out.position_clicks.sum()),
            "visit_rounds": out.rounds, "feed_s": round(t_feed, 3), "simulate_s": round(t_sim, 3),
            "impressions_per_minute": 60.0 * n_imp / (t_feed + t_sim),
        })
    feed_stats = sim.feed_stats()
    print(f"world: {src}; {feed_stats['rooms']} test rooms, {sim.n_rows} room-segments on {sim.days} simulated day(s) "
          f"(world spans {sim.world_days}); {feed_stats['mean_rooms_on_air']:.2f} rooms on air at session starts, max {feed_stats['max_rooms_on_air']}")
    print(f"users: {args.users:,} ({len(pop.sessions):,} sessions); world load {t_world:.2f} s, population {t_pop:.2f} s")
    print(f"{'arm':<11}{'impressions':>13}{'clicks':>11}{'feed s':>9}{'simulate s':>12}{'impressions/min':>18}")
    for r in rows:
        print(f"{r['arm']:<11}{r['impressions']:>13,}{r['clicks']:>11,}{r['feed_s']:>9.3f}{r['simulate_s']:>12.3f}{r['impressions_per_minute']:>18,.0f}")
    print(f"peak RSS {_rss_mib():.0f} MiB")
    print(json.dumps({"users": args.users, "days": sim.days, "arms": rows, "peak_rss_mib": round(_rss_mib())}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
