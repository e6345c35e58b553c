"""The tiny workflow run end to end once per test session, shared by the workflow and the SLURM tests.

It starts in the background at the session's first test, whichever pytest-xdist worker gets there first, so that it
runs beside the other tests; the tests that read it are collected last and wait for it only if it is still running.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memf.core.io import write_text

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
#: What the tiny run printed (Snakemake's console and memf's lines), in its work folder.
CONSOLE = "console.log"
#: The run's exit status, written in its work folder when it ends.
STATUS = "status"
#: The fixture a test names to read the run.
FIXTURE = "tiny_run"
TIMEOUT_S = 1800


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """``name`` in the folder every pytest-xdist worker of this session shares (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


def start(workdir: Path) -> subprocess.Popen | None:
    """Start the tiny run in ``workdir`` unless a worker of this session already has; the process if this one did."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        marker = workdir.with_suffix(".started")
        if marker.exists():
            return None
        marker.touch()
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2", "--configfile", str(TINY)]
    with open(workdir / CONSOLE, "w") as console:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
    threading.Thread(target=write_status, args=(process, workdir), daemon=True).start()
    return process


def write_status(process: subprocess.Popen, workdir: Path) -> None:
    """Once the run has ended, its exit status, for whichever worker waits on it."""
    write_text(workdir / STATUS, str(process.wait()))


def wait(workdir: Path) -> None:
    """Wait for the run in ``workdir`` to end; fail with the end of its console unless it succeeded."""
    deadline = time.monotonic() + TIMEOUT_S
    status = workdir / STATUS
    while not status.is_file():
        assert time.monotonic() < deadline, f"the tiny run in {workdir} did not end within {TIMEOUT_S} s"
        time.sleep(1)
    assert status.read_text().strip() == "0", (workdir / CONSOLE).read_text()[-6000:]


def reads_tiny_run(item: pytest.Item) -> bool:
    return FIXTURE in getattr(item, "fixturenames", ())


def tiny_files_last(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place: the files with a test that reads the tiny run after all others (order otherwise kept)."""
    readers = {item.path for item in items if reads_tiny_run(item)}
    items.sort(key=lambda item: item.path in readers)


@pytest.fixture(scope="session", autouse=True)
def tiny_run_in_background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the session's first test, start the tiny run if any collected test reads it; at its end, wait for it."""
    needed = any(reads_tiny_run(item) for item in request.session.items)
    process = start(shared_folder(tmp_path_factory, "tiny")) if needed else None
    yield
    if process is None:
        return
    # A worker with no test of the run may end first while the others still need it: wait, unless interrupted.
    try:
        if request.session.exitstatus != pytest.ExitCode.INTERRUPTED:
            process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.terminate()  # Snakemake stops its jobs and exits
            process.wait()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Work folder of the whole DAG on tests/configs/tiny.yaml, run locally with 2 cores (a few minutes).

    Tests only read it (dry runs plan against it); none may change its files. Its console is in ``CONSOLE``.
    """
    workdir = shared_folder(tmp_path_factory, "tiny")
    start(workdir)  # a no-op once started (by this worker's or another's tiny_run_in_background)
    wait(workdir)
    return workdir
