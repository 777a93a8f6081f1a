"""Offline A/B test of a ranking change, from a ranking team's side.

The team has its own score columns for every (room, segment u) of the held-out rooms, each computed
from what it knew before segment u went on air, and a formula. One call to
:func:`ranking.experiment.run_ab` simulates users scrolling the feed under the current formula and
under the new one, and the lifts come back with intervals (``OUT/ab.json``, ``OUT/report.md``).

    python examples/offline_ab.py                                   # generates the default world into OUT/world
    python examples/offline_ab.py --world runs/world --out runs/ab_example
    python examples/offline_ab.py --world runs/world --content runs/content/test.parquet \
        --content-val runs/content/val.parquet

The team's columns here (replace them with yours):

- ``team_ctr`` / ``team_lvtr``: the room's running CTR over segments < u and LVTR over its complete
  segments <= u - 3 (an LVTR waits 60 s for its outcome) (production counters);
- ``team_content``: a small content model: ridge regression of LVTR(u) on the visual and text
  features of segment u - 1, fitted on the *train* rooms only; or, with ``--content``, the
  predictions ``kuaihl eval RUN --predictions P.parquet`` wrote for a trained content model.

All numbers are from the simulator on the synthetic world's hidden truth, not from a real platform.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kuaihl_rec.data.io import segment_files
from kuaihl_rec.data.world import generate_world, load_world_config, write_world
from ranking.experiment import run_ab


def load_segments(world_dir: Path) -> Tuple[pd.DataFrame, np.ndarray]:
    """The observable segment table (ids, split, counters) and its features ``[n, d_visual + d_text]``."""
    cols = ["live_id", "segment", "split", "lvtr", "n_clicks", "n_exposures", "n_long_viewers", "n_viewers", "visual",
            "text"]
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in segment_files(world_dir)])
    n = table.num_rows
    vis = table.column("visual").combine_chunks().flatten().to_numpy().reshape(n, -1)
    txt = table.column("text").combine_chunks().flatten().to_numpy().reshape(n, -1)
    df = table.drop(["visual", "text"]).to_pandas()
    order = np.lexsort((df["segment"].to_numpy(), df["live_id"].to_numpy()))
    return df.iloc[order].reset_index(drop=True), np.hstack([vis, txt])[order].astype(np.float64)


def team_scores(world_dir: Path, ridge: float = 10.0) -> pd.DataFrame:
    """The team's score columns for every (live_id, segment u >= 1), from content and counters of segments < u."""
    df, feats = load_segments(world_dir)
    live = df["live_id"].to_numpy()
    same_room_prev = np.r_[False, live[1:] == live[:-1]]  # row i-1 is segment u-1 of the same room
    rooms = df.groupby("live_id", sort=False)
    before = lambda col: rooms[col].cumsum() - df[col]  # noqa: E731  sum over segments < u
    ctr = df["n_clicks"] / df["n_exposures"].clip(lower=1)
    out = pd.DataFrame({"live_id": df["live_id"], "segment": df["segment"], "split": df["split"], "lvtr": df["lvtr"],
                        "ctr": ctr})
    out["team_ctr"] = (before("n_clicks") + 1.0) / (before("n_exposures") + 10.0)
    # sum over segments <= u - 3 (the complete ones)
    complete = lambda col: rooms[col].transform(lambda x: x.cumsum().shift(3, fill_value=0))  # noqa: E731
    out["team_lvtr"] = (complete("n_long_viewers") + 3.0) / (complete("n_viewers") + 5.0)
    # content model: LVTR(u) ~ features of segment u-1 (ridge, closed form), fitted on train rooms
    x = np.zeros_like(feats)
    x[1:] = feats[:-1]
    ok = same_room_prev
    train = ok & (df["split"].to_numpy() == "train")
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    z = (x - mu) / sd
    y = df["lvtr"].to_numpy(np.float64)
    A = z[train].T @ z[train] + ridge * np.eye(z.shape[1])
    w = np.linalg.solve(A, z[train].T @ (y[train] - y[train].mean()))
    out["team_content"] = np.where(ok, y[train].mean() + z @ w, np.nan)
    return out[ok & (df["split"].to_numpy() != "train")].reset_index(drop=True)


