"""Stage 2 in bounded memory: the peak resident set of pad, of a fit job, and of the export's neutral reference with
the prediction of every stream, at 10 times the streams, stays within 1.3 times (bench/scale_bench.py runs each step in
a fresh process on synthetic features; before the padded store, each grew with the streams: docs/training.md). The
same for the media-free latent chain of config.scale.yaml: pad_latent, and a fit job and the prediction on its store
(docs/scale.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scale_support import PAPER_DIMS, write_synthetic

ROOT = Path(__file__).resolve().parents[1]
#: The paper's dimensions: at the larger size the dense arrays of every stream (380 MB; the layout before the padded
#: store held them and a copy of the training part) are a third of a fit job's baseline (torch alone is 650 MB).
DIMS = PAPER_DIMS
SMALL, LARGE = 150, 1500
#: Blocks, batches and the cache small enough to be full at both sizes, and a training part shuffled by blocks.
LIMITS = ("--batch-size", "16", "--block-rows", "16", "--pad-block", "16", "--field-batch-rows", "128",
          "--cache-mb", "4", "--whole-shuffle-bytes", "0")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for n in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"scale{n}")
        write_synthetic(root, n, DIMS, n_shards=2, seed=n)
        out[n] = root
    return out


def peak(step: str, data: Path) -> float:
    """The peak RSS (MiB) of one step run alone in a fresh process (pad first, once, for the others)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from scale_bench import measure_step
    finally:
        sys.path.pop(0)
    if step != "pad" and not (data / "padded.h5").exists():
        measure_step("pad", data, ROOT / "src", *LIMITS)
    return measure_step(step, data, ROOT / "src", *LIMITS)["peak_mib"]


# predict reads the store as fit's evaluation does; its case (14 s) is marked slow.
@pytest.mark.parametrize("step", ["pad", "fit", pytest.param("predict", marks=pytest.mark.slow)])
def test_peak_memory_does_not_grow_with_the_streams(synthetic, step):
    small, large = peak(step, synthetic[SMALL]), peak(step, synthetic[LARGE])
    assert large <= 1.3 * small, (small, large)




# --- the media-free latent chain's stage-2 jobs (config.scale.yaml: pad_latent, then fit and predict on its store) ---


@pytest.fixture(scope="module")
def latent(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The simulator's latents without media at both sizes, padded once (rule pad_latent's job) into the file the
    fit and predict steps read."""
    import yaml

    from memf.simulate import simulate_latents
    from simulate_support import write_latent_dataset

    out = {}
    for n in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"latent{n}")
        sim = {**yaml.safe_load((ROOT / "config.yaml").read_text())["simulator"], "n_streams": n,
               "n_anchors": max(2, n // 4)}
        write_latent_dataset(simulate_latents(sim), root / "raw", root / "data", folds=5)
        out[n] = root
    return out


# The fit and predict steps on the latent store repeat the paper-dimension cases above (25 s each): marked slow.
@pytest.mark.parametrize("step", ["latent", pytest.param("fit", marks=pytest.mark.slow),
                                  pytest.param("predict", marks=pytest.mark.slow)])
def test_the_latent_chain_peak_memory_does_not_grow_with_the_streams(latent, step):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from scale_bench import measure_step
    finally:
        sys.path.pop(0)
    peaks = []
    for n in (SMALL, LARGE):
        if step != "latent" and not (latent[n] / "padded.h5").exists():
            measure_step("latent", latent[n], ROOT / "src", *LIMITS)
            (latent[n] / "latent.h5").rename(latent[n] / "padded.h5")
        peaks.append(measure_step(step, latent[n], ROOT / "src", *LIMITS)["peak_mib"])
    assert peaks[1] <= 1.3 * peaks[0], peaks


ALLOCATES = r"""
import sys
import numpy as np
from memf.core.logs import job_log

with job_log(sys.argv[1]):
    block = np.ones(int(sys.argv[2]) * 2**20 // 8)  # touched: resident
"""


def test_every_job_log_ends_with_the_jobs_peak_memory(tmp_path):
    """The job log's last line carries the job's peak RSS (what docs/scale.md reads from every job of a run)."""
    import subprocess

    from memf.core.logs import job_cost, job_peak

    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    peaks = {}
    for mib in (50, 400):
        log = tmp_path / f"{mib}.log"
        subprocess.run([sys.executable, "-c", ALLOCATES, str(log), str(mib)], env=env, check=True, timeout=120)
        text = log.read_text()
        assert job_cost(text) is not None  # the cost line still reads as before
        peaks[mib] = job_peak(text)
    assert 330 <= peaks[400] - peaks[50] <= 400, peaks  # the 350 MiB more the second touched
    assert job_peak("memf job: 1.00 CPU-s (0.50 before its work), 2.00 s wall") is None  # a log of an older version
