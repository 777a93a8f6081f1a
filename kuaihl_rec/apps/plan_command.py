"""``kuaihl plan``: TorchRec's sharding plan and memory per rank at platform size, nothing allocated.

Example (the README's figures)::

    kuaihl plan --streamers 10000000 --world-size 64 --batch-size 3072

The planning itself is :mod:`kuaihl_rec.train.planning`; a plan that does not fit exits 1 with
the numbers (table size, memory per rank, the fewest ranks that would hold it).
"""

from __future__ import annotations

import argparse

from kuaihl_rec.apps.cli_checks import UsageError, require_at_least, require_choice


def add_parser(sub) -> None:
    """Register ``kuaihl plan`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "plan", help="TorchRec's sharding plan and memory per rank for a table size and topology (no allocation)"
    )
    p.add_argument("--streamers", type=int, required=True, help="rows of the streamer table, e.g. 10000000")
    p.add_argument("--world-size", type=int, required=True, help="ranks in all (GPUs, or processes on CPU)")
    p.add_argument("--local-world-size", type=int, default=8, help="ranks per host (default 8)")
    p.add_argument("--model", default="content", help="registry name (default content; see `kuaihl models`)")
    p.add_argument("--preset", default="paper", help="training preset: paper (default), small, tiny")
    p.add_argument(
        "--lives", type=int, default=None, help="rows of the live-id table (ID baselines; default: --streamers)"
    )
    p.add_argument("--compute-device", default="cuda", help="cuda (tables in HBM, default) or cpu (tables in DDR)")
    p.add_argument("--hbm-gib", type=float, default=80.0, help="GPU memory per rank in GiB (default 80, an H100)")
    p.add_argument("--ddr-gib", type=float, default=128.0, help="host memory per rank in GiB (default 128)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the training preset's)")
    p.add_argument("--visual-tokens", type=int, default=3, help="visual tokens per segment (default 3, the paper's)")
    p.add_argument("--visual-dim", type=int, default=512, help="width of a visual token (default 512)")
    p.add_argument("--text-dim", type=int, default=768, help="width of the text vector (default 768)")
    p.add_argument("--full", action="store_true", help="also print TorchRec's own plan tables (one row per shard)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan; a topology that cannot hold the tables raises PlanDoesNotFitError (exit 1)."""
    # lazy: each command imports only what it runs (kuaihl --help must not load torch)
    from kuaihl_rec.model.registry import list_models, model_overrides
    from kuaihl_rec.train.config import TRAIN_PRESETS, train_config
    from kuaihl_rec.train.planning import PlanRequest, format_report, plan_at_scale

    for flag in ("streamers", "world_size", "local_world_size", "lives", "batch_size", "visual_tokens",
                 "visual_dim", "text_dim"):
        require_at_least(getattr(args, flag), "--" + flag.replace("_", "-"))
    require_choice(args.model, "--model", list_models(), "model")
    require_choice(args.preset, "--preset", TRAIN_PRESETS, "training preset")
    unknown = sorted(set(train_config(args.preset, model=args.model).overrides) - set(model_overrides(args.model)))
    if unknown:
        raise UsageError(
            f"--preset {args.preset} sets the model override {unknown[0]!r}, which model {args.model!r} does not "
            "take; use --preset small"
        )
    require_choice(args.compute_device, "--compute-device", ("cuda", "cpu"), "compute device")
    for flag in ("hbm_gib", "ddr_gib"):
        if not getattr(args, flag) > 0:
            raise UsageError(f"--{flag.replace('_', '-')} expects a number of GiB > 0, got {getattr(args, flag)}")
    preset_batch = TRAIN_PRESETS[args.preset].batch_size
    batch = args.batch_size or preset_batch
    if batch < args.world_size:
        raise UsageError(
            f"--batch-size: the global batch {batch} is smaller than --world-size {args.world_size} (every rank needs "
            f"at least one sample per step); pass --batch-size {args.world_size * preset_batch} to keep the "
            "preset's batch per rank"
        )
    req = PlanRequest(
        streamers=args.streamers, world_size=args.world_size, model=args.model, preset=args.preset, lives=args.lives,
        local_world_size=args.local_world_size, compute_device=args.compute_device, hbm_gib=args.hbm_gib,
        ddr_gib=args.ddr_gib, batch_size=batch, visual_tokens=args.visual_tokens, visual_dim=args.visual_dim,
        text_dim=args.text_dim,
    )
    print(format_report(plan_at_scale(req), full=args.full))
    return 0
