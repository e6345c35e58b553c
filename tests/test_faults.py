"""Faults and hostile input (issue #14): kills leave nothing behind, oversized media are bounded, every error is one
line, a full disk or a corrupt table is a clear error with the previous outputs intact, the workflow replans and locks."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import fault_support as fs
from fakedata import write_dataset
from fault_support import alive, children, wait_until
from memf.core import isolate
from memf.core.io import DataError, write_parquet
from memf.data import media
from memf.data.contract import DEFAULT_COLUMNS, Limits
from memf.data.validate import validate_dataset

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}

# A caller slower than its workers, so that spooled results pile up in its spool folder while it runs.
SLOW_CALLER = r"""
import sys, time
import numpy as np
from memf.core import isolate
from memf.core.logs import job_log
spool = sys.argv[1]
isolate._spool_parent = lambda: spool
isolate._spool_parents = lambda: [spool]

def big(i):
    time.sleep(0.05)
    return np.full(50_000, i, np.float32)  # 200 kB: over SPOOL_BYTES, so it goes through the spool folder

with job_log(sys.argv[2]):
    for outcome in isolate.isolated_map(big, list(range(10_000)), workers=2, timeout_s=30, prefetch=8):
        time.sleep(0.2)
"""


def start_slow_caller(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, list[int]]:
    spool_parent = tmp_path / "spool"
    spool_parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CALLER, str(spool_parent), str(tmp_path / "job.log")],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Running: two workers and the janitor, and spooled results waiting in the folder.
    def spooled() -> bool:
        folders = list(spool_parent.iterdir())
        return len(children(proc.pid)) == 3 and len(folders) == 1 and len(list(folders[0].iterdir())) >= 2
    assert wait_until(spooled, 60), (children(proc.pid), list(spool_parent.rglob("*")))
    return proc, spool_parent, children(proc.pid)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_caller_leaves_no_worker_and_no_spool(tmp_path, sig):
    proc, spool_parent, helpers = start_slow_caller(tmp_path)
    started = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert time.monotonic() - started < 5, "the job did not exit promptly"
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5), [p for p in helpers if alive(p)]
    assert wait_until(lambda: list(spool_parent.iterdir()) == [], 5), list(spool_parent.rglob("*"))
    if sig == signal.SIGTERM:  # a preemption: handled, one line, exit status 128 + 15
        _, err = proc.communicate()
        assert proc.returncode == 143
        assert err.strip().splitlines() == [f"memf error: terminated by SIGTERM (log: {tmp_path / 'job.log'})"]
    else:
        assert proc.returncode == -signal.SIGKILL


def test_sigterm_to_the_whole_job_ends_it_as_terminated(tmp_path):
    # A preemption signals every process of the job: workers and janitor die of it, the caller cleans up and exits.
    proc, spool_parent, helpers = start_slow_caller(tmp_path)
    started = time.monotonic()
    for pid in [proc.pid, *helpers]:
        with contextlib.suppress(ProcessLookupError):  # already ended by the caller's cleanup: what is tested
            os.kill(pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert proc.returncode == 143 and len(err.strip().splitlines()) == 1 and "terminated by SIGTERM" in err, err
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5)
    assert wait_until(lambda: list(spool_parent.iterdir()) == [], 5)


def stopped(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.05)
    return x


def test_a_worker_stopped_by_sigterm_stops_the_call_instead_of_recording_a_crash():
    from memf.core.signals import Terminated

    with pytest.raises(Terminated, match=r"terminated by SIGTERM \(received by a decoding worker\)"):
        list(isolate.isolated_map(stopped, list(range(6)), workers=2, timeout_s=30))


SWALLOWED = r"""
import os, signal, sys, time
from memf.core.logs import job_log

class Swallows:
    def __del__(self):  # a handler's exception raised in here is "ignored" by Python
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

with job_log(sys.argv[1]):
    Swallows()
    time.sleep(0.2)
    print("the job went on and finished", flush=True)
