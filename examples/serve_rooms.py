"""Serve the content score inside a ranking service: one fresh score per live room every 30 s.

The three lines a ranking service needs (everything else here only fakes the service around them)::

    scorer = StreamingScorer.from_run(RUN)       # at start-up (or scorer.restore(STATE) after a restart)
    scores = scorer.tick(closed_segments)        # every 30 s: the segments that just closed, one per room
    scorer.end_rooms(ended_live_ids)             # rooms that went off air

``closed_segments`` is a :class:`kuaihl_rec.serving.ClosedSegments` built from the service's
own feature store (here: the rows of a segment table, grouped by the 30 s interval in which each
segment closes). ``scores.score[i]`` predicts the label of room ``scores.live_id[i]``'s *next*
segment; a ranking formula blends it with the ID model's scores (``ranking/``,
``s = s_ctr + s_lvtr + w * s_content``). The state is saved every ``--save-every`` ticks; run the
script again with the same ``--state`` and it continues where it stopped, with identical scores.

    python examples/serve_rooms.py --run RUN --world WORLD --state /tmp/scorer.pt --ticks 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from kuaihl_rec.data.schema import COUNTER_COLUMNS, SEGMENT_SECONDS
from kuaihl_rec.serving import ClosedSegments, StreamingScorer


def feature_store(world: Path, split: str = "test"):
    """The segment table of ``world`` as the service's feature store: rows sorted by closing tick."""
    table = pq.read_table(world / "segments").to_pandas()
    table = table[table["split"] == split].sort_values(["live_id", "segment"]).reset_index(drop=True)
    table["tick"] = -(-(table["timestamp"] + SEGMENT_SECONDS) // SEGMENT_SECONDS)
    # the freshest complete label when segment t closes: LVTR of t - 2 (-1 before a room has one)
    back = table.groupby("live_id")["lvtr"].shift(2)
    table["observed"] = back.fillna(-1.0).astype(np.float32)
    table["is_last"] = table["live_id"].ne(table["live_id"].shift(-1))
    return table.sort_values(["tick", "live_id"]).groupby("tick", sort=True)


def closed_segments(rows) -> ClosedSegments:
    """One tick's rows as the scorer's input."""
    return ClosedSegments(
        live_id=rows["live_id"].to_numpy(), streamer_id=rows["streamer_id"].to_numpy(),
        segment=rows["segment"].to_numpy(np.int64), timestamp=rows["timestamp"].to_numpy(),
        visual=np.stack(rows["visual"].to_numpy()).astype(np.float32), text=np.stack(rows["text"].to_numpy()).astype(np.float32),
        counters=rows[list(COUNTER_COLUMNS)].to_numpy(np.float32), observed=rows["observed"].to_numpy(np.float32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a finished `kuaihl train` run of a content model")
    parser.add_argument("--world", required=True, type=Path, help="segment table standing in for the feature store")
    parser.add_argument("--state", type=Path, default=None, help="scorer state file: restored at start when it exists, saved every --save-every ticks")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=None, help="stop after this many ticks (default: the whole feed)")
    args = parser.parse_args()

    scorer = StreamingScorer.from_run(args.run)
    start = 0
    if args.state is not None and args.state.exists():
        start = int(scorer.restore(args.state)["next_tick"])
        print(f"restored {scorer.rooms} rooms at tick {start} from {args.state}")
    ticks = list(feature_store(args.world))
    stop = len(ticks) if args.ticks is None else min(len(ticks), start + args.ticks)
    t0, served = time.perf_counter(), 0
    for k in range(start, stop):
        _, rows = ticks[k]
        scores = scorer.tick(closed_segments(rows))
        scorer.end_rooms(rows.loc[rows["is_last"], "live_id"].to_numpy())
        served += len(scores.score)
        best = int(np.argmax(scores.score))
        print(f"tick {k}: {len(scores.score)} room(s) on air, best room {scores.live_id[best]} "
              f"(next segment {scores.segment[best]}, score {scores.score[best]:.6f})")
        if args.state is not None and (k + 1) % args.save_every == 0:
            scorer.save(args.state, extra={"next_tick": k + 1})
    if args.state is not None:
        scorer.save(args.state, extra={"next_tick": stop})
    elapsed = time.perf_counter() - t0
    print(f"served {served} scores in {stop - start} ticks ({elapsed:.2f} s); {scorer.rooms} room(s) still on air; "
          f"state {scorer.bytes_per_room} bytes per room; unknown streamers: {scorer.stats['rooms_unknown_streamer']} room(s)")


if __name__ == "__main__":
    main()
