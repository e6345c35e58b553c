"""bench/gpu.sh, the prepared GPU benchmark: its CPU smoke runs every step and writes every figure, a step that fails
does not stop the next, and its pieces (the card table, the ceiling, the step statuses, the carried wheels)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "bench" / "gpu.sh"


def _load_gpu_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "bench" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gb = _load_gpu_bench()


def run_gpu_sh(out: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(GPU_SH), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow  # about 50 s: bench/gpu.sh --cpu-smoke runs every step (the default suite keeps its unit tests)
def test_cpu_smoke_runs_every_step_and_writes_every_figure(tmp_path):
    out = tmp_path / "out"
    started = time.perf_counter()
    done = run_gpu_sh(out, "--cpu-smoke")
    wall = time.perf_counter() - started
    log = (out / "gpu-bench.log").read_text() if (out / "gpu-bench.log").is_file() else ""
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:] + log[-6000:]
    report = json.loads((out / gb.FIGURES_FILE).read_text())
    assert report["mode"] == "cpu-smoke" and report["ok"] and report["complete"]
    assert {name: step["status"] for name, step in report["steps"].items()} == dict.fromkeys(gb.STEPS, "ok")
    fig = {name: step["figures"] for name, step in report["steps"].items()}

    assert fig["environment"]["card"]["name"] == "cpu" and fig["environment"]["card"]["bf16_peak_tflops"] is None
    assert fig["environment"]["matmul"]["tflops"] > 0
    assert fig["environment"]["memf_source"] == str(ROOT / "src" / "memf")  # the checkout's code, not an install
    assert fig["gpu_tests"]["pytest"]["tests"] >= 1 and fig["gpu_tests"]["pytest"]["failed"] == 0

    extractors = fig["extract"]["extractors"]
    assert set(extractors) == {"text", "image", "video", "audio"}
    for name, e in extractors.items():
        assert e["model_only"]["items_per_s"] > 0 and e["end_to_end"]["items_per_s"] > 0, name
        assert e["flops_per_item"] > 0 and e["end_to_end"]["of_model_only"] > 0, name
        assert e["ceiling_items_per_s"] is None and e["model_only"]["of_ceiling"] is None, name  # a CPU has no peak
    # Tiny VideoMAE (4 frames of 32 px, patch 8, tubelet 2: 32 tokens; width 32, 2 layers, MLP 64): patch embedding,
    # the projections and the attention, 2 x multiply-adds. The counter sees the attention.
    tokens, width, layers, mlp = 32, 32, 2, 64
    expected = 2 * tokens * (3 * 2 * 8 * 8) * width + layers * (
        2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width)
    assert extractors["video"]["flops_per_item"] == expected
    assert set(fig["extract"]["targets"]) == set(gb.TARGETS)
    assert all(t["met"] is None for t in fig["extract"]["targets"].values())  # judged on a GPU only

    assert set(fig["train"]["samples_per_s"]) == {"32", "64"} and min(fig["train"]["samples_per_s"].values()) > 0
    assert fig["train"]["epoch"]["epoch_s"] > 0 and fig["train"]["epoch"]["streams"] == 128

    workflow = fig["workflow"]
    assert workflow["wall_s"] > 0 and workflow["jobs"] == 6  # simulate, simulate_render, validate, pad_latent, fit, extract
    assert set(workflow["fit_devices"].values()) == {"cpu"} and set(workflow["extraction_devices"].values()) == {"cpu"}
    assert wall < 180, f"the smoke took {wall:.0f} s; it must stay under 3 minutes"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU mode on a machine without a GPU")
def test_gpu_mode_without_a_gpu_fails_each_step_in_one_line_and_goes_on(tmp_path):
    done = run_gpu_sh(tmp_path / "out", "--no-install", "--steps", "train,extract", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "out" / gb.FIGURES_FILE).read_text())
    assert report["mode"] == "gpu" and not report["ok"] and report["complete"]
    assert list(report["steps"]) == ["train", "extract"]
    for name in ("train", "extract"):  # extract ran although train, before it, failed
        step = report["steps"][name]
        assert step["status"] == "failed" and step["exit"] == 1
        assert step["error"].startswith(f"{name}: CUDA is not available"), step["error"]
    assert "not passed: train failed, extract failed" in done.stdout


def test_unknown_step_or_argument_is_a_usage_error(tmp_path):
    for args, message in ((("--steps", "extract,trian"), "unknown step 'trian'"), (("--fast",), "unknown argument")):
        done = run_gpu_sh(tmp_path / "out", *args, timeout=30)
        assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5), ("NVIDIA A100-SXM4-80GB", 312.0),
])
def test_bf16_peak_by_card_name(name, peak):
    assert gb.bf16_peak(name)[0] == peak


def test_unknown_card_has_no_peak_and_says_why():
    peak, why = gb.bf16_peak("NVIDIA GeForce RTX 4090")
    assert peak is None and "'NVIDIA GeForce RTX 4090' is not in" in why
    assert gb.bf16_peak("cpu")[0] is None
    assert gb.card_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"


def test_ceiling_is_the_peak_over_the_flops_per_item():
    # VideoMAE-base: about 180 G multiply-adds per clip; an H100 at 989.4 TFLOP/s tops out near 2,750 clips/s.
    top = gb.ceiling(989.4, 2 * 180e9)
    assert top == pytest.approx(2748.3, rel=1e-3)
    assert gb.fraction(1100.0, top) == pytest.approx(0.4, rel=1e-3)
    assert gb.ceiling(None, 1e9) is None and gb.fraction(5.0, None) is None


def test_collect_gives_each_step_its_status_and_one_line_error(tmp_path):
    (tmp_path / "steps.tsv").write_text("environment\t0\t10.0\t12.5\t60\nextract\t1\t12.5\t20.0\t90\n"
                                        "train\t124\t20.0\t80.0\t60\n")
    (tmp_path / "environment.json").write_text(json.dumps({"cpus": 2}))
    (tmp_path / "extract.log").write_text("progress\nextract: CUDA is not available (...)\n\n")
    (tmp_path / "train.json").write_text(json.dumps({"steps": {"32": {}}}))
    report = gb.collect("gpu", tmp_path, ["environment", "extract", "train", "workflow"], started=time.time())
    steps = report["steps"]
    assert steps["environment"] == {"status": "ok", "exit": 0, "seconds": 2.5, "timeout_s": 60,
                                    "figures": {"cpus": 2}}
    assert steps["extract"]["status"] == "failed"
    assert steps["extract"]["error"] == "extract: CUDA is not available (...)"
    assert steps["train"]["status"] == "timeout" and steps["train"]["figures"] == {"steps": {"32": {}}}
    assert not report["ok"] and not report["complete"]  # workflow has not run yet


def test_every_pin_is_carried_or_left_with_a_reason():
    pinned = set(gb.pins())
    assert pinned == set(gb.CARRIED) | set(gb.NOT_CARRIED) and not set(gb.CARRIED) & set(gb.NOT_CARRIED)


def test_carried_wheels_are_the_pins_and_what_the_device_lacks_of_their_dependencies():
    closure = dict(line.split("==") for line in gb.carried_closure())
    pins = gb.pins()
    assert all(closure[name] == pins[name] for name in gb.CARRIED)
    assert not set(closure) & gb.DEVICE_HAS
    assert "connection-pool" in closure  # a dependency of snakemake, not of the device's stack
    assert "pandas" not in closure  # only the SLURM plugin, which is not carried, needs it
