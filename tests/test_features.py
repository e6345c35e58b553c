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
from memf.core.io import DataError
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.audio import chunk_bounds
from memf.features.base import build_extractor, extractor_class
from memf.features.extract import embed_files, extract_shard
from memf.features.spec import KINDS, ExtractionSettings, ExtractorSpec, extractor_version, identity
from memf.features.store import read_field_shard

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
    with pytest.raises(ValueError, match=r"options.crop_size: unknown option \(accepted: batch_size, crop, "):
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
    spec = ExtractorSpec("r", "torchvision", "resnet18", {"weights": str(path), "resize": 36, "crop": 32})
    loaded = build_extractor(spec, SETTINGS, CPU)
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
        f"e = build_extractor(ExtractorSpec('b', 'transformers-text', {str(tiny_env.models / 'bert')!r}), "
        "ExtractionSettings(), torch.device('cpu'));"
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
    assert ident["code_version"] == extractor_version("torchvision") and len(ident["code_version"]) == 12
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
    with pytest.raises(ValueError, match=r"options.identity: unknown option \(accepted: none\)"):
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


# --- Preprocessing from the checkpoint --------------------------------------------------------------------------------


def _videomae_folder(folder, processor=None, image_size=24):
    """A tiny VideoMAE of ``image_size`` saved with ``processor`` (none: no preprocessor_config.json)."""
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig(image_size=image_size, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return str(folder)


def test_videomae_inputs_follow_a_non_default_processor_config(tiny_env, tmp_path):
    from transformers import VideoMAEImageProcessor

    from memf.data.media import read_video

    proc = VideoMAEImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24}, resample=3,
                                  image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    folder = _videomae_folder(tmp_path / "vm", proc)
    ext = build_extractor(ExtractorSpec("vm", "videomae", folder), SETTINGS, CPU)
    clips = clip_paths(tiny_env, "video")[:2]
    ours = ext.model_inputs([ext.prepare(c) for c in clips])
    expected = proc([list(read_video(c, 4)) for c in clips], return_tensors="pt")["pixel_values"]
    assert ours.shape == (2, 4, 3, 24, 24)
    assert torch.equal(ours, expected)  # exactly what the processor itself returns
    record = identity(ext.spec, SETTINGS)["preprocessing"]
    assert record["values"] == {"resize": {"shortest_edge": 28}, "crop": {"height": 24, "width": 24},
                                "interpolation": "bicubic", "rescale_factor": 1 / 255,
                                "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    assert set(record["from"].values()) == {"checkpoint"} and "preprocessor_config.json" in record["reference"]
    # The tiny model's own config (ImageNet mean and sd, no resize of its 32 px frames) gives other inputs.
    default = make(tiny_env, "vm")
    assert not torch.allclose(default.model_inputs([default.prepare(clips[0])])[0, :, :, :24, :24], ours[0])


def test_videomae_option_overrides_the_processor_and_is_recorded(tiny_env, tmp_path):
    from transformers import VideoMAEImageProcessor

    from memf.data.media import read_video

    proc = VideoMAEImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 24, "width": 24})
    folder = _videomae_folder(tmp_path / "vm", proc)
    ext = build_extractor(ExtractorSpec("vm", "videomae", folder, {"mean": [0.1, 0.2, 0.3], "resize": 30}), SETTINGS, CPU)
    clip = clip_paths(tiny_env, "video")[0]
    expected = proc([list(read_video(clip, 4))], image_mean=[0.1, 0.2, 0.3], size={"shortest_edge": 30},
                    return_tensors="pt")["pixel_values"]
    assert torch.equal(ext.model_inputs([ext.prepare(clip)]), expected)
    record = ext.spec.preprocessing
    assert record["from"]["mean"] == "option" and record["values"]["mean"] == [0.1, 0.2, 0.3]
    assert record["from"]["resize"] == "option" and record["values"]["resize"] == {"shortest_edge": 30}
    assert record["from"]["std"] == "checkpoint"


