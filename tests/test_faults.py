"""Faults and hostile input (issue #14): kills leave nothing behind, oversized media are bounded, every error is one
line, a full disk or a corrupt table is a clear error with the previous outputs intact, the workflow replans and locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fault_support import alive, children, spool_folders, wait_until
from memf.core import isolate

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}

# A caller slower than its workers, so that spooled results pile up in its spool folder while it runs.
SLOW_CALLER = r"""
import sys, time
import numpy as np
from memf.core import isolate
from memf.core.logs import job_log
spool = sys.argv[1]
isolate._spool_parent = lambda: spool
isolate._spool_parents = lambda: [spool]

def big(i):
    time.sleep(0.05)
    return np.full(50_000, i, np.float32)  # 200 kB: over SPOOL_BYTES, so it goes through the spool folder

with job_log(sys.argv[2]):
    for outcome in isolate.isolated_map(big, list(range(10_000)), workers=2, timeout_s=30, prefetch=8):
        time.sleep(0.2)
"""


def start_slow_caller(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, list[int]]:
    spool_parent = tmp_path / "spool"
    spool_parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CALLER, str(spool_parent), str(tmp_path / "job.log")],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Running: two workers and the janitor, and spooled results waiting in the folder.
    def spooled() -> bool:
        folders = list(spool_parent.iterdir())
        return len(children(proc.pid)) == 3 and len(folders) == 1 and len(list(folders[0].iterdir())) >= 2
    assert wait_until(spooled, 60), (children(proc.pid), list(spool_parent.rglob("*")))
    return proc, spool_parent, children(proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_caller_leaves_no_worker_and_no_spool(tmp_path, sig):
    proc, spool_parent, helpers = start_slow_caller(tmp_path)
    started = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert time.monotonic() - started < 5, "the job did not exit promptly"
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5), [p for p in helpers if alive(p)]
    assert wait_until(lambda: list(spool_parent.iterdir()) == [], 5), list(spool_parent.rglob("*"))
    if sig == signal.SIGTERM:  # a preemption: handled, one line, exit status 128 + 15
        _, err = proc.communicate()
        assert proc.returncode == 143
        assert err.strip().splitlines() == [f"memf error: terminated by SIGTERM (log: {tmp_path / 'job.log'})"]
    else:
        assert proc.returncode == -signal.SIGKILL


def test_stale_spool_of_a_dead_job_is_removed_at_the_next_start(tmp_path, monkeypatch):
    # The whole job was killed at once (janitor included): its folder stays until the next call on the machine.
    proc, spool_parent, helpers = start_slow_caller(tmp_path)
    stale = next(spool_parent.iterdir())
    for pid in [proc.pid, *helpers]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5)
    assert stale.is_dir() and list(stale.iterdir())
    # A live process's folder and one named like another program's are left alone.
    own = spool_parent / f"memf-isolate-{os.getpid()}-{isolate._start_time(os.getpid())}-keep"
    own.mkdir()
    other = spool_parent / "memf-isolate-notours"
    other.mkdir()
    monkeypatch.setattr(isolate, "_spool_parent", lambda: str(spool_parent))
    monkeypatch.setattr(isolate, "_spool_parents", lambda: [str(spool_parent)])
    assert [o.value for o in isolate.isolated_map(abs, [-1, -2], workers=1)] == [1, 2]
    assert sorted(p.name for p in spool_parent.iterdir()) == sorted([own.name, other.name])


def test_a_worker_whose_parent_is_gone_exits_at_once():
    # The race the death signal cannot cover: the parent died before the worker armed it.
    code = ("import os; from memf.core import isolate; isolate._die_with_parent(os.getppid() + 1); print('survived')")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "survived" not in out.stdout


def test_a_worker_busy_in_a_decoder_dies_with_its_parent(tmp_path):
    # A worker stuck in a long decode never reads its pipe, so only the death signal can stop it.
    code = ("import time; from memf.core.isolate import isolated_map\n"
            "def stuck(x):\n    time.sleep(120)\n"
            "print('started', flush=True)\nlist(isolated_map(stuck, [1, 2], workers=2, timeout_s=300))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert wait_until(lambda: len(children(proc.pid)) == 3, 60)
    helpers = children(proc.pid)
    time.sleep(0.3)  # the workers are inside stuck()
    proc.kill()
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5), [p for p in helpers if alive(p)]
