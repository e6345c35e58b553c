"""Peak memory and CPU time of the workflow's jobs by stream count: the measurements behind memf.resources.COST.

    python bench/resources_bench.py --out /tmp/res                       # every measured rule, default sizes
    python bench/resources_bench.py --rules tables --streams 5000 20000 --out /tmp/res
    python bench/resources_bench.py --rules tables --code /old/checkout/src --out /tmp/res-before
        # the same jobs with another checkout's code (the tables' before/after ratio)

Each job runs in a fresh Python process (``child`` below) on inputs the parent wrote beforehand, so its peak resident
set (VmHWM, plus twice the largest of its worker processes' ``ru_maxrss`` for validate, an upper bound) and its CPU
seconds (user + system, with its workers) are its own. One thread per process (OMP/BLAS), as the workflow's
single-threaded jobs.

- ``fit_reference``: rule fit_reference's job (:func:`memf.training.fit.fit_experiment` with the reference fitter:
  2 tuning trials and 1 seed) on a synthetic padded file, for ``ridge-set`` and ``hgb-set`` at demo dimensions (32-d
  text, video and audio, 512-d images, 8 items, 5 clips: 27.8 KB a stream) and paper dimensions (768/2048-d:
  254 KB a stream; the set statistics, 38,420 features, are reduced to 2,068);
- ``fit``: rule fit's job (MEMF at config.yaml's width, 2 tuning trials and 1 seed of 2 epochs) on the same files;
- ``pad``: rule pad's job (:func:`memf.padding.pad.pad_feature_set`) on a synthetic feature store
  (tests/scale_support.py: 1..8 items and 1..5 clips a stream) at paper dimensions; ``pad_latent``: rule pad_latent's
  job on the demo simulator's latents without media;
- ``predict``: the export's neutral reference over fold 0's training part and every stream predicted by one member
  (``bench/scale_bench.py``'s predict step: what rules export and predict hold per stream; both take its figures);
- ``tables``: rule tables' job (one table of 10 rows, 1 seed each, compared with an 11th, 2,000 resamples, 5 folds)
  on synthetic predictions;
- ``simulate``: rule simulate's job, the demo simulator's tables, truth and latents (config.yaml's sizes);
  ``simulate_render``: rule simulate_render's job with one shard (every stream's media: the cost per stream);
  ``validate``: the validation of what they wrote (its media probed by two workers).

Writes OUT/measurements.json: every job's peak MiB, CPU and wall seconds, with the per-stream slope between the two
sizes of each case (``per_stream_bytes``, ``per_stream_s``).
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIMS = {"demo": {"text": 32, "image": 512, "video": 32, "audio": 32},
        "paper": {"text": 768, "image": 2048, "video": 768, "audio": 768}}
FIELDS = {"anchor": {"text": 4, "image": 1, "numeric": 8}, "commodity": {"text": 5, "image": 1, "numeric": 2},
          "room": {"text": 2, "image": 1, "numeric": 1}}
ITEMS, CLIPS = 8, 5
#: Rule -> (dims, case, stream counts) measured by default.
PLAN: dict[str, list[tuple[str, str, tuple[int, int]]]] = {
    "fit_reference": [("demo", "ridge-set", (1000, 4000)), ("demo", "hgb-set", (1000, 4000)),
                      ("paper", "ridge-set", (500, 1500)), ("paper", "hgb-set", (500, 1500))],
    # Past the block cache (train.cache_mb, 256 MB): the padded bytes above it stay in the file.
    "fit": [("demo", "memf", (10000, 20000)), ("paper", "memf", (2000, 6000))],
    "pad": [("paper", "synthetic store", (1000, 10000))],
    "pad_latent": [("latent", "simulator", (10000, 40000))],
    "predict": [("paper", "one member", (1000, 10000))],
    "tables": [("-", "10 rows", (5000, 20000))],
    "simulate": [("demo", "simulator", (1000, 4000))],
    "simulate_render": [("demo", "one shard", (500, 2000))],
    "validate": [("demo", "probe 2 workers", (60, 240))],
}


def write_padded_file(path: Path, dims: str, n: int) -> int:
    """A synthetic padded file of ``n`` streams in 5 folds; returns its bytes per stream."""
    from memf.padding.padded import Padded
    from memf.padding.store import write_padded
    from memf.resources import padded_bytes, padded_dims

    shapes = padded_dims(FIELDS, DIMS[dims], ITEMS, CLIPS)
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {}
    for key, shape in shapes.items():
        if key.endswith("/mask"):
            arrays[key] = np.arange(shape[0])[None, :] < rng.integers(1, shape[0] + 1, size=n)[:, None]
        else:
            arrays[key] = rng.standard_normal((n, *shape), dtype=np.float32)
    target = (5 + arrays["anchor/numeric"][:, 0] + rng.normal(0, 0.5, n)).astype(np.float32)
    write_padded(path, Padded(np.array([f"s{i:06d}" for i in range(n)]), (np.arange(n) % 5).astype(np.int8), target,
                              5, arrays))
    return padded_bytes(shapes)


def write_runs(root: Path, n: int, rows: int = 11) -> None:
    """``rows`` experiments (one seed, 5 folds) of synthetic test predictions of ``n`` streams."""
    import polars as pl

    from memf.training.runs import predictions_frame, write_run

    rng = np.random.default_rng(0)
    y = rng.normal(5, 1, n)
    ids = np.array([f"s{i:06d}" for i in range(n)])
    fold = np.arange(n) % 5
    for r in range(rows):
        pred = y + rng.normal(0, 0.3 + 0.05 * r, n)
        for k in range(5):
            split = np.where(fold == k, 2, np.where(fold == (k + 1) % 5, 1, 0)).astype(np.int8)
            write_run(root / f"e{r}" / f"fold{k}", pl.concat([predictions_frame(ids, split, y, pred, 0)]), {},
                      {"params": {}}, None)


def child(rule: str, case: str, workdir: Path) -> dict[str, Any]:
    """Run one job in this process (inputs already in ``workdir``)."""
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    if rule in ("fit_reference", "fit"):
        from memf.training.fit import JobSpec, fit_experiment
        from memf.training.settings import TuningSettings, parse_space

        if rule == "fit":
            from memf.training.neural import NeuralFitter

            space = parse_space("lr", {"train.lr": {"log_uniform": [1e-3, 1e-2]}})
            spec = JobSpec("x", "memf", "fs", 0, (0,), options=dict(config["model"]), space=space)
            fit_experiment(workdir / "fs.h5", workdir / "run", spec, {"device": "cpu", "epochs": 2, "patience": 2},
                           fitter=NeuralFitter, tuning_dir=workdir / "tuning",
                           tuning=TuningSettings(trials=2, startup_trials=1, prune_warmup_epochs=2))
        else:
            from memf.training.reference_fit import ReferenceFitter

            exp = config["experiments"][case]
            space = parse_space(exp["search"], config["search_spaces"][exp["search"]])
            spec = JobSpec("x", exp["model"], "fs", 0, (0,), options=dict(exp.get("options") or {}), space=space)
            fit_experiment(workdir / "fs.h5", workdir / "run", spec, {"device": "cpu"}, fitter=ReferenceFitter,
                           tuning_dir=workdir / "tuning", tuning=TuningSettings(trials=2, startup_trials=1))
    elif rule in ("pad", "pad_latent", "predict"):
        sys.path.insert(0, str(ROOT / "bench"))
        import scale_bench

        {"pad": scale_bench.child_pad, "pad_latent": scale_bench.child_latent,
         "predict": lambda data: scale_bench.child_predict(data, None)}[rule](workdir)
    elif rule == "tables":
        from memf.report.tables import build_tables
        from memf.training.matrix import experiments_from_config

        experiments = experiments_from_config({f"e{r}": {"model": "ridge", "feature_set": "fs"} for r in range(11)},
                                              [0])
        build_tables({"t": {"rows": {f"e{r}": f"row {r}" for r in range(1, 11)}}}, experiments, workdir / "tables",
                     folds=range(5), compare_to={"fs": "e0"}, n_boot=2000, runs_root=workdir / "runs")
    elif rule in ("simulate", "simulate_render"):
        from memf.simulate.writer import render_shard, write_tables

        sim = config["simulator"] | json.loads((workdir / "sim.json").read_text())
        if rule == "simulate":
            write_tables(workdir / "raw", sim, config["columns"])
        else:
            render_shard(workdir / "raw", sim, config["columns"], 0, 1)
    elif rule == "validate":
        from memf.data.contract import numeric_accepts
        from memf.data.validate import validate_dataset

        validate_dataset(workdir / "raw", workdir / "data", columns=config["columns"], target_offset=1.0,
                         max_drop_fraction=0.25, split_seed=0, folds=5, probe_workers=2,
                         numeric_accepts=numeric_accepts(config["numeric"], config["columns"]),
                         limits=config["limits"])
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"peak_mib": (peak_rss_kib() + kids.ru_maxrss * (rule == "validate") * 2) / 1024,
            "cpu_s": own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime}


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM). Not ``ru_maxrss``: Linux carries a parent's high-water mark into a
    child it forks and execs, so a child of a big parent would report the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def prepare_store(rule: str, n: int, workdir: Path, code: Path) -> dict[str, Any]:
    """pad's feature store, pad_latent's simulated latents, or predict's padded store (the feature store padded)."""
    sys.path.insert(0, str(ROOT / "tests"))
    if rule == "pad_latent":
        import yaml

        from memf.resources import latent_bytes
        from memf.simulate import simulate_latents
        from simulate_support import write_latent_dataset

        sim = {**yaml.safe_load((ROOT / "config.yaml").read_text())["simulator"], "n_streams": n,
               "n_anchors": max(2, n // 4)}
        write_latent_dataset(simulate_latents(sim), workdir / "raw", workdir / "data", folds=5)
        return {"padded_bytes": latent_bytes(ITEMS, CLIPS)}
    from memf.resources import padded_bytes, padded_dims
    from scale_support import PAPER_DIMS, write_synthetic

    write_synthetic(workdir, n, PAPER_DIMS, n_shards=2)
    if rule == "predict":
        run_child("pad", "-", workdir, code)
    return {"padded_bytes": padded_bytes(padded_dims(FIELDS, DIMS["paper"], ITEMS, CLIPS))}


def run_child(rule: str, case: str, workdir: Path, code: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "child", rule, case, str(workdir)], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{rule} {case}: {out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}


def prepare(rule: str, dims: str, n: int, workdir: Path, code: Path) -> dict[str, Any]:
    """Write the job's inputs; what the measurement records about them."""
    workdir.mkdir(parents=True, exist_ok=True)
    if rule in ("fit_reference", "fit"):
        return {"padded_bytes": write_padded_file(workdir / "fs.h5", dims, n)}
    if rule == "tables":
        write_runs(workdir / "runs", n)
        return {}
    if rule in ("pad", "pad_latent", "predict"):
        return prepare_store(rule, n, workdir, code)
    (workdir / "sim.json").write_text(json.dumps({"n_streams": n, "n_anchors": max(4, n // 4)}))
    if rule in ("simulate_render", "validate"):
        run_child("simulate", "-", workdir, code)
    if rule == "validate":
        run_child("simulate_render", "-", workdir, code)
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", nargs="*", default=list(PLAN))
    parser.add_argument("--streams", type=int, nargs=2, help="the two stream counts (default: each case's own)")
    parser.add_argument("--code", type=Path, default=ROOT / "src", help="the memf sources the jobs run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = []
    for rule in args.rules:
        for dims, case, sizes in PLAN[rule]:
            points = []
            for n in args.streams or sizes:
                workdir = args.out / "work" / f"{rule}-{dims}-{case.replace(' ', '_')}-{n}"
                facts = prepare(rule, dims, n, workdir, args.code)
                points.append({"rule": rule, "dims": dims, "case": case, "n": n, **facts,
                               **run_child(rule, case, workdir, args.code)})
                print(json.dumps(points[-1]), flush=True)
            (a, b) = points
            slope = {"per_stream_bytes": (b["peak_mib"] - a["peak_mib"]) * 2**20 / (b["n"] - a["n"]),
                     "per_stream_s": (b["cpu_s"] - a["cpu_s"]) / (b["n"] - a["n"])}
            results.append({"rule": rule, "dims": dims, "case": case, "points": points, **slope})
            print(json.dumps({k: v for k, v in results[-1].items() if k != "points"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "measurements.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
    else:
        main()