def test_videomae_folder_without_processor_config_needs_every_option(tiny_env, tmp_path):
    folder = _videomae_folder(tmp_path / "vm", None, image_size=32)
    with pytest.raises(ValueError, match=r"has no preprocessor_config.json.*\(missing: mean, std, interpolation\)"):
        build_extractor(ExtractorSpec("vm", "videomae", folder, {"resize": 32, "crop": 32}), SETTINGS, CPU)
    options = {"resize": 32, "crop": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
               "interpolation": "bilinear"}
    ext = build_extractor(ExtractorSpec("vm", "videomae", folder, options), SETTINGS, CPU)
    record = ext.spec.preprocessing
    assert record["from"] == {**{k: "option" for k in options}, "rescale_factor": "default"}
    # Those options are what the tiny model's processor config says: the same inputs.
    clip, tiny = clip_paths(tiny_env, "video")[0], make(tiny_env, "vm")
    assert torch.equal(ext.model_inputs([ext.prepare(clip)]), tiny.model_inputs([tiny.prepare(clip)]))


def test_videomae_preprocessing_must_give_the_models_frame_size(tmp_path):
    from transformers import VideoMAEImageProcessor

    folder = _videomae_folder(tmp_path / "vm", VideoMAEImageProcessor(size={"shortest_edge": 32},
                                                                     crop_size={"height": 32, "width": 32}))
    with pytest.raises(ValueError, match=r"frames of \(32, 32\).*expects 24 x 24"):
        build_extractor(ExtractorSpec("vm", "videomae", folder), SETTINGS, CPU)


def _wav2vec2_folder(tiny_env, folder, **feature_extractor):
    import shutil

    from transformers import Wav2Vec2FeatureExtractor

    shutil.copytree(tiny_env.models / "wav2vec2", folder)
    Wav2Vec2FeatureExtractor(**{"feature_size": 1, "padding_value": 0.0, **feature_extractor}).save_pretrained(folder)
    return str(folder)


def test_wav2vec2_inputs_follow_the_feature_extractor(tiny_env, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    from memf.data.media import read_audio

    clip = clip_paths(tiny_env, "audio")[0]
    folder = _wav2vec2_folder(tiny_env, tmp_path / "w", sampling_rate=8000, do_normalize=False)
    ext = build_extractor(ExtractorSpec("w", "wav2vec2", folder), SETTINGS, CPU)
    assert ext.spec.preprocessing["values"] == {"sample_rate": 8000, "normalize": False}
    assert set(ext.spec.preprocessing["from"].values()) == {"checkpoint"}
    wave = ext.prepare(clip)
    np.testing.assert_array_equal(wave, read_audio(clip, sample_rate=8000))
    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    assert torch.equal(ext.model_inputs([wave]), fe(wave, sampling_rate=8000, return_tensors="pt")["input_values"])
    # The tiny model's config (16 kHz, do_normalize) gives 16 kHz, zero-mean unit-variance inputs.
    tiny = make(tiny_env, "w2v")
    wave16 = tiny.prepare(clip)
    assert wave16.size == 2 * wave.size
    fe16 = Wav2Vec2FeatureExtractor.from_pretrained(tiny_env.models / "wav2vec2")
    np.testing.assert_allclose(tiny.model_inputs([wave16]).numpy(),
                               fe16(wave16, sampling_rate=16000, return_tensors="np")["input_values"], atol=1e-5)
    # An option overrides do_normalize and is recorded as such.
    forced = build_extractor(ExtractorSpec("w", "wav2vec2", folder, {"normalize": True}), SETTINGS, CPU)
    assert forced.spec.preprocessing["from"] == {"sample_rate": "checkpoint", "normalize": "option"}
    normalising = Wav2Vec2FeatureExtractor.from_pretrained(folder, do_normalize=True)
    np.testing.assert_allclose(forced.model_inputs([wave]).numpy(),
                               normalising(wave, sampling_rate=8000, return_tensors="np")["input_values"], atol=1e-5)


def test_wav2vec2_folder_without_processor_config_is_refused_unless_options_say(tiny_env, tmp_path):
    import shutil

    folder = tmp_path / "w"
    shutil.copytree(tiny_env.models / "wav2vec2", folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match=r"no preprocessor_config.json.*\(missing: sample_rate, normalize\)"):
        build_extractor(ExtractorSpec("w", "wav2vec2", str(folder)), SETTINGS, CPU)
    ext = build_extractor(ExtractorSpec("w", "wav2vec2", str(folder), {"sample_rate": 16000, "normalize": True}), SETTINGS, CPU)
    assert ext.spec.preprocessing["from"] == {"sample_rate": "option", "normalize": "option"}


def _photo(tmp_path, size=(300, 260)):
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, size=(13, 15, 3), dtype=np.uint8)
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(path)
    return str(path)


