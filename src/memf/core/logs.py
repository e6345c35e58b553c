"""Per-job logging for Snakemake script adapters, and what a job's failure looks like on the console.

A job's failure is one line on the console, ``memf error: <message> (log: <file>)``; the full traceback goes to the
job's log. Known errors (bad input data, an undecodable file, a bad setting, a full disk, a termination signal) exit
with that line only, no Python traceback; anything else is a bug and its traceback is shown too. ``MEMF_DEBUG=1``
shows the traceback for every error.

Everything else a job prints goes to its log, at the level of file descriptors: Python's output, and what C and C++
libraries (decord, FFmpeg) and the job's forked decoding workers write to descriptors 1 and 2 directly. The log ends
with the job's cost, ``memf job: <CPU> CPU-s (<startup> before its work), <wall> s wall, peak <MiB> MiB RSS``
(:func:`job_cost`, :func:`job_peak`): the CPU time of the job's process and of the workers it waited for, of which
``startup`` was spent before the job's work began (the interpreter and the imports), from which the workflow's time
estimates are measured (``memf.core.progress``); and the job's peak resident memory, the larger of its own (``VmHWM``)
and that of the largest worker it waited for, which is what a cluster's memory request must cover (docs/scale.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from memf.core.io import DataError, is_disk_full
from memf.core.signals import Terminated, check, sigterm_raises

__all__ = ["DEBUG_ENV", "Terminated", "exit_status", "is_known", "job_cost", "job_log", "job_peak", "one_line",
           "report_cli_error"]

DEBUG_ENV = "MEMF_DEBUG"
_COST = re.compile(r"memf job: ([\d.]+) CPU-s \(([\d.]+) before its work\), ([\d.]+) s wall")
_PEAK = re.compile(r"memf job: .* s wall, peak ([\d.]+) MiB RSS")


def is_known(exc: BaseException) -> bool:
    """Errors whose message says everything a user needs (bad data, an undecodable file: ``memf.data.media.MediaError``
    is a DataError; a bad setting; a termination): no traceback on the console for these."""
    if isinstance(exc, (DataError, ValueError, Terminated, KeyboardInterrupt)):
        return True
    return isinstance(exc, OSError) and is_disk_full(exc)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (KeyboardInterrupt: ``interrupted``)."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def report_cli_error(exc: BaseException) -> int:
    """How a command-line tool ends on ``exc``: ``memf error: <one line>`` on stderr (the traceback first for a bug,
    or for any error with MEMF_DEBUG=1); returns the exit status 1."""
    if not is_known(exc) or os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
    print(f"memf error: {one_line(exc)}", file=sys.stderr)
    return 1


def exit_status(exc: BaseException) -> int:
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1


def job_cost(text: str) -> tuple[float, float, float] | None:
    """(CPU-seconds, of them before the job's work, wall seconds of its work) of the last job recorded in a job
    log's ``text``; None if it recorded none."""
    found = _COST.findall(text)
    return tuple(float(x) for x in found[-1]) if found else None  # type: ignore[return-value]


def job_peak(text: str) -> float | None:
    """Peak resident memory in MiB of the last job recorded in a job log's ``text``; None if it recorded none (a log
    written before the peak was recorded)."""
    found = _PEAK.findall(text)
    return float(found[-1]) if found else None


def peak_mib() -> float:
    """Peak resident set in MiB of this process (``VmHWM``: Linux carries a parent's ``ru_maxrss`` into a forked
    child, the high-water mark is the process's own) or of the largest child it waited for, whichever is larger."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with contextlib.suppress(OSError, StopIteration, ValueError):
        status = Path("/proc/self/status").read_text()
        own = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    return max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def _cpu_seconds() -> float:
    """User and system CPU time of this process and of its children that were waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def _descriptors_to(fh: TextIO) -> Iterator[TextIO]:
    """Point file descriptors 1 and 2 at ``fh`` for the block, so that libraries writing to them directly (decord's
    C++ messages, FFmpeg's) and the processes forked inside write to the log; yield a stream on the console's stderr.
    The descriptors are restored when the block ends."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(2), "w", encoding="utf-8", buffering=1)
    try:
        fh.flush()
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        yield console
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        console.close()


@contextlib.contextmanager
def job_log(path: str | os.PathLike[str]) -> Iterator[logging.Logger]:
    """Send this job's output (Python's, its libraries' and its workers', at the descriptor level) and logging to
    ``path``; turn a failure into one console line; end the log with the job's cost (:func:`job_cost`).

    An exception is written to the log with its traceback and its one-line message to the real stderr (the console
    Snakemake shows). A known error (:func:`is_known`) then ends the process with ``SystemExit`` (status 1, or 128 +
    the signal for a termination) and no traceback, unless ``MEMF_DEBUG=1``; any other exception is re-raised.
    SIGTERM is turned into :class:`~memf.core.signals.Terminated`, so that workers are stopped, temporary files
    removed and the job exits promptly with status 143 (also when the signal arrived where its exception was
    swallowed: the job still ends as terminated, so Snakemake discards what it wrote).
    """
    started, startup = time.monotonic(), _cpu_seconds()
    with (open(path, "a", encoding="utf-8", buffering=1) as fh, sigterm_raises(),
          _descriptors_to(fh) as console):
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
                yield logging.getLogger("memf")
            check()  # a termination whose exception was swallowed somewhere still ends the job as terminated
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                raise
            traceback.print_exc(file=fh)
            print(f"memf error: {one_line(exc)} (log: {path})", file=console, flush=True)
            if is_known(exc) and os.environ.get(DEBUG_ENV) != "1":
                raise SystemExit(exit_status(exc)) from None
            raise
        finally:
            root.removeHandler(handler)
            print(f"memf job: {_cpu_seconds():.2f} CPU-s ({startup:.2f} before its work), "
                  f"{time.monotonic() - started:.2f} s wall, peak {peak_mib():.1f} MiB RSS", file=fh, flush=True)
