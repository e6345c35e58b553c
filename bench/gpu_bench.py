"""The prepared GPU benchmark of both stages (docs/features.md, "Benchmarks on a GPU"); ``bench/gpu.sh`` runs it.

Each step is a subcommand that gpu.sh runs in its own process under its own timeout; it writes its figures to one
JSON file (rewritten as they come, so a step killed at its timeout keeps what it measured) and exits non-zero, with
one line saying why, when a check fails. ``collect`` gathers every step's status, seconds and figures into
``gpu-figures.json``:

    environment  the packages against the project's pins, the device, its bf16 peak and a measured matmul rate
    gpu_tests    the tests marked gpu (``pytest -m gpu``): counts, failures, skip reasons
    extract      per extractor: model alone and end to end (items/s, peak GPU memory) against the FLOP ceiling
    train        MEMF training samples/s and the seconds per epoch of 736 training streams
    workflow     the tiny workflow with train.device and extraction.device set: wall time, the devices its jobs used

Modes: ``gpu`` (the paper's model sizes on CUDA; no GPU is an error, never a fallback) and ``smoke`` (the same steps
at tiny sizes on the CPU: ``bash bench/gpu.sh --cpu-smoke``, run by tests/test_gpu_bench.py). ``carry`` lists the
distributions bench/gpu_wheels.sh carries to a machine without network.

Only the standard library is imported at the top, so that ``collect`` and ``carry`` run whatever failed to install;
the measuring steps import their benchmark modules (extract_bench, train_bench, which hold this benchmark's imports of
memf) and torch when they start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS: tuple[str, ...] = ("environment", "gpu_tests", "extract", "train", "workflow")
MODES: tuple[str, ...] = ("gpu", "smoke")
FIGURES_FILE = "gpu-figures.json"

# --- The card's ceiling ----------------------------------------------------------------------------------------------

#: Dense bf16 tensor-core peak (TFLOP/s, without sparsity) from NVIDIA's datasheets, by a pattern of the name torch
#: reports (``torch.cuda.get_device_name``); the first match wins, so variants come before the generic name.
BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5, "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835.5),
    ("H200", 989.4),  # SXM, "NVIDIA H200"
    ("A100", 312.0),
)
#: Multiply-adds per item of the paper's extractors (/work/shared/notes/engineering.md, "Cost figures"); wav2vec2 per
#: second of audio. The benchmark counts each model's FLOPs itself and records these beside the count.
NOTES_MACS: dict[str, float] = {"text": 2.7e9, "image": 4.1e9, "video": 180e9, "audio": 6.9e9}
#: Targets of the GPU run (issue 24): VideoMAE-base model alone against the ceiling, end to end against model alone.
TARGETS: dict[str, float] = {"video_model_only_of_ceiling": 0.4, "video_end_to_end_of_model_only": 0.8}


def bf16_peak(device_name: str) -> tuple[float | None, str]:
    """The card's dense bf16 peak in TFLOP/s and where it comes from, or None and why there is none."""
    for pattern, tflops in BF16_PEAK_TFLOPS:
        if pattern.lower() in device_name.lower():
            return tflops, f"NVIDIA datasheet, dense bf16 of '{pattern}'"
    if device_name == "cpu":
        return None, "a CPU has no bf16 tensor-core peak in the table (the ceiling is for GPUs)"
    known = ", ".join(p for p, _ in BF16_PEAK_TFLOPS)
    return None, f"'{device_name}' is not in bench/gpu_bench.py BF16_PEAK_TFLOPS (known: {known})"