def test_torchvision_enum_preset_gives_its_transforms_inputs(tmp_path):
    from PIL import Image
    from torchvision.models import ResNet50_Weights

    from memf.data.media import read_image
    from memf.features.image import normalise, resize_crop, torchvision_preprocessing

    path = _photo(tmp_path)
    pre = torchvision_preprocessing("resnet50", "IMAGENET1K_V2", {})  # the preset only: no weights are downloaded
    assert pre.values["resize"] == 232 and pre.values["crop"] == 224
    assert set(pre.sources.values()) == {"checkpoint"} and pre.reference == "ResNet50_Weights.IMAGENET1K_V2.transforms()"
    crop = resize_crop(read_image(path), pre)
    ours = normalise(torch.tensor(crop).permute(2, 0, 1), pre)
    assert torch.equal(ours, ResNet50_Weights.IMAGENET1K_V2.transforms()(Image.open(path).convert("RGB")))
    v1 = torchvision_preprocessing("resnet50", "IMAGENET1K_V1", {})
    assert v1.values["resize"] == 256 and not np.array_equal(resize_crop(read_image(path), v1), crop)
    # weights none or a file: the DEFAULT weights' preset (V2 for ResNet50), labelled default; options override.
    none = torchvision_preprocessing("resnet50", "none", {"crop": 200, "interpolation": "bicubic"})
    assert none.values["resize"] == 232 and none.sources["resize"] == "default"
    assert none.values["crop"] == 200 and none.sources["crop"] == "option"
    preset = ResNet50_Weights.IMAGENET1K_V2.transforms()
    preset.crop_size, preset.interpolation = [200], __import__("torchvision").transforms.InterpolationMode.BICUBIC
    crop = resize_crop(read_image(path), none)
    assert torch.equal(normalise(torch.tensor(crop).permute(2, 0, 1), none), preset(Image.open(path).convert("RGB")))


def test_every_architecture_has_an_image_classification_preset():
    from memf.features.image import torchvision_preprocessing
    from memf.features.spec import TORCHVISION_ARCHITECTURES

    for arch in TORCHVISION_ARCHITECTURES:
        pre = torchvision_preprocessing(arch, "none", {})
        assert pre.values["crop"] == 224 and pre.values["antialias"] is True, arch


def test_planned_image_widths_are_the_architectures():
    """The widths the resource model plans with (spec.TORCHVISION_DIMS) are what each architecture writes."""
    import torchvision

    from memf.features.spec import TORCHVISION_ARCHITECTURES, TORCHVISION_DIMS

    assert sorted(TORCHVISION_DIMS) == sorted(TORCHVISION_ARCHITECTURES)
    for arch, dim in TORCHVISION_DIMS.items():
        model = getattr(torchvision.models, arch)(weights=None)
        head = model.fc if hasattr(model, "fc") else model.classifier
        assert head.in_features == dim, arch


