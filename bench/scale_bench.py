"""Peak memory and CPU time of stage 2 against the number of streams: pad, one MEMF fit job, the export's neutral
reference with the prediction of every stream, and the latent feature set (docs/training.md, "Memory at scale").

Inputs are synthetic (tests/scale_support.py): the validated tables and a feature store of random vectors at the
demo's or the paper's dimensions (768-d text, video and audio, 2048-d images), 1..8 items and 1..5 clips per stream.
Each measured step runs in a fresh process and reports its own peak resident set (``ru_maxrss``) and CPU seconds, so
the code under test can be any checkout: ``--src`` puts its ``src`` first on the path (the layout before the padded
store, for a before/after comparison, runs the same steps through its own API).

    python bench/scale_bench.py write --streams 20000 --dims paper --shards 8 --out /tmp/s20k
    python bench/scale_bench.py measure --data /tmp/s20k --steps pad fit predict [--src ../main/src]
    python bench/scale_bench.py run --streams 1000 20000 --dims paper --out /tmp/scale   # both, per stream count
    python bench/scale_bench.py write --streams 100000 --latent --out /tmp/lat100k       # media-free simulation
    python bench/scale_bench.py measure --data /tmp/lat100k --steps latent

A child step alone: ``python bench/scale_bench.py child pad|fit|predict --data DIR`` prints one JSON line: peak_mib,
cpu_s, wall_s. The fit job trains MEMF with the demo's model options (config.yaml ``model``) for ``--epochs`` epochs,
one seed, no tuning: the data path is what is measured. ``--batch-size`` (training, evaluation and prediction; 64
and 512 by default), ``--cache-mb`` (train.cache_mb), and for tests on few streams ``--block-rows``,
``--pad-block``, ``--field-batch-rows`` and ``--whole-shuffle-bytes`` (the constants of memf.padding.batches,
memf.padding.pad and memf.padding.sources, set smaller so that every buffer is full at both sizes compared) are
passed on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS: tuple[str, ...] = ("pad", "fit", "predict", "latent")


def _usage(started: float) -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"peak_mib": round(usage.ru_maxrss / 1024, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "wall_s": round(time.perf_counter() - started, 2)}


def _shards(data: Path) -> dict[str, list[str]]:
    return {m: sorted(str(p) for p in (data / "features" / m).glob("shard-*.*") if ".failures" not in p.name)
            for m in ("text", "image", "numeric", "video", "audio")}


def child_pad(data: Path) -> None:
    from memf.data.contract import DEFAULT_COLUMNS
    from memf.padding.pad import pad_feature_set

    pad_feature_set(data_dir=data / "data", feature_set="synthetic", shards=_shards(data), columns=DEFAULT_COLUMNS,
                    max_items=8, max_clips=5, out=data / "padded.h5", truncated_out=data / "padded.truncated.parquet")


def child_latent(data: Path) -> None:
    try:
        from memf.padding.pad import pad_latents
    except ImportError:  # the layout before the padded store
        from memf.padding.pad import pad_latents

    pad_latents(data_dir=data / "data", latents=data / "raw" / "latents.parquet", max_items=8, max_clips=5,
                out=data / "latent.h5", ground_truth_json=data / "raw" / "ground_truth.json")


def _model_options() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config.yaml").read_text())["model"]


def child_fit(data: Path, epochs: int, cache_mb: float | None, batch_size: int | None) -> None:
    import torch

    from memf.training.fit import JobSpec, fit_experiment
    from memf.training.neural import NeuralFitter
    from memf.training.settings import TrainConfig

    torch.set_num_threads(1)
    cfg = {"epochs": epochs, "batch_size": batch_size or 64, "eval_batch_size": batch_size or 512, "patience": 0,
           "checkpoint_every": 0, "device": "cpu"}
    if cache_mb is not None and "cache_mb" in TrainConfig.__dataclass_fields__:
        cfg["cache_mb"] = cache_mb
    spec = JobSpec(experiment="memf", model="memf", feature_set="synthetic", fold=0, seeds=(0,),
                   options=_model_options())
    fit_experiment(data / "padded.h5", data / "run", spec, cfg, fitter=NeuralFitter, tuning_dir=data / "tuning")


def _member(dims: dict, scaler, neutral: dict):
    import torch

    from memf.models import build_model
    from memf.predict.bundle import Bundle, Member

    torch.manual_seed(0)
    model = build_model("memf", dims, **_model_options()).eval()
    member = Member(0, {0: model}, {0: (5.0, 1.0)}, scaler, neutral, list(model.attention_labels))
    return Bundle(Path("."), {}, [member])


def child_predict(data: Path, batch_size: int | None) -> None:
    """The export's neutral reference over fold 0's training part, then every stream predicted with the drivers
    by one member (random weights): what rules export and predict do per stream."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    try:
        from memf.padding.batches import BLOCK_ROWS, BatchReader
        from memf.padding.store import PaddedStore
    except ImportError:  # the layout before the padded store
        return _child_predict_dense(data, batch_size or 512)
    from memf.predict.neutral import neutral_reference
    from memf.predict.predictor import run_members
    from memf.training.prepare import fold_data

    with PaddedStore(data / "padded.h5") as store:
        fold = fold_data(store, 0, 0)
        rows = batch_size or BLOCK_ROWS
        train = BatchReader(store, fold.rows["train"], block_rows=rows, transform=fold.scaler.apply)
        neutral = neutral_reference(arrays for _, arrays in train.batches(rows))
        outputs = run_members(_member(store.dims(), fold.scaler, neutral), store, batch_size or 512)
    assert np.isfinite(outputs.pred[(0, 0)]).all()