def card_slug(device_name: str) -> str:
    """A file-name form of the card's name: 'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3'."""
    name = re.sub(r"^nvidia\s+", "", device_name.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def ceiling(peak_tflops: float | None, flops_per_item: float) -> float | None:
    """Items/s the card could reach at its peak: peak FLOP/s over the model's FLOPs per item."""
    if peak_tflops is None or flops_per_item <= 0:
        return None
    return peak_tflops * 1e12 / flops_per_item


def fraction(value: float | None, of: float | None) -> float | None:
    return None if value is None or not of else value / of


# --- Sizes of each mode ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one mode runs. GPU batch sizes are config.paper.yaml's (extraction 64, VideoMAE 32, training 32)."""

    device: str  # the torch device type the measuring steps require
    paper_sizes: bool  # BERT-base, ResNet-50, VideoMAE-base, wav2vec2-base (else tiny models and ResNet-18)
    streams: int  # streams of the extraction fixture (2-4 images and 2-3 clips of each kind per stream)
    texts: int  # synthetic texts for the text extractor
    text_tokens: int  # every text is cut at this many tokens
    workers: int  # decoding worker processes of the end-to-end path
    batch_size: int  # extraction batch (text, image, audio)
    video_batch_size: int
    repeats: int  # alternating end-to-end / model-alone measurements
    min_seconds: float  # shortest duration of one measurement
    train_size: str  # train_bench size: paper (width 512, 6 layers, 8 heads, 768/2048-d inputs) or demo
    train_batches: tuple[int, ...]  # batch sizes of the samples/s figure (the first is the paper's)
    train_steps: int
    train_epochs: int  # epochs of the epoch-time figure (the first is not counted)
    train_streams: int  # training streams of one epoch (the paper's training set: 736)
    workflow_full: bool  # the tiny workflow's whole DAG (else trimmed: see workflow_config)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def plan(mode: str) -> Plan:
    if mode == "gpu":
        import yaml

        paper = yaml.safe_load((ROOT / "config.paper.yaml").read_text())
        return Plan(device="cuda", paper_sizes=True, streams=32, texts=4096, text_tokens=32, workers=cpu_count(),
                    batch_size=int(paper["extraction"]["batch_size"]),
                    video_batch_size=int(paper["extractors"]["videomae-base"]["options"]["batch_size"]),
                    repeats=2, min_seconds=2.0, train_size="paper",
                    train_batches=(int(paper["train"]["batch_size"]), 256), train_steps=30, train_epochs=3,
                    train_streams=736, workflow_full=True)
    return Plan(device="cpu", paper_sizes=False, streams=4, texts=48, text_tokens=32, workers=1, batch_size=8,
                video_batch_size=8, repeats=1, min_seconds=0.1, train_size="demo", train_batches=(32, 64),
                train_steps=3, train_epochs=2, train_streams=128, workflow_full=False)


# --- Step plumbing ---------------------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """A step ran but what it measured fails a check; the message is the step's one-line error."""


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class Figures:
    """A step's figures, written to its JSON file whenever they change."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        write_json_atomic(self.path, self.data)


def require_device(p: Plan) -> Any:
    """The torch device the mode measures on; an error when the mode needs CUDA and there is none."""
    import torch

    if p.device == "cuda" and not torch.cuda.is_available():
        raise CheckFailed("CUDA is not available (torch.cuda.is_available() is False); on a machine without a GPU run "
                          "bash bench/gpu.sh --cpu-smoke")
    return torch.device(p.device)


def device_name(device: Any) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# --- environment -----------------------------------------------------------------------------------------------------


def pins() -> dict[str, str]:
    """Distribution name (normalised) -> pinned version, from pyproject.toml (test extra included)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {}
    for spec in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        name, version = spec.split("==")
        out[normalise(name)] = version
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def matmul_tflops(device: Any, seconds: float = 0.5) -> dict[str, Any]:
    """Measured dense matmul rate: bf16 8192^3 on CUDA, fp32 1024^3 on the CPU."""
    import torch

    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (1024, torch.float32)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started, rounds = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rounds += 1
    elapsed = time.perf_counter() - started
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "tflops": round(2 * n**3 * rounds / elapsed / 1e12, 3)}


#: Imports the steps need; a failure names the module (an install that did not take).
NEEDED_MODULES: tuple[str, ...] = ("torch", "torchvision", "torchaudio", "transformers", "tokenizers", "safetensors",
                                   "decord", "av", "soundfile", "PIL", "numpy", "h5py", "polars", "pyarrow", "sklearn",
                                   "scipy", "threadpoolctl", "matplotlib", "tqdm", "jsonschema", "optuna", "yaml",
                                   "snakemake", "pytest", "memf.features.extract", "memf.training.fit")


