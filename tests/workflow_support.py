"""The tiny workflow run end to end once per test session, shared by the workflow and the SLURM tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
#: What the tiny run printed (Snakemake's console and memf's lines), in its work folder.
CONSOLE = "console.log"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Work folder of the whole DAG on tests/configs/tiny.yaml, run locally with 2 cores (a few minutes).

    Tests only read it (dry runs plan against it); none may change its files. Its console is in ``CONSOLE``.
    """
    workdir = tmp_path_factory.mktemp("tiny")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile", str(TINY)]
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (workdir / CONSOLE).write_text(out.stdout + out.stderr)
    return workdir