def test_resolved_preprocessing_is_in_shard_metadata_and_manifest(tiny_env, tmp_path):
    from memf.features.store import write_manifest

    out, fails = tmp_path / "shard-0.parquet", tmp_path / "shard-0.failures.parquet"
    extract_shard(data_dir=tiny_env.data, extractors=tiny_env.extractors(), name="rn", columns=DEFAULT_COLUMNS,
                  extraction={"shards": 1, "device": "cpu", "workers": 1}, shard=0, out=out, failures_out=fails)
    _, meta = read_field_shard(out)
    record = meta["identity"]["preprocessing"]
    assert record["values"]["resize"] == 36 and record["from"]["resize"] == "option"
    assert record["values"]["mean"] == [0.485, 0.456, 0.406] and record["from"]["mean"] == "default"
    manifest = write_manifest([out], [fails], tmp_path / "manifest.json")
    assert manifest["preprocessing"] == record


# --- Extractor mistakes caught when the workflow loads ----------------------------------------------------------------


def test_kind_options_are_the_classes_options():
    from memf.features import base
    from memf.features.spec import KIND_OPTIONS

    for kind in KINDS:
        assert extractor_class(kind).defaults == KIND_OPTIONS[kind], kind
    # A class declaring other defaults than spec.py's is refused when it registers (before its name is checked).
    with pytest.raises(ValueError, match=r"defaults .* differ from memf.features.spec.KIND_OPTIONS"):
        @base.register
        class Drifted(base.MediaExtractor):
            kind = "torchvision"
            modality = "image"
            defaults = {"weights": "none"}


def test_check_extractors_accepts_a_clean_config(tiny_env):
    from memf.features.spec import check_extractors

    assert check_extractors(tiny_env.extractors(), built_models=set()) == []
    built = {"kind": "videomae", "model": "results/models/videomae-tiny"}  # written by the tiny_model rule later
    assert check_extractors({"vm": built}, built_models={"results/models/videomae-tiny/"}) == []
    online = {"bert": {"kind": "transformers-text", "model": "bert-base-chinese", "options": {"revision": "main"}}}
    assert check_extractors(online, built_models=set()) == []  # not offline: the hub is asked in the job


def test_check_extractors_on_the_demo_config_imports_no_torch():
    code = (
        "import sys, yaml; from memf.features.spec import check_extractors\n"
        "cfg = yaml.safe_load(open('config.yaml'))\n"
        "built = {f'results/models/{n}' for n in cfg['tiny_models']}\n"
        "print(check_extractors(cfg['extractors'], built_models=built), 'torch' in sys.modules, 'torchvision' in sys.modules)\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["[]", "False", "False"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "torchvison", "model": "resnet18"},
     "extractors.x.kind: 'torchvison' is not an extractor kind (accepted: log-standard, torchvision, transformers-text, "
     "videomae, wav2vec2)"),
    ({"kind": "torchvision", "model": "resnet18", "options": {"widht": 3}},
     "extractors.x.options.widht: unknown option (accepted: batch_size, crop, interpolation, mean, resize, seed, std, weights)"),
    ({"kind": "torchvision", "model": "resnet18", "options": {"crop": 0}},
     "extractors.x.options.crop: 0 is not accepted (expected an integer >= 1 (side of the centre crop))"),
    ({"kind": "torchvision", "model": "resnet18", "options": {"interpolation": "lanczos"}},
     "extractors.x.options.interpolation: 'lanczos' is not accepted (expected nearest or bilinear or bicubic)"),
    ({"kind": "transformers-text", "model": "bert-base-chinese", "options": {"pooling": "max"}},
     "extractors.x.options.pooling: 'max' is not accepted (expected mean or cls)"),
    ({"kind": "wav2vec2", "model": "facebook/wav2vec2-base", "options": {"normalize": "yes"}},
     "extractors.x.options.normalize: 'yes' is not accepted (expected true or false)"),
    ({"kind": "torchvision", "model": "resnet51"},
     "extractors.x.model: 'resnet51' is not a torchvision architecture memf builds (accepted: resnet18, resnet34, resnet50, "
     "resnet101, resnet152, densenet121)"),
    ({"kind": "torchvision", "model": "resnet18", "options": {"weights": "IMAGENET1K_V2"}},
     "extractors.x.options.weights: 'IMAGENET1K_V2' is not a weights name of resnet18 (accepted: none, a weights file, "
     "IMAGENET1K_V1, DEFAULT)"),
    ({"kind": "torchvision", "model": "resnet18", "options": {"weights": "weights/rn18.safetensors"}},
     "extractors.x.options.weights: file 'weights/rn18.safetensors' does not exist (expected none, an existing "
     ".safetensors/.pt file or a torchvision weights name)"),
    ({"kind": "videomae"}, "extractors.x.model: None is missing (expected a Hugging Face hub id or a local model folder)"),
    ({"kind": "videomae", "model": "results/models/videomae-tni"},
     "extractors.x.model: folder 'results/models/videomae-tni' does not exist (expected a hub id or an existing model folder)"),
    ({"kind": "log-standard", "model": "resnet18"},
     "extractors.x.model: 'resnet18', but kind log-standard uses no model (expected null)"),
])
def test_check_extractors_names_each_mistake(entry, message):
    from memf.features.spec import check_extractors

    assert check_extractors({"x": entry}, built_models={"results/models/videomae-tiny"}) == [message]


