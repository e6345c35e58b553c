"""The feature store: shard round trips, byte-identical reruns, failures recorded not fatal, manifests."""

from __future__ import annotations

import shutil
import time

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch

import memf.features.video as video_module
from features_support import TinyEnv
from memf.core.io import DataError, write_json
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.extract import extract_shard, field_rows
from memf.features.store import ClipShard, read_clip_shard, read_failures, read_field_shard, write_clip_shard, write_manifest

EXTRACTION = {"shards": 2, "device": "cpu", "workers": 2, "timeout_s": 30, "batch_size": 4}


def run(env: TinyEnv, name: str, shard: int, out, extraction=EXTRACTION, data=None):
    fails = out.with_name(out.name.split(".")[0] + ".failures.parquet")
    report = extract_shard(data_dir=data or env.data, extractors=env.extractors(), name=name, columns=DEFAULT_COLUMNS,
                           extraction=extraction, shard=shard, out=out, failures_out=fails)
    return report, fails


def test_text_shard_round_trip(tiny_env, tmp_path):
    report, fails = run(tiny_env, "bert", 0, tmp_path / "shard-0.parquet")
    rows, meta = read_field_shard(tmp_path / "shard-0.parquet")
    ds = load_clean(tiny_env.data).shard(0, 2)
    expected = field_rows(ds, DEFAULT_COLUMNS, "text")
    assert rows.select("stream_id", "entity", "owner_id", "position", "field").equals(
        expected.select("stream_id", "entity", "owner_id", "position", "field"))
    assert report.rows == rows.height and report.failures == 0 and read_failures(fails).height == 0
    assert meta["dim"] == 32 and meta["identity"]["name"] == "bert" and meta["weights_id"].startswith("sha256:")
    assert rows["vector"].dtype == pl.Array(pl.Float32, 32)


def test_clip_shard_round_trip_and_layout_checks(tmp_path):
    shard = ClipShard(vectors=np.arange(12, dtype=np.float32).reshape(3, 4), clip_ids=np.array(["c0", "c1", "c2"], dtype=object),
                      positions=np.array([0, 1, 0], np.int32), stream_ids=np.array(["s0", "s1", "s2"], dtype=object),
                      offsets=np.array([0, 2, 2, 3]), meta={"dim": 4})
    write_clip_shard(tmp_path / "a.h5", shard)
    back = read_clip_shard(tmp_path / "a.h5")
    np.testing.assert_array_equal(back.vectors, shard.vectors)
    assert back.clip_ids.tolist() == ["c0", "c1", "c2"] and back.meta == {"dim": 4}
    assert back.vectors[back.clips_of(1)].shape == (0, 4)
    bad = ClipShard(shard.vectors, shard.clip_ids, shard.positions, shard.stream_ids, np.array([0, 2, 2, 2]), {})
    with pytest.raises(ValueError, match="offsets end at 2, expected 3 clips"):
        write_clip_shard(tmp_path / "b.h5", bad)
    assert not (tmp_path / "b.h5").exists()


@pytest.mark.parametrize(("name", "suffix"), [("rn", "parquet"), ("vm", "h5"), ("num", "parquet")])
def test_rerun_writes_identical_bytes(tiny_env, tmp_path, name, suffix):
    run(tiny_env, name, 1, tmp_path / f"a.{suffix}")
    time.sleep(1.1)  # a timestamp inside the file would now differ
    run(tiny_env, name, 1, tmp_path / f"b.{suffix}")
    assert (tmp_path / f"a.{suffix}").read_bytes() == (tmp_path / f"b.{suffix}").read_bytes()
    assert (tmp_path / "a.failures.parquet").read_bytes() == (tmp_path / "b.failures.parquet").read_bytes()


def slow_or_real_read_video(path, num_frames, size=None):
    if "HANG" in str(path):
        time.sleep(60)
    return REAL_READ_VIDEO(path, num_frames, size)


REAL_READ_VIDEO = video_module.read_video