"""


def test_a_termination_whose_exception_was_swallowed_still_ends_the_job_as_terminated(tmp_path):
    out = subprocess.run([sys.executable, "-c", SWALLOWED, str(tmp_path / "job.log")], env=ENV, capture_output=True,
                         text=True, timeout=60)
    log = (tmp_path / "job.log").read_text()
    assert "Exception ignored" in log and "the job went on and finished" in log  # it really was swallowed
    assert out.returncode == 143
    assert out.stderr.strip().splitlines()[-1] == f"memf error: terminated by SIGTERM (log: {tmp_path / 'job.log'})"


def test_stale_spool_of_a_dead_job_is_removed_at_the_next_start(tmp_path, monkeypatch):
    # The whole job was killed at once (janitor included): its folder stays until the next call on the machine.
    proc, spool_parent, helpers = start_slow_caller(tmp_path)
    stale = next(spool_parent.iterdir())
    for pid in [proc.pid, *helpers]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5)
    assert stale.is_dir() and list(stale.iterdir())
    # A live process's folder and one named like another program's are left alone.
    own = spool_parent / f"memf-isolate-{os.getpid()}-{isolate._start_time(os.getpid())}-keep"
    own.mkdir()
    other = spool_parent / "memf-isolate-notours"
    other.mkdir()
    monkeypatch.setattr(isolate, "_spool_parent", lambda: str(spool_parent))
    monkeypatch.setattr(isolate, "_spool_parents", lambda: [str(spool_parent)])
    assert [o.value for o in isolate.isolated_map(abs, [-1, -2], workers=1)] == [1, 2]
    assert sorted(p.name for p in spool_parent.iterdir()) == sorted([own.name, other.name])


def test_a_worker_whose_parent_is_gone_exits_at_once():
    # The race the death signal cannot cover: the parent died before the worker armed it.
    code = ("import os; from memf.core import isolate; isolate._die_with_parent(os.getppid() + 1); print('survived')")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "survived" not in out.stdout


def test_a_worker_busy_in_a_decoder_dies_with_its_parent(tmp_path):
    # A worker stuck in a long decode never reads its pipe, so only the death signal can stop it.
    code = ("import time; from memf.core.isolate import isolated_map\n"
            "def stuck(x):\n    time.sleep(120)\n"
            "print('started', flush=True)\nlist(isolated_map(stuck, [1, 2], workers=2, timeout_s=300))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert wait_until(lambda: len(children(proc.pid)) == 3, 60)
    helpers = children(proc.pid)
    time.sleep(0.3)  # the workers are inside stuck()
    proc.kill()
    proc.wait(timeout=10)
    assert wait_until(lambda: not any(alive(p) for p in helpers), 5), [p for p in helpers if alive(p)]



# --- Bounds on media and text ---------------------------------------------------------------------------------------
def validate(raw: Path, out: Path, **kwargs):
    return validate_dataset(raw, out, columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=1.0, split_seed=0,
                            folds=2, probe_workers=1, probe_timeout_s=60, **kwargs)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw") / "raw", n_streams=6)


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def rows_of(out: Path, name: str) -> dict[tuple[str, str], str]:
    return {(r["level"], r["object_id"]): r["reason"] for r in pl.read_parquet(out / f"{name}.parquet").iter_rows(named=True)}


def test_an_oversized_png_is_refused_before_decoding_without_a_memory_spike(tmp_path):
    bomb = fs.bomb_png(tmp_path / "bomb.png", side=30_000)  # 109 kB on disk, 2.7 GB as RGB
    assert bomb.stat().st_size < 1 << 20
    result = fs.run_measured(
        "from memf.data.media import MediaError, read_image\n"
        f"try:\n    read_image({str(bomb)!r}); RESULT = {{'error': None}}\n"
        "except MediaError as exc:\n    RESULT = {'error': str(exc)}\n")
    assert result["error"] == (f"{bomb}: image has 900,000,000 pixels, over limits.max_image_pixels = 89,478,485 "
                               "(refused before decoding)")
    assert result["peak_mib"] < 150, result
    # The bound is the config's: a small image over a small bound is refused too, under it decoded.
    small = fs.bomb_png(tmp_path / "small.png", side=300)
    with media.applied_limits(Limits(max_image_pixels=50_000)):
        with pytest.raises(media.MediaError, match="image has 90,000 pixels, over limits.max_image_pixels = 50,000"):
            media.read_image(small)
    assert media.read_image(small).shape == (300, 300, 3)


def test_an_oversized_png_is_a_recorded_drop_in_validation_without_a_memory_spike(raw, tmp_path):
    items = pl.read_parquet(raw / "items.parquet")
    victim = items.filter(pl.col("item_id") == "s001-i0")["image"][0]
    fs.bomb_png(raw / victim, side=30_000)
    result = fs.validate_measured(raw, tmp_path / "out")
    reason = rows_of(tmp_path / "out", "excluded")[("item", "s001-i0")]
    assert reason.startswith("image does not decode: MediaError: ") and reason.endswith(
        "image has 900,000,000 pixels, over limits.max_image_pixels = 89,478,485 (refused before decoding)")
    # The probing worker holds the parent's pages it was forked with and a few MiB of its own; decoding the PNG would
    # have added 2.7 GB.
    assert result["workers_peak_mib"] < result["peak_mib"] + 100, result


def test_an_hour_long_clip_is_read_within_the_video_bound_and_recorded(raw, tmp_path):
    clips = pl.read_parquet(raw / "clips.parquet")
    victim = clips.filter(pl.col("clip_id") == "s002-video0")["path"][0]
    fs.long_mp4(raw / victim, seconds=3600, fps=1, bright_after=600)  # black for 10 minutes, then white
    frames = media.read_video(raw / victim, 8)
    assert frames.shape == (8, 32, 32, 3) and frames.max() < 40  # every sampled frame is from the first 600 s
    with media.applied_limits(Limits(max_video_frames=100)):
        cut = media.probe("video", raw / victim)["truncated"]
        assert cut.endswith("read up to frame 100 (limits.max_video_seconds = 600, limits.max_video_frames = 100)")
    with media.applied_limits(Limits(max_video_seconds=7200)):
        assert media.read_video(raw / victim, 8).min() > 200 or media.read_video(raw / victim, 8).max() > 200
    validate(raw, tmp_path / "out")
    cut = rows_of(tmp_path / "out", "truncated")
    assert cut == {("clip", "s002-video0"): "video clip of 3600 frames (3600.0 s) read up to frame 600 "
                                              "(limits.max_video_seconds = 600, limits.max_video_frames = 18000)"}
    assert "s002-video0" in pl.read_parquet(tmp_path / "out" / "clips.parquet")["clip_id"].to_list()


def test_a_ten_hour_wav_is_decoded_within_the_audio_bound_without_a_memory_spike(tmp_path):
    wav = fs.sparse_wav(tmp_path / "ten-hours.wav", seconds=10 * 3600, rate=16_000)  # 1.15 GB, sparse
    result = fs.run_measured(
        "from memf.data.media import probe\n"
        f"RESULT = probe('audio', {str(wav)!r})\n")
    assert result["seconds"] == 600.0 and result["truncated"] == ("audio clip of 36000.0 s decoded up to 600 s "
                                                                  "(limits.max_audio_seconds)")
    assert result["peak_mib"] < 250, result  # 600 s of float32 is 37 MiB; the whole file would be 2.2 GiB


def test_long_compressed_audio_is_decoded_within_the_bound(tmp_path):
    m4a = fs.audio_only_mp4(tmp_path / "talk.m4a", seconds=12.0)
    with media.applied_limits(Limits(max_audio_seconds=5)):
        wave, rate = media.decode_audio(m4a)
        info = media.probe("audio", m4a)
    assert rate == 16_000 and wave.size == 5 * 16_000
    assert info["truncated"] == "audio clip of 12.0 s decoded up to 5 s (limits.max_audio_seconds)"
    full, _ = media.decode_audio(m4a)
    assert full.size > 11 * 16_000 and media.probe("audio", m4a)["truncated"] is None
    np.testing.assert_array_equal(full[: wave.size], wave)


def test_a_giant_text_is_cut_before_tokenising(tiny_env):
    import torch

    from memf.features.base import build_extractor
    from memf.features.spec import ExtractionSettings, ExtractorSpec

    spec = ExtractorSpec.from_config("bert", tiny_env.extractors())
    ext = build_extractor(spec, ExtractionSettings(device="cpu", workers=1), torch.device("cpu"))
    giant = "连衣裙 sale 女装 " * 2_000_000  # 26 million characters
    started = time.monotonic()
    vec = ext.embed_texts([giant, "口红"], max_chars=1000)
    assert time.monotonic() - started < 10  # tokenising it whole takes minutes and gigabytes
    np.testing.assert_array_equal(vec, ext.embed_texts([giant[:1000], "口红"]))


# --- Decoder failures in plain words ------------------------------------------------------------------------------
def test_decoder_failures_have_plain_reasons(raw, tmp_path):
    clips = pl.read_parquet(raw / "clips.parquet")
    path = dict(zip(clips["clip_id"].to_list(), clips["path"].to_list(), strict=True))
    fs.audio_only_mp4(raw / path["s000-video0"])  # a "video" without a video stream
    shutil.copy(raw / path["s000-video1"], raw / "media/as-audio.mp4")  # an "audio" clip that is a silent video
    edit = clips.with_columns(pl.when(pl.col("clip_id") == "s001-audio0").then(pl.lit("media/as-audio.mp4"))
                              .otherwise(pl.col("path")).alias("path"))
    edit.write_parquet(raw / "clips.parquet")
    data = (raw / path["s002-video0"]).read_bytes()
    (raw / path["s002-video0"]).write_bytes(data[: len(data) // 2])  # cut short
    (raw / path["s003-video0"]).write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)  # header, nothing else
    validate(raw, tmp_path / "out")
    reasons = {k: v.rsplit(": ", 1)[-1] if "MediaError" in v else v for k, v in rows_of(tmp_path / "out", "excluded").items()}
    assert reasons[("clip", "s000-video0")] == "no video stream"
    assert reasons[("clip", "s001-audio0")] == "no audio stream"
    assert reasons[("clip", "s002-video0")].startswith("truncated MP4 (box 'mdat' declares")
    assert reasons[("clip", "s003-video0")] == "corrupt MP4 (no valid box at byte 24)"
    assert not any("Check failed" in r or "st_nb" in r for r in rows_of(tmp_path / "out", "excluded").values())


# --- A full disk and a corrupt table -------------------------------------------------------------------------------
def half_written(where_arg: int):
    """A writer that fills half a file and then finds the disk full."""
    def write(*args, **kwargs):
        Path(args[where_arg]).write_bytes(b"PAR1" + b"\0" * 500)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_disk_full_while_writing_a_table_leaves_the_previous_file(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = tmp_path / "shard-0.parquet"
    write_parquet(target, pa.table({"x": [1, 2, 3]}))
    before = target.read_bytes()
    monkeypatch.setattr(pq, "write_table", half_written(1))
    with pytest.raises(OSError) as info:
        write_parquet(target, pa.table({"x": list(range(1000))}))
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno 28] no space left on device while writing {target}: nothing was written there "
                               "(a previous file is unchanged); free some space and rerun")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["shard-0.parquet"]




def test_disk_full_while_writing_a_shard_or_a_padded_file(tiny_env, tmp_path):
    why = fs.can_mount_tmpfs()
    if why:
        pytest.skip(f"a real full filesystem needs a private tmpfs mount: {why}")
    out = fs.run_on_small_fs(fs.ENOSPC_CHILD, size_kib=256,
                             env={"ENOSPC_DATA": str(tiny_env.data), "ENOSPC_LOG": str(tmp_path / "job.log")})
    assert out.returncode == 0, out.stderr[-3000:]
    result = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert result == {"codes": [1, 1], "intact": True,
                      "files": ["demo.h5", "shard-0.failures.parquet", "shard-0.parquet"]}
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    for line, name in zip(lines, ("shard-0.parquet", "demo.h5"), strict=True):
        assert line.startswith("memf error: [Errno 28] no space left on device while writing ") and name in line
        assert line.endswith(f"free some space and rerun (log: {tmp_path / 'job.log'})")


@pytest.mark.parametrize("damage", ["footer", "magic", "pages"])
def test_a_corrupt_parquet_table_is_a_one_line_contract_error(raw, tmp_path, damage):
    path = raw / "items.parquet"
    data = bytearray(path.read_bytes())
    if damage == "footer":  # the footer's metadata overwritten, magic bytes intact
        footer_len = int.from_bytes(data[-8:-4], "little")
        data[-8 - footer_len : -8] = b"\xff" * footer_len
    elif damage == "magic":  # a writer killed before the footer
        data = data[: len(data) // 2]
    else:  # the footer is fine, a data page is not
        data[8:200] = b"\xff" * 192
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        validate(raw, tmp_path / "out")
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable Parquet file (") and "\n" not in message
    assert not (tmp_path / "out").exists()


# --- The workflow: one-line errors, replanning, the lock -----------------------------------------------------------
def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Snakemake in ``workdir`` (its own Snakefile unless ``-s`` is given)."""
    snakefile = () if "-s" in args else ("-s", str(workdir / "Snakefile"))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--directory", str(workdir), *snakefile, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**ENV, **(env or {})})


