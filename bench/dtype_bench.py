"""The effect of ``padding.dtype: float16`` on R² (docs/training.md, "float16 storage").

Pads a feature set once in float32 and once in float16 and fits MEMF with the demo's model and training settings
(config.yaml ``model`` and ``train``, no tuning) on every fold and seed of each. The feature set is either the latent
one of ``--streams`` streams simulated without media (``memf.simulate.simulate_latents``, the demo's simulator
settings), or, with ``--results``, the ``demo`` feature set of a workflow's results folder (its validated data and
extracted shards: real extractor vectors). Prints, per dtype, the store's size, the test R² of every (fold, seed) run
and the pooled test R² of the seed ensemble, and the paired differences (float16 - float32):

    python bench/dtype_bench.py --streams 500 --seeds 0 1 2 --out /tmp/dtype
    python bench/dtype_bench.py --results results --seeds 0 1 2 --out /tmp/dtype-demo
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the latent dataset writer is test data
from memf.core.metrics import regression_metrics  # noqa: E402
from memf.features.layout import shard_path  # noqa: E402
from memf.padding.pad import pad_feature_set, pad_latents  # noqa: E402
from memf.simulate import simulate_latents  # noqa: E402
from memf.training.fit import JobSpec, fit_experiment  # noqa: E402
from memf.training.neural import NeuralFitter  # noqa: E402
from simulate_support import write_latent_dataset  # noqa: E402


def fit_all(padded: Path, out: Path, folds: int, seeds: tuple[int, ...], config: dict) -> pl.DataFrame:
    """Every fold's runs: the test predictions of each seed (stream_id, fold, seed, y_true, y_pred)."""
    frames = []
    train = {**config["train"], "device": "cpu", "checkpoint_every": 0}
    for fold in range(folds):
        spec = JobSpec(experiment="memf", model="memf", feature_set="latent", fold=fold, seeds=seeds,
                       options=config["model"])
        fit_experiment(padded, out / f"fold{fold}", spec, train, fitter=NeuralFitter, tuning_dir=out / f"t{fold}")
        preds = pl.read_parquet(out / f"fold{fold}" / "predictions.parquet").filter(pl.col("split") == "test")
        frames.append(preds.with_columns(fold=pl.lit(fold)))
    return pl.concat(frames)


def scores(test: pl.DataFrame) -> dict:
    runs = {f"{f}/{s}": regression_metrics(part["y_true"].to_numpy(), part["y_pred"].to_numpy())["r2"]
            for (f, s), part in test.group_by("fold", "seed", maintain_order=True)}
    ensemble = test.group_by("stream_id").agg(pl.col("y_true").first(), pl.col("y_pred").mean())
    return {"runs": runs, "pooled_seed_mean_r2": regression_metrics(ensemble["y_true"].to_numpy(),
                                                                    ensemble["y_pred"].to_numpy())["r2"]}


def padder(args: argparse.Namespace, config: dict):
    """(dtype, out) -> writes the padded store: the demo feature set of ``--results``, or the latent one."""
    if args.results is not None:
        chosen = config["feature_sets"]["demo"]
        shards = {m: [shard_path(args.results / "features", m, name, k) for k in range(config["extraction"]["shards"])]
                  for m, name in chosen.items()}
        return lambda dtype, out: pad_feature_set(
            data_dir=args.results / "data", feature_set="demo", shards=shards, columns=config["columns"],
            max_items=config["padding"]["max_items"], max_clips=config["padding"]["max_clips"], out=out,
            truncated_out=out.with_suffix(".truncated.parquet"), dtype=dtype)
    sim = {**config["simulator"], "n_streams": args.streams, "n_anchors": max(2, args.streams // 4)}
    raw, data = args.out / "raw", args.out / "data"
    write_latent_dataset(simulate_latents(sim), raw, data, folds=args.folds)
    return lambda dtype, out: pad_latents(data_dir=data, latents=raw / "latents.parquet", max_items=8, max_clips=5,
                                          out=out, ground_truth_json=raw / "ground_truth.json", dtype=dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--results", type=Path, default=None, help="a workflow's results folder (its demo feature set)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    pad = padder(args, config)
    result = {}
    for dtype in ("float32", "float16"):
        padded = args.out / f"padded-{dtype}.h5"
        pad(dtype, padded)
        test = fit_all(padded, args.out / dtype, args.folds, tuple(args.seeds), config)
        result[dtype] = {"store_bytes": padded.stat().st_size, **scores(test)}
        print(json.dumps({dtype: result[dtype]}), flush=True)
    diff = np.array([result["float16"]["runs"][k] - result["float32"]["runs"][k] for k in result["float32"]["runs"]])
    print(json.dumps({"r2_diff_runs": {"mean": float(diff.mean()), "min": float(diff.min()), "max": float(diff.max()),
                                       "n": len(diff)},
                      "r2_diff_pooled": result["float16"]["pooled_seed_mean_r2"]
                      - result["float32"]["pooled_seed_mean_r2"]}))


if __name__ == "__main__":
    main()