def test_corrupt_and_hanging_clips_are_recorded_not_fatal(tiny_env, tmp_path, monkeypatch):
    root = tmp_path / "raw"
    shutil.copytree(tiny_env.root, root)
    data = tmp_path / "data"
    shutil.copytree(tiny_env.data, data)
    write_json(data / "dataset.json", {"root": str(root)})
    clips = pl.read_parquet(data / "clips.parquet")
    videos = clips.filter(pl.col("kind") == "video")["path"].to_list()
    (root / videos[0]).write_bytes(b"\x00\x00\x00\x18ftypmp42 this is no video" * 3)
    (root / videos[1]).rename(root / "clips" / "HANG.mp4")
    hang = pl.when(pl.col("path") == videos[1]).then(pl.lit("clips/HANG.mp4")).otherwise(pl.col("path"))
    clips = clips.with_columns(hang.alias("path"))
    clips.write_parquet(data / "clips.parquet")
    monkeypatch.setattr(video_module, "read_video", slow_or_real_read_video)

    extraction = {**EXTRACTION, "shards": 1, "timeout_s": 3}
    started = time.monotonic()
    report, fails = run(tiny_env, "vm", 0, tmp_path / "shard-0.h5", extraction=extraction, data=data)
    assert time.monotonic() - started < 40
    failures = read_failures(fails).sort("file")
    assert failures["file"].to_list() == sorted([videos[0], "clips/HANG.mp4"])
    reasons = dict(zip(failures["file"].to_list(), failures["reason"].to_list(), strict=True))
    assert reasons["clips/HANG.mp4"] == "timed out after 3 s"
    assert reasons[videos[0]].endswith("corrupt MP4 (no valid box at byte 24)")
    shard = read_clip_shard(tmp_path / "shard-0.h5")
    n_video = len(videos)
    assert report.rows == len(shard.clip_ids) == n_video - 2 and report.failures == 2
    assert set(failures["object_id"].to_list()).isdisjoint(shard.clip_ids.tolist())


def test_decoding_workers_do_not_deadlock_after_parallel_torch_in_the_parent(tiny_env, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.nn.Conv1d(1, 8, 9)(torch.randn(4, 1, 50_000))  # starts the parent's OpenMP pool before the fork
        extraction = {**EXTRACTION, "shards": 1, "timeout_s": 10}
        report, fails = run(tiny_env, "w2v", 0, tmp_path / "shard-0.h5", extraction=extraction)
    finally:
        torch.set_num_threads(threads)
    assert report.failures == 0, read_failures(fails)["reason"].to_list()
    rates = {sf.info(p).samplerate for p in (tiny_env.root / "clips").glob("*.wav")}
    assert rates - {16000}  # some clips really were resampled in the workers


def test_a_failed_job_leaves_no_shard(tiny_env, tmp_path, monkeypatch):
    def boom(self, inputs):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(video_module.VideoMAE, "embed", boom)
    with pytest.raises(RuntimeError, match="model exploded"):
        run(tiny_env, "vm", 0, tmp_path / "shard-0.h5")
    assert list(tmp_path.iterdir()) == []


def test_manifest_gathers_shards_and_refuses_mixed_ones(tiny_env, tmp_path):
    shards, fails = [], []
    for k in range(2):
        _, f = run(tiny_env, "num", k, tmp_path / f"shard-{k}.parquet")
        shards.append(tmp_path / f"shard-{k}.parquet")
        fails.append(f)
    manifest = write_manifest(shards, fails, tmp_path / "manifest.json")
    assert manifest["rows"] == sum(read_field_shard(s)[0].height for s in shards)
    assert manifest["failures"] == 0 and manifest["dimension"] == 1 and manifest["n_shards"] == 2
    assert manifest["settings"] == {} and manifest["transforms"]["commodity.price"] == "log1p"
    assert manifest["transforms"]["anchor.score"] == "identity" and "standardisation" not in manifest
    signed = {"default": "log1p", "columns": {"anchor": {"score": "signed_log1p"}}}
    extract_shard(data_dir=tiny_env.data, extractors=tiny_env.extractors(), name="num", columns=DEFAULT_COLUMNS,
                  extraction=EXTRACTION, shard=1, out=shards[1], failures_out=fails[1], numeric=signed)
    with pytest.raises(DataError, match="transforms .* differs"):
        write_manifest(shards, fails, tmp_path / "manifest2.json")
