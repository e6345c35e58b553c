"""Cluster execution: GPU claiming (memf.core.gpu), the Snakemake profiles, and a real single-node SLURM run.

The SLURM tests start munged, slurmctld and slurmd from tests/slurm/start.sh (private config, key, socket and ports
under one temporary folder), run workflows through `--profile profiles/slurm`, and stop exactly those daemons by pid.
They skip, saying why, when the SLURM binaries are missing (`apt-get install -y slurm-wlm munge`) or not run as root.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from safetensors.numpy import load_file

from memf.core import gpu
from memf.core.io import read_parquet_checked
from memf.data.contract import DEFAULT_COLUMNS, required_columns

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "slurm" / "Snakefile"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
# Every stage of the tiny workflow once (simulate, validate, tiny models, 2 shards of each extractor of one feature
# set, pad, one training run), not its whole experiment matrix: each SLURM job costs two Snakemake start-ups.
TINY_TARGETS = ("results/padded/demo.h5", "results/runs/memf/fold0/metrics.json")
GPU_RULES = ("extract_video", "extract_audio", "extract_text", "extract_image", "fit")


def snakemake(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 900):
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# --- memf.core.gpu.claim_device -----------------------------------------------------------------------------------------


@pytest.fixture
def no_slurm(monkeypatch):
    for var in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)


def fake_gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(gpu, "cuda_device_count", lambda: n)


def test_cpu_is_cpu(no_slurm, monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 2)
    with gpu.claim_device("cpu", lock_dir=tmp_path) as device:
        assert device == "cpu"
    assert list(tmp_path.iterdir()) == []


def test_auto_without_cuda_falls_back_to_cpu_and_says_so(no_slurm, monkeypatch, tmp_path, caplog):
    fake_gpus(monkeypatch, 0)
    with caplog.at_level(logging.WARNING, logger="memf.core.gpu"):
        with gpu.claim_device("auto", lock_dir=tmp_path) as device:
            assert device == "cpu"
    assert "no CUDA device" in caplog.text and "running on the CPU" in caplog.text


def test_cuda_without_cuda_is_an_error(no_slurm, monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 0)
    with pytest.raises(RuntimeError, match="device 'cuda' requested, but torch sees no CUDA device"):
        with gpu.claim_device("cuda", lock_dir=tmp_path):
            pass


def test_unknown_preference_is_rejected():
    with pytest.raises(ValueError, match="'gpu0' is not one of cpu, cuda, auto"):
        with gpu.claim_device("gpu0"):
            pass


def test_concurrent_claims_get_distinct_gpus_and_release_them(no_slurm, monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 2)
    with gpu.claim_device("cuda", lock_dir=tmp_path) as first:
        with gpu.claim_device("auto", lock_dir=tmp_path) as second:
            assert {first, second} == {"cuda:0", "cuda:1"}
            with pytest.raises(TimeoutError, match="all 2 visible GPUs stayed locked"):
                with gpu.claim_device("cuda", lock_dir=tmp_path, timeout_s=0.2):
                    pass
        # The second GPU is free again; the first is still held.
        with gpu.claim_device("cuda", lock_dir=tmp_path, timeout_s=0.2) as third:
            assert third == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-0.lock", "gpu-1.lock"]


def _hold_gpu(lock_dir: str, ready, release, out) -> None:
    with gpu.claim_device("cuda", lock_dir=lock_dir) as device:
        out.put(device)
        ready.set()
        release.wait(30)


def test_claims_from_other_processes_are_respected_until_they_end(no_slurm, monkeypatch, tmp_path, caplog):
    fake_gpus(monkeypatch, 1)
    ctx = multiprocessing.get_context("fork")  # the child keeps the monkeypatched device count
    ready, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=_hold_gpu, args=(str(tmp_path), ready, release, out))
    child.start()
    try:
        assert ready.wait(30)
        assert out.get(timeout=5) == "cuda:0"
        with caplog.at_level(logging.WARNING, logger="memf.core.gpu"), pytest.raises(TimeoutError):
            with gpu.claim_device("cuda", lock_dir=tmp_path, timeout_s=0.6):
                pass
        assert "waiting for one to be released" in caplog.text and "--resources gpu=1" in caplog.text
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    with gpu.claim_device("cuda", lock_dir=tmp_path, timeout_s=1) as device:
        assert device == "cuda:0"


def test_locks_are_named_by_physical_device(no_slurm, monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with gpu.claim_device("cuda", lock_dir=tmp_path) as device:
        assert device == "cuda:0"
        assert (tmp_path / "gpu-3.lock").read_text().strip() == str(os.getpid())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    fake_gpus(monkeypatch, 1)
    with gpu.claim_device("cuda", lock_dir=tmp_path) as device:
        assert device == "cuda:0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-3.lock", "gpu-5.lock"]


def test_default_lock_dir_order(monkeypatch):
    monkeypatch.setenv("MEMF_GPU_LOCK_DIR", "/x/locks")
    assert gpu.default_lock_dir() == Path("/x/locks")
    monkeypatch.delenv("MEMF_GPU_LOCK_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert gpu.default_lock_dir() == Path("/run/user/7/memf-gpu-locks")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert gpu.default_lock_dir() == Path(f"/tmp/memf-gpu-locks-{os.getuid()}")


def test_under_slurm_the_allocated_device_is_used_without_locks(monkeypatch, tmp_path):
    fake_gpus(monkeypatch, 1)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with gpu.claim_device("cuda", lock_dir=tmp_path) as a, gpu.claim_device("cuda", lock_dir=tmp_path) as b:
        assert a == b == "cuda:0"
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_slurm_job_without_gpu_allocation(monkeypatch, tmp_path, caplog):
    fake_gpus(monkeypatch, 4)  # the node has GPUs, but this job was given none
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level(logging.WARNING, logger="memf.core.gpu"):
        with gpu.claim_device("auto", lock_dir=tmp_path) as device:
            assert device == "cpu"
    assert "SLURM job 42 was allocated no GPU" in caplog.text
    with pytest.raises(RuntimeError, match="SLURM job 42 was allocated no GPU"):
        with gpu.claim_device("cuda", lock_dir=tmp_path):
            pass


# --- Profiles --------------------------------------------------------------------------------------------------------


def load_profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def dry_run_resources(out: str) -> dict[str, dict[str, str]]:
    """rule -> resources as printed by `snakemake -n` (the last job of each rule wins; they are equal per rule)."""
    found: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=rule \w+:)", out):
        head = re.match(r"rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.MULTILINE)
        if head and res:
            found[head.group(1)] = dict(item.split("=", 1) for item in res.group(1).split(", "))
    return found


def test_default_profile_puts_no_global_gpu_cap():
    # A `resources:` key here would also cap concurrent GPU jobs under SLURM (the workflow profile wins over
    # --profile); the GPU count of a workstation is given on the command line instead (docs/cluster.md).
    assert "resources" not in load_profile("default")
    assert "resources" not in load_profile("slurm")


def test_gpu_rules_request_one_gpu_and_the_profile_leaves_memory_and_time_to_the_model():
    # memf.resources computes every rule's mem_mb and runtime from the data (tests/test_resources.py); an entry here
    # would replace that model for its rule.
    per_rule = load_profile("default")["set-resources"]
    assert set(per_rule) == set(GPU_RULES)
    for rule in GPU_RULES:
        assert per_rule[rule] == {"gpu": 1}, rule


def test_profiles_reach_the_jobs(tmp_path):
    """Dry run of the probe workflow through both profiles: GPUs per rule from the workflow profile, the cluster
    defaults for what a rule does not set itself (the probe's rules have no resource model)."""
    out = snakemake("-s", str(PROBE), "--profile", str(ROOT / "profiles" / "slurm"),
                    "--workflow-profile", str(ROOT / "profiles" / "default"), "-n", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = dry_run_resources(out.stdout + out.stderr)
    per_rule = load_profile("default")["set-resources"]
    defaults = load_profile("slurm")["default-resources"]
    for rule in ("simulate", "validate", "tiny_model", "pad", "fit", "tables", "figures", "all", *GPU_RULES):
        assert res[rule].get("gpu") == (str(per_rule[rule]["gpu"]) if rule in per_rule else None), rule
        assert res[rule]["runtime"] == str(defaults["runtime"]) and res[rule]["mem_mb"] == str(defaults["mem_mb"])


def test_plan_bench_standin_is_a_valid_raw_dataset(tmp_path):
    spec = importlib.util.spec_from_file_location("plan_100k", ROOT / "bench" / "plan_100k.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.write_raw_standin(tmp_path, 40)
    assert rows["streams"] == 40 and rows["anchors"] == 10 and rows["items"] >= 80 and rows["clips"] >= 80
    for table, columns in required_columns(DEFAULT_COLUMNS).items():
        read_parquet_checked(tmp_path / f"{table}.parquet", columns)


# --- A real single-node SLURM ----------------------------------------------------------------------------------------


def _slurm_unavailable() -> str | None:
    missing = [b for b in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")
               if shutil.which(b) is None]
    if missing:
        return f"SLURM binaries missing ({', '.join(missing)}): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return f"starting slurmd and munged needs root, running as uid {os.geteuid()}"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """Environment (SLURM_CONF, PATH) of a private single-node SLURM with 8 CPUs and 2 fake GPUs."""
    reason = _slurm_unavailable()
    if reason:
        print(f"skipping SLURM tests: {reason}")
        pytest.skip(reason)
    state = Path(tempfile.mkdtemp(prefix="memf-slurm-", dir="/tmp"))  # traversable by user munge
    started = subprocess.run(["bash", str(ROOT / "tests/slurm/start.sh"), str(state)],
                             env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(state.rglob("*.log")))
            pytest.fail(f"tests/slurm/start.sh failed:\n{started.stdout}{started.stderr}{logs}")
        env = dict(os.environ)
        env["SLURM_CONF"] = str(state / "slurm.conf")
        env["PATH"] = f"{state / 'bin'}{os.pathsep}{env['PATH']}"
        yield env
    finally:
        pids = [int(p.read_text()) for p in (state / "slurmd.pid", state / "slurmctld.pid", state / "munge/munged.pid")
                if p.exists() and p.read_text().strip()]
        stopped = subprocess.run(["bash", str(ROOT / "tests/slurm/stop.sh"), str(state)],
                                 capture_output=True, text=True, timeout=120)
        alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and "State:\tZ" not in
                 Path(f"/proc/{pid}/status").read_text()]
        shutil.rmtree(state, ignore_errors=True)
        assert stopped.returncode == 0 and not alive, f"daemons left running: {alive}; {stopped.stderr}"


def slurm_run(workdir: Path, env: dict[str, str], *args: str) -> tuple[str, dict[str, str]]:
    """Run Snakemake through profiles/slurm in ``workdir``; return its output and SLURM job id -> rule."""
    out = snakemake("--profile", str(ROOT / "profiles" / "slurm"), "--slurm-init-seconds-before-status-checks", "2",
                    *args, cwd=workdir, env=env, timeout=1200)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    jobs = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: [^)]*/rule_(\w+)/", text))
    assert jobs, text[-3000:]
    for jobid, rule in jobs.items():
        log = next((workdir / "logs" / "slurm" / f"rule_{rule}").rglob(f"{jobid}.log"))
        assert log.stat().st_size > 0, log
    return text, jobs


def scontrol_job(jobid: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-d", "--oneliner", jobid], env=env,
                         capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


@pytest.mark.slurm
def test_gpu_jobs_get_their_own_gpu_on_slurm(slurm_env, tmp_path):
    """Two extraction shards at once: each is its own SLURM job with one of the node's two GPUs."""
    (tmp_path / "probe").mkdir()
    for name in ("simulate", "validate", "tiny_model"):
        (tmp_path / "probe" / f"{name}.json").write_text("{}\n")
    text, jobs = slurm_run(tmp_path, slurm_env, "probe/extract_video/shard-0.json", "probe/extract_video/shard-1.json",
                           "-s", str(PROBE), "--workflow-profile", str(ROOT / "profiles" / "default"),
                           "--config", "hold_s=8")
    assert sorted(jobs.values()) == ["extract_video", "extract_video"], text[-3000:]
    records = [json.loads((tmp_path / f"probe/extract_video/shard-{k}.json").read_text()) for k in (0, 1)]
    assert sorted(r["slurm_job_id"] for r in records) == sorted(jobs)
    assert all(r["threads"] >= 1 and r["resources"]["gpu"] == 1 for r in records)
    # This node's GPUs are fake (/dev/null, /dev/zero), so torch sees none and device "auto" means the CPU.
    assert [r["device"] for r in records] == ["cpu", "cpu"]
    assert max(r["start"] for r in records) < min(r["end"] for r in records), "the two jobs did not overlap"
    assert sorted(r["cuda_visible_devices"] for r in records) == ["0", "1"]
    for jobid in jobs:
        info = scontrol_job(jobid, slurm_env)
        assert info["JobState"] == "COMPLETED" and info["TresPerJob"] == "gres:gpu:1", info
        memory = load_profile("slurm")["default-resources"]["mem_mb"]  # the probe's rules have no resource model
        assert info["NumCPUs"] == "2" and info["MinMemoryNode"] == f"{memory}M", info


def compare_files(local: Path, remote: Path) -> list[str]:
    """Compare every file under ``remote`` with the same file under ``local``: tables, tensors and JSON to float
    tolerance, other files byte for byte. Return the relative paths compared."""
    files = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    missing = [rel for rel in files if not (local / rel).is_file()]
    assert not missing, f"not written by the local run: {missing}"
    for rel in files:
        a, b = local / rel, remote / rel
        if rel.endswith(".journal"):  # Optuna's record of a study: its trials are in trials.parquet, compared below
            continue
        if rel.endswith(".parquet"):
            fa, fb = pl.read_parquet(a), pl.read_parquet(b)
            clock = [c for c in fa.columns if c in WALL_CLOCK_KEYS]
            assert_frame_equal(fa.drop(clock), fb.drop(clock), rel_tol=1e-5, abs_tol=1e-6)
        elif rel.endswith((".h5", ".hdf5")):
            with h5py.File(a) as fa, h5py.File(b) as fb:
                names: list[str] = []
                fa.visit(names.append)
                other: list[str] = []
                fb.visit(other.append)
                assert names == other, rel
                for name in names:
                    if isinstance(fa[name], h5py.Dataset):
                        x, y = fa[name][()], fb[name][()]
                        if np.issubdtype(np.asarray(x).dtype, np.floating):
                            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{rel}:{name}")
                        else:
                            np.testing.assert_array_equal(x, y, err_msg=f"{rel}:{name}")
        elif rel.endswith(".safetensors"):
            ta, tb = load_file(a), load_file(b)
            assert ta.keys() == tb.keys(), rel
            for key in ta:
                np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, atol=1e-6, err_msg=f"{rel}:{key}")
        elif rel.endswith(".json"):
            assert_close_json(json.loads(a.read_text()), json.loads(b.read_text()), rel)
        else:
            assert a.read_bytes() == b.read_bytes(), rel
    return files


#: How long a job, a run or a trial took: the fields two identical runs differ in.
WALL_CLOCK_KEYS = frozenset({"train_seconds", "job_seconds", "seconds"})


def assert_close_json(x, y, where: str) -> None:
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), where
        for key in x.keys() - WALL_CLOCK_KEYS:
            assert_close_json(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list):
        assert isinstance(y, list) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            assert_close_json(u, v, f"{where}[{i}]")
    elif isinstance(x, float) and isinstance(y, float):
        assert math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y)), where
    else:
        assert x == y, where


