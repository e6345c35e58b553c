"""Helpers of the fault tests and the fault drill (bench/fault_drill.py): processes, hostile files, peak memory.

Hostile files are generated cheaply: a PNG whose header declares 30,000 x 30,000 pixels (1-bit rows, so the file is
small and writing it takes no memory), a WAV whose data chunk is a sparse file (hours long, no disk used), an H.264
clip of one small frame per second.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


# --- Processes ------------------------------------------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a dead orphan whose reaper has not collected it yet)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                out.append(int(entry))
    return sorted(out)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_until(cond: Callable[[], object], timeout: float, step: float = 0.02) -> object:
    """Poll ``cond`` until it is truthy (returned) or ``timeout`` seconds pass (returns its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def spool_folders(pid: int | None = None) -> list[Path]:
    """Spool folders of memf's isolated workers in /dev/shm and the temporary folder (of process ``pid`` if given)."""
    import tempfile

    prefix = "memf-isolate-" + (f"{pid}-" if pid is not None else "")
    found = []
    for parent in sorted({"/dev/shm", tempfile.gettempdir()}):
        if os.path.isdir(parent):
            found += [Path(parent) / n for n in os.listdir(parent) if n.startswith(prefix)]
    return found


# --- Hostile files --------------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 30_000) -> Path:
    """A valid 1-bit greyscale PNG of ``side`` x ``side`` pixels (all black): a few hundred KiB on disk, written row
    by row. Decoded, it is ``side``^2 bytes in Pillow's mode "1" and 3 x that in RGB (2.7 GB at 30,000)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = bytearray()
    block = row * 1000
    for start in range(0, side, 1000):
        body += comp.compress(block if start + 1000 <= side else row * (side - start))
    body += comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", bytes(body))
                     + _png_chunk(b"IEND", b""))
    return path


def sparse_wav(path: Path, seconds: float, rate: int = 16_000) -> Path:
    """A 16-bit mono PCM WAV of ``seconds`` of silence whose data is a sparse file: hours cost no disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n_bytes = int(seconds * rate) * 2
    if n_bytes + 36 >= 1 << 32:
        raise ValueError(f"{seconds} s at {rate} Hz does not fit a RIFF WAV")
    header = (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVE"
              + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
              + b"data" + struct.pack("<I", n_bytes))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(len(header) + n_bytes)
    return path


def long_mp4(path: Path, seconds: int, fps: int = 1, size: int = 32, bright_after: float | None = None) -> Path:
    """An H.264 MP4 of ``seconds`` at ``fps`` small frames: black, and white from ``bright_after`` seconds on."""
    from fixture_data import write_mp4

    n = seconds * fps
    frames = np.zeros((n, size, size, 3), dtype=np.uint8)
    if bright_after is not None:
        frames[int(bright_after * fps) :] = 255
    write_mp4(path, frames, fps=fps)
    return path


def audio_only_mp4(path: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    """An MP4 holding one AAC audio stream and no video stream."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        pts = 0
        for _ in range(int(seconds * rate) // 1024):
            frame = av.AudioFrame.from_ndarray((0.1 * rng.standard_normal((1, 1024))).astype(np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, pts
            pts += 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- Memory ---------------------------------------------------------------------------------------------------------
def rss_mib() -> float:
    """This process's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_measured(code: str, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh Python (memf importable); it sets ``RESULT`` (a JSON-able dict). Returns ``RESULT`` with
    ``peak_mib``, the process's own peak resident memory (VmHWM: ru_maxrss would count the forking parent's pages), and
    ``workers_peak_mib``, the largest peak of the workers it forked and waited for (ru_maxrss of the children: their
    share of the parent's pages at the fork plus what they allocated)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    wrapper = (
        "import json, resource\n" + code + "\n"
        "_hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(json.dumps({**RESULT, 'peak_mib': round(int(_hwm) / 1024, 1), 'workers_peak_mib':"
        " round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))\n"
    )
    out = subprocess.run([PYTHON, "-c", wrapper], capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"measured child failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def validate_measured(raw: Path, out: Path, timeout: float = 300) -> dict:
    """Validate the dataset ``raw`` into ``out`` (two folds, every drop allowed, one probing worker) in a fresh Python;
    the :func:`run_measured` peaks of it."""
    return run_measured(
        "from pathlib import Path\nfrom memf.data.validate import validate_dataset\n"
        "from memf.data.contract import DEFAULT_COLUMNS\n"
        f"validate_dataset(Path({str(raw)!r}), Path({str(out)!r}), columns=DEFAULT_COLUMNS, target_offset=1.0,"
        " max_drop_fraction=1.0, split_seed=0, folds=2, probe_workers=1)\nRESULT = {}\n",
        timeout=timeout)


# --- A small filesystem that fills up -------------------------------------------------------------------------------
def can_mount_tmpfs() -> str | None:
    """None if ``unshare`` can give this user a private mount of a small tmpfs (a real ENOSPC), else why not."""
    if shutil.which("unshare") is None:
        return "no unshare binary"
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && umount $d && rmdir $d"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare/mount refused: {probe.stderr.strip()[:200]}"


def run_on_small_fs(code: str, size_kib: int, timeout: float = 300,
                    env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` with env ``SMALL`` naming a fresh tmpfs of ``size_kib`` KiB: a private mount in a user
    namespace, so writes there really fail with ENOSPC. The mount is gone when the command ends."""
    script = ('set -e; SMALL=$(mktemp -d); mount -t tmpfs -o size=%dk tmpfs "$SMALL"; export SMALL; set +e; '
              '"$PY" -c "$CODE"; rc=$?; umount "$SMALL"; rmdir "$SMALL"; exit $rc') % size_kib
    full_env = {**os.environ, "PY": PYTHON, "CODE": code,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]), **(env or {})}
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def fill_up(folder: str | os.PathLike[str]) -> int:
    """Write a filler file into ``folder`` until its filesystem is full; returns the bytes written."""
    written = 0
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as fh:
        block = b"\0" * 4096
        while True:
            try:
                written += fh.write(block)
            except OSError:
                return written


def tiny_padded(n_streams: int, dim: int = 8):
    """A valid :class:`memf.padding.padded.Padded` of random values (for writer tests)."""
    from memf.padding.padded import BATCH_KEYS, MASK_KEYS, Padded

    rng = np.random.default_rng(0)
    shapes = {1: (3,), 2: (3, dim), 3: (2, 3, dim)}
    arrays = {}
    for key, rank in BATCH_KEYS.items():
        shape = (n_streams, *((2,) if key == "commodity/mask" else (3,) if key in MASK_KEYS else shapes[rank]))
        if key == "commodity/numeric":
            shape = (n_streams, 2, 3)
        if key in ("video/x", "audio/x"):
            shape = (n_streams, 3, dim)
        arrays[key] = np.ones(shape, bool) if key in MASK_KEYS else rng.standard_normal(shape).astype(np.float32)
    return Padded(stream_id=np.array([f"s{i}" for i in range(n_streams)], dtype=object),
                  fold=(np.arange(n_streams) % 2).astype(np.int8), target=np.zeros(n_streams, np.float32), folds=2,
                  arrays=arrays)


#: The disk-full child (run by :func:`run_on_small_fs`): a shard and a padded file written into a tmpfs filled up;
#: prints the jobs' exit codes and whether the files already there kept their bytes. Env: ENOSPC_DATA (a validated
#: dataset), ENOSPC_LOG (the job log).
ENOSPC_CHILD = r"""
import json, os
from pathlib import Path
import fault_support as fs
from memf.core.logs import job_log
from memf.padding.store import write_padded
from memf.features.extract import extract_shard
from memf.data.contract import DEFAULT_COLUMNS
small = Path(os.environ["SMALL"])
data, log = os.environ["ENOSPC_DATA"], os.environ["ENOSPC_LOG"]
shard, fails, padded = small / "shard-0.parquet", small / "shard-0.failures.parquet", small / "demo.h5"
extractors = {"num": {"kind": "log-standard"}}
def shard_job():
    extract_shard(data_dir=data, extractors=extractors, name="num", columns=DEFAULT_COLUMNS, extraction={"shards": 1},
                  shard=0, out=shard, failures_out=fails)
shard_job()
write_padded(padded, fs.tiny_padded(4))
before = {p.name: p.read_bytes() for p in small.iterdir()}
fs.fill_up(small)
(small / "filler").rename(small / ".filler")
codes = []
for job in (shard_job, lambda: write_padded(padded, fs.tiny_padded(400))):
    try:
        with job_log(log):
            job()
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code)
after = {p.name: p.read_bytes() for p in small.iterdir() if p.name != ".filler"}
print(json.dumps({"codes": codes, "intact": after == before, "files": sorted(after)}))
"""