def build_config(scores: pd.DataFrame, content: Optional[Tuple[str, Optional[str]]] = None,
                 weight: float = 1.0) -> Dict:
    """The team's formula as an arms config: control = ctr + lvtr; treatment = control + weight x content."""
    test, val = scores[scores["split"] == "test"], scores[scores["split"] == "val"]
    # Each term is Platt-calibrated on the val rooms to the probability of its own label (CTR or LVTR).
    terms = {
        "ctr": {"source": test, "column": "team_ctr", "val": val, "label": "ctr", "calibrate": "platt"},
        "lvtr": {"source": test, "column": "team_lvtr", "val": val, "label": "lvtr", "calibrate": "platt"},
        "content": {"source": test, "column": "team_content", "val": val, "label": "lvtr", "calibrate": "platt"},
    }
    if content is not None:  # a trained model's predictions (kuaihl eval --predictions; their `label` is the LVTR)
        calibration = {"val": content[1], "calibrate": "platt"} if content[1] else {"calibrate": "zscore"}
        terms["content"] = {"source": content[0], **calibration}
    return {
        "terms": terms,
        "arms": {"control": {"ctr": 1.0, "lvtr": 1.0}},
        "treatment_weight": weight,
        "sweep": {"weights": [0.0, 0.5, 1.0, 2.0, 4.0], "existing": [0.0, 0.5, 1.0, 2.0]},
    }


def print_lifts(result: Dict) -> None:
    metrics = ("ctr", "play_duration_per_user", "long_view_rate", "clicks_per_user", "short_views_per_user")
    for design in ("randomised", "paired"):
        if design not in result:
            continue
        block = result[design]
        print(f"\n{design} design (control: {block['arms'][block['control']]['formula']})")
        print(f"{'arm':<10}{'metric':<24}{'lift':>9}{'95% CI':>22}{'p':>9}")
        for arm, e in block["arms"].items():
            for m in metrics if "metrics" in e else ():
                lf = e["metrics"][m]
                ci = f"[{100 * lf['ci'][0]:+.2f}%, {100 * lf['ci'][1]:+.2f}%]"
                print(f"{arm:<10}{m:<24}{100 * lf['lift']:>+8.2f}%{ci:>22}{lf['p_value']:>9.4f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default=None, help="a world directory (default: generate --preset into OUT/world)")
    p.add_argument("--preset", default="default", help="world preset when generating")
    p.add_argument("--content", default=None,
                   help="predictions Parquet of a trained content model (kuaihl eval --predictions) on the test split")
    p.add_argument("--content-val", default=None, help="the same on the val split (for calibration)")
    p.add_argument("--weight", type=float, default=1.0, help="weight of the content term in the treatment")
    p.add_argument("--out", default="runs/ab_example")
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--days", default="auto", help="simulated days: 'auto', an int, or 'world'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    world = Path(args.world) if args.world else out / "world"
    if not args.world:
        write_world(generate_world(load_world_config(args.preset, seed=args.seed)), world, figure=False)
    scores = team_scores(world)
    content = (args.content, args.content_val) if args.content else None
    days = None if args.days == "world" else (args.days if args.days == "auto" else int(args.days))
    result = run_ab(world, out, build_config(scores, content, args.weight), n_users=args.users, days=days,
                    seed=args.seed, progress=not args.quiet)
    print_lifts(result)
    s = result["sanity"]
    print(f"\nsanity: A/A ok {s.get('aa_ok')}, placebo without gain {s.get('placebo_no_significant_gain')}, "
          f"oracle bounds treatment {s.get('oracle_bounds_treatment')}, SRM ok {s.get('srm_ok')}")
    print(f"ab.json: {out / 'ab.json'}\nreport: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
