"""Per-job logging for Snakemake script adapters, and what a job's failure looks like on the console.

A job's failure is one line on the console, ``memf error: <message> (log: <file>)``; the full traceback goes to the
job's log. Known errors (bad input data, an undecodable file, a bad setting, a full disk, a termination signal) exit
with that line only, no Python traceback; anything else is a bug and its traceback is shown too. ``MEMF_DEBUG=1``
shows the traceback for every error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator

from memf.core.io import DataError, is_disk_full
from memf.core.signals import Terminated, check, sigterm_raises

__all__ = ["DEBUG_ENV", "Terminated", "exit_status", "is_known", "job_log", "one_line"]

DEBUG_ENV = "MEMF_DEBUG"


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


def exit_status(exc: BaseException) -> int:
    if isinstance(exc, Terminated):
        return 128 + exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1


@contextlib.contextmanager
def job_log(path: str | os.PathLike[str]) -> Iterator[logging.Logger]:
    """Send this job's stdout, stderr (progress bars) and logging to ``path``; turn a failure into one console line.

    An exception is written to the log with its traceback and its one-line message to the real stderr (the console
    Snakemake shows). A known error (:func:`is_known`) then ends the process with ``SystemExit`` (status 1, or 128 +
    the signal for a termination) and no traceback, unless ``MEMF_DEBUG=1``; any other exception is re-raised.
    SIGTERM is turned into :class:`~memf.core.signals.Terminated`, so that workers are stopped, temporary files
    removed and the job exits promptly with status 143 (also when the signal arrived where its exception was
    swallowed: the job still ends as terminated, so Snakemake discards what it wrote).
    """
    real_stderr = sys.stderr
    with open(path, "a", encoding="utf-8", buffering=1) as fh, sigterm_raises():
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
            print(f"memf error: {one_line(exc)} (log: {path})", file=real_stderr, flush=True)
            if is_known(exc) and os.environ.get(DEBUG_ENV) != "1":
                raise SystemExit(exit_status(exc)) from None
            raise
        finally:
            root.removeHandler(handler)
