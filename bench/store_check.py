"""Predictions before and after the padded store: every run of two work folders of the same config, compared stream
by stream (docs/scale.md, "Predictions unchanged").

    python bench/store_check.py /tmp/scale/chain/before-10000 /tmp/scale/chain/after-10000

``bench/scale.py chain`` leaves such a pair for each size it runs with both codes (the code before the store and this
checkout, on the same simulated data). For every ``results/runs/<experiment>/fold<k>/predictions.parquet`` of the
first folder, the same file of the second must predict the same streams and seeds; prints, per run, the largest
absolute difference of the predictions per split, and exits 1 if any exceeds ``--tolerance`` (1e-5).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

RUNS = "results/runs"


def compare(before: Path, after: Path) -> dict:
    """Largest absolute difference of y_pred, per split and overall, of two predictions.parquet files."""
    keys = ["stream_id", "seed"]
    a, b = pl.read_parquet(before), pl.read_parquet(after)
    joined = a.join(b, on=keys, suffix="_after")
    if joined.height != a.height or joined.height != b.height:
        raise SystemExit(f"{before} and {after} predict different streams: {a.height} and {b.height} rows, "
                         f"{joined.height} in both")
    diff = joined.with_columns((pl.col("y_pred") - pl.col("y_pred_after")).abs().alias("diff"))
    per_split = diff.group_by("split").agg(pl.col("diff").max(), pl.len()).sort("split")
    return {"rows": joined.height, "max_abs_diff": float(diff["diff"].max()), "per_split": per_split.to_dicts()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="work folder of the run with the code before the store")
    parser.add_argument("after", type=Path, help="work folder of the same config with this checkout")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    files = sorted((args.before / RUNS).glob("*/fold*/predictions.parquet"))
    if not files:
        raise SystemExit(f"{args.before / RUNS}: no predictions.parquet")
    worst = 0.0
    for path in files:
        run = path.parent.relative_to(args.before / RUNS)
        result = compare(path, args.after / RUNS / run / "predictions.parquet")
        worst = max(worst, result["max_abs_diff"])
        print(json.dumps({"run": str(run), **result}))
    print(f"largest difference {worst:.3g} (tolerance {args.tolerance:g})")
    return int(worst > args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
