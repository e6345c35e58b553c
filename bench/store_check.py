"""The demo's predictions with and without the padded store: one experiment's fold trained again by the code before
the store (bench/scale.py's ``BEFORE``, extracted with ``git archive``) on the same extracted features, and its test
predictions compared with those of a finished run of this checkout (docs/scale.md, "The demo's predictions").

    python bench/store_check.py --results /path/to/demo/results --experiment memf --fold 0 --out /tmp/store-check

The finished run's raw data, validated tables, tiny models and feature shards are linked into a work folder; the code
before the store pads them into its dense padded file and runs the experiment's fit job for that fold (its tuning
trials and seeds, as the workflow does: Snakemake with ``--allowed-rules pad fit`` and mtime triggers, so nothing
upstream is redone). Prints the largest absolute difference of the predictions of every stream and seed, per split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ONE_THREAD, checkout  # noqa: E402

LINKED = ("demo", "data", "features", "models")


def train_before(results: Path, experiment: str, fold: int, out: Path) -> Path:
    """The fold's predictions.parquet written by the code before the store."""
    tree, work = checkout("before", out), out / "work"
    (work / "results").mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if not (work / "results" / name).exists():
            (work / "results" / name).symlink_to(results.resolve() / name)
    target = f"results/runs/{experiment}/fold{fold}/predictions.parquet"
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(tree / "src")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "--cores", "2", "--rerun-triggers",
           "mtime", "--allowed-rules", "pad", "fit", "--", target]
    with open(out / "console.log", "w") as console:
        done = subprocess.run(cmd, cwd=work, env=env, stdout=console, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the fit before the store failed: see {out / 'console.log'}")
    return work / target


def compare(before: Path, after: Path) -> dict:
    keys = ["stream_id", "seed"]
    a, b = pl.read_parquet(before), pl.read_parquet(after)
    joined = a.join(b, on=keys, suffix="_after")
    if joined.height != a.height or joined.height != b.height:
        raise SystemExit(f"the runs predict different streams: {a.height} before, {b.height} after, {joined.height} "
                         "in both")
    diff = joined.with_columns((pl.col("y_pred") - pl.col("y_pred_after")).abs().alias("diff"))
    per_split = diff.group_by("split").agg(pl.col("diff").max(), pl.len()).sort("split")
    return {"streams x seeds": joined.height, "max_abs_diff": float(diff["diff"].max()),
            "per_split": per_split.to_dicts()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a finished run's results folder (this code)")
    parser.add_argument("--experiment", default="memf")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    before = train_before(args.results, args.experiment, args.fold, args.out)
    after = args.results / "runs" / args.experiment / f"fold{args.fold}" / "predictions.parquet"
    print(json.dumps(compare(before, after), indent=1))


if __name__ == "__main__":
    main()
