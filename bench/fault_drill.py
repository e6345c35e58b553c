"""Fault drill (issue #14): kill, preempt, starve and feed hostile input to the pipeline; print what happened.

    python bench/fault_drill.py [--workdir DIR] [--keep] [--no-workflow]

Function cases call memf directly on small generated datasets (seconds each). Workflow cases drive the Snakemake CLI
against the tiny configuration (tests/configs/tiny.yaml, with 4 s audio clips so that decoded clips go through the
spool folder, and a few simulated defects): a full run whose audio extraction job is SIGKILLed half-way, its rerun,
dry-run plans after a policy change and after a shard is deleted, a second run on a locked folder, and a SIGTERM to
the whole run (a SLURM preemption) followed by a rerun. About 10 minutes on 2 CPU cores.

Prints one row per case, ``case | expected | observed | pass``, and a count; exits 1 if any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import fault_support as fs  # noqa: E402

ROWS: list[tuple[str, str, str, bool]] = []
DRILL_OVERLAY = """\
# Fault drill overlay on tests/configs/tiny.yaml: audio clips of 4 s (decoded, 256 kB each: over the pipe limit, so
# they go through the spool folder), and a few simulated defects for validation to name.
simulator:
  audio: {seconds: 4.0, sample_rates: [8000, 16000]}
  defects: {missing_modality: 0.0, corrupt_image: 0.0, truncated_video: 0.03, corrupt_audio: 0.0, no_audio_stream: 0.03}