def step_environment(p: Plan, fig: Figures, work: Path) -> None:
    import importlib
    from importlib import metadata

    missing = []
    for module in NEEDED_MODULES:
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 (any import failure is reported, with its reason)
            missing.append(f"{module} ({type(exc).__name__}: {exc})")
    installed = {}
    for name, version in pins().items():
        try:
            installed[name] = {"pinned": version, "installed": metadata.version(name)}
        except metadata.PackageNotFoundError:
            installed[name] = {"pinned": version, "installed": None}
    fig.put("packages", installed)
    fig.put("differ_from_pins", sorted(f"{n} {v['installed']} (pinned {v['pinned']})" for n, v in installed.items()
                                       if v["installed"] != v["pinned"]))
    fig.put("python", platform.python_version())
    fig.put("cpus", cpu_count())
    if missing:
        raise CheckFailed(f"cannot import {'; '.join(missing)}")
    fig.put("memf_source", str(Path(importlib.import_module("memf").__file__).resolve().parent))
    import torch

    fig.put("torch", {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None})
    device = require_device(p)
    name = device_name(device)
    peak, source = bf16_peak(name)
    card = {"name": name, "slug": card_slug(name), "bf16_peak_tflops": peak, "peak_source": source}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        card.update(memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                    multiprocessors=props.multi_processor_count)
    fig.put("card", card)
    measured = matmul_tflops(device)
    measured["of_peak"] = fraction(measured["tflops"], peak)
    fig.put("matmul", measured)


# --- gpu_tests -------------------------------------------------------------------------------------------------------


def junit_counts(path: Path) -> dict[str, Any]:
    """Counts, failed test ids and skip reasons from a pytest JUnit XML report."""
    suites = ET.parse(path).getroot()
    cases = list(suites.iter("testcase"))
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in cases if c.find("failure") is not None
              or c.find("error") is not None]
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    return {"tests": len(cases), "failed": len(failed), "skipped": len(skipped),
            "passed": len(cases) - len(failed) - len(skipped), "failed_tests": failed,
            "skip_reasons": sorted({s.get("message", "") for s in skipped})}


def step_gpu_tests(p: Plan, fig: Figures, work: Path) -> None:
    report = work / "gpu-tests.xml"
    # On a GPU every test marked gpu; the smoke collects only tests/test_gpu.py (collecting every module costs it
    # 10-20 s), where they live: there they all skip, which proves the step, not the tests.
    where = "tests" if p.device == "cuda" else "tests/test_gpu.py"
    # -o addopts= drops the suite's own options (pytest-xdist's workers among them): one process, these arguments.
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-m", "gpu", where, "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}"]
    done = subprocess.run(cmd, cwd=ROOT)
    if not report.is_file():
        raise CheckFailed(f"pytest -m gpu exited with {done.returncode} and wrote no report")
    counts = junit_counts(report)
    fig.put("pytest", {**counts, "returncode": done.returncode})
    if done.returncode != 0 or counts["failed"]:
        raise CheckFailed(f"pytest -m gpu: {counts['failed']} of {counts['tests']} failed (exit {done.returncode}): "
                          f"{', '.join(counts['failed_tests'][:5]) or 'see the log'}")
    if p.device == "cuda" and counts["skipped"]:
        raise CheckFailed(f"pytest -m gpu: {counts['skipped']} of {counts['tests']} skipped on a GPU machine: "
                          f"{'; '.join(counts['skip_reasons'])}")


# --- extract ---------------------------------------------------------------------------------------------------------


def model_label(modality: str, p: Plan) -> str:
    if p.paper_sizes:
        return {"text": f"BERT-base, {p.text_tokens} tokens", "image": "ResNet-50, 224x224",
                "video": "VideoMAE-base, 16x224x224", "audio": "wav2vec2-base, 4 s clips"}[modality]
    return {"text": f"BERT tiny, {p.text_tokens} tokens", "image": "ResNet-18, 64x64",
            "video": "VideoMAE tiny, 4x32x32", "audio": "wav2vec2 tiny, 4 s clips"}[modality]


def notes_flops(modality: str, p: Plan) -> float | None:
    """FLOPs per item from the engineering notes (paper sizes at 32 tokens only; audio: 4 s clips)."""
    if not p.paper_sizes or (modality == "text" and p.text_tokens != 32):
        return None
    return 2 * NOTES_MACS[modality] * (4.0 if modality == "audio" else 1.0)


