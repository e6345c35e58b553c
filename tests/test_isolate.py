"""isolated_map: a crash, a hang or an exception costs one item, never the run."""

import os
import signal
import time

from memf.isolate import isolated_map


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


def test_empty_input():
    assert list(isolated_map(fragile, [], workers=2)) == []
