"""Ingest, validate and fold: contract errors, recorded drops, and the folds."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fakedata import write_dataset
from memf.core.io import DataError
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.validate import validate_dataset

N = 10


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("raw") / "raw", n_streams=N)


@pytest.fixture
def raw(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "raw"))


def run(raw: Path, out: Path, **overrides):
    kwargs = dict(columns=DEFAULT_COLUMNS, target_offset=1.0, max_drop_fraction=1.0, split_seed=0,
                  folds=5, probe_workers=2, probe_timeout_s=20)
    kwargs.update(overrides)
    return validate_dataset(raw, out, **kwargs)


def edit(raw: Path, table: str, fn) -> None:
    path = raw / f"{table}.parquet"
    fn(pl.read_parquet(path)).write_parquet(path)


def excluded(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "excluded.parquet")


def test_clean_dataset_is_kept_whole_and_folded(raw, tmp_path):
    result = run(raw, tmp_path / "out")
    streams = pl.read_parquet(tmp_path / "out" / "streams.parquet")
    assert result.n_kept == N and excluded(tmp_path / "out").height == 0
    assert sorted(streams["fold"].to_list()) == sorted([k for k in range(5) for _ in range(N // 5)])
    raw_sales = pl.read_parquet(raw / "streams.parquet").sort("stream_id")["sales"].to_numpy()
    np.testing.assert_allclose(streams.sort("stream_id")["target"].to_numpy(), np.log(raw_sales + 1.0))
    assert pl.read_parquet(tmp_path / "out" / "items.parquet").height == 2 * N
    assert pl.read_parquet(tmp_path / "out" / "clips.parquet").height == 4 * N
    summary = pl.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["part"].to_list() == ["fold 0 train + val", "fold 0 test", "fold 1 test", "fold 2 test",
                                         "fold 3 test", "fold 4 test", "all"]
    assert summary.filter(pl.col("part") == "all")["size"][0] == N


def test_folds_are_seeded(raw, tmp_path):
    def split_of(seed: int, name: str) -> dict[str, int]:
        run(raw, tmp_path / name, split_seed=seed)
        return dict(pl.read_parquet(tmp_path / name / "streams.parquet").select("stream_id", "fold").iter_rows())
    assert split_of(0, "a") == split_of(0, "b")
    assert split_of(0, "a") != split_of(1, "c")


@pytest.mark.parametrize(
    ("table", "change", "message"),
    [
        ("items", lambda df: df.drop("price"), "items.parquet: missing column 'price'"),
        ("streams", lambda df: df.with_columns(pl.col("sales").cast(pl.String)), "column 'sales' has type"),
        ("anchors", lambda df: df.with_columns(pl.lit(3).alias("nick")), "column 'nick' has type"),
        ("clips", lambda df: df.with_columns(pl.lit("c0").alias("clip_id")), "duplicate id 'c0'"),
    ],
)
def test_contract_errors_name_file_and_column(raw, tmp_path, table, change, message):
    edit(raw, table, change)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(raw, tmp_path / "out")


def test_missing_table_is_an_error(raw, tmp_path):
    (raw / "clips.parquet").unlink()
    with pytest.raises(DataError, match="missing table 'clips'"):
        run(raw, tmp_path / "out")


def test_bad_values_are_recorded_drops(raw, tmp_path):
    items = pl.read_parquet(raw / "items.parquet")
    clips = pl.read_parquet(raw / "clips.parquet")
    # s000: one corrupt item image (item dropped, stream kept); s001: corrupt room cover (stream dropped);
    # s002: both video clips truncated (clips dropped, then the stream for lacking video); s003: negative price on
    # an item; s004: non-finite duration; s005: a clip path escaping the root; s006: zero sales (kept, target 0).
    (raw / items.filter(pl.col("item_id") == "s000-i0")["image"][0]).write_bytes(b"not a jpeg at all")
    (raw / "media/room1.jpg").write_bytes(b"\xff\xd8\xff garbage")
    for c in ("s002-video0", "s002-video1"):
        path = raw / clips.filter(pl.col("clip_id") == c)["path"][0]
        path.write_bytes(path.read_bytes()[:200])
    edit(raw, "items", lambda df: df.with_columns(
        pl.when(pl.col("item_id") == "s003-i1").then(-5.0).otherwise(pl.col("price")).alias("price")))
    edit(raw, "streams", lambda df: df.with_columns(
        pl.when(pl.col("stream_id") == "s004").then(math.inf).otherwise(pl.col("duration")).alias("duration"),
        pl.when(pl.col("stream_id") == "s006").then(0.0).otherwise(pl.col("sales")).alias("sales")))
    edit(raw, "clips", lambda df: df.with_columns(
        pl.when(pl.col("clip_id") == "s005-audio1").then(pl.lit("../../etc/passwd")).otherwise(pl.col("path"))
        .alias("path")))
    out = tmp_path / "out"
    run(raw, out)
    ex = excluded(out)
    reasons = {(r["level"], r["object_id"]): r["reason"] for r in ex.iter_rows(named=True)}
    assert "image does not decode" in reasons[("item", "s000-i0")]
    assert "image does not decode" in reasons[("stream", "s001")]
    assert "video does not decode" in reasons[("clip", "s002-video0")]
    assert reasons[("stream", "s002")] == "no valid video clip (missing modality)"
    assert reasons[("item", "s003-i1")] == ("commodity numeric 'price' is negative (its numeric transform log1p "
                                            "needs >= 0; see config numeric.columns)")
    assert reasons[("stream", "s004")] == "room numeric 'duration' is not finite"
    assert "escapes the dataset root" in reasons[("clip", "s005-audio1")]
    assert ex.filter(pl.col("object_id") == "s003-i1").row(0, named=True) | {"reason": None} == {
        "level": "item", "stream_id": "s003", "object_id": "s003-i1", "reason": None,
        "file": str(raw / "items.parquet"), "field": "price"}
    assert ex.filter(pl.col("object_id") == "s000-i0")["field"][0] == "image"
    streams = pl.read_parquet(out / "streams.parquet")
    assert set(streams["stream_id"]) == {f"s{i:03d}" for i in range(N)} - {"s001", "s002", "s004"}
    assert streams.filter(pl.col("stream_id") == "s006")["target"][0] == 0.0
    # Nothing disappears: every input object is either kept or has a line in the excluded table.
    for table, level, id_col in (("items", "item", "item_id"), ("clips", "clip", "clip_id")):
        kept = set(pl.read_parquet(out / f"{table}.parquet")[id_col])
        dropped = set(ex.filter(pl.col("level") == level)["object_id"])
        assert kept | dropped == set(pl.read_parquet(raw / f"{table}.parquet")[id_col])
        assert not kept & dropped


def test_zero_sales_without_offset_is_dropped(raw, tmp_path):
    edit(raw, "streams", lambda df: df.with_columns(
        pl.when(pl.col("stream_id") == "s000").then(0.0).otherwise(pl.col("sales") + 1).alias("sales")))
    run(raw, tmp_path / "out", target_offset=0.0)
    ex = excluded(tmp_path / "out")
    assert ex.filter(pl.col("object_id") == "s000")["reason"][0] == "zero sales with target.offset 0 (log undefined)"


def test_bad_anchor_drops_its_streams(raw, tmp_path):
    edit(raw, "anchors", lambda df: df.with_columns(
        pl.when(pl.col("anchor_id") == "a1").then(None).otherwise(pl.col("nick")).alias("nick")))
    run(raw, tmp_path / "out")
    ex = excluded(tmp_path / "out")
    streams_of_a1 = set(pl.read_parquet(raw / "streams.parquet").filter(pl.col("anchor_id") == "a1")["stream_id"])
    dropped = ex.filter(pl.col("level") == "stream")
    assert set(dropped["object_id"]) == streams_of_a1
    assert all(r.startswith("anchor 'a1': anchor text 'nick' is missing") for r in dropped["reason"])


def test_too_many_drops_fail_loudly(raw, tmp_path):
    for p in (raw / "media").glob("room*.jpg"):
        p.write_bytes(b"broken")
    with pytest.raises(DataError, match=r"10 of 10 streams excluded \(100%\).*image does not decode"):
        run(raw, tmp_path / "out", max_drop_fraction=0.5)


def test_numeric_policy_sets_what_each_column_accepts(raw, tmp_path):
    # Default policy: score is identity (any finite value), price is log1p (>= 0).
    edit(raw, "anchors", lambda df: df.with_columns(
        pl.when(pl.col("anchor_id") == "a1").then(-2.5).when(pl.col("anchor_id") == "a2").then(math.nan)
        .otherwise(pl.col("score")).alias("score")))
    edit(raw, "items", lambda df: df.with_columns(
        pl.when(pl.col("item_id") == "s000-i1").then(-5.0).otherwise(pl.col("price")).alias("price")))
    run(raw, tmp_path / "default")
    reasons = {(r["level"], r["object_id"]): r["reason"] for r in excluded(tmp_path / "default").iter_rows(named=True)}
    assert ("anchor", "a1") not in reasons  # a negative score is kept
    assert reasons[("anchor", "a2")] == "anchor numeric 'score' is not finite"  # any transform needs finite values
    assert reasons[("item", "s000-i1")].startswith("commodity numeric 'price' is negative")
    kept = pl.read_parquet(tmp_path / "default" / "anchors.parquet")
    assert kept.filter(pl.col("anchor_id") == "a1")["score"][0] == -2.5
    # With price signed_log1p, a negative price is kept as well.
    from memf.data.contract import numeric_accepts

    policy = {"default": "log1p", "columns": {"anchor": {"score": "identity"}, "commodity": {"price": "signed_log1p"}}}
    run(raw, tmp_path / "signed", numeric_accepts=numeric_accepts(policy, DEFAULT_COLUMNS))
    assert "s000-i1" not in excluded(tmp_path / "signed")["object_id"].to_list()
    assert "s000-i1" in pl.read_parquet(tmp_path / "signed" / "items.parquet")["item_id"].to_list()
    # And with score log1p (the old behaviour), the negative score drops the anchor and its streams.
    strict = {"default": "log1p", "columns": {}}
    run(raw, tmp_path / "strict", numeric_accepts=numeric_accepts(strict, DEFAULT_COLUMNS))
    ex = excluded(tmp_path / "strict")
    assert ex.filter(pl.col("object_id") == "a1")["reason"][0].startswith("anchor numeric 'score' is negative")


def test_numeric_policy_names_are_checked():
    from memf.data.contract import numeric_transforms, unused_numeric_entries

    with pytest.raises(ValueError, match=r"config numeric.columns.anchor.score: transform 'log2'"):
        numeric_transforms({"default": "log1p", "columns": {"anchor": {"score": "log2"}}}, DEFAULT_COLUMNS)
    with pytest.raises(ValueError, match=r"config numeric.default: transform 'none'"):
        numeric_transforms({"default": "none"}, DEFAULT_COLUMNS)
    # An entry for a column the mapping does not have is ignored (the defaults can stay when columns are remapped).
    mapping = {"anchor": {"text": [], "image": [], "numeric": ["fans"]}, "commodity": {"text": [], "image": [], "numeric": []},
               "room": {"text": [], "image": [], "numeric": ["length"]}}
    assert numeric_transforms(None, mapping) == {"anchor": {"fans": "log1p"}, "commodity": {}, "room": {"length": "log1p"}}
    assert unused_numeric_entries(None, mapping) == ["numeric.columns.anchor.score", "numeric.columns.room.duration"]


def test_a_stream_missing_several_modalities_lists_every_one(raw, tmp_path):
    edit(raw, "clips", lambda df: df.filter(pl.col("stream_id") != "s001"))
    edit(raw, "items", lambda df: df.filter(pl.col("stream_id") != "s002"))
    edit(raw, "clips", lambda df: df.filter(~((pl.col("stream_id") == "s002") & (pl.col("kind") == "audio"))))
    run(raw, tmp_path / "out")
    streams = excluded(tmp_path / "out").filter(pl.col("level") == "stream")
    reasons = {r["object_id"]: r["reason"] for r in streams.iter_rows(named=True)}
    assert reasons["s001"] == "no valid video clip or audio clip (missing modalities)"
    assert reasons["s002"] == "no valid commodity or audio clip (missing modalities)"


def test_a_missing_attribute_column_names_the_mapping_key_that_fixes_it(raw, tmp_path):
    edit(raw, "items", lambda df: df.rename({"price": "listPrice"}))
    with pytest.raises(DataError) as info:
        run(raw, tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message
    assert message == (f"{raw / 'items.parquet'}: missing column 'price' (expected float; found float columns not yet "
                       "used: listPrice); if the commodity's numeric column has another name, list that name under "
                       "columns.commodity.numeric instead")
    # A fixed column has no mapping: no hint.
    edit(raw, "items", lambda df: df.rename({"listPrice": "price", "position": "rank"}))
    with pytest.raises(DataError, match=r"missing column 'position' \(expected integer; found integer columns not yet "
                                        r"used: rank\)$"):
        run(raw, tmp_path / "out")


def test_texts_over_the_bound_are_kept_and_recorded(raw, tmp_path):
    edit(raw, "streams", lambda df: df.with_columns(
        pl.when(pl.col("stream_id") == "s003").then(pl.lit("直播" * 600)).otherwise(pl.col("title")).alias("title")))
    run(raw, tmp_path / "out", limits={"max_text_chars": 1000})
    cut = pl.read_parquet(tmp_path / "out" / "truncated.parquet")
    assert cut.select("level", "object_id", "field", "reason").rows() == [
        ("stream", "s003", "title", "room text 'title' of 1,200 characters cut to limits.max_text_chars = 1,000 "
                                    "before tokenising")]
    assert "s003" in pl.read_parquet(tmp_path / "out" / "streams.parquet")["stream_id"].to_list()
    assert pl.read_csv(tmp_path / "out" / "truncated.csv").height == 1


# --- media-free datasets and sharded probing ----------------------------------------------------------------------
def _no_probing(*args, **kwargs):
    raise AssertionError("a media file was probed")


def test_a_media_free_dataset_validates_without_probing(tmp_path, monkeypatch):
    from memf.simulate import simulate
    from simulate_support import TINY, tiny

    cfg = tiny(n_streams=14, defects={**TINY["defects"], "missing_modality": 0.4})
    simulate(tmp_path / "full", cfg, DEFAULT_COLUMNS)
    simulate(tmp_path / "free", dict(cfg, media=False), DEFAULT_COLUMNS)
    run(tmp_path / "full", tmp_path / "full-out", folds=2)
    monkeypatch.setattr("memf.data.validate.isolated_map", _no_probing)
    result = run(tmp_path / "free", tmp_path / "free-out", folds=2, media=False)
    out = tmp_path / "free-out"
    assert "image" not in pl.read_parquet(out / "items.parquet").columns
    assert "path" not in pl.read_parquet(out / "clips.parquet").columns
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["media"] is False and meta["columns"]["commodity"]["image"] == []
    # The same drops as the media run, but for the room images it nulled (media-free data have none).
    full = excluded(tmp_path / "full-out")
    nulled = set(pl.read_parquet(tmp_path / "full" / "defects.parquet")
                 .filter(pl.col("variant") == "room_image_null")["object_id"])
    assert nulled and excluded(out).drop("file").equals(
        full.filter(~pl.col("stream_id").is_in(list(nulled))).drop("file"))
    assert result.n_kept == len(set(pl.read_parquet(tmp_path / "full-out" / "streams.parquet")["stream_id"]) | nulled)
    # Validating media-free data as if it had media is refused in one line (the simulator's dataset.json says so).
    with pytest.raises(DataError, match=r"dataset.json: the simulator wrote this dataset without media"):
        run(tmp_path / "free", tmp_path / "again", folds=2)


def test_a_dataset_missing_a_media_column_fails_unless_validated_media_free(raw, tmp_path, monkeypatch):
    edit(raw, "items", lambda df: df.drop("image"))
    with pytest.raises(DataError, match=r"items.parquet: missing column 'image' \(expected string"):
        run(raw, tmp_path / "out")
    monkeypatch.setattr("memf.data.validate.isolated_map", _no_probing)
    assert run(raw, tmp_path / "free", media=False).n_kept == N


def test_probe_shards_give_the_validation_of_one_job(tmp_path):
    from memf.data.layout import probe_record_path
    from memf.data.validate import probe_shard
    from memf.simulate import simulate
    from simulate_support import TINY, tiny

    raw = tmp_path / "raw"
    simulate(raw, tiny(n_streams=12, defects={k: 0.2 for k in TINY["defects"]}), DEFAULT_COLUMNS)
    limits = {"max_video_frames": 3}  # every clip truncated: the records carry truncations too
    run(raw, tmp_path / "whole", folds=2, limits=limits)
    records = [probe_record_path(tmp_path / "probes", k) for k in range(3)]
    probed = [probe_shard(raw, r, columns=DEFAULT_COLUMNS, shard=k, shards=3, limits=limits, probe_workers=1)
              for k, r in enumerate(records)]
    assert all(probed) and sum(probed) == pl.concat([pl.read_parquet(r) for r in records])["path"].n_unique()
    run(raw, tmp_path / "sharded", folds=2, limits=limits, probes=records)
    for name in ("streams", "anchors", "items", "clips", "excluded", "truncated"):
        assert pl.read_parquet(tmp_path / "sharded" / f"{name}.parquet").equals(
            pl.read_parquet(tmp_path / "whole" / f"{name}.parquet")), name
    assert excluded(tmp_path / "whole")["reason"].str.contains("does not decode").any()
    with pytest.raises(DataError, match=r"the probe records have no result for .* rerun the probe jobs$"):
        run(raw, tmp_path / "partial", folds=2, limits=limits, probes=records[:2])


def test_media_free_validation_memory_is_a_bounded_overhead_plus_a_few_kilobytes_a_stream(tmp_path):
    # Measured on the 2-core machine: 287 MB at 1,000 streams, 351 MB at 10,000, 791 MB at 100,000 (about 5 KB a
    # stream over the libraries' overhead), in 1.4, 1.4 and 3.2 CPU-seconds.
    from memf.simulate import write_tables
    from simulate_support import peak_rss_mb, tiny

    def peak(n: int) -> float:
        raw = tmp_path / f"raw{n}"
        write_tables(raw, tiny(n_streams=n, n_anchors=n // 4, media=False), DEFAULT_COLUMNS)
        code = ("from memf.data.contract import DEFAULT_COLUMNS\nfrom memf.data.validate import validate_dataset\n"
                f"r = validate_dataset({str(raw)!r}, {str(tmp_path / f'out{n}')!r}, columns=DEFAULT_COLUMNS, "
                "target_offset=1.0, max_drop_fraction=0.0, split_seed=0, folds=5, media=False)\n"
                f"assert r.n_kept == {n}, r")
        return peak_rss_mb(code)
    small, large = peak(300), peak(3000)
    assert large <= 1.3 * small, (small, large)
    assert (large - small) / 2700 * 1024 <= 24, f"{(large - small) / 2700 * 1024:.1f} KB a stream"
