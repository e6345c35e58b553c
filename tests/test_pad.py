"""The padding rule: store shards -> padded tensors, caps, and streams or items lost to extraction failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from features_support import TinyEnv
from memf.core.io import DataError
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.extract import extract_shard
from memf.features.store import ClipShard, read_clip_shard, read_field_shard, write_clip_shard
from memf.padding.pad import pad_feature_set
from memf.padding.store import PaddedStore, read_padded

CHOSEN = {"text": "bert", "image": "rn", "numeric": "num", "video": "vm", "audio": "w2v"}
N_SHARDS = 2


@pytest.fixture(scope="module")
def store(tiny_env: TinyEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    base = tmp_path_factory.mktemp("store")
    shards: dict[str, list[Path]] = {}
    for modality, name in CHOSEN.items():
        suffix = "h5" if modality in ("video", "audio") else "parquet"
        shards[modality] = []
        for k in range(N_SHARDS):
            out = base / modality / f"shard-{k}.{suffix}"
            extract_shard(data_dir=tiny_env.data, extractors=tiny_env.extractors(), name=name, columns=DEFAULT_COLUMNS,
                          extraction={"shards": N_SHARDS, "workers": 1}, shard=k, out=out,
                          failures_out=base / modality / f"shard-{k}.failures.parquet")
            shards[modality].append(out)
    return shards


def pad(env: TinyEnv, shards, tmp_path: Path, max_items: int = 8, max_clips: int | dict[str, int] = 5,
        model_axes: bool = False, dtype: str = "float32"):
    report = pad_feature_set(data_dir=env.data, feature_set="fs", shards=shards, columns=DEFAULT_COLUMNS,
                             max_items=max_items, max_clips=max_clips, out=tmp_path / "fs.h5",
                             truncated_out=tmp_path / "fs.truncated.parquet", model_axes=model_axes, dtype=dtype)
    return report, read_padded(tmp_path / "fs.h5"), pl.read_parquet(tmp_path / "fs.truncated.parquet")


def test_padded_file_holds_every_stream_with_the_store_vectors(tiny_env, store, tmp_path):
    report, padded, truncated = pad(tiny_env, store, tmp_path)
    ds = load_clean(tiny_env.data)
    streams = ds.streams.sort("stream_id")
    assert padded.stream_id.tolist() == streams["stream_id"].to_list() and truncated.height == 0
    assert padded.fold.tolist() == streams["fold"].to_list() and padded.folds == 3
    np.testing.assert_allclose(padded.target, streams["target"].to_numpy(), rtol=1e-6)
    n_items = ds.items.group_by("stream_id").len().sort("stream_id")["len"].to_numpy()
    assert padded.arrays["commodity/mask"].sum(1).tolist() == n_items.tolist()
    dims = padded.dims()
    assert dims["anchor/text"] == (4, 32) and dims["anchor/numeric"] == (8,) and dims["room/image"] == (1, 512)
    assert dims["commodity/text"] == (n_items.max(), 5, 32) and dims["video/x"][1] == 32
    # One item's image vector comes from the store, and padded item slots are zero.
    frames = pl.concat([read_field_shard(p)[0] for p in store["image"]])
    row = frames.filter((pl.col("entity") == "commodity") & (pl.col("position") == 1)).row(0, named=True)
    s = padded.stream_id.tolist().index(row["stream_id"])
    np.testing.assert_array_equal(padded.arrays["commodity/image"][s, 1, 0], np.asarray(row["vector"], np.float32))
    mask = padded.arrays["commodity/mask"]
    assert not padded.arrays["commodity/text"][~mask].any()
    # Clips in position order, masks matching the store.
    clip = read_clip_shard(store["audio"][0])
    sid = clip.stream_ids[0]
    s = padded.stream_id.tolist().index(sid)
    np.testing.assert_array_equal(padded.arrays["audio/x"][s, : clip.offsets[1]], clip.vectors[clip.clips_of(0)])
    assert padded.arrays["audio/mask"][s].sum() == clip.offsets[1]
    assert padded.attrs["extractors"]["image"]["weights"] == "random-init"
    assert padded.attrs["fields"]["room"]["text"] == ["title", "tag"]
    assert report.dropped_streams == 0
    assert not list(tmp_path.glob(".*"))  # the pieces of each shard are gone


def test_the_store_keeps_items_and_clips_ragged(tiny_env, store, tmp_path):
    """Disk follows the real items and clips: one row per kept item and clip, offsets per stream, in stream order."""
    _, padded, _ = pad(tiny_env, store, tmp_path)
    ds = load_clean(tiny_env.data)
    with PaddedStore(tmp_path / "fs.h5") as kept:
        n_items = ds.items.group_by("stream_id").len().sort("stream_id")["len"].to_numpy()
        np.testing.assert_array_equal(np.diff(kept.offsets["commodity"]), n_items)
        n_video = ds.clips.filter(pl.col("kind") == "video").group_by("stream_id").len().sort("stream_id")["len"]
        np.testing.assert_array_equal(np.diff(kept.offsets["video"]), n_video.to_numpy())
        assert kept.shapes["commodity/text"] == (5, 32) and kept.axes["commodity"] == n_items.max()
        everything = kept.read_range(0, len(kept))
        assert everything.objects["commodity/image"].shape[0] == n_items.sum()  # no padded row is stored
        # the objects of stream s are its rows of the padded arrays' real slots, in order
        for key in ("commodity/image", "video/x", "audio/x"):
            mask = padded.arrays[f"{key.partition('/')[0]}/mask"]
            np.testing.assert_array_equal(everything.objects[key], padded.arrays[key][mask])
        assert kept.dims() == padded.dims()


def test_float16_storage_halves_the_vectors_and_keeps_numbers(tiny_env, store, tmp_path):
    _, full, _ = pad(tiny_env, store, tmp_path / "a")
    _, half, _ = pad(tiny_env, store, tmp_path / "b", dtype="float16")
    with PaddedStore(tmp_path / "a" / "fs.h5") as a, PaddedStore(tmp_path / "b" / "fs.h5") as b:
        assert (a.dtype, b.dtype) == ("float32", "float16")
        assert b.row_bytes(np.arange(len(b))) < 0.52 * a.row_bytes(np.arange(len(a)))
    for key, value in full.arrays.items():
        assert half.arrays[key].dtype == value.dtype  # read back as float32
        if key.endswith("/numeric") or key.endswith("/mask"):
            np.testing.assert_array_equal(half.arrays[key], value)  # numeric fields stay float32
        else:
            np.testing.assert_array_equal(half.arrays[key], value.astype(np.float16).astype(np.float32))


def test_caps_cut_items_and_clips_and_record_them(tiny_env, store, tmp_path):
    report, padded, truncated = pad(tiny_env, store, tmp_path, max_items=1, max_clips=1)
    ds = load_clean(tiny_env.data)
    assert padded.dims()["commodity/mask"] == (1,) and padded.dims()["video/mask"] == (1,)
    cut_items = ds.items.filter(pl.col("position") >= 1)["item_id"].to_list()
    cut_clips = ds.clips.filter(pl.col("position") >= 1)["clip_id"].to_list()
    assert sorted(truncated["object_id"].to_list()) == sorted(cut_items + cut_clips)
    assert set(truncated["reason"].to_list()) == {"truncated: beyond padding.max_items=1",
                                                  "truncated: beyond padding.max_clips=1"}
    assert report.records == len(cut_items) + len(cut_clips)


def test_a_model_s_axes_cut_video_and_audio_clips_apart(tiny_env, store, tmp_path):
    # A dataset to predict is cut to the item and clip axes of the model that reads it, which differ per kind.
    _, padded, truncated = pad(tiny_env, store, tmp_path, max_items=2, max_clips={"video": 1, "audio": 2},
                               model_axes=True)
    ds = load_clean(tiny_env.data)
    assert padded.dims()["video/mask"] == (1,) and padded.dims()["audio/mask"][0] <= 2
    cut = ds.clips.filter(((pl.col("kind") == "video") & (pl.col("position") >= 1))
                          | ((pl.col("kind") == "audio") & (pl.col("position") >= 2)))["clip_id"].to_list()
    clips = truncated.filter(pl.col("entity") != "commodity")
    assert sorted(clips["object_id"].to_list()) == sorted(cut)
    assert set(clips["reason"].to_list()) <= {"truncated: beyond the 1 video clips the model reads (its item and clip "
                                              "axes)", "truncated: beyond the 2 audio clips the model reads (its item "
                                              "and clip axes)"}
    assert padded.attrs["caps"] == {"max_items": 2, "max_clips": {"video": 1, "audio": 2}}


def test_extraction_failures_drop_items_and_streams(tiny_env, store, tmp_path):
    shards = {m: list(paths) for m, paths in store.items()}
    # Stream A loses every audio clip; an item of stream B loses its image; stream C's anchor loses a text field.
    audio = read_clip_shard(store["audio"][0])
    lost_audio = str(audio.stream_ids[0])
    n0 = int(audio.offsets[1])
    offsets = np.concatenate([[0], audio.offsets[1:] - n0])
    write_clip_shard(tmp_path / "audio-0.h5", ClipShard(audio.vectors[n0:], audio.clip_ids[n0:], audio.positions[n0:],
                                                        audio.stream_ids, offsets, audio.meta))
    shards["audio"][0] = tmp_path / "audio-0.h5"
    images = pq.read_table(store["image"][1])
    frame = pl.from_arrow(images)
    item = frame.filter(pl.col("entity") == "commodity").row(0, named=True)
    same = (frame["owner_id"] == item["owner_id"]) & (frame["stream_id"] == item["stream_id"])
    keep = ~((frame["entity"] == "commodity") & same)
    pq.write_table(images.filter(keep.to_arrow()), tmp_path / "image-1.parquet")
    shards["image"][1] = tmp_path / "image-1.parquet"
    texts = pq.read_table(store["text"][1])
    tframe = pl.from_arrow(texts)
    victim = next(s for s in tframe["stream_id"].unique(maintain_order=True).to_list() if s != item["stream_id"])
    keep = ~((tframe["stream_id"] == victim) & (tframe["entity"] == "anchor") & (tframe["field"] == "nick"))
    pq.write_table(texts.filter(keep.to_arrow()), tmp_path / "text-1.parquet")
    shards["text"][1] = tmp_path / "text-1.parquet"

    report, padded, truncated = pad(tiny_env, shards, tmp_path)
    reasons = {(r["entity"], r["object_id"]): r["reason"] for r in truncated.iter_rows(named=True)}
    assert reasons[("stream", lost_audio)] == "stream dropped: no audio clip left"
    assert reasons[("stream", victim)] == "stream dropped: no text feature for anchor field nick"
    assert reasons[("commodity", item["owner_id"])] == "item dropped: no image feature for field image"
    assert lost_audio not in padded.stream_id and victim not in padded.stream_id
    assert report.dropped_streams == 2 and len(padded) == load_clean(tiny_env.data).streams.height - 2
    s = padded.stream_id.tolist().index(item["stream_id"])
    n_items = load_clean(tiny_env.data).items.filter(pl.col("stream_id") == item["stream_id"]).height
    assert padded.arrays["commodity/mask"][s].sum() == n_items - 1


def test_a_feature_set_missing_a_modality_is_refused(tiny_env, store, tmp_path):
    partial = {m: p for m, p in store.items() if m != "audio"}
    with pytest.raises(ValueError, match=r"no shards for modalities \['audio'\]"):
        pad(tiny_env, partial, tmp_path)


#: Routes of the hand-made latents below: a factor in several modalities, one in a single modality, a categorical
#: factor in the item's text and (the first item's) in the room's text.
ROUTING = {
    "anchor": {"reach": ["anchor/text", "anchor/image", "anchor/numeric"]},
    "room": {"attractiveness": ["room/text"]},
    "commodity": {"appeal": ["commodity/text", "commodity/image"], "category": ["commodity/text", "room/text"]},
    "video": {"energy": ["video/x"]},
    "audio": {"energy": ["audio/x"]},
}


def _latents(env: TinyEnv, path: Path, drop_item: str | None = None, routing: dict | None = None,
             category: float = 2.0) -> None:
    """A latents.parquet for the tiny dataset in the simulator's long format and its ground_truth.json: anchor reach,
    an item's appeal and 3-level category (``category``, but 1 for the first item), the room's attractiveness,
    each clip's energy."""
    ds = load_clean(env.data)
    rows = []
    for sid, aid in ds.streams.select("stream_id", "anchor_id").iter_rows():
        rows.append((sid, "anchor", aid, 0, "reach", float(int(aid[1:]))))
        rows.append((sid, "room", sid, 0, "attractiveness", 0.5))
    for sid, iid, pos in ds.items.select("stream_id", "item_id", "position").iter_rows():
        if iid != drop_item:
            rows += [(sid, "commodity", iid, pos, "appeal", float(pos)),
                     (sid, "commodity", iid, pos, "category", 1.0 if pos == 0 else category)]
    for sid, cid, kind, pos in ds.clips.select("stream_id", "clip_id", "kind", "position").iter_rows():
        rows.append((sid, kind, cid, pos, "energy", float(pos) + 0.25))
    pq.write_table(pl.DataFrame(rows, schema=["stream_id", "entity", "object_id", "position", "factor", "value"],
                                orient="row").with_columns(pl.col("position").cast(pl.Int32)).to_arrow(), path)
    truth = {"latent_factors": {"commodity": {"appeal": "continuous", "category": "categorical(3)"}},
             "latent_routing": ROUTING if routing is None else routing}
    (path.parent / "ground_truth.json").write_text(json.dumps(truth))


