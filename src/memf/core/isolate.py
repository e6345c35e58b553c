"""Run a fragile function over many inputs in worker processes, surviving crashes and hangs.

Media decoders (decord in particular) can segfault, abort or hang on a corrupt file, and no ``try`` catches that.
:func:`isolated_map` feeds inputs to a small pool of forked workers, a few queued at each (``prefetch``) so that they
keep decoding while the caller computes; a worker that dies or exceeds the per-item timeout is killed and replaced,
and its current input comes back as a :class:`Failure` with the reason. All other inputs are unaffected (those queued
behind it go to the replacement), so one bad clip is a recorded drop, not a failed run.

Workers are forked (not spawned): Snakemake runs ``script:`` adapters as unguarded ``__main__`` modules, which a spawned
worker would execute again. The function runs in the child only, so the parent's threads are never used there.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
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
SPOOL_BYTES = 32 * 1024  # larger results travel through a file in memory (/dev/shm), not the pipe
SPOOL_MIN_FREE = 1 << 30  # /dev/shm is used for that only with at least this much free space


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


def _serve(fn: Callable[[Any], Any], conn: Connection, spool: str) -> None:
    """Worker loop. A result over ``SPOOL_BYTES`` goes through a file in ``spool`` and only its name through the pipe:
    a large send would block this worker until the parent reads, which it does not while it computes."""
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
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > SPOOL_BYTES:
            path = os.path.join(spool, f"{os.getpid()}-{index}.pkl")
            with open(path, "wb") as fh:
                fh.write(data)
            conn.send_bytes(pickle.dumps(("file", index, path)))
        else:
            conn.send_bytes(data)


def _spool_parent() -> str | None:
    """/dev/shm when it has room (containers often give it 64 MiB), else the default temporary folder."""
    try:
        if shutil.disk_usage("/dev/shm").free >= SPOOL_MIN_FREE:
            return "/dev/shm"
    except OSError:
        pass
    return None


def _receive(conn: Connection) -> tuple[str, int, Any]:
    """The next (status, index, payload) from a worker, read back from the spool if it went there."""
    result = pickle.loads(conn.recv_bytes())
    if result[0] == "file":
        path = result[2]
        with open(path, "rb") as fh:
            result = pickle.loads(fh.read())
        os.unlink(path)
    return result


class _Worker:
    """One forked worker and the items sent to it, oldest first; it works on them in that order."""

    def __init__(self, fn: Callable[[Any], Any], spool: str) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_serve, args=(fn, child, spool), daemon=True)
        self.proc.start()
        child.close()
        self.pending: deque[tuple[int, Any]] = deque()
        self.since = time.monotonic()  # when the oldest pending item started (as the parent can tell)

    def submit(self, index: int, item: Any) -> None:
        if not self.pending:
            self.since = time.monotonic()
        self.pending.append((index, item))
        self.conn.send((index, item))

    def done(self) -> tuple[int, Any]:
        """The oldest pending item is answered: drop it; the next one starts now."""
        self.since = time.monotonic()
        return self.pending.popleft()

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
    prefetch: int = 1,
    desc: str | None = None,
) -> Iterator[Outcome[R]]:
    """Apply ``fn`` to every item in worker processes; yield an :class:`Outcome` per item, in completion order.

    Args:
        fn: a module-level function (it runs in a forked child).
        items: the inputs; each is sent to a worker by pickling.
        workers: worker processes (at least 1).
        timeout_s: longest time one item may take before its worker is killed and the item fails.
        prefetch: items queued at each worker (at least 1). Above 1 a worker goes on to its next item while the
            caller is busy between two ``next()`` calls, so decoding overlaps the caller's own work. When a worker
            crashes or times out, its oldest item is the one that failed; the others queued there go to its
            replacement.
        desc: label of the progress bar; ``None`` shows no bar.
    """
    if workers < 1 or prefetch < 1:
        raise ValueError(f"workers and prefetch must be >= 1, got {workers} and {prefetch}")
    queue: deque[tuple[int, T]] = deque(enumerate(items))
    pool: list[_Worker] = []
    bar = tqdm(total=len(items), desc=desc, disable=desc is None, unit="item")
    spool = tempfile.TemporaryDirectory(prefix="memf-isolate-", dir=_spool_parent())

    def refill(worker: _Worker) -> None:
        while queue and len(worker.pending) < prefetch:
            worker.submit(*queue.popleft())

    def replace(pos: int, worker: _Worker) -> _Worker:
        """Kill ``worker``; a fresh one takes over its remaining pending items, in order."""
        worker.kill()
        fresh = pool[pos] = _Worker(fn, spool.name)
        for index, item in worker.pending:
            fresh.submit(index, item)
        return fresh

    try:
        for _ in range(min(workers, len(queue))):
            worker = _Worker(fn, spool.name)
            pool.append(worker)
            refill(worker)
        while pool:
            now = time.monotonic()
            wait_s = max(0.0, min(w.since + timeout_s - now for w in pool))
            ready = set(wait([w.conn for w in pool], timeout=wait_s))
            for pos, worker in enumerate(list(pool)):
                outcome: Outcome[R] | None = None
                if worker.conn in ready:
                    try:
                        status, index, payload = _receive(worker.conn)
                    except (EOFError, OSError):
                        worker.proc.join()
                        code = worker.proc.exitcode
                        why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                        index, _ = worker.pending.popleft()
                        outcome = Outcome(index, None, Failure(f"decoder process crashed ({why})"))
                        worker = replace(pos, worker)
                    else:
                        done, _ = worker.done()
                        assert done == index, f"worker answered item {index}, expected {done}"
                        failure = Failure(payload) if status == "error" else None
                        outcome = Outcome(index, None if failure else payload, failure)
                elif worker.pending and time.monotonic() - worker.since > timeout_s:
                    index, _ = worker.pending.popleft()
                    outcome = Outcome(index, None, Failure(f"timed out after {timeout_s:g} s"))
                    worker = replace(pos, worker)
                if outcome is None:
                    continue
                bar.update(1)
                yield outcome
                refill(worker)
                if not worker.pending:
                    worker.stop()
                    pool.remove(worker)
    finally:
        for worker in pool:
            worker.kill()
        spool.cleanup()
        bar.close()
