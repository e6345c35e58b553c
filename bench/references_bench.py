"""The reference models of a config fitted as the workflow fits them, for before/after comparisons and for the
reduction's number of components.

    python bench/references_bench.py rows --padded results/padded --out /tmp/refs-after
        # every reference experiment of config.yaml, tuned as configured, on every fold: pooled test metrics
    PYTHONPATH=<old checkout>/src python bench/references_bench.py rows --padded results/padded --out /tmp/refs-before
        # the same with another checkout's code (the script uses only the API both share)
    python bench/references_bench.py compare /tmp/refs-before/rows.json /tmp/refs-after/rows.json
    python bench/references_bench.py reduction --padded results/padded --components 16 32 64 128 256 --out /tmp/red
        # ridge-set and hgb-set with the reduction forced (reduce_above 0) at each number of components, and without

``rows`` runs, for each reference experiment of the config (``--experiments`` to choose) and each fold, the job the
rule ``fit_reference`` runs (:func:`memf.training.fit.fit_experiment` with the reference fitter: tuning with the
config's search space and trial budget, then every seed) on ``--padded``/{feature_set}.h5 (written by the workflow),
and writes OUT/rows.json: per experiment the pooled test metrics (every fold's test predictions pooled, per seed,
averaged over seeds, as the tables compute them), the mean best validation R² of the tuning, and the job seconds.
``reduction`` writes OUT/reduction.json: per number of components (and ``none``) the mean over folds of the tuned
validation R² and the pooled test R².
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from threadpoolctl import threadpool_limits

from memf.core.metrics import METRICS, regression_metrics
from memf.training.fit import JobSpec, fit_experiment
from memf.training.matrix import experiments_from_config
from memf.training.reference_fit import ReferenceFitter
from memf.training.settings import TuningSettings, parse_space

ROOT = Path(__file__).resolve().parents[1]


def fit_folds(config: dict[str, Any], name: str, entry: dict[str, Any], padded: Path, out: Path,
              folds: list[int]) -> dict[str, Any]:
    """Fit one reference experiment on every fold as rule fit_reference does; its pooled test metrics."""
    exp = experiments_from_config({name: entry}, config["seeds"])[name]
    space = parse_space(exp.search, config["search_spaces"][exp.search]) if exp.search else None
    preds, val_r2, started = [], [], time.perf_counter()
    for fold in folds:
        spec = JobSpec(experiment=name, model=exp.model, feature_set=exp.feature_set, fold=fold, seeds=exp.seeds,
                       options=dict(exp.options), space=space, source=exp.search or "fixed")
        tuning = out / "tuning" / name / f"fold{fold}"
        fit_experiment(padded / f"{exp.feature_set}.h5", out / "runs" / name / f"fold{fold}", spec,
                       {"device": "cpu"}, fitter=ReferenceFitter, tuning_dir=tuning,
                       tuning=TuningSettings.from_dict(config["tuning"]))
        frame = pl.read_parquet(out / "runs" / name / f"fold{fold}" / "predictions.parquet")
        preds.append(frame.filter(pl.col("split") == "test"))
        best = json.loads((tuning / "best.json").read_text())
        if best.get("best_trial"):
            val_r2.append(best["best_trial"]["val_r2"])
    test = pl.concat(preds)
    per_seed = [regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy())
                for _, part in test.group_by("seed", maintain_order=True)]
    return {**{m: float(np.mean([s[m] for s in per_seed])) for m in METRICS},
            "val_r2": float(np.mean(val_r2)) if val_r2 else None, "seconds": time.perf_counter() - started,
            "n_streams": test["stream_id"].n_unique()}


def reference_entries(config: dict[str, Any], names: list[str] | None) -> dict[str, dict[str, Any]]:
    from memf.training.matrix import REFERENCE_MODELS

    entries = {n: e for n, e in config["experiments"].items() if e["model"] in REFERENCE_MODELS}
    return {n: entries[n] for n in names} if names else entries


def cmd_rows(args: argparse.Namespace) -> None:
    config = yaml.safe_load(args.config.read_text())
    folds = args.folds or list(range(config["split"]["folds"]))
    rows = {}
    for name, entry in reference_entries(config, args.experiments).items():
        rows[name] = fit_folds(config, name, entry, args.padded, args.out, folds)
        print(name, json.dumps(rows[name]), flush=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))


def cmd_compare(args: argparse.Namespace) -> None:
    before, after = (json.loads(Path(p).read_text()) for p in (args.before, args.after))
    for name in before:
        deltas = {m: after[name][m] - before[name][m] for m in METRICS}
        print(f"{name:14s} r2 {before[name]['r2']:.6f} -> {after[name]['r2']:.6f}  max |delta| over metrics "
              f"{max(abs(v) for v in deltas.values()):.2e}  seconds {before[name]['seconds']:.1f} -> "
              f"{after[name]['seconds']:.1f}")


def cmd_reduction(args: argparse.Namespace) -> None:
    config = yaml.safe_load(args.config.read_text())
    folds = args.folds or list(range(config["split"]["folds"]))
    out: dict[str, dict[str, Any]] = {}
    for name in ("ridge-set", "hgb-set"):
        entry = config["experiments"][name]
        for k in [None, *args.components]:
            options = dict(entry.get("options") or {})
            if k is not None:
                options.update(reduce_above=0, components=k)
            label = f"{name}/{'none' if k is None else k}"
            row = fit_folds(config, label.replace("/", "-"), {**entry, "options": options}, args.padded, args.out,
                            folds)
            out[label] = {"val_r2": row["val_r2"], "test_r2": row["r2"], "seconds": row["seconds"]}
            print(label, json.dumps(out[label]), flush=True)
    (args.out / "reduction.json").write_text(json.dumps(out, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("rows", "reduction"):
        p = sub.add_parser(command)
        p.add_argument("--config", type=Path, default=ROOT / "config.yaml")
        p.add_argument("--padded", type=Path, required=True, help="folder of {feature_set}.h5")
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--folds", type=int, nargs="*")
        if command == "rows":
            p.add_argument("--experiments", nargs="*")
        else:
            p.add_argument("--components", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    p = sub.add_parser("compare")
    p.add_argument("before")
    p.add_argument("after")
    args = parser.parse_args()
    if args.command == "compare":
        cmd_compare(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(1):
        {"rows": cmd_rows, "reduction": cmd_reduction}[args.command](args)


if __name__ == "__main__":
    main()
