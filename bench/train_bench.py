"""Training throughput and peak memory of the fusion models at demo and paper sizes, and the stage-2 job layout.

    python bench/train_bench.py                       # demo and paper sizes, every model, CPU (and CUDA if present)
    python bench/train_bench.py --sizes demo --models memf cmmt --device cpu --steps 10
    python bench/train_bench.py --layout --runs 8     # trained runs per core-minute: a process per run vs one per job
    python bench/train_bench.py --epoch-time --sizes paper --models memf --device cuda --batch-size 32
        # seconds per epoch of 736 training streams (the paper's training set) through the real training loop

``--layout`` trains ``--runs`` MEMF runs of the same data (demo sizes, 500 synthetic streams, fold 0's 300 training and
100 validation streams) in two layouts, side by side in one measurement: the layout before this one (commit
2d6ea32, extracted with ``git archive``: one Snakemake job, so one Python process, per run: the interpreter, torch
and scikit-learn start-up, one training with the test metrics every epoch, checkpoints and its run folder), and one
stage-2 job of this layout (one process: ``runs - 3`` tuning trials on the validation part, pruned by the median rule,
then 3 seeds with the chosen settings, written as one run folder). It reports the wall time, the CPU time of the
processes (``RUSAGE_CHILDREN``), trained runs per core-minute of each layout and their ratio.

Each (model, size, device) runs in a fresh subprocess so its peak memory is its own: on the CPU the process's peak
resident set (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated``. Inputs are a synthetic padded batch with
the demo's shapes (8 items, 5 clips, 32-d text, video and audio from the tiny models, ResNet18 512-d images) and the
model options of config.yaml's ``model`` section, or the paper's shapes (BERT 768-d text, ResNet50 2048-d images,
VideoMAE 768-d video, wav2vec2 768-d audio) and options (``memf.models.PAPER_OPTIONS``). Samples/s counts streams through forward,
backward and an Adam step, after warm-up steps.

``--epoch-time`` trains ``--streams`` synthetic streams (with an eighth as many for validation, and as many for the
test part) through :func:`memf.training.loop.train_model`, the loop the pipeline's jobs run (deterministic algorithms
on CUDA as ``train.deterministic`` says, the validation pass after each epoch included), and reports the median
seconds per epoch after the first and the training samples/s that gives.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from memf.data.folds import split_of
from memf.models import MODELS, PAPER_OPTIONS, build_model
from memf.padding.padded import Padded
from memf.padding.store import PaddedStore, write_padded
from memf.training.loop import deterministic_algorithms, train_model
from memf.training.prepare import fold_data
from memf.training.settings import TrainConfig

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
#: Size name -> (model options, input dims of text, image, video, audio).
SIZES = {
    "demo": (yaml.safe_load(CONFIG.read_text())["model"], {"dt": 32, "di": 512, "dv": 32, "da": 32}),
    "paper": (PAPER_OPTIONS, {"dt": 768, "di": 2048, "dv": 768, "da": 768}),
}
FIELDS = {"anchor": (4, 1, 8), "commodity": (5, 1, 2), "room": (2, 1, 1)}  # text, image, numeric fields (paper Tables 1-3)
ITEMS, CLIPS = 8, 5


def synthetic_batch(n: int, dt: int, di: int, dv: int, da: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of ``n`` streams with about half the items and clips real."""
    g = torch.Generator().manual_seed(seed)
    batch: dict[str, torch.Tensor] = {}
    for entity in ("anchor", "room"):
        lt, li, ln = FIELDS[entity]
        batch[f"{entity}/text"] = torch.randn(n, lt, dt, generator=g)
        batch[f"{entity}/image"] = torch.randn(n, li, di, generator=g)
        batch[f"{entity}/numeric"] = torch.randn(n, ln, generator=g)
    lt, li, ln = FIELDS["commodity"]
    batch["commodity/text"] = torch.randn(n, ITEMS, lt, dt, generator=g)
    batch["commodity/image"] = torch.randn(n, ITEMS, li, di, generator=g)
    batch["commodity/numeric"] = torch.randn(n, ITEMS, ln, generator=g)
    batch["commodity/mask"] = torch.arange(ITEMS)[None] < torch.randint(1, ITEMS + 1, (n, 1), generator=g)
    for kind, d in (("video", dv), ("audio", da)):
        batch[f"{kind}/x"] = torch.randn(n, CLIPS, d, generator=g)
        batch[f"{kind}/mask"] = torch.arange(CLIPS)[None] < torch.randint(1, CLIPS + 1, (n, 1), generator=g)
    return batch