def _child_predict_dense(data: Path, batch_size: int) -> None:
    import numpy as np

    from memf.padding.padded import read_padded
    from memf.predict.neutral import neutral_reference
    from memf.predict.predictor import run_members
    from memf.training.prepare import fold_data

    padded = read_padded(data / "padded.h5")
    fold = fold_data(padded, 0)
    neutral = neutral_reference(fold.padded.arrays, fold.rows["train"])
    outputs = run_members(_member(padded.dims(), fold.scaler, neutral), padded.arrays, batch_size)
    assert np.isfinite(outputs.pred[(0, 0)]).all()


def _constants(args: argparse.Namespace) -> None:
    """Set the block constants a test makes smaller (the layout before the padded store has none)."""
    if args.pad_block is not None:
        from memf.padding import pad

        pad.PAD_BLOCK = args.pad_block
    if args.field_batch_rows is not None:
        try:
            from memf.padding import sources
        except ImportError:
            return
        sources.FIELD_BATCH_ROWS = args.field_batch_rows
    if args.block_rows is not None or args.whole_shuffle_bytes is not None:
        try:
            from memf.padding import batches
        except ImportError:
            return

        batches.BLOCK_ROWS = args.block_rows or batches.BLOCK_ROWS
        batches.WHOLE_SHUFFLE_BYTES = batches.WHOLE_SHUFFLE_BYTES if args.whole_shuffle_bytes is None else \
            args.whole_shuffle_bytes


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    _constants(args)
    if args.step == "pad":
        child_pad(args.data)
    elif args.step == "fit":
        child_fit(args.data, args.epochs, args.cache_mb, args.batch_size)
    elif args.step == "latent":
        child_latent(args.data)
    else:
        child_predict(args.data, args.batch_size)
    print(json.dumps({"step": args.step, **_usage(started)}))


def measure_step(step: str, data: Path, src: Path, *extra: str) -> dict:
    """Run one step in a fresh process with ``src`` first on the path; its JSON line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, __file__, "child", step, "--data", str(data), *extra], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{step} on {data} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    if args.latent:
        import yaml

        from memf.simulate import simulate_latents
        from simulate_support import write_latent_dataset

        sim = {**yaml.safe_load((ROOT / "config.yaml").read_text())["simulator"], "n_streams": args.streams,
               "n_anchors": max(2, args.streams // 4)}
        write_latent_dataset(simulate_latents(sim), args.out / "raw", args.out / "data", folds=5)
    else:
        from scale_support import DEMO_DIMS, PAPER_DIMS, write_synthetic

        write_synthetic(args.out, args.streams, PAPER_DIMS if args.dims == "paper" else DEMO_DIMS,
                        n_shards=args.shards)
    print(json.dumps({"streams": args.streams, "dims": args.dims, "seconds": round(time.perf_counter() - started, 1)}))


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    for step in args.steps:
        extra = ["--epochs", str(args.epochs)] + (["--cache-mb", str(args.cache_mb)] if args.cache_mb is not None
                                                   else [])
        row = {"data": str(args.data), "src": str(args.src), **measure_step(step, args.data, args.src, *extra)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> None:
    for n in args.streams:
        folder = args.out / f"{args.dims}-{n}"
        if not (folder / "data" / "dataset.json").exists():
            subprocess.run([sys.executable, __file__, "write", "--streams", str(n), "--dims", args.dims, "--shards",
                            str(args.shards), "--out", str(folder)], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(args.src), str(ROOT / "tests")])})
        measure(argparse.Namespace(data=folder, steps=args.steps, src=args.src, epochs=args.epochs,
                                   cache_mb=args.cache_mb))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("--streams", type=int, required=True)
    w.add_argument("--dims", choices=["demo", "paper"], default="paper")
    w.add_argument("--shards", type=int, default=2)
    w.add_argument("--latent", action="store_true", help="the simulator's latent dataset instead (no media)")
    w.add_argument("--out", type=Path, required=True)
    for name in ("measure", "run"):
        m = sub.add_parser(name)
        m.add_argument("--steps", nargs="+", choices=STEPS, default=["pad", "fit", "predict"])
        m.add_argument("--src", type=Path, default=ROOT / "src")
        m.add_argument("--epochs", type=int, default=1)
        m.add_argument("--cache-mb", type=float, default=None)
        if name == "measure":
            m.add_argument("--data", type=Path, required=True)
        else:
            m.add_argument("--streams", type=int, nargs="+", required=True)
            m.add_argument("--dims", choices=["demo", "paper"], default="paper")
            m.add_argument("--shards", type=int, default=2)
            m.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("child")
    c.add_argument("step", choices=STEPS)
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--epochs", type=int, default=1)
    c.add_argument("--cache-mb", type=float, default=None)
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--block-rows", type=int, default=None)
    c.add_argument("--pad-block", type=int, default=None)
    c.add_argument("--field-batch-rows", type=int, default=None)
    c.add_argument("--whole-shuffle-bytes", type=int, default=None)
    args = p.parse_args()
    {"write": write, "measure": measure, "run": run, "child": child}[args.command](args)


if __name__ == "__main__":
    main()
