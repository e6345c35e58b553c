"""Choosing the torch device for a pipeline job, so that concurrent jobs on one machine never share a GPU.

Snakemake counts GPUs (``--resources gpu=N`` caps how many jobs holding ``gpu=1`` run at once) but assigns no device
ids on a workstation. :func:`claim_device` fills that gap: each job takes an exclusive ``fcntl.flock`` lock on one
visible GPU and keeps it for the life of the ``with`` block; the kernel drops the lock when the process ends, so a
killed job never leaves a GPU reserved. Under SLURM the job's allocation already is its GPU set (SLURM sets
``CUDA_VISIBLE_DEVICES``), so the first visible device is used without a lock.

Preferences:
    ``"cpu"``: always the CPU.
    ``"cuda"``: a GPU; an error if torch sees none (or the SLURM job was given none).
    ``"auto"``: a GPU when there is one, otherwise the CPU, and that choice is logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PREFERENCES: tuple[str, ...] = ("cpu", "cuda", "auto")
LOCK_DIR_ENV = "MEMF_GPU_LOCK_DIR"
POLL_S = 0.5


def cuda_device_count() -> int:
    """Number of CUDA devices this process can use (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_lock_dir() -> Path:
    """``$MEMF_GPU_LOCK_DIR``, else ``$XDG_RUNTIME_DIR/memf-gpu-locks``, else ``/tmp/memf-gpu-locks-<uid>``.

    Locks coordinate the jobs of one user; GPUs shared between users need ``$MEMF_GPU_LOCK_DIR`` pointing at one
    folder they can all write.
    """
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "memf-gpu-locks"
    return Path("/tmp") / f"memf-gpu-locks-{os.getuid()}"


def _visible_ids(count: int) -> list[str]:
    """Stable names of the visible devices for lock files: the ``CUDA_VISIBLE_DEVICES`` entries (physical indices
    or UUIDs) when that variable lists them, else the indices, so runs with different masks share locks correctly."""
    listed = [part.strip() for part in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
    return listed[:count] if len(listed) >= count else [str(i) for i in range(count)]


def _under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


@contextlib.contextmanager
def _lock_one_gpu(count: int, lock_dir: Path, timeout_s: float | None) -> Iterator[str]:
    """Hold an exclusive lock on the first free one of ``count`` visible GPUs; wait while all are taken."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    ids = _visible_ids(count)
    started = time.monotonic()
    waiting_logged = False
    while True:
        for index, dev_id in enumerate(ids):
            path = lock_dir / f"gpu-{dev_id}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                log.info("claimed GPU cuda:%d (CUDA device %s, lock %s)", index, dev_id, path)
                yield f"cuda:{index}"
            finally:
                os.close(fd)  # closing the only descriptor releases the flock
            return
        waited = time.monotonic() - started
        if timeout_s is not None and waited >= timeout_s:
            raise TimeoutError(
                f"{lock_dir}: all {count} visible GPUs stayed locked for {waited:.0f} s (timeout {timeout_s:.0f} s); "
                "run Snakemake with --resources gpu=<number of GPUs>"
            )
        if not waiting_logged:
            log.warning(
                "all %d visible GPUs are locked by other jobs (%s); waiting for one to be released. "
                "Pass --resources gpu=%d to Snakemake so it never starts more GPU jobs than GPUs.",
                count, lock_dir, count,
            )
            waiting_logged = True
        time.sleep(POLL_S)


@contextlib.contextmanager
def claim_device(
    preference: str, *, lock_dir: str | os.PathLike[str] | None = None, timeout_s: float | None = None
) -> Iterator[str]:
    """Yield a torch device string for this job, holding the GPU exclusively until the block exits.

    Args:
        preference: ``"cpu"``, ``"cuda"`` or ``"auto"`` (see the module docstring).
        lock_dir: folder of the per-GPU lock files; :func:`default_lock_dir` when None.
        timeout_s: give up with ``TimeoutError`` after waiting this long for a free GPU; None waits indefinitely.

    Raises:
        ValueError: unknown preference.
        RuntimeError: ``"cuda"`` requested but no CUDA device is visible.
    """
    if preference not in PREFERENCES:
        raise ValueError(f"device preference '{preference}' is not one of {', '.join(PREFERENCES)}")
    if preference == "cpu":
        yield "cpu"
        return
    count = cuda_device_count()
    slurm_without_gpu = _under_slurm() and not os.environ.get("CUDA_VISIBLE_DEVICES")
    if count == 0 or slurm_without_gpu:
        why = (
            f"SLURM job {os.environ['SLURM_JOB_ID']} was allocated no GPU (CUDA_VISIBLE_DEVICES unset)"
            if slurm_without_gpu
            else "torch sees no CUDA device (torch.cuda.is_available() is False)"
        )
        if preference == "cuda":
            raise RuntimeError(f"device 'cuda' requested, but {why}")
        log.warning("device 'auto': %s; running on the CPU", why)
        yield "cpu"
        return
    if _under_slurm():
        log.info(
            "SLURM job %s: using cuda:0 of its allocated CUDA_VISIBLE_DEVICES=%s",
            os.environ["SLURM_JOB_ID"], os.environ["CUDA_VISIBLE_DEVICES"],
        )
        yield "cuda:0"
        return
    with _lock_one_gpu(count, Path(lock_dir) if lock_dir is not None else default_lock_dir(), timeout_s) as device:
        yield device
