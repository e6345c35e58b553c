"""Termination signals of a job: SIGTERM becomes an exception that no cleanup can miss.

A cluster preempts a job (or ends it at its time limit) with SIGTERM to every process of the job. Within
:func:`sigterm_raises`, SIGTERM raises :class:`Terminated` in the main thread, so ``finally`` blocks and context
managers stop workers and remove temporary files on the way out. Python runs a signal handler between any two
bytecodes, also inside code that swallows exceptions (at-fork hooks, ``__del__``, weakref callbacks): the signal is
therefore also remembered, and :func:`check` (called by long loops) and the end of :func:`sigterm_raises` raise it
again if it was swallowed. Forks are done under :func:`blocked`, so that no handler runs inside ``os.fork``'s hooks.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

#: Signals that end a job from outside (a worker that dies of one of these was stopped, not crashed).
EXTERNAL = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_pending: int | None = None


class Terminated(BaseException):
    """The job received a termination signal. A BaseException, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}{detail}")
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = signum
    raise Terminated(signum)


def pending() -> int | None:
    """The termination signal received within :func:`sigterm_raises`, if any."""
    return _pending


def check() -> None:
    """Raise :class:`Terminated` if a termination signal arrived (even if its first exception was swallowed)."""
    if _pending is not None:
        raise Terminated(_pending)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only: elsewhere signals cannot be set).

    If the exception was swallowed and the block ends normally, it is raised at the end."""
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    _pending = None
    try:
        yield
        check()
    finally:
        signal.signal(signal.SIGTERM, previous)
        _pending = None


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Hold back termination signals for the block (a fork: its hooks would swallow the handler's exception);
    they are delivered when it ends. Children forked inside inherit the mask: they must call :func:`unblock`."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, EXTERNAL)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def unblock() -> None:
    """In a forked child: take termination signals again (they were blocked during the fork)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, EXTERNAL)