def extractor_figures(modality: str, m: Any, p: Plan, batch_size: int, peak: float | None) -> dict[str, Any]:
    """One extractor's figures from an extract_bench.Measured."""
    top = ceiling(peak, m.flops_per_item)
    return {
        "model": model_label(modality, p), "items": m.items, "batch_size": batch_size, "decode_workers": p.workers,
        "flops_per_item": m.flops_per_item, "flops_per_item_notes": notes_flops(modality, p),
        "ceiling_items_per_s": top,
        "model_only": {"items_per_s": m.model_per_s, "peak_gpu_mib": m.model_peak_mib,
                       "of_ceiling": fraction(m.model_per_s, top)},
        "end_to_end": {"items_per_s": m.e2e_per_s, "peak_gpu_mib": m.e2e_peak_mib,
                       "of_ceiling": fraction(m.e2e_per_s, top), "of_model_only": m.ratio},
        "host_rss_mib": m.host_rss_mib,
    }


def targets(video: Mapping[str, Any] | None, p: Plan) -> dict[str, Any]:
    """The issue's two VideoMAE targets; ``met`` is judged on a GPU only (None in the smoke)."""
    values = {
        "video_model_only_of_ceiling": video["model_only"]["of_ceiling"] if video else None,
        "video_end_to_end_of_model_only": video["end_to_end"]["of_model_only"] if video else None,
    }
    return {name: {"target": TARGETS[name], "value": value,
                   "met": None if p.device != "cuda" or value is None else value >= TARGETS[name]}
            for name, value in values.items()}


def step_extract(p: Plan, fig: Figures, work: Path) -> None:
    import dataclasses

    import torch

    import extract_bench as xb

    device = require_device(p)
    torch.set_num_threads(1 if device.type == "cpu" else cpu_count())  # smoke: the other core decodes
    name = device_name(device)
    peak, source = bf16_peak(name)
    fig.put("card", {"name": name, "bf16_peak_tflops": peak, "peak_source": source})
    ds, specs = xb.build_workspace(work / "extract", p.paper_sizes, p.streams, p.text_tokens)
    settings = xb.ExtractionSettings(device=p.device, workers=p.workers, batch_size=p.batch_size,
                                  precision="bf16" if device.type == "cuda" else "fp32")
    extractors: dict[str, Any] = {}
    for modality in ("video", "image", "audio", "text"):  # VideoMAE first: the figure the targets are about
        batch = p.video_batch_size if modality == "video" else p.batch_size
        ext = xb.build_extractor(specs[modality], dataclasses.replace(settings, batch_size=batch), device)
        items = xb.modality_items(ds, modality, p.text_tokens, p.texts)
        measured = xb.measure(modality, ext, items, p.repeats, p.min_seconds, p.text_tokens)
        extractors[modality] = extractor_figures(modality, measured, p, batch, peak)
        fig.put("extractors", extractors)
        print(f"extract {modality}: {measured.model_per_s:.1f} items/s model alone, {measured.e2e_per_s:.1f} end to "
              f"end, {measured.flops_per_item / 1e9:.3f} GFLOP/item", flush=True)
        del ext
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = targets(extractors.get("video"), p)
    fig.put("targets", result)
    missed = [f"{k} {v['value']:.2f} < {v['target']}" for k, v in result.items() if v["met"] is False]
    if missed:
        print(f"targets missed (recorded, not a failure of the step): {'; '.join(missed)}", flush=True)


# --- train -----------------------------------------------------------------------------------------------------------


def step_train(p: Plan, fig: Figures, work: Path) -> None:
    import torch

    import train_bench as tb

    device = require_device(p)
    torch.set_num_threads(1 if device.type == "cpu" else cpu_count())  # smoke: figures steady on a shared CPU
    options, dims = tb.SIZES[p.train_size]
    fig.put("model", {"name": "memf", "size": p.train_size, "options": options, "input_dims": dims,
                      "items": tb.ITEMS, "clips": tb.CLIPS})
    steps = {}
    for batch in p.train_batches:
        steps[str(batch)] = tb.one("memf", p.train_size, p.device, batch, p.train_steps, warmup=3)
        fig.put("steps", steps)
    fig.put("samples_per_s", {b: r["samples_per_s"] for b, r in steps.items()})
    epoch = tb.epoch_time("memf", p.train_size, p.device, p.train_batches[0], p.train_epochs, p.train_streams)
    fig.put("epoch", epoch)
    print(f"train: {fig.data['samples_per_s']} samples/s by batch size; {epoch['epoch_s']} s per epoch of "
          f"{epoch['streams']} streams", flush=True)


