"""isolated_map: a crash, a hang or an exception costs one item, never the run."""

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from memf.core import isolate
from memf.core.isolate import isolated_map


def fragile(x: int) -> int:
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 5:
        time.sleep(60)
    if x == 7:
        raise ValueError("bad seven")
    return x * 2


def test_failures_are_isolated_and_reported():
    outcomes = {o.index: o for o in isolated_map(fragile, list(range(10)), workers=2, timeout_s=1.0)}
    assert sorted(outcomes) == list(range(10))
    assert outcomes[3].failure.reason == "decoder process crashed (signal 11)"
    assert outcomes[5].failure.reason == "timed out after 1 s"
    assert outcomes[7].failure.reason == "ValueError: bad seven"
    assert {i: o.value for i, o in outcomes.items() if o.ok} == {i: 2 * i for i in (0, 1, 2, 4, 6, 8, 9)}


def double(x: int) -> int:
    return 2 * x


def test_fewer_items_than_the_workers_can_queue_end():
    # With prefetch 8, the first worker could take all 3 items; the second must not be started idle (it would never
    # be stopped and the call would never end). Guarded by a SIGALRM so that a regression fails instead of hanging.
    def hang(signum, frame):
        raise AssertionError("isolated_map did not return")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(30)
    try:
        outcomes = list(isolated_map(double, [1, 2, 3], workers=2, timeout_s=5.0, prefetch=8))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sorted((o.index, o.value) for o in outcomes) == [(0, 2), (1, 4), (2, 6)]


def big(x: int) -> np.ndarray:
    """A result far over the pipe's buffer (it goes through the spool file)."""
    if x == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return np.full(200_000, x, dtype=np.float32)


@pytest.mark.parametrize("prefetch", [2, 8])
def test_queued_items_survive_a_crash_and_a_timeout(prefetch):
    # With several items queued at a worker, only the one it was working on fails; the rest go to its replacement.
    outcomes = {o.index: o for o in isolated_map(fragile, list(range(12)), workers=2, timeout_s=1.0, prefetch=prefetch)}
    assert sorted(outcomes) == list(range(12))
    assert {i for i, o in outcomes.items() if not o.ok} == {3, 5, 7}
    assert outcomes[3].failure.reason == "decoder process crashed (signal 11)"
    assert outcomes[5].failure.reason == "timed out after 1 s"
    assert {i: o.value for i, o in outcomes.items() if o.ok} == {i: 2 * i for i in (0, 1, 2, 4, 6, 8, 9, 10, 11)}


def test_large_results_come_back_intact_and_leave_no_spool_files(tmp_path, monkeypatch):
    monkeypatch.setattr(isolate, "_spool_parent", lambda: str(tmp_path))
    outcomes = {o.index: o for o in isolated_map(big, list(range(8)), workers=2, timeout_s=30.0, prefetch=4)}
    assert outcomes[4].failure.reason == "decoder process crashed (signal 9)"
    for i in (0, 1, 2, 3, 5, 6, 7):
        np.testing.assert_array_equal(outcomes[i].value, np.full(200_000, i, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def mark(path: str) -> str:
    Path(path).touch()
    return path


def test_workers_go_on_while_the_caller_is_busy(tmp_path):
    # After one result is taken, the caller stops asking; the workers still finish every item queued at them.
    paths = [str(tmp_path / f"{i}.done") for i in range(8)]
    it = isolated_map(mark, paths, workers=2, timeout_s=30.0, prefetch=4)
    next(it)
    deadline = time.monotonic() + 30
    while not all(Path(p).exists() for p in paths) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(Path(p).exists() for p in paths)
    assert len(list(it)) == 7


def test_empty_input():
    assert list(isolated_map(fragile, [], workers=2)) == []
