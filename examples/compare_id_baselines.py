"""Compare the content model with your ID models on your own data, from Python.

    python examples/compare_id_baselines.py --data data/default --out runs/my_compare --models content,dcn_m,wide_deep

`--data` is any segment table (`kuaihl world`, `kuaihl klive`, or your own export validated by
`kuaihl validate`); every model is trained by the same trainer with the same budget and scored on
the test rooms once per segment, next to the reference rows: the trivial predictor (previous
segment's label), the last complete label (what the platform knows at scoring time) and, on a
synthetic world, the ceiling (hidden true rate).
"""

import argparse
import json
from pathlib import Path

from kuaihl_rec.apps.compare import CompareBudget, run_compare


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--models", default="content,dcn_m", help="registry names (kuaihl models) or report rows")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)

    budget = CompareBudget(epochs=args.epochs, seeds=args.seeds, lr_grid=(1e-3,))
    report = run_compare([args.data], args.out, models=args.models.split(","), budget=budget, progress=False)

    results = json.loads((args.out / "results.json").read_text())
    world = results["worlds"][args.data.name]
    rows = {**{k: v["tau"]["mean"] for k, v in world["models"].items()}, **{k: v["tau"] for k, v in world["references"].items()}}
    for name, tau in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"{name:<40} test tau-b {tau:.4f}")
    print(f"report: {report}")


if __name__ == "__main__":
    main()