# --- workflow --------------------------------------------------------------------------------------------------------


def workflow_config(p: Plan) -> tuple[dict[str, Any], list[str]]:
    """tests/configs/tiny.yaml with both stages' device set to the mode's, and the targets.

    GPU: every rule of the tiny configuration, on fold 0 with one shard per extractor (41 jobs, 18 of them on the
    GPU). Each GPU job holds the one GPU alone (``claim_device``), so they run one after another; the three folds
    and two shards would make that 41 GPU jobs, past the device's 10-minute command. Smoke: trimmed to the jobs each
    setting reaches, one of each: an untuned MEMF run of fold 0 on the simulator's latent factors (simulate,
    validate, pad_latent, fit: no extraction needed) and one image extraction shard (with the render of its shard).
    """
    import yaml

    config = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
    config.setdefault("train", {})["device"] = p.device
    config.setdefault("extraction", {})["device"] = p.device
    config.setdefault("split", {})["run_folds"] = [0]
    config["extraction"]["shards"] = 1
    if p.workflow_full:
        return config, []
    config["simulator"].update(n_streams=12, n_anchors=4)
    config["extraction"]["workers"] = 1
    config["experiments"] = {"memf-latent": {"model": "memf", "feature_set": "latent"}}
    config["train"].update(epochs=1)
    for key in ("predict", "search_spaces", "tuning"):
        config.pop(key, None)
    return config, ["results/runs/memf-latent/fold0/metrics.json", "results/features/image/resnet18/shard-0.parquet"]


def extraction_devices(folder: Path) -> dict[str, str]:
    """Job log -> the device its extractor ran on (the line memf.features.extract logs when it starts)."""
    found = {}
    for log in sorted(folder.rglob("shard-*.log")):
        match = re.search(r" streams, device (\S+), weights ", log.read_text(errors="replace"))
        found[str(log.relative_to(folder))] = match.group(1) if match else "not logged"
    return found


def fit_devices(folder: Path) -> dict[str, str]:
    """Neural run folder (it holds weights) -> the device its job trained on (metrics.json ``device``)."""
    return {str(m.parent.relative_to(folder)): json.loads(m.read_text())["device"]
            for m in sorted(folder.glob("results/runs/*/fold*/metrics.json"))
            if (m.parent / "weights.safetensors").is_file()}


def failed_job_logs(folder: Path, lines: int = 15) -> str:
    """The tails of job logs that hold a traceback or an error line."""
    parts = []
    for log in sorted((folder / "logs").rglob("*.log")):
        text = log.read_text(errors="replace")
        if "Traceback" in text or " ERROR " in text:
            parts.append(f"--- {log.relative_to(folder)}\n" + "\n".join(text.splitlines()[-lines:]))
    return "\n".join(parts)


def step_workflow(p: Plan, fig: Figures, work: Path) -> None:
    import yaml

    folder = work / "workflow"
    folder.mkdir(parents=True, exist_ok=True)
    config, targets_ = workflow_config(p)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cores = cpu_count()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *targets_, "--cores", str(cores),
           "--configfile", str(folder / "config.yaml")]
    if p.device == "cuda":
        cmd += ["--resources", "gpu=1"]  # one GPU: GPU jobs one at a time (docs/cluster.md)
    fig.put("command", " ".join(cmd[1:]))
    fig.put("config", {"full": p.workflow_full, "train.device": p.device, "extraction.device": p.device,
                       "run_folds": config["split"]["run_folds"], "shards": config["extraction"]["shards"],
                       "cores": cores})
    output = folder / "snakemake.out"
    started = time.perf_counter()

    def progress() -> float:
        """Record the wall time so far and the jobs finished (also when the step is stopped at its timeout)."""
        wall = time.perf_counter() - started
        fig.put("wall_s", round(wall, 2))
        fig.put("jobs", len(re.findall(r"^Finished jobid", output.read_text(errors="replace"), flags=re.MULTILINE)))
        return wall

    def stopped(signum: int, frame: Any) -> None:
        wall = progress()
        raise CheckFailed(f"stopped by signal {signum} after {wall:.0f} s with {fig.data['jobs']} jobs finished")

    signal.signal(signal.SIGTERM, stopped)
    with open(output, "w") as sink:
        done = subprocess.run(cmd, cwd=folder, stdout=sink, stderr=subprocess.STDOUT)
    wall = progress()
    print(output.read_text(errors="replace")[-4000:], flush=True)
    if done.returncode != 0:
        print(failed_job_logs(folder), flush=True)
        raise CheckFailed(f"snakemake exited with {done.returncode} after {wall:.0f} s (its output and the failed "
                          "jobs' logs are above)")
    runs, shards = fit_devices(folder), extraction_devices(folder / "logs")
    fig.put("fit_devices", runs)
    fig.put("extraction_devices", shards)
    wrong = [f"{k}: {v}" for k, v in {**runs, **shards}.items() if not v.startswith(p.device)]
    if not runs or not shards:
        raise CheckFailed(f"the workflow left {len(runs)} neural runs and {len(shards)} extraction logs; expected "
                          "some of each")
    if wrong:
        raise CheckFailed(f"jobs ran off {p.device}: {'; '.join(wrong[:5])}")
    print(f"workflow: {wall:.1f} s, {len(runs)} neural runs and {len(shards)} extraction jobs on {p.device}",
          flush=True)


