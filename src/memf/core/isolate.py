"""Run a fragile function over many inputs in worker processes, surviving crashes and hangs.

Media decoders (decord in particular) can segfault, abort or hang on a corrupt file, and no ``try`` catches that.
:func:`isolated_map` feeds inputs to a small pool of forked workers, a few queued at each (``prefetch``) so that they
keep decoding while the caller computes; a worker that dies or exceeds the per-item timeout is killed and replaced,
and its current input comes back as a :class:`Failure` with the reason. All other inputs are unaffected (those queued
behind it go to the replacement), so one bad clip is a recorded drop, not a failed run.

Workers are forked (not spawned): Snakemake runs ``script:`` adapters as unguarded ``__main__`` modules, which a spawned
worker would execute again. The function runs in the child only, so the parent's threads are never used there.

Nothing outlives the caller, however it ends:

- Each worker asks the kernel to SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux), checks at
  start that its parent is still the one that forked it, and elsewhere (no ``prctl``) polls its parent's pid. A
  worker closes the pipes of the other workers it inherited, so each pipe has exactly two ends.
- Large results are spooled in one folder per call, ``memf-isolate-<pid>-<start time>-*`` under ``/dev/shm`` (or the
  temporary folder). The call removes it when it ends (``finally``), and so does an ``atexit`` hook. A small janitor
  process (forked first, holding no pipe, leaving SIGINT to the parent) polls the parent's pid and removes the folder
  within a second of a SIGKILL of the parent. A folder whose owner is gone (pid not running, or running with another
  start time) is removed by the next call on the machine, in case the janitor was killed too.
- A worker ignores SIGINT (the caller handles Ctrl-C and stops its workers) and takes SIGTERM's default action. A
  worker that dies of SIGTERM, SIGINT or SIGHUP was stopped, not crashed: the call raises
  :class:`memf.core.signals.Terminated` instead of recording a failure. Workers are forked with those signals held
  back (:func:`memf.core.signals.blocked`), so that no handler runs inside the fork's hooks.
"""

from __future__ import annotations

import atexit
import ctypes
import faulthandler
import multiprocessing as mp
import os
import pickle
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from tqdm import tqdm

from memf.core import signals

T = TypeVar("T")
R = TypeVar("R")

_CTX = mp.get_context("fork")
SPOOL_BYTES = 32 * 1024  # larger results travel through a file in memory (/dev/shm), not the pipe
SPOOL_MIN_FREE = 1 << 30  # /dev/shm is used for that only with at least this much free space
SPOOL_PREFIX = "memf-isolate-"
_SPOOL_NAME = re.compile(rf"^{SPOOL_PREFIX}(\d+)-(\d+)-")
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
#: Parent ends of every live worker's pipe: a newly forked worker closes those that are not its own.
_PARENT_ENDS: weakref.WeakSet[Connection] = weakref.WeakSet()
#: Spool folders of calls still running in this process (removed at exit if a call did not get to).
_LIVE_SPOOLS: set[str] = set()


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


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); None if there is no such
    process. 0 where /proc does not exist and the process does."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def _spool_parents() -> list[str]:
    """Every folder a spool may be in (where stale ones are looked for)."""
    return sorted({"/dev/shm", tempfile.gettempdir()})