def one(model_name: str, size: str, device: str, batch_size: int, steps: int, warmup: int) -> dict[str, object]:
    """Time ``steps`` training steps of one model at one size on one device (in this process)."""
    torch.manual_seed(0)
    options, dims = SIZES[size]
    batch = {k: v.to(device) for k, v in synthetic_batch(batch_size, **dims).items()}
    y = torch.randn(batch_size, device=device)
    model = build_model(model_name, {k: tuple(v.shape[1:]) for k, v in batch.items()}, **options).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        loss = torch.nn.functional.mse_loss(model(batch).pred, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "model": model_name, "size": size, "device": device, "batch_size": batch_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "samples_per_s": round(steps * batch_size / seconds, 1), "peak_mib": round(peak, 1),
        "peak_kind": "cuda allocated" if device.startswith("cuda") else "process max RSS",
    }


def training_fold(streams: int, size: str, seed: int = 0) -> Padded:
    """Synthetic padded streams whose run fold 0 (5 folds) trains on exactly ``streams`` of them (folds 2-4),
    validates on ``streams // 8`` (fold 1) and tests as many (fold 0)."""
    held = max(2, streams // 8)
    n = streams + 2 * held
    arrays = {k: v.numpy() for k, v in synthetic_batch(n, **SIZES[size][1], seed=seed).items()}
    fold = np.concatenate([np.zeros(held), np.ones(held), 2 + np.arange(streams) % 3]).astype(np.int8)
    target = np.random.default_rng(seed).normal(5.0, 1.0, n).astype(np.float32)
    return Padded(stream_id=np.array([f"s{i:05d}" for i in range(n)]), fold=fold, target=target, folds=5, arrays=arrays)


def epoch_time(model_name: str, size: str, device: str, batch_size: int, epochs: int, streams: int = 736,
               deterministic: bool = True) -> dict[str, object]:
    """Seconds per epoch of ``streams`` training streams through the pipeline's training loop (in this process)."""
    if epochs < 2:
        raise ValueError(f"epochs is {epochs}; at least 2 are needed (the first one warms up and is not counted)")
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="memf-epoch-time-")
    write_padded(Path(folder) / "fold.h5", training_fold(streams, size))
    data = fold_data(PaddedStore(Path(folder) / "fold.h5"), 0)
    model = build_model(model_name, data.dims(), **SIZES[size][0])
    cfg = TrainConfig.from_dict({"epochs": epochs, "batch_size": batch_size, "patience": 0, "checkpoint_every": 0,
                                 "device": device, "deterministic": deterministic})
    marks: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    with deterministic_algorithms(cfg.deterministic, torch.device(device)):
        marks.append(time.perf_counter())
        result = train_model(model, data, cfg, 0, device,
                             on_epoch_end=lambda epoch, row: marks.append(time.perf_counter()))
    data.store.close()
    shutil.rmtree(folder)
    seconds = np.diff(marks)
    epoch_s = float(np.median(seconds[1:]))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.startswith("cuda") else None
    return {
        "model": model_name, "size": size, "device": device, "batch_size": batch_size, "streams": streams,
        "val_streams": len(data.rows["val"]), "epochs": result.epochs_run, "deterministic": cfg.deterministic,
        "first_epoch_s": round(float(seconds[0]), 4), "epoch_s": round(epoch_s, 4),
        "samples_per_s": round(streams / epoch_s, 1), "peak_mib": None if peak is None else round(peak, 1),
        "final_train_loss": result.history[-1]["train_loss"],
    }


#: The layout before this one (commit 2d6ea32): one Snakemake job, so one Python process, per (experiment, seed) run.
BASELINE_COMMIT = "2d6ea32"
BASELINE_RUN = """
import sys
import torch
from memf.train import run_training
import yaml
torch.set_num_threads(1)
path, out, seed, config = sys.argv[1], sys.argv[2], int(sys.argv[3]), yaml.safe_load(open(sys.argv[4]))
train = {**config["train"], "device": "cpu"}
train.pop("weight_decay", None)
run_training(path, out, experiment="memf", model_name="memf", options=config["model"], feature_set="demo", seed=seed,
             train_cfg=train)
"""
#: The job layout: one process tunes (trials) and trains every seed of one (experiment, fold).
JOB_RUN = """
import sys
import torch
from memf.training.fit import JobSpec, fit_experiment
from memf.training.neural import NeuralFitter
from memf.training.settings import TuningSettings, parse_space
import yaml
torch.set_num_threads(1)
path, out, trials, config = sys.argv[1], sys.argv[2], int(sys.argv[3]), yaml.safe_load(open(sys.argv[4]))
space = parse_space("bench", {"train.lr": {"log_uniform": [1e-3, 1e-2]}, "model.dropout": {"choice": [0.0, 0.1, 0.2]}})
spec = JobSpec(experiment="memf", model="memf", feature_set="demo", fold=0, seeds=(0, 1, 2), options=config["model"],
               space=space, source="bench")
fit_experiment(path, out + "/run", spec, {**config["train"], "device": "cpu"}, fitter=NeuralFitter,
               tuning_dir=out + "/tuning",
               tuning=TuningSettings.from_dict({**config["tuning"], "trials": trials}))
"""