# --- collect ---------------------------------------------------------------------------------------------------------


def status_of(returncode: int) -> str:
    """``timeout`` exits 124 after its TERM and 137 after its KILL."""
    return "ok" if returncode == 0 else "timeout" if returncode in (124, 137) else "failed"


def last_line(path: Path) -> str | None:
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else None


def collect(mode: str, work: Path, requested: Iterable[str], started: float) -> dict[str, Any]:
    """Every step that ran (``work/steps.tsv``: name, exit status, start, end, limit) with its figures and, when it
    did not pass, its last output line as the error."""
    steps: dict[str, Any] = {}
    table = work / "steps.tsv"
    for row in table.read_text().splitlines() if table.is_file() else []:
        name, returncode, start, end, limit = row.split("\t")
        entry: dict[str, Any] = {"status": status_of(int(returncode)), "exit": int(returncode),
                                 "seconds": round(float(end) - float(start), 1), "timeout_s": int(limit)}
        figures = work / f"{name}.json"
        if figures.is_file():
            entry["figures"] = json.loads(figures.read_text())
        if entry["status"] == "timeout":
            entry["error"] = f"stopped at its {limit} s timeout"
        elif entry["status"] == "failed":
            entry["error"] = last_line(work / f"{name}.log") or f"exited with {returncode} and no output"
        steps[name] = entry
    requested = list(requested)
    return {
        "schema": 1, "mode": "cpu-smoke" if mode == "smoke" else "gpu", "steps_requested": requested,
        "complete": all(s in steps for s in requested),
        "ok": all(steps.get(s, {}).get("status") == "ok" for s in requested),
        "wall_s": round(time.time() - started, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": steps,
    }


# --- carry (bench/gpu_wheels.sh) -------------------------------------------------------------------------------------

#: Pinned distributions carried to the device as wheels (with their dependencies), and why.
CARRIED: dict[str, str] = {
    "decord": "not on the device; reads video and audio",
    "av": "not on the device; writes the MP4 clips of the fixtures and the simulator",
    "soundfile": "not on the device; reads and writes WAV",
    "polars": "not on the device; every table of the pipeline",
    "snakemake": "not on the device; the workflow step",
    "optuna": "not on the device; tuning in the tiny workflow",
    "jsonschema": "may be missing; the workflow validates its config with it",
    "threadpoolctl": "on the device as a scikit-learn dependency, at some version; the fit jobs call it",
    "skops": "not on the device; the reference fits save their models with it",
    "transformers": "the device has 5.17, the pin is 5.24.0: the extractors call the processors' resize, center_crop "
                    "and rescale_and_normalize, which the tests check with 5.24.0 only",
    "tokenizers": "goes with the pinned transformers (the tiny tokenizers are built and read with it)",
}
#: Pinned distributions not carried, and why.
NOT_CARRIED: dict[str, str] = {
    **dict.fromkeys(("torch", "torchvision", "torchaudio"),
                    "the device has the pinned versions (CUDA 13.0 builds, GBs of wheels)"),
    **dict.fromkeys(("numpy", "pillow", "h5py", "pyarrow", "scikit-learn", "scipy", "matplotlib"),
                    "on the device, built together with its torch stack; replacing one compiled package under the "
                    "others is a bigger risk than its minor-version drift"),
    **dict.fromkeys(("tqdm", "safetensors", "pyyaml", "pytest"),
                    "on the device; the benchmark uses nothing that changed across their recent versions"),
    "snakemake-executor-plugin-slurm": "gpu.sh runs Snakemake locally; the plugin would bring pandas (12 MB of the "
                                       "64 MiB one device call may carry)",
    **dict.fromkeys(("import-linter", "ruff"),
                    "structure checks (tests/test_structure.py) that gpu.sh does not run: they need no device"),
    "pytest-xdist": "runs the default suite on several workers; gpu.sh runs `pytest -m gpu` in one process",
}
#: Distributions the device has (its documented stack and what that stack requires): a dependency of a carried
#: distribution with one of these names is not carried.
DEVICE_HAS: frozenset[str] = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
    "filelock", "fsspec", "typing-extensions", "setuptools", "numpy", "pillow", "h5py", "pyarrow", "scikit-learn",
    "joblib", "scipy", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "packaging", "pyparsing",
    "python-dateutil", "six", "tqdm", "pytest", "iniconfig", "pluggy", "pygments", "safetensors", "pyyaml",
})