def test_a_contract_error_is_one_line_without_traceback_unless_debugging(tmp_path):
    write_dataset(tmp_path / "mydata", n_streams=4)
    items = pl.read_parquet(tmp_path / "mydata" / "items.parquet").rename({"price": "listPrice"})
    items.write_parquet(tmp_path / "mydata" / "items.parquet")
    (tmp_path / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\n")
    args = ("-s", str(ROOT / "Snakefile"), "--configfile", str(tmp_path / "cfg.yaml"), "--until", "validate")
    out = snakemake(tmp_path, *args)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    errors = [line for line in text.splitlines() if "memf error" in line]
    assert errors == ["memf error: mydata/items.parquet: missing column 'price' (expected float; "
                      "found float columns not yet used: listPrice); if the commodity's numeric column has another "
                      "name, list that name under columns.commodity.numeric instead (log: logs/data/validate.log)"]
    assert "Traceback" not in text
    assert "Traceback" in (tmp_path / "logs/data/validate.log").read_text()  # the full story stays in the job's log
    debug = snakemake(tmp_path, *args, env={"MEMF_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stdout + debug.stderr


@pytest.fixture
def numeric_workdir(tiny_env, tmp_path):
    """A workflow folder with validated data and the numeric features extracted (one shard): no models needed."""
    import test_features_workflow as fw

    work = fw.workflow_dir(tiny_env, tmp_path, fw.CONFIG)
    # The default target of the workflow, restricted to the numeric features.
    default = 'input: features_targets() + [padded_path("demo")]'
    snakefile = (work / "Snakefile").read_text()
    assert default in snakefile
    (work / "Snakefile").write_text(snakefile.replace(default, 'input: [t for t in features_targets() if "/numeric/" in t]'))
    out = snakemake(work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work


NUMERIC_MANIFEST = "results/features/numeric/log-standard/manifest.json"
NUMERIC_SHARD = "results/features/numeric/log-standard/shard-0.parquet"


def planned(work: Path, *targets: str) -> set[str]:
    import re

    out = snakemake(work, "--dry-run", *targets)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    return set() if "Nothing to be done" in text else {
        o for line in re.findall(r"^\s+output: (.*)$", text, flags=re.M) for o in line.split(", ")}


def set_config(work: Path, **sections) -> None:
    import yaml

    config = yaml.safe_load((work / "config.yaml").read_text())
    config.update(sections)
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_numeric_policy_change_replans_the_numeric_shards_only(numeric_workdir):
    work = numeric_workdir
    assert planned(work) == set()
    # A bound no numeric feature depends on: nothing to do.
    set_config(work, limits={"max_text_chars": 50})
    assert planned(work) == set()
    set_config(work, numeric={"default": "log1p", "columns": {"anchor": {"score": "signed_log1p"}}})
    assert planned(work) == {NUMERIC_SHARD, NUMERIC_SHARD.replace(".parquet", ".failures.parquet"), NUMERIC_MANIFEST}


def test_a_shard_deleted_by_hand_is_replanned_and_rebuilt_identically(numeric_workdir):
    work = numeric_workdir
    before = (work / NUMERIC_SHARD).read_bytes()
    (work / NUMERIC_SHARD).unlink()
    assert planned(work) == {NUMERIC_SHARD, NUMERIC_SHARD.replace(".parquet", ".failures.parquet"), NUMERIC_MANIFEST}
    out = snakemake(work)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (work / NUMERIC_SHARD).read_bytes() == before


def test_a_second_snakemake_on_the_same_folder_is_refused_by_the_lock(tiny_env, tmp_path):
    import test_features_workflow as fw

    work = fw.workflow_dir(tiny_env, tmp_path, fw.CONFIG)
    # The first run also builds a rule that waits for a file the test writes once the second run has returned, so
    # that it certainly holds the lock meanwhile, however slowly a loaded machine starts the second.
    hold = "timeout 600 sh -c 'until [ -e release ]; do sleep 0.2; done' && touch {output}"
    (work / "Snakefile").write_text((work / "Snakefile").read_text()
                                    + f'rule hold:\n    output: "hold.txt"\n    shell: "{hold}"\n')
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(work), "-s", str(work / "Snakefile"),
           NUMERIC_MANIFEST, "hold.txt"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    locks = work / ".snakemake" / "locks"
    try:
        assert wait_until(lambda: locks.is_dir() and any(locks.iterdir()), 60), "the first run never locked the folder"
        second = snakemake(work, NUMERIC_MANIFEST)
    finally:
        (work / "release").touch()
    first_out, _ = first.communicate(timeout=300)
    assert second.returncode != 0
    # Refused by the lock, or (when it arrives while the first run is writing a file it needs) by Snakemake's marker
    # of that file as incomplete: either way it starts nothing.
    said = second.stdout + second.stderr
    assert "cannot be locked" in said or "Incomplete files" in said, said[-2000:]
    assert "rule extract_numeric" not in said  # it started no job
    assert first.returncode == 0, first_out[-3000:]
    log = (work / "logs/features/numeric/log-standard/shard-0.log").read_text()
    assert log.count("failures in") == 1  # the shard was written once