def _pad_latents(env: TinyEnv, tmp_path: Path, name: str = "latent.h5"):
    from memf.padding.pad import pad_latents

    return pad_latents(data_dir=env.data, latents=tmp_path / "latents.parquet", max_items=8, max_clips=5,
                       out=tmp_path / name, ground_truth_json=tmp_path / "ground_truth.json")


def test_latent_feature_set_puts_each_factor_in_the_modalities_that_render_it(tiny_env, tmp_path):
    _latents(tiny_env, tmp_path / "latents.parquet")
    report = _pad_latents(tiny_env, tmp_path)
    again = read_padded(tmp_path / "latent.h5")
    ds = load_clean(tiny_env.data)
    assert again.stream_id.tolist() == sorted(ds.streams["stream_id"].to_list()) and again.folds == 3
    assert report.streams == len(again) and report.max_items == again.dims()["commodity/mask"][0]
    fields = again.attrs["fields"]
    assert fields["commodity"] == {"text": ["appeal", "category=0", "category=1", "category=2"], "image": ["appeal"],
                                   "numeric": []}
    assert fields["anchor"] == {"text": ["reach"], "image": ["reach"], "numeric": ["reach"]}
    assert fields["room"] == {"text": ["attractiveness", "first_item.category=0", "first_item.category=1",
                                       "first_item.category=2"], "image": [], "numeric": []}
    assert fields["video"] == {"x": ["energy"]} and fields["audio"] == {"x": ["energy"]}
    dims = again.dims()
    m = int(ds.items.group_by("stream_id").len()["len"].max())
    # one token per modality that renders something; no token where nothing is rendered (models skip those)
    assert dims["commodity/text"] == (m, 1, 4) and dims["commodity/image"] == (m, 1, 1)
    assert dims["commodity/numeric"] == (m, 0) and dims["room/image"] == (0, 1) and dims["room/numeric"] == (0,)
    assert dims["anchor/text"] == dims["anchor/image"] == (1, 1) and dims["anchor/numeric"] == (1,)
    mask = again.arrays["commodity/mask"]
    items = again.arrays["commodity/text"][mask][:, 0]  # [n_items, 4]
    photos = again.arrays["commodity/image"][mask][:, 0]  # [n_items, 1]
    np.testing.assert_array_equal(items[:, 0], photos[:, 0])  # appeal in both tokens
    first = np.zeros(mask.shape, bool)
    first[:, 0] = True
    np.testing.assert_array_equal(again.arrays["commodity/text"][first & mask][:, 0, 1:], [[0, 1, 0]] * mask.shape[0])
    np.testing.assert_array_equal(again.arrays["commodity/text"][~first & mask][:, 0, 1:],
                                  [[0, 0, 1]] * int((~first & mask).sum()))
    # the room's text holds its attractiveness and its first item's category
    np.testing.assert_array_equal(again.arrays["room/text"][:, 0], [[0.5, 0, 1, 0]] * len(again))
    anchors = np.array([float(int(a[1:])) for a in ds.streams.sort("stream_id")["anchor_id"]], np.float32)
    for key in ("anchor/text", "anchor/image"):
        np.testing.assert_array_equal(again.arrays[key][:, 0, 0], anchors)
    np.testing.assert_array_equal(again.arrays["anchor/numeric"][:, 0], anchors)
    n_items = ds.items.group_by("stream_id").len().sort("stream_id")["len"].to_numpy()
    assert mask.sum(1).tolist() == n_items.tolist()
    assert np.allclose(again.arrays["video/x"][again.arrays["video/mask"]][:, 0] % 1, 0.25)