def device_marker_env() -> dict[str, str]:
    """Marker values of the device's interpreter (CPython 3.12 on x86-64 Linux)."""
    return {"python_version": "3.12", "python_full_version": "3.12.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}


def carried_closure() -> list[str]:
    """``name==version`` of every carried distribution and of each dependency the device lacks, read from the
    metadata of this environment (which must hold the pinned versions), markers evaluated for the device."""
    from importlib import metadata

    from packaging.requirements import Requirement

    unknown = sorted(set(pins()) - set(CARRIED) - set(NOT_CARRIED))
    if unknown:
        raise CheckFailed(f"pins {unknown} are neither in CARRIED nor in NOT_CARRIED of bench/gpu_bench.py; decide")
    pinned = pins()
    found: dict[str, str] = {}
    stack = list(CARRIED)
    while stack:
        name = normalise(stack.pop())
        if name in found or name in DEVICE_HAS:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise CheckFailed(f"{name} is not installed in {sys.prefix}; run with the project's environment") from None
        if name in pinned and dist.version != pinned[name]:
            raise CheckFailed(f"{name} {dist.version} is installed in {sys.prefix}, pinned {pinned[name]}")
        found[name] = dist.version
        for requirement in map(Requirement, dist.requires or []):
            if requirement.marker is None or requirement.marker.evaluate(device_marker_env()):
                stack.append(requirement.name)
    return [f"{name}=={version}" for name, version in sorted(found.items())]


# --- command line ----------------------------------------------------------------------------------------------------

STEP_FUNCTIONS: dict[str, Callable[[Plan, Figures, Path], None]] = {
    "environment": step_environment, "gpu_tests": step_gpu_tests, "extract": step_extract, "train": step_train,
    "workflow": step_workflow,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*STEPS, "collect", "carry"])
    parser.add_argument("--mode", choices=MODES, default="gpu")
    parser.add_argument("--work", type=Path, help="the run's work folder (steps.tsv, each step's JSON and log)")
    parser.add_argument("--out", type=Path, help="step: its figures file; collect: the gpu-figures.json to write")
    parser.add_argument("--steps", default=",".join(STEPS), help="collect: the steps the run was asked for")
    parser.add_argument("--started", type=float, default=time.time(), help="collect: the run's start (epoch seconds)")
    parser.add_argument("--carry", choices=["closure", "roots", "pins"], default="closure",
                        help="carry: every carried distribution (closure), the carried pins (roots), or every pin")
    args = parser.parse_args()
    try:
        if args.command == "carry":
            lines = {"closure": carried_closure, "roots": lambda: [f"{n}=={pins()[n]}" for n in CARRIED],
                     "pins": lambda: [f"{n}=={v}" for n, v in pins().items()]}[args.carry]()
            print("\n".join(lines))
        elif args.command == "collect":
            report = collect(args.mode, args.work, args.steps.split(","), args.started)
            write_json_atomic(args.out, report)
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent))  # extract_bench, train_bench
            figures = Figures(args.out)
            STEP_FUNCTIONS[args.command](plan(args.mode), figures, args.work)
    except CheckFailed as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