@pytest.mark.slurm
@pytest.mark.slow  # about 5 minutes on 2 cores: the default suite keeps the GPU-allocation probe on SLURM
def test_tiny_workflow_on_slurm_matches_a_local_run(slurm_env, tiny_run, tmp_path):
    """Every stage of the tiny workflow as SLURM jobs; each file they write equals the local run's (tiny_run)."""
    assert TINY.is_file(), f"{TINY} missing: the tiny workflow configuration this test runs"
    text, jobs = slurm_run(tmp_path, slurm_env, *TINY_TARGETS, "-s", str(ROOT / "Snakefile"), "--configfile", str(TINY),
                           "--seconds-between-status-checks", "1")
    assert "steps (100%) done" in text, text[-3000:]
    # Every job of the plan was a SLURM job (none ran on the submitting host) and completed with the profile's
    # resources; every stage of the workflow is among them.
    ran = re.findall(r"^(?:local)?rule (\w+):", text, flags=re.MULTILINE)
    assert sorted(jobs.values()) == sorted(ran)
    assert {"simulate", "validate", "tiny_model", "extract_text", "extract_image", "extract_video", "extract_audio",
            "extract_numeric", "pad", "fit"} <= set(ran), ran
    per_rule = load_profile("default")["set-resources"]
    requested: dict[str, set[str]] = {}  # rule -> the mem_mb Snakemake computed for its jobs (memf.resources)
    for block in re.split(r"\n(?=rule \w+:)", text):
        head, res = re.match(r"rule (\w+):", block), re.search(r"^\s+resources: .*mem_mb=(\d+)", block, re.MULTILINE)
        if head and res:
            requested.setdefault(head.group(1), set()).add(f"{res.group(1)}M")
    for jobid, rule in jobs.items():
        info = scontrol_job(jobid, slurm_env)
        assert info["JobState"] == "COMPLETED", info
        assert info["MinMemoryNode"] in requested[rule], (rule, info, requested.get(rule))
        assert (info.get("TresPerJob") == "gres:gpu:1") == ("gpu" in per_rule.get(rule, {})), (rule, info)
    compared = compare_files(tiny_run / "results", tmp_path / "results")
    assert "padded/demo.h5" in compared and "runs/memf/fold0/predictions.parquet" in compared, compared