def test_latent_feature_set_refuses_what_it_cannot_route(tiny_env, tmp_path):
    # A kept item without latent factors is an error naming it, not a silent zero; without the first item's, the
    # room's text misses its category too.
    items = load_clean(tiny_env.data).items
    second, first = items.filter(pl.col("position") == 1)["item_id"][0], items["item_id"][0]
    _latents(tiny_env, tmp_path / "latents.parquet", drop_item=second)
    with pytest.raises(DataError, match=f"no latent factors for item {second}$"):
        _pad_latents(tiny_env, tmp_path)
    _latents(tiny_env, tmp_path / "latents.parquet", drop_item=first)
    with pytest.raises(DataError, match=f"no latent factors for room of stream {items['stream_id'][0]}, item {first}$"):
        _pad_latents(tiny_env, tmp_path)
    # A factor without a route, a route outside its entity, a category code out of range.
    unrouted = {**ROUTING, "room": {}}
    _latents(tiny_env, tmp_path / "latents.parquet", routing=unrouted)
    with pytest.raises(DataError, match="factor room/attractiveness is in .* but not under latent_routing"):
        _pad_latents(tiny_env, tmp_path)
    _latents(tiny_env, tmp_path / "latents.parquet", routing={**ROUTING, "video": {"energy": ["room/text"]}})
    with pytest.raises(DataError, match="factor video/energy has route 'room/text', expected one of its entity's"):
        _pad_latents(tiny_env, tmp_path)
    _latents(tiny_env, tmp_path / "latents.parquet", category=3.0)
    with pytest.raises(DataError, match=r"factor commodity/category has value 3.0, expected a category code 0..2"):
        _pad_latents(tiny_env, tmp_path)
    (tmp_path / "ground_truth.json").write_text(json.dumps({"latent_factors": {}}))
    with pytest.raises(DataError, match="no 'latent_routing'"):
        _pad_latents(tiny_env, tmp_path)
