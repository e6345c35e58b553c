"""Run a fragile function over many inputs in worker processes, surviving crashes and hangs.

Media decoders (decord in particular) can segfault, abort or hang on a corrupt file, and no ``try`` catches that.
:func:`isolated_map` feeds inputs one at a time to a small pool of forked workers; a worker that dies or exceeds the
per-item timeout is killed and replaced, and that one input comes back as a :class:`Failure` with the reason. All other
inputs are unaffected, so one bad clip is a recorded drop, not a failed run.

Workers are forked (not spawned): Snakemake runs ``script:`` adapters as unguarded ``__main__`` modules, which a spawned
worker would execute again. The function runs in the child only, so the parent's threads are never used there.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

_CTX = mp.get_context("fork")


@dataclass(frozen=True)
class Failure:
    """Why one input produced no result: an exception in the function, a crash of its worker, or a timeout."""

    reason: str


@dataclass(frozen=True)
class Outcome(Generic[R]):
    index: int
    value: R | None
    failure: Failure | None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _serve(fn: Callable[[Any], Any], conn: Connection) -> None:
    faulthandler.disable()  # a decoder crash is reported by the parent as one failure; no interpreter dump in the log
    while True:
        msg = conn.recv()
        if msg is None:
            return
        index, item = msg
        try:
            result = ("ok", index, fn(item))
        except Exception as exc:  # the function's own error is one input's failure, reported to the parent
            result = ("error", index, f"{type(exc).__name__}: {exc}")
        conn.send(result)


class _Worker:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_serve, args=(fn, child), daemon=True)
        self.proc.start()
        child.close()
        self.index: int | None = None
        self.since = 0.0

    def submit(self, index: int, item: Any) -> None:
        self.index, self.since = index, time.monotonic()
        self.conn.send((index, item))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def isolated_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 2,
    timeout_s: float = 30.0,
    desc: str | None = None,
) -> Iterator[Outcome[R]]:
    """Apply ``fn`` to every item in worker processes; yield an :class:`Outcome` per item, in completion order.

    Args:
        fn: a module-level function (it runs in a forked child).
        items: the inputs; each is sent to a worker by pickling.
        workers: worker processes (at least 1).
        timeout_s: longest time one item may take before its worker is killed and the item fails.
        desc: label of the progress bar; ``None`` shows no bar.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    queue: deque[tuple[int, T]] = deque(enumerate(items))
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, disable=desc is None, unit="item")
    try:
        for _ in range(min(workers, len(queue))):
            worker = _Worker(fn)
            worker.submit(*queue.popleft())
            pool.append(worker)
        while pool:
            now = time.monotonic()
            wait_s = max(0.0, min(w.since + timeout_s - now for w in pool))
            ready = set(wait([w.conn for w in pool], timeout=wait_s))
            for pos, worker in enumerate(list(pool)):
                outcome: Outcome[R] | None = None
                if worker.conn in ready:
                    try:
                        status, index, payload = worker.conn.recv()
                    except (EOFError, OSError):
                        worker.proc.join()
                        code = worker.proc.exitcode
                        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        outcome = Outcome(worker.index, None, Failure(f"decoder process crashed ({why})"))
                        worker.kill()
                        worker = pool[pos] = _Worker(fn)
                    else:
                        failure = Failure(payload) if status == "error" else None
                        outcome = Outcome(index, None if failure else payload, failure)
                elif time.monotonic() - worker.since > timeout_s:
                    outcome = Outcome(worker.index, None, Failure(f"timed out after {timeout_s:g} s"))
                    worker.kill()
                    worker = pool[pos] = _Worker(fn)
                if outcome is None:
                    continue
                bar.update(1)
                yield outcome
                if queue:
                    worker.submit(*queue.popleft())
                else:
                    worker.stop()
                    pool.remove(worker)
    finally:
        for worker in pool:
            worker.kill()
        bar.close()
