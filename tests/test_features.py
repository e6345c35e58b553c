"""Extractors on tiny local models: dimensions, determinism, batching, text padding, offline loading, numeric fit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from features_support import TinyEnv

from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.audio import chunk_bounds
from memf.features.base import build_extractor, extractor_class
from memf.features.extract import embed_files, extract_shard
from memf.features.spec import KINDS, ExtractionSettings, ExtractorSpec, code_version, identity
from memf.features.store import read_field_shard
from memf.core.io import DataError

CPU = torch.device("cpu")
SETTINGS = ExtractionSettings(device="cpu", workers=1, timeout_s=30, batch_size=8)


def make(env: TinyEnv, name: str, batch_size: int = 8):
    spec = ExtractorSpec.from_config(name, env.extractors())
    return build_extractor(spec, dataclasses.replace(SETTINGS, batch_size=batch_size), CPU)


def clip_paths(env: TinyEnv, kind: str) -> list[str]:
    ds = load_clean(env.data)
    return [str(ds.media_path(p)) for p in ds.clips.filter(pl.col("kind") == kind)["path"].to_list()]


def image_paths(env: TinyEnv) -> list[str]:
    ds = load_clean(env.data)
    return [str(ds.media_path(p)) for p in ds.items["image"].to_list()]


def test_every_kind_is_registered_with_its_modality():
    for kind, (modality, _) in KINDS.items():
        assert extractor_class(kind).modality == modality
    with pytest.raises(ValueError, match="unknown extractor kind 'nope'"):
        extractor_class("nope")


def test_unknown_option_is_refused(tiny_env):
    spec = ExtractorSpec("rn", "torchvision", "resnet18", {"weights": "none", "crop_size": 32})
    with pytest.raises(ValueError, match=r"unknown options \['crop_size'\]"):
        build_extractor(spec, SETTINGS, CPU)


@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_text_dimension_determinism_and_padding(tiny_env, name):
    ext = make(tiny_env, name)
    assert ext.dim == 32
    texts = ["连衣裙 sale", "nike 运动鞋 春季 新款 口红 美妆 brand shop fashion 零食 包邮 女装", "口红"]
    together = ext.embed_texts(texts)
    assert together.shape == (3, 32) and together.dtype == np.float32
    np.testing.assert_array_equal(together, make(tiny_env, name).embed_texts(texts))
    # Alone (no padding) and in a batch beside a long text (padded): the same vector.
    for i, text in enumerate(texts):
        np.testing.assert_allclose(ext.embed_texts([text])[0], together[i], atol=1e-5)
    # Repeated texts are computed once and come back in input order.
    again = ext.embed_texts([texts[2], texts[0], texts[2]])
    np.testing.assert_allclose(again, together[[2, 0, 2]], atol=1e-6)


@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_text_batches_equal_the_tokenizers_own_padding(tiny_env, name):
    # encode + collate (the Rust backend, padded per batch) give exactly what tokenizer(..., padding=True) gives,
    # including XLNet's left padding and its pad token type; long texts are truncated to max_length.
    ext = make(tiny_env, name)
    texts = ["口红", "nike 运动鞋 春季 新款 " * 20, "连衣裙 sale brand", ""]
    ours = ext.collate(ext.encode(texts))
    ref = ext.tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    assert set(ours) == set(ref.keys())
    for key in ours:
        assert torch.equal(ours[key], ref[key]), key
    assert ours["input_ids"].shape[1] == 32


def test_text_cls_pooling_takes_the_classification_token(tiny_env):
    cfg = tiny_env.extractors()
    bert_cls = build_extractor(ExtractorSpec("b", "transformers-text", cfg["bert"]["model"], {"pooling": "cls"}), SETTINGS, CPU)
    xlnet_cls = build_extractor(ExtractorSpec("x", "transformers-text", cfg["xlnet"]["model"], {"pooling": "cls"}), SETTINGS, CPU)
    text = ["nike 运动鞋 春季"]
    for ext, pos in ((bert_cls, 0), (xlnet_cls, -1)):
        enc = ext.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            expected = ext.model(**enc).last_hidden_state[0, pos].numpy()
        np.testing.assert_allclose(ext.embed_texts(text)[0], expected, atol=1e-5)
        np.testing.assert_allclose(ext.embed_texts([text[0], "零食 包邮 女装 口红 美妆 brand shop"])[0], expected, atol=1e-5)


@pytest.mark.parametrize(("name", "dim", "paths"), [("rn", 512, image_paths), ("vm", 32, lambda e: clip_paths(e, "video")),
                                                     ("w2v", 32, lambda e: clip_paths(e, "audio"))])
def test_media_dimension_determinism_and_batching(tiny_env, name, dim, paths):
    files = paths(tiny_env)[:8]
    by8, reasons = embed_files(make(tiny_env, name, batch_size=8), files)
    assert reasons == [None] * len(files)
    assert by8.shape == (len(files), dim) and np.isfinite(by8).all()
    by1, _ = embed_files(make(tiny_env, name, batch_size=1), files)
    np.testing.assert_allclose(by1, by8, rtol=1e-4, atol=1e-4)
    again, _ = embed_files(make(tiny_env, name, batch_size=8), files)
    np.testing.assert_array_equal(again, by8)
    assert len({tuple(v) for v in by8.round(5)}) == len(files)  # different inputs, different vectors


def test_random_init_is_labelled_and_seeded(tiny_env):
    a, b = make(tiny_env, "rn"), make(tiny_env, "rn")
    assert a.weights_id == "random-init"
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_local_state_dict_weights(tiny_env, tmp_path):
    import torchvision
    from safetensors.torch import save_file

    rn = make(tiny_env, "rn")
    model = torchvision.models.resnet18()
    path = tmp_path / "rn18.safetensors"
    save_file(model.state_dict(), path)
    loaded = build_extractor(ExtractorSpec("r", "torchvision", "resnet18", {"weights": str(path), "resize": 36, "crop": 32}), SETTINGS, CPU)
    assert loaded.weights_id.startswith("sha256:") and loaded.weights_id != rn.weights_id
    with pytest.raises(ValueError, match="neither 'none', a file"):
        build_extractor(ExtractorSpec("r", "torchvision", "resnet18", {"weights": "IMAGENET9K"}), SETTINGS, CPU)


def test_audio_chunks_cover_the_clip_and_merge_a_short_tail():
    assert chunk_bounds(100, 40, 10) == [(0, 40), (40, 80), (80, 100)]
    assert chunk_bounds(85, 40, 10) == [(0, 40), (40, 85)]
    assert chunk_bounds(30, 40, 10) == [(0, 30)]


def test_audio_long_clip_is_the_length_weighted_mean_of_its_chunks(tiny_env):
    ext = make(tiny_env, "w2v")  # chunks of 0.4 s = 6400 samples
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(6400 * 2 + 3200).astype(np.float32)
    parts = [wave[:6400], wave[6400:12800], wave[12800:]]
    singles = ext.embed(parts)
    expected = (singles[0] * 6400 + singles[1] * 6400 + singles[2] * 3200) / 16000
    np.testing.assert_allclose(ext.embed([wave])[0], expected, atol=1e-5)


def test_offline_loading_from_a_local_folder(tiny_env):
    code = (
        "import torch, sys; from memf.features.base import build_extractor; from memf.features.spec import *;"
        f"e = build_extractor(ExtractorSpec('b', 'transformers-text', {str(tiny_env.models / 'bert')!r}), ExtractionSettings(), torch.device('cpu'));"
        "print(e.dim, e.weights_id[:7])"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["32", "sha256:"]


def test_identity_names_settings_and_code_version(tiny_env):
    spec = ExtractorSpec.from_config("rn", tiny_env.extractors())
    ident = identity(spec, SETTINGS)
    assert ident["options"] == {"weights": "none", "resize": 36, "crop": 32}
    assert ident["code_version"] == code_version("torchvision") and len(ident["code_version"]) == 12
    other = dataclasses.replace(spec, options={**spec.options, "crop": 30})
    assert identity(other, SETTINGS) != ident


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, {"commodity.price": "log1p", "anchor.fansCount": "log1p", "anchor.score": "identity",
                "room.duration": "identity"}),
        ({"default": "identity", "columns": {"commodity": {"price": "signed_log1p"}}},
         {"commodity.price": "signed_log1p", "anchor.fansCount": "identity", "anchor.score": "identity",
          "room.duration": "identity"}),
    ],
)
def test_numeric_fields_take_their_policy_transform_unstandardised(tiny_env, tmp_path, policy, expected):
    out, fails = tmp_path / "num.parquet", tmp_path / "num.failures.parquet"
    extract_shard(data_dir=tiny_env.data, extractors=tiny_env.extractors(), name="num", columns=DEFAULT_COLUMNS,
                  extraction={"shards": 1}, shard=0, out=out, failures_out=fails, numeric=policy)
    rows, meta = read_field_shard(out)
    ds = load_clean(tiny_env.data)
    for key, transform in expected.items():
        assert meta["transforms"][key] == transform
    assert "stats" not in meta and meta["weights_id"] == "none"
    # Stored values are exactly the transform of the raw values: nothing fitted, nothing standardised.
    items = ds.items.sort("stream_id", "position")
    price = rows.filter(pl.col("field") == "price").sort("stream_id", "position")["value"].to_numpy()
    raw = items["price"].to_numpy()
    want = {"log1p": np.log1p(raw), "signed_log1p": np.sign(raw) * np.log1p(np.abs(raw))}[expected["commodity.price"]]
    np.testing.assert_allclose(price, want, rtol=1e-6)
    score = rows.filter((pl.col("field") == "score")).sort("stream_id")
    anchors = dict(zip(ds.anchors["anchor_id"].to_list(), ds.anchors["score"].to_list(), strict=True))
    np.testing.assert_allclose(score["value"].to_numpy(), [anchors[a] for a in score["owner_id"].to_list()], rtol=1e-6)


def test_numeric_transforms_per_policy(tiny_env):
    ext = make(tiny_env, "num")
    x = np.array([-8.0, -0.5, 0.0, 0.5, 8.0])
    np.testing.assert_allclose(ext.transform("a.x", "signed_log1p", x), np.sign(x) * np.log1p(np.abs(x)), rtol=1e-6)
    np.testing.assert_array_equal(ext.transform("a.x", "identity", x), x.astype(np.float32))
    np.testing.assert_allclose(ext.transform("a.x", "log1p", np.abs(x)), np.log1p(np.abs(x)), rtol=1e-6)
    with pytest.raises(DataError, match="'commodity.price': value -2 < 0 cannot be log1p-transformed"):
        ext.transform("commodity.price", "log1p", np.array([1.0, -2.0]))
    for transform in ("signed_log1p", "identity", "log1p"):
        with pytest.raises(DataError, match="non-finite value inf"):
            ext.transform("a.x", transform, np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="unknown transform 'log'"):
        ext.transform("a.x", "log", x)


def test_numeric_extractor_takes_no_options(tiny_env):
    spec = ExtractorSpec("num", "log-standard", None, {"identity": ["score"]})
    with pytest.raises(ValueError, match=r"unknown options \['identity'\]"):
        build_extractor(spec, SETTINGS, CPU)


def test_tiny_tokenizers_are_the_same_in_every_process():
    """The vocabulary must not depend on the process (hash seeds, thread scheduling), or reruns change features."""
    import subprocess
    import sys

    code = (
        "import json; from memf.features.tiny import _bert_tokenizer, _xlnet_tokenizer\n"
        "texts = [f'商品 {i} 爆款 new arrival 满300减50 brand{i % 7} shop{i % 5}' for i in range(200)]\n"
        "print(json.dumps([sorted(_bert_tokenizer(texts, 120).get_vocab().items()),"
        " sorted(_xlnet_tokenizer(texts, 120).get_vocab().items())]))\n"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in (1, 2)]
    assert runs[0] == runs[1]