"""


WANTED: list[str] | None = None


def case(name: str, expected: str, run: Callable[[], tuple[bool, str]]) -> bool:
    if WANTED is not None and not any(w in name.lower() for w in WANTED):
        return True
    started = time.monotonic()
    print(f"[drill] {name} ...", file=sys.stderr, flush=True)
    try:
        ok, observed = run()
    except Exception as exc:  # a case that crashes is a failed case with the error as what was observed
        ok, observed = False, f"drill error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        traceback.print_exc(file=sys.stderr)
    ROWS.append((name, expected, observed, bool(ok)))
    print(f"[drill] {name}: {'pass' if ok else 'FAIL'} ({time.monotonic() - started:.1f} s): {observed}",
          file=sys.stderr, flush=True)
    return bool(ok)


# --- Function cases ---------------------------------------------------------------------------------------------------
def small_dataset(base: Path, name: str) -> Path:
    from fakedata import write_dataset

    return write_dataset(base / name, n_streams=6)


def validate(raw: Path, out: Path, **kwargs):
    from memf.data.contract import DEFAULT_COLUMNS
    from memf.data.validate import validate_dataset

    return validate_dataset(raw, out, columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=1.0, split_seed=0,
                            folds=2, probe_workers=1, probe_timeout_s=60, **kwargs)


def reasons(out: Path, table: str = "excluded") -> dict[tuple[str, str], str]:
    return {(r["level"], r["object_id"]): r["reason"] for r in pl.read_parquet(out / f"{table}.parquet").iter_rows(named=True)}


def edit(raw: Path, table: str, fn) -> None:
    fn(pl.read_parquet(raw / f"{table}.parquet")).write_parquet(raw / f"{table}.parquet")


def numeric_policy(base: Path) -> tuple[bool, str]:
    from memf.data.contract import DEFAULT_COLUMNS, numeric_accepts

    raw = small_dataset(base, "numeric")
    edit(raw, "anchors", lambda df: df.with_columns(
        pl.when(pl.col("anchor_id") == "a1").then(-2.5).otherwise(pl.col("score")).alias("score")))
    edit(raw, "items", lambda df: df.with_columns(
        pl.when(pl.col("item_id") == "s000-i1").then(-5.0).otherwise(pl.col("price")).alias("price")))
    validate(raw, base / "numeric-out")
    got = reasons(base / "numeric-out")
    score_kept = ("anchor", "a1") not in got and -2.5 in pl.read_parquet(base / "numeric-out/anchors.parquet")["score"].to_list()
    price = got.get(("item", "s000-i1"), "kept")
    signed = {"default": "log1p", "columns": {"anchor": {"score": "identity"}, "commodity": {"price": "signed_log1p"}}}
    validate(raw, base / "numeric-signed", numeric_accepts=numeric_accepts(signed, DEFAULT_COLUMNS))
    signed_kept = ("item", "s000-i1") not in reasons(base / "numeric-signed")
    ok = score_kept and price.startswith("commodity numeric 'price' is negative") and signed_kept
    return ok, (f"score -2.5 {'kept' if score_kept else 'dropped'}; price -5 -> '{price}'; with price signed_log1p: "
                f"{'kept' if signed_kept else 'dropped'}")


def oversized_png(base: Path) -> tuple[bool, str]:
    raw = small_dataset(base, "png")
    victim = pl.read_parquet(raw / "items.parquet").filter(pl.col("item_id") == "s001-i0")["image"][0]
    fs.bomb_png(raw / victim, side=30_000)
    result = fs.validate_measured(raw, base / "png-out")
    reason = reasons(base / "png-out").get(("item", "s001-i0"), "kept")
    # The probing worker's peak counts the validating process's pages it was forked with; decoding the PNG would add
    # 2.7 GB to it.
    ok = ("over limits.max_image_pixels = 89,478,485 (refused before decoding)" in reason
          and result["workers_peak_mib"] < result["peak_mib"] + 100)
    short = reason.split(": ", 2)[-1].split(": ", 1)[-1]
    return ok, (f"30,000 x 30,000 PNG ({(raw / victim).stat().st_size // 1024} KiB): '{short}'; peak of the probing "
                f"worker {result['workers_peak_mib']:.0f} MiB, of validation {result['peak_mib']:.0f} MiB")


def long_video(base: Path) -> tuple[bool, str]:
    from memf.data import media

    clip = fs.long_mp4(base / "hour.mp4", seconds=3600, fps=1, bright_after=600)
    frames = media.read_video(clip, 16)
    info = media.probe("video", clip)
    ok = frames.max() < 40 and (info["truncated"] or "").startswith("video clip of 3600 frames (3600.0 s) read up to frame 600")
    return ok, f"16 frames sampled, brightest {int(frames.max())} (white after 600 s); recorded: '{info['truncated']}'"


def long_audio(base: Path) -> tuple[bool, str]:
    wav = fs.sparse_wav(base / "ten-hours.wav", seconds=10 * 3600)
    result = fs.run_measured(f"from memf.data.media import probe\nRESULT = probe('audio', {str(wav)!r})\n")
    ok = result["seconds"] == 600.0 and result["truncated"] and result["peak_mib"] < 250
    return ok, (f"10 h WAV ({wav.stat().st_size / 2**30:.2f} GiB): {result['seconds']:.0f} s decoded, peak "
                f"{result['peak_mib']:.0f} MiB; recorded: '{result['truncated']}'")


def giant_text(base: Path) -> tuple[bool, str]:
    import torch

    from memf.features.base import build_extractor
    from memf.features.spec import ExtractionSettings, ExtractorSpec
    from memf.features.tiny import build_tiny_model

    model = build_tiny_model("bert", base / "bert", settings={"vocab_size": 200},
                             texts=["连衣裙 sale 女装 口红", "brand shop 新款"] * 20, seed=0)
    ext = build_extractor(ExtractorSpec("bert", "transformers-text", str(model), {"max_length": 64}),
                          ExtractionSettings(device="cpu", workers=1), torch.device("cpu"))
    giant = "连衣裙 sale 女装 " * 5_000_000  # 60 million characters
    before = fs.rss_mib()
    started = time.monotonic()
    vec = ext.embed_texts([giant, "口红"], max_chars=10_000)
    took, grown = time.monotonic() - started, fs.rss_mib() - before
    same = np.array_equal(vec, ext.embed_texts([giant[:10_000], "口红"]))
    return same and took < 10, (f"{len(giant):,} characters cut to limits.max_text_chars = 10,000: embedded in "
                                f"{took:.2f} s, RSS +{grown:.0f} MiB, same vector as its first 10,000 characters: {same}")


def decoder_reasons(base: Path) -> tuple[bool, str]:
    raw = small_dataset(base, "decoders")
    clips = pl.read_parquet(raw / "clips.parquet")
    path = dict(zip(clips["clip_id"].to_list(), clips["path"].to_list(), strict=True))
    fs.audio_only_mp4(raw / path["s000-video0"])
    shutil.copy(raw / path["s000-video1"], raw / "media/as-audio.mp4")
    clips.with_columns(pl.when(pl.col("clip_id") == "s001-audio0").then(pl.lit("media/as-audio.mp4"))
                       .otherwise(pl.col("path")).alias("path")).write_parquet(raw / "clips.parquet")
    data = (raw / path["s002-video0"]).read_bytes()
    (raw / path["s002-video0"]).write_bytes(data[: len(data) // 2])
    validate(raw, base / "decoders-out")
    got = {k[1]: v.rsplit(": ", 1)[-1] for k, v in reasons(base / "decoders-out").items() if k[0] == "clip"}
    want = {"s000-video0": "no video stream", "s001-audio0": "no audio stream"}
    ok = all(got.get(k) == v for k, v in want.items()) and got.get("s002-video0", "").startswith("truncated MP4")
    ok = ok and not any("Check failed" in v for v in got.values())
    return ok, "; ".join(f"{k}: {got.get(k)}" for k in ("s000-video0", "s001-audio0", "s002-video0"))


def missing_modalities(base: Path) -> tuple[bool, str]:
    raw = small_dataset(base, "modalities")
    edit(raw, "clips", lambda df: df.filter(pl.col("stream_id") != "s001"))
    edit(raw, "items", lambda df: df.filter(pl.col("stream_id") != "s001"))
    validate(raw, base / "modalities-out")
    reason = reasons(base / "modalities-out").get(("stream", "s001"), "kept")
    return reason == "no valid commodity, video clip or audio clip (missing modalities)", f"'{reason}'"


def snakemake(workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 3600,
              cores: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores), *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env={**ENV, **(env or {})})


def memf_lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if "memf error" in line]


def contract_error_cli(base: Path) -> tuple[bool, str]:
    work = base / "cli"
    work.mkdir()
    small_dataset(work, "mydata")
    edit(work / "mydata", "items", lambda df: df.rename({"price": "listPrice"}))
    (work / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\n")
    args = ("--configfile", str(work / "cfg.yaml"), "--until", "validate")
    out = snakemake(work, *args, cores=1)
    lines = memf_lines(out)
    debug = snakemake(work, *args, env={"MEMF_DEBUG": "1"}, cores=1)
    tb, tb_debug = "Traceback" in out.stdout + out.stderr, "Traceback" in debug.stdout + debug.stderr
    ok = (out.returncode != 0 and len(lines) == 1 and "missing column 'price'" in lines[0]
          and "columns.commodity.numeric" in lines[0] and "found float columns not yet used: listPrice" in lines[0]
          and not tb and tb_debug)
    first = lines[0] if lines else ""
    return ok, f"exit {out.returncode}, {len(lines)} line: '{first}'; traceback: {tb} (MEMF_DEBUG=1: {tb_debug})"


def corrupt_parquet_cli(base: Path) -> tuple[bool, str]:
    work = base / "cli"
    edit(work / "mydata", "items", lambda df: df.rename({"listPrice": "price"}))
    path = work / "mydata" / "items.parquet"
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[-8 - footer : -8] = b"\xff" * footer
    path.write_bytes(bytes(data))
    out = snakemake(work, "--configfile", str(work / "cfg.yaml"), "--until", "validate", cores=1)
    lines = memf_lines(out)
    ok = (out.returncode != 0 and len(lines) == 1 and "mydata/items.parquet: not a readable Parquet file" in lines[0]
          and "Traceback" not in out.stdout + out.stderr and not (work / "results/data/streams.parquet").exists())
    return ok, f"exit {out.returncode}: '{lines[0][:160] if lines else ''}...'; no output written"




def disk_full(base: Path) -> tuple[bool, str]:
    why = fs.can_mount_tmpfs()
    if why:
        return False, f"no private tmpfs to fill on this machine ({why}); tests/test_faults.py injects ENOSPC instead"
    from fixture_data import write_fixture_dataset

    write_fixture_dataset(base / "enospc-raw", base / "enospc-data")
    env_out = fs.run_on_small_fs(fs.ENOSPC_CHILD, size_kib=256,
                                 env={"ENOSPC_DATA": str(base / "enospc-data"), "ENOSPC_LOG": str(base / "enospc.log")})
    if env_out.returncode != 0:
        return False, f"child failed: {env_out.stderr[-300:]}"
    result = json.loads(env_out.stdout.strip().splitlines()[-1])
    lines = [ln for ln in env_out.stderr.splitlines() if ln.strip()]
    ok = (result["codes"] == [1, 1] and result["intact"] and len(lines) == 2
          and all("no space left on device while writing" in ln for ln in lines) and "Traceback" not in env_out.stderr)
    return ok, (f"shard job and padded-file job on a full 256 KiB tmpfs: exit {result['codes']}, one line each "
                f"('{lines[0][:90]}...'), previous files intact: {result['intact']}, left: {', '.join(result['files'])}")


# --- A user's first hour with their own data (issue 23): through the CLI, on dry runs and a validation --------------
SHIPPED = Path(ROOT / "config.yaml")
COPIED = ("memf", "mfb", "vtfsa", "cmmt", "hgb", "hgb-set")


def first_hour_dir(base: Path, config: dict) -> Path:
    import yaml

    work = base / "first-hour"
    work.mkdir(exist_ok=True)
    shipped = yaml.safe_load(SHIPPED.read_text())
    config = {"experiments": {e: shipped["experiments"][e] for e in COPIED}, **config}
    (work / "cfg.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def prefixed(out: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith(prefix)]


def own_extractor_cli(base: Path) -> tuple[bool, str]:
    mine = {"kind": "torchvision", "model": "resnet18", "options": {"weights": "none", "resize": 48, "crop": 48}}
    work = first_hour_dir(base, {"extractors": {"resnet18": mine}})
    out = snakemake(work, "-n", "--configfile", "cfg.yaml")
    errors = prefixed(out, "memf config error")
    ok = out.returncode == 0 and not errors and "results/features/text/bert-tiny/manifest.json" in out.stdout
    return ok, (f"exit {out.returncode}, {len(errors)} config errors; the default text, video, audio and numeric "
                f"extractors planned: {ok}")


def copied_experiments_cli(base: Path) -> tuple[bool, str]:
    out = snakemake(first_hour_dir(base, {}), "-n", "--configfile", "cfg.yaml")
    notes = prefixed(out, "memf config note")
    table10 = "results/tables/table10.csv" in out.stdout
    ok = out.returncode == 0 and not notes and not table10 and "results/tables/table9.csv" in out.stdout
    return ok, f"exit {out.returncode}, {len(notes)} note lines; Table 10 planned: {table10}"


def model_typo_cli(base: Path) -> tuple[bool, str]:
    out = snakemake(first_hour_dir(base, {"model": {"widht": 16}}), "-n", "--configfile", "cfg.yaml")
    errors = prefixed(out, "memf config error")
    ok = out.returncode != 0 and len(errors) == 1 and "config key 'model.widht'" in errors[0]
    return ok, f"exit {out.returncode}, {len(errors)} line: '{errors[0][:110] if errors else ''}...'"


def refused_bundle_cli(base: Path) -> tuple[bool, str]:
    out = snakemake(first_hour_dir(base, {}), "-n", "results/bundles/hgb/bundle.json", "--configfile", "cfg.yaml")
    errors = prefixed(out, "memf error")
    text = out.stdout + out.stderr
    ok = (out.returncode != 0 and len(errors) == 1 and "reference model" in errors[0]
          and "MissingRuleException" not in text)
    return ok, f"exit {out.returncode}: '{errors[0] if errors else ''}'"


def time_estimate_cli(base: Path) -> tuple[bool, str]:
    work = base / "estimate"
    work.mkdir(exist_ok=True)
    out = snakemake(work, "-n")  # the shipped demo
    lines = prefixed(out, "memf time")
    ok = out.returncode == 0 and len(lines) == 1 and "of CPU time, about" in lines[0] and "on 2 cores" in lines[0]
    return ok, f"'{lines[0] if lines else ''}'"


def missing_media_cli(base: Path) -> tuple[bool, str]:
    work = base / "media-cli"
    work.mkdir()
    raw = small_dataset(work, "mydata")
    edit(raw, "clips", lambda df: df.with_columns(
        pl.when(pl.col("clip_id") == "s000-video0").then(pl.lit("media/gone.mp4")).otherwise(pl.col("path"))
        .alias("path")))
    (raw / "media/s001-i0.png").unlink()
    (raw / "media/s002-video1.mp4").write_text("not a video at all\n")
    (work / "cfg.yaml").write_text("dataset: {root: mydata, simulate: false}\nsplit: {folds: 2}\n")
    out = snakemake(work, "--configfile", "cfg.yaml", "--until", "validate")
    console = out.stdout + out.stderr
    leaked = [ln for ln in console.splitlines() if "video_reader.cc" in ln or "moov atom" in ln]
    logged = "video_reader.cc" in (work / "logs/data/validate.log").read_text()
    got = {r["object_id"]: r["reason"] for r in pl.read_csv(work / "results/data/excluded.csv").iter_rows(named=True)}
    ok = (out.returncode == 0 and not leaked and logged
          and got.get("s000-video0", "").startswith("video file not found")
          and got.get("s001-i0", "").startswith("image file not found"))
    return ok, (f"decoder lines on the console: {len(leaked)}, in the job's log: {logged}; s000-video0: "
                f"'{got.get('s000-video0')}'; s001-i0: '{got.get('s001-i0')}'")


def borderline_verdicts(base: Path) -> tuple[bool, str]:
    from memf.report.bootstrap import VERDICT_TOLERANCE, Interval, verdict

    # Gradient boosting on mean-pooled features against MEMF: the README's run and the same run on another machine.
    here, there = Interval(0.035, -0.002, 0.073), Interval(0.038, 0.0004, 0.077)
    got = verdict(here, True), verdict(there, True)
    return got == ("borderline", "borderline"), (f"[-0.002, +0.073] and [+0.000, +0.077] with tolerance "
                                                 f"{VERDICT_TOLERANCE}: {got[0]}, {got[1]}")


# --- Workflow cases ---------------------------------------------------------------------------------------------------
def fds_under(pid: int, folder: Path) -> bool:
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith(str(folder)) for link in links)


def find_job(workdir: Path, modality: str) -> int | None:
    """The pid of a running extraction job of ``modality`` (the process holding its log open, with workers)."""
    logs = workdir / "logs" / "features" / modality
    for entry in os.listdir("/proc"):
        if entry.isdigit() and "extract.py" in fs.cmdline(int(entry)) and fds_under(int(entry), logs):
            parent = fs._stat(int(entry))
            if parent and "extract.py" not in fs.cmdline(parent[1]):  # the job itself, not one of its workers
                return int(entry)
    return None


def start(workdir: Path, *args: str, cores: int = 2) -> tuple[subprocess.Popen[str], Path]:
    """Snakemake in the background, in its own session (so that it can be signalled as a whole); its console goes to
    the returned file."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", str(cores), *args]
    out = workdir / f"drill-{time.monotonic_ns()}.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, text=True, env=ENV,
                                start_new_session=True)
    return proc, out