def synthetic_arrays(n: int = 500) -> tuple[dict, "np.ndarray"]:
    """Demo-sized padded arrays whose target depends on a few inputs."""
    arrays = {k: v.numpy() for k, v in synthetic_batch(n, **SIZES["demo"][1]).items()}
    rng = np.random.default_rng(0)
    target = 5 + arrays["anchor/numeric"][:, 0] + arrays["commodity/text"][:, 0, 0, :4].sum(1) + rng.normal(0, 0.5, n)
    return arrays, target.astype(np.float32)


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The same streams as this layout's padded file (5 folds) and the baseline's (fold 0 as its fixed split)."""
    import h5py

    arrays, target = synthetic_arrays()
    n = len(target)
    fold = (np.arange(n) % 5).astype(np.int8)
    ids = np.array([f"s{i:04d}" for i in range(n)], dtype=object)
    new, old = folder / "demo.h5", folder / "demo-baseline.h5"
    write_padded(new, Padded(stream_id=ids, fold=fold, target=target, folds=5, arrays=arrays))
    with h5py.File(old, "w") as h5:
        h5.create_dataset("stream_id", data=ids, dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("split", data=split_of(fold, 0, 5))
        h5.create_dataset("target", data=target)
        for key, arr in arrays.items():
            h5.create_dataset(key, data=arr)
    return new, old


def layout(runs: int) -> None:
    """Trained runs per core-minute: the baseline's process per run against this layout's process per job."""
    import tempfile

    if runs < 4:
        raise SystemExit("--runs must be at least 4 (a job trains its trials, then 3 seeds)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "-C", str(CONFIG.parent), "archive", BASELINE_COMMIT, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        new, old = write_inputs(tmp)

        def measure(commands: list[list[str]], pythonpath: Path) -> tuple[float, float]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            for cmd in commands:
                subprocess.run([sys.executable, "-c", *cmd], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONPATH": str(pythonpath), "TQDM_DISABLE": "1"})
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            return time.perf_counter() - started, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

        src = Path(__file__).resolve().parents[1] / "src"
        old_cfg = tmp / "baseline.yaml"
        old_cfg.write_text(subprocess.run(["git", "-C", str(CONFIG.parent), "show", f"{BASELINE_COMMIT}:config.yaml"],
                                          capture_output=True, text=True, check=True).stdout)
        per_run = measure([[BASELINE_RUN, str(old), str(tmp / f"old{s}"), str(s), str(old_cfg)] for s in range(runs)],
                          baseline / "src")
        per_job = measure([[JOB_RUN, str(new), str(tmp / "job"), str(runs - 3), str(CONFIG)]], src)
    print(f"{runs} MEMF runs at demo sizes (500 synthetic streams, fold 0: 300 train, 100 validation), 1 torch thread")
    print(f"{'layout':<46}{'wall s':>9}{'CPU s':>9}{'runs/core-min':>15}")
    rates = []
    for name, (wall, cpu) in ((f"a process per run ({BASELINE_COMMIT})", per_run),
                              (f"one job: {runs - 3} trials + 3 seeds", per_job)):
        rates.append(runs / (cpu / 60))
        print(f"{name:<46}{wall:>9.1f}{cpu:>9.1f}{rates[-1]:>15.2f}")
    print(f"ratio (job layout / run layout): {rates[1] / rates[0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--layout", action="store_true", help="compare the stage-2 job layouts (see above)")
    parser.add_argument("--epoch-time", action="store_true", help="seconds per epoch of the training loop (see above)")
    parser.add_argument("--streams", type=int, default=736, help="training streams of --epoch-time")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of --epoch-time (the first is not counted)")
    parser.add_argument("--runs", type=int, default=8, help="runs trained in --layout")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layout:
        layout(args.runs)
        return
    if args.one:
        print(json.dumps(one(args.models[0], args.sizes[0], args.device[0], args.batch_size, args.steps, args.warmup)))
        return
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if args.epoch_time:
        print(f"{'model':<22}{'size':<7}{'device':<8}{'streams':>8}{'epoch s':>10}{'samples/s':>12}{'peak MiB':>11}")
        for device in devices:
            for size in args.sizes:
                for name in args.models:
                    r = epoch_time(name, size, device, args.batch_size, args.epochs, args.streams)
                    print(f"{name:<22}{size:<7}{device:<8}{r['streams']:>8}{r['epoch_s']:>10}{r['samples_per_s']:>12}"
                          f"{r['peak_mib'] if r['peak_mib'] is not None else '-':>11}")
        return
    print(f"{'model':<22}{'size':<7}{'device':<8}{'params':>12}{'samples/s':>12}{'peak MiB':>11}  peak of")
    for device in devices:
        for size in args.sizes:
            for name in args.models:
                cmd = [sys.executable, __file__, "--one", "--models", name, "--sizes", size, "--device", device,
                       "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name:<22}{size:<7}{device:<8} failed: {done.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{r['model']:<22}{r['size']:<7}{r['device']:<8}{r['parameters']:>12,}{r['samples_per_s']:>12}"
                      f"{r['peak_mib']:>11}  {r['peak_kind']}")


if __name__ == "__main__":
    main()