def test_check_extractors_looks_into_local_folders(tiny_env, tmp_path):
    import shutil

    from memf.features.spec import check_extractors

    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_extractors({"b": {"kind": "transformers-text", "model": str(empty)}}, built_models=set()) == [
        f"extractors.b.model: folder '{empty}' has no config.json (expected a model saved with save_pretrained)"]
    bare = tmp_path / "w"
    shutil.copytree(tiny_env.models / "wav2vec2", bare)
    (bare / "preprocessor_config.json").unlink()
    entry = {"kind": "wav2vec2", "model": str(bare), "options": {"sample_rate": 16000}}
    assert check_extractors({"w": entry}, built_models=set()) == [
        f"extractors.w.model: folder '{bare}' has no preprocessor_config.json; give options sample_rate, normalize "
        "instead (missing: normalize)"]
    entry["options"]["normalize"] = True
    assert check_extractors({"w": entry}, built_models=set()) == []


def test_check_extractors_offline_cache_hit_and_miss(tiny_env, tmp_path):
    """A tiny BERT saved in the hub cache layout of $HF_HOME (refs/main -> snapshots/<commit>/): found offline by the
    check and loaded by transformers; an id or revision not in the cache is named with the command that fetches it."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--memf-test--tiny-bert"
    shutil.copytree(tiny_env.models / "bert", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "import json; from memf.features.spec import check_extractors\n"
        "ex = {'hit': {'kind': 'transformers-text', 'model': 'memf-test/tiny-bert'},\n"
        "      'miss': {'kind': 'transformers-text', 'model': 'memf-test/absent'},\n"
        "      'rev': {'kind': 'transformers-text', 'model': 'memf-test/tiny-bert', 'options': {'revision': 'v2'}}}\n"
        "print(json.dumps(check_extractors(ex, built_models=set())))\n"
        "from transformers import AutoModel; print(AutoModel.from_pretrained('memf-test/tiny-bert').config.hidden_size)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": __import__("os").environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    cache = tmp_path / "hf" / "hub"
    assert __import__("json").loads(lines[0]) == [
        f"extractors.miss.model: 'memf-test/absent' is not in the offline Hugging Face cache {cache} (HF_HUB_OFFLINE=1); "
        "fetch it with: hf download memf-test/absent",
        f"extractors.rev.model: 'memf-test/tiny-bert' at revision 'v2' is not in the offline Hugging Face cache {cache} "
        "(HF_HUB_OFFLINE=1); fetch it with: hf download memf-test/tiny-bert --revision v2",
    ]
    assert lines[-1] == "32"  # the layout is the real one: transformers loads the hit offline