def catch_job(proc: subprocess.Popen[str], workdir: Path, modality: str, timeout: float = 1800,
              spooled: float = 0.0) -> tuple[int, list[int]] | None:
    """Wait for an extraction job of ``modality`` with its workers running (a mid-extraction moment); with
    ``spooled`` > 0, wait up to that many more seconds for a moment when decoded inputs wait in its spool folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        pid = find_job(workdir, modality)
        if pid is not None:
            helpers = fs.children(pid)
            if len(helpers) >= 3:  # two decoding workers and the spool janitor
                until = time.monotonic() + spooled
                while time.monotonic() < until and len(fs.children(pid)) >= 3:
                    if any(any(p.iterdir()) for p in fs.spool_folders(pid) if p.is_dir()):
                        break
                    time.sleep(0.002)
                return pid, fs.children(pid) if len(fs.children(pid)) >= 3 else helpers
        time.sleep(0.02)
    return None


class Workflow:
    """The shared tiny workflow folder and what the cases learn about it."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "tiny"
        self.dir.mkdir(exist_ok=True)
        (self.dir / "drill.yaml").write_text(DRILL_OVERLAY)
        self.config = ("--configfile", str(ROOT / "tests/configs/tiny.yaml"), str(self.dir / "drill.yaml"))
        self.killed: tuple[int, list[int]] | None = None

    def sigkill(self) -> tuple[bool, str]:
        proc, _ = start(self.dir, *self.config)
        caught = catch_job(proc, self.dir, "audio", spooled=3.0)
        if caught is None:
            proc.wait()
            return False, "no audio extraction job was caught running"
        pid, helpers = caught
        spooled = sum(len(list(p.iterdir())) for p in fs.spool_folders(pid))
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        gone = fs.wait_until(lambda: not any(fs.alive(h) for h in helpers), 10)
        gone_s = time.monotonic() - killed_at
        no_spool = fs.wait_until(lambda: not fs.spool_folders(pid), 10)
        rc = proc.wait(timeout=1800)
        self.killed = (pid, helpers)
        ok = gone and no_spool and gone_s < 5 and rc != 0
        return ok, (f"job {pid} killed with {len(helpers)} helpers and {spooled} spooled files: helpers gone after "
                    f"{gone_s:.2f} s, spool folders left: {len(fs.spool_folders(pid))}; snakemake exit {rc}")

    def rerun(self) -> tuple[bool, str]:
        out = snakemake(self.dir, *self.config)
        pid = self.killed[0] if self.killed else -1
        stale = [p for p in fs.spool_folders() if re.match(r"memf-isolate-\d+-\d+-", p.name)
                 and not fs.alive(int(p.name.split("-")[2]))]
        ok = out.returncode == 0 and not fs.spool_folders(pid) and not stale
        tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or [""]
        return ok, (f"exit {out.returncode} ('{tail[0][:60]}'); spool folders of the killed job: "
                    f"{len(fs.spool_folders(pid))}; stale spool folders of dead processes: {len(stale)}")

    def plan(self, *extra: str) -> tuple[int, set[str], set[str]]:
        """Exit status, planned rules and planned outputs of a dry run (``extra``: more config files)."""
        out = snakemake(self.dir, "-n", "--configfile", *self.config[1:], *extra)
        text = out.stdout + out.stderr
        if "Nothing to be done" in text:
            return out.returncode, set(), set()
        rules = set(re.findall(r"^\s*(?:local)?rule (\w+):", text, flags=re.M))
        outputs = {o for line in re.findall(r"^\s+output: (.*)$", text, flags=re.M) for o in line.split(", ")}
        return out.returncode, rules, outputs

    def up_to_date(self) -> tuple[bool, str]:
        rc, rules, _ = self.plan()
        return rc == 0 and not rules, f"dry run plans {sorted(rules) or 'nothing'}"

    def policy_change(self) -> tuple[bool, str]:
        change = self.dir / "policy.yaml"
        change.write_text("numeric: {columns: {anchor: {score: signed_log1p}}}\n")
        rc, rules, _ = self.plan(str(change))
        bad = rules & {"simulate", "validate", "tiny_model", "extract_text", "extract_image", "extract_video",
                       "extract_audio"}
        return rc == 0 and "extract_numeric" in rules and not bad, f"plans {sorted(rules)}"

    def deleted_shard(self) -> tuple[bool, str]:
        shard = self.dir / "results/features/image/resnet18/shard-1.parquet"
        keep = shard.with_name("shard-1.parquet.drill")
        stat = shard.stat()
        shard.rename(keep)
        try:
            rc, rules, outputs = self.plan()
        finally:
            keep.rename(shard)  # put it back as it was, so that the later cases start from a complete folder
            os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        shards = sorted(o for o in outputs if re.search(r"/shard-\d+\.(parquet|h5)$", o))
        ok = rc == 0 and shards == ["results/features/image/resnet18/shard-1.parquet"]
        return ok, f"extraction planned: {shards}; rules {sorted(rules)}"

    def lock(self) -> tuple[bool, str]:
        # An image extractor of the tiny configuration; --forcerun makes the first run extract it again.
        target = "results/features/image/resnet50/manifest.json"
        log = self.dir / "logs/features/image/resnet50/shard-0.log"
        # Targets before the options: --configfile and --forcerun take every word that follows them.
        first, _ = start(self.dir, target, *self.config, "--forcerun", "extract_image")
        locks = self.dir / ".snakemake/locks"
        held = fs.wait_until(lambda: locks.is_dir() and any(locks.iterdir()), 120)
        second = snakemake(self.dir, target, *self.config, "--forcerun", "extract_image")
        rc = first.wait(timeout=1800)
        runs = log.read_text().count("failures in") if log.is_file() else 0  # a job's log is emptied before it runs
        text = second.stdout + second.stderr
        refused = second.returncode != 0 and ("cannot be locked" in text or "Incomplete files" in text)
        jobs = "rule extract_image" in text
        ok = held and refused and not jobs and rc == 0 and runs == 1
        return ok, (f"second run: exit {second.returncode}, refused by the lock or the incomplete marker: {refused}, "
                    f"jobs started: {jobs}; first run: exit {rc}; shard-0 written {runs} time(s)")

    def sigterm(self) -> tuple[bool, str]:
        shard = self.dir / "results/features/audio/wav2vec2-tiny/shard-0.h5"
        before = shard.read_bytes()
        proc, console = start(self.dir, str(shard.relative_to(self.dir)), "--force", *self.config)
        caught = catch_job(proc, self.dir, "audio", timeout=600)
        if caught is None:
            proc.wait()
            return False, "no audio extraction job was caught running"
        pid, helpers = caught
        os.killpg(proc.pid, signal.SIGTERM)  # what SLURM does on preemption: every process of the job
        sent = time.monotonic()
        job_gone = fs.wait_until(lambda: not fs.alive(pid), 10)
        job_s = time.monotonic() - sent
        helpers_gone = fs.wait_until(lambda: not any(fs.alive(h) for h in helpers), 10)
        rc = proc.wait(timeout=600)
        line = [ln for ln in console.read_text().splitlines() if "memf error" in ln]
        no_spool = not fs.spool_folders(pid) and not shard.exists()
        again = snakemake(self.dir, str(shard.relative_to(self.dir)), *self.config)
        same = shard.exists() and shard.read_bytes() == before
        ok = job_gone and job_s < 5 and helpers_gone and no_spool and again.returncode == 0 and same and line
        return ok, (f"job exited {job_s:.2f} s after SIGTERM to the run ('{line[0] if line else ''}'), helpers gone: "
                    f"{helpers_gone}, no spool folder and no partial shard: {no_spool}; snakemake exit {rc}; rerun exit "
                    f"{again.returncode}, shard byte-identical to the one before: {same}")

    def plain_reasons(self) -> tuple[bool, str]:
        excluded = pl.read_csv(self.dir / "results/data/excluded.csv")
        clips = excluded.filter(pl.col("level") == "clip")["reason"].to_list()
        kinds = {r.rsplit(": ", 1)[-1].split(" (")[0] for r in clips if "does not decode" in r}
        ok = "no audio stream" in kinds and "truncated MP4" in kinds and not any("Check failed" in r for r in clips)
        return ok, f"simulated defects in results/data/excluded.csv: {sorted(kinds)}"


