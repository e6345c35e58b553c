"""The Snakemake workflow through its CLI: lint, a user's own dataset, and the tiny configuration end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from fakedata import write_dataset

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)


def test_lint_is_clean():
    out = snakemake("--lint", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr


def test_bad_config_is_rejected_at_load(tmp_path):
    (tmp_path / "bad.yaml").write_text("split: {test_fraction: 1.5}\n")
    out = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path)
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert "test_fraction" in message and "1.5 is greater than or equal to the maximum of 1" in message


def test_own_dataset_goes_through_validation(tmp_path):
    write_dataset(tmp_path / "mydata", n_streams=8)
    (tmp_path / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\n")
    out = snakemake("--cores", "2", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    streams = pl.read_parquet(tmp_path / "results/data/streams.parquet")
    assert streams.height == 8 and set(streams["split"]) == {"train", "val", "test"}
    assert "kept 8 of 8 streams" in (tmp_path / "logs/data/validate.log").read_text()
    # Nothing changed: nothing to do.
    again = snakemake("-n", "--configfile", "cfg.yaml", "--until", "validate", cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