def clean_stale_spools(parents: list[str] | None = None) -> list[str]:
    """Remove spool folders of this user whose process is gone (a job killed with its janitor); returns them."""
    removed = []
    for parent in parents if parents is not None else _spool_parents():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            found = _SPOOL_NAME.match(name)
            if not found:
                continue
            path = os.path.join(parent, name)
            try:
                if os.stat(path).st_uid != os.getuid():
                    continue
            except OSError:
                continue
            pid, started = int(found.group(1)), int(found.group(2))
            now = _start_time(pid)
            if now is None or (now and started and now != started):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` dies; exit now if it already has. Where prctl is not
    available, a thread polls the parent's pid instead."""
    armed = _LIBC is not None and _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()


def _janitor(parent: int, spool: str) -> None:
    """Remove ``spool`` once ``parent`` is gone (its workers die with it); the parent kills this process when it
    ends normally. Pure Python, so it cannot be stuck in a decoder. SIGTERM ends it (then the parent, signalled too,
    cleans up itself); SIGINT is left to the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signals.unblock()
    for other in list(_PARENT_ENDS):
        other.close()
    while os.getppid() == parent:
        time.sleep(0.2)
    time.sleep(0.2)  # workers killed with the parent may be finishing a write
    shutil.rmtree(spool, ignore_errors=True)


def _serve(fn: Callable[[Any], Any], conn: Connection, spool: str, parent: int) -> None:
    """Worker loop. A result over ``SPOOL_BYTES`` goes through a file in ``spool`` and only its name through the pipe:
    a large send would block this worker until the parent reads, which it does not while it computes."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signals.unblock()
    for other in list(_PARENT_ENDS):
        other.close()
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
        _PARENT_ENDS.add(self.conn)  # before the fork: the worker closes its copy of this end too
        self.proc = _CTX.Process(target=_serve, args=(fn, child, spool, os.getpid()), daemon=True)
        with signals.blocked():
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
        _PARENT_ENDS.discard(self.conn)

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
        _PARENT_ENDS.discard(self.conn)


class _Spool:
    """This call's spool folder, named after the process (pid and start time), with its janitor."""

    def __init__(self) -> None:
        clean_stale_spools()
        pid = os.getpid()
        self.path = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{pid}-{_start_time(pid) or 0}-", dir=_spool_parent())
        _LIVE_SPOOLS.add(self.path)
        self.janitor = _CTX.Process(target=_janitor, args=(pid, self.path), daemon=True)
        with signals.blocked():
            self.janitor.start()

    def close(self) -> None:
        self.janitor.kill()
        self.janitor.join()
        shutil.rmtree(self.path, ignore_errors=True)
        _LIVE_SPOOLS.discard(self.path)


@atexit.register
def _remove_live_spools() -> None:
    for path in list(_LIVE_SPOOLS):
        shutil.rmtree(path, ignore_errors=True)


class _Pool:
    """The workers of one :func:`isolated_map` call: the queued items, and a worker replaced when it crashes or
    times out (its remaining items go to the replacement, in order)."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T], workers: int, timeout_s: float, prefetch: int) -> None:
        self.fn, self.timeout_s, self.prefetch = fn, timeout_s, prefetch
        self.queue: deque[tuple[int, T]] = deque(enumerate(items))
        self.workers: list[_Worker] = []
        self.spool = _Spool()  # janitor first, so that it holds no worker's pipe
        try:
            # The first items are shared out, so that every worker started has some: a worker started without
            # items would never be stopped (it is stopped when its last item is answered).
            share = min(prefetch, -(-len(self.queue) // workers))
            for _ in range(min(workers, len(self.queue))):
                worker = _Worker(fn, self.spool.path)
                self.workers.append(worker)
                self.refill(worker, share)
        except BaseException:
            self.close()
            raise

    def refill(self, worker: _Worker, limit: int | None = None) -> None:
        while self.queue and len(worker.pending) < (limit or self.prefetch):
            worker.submit(*self.queue.popleft())

    def replace(self, worker: _Worker) -> _Worker:
        """Kill ``worker``; a fresh one takes over its place and its remaining pending items, in order."""
        worker.kill()
        pos = self.workers.index(worker)
        fresh = _Worker(self.fn, self.spool.path)
        self.workers[pos] = fresh
        for index, item in worker.pending:
            fresh.submit(index, item)
        return fresh

    def ready(self) -> set[Any]:
        """The connections with an answer, waiting at most until the oldest pending item times out."""
        now = time.monotonic()
        wait_s = max(0.0, min(w.since + self.timeout_s - now for w in self.workers))
        return set(wait([w.conn for w in self.workers], timeout=wait_s))

    def _answered(self, worker: _Worker) -> tuple[Outcome[R], _Worker]:
        try:
            status, index, payload = _receive(worker.conn)
        except (EOFError, OSError):
            worker.proc.join()
            code = worker.proc.exitcode
            if code is not None and -code in signals.EXTERNAL:  # stopped from outside, not a bad file
                raise signals.Terminated(-code, " (received by a decoding worker)") from None
            why = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            index, _ = worker.pending.popleft()
            return Outcome(index, None, Failure(f"decoder process crashed ({why})")), self.replace(worker)
        done, _ = worker.done()
        assert done == index, f"worker answered item {index}, expected {done}"
        failure = Failure(payload) if status == "error" else None
        return Outcome(index, None if failure else payload, failure), worker

    def outcome(self, worker: _Worker, ready: set[Any]) -> tuple[Outcome[R] | None, _Worker]:
        """The outcome ``worker`` has now (an answer, a crash, a timeout) or None, and the worker that goes on."""
        if worker.conn in ready:
            return self._answered(worker)
        if worker.pending and time.monotonic() - worker.since > self.timeout_s:
            index, _ = worker.pending.popleft()
            return Outcome(index, None, Failure(f"timed out after {self.timeout_s:g} s")), self.replace(worker)
        return None, worker

    def next_items(self, worker: _Worker) -> None:
        """After an outcome: give ``worker`` more items, or stop it when it has none left."""
        self.refill(worker)
        if not worker.pending:
            worker.stop()
            self.workers.remove(worker)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.spool.close()


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
    if not items:
        return
    bar = tqdm(total=len(items), desc=desc, disable=desc is None, unit="item")
    pool: _Pool | None = None
    try:
        pool = _Pool(fn, items, workers, timeout_s, prefetch)
        while pool.workers:
            signals.check()
            ready = pool.ready()
            for worker in list(pool.workers):
                outcome, worker = pool.outcome(worker, ready)
                if outcome is None:
                    continue
                bar.update(1)
                yield outcome
                pool.next_items(worker)
    finally:
        if pool is not None:
            pool.close()
        bar.close()