def first_hour_cases(base: Path) -> None:
    """A user's first hour with their own data (issue 23): what stopped or confused the trial's user."""
    case("own extractor (CLI)", "a config defining one extractor keeps the defaults the demo feature set names",
         lambda: own_extractor_cli(base))
    case("copied experiments (CLI)", "no config notes; no Table 10 repeating Table 9",
         lambda: copied_experiments_cli(base))
    case("model: typo (CLI)", "one line naming model.widht, not one per experiment", lambda: model_typo_cli(base))
    case("bundle the config cannot make (CLI)", "one line with the reason, no MissingRuleException",
         lambda: refused_bundle_cli(base))
    case("missing media and decoder output (CLI)", "'file not found' reasons; decord's and FFmpeg's own lines in the "
         "job's log, not on the console", lambda: missing_media_cli(base))
    case("borderline verdict", "the two machines' intervals of the README's flipping verdict both read borderline",
         lambda: borderline_verdicts(base))
    case("time estimate (CLI)", "a dry run of the demo prints its CPU time and the wall time on the cores",
         lambda: time_estimate_cli(base))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="do not remove the temporary folder")
    parser.add_argument("--no-workflow", action="store_true", help="function cases only (a minute)")
    parser.add_argument("--only", help="comma-separated parts of case names to run (the workflow cases after the "
                        "first two expect a complete tiny folder in --workdir)")
    args = parser.parse_args()
    global WANTED
    WANTED = [w.strip().lower() for w in args.only.split(",")] if args.only else None
    base = args.workdir or Path(tempfile.mkdtemp(prefix="memf-drill-"))
    base.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        case("numeric policy", "negative score kept (identity); negative price a recorded drop (log1p); kept when "
             "price is signed_log1p", lambda: numeric_policy(base))
        case("oversized PNG", "recorded drop (limits.max_image_pixels), no memory spike", lambda: oversized_png(base))
        case("hour-long clip", "frames read from the first 600 s only; truncation recorded", lambda: long_video(base))
        case("10-hour WAV", "600 s decoded, peak memory < 250 MiB; truncation recorded", lambda: long_audio(base))
        case("giant text", "cut to limits.max_text_chars before tokenising: fast, same vector as its prefix",
             lambda: giant_text(base))
        case("decoder reasons", "no video stream / no audio stream / truncated MP4, no decord internals",
             lambda: decoder_reasons(base))
        case("missing modalities", "a stream lacking several modalities names every one", lambda: missing_modalities(base))
        case("contract error (CLI)", "one line naming file, column, found, expected and the columns: key; no "
             "traceback unless MEMF_DEBUG=1", lambda: contract_error_cli(base))
        case("corrupt Parquet footer (CLI)", "one line naming the file, no traceback, nothing written",
             lambda: corrupt_parquet_cli(base))
        case("disk full (ENOSPC)", "shard and padded-file writes: one line, exit 1, no partial file, previous files "
             "intact", lambda: disk_full(base))
        first_hour_cases(base)
        if not args.no_workflow:
            wf = Workflow(base)
            case("SIGKILL of an extraction job", "its workers and janitor gone within 5 s; no spool folder left",
                 wf.sigkill)
            case("rerun after SIGKILL", "the tiny DAG completes; no spool folder of the killed job or any dead one",
                 wf.rerun)
            case("defects named by validation", "simulated defects recorded with plain reasons", wf.plain_reasons)
            case("up to date", "a dry run plans nothing", wf.up_to_date)
            case("numeric policy change", "plans extract_numeric and its downstream only (no validate, no other "
                 "extractor)", wf.policy_change)
            case("shard deleted by hand", "a dry run replans exactly that shard (and its downstream)", wf.deleted_shard)
            case("two snakemake runs on one folder", "the second is refused by the lock and starts no job; the first "
                 "completes", wf.lock)
            case("SIGTERM to the whole run (preemption)", "the job exits within 5 s with one line; no worker, spool or "
                 "partial shard; the rerun rebuilds the same bytes", wf.sigterm)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    passed = sum(ok for *_, ok in ROWS)
    if not ROWS:
        print("no case matched --only", file=sys.stderr)
        return 1
    print("| case | expected | observed | pass |")
    print("|---|---|---|---|")
    for name, expected, observed, ok in ROWS:
        cell = observed.replace("|", "/")
        print(f"| {name} | {expected} | {cell} | {'yes' if ok else 'NO'} |")
    print(f"\n{len(ROWS)} cases tried, {passed} passed, {len(ROWS) - passed} failed ({time.monotonic() - started:.0f} s)")
    return 0 if passed == len(ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
