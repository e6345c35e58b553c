"""Tiny random-initialised models in the pretrained format, so the demo and the tests load them exactly like real
checkpoints (``from_pretrained(folder)``).

Each model is built from the real transformers class with a small config (config section ``tiny_models``), seeded,
and saved with ``save_pretrained`` (config.json + model.safetensors). Media models also get the processor config a
real checkpoint ships (``preprocessor_config.json``), which the extractors read their preprocessing from: VideoMAE a
``VideoMAEImageProcessor`` (shorter side to ``image_size``, centre crop ``image_size``, bilinear, ImageNet mean and
sd, as MCG-NJU/videomae-base), wav2vec2 a ``Wav2Vec2FeatureExtractor`` (16 kHz, zero-mean unit-variance inputs, as
facebook/wav2vec2-base). Text models also get a tokenizer trained with
the ``tokenizers`` library on the dataset's text columns: a WordPiece vocabulary saved as a ``BertTokenizer`` (BERT
normaliser and pre-tokeniser: lower-cased, CJK characters split), or for XLNet a Unigram model with a Metaspace
pre-tokeniser saved as an ``XLNetTokenizer`` (sentencepiece-style pieces, ``<sep> <cls>`` appended, left padding).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from memf.data.contract import ENTITY_TABLE, FIELD_ENTITIES
from memf.data.dataset import CleanDataset, load_clean
from memf.features.spec import TINY_SIZES

TINY_KINDS: tuple[str, ...] = ("bert", "xlnet", "videomae", "wav2vec2")
TEXT_KINDS: tuple[str, ...] = ("bert", "xlnet")
BERT_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
XLNET_SPECIAL = ["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]

#: Kind -> size settings and their defaults (hidden width, depth, heads, ...): the torch-free catalog's.
DEFAULT_SIZES: dict[str, dict[str, Any]] = TINY_SIZES


def dataset_texts(ds: CleanDataset, columns: Mapping[str, Mapping[str, list[str]]]) -> list[str]:
    """Every non-empty text cell of the dataset's text columns (the tokenizer's training corpus), in table order."""
    tables = {"anchors": ds.anchors, "items": ds.items, "streams": ds.streams}
    texts: list[str] = []
    for entity in FIELD_ENTITIES:
        table = tables[ENTITY_TABLE[entity]]
        for col in columns.get(entity, {}).get("text", []):
            texts.extend(t for t in table[col].to_list() if t)
    return texts


def _bert_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A WordPiece vocabulary built deterministically (the tokenizers trainer breaks count ties differently from one
    process to the next): the special tokens, every character alone and as a ``##`` continuation (so no word is
    unknown), then the most frequent whole words, ties broken alphabetically, up to ``vocab_size`` entries."""
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizer

    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    pieces = list(BERT_SPECIAL) + chars + [f"##{c}" for c in chars]
    ranked = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    pieces += ranked[: max(0, vocab_size - len(pieces))]
    return BertTokenizer(vocab={piece: i for i, piece in enumerate(pieces)})


def _xlnet_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A Unigram vocabulary built deterministically, like :func:`_bert_tokenizer`: the special tokens, every character,
    then the most frequent whole ``▁word`` pieces up to ``vocab_size``; scores are log relative frequencies."""
    from collections import Counter

    from tokenizers import pre_tokenizers
    from transformers import XLNetTokenizer

    pre = pre_tokenizers.Metaspace()
    words = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(t))
    chars: Counter[str] = Counter()
    for word, n in words.items():
        for c in word:
            chars[c] += n
    ranked = [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    entries = sorted(chars.items()) + [(w, words[w]) for w in ranked[: max(0, vocab_size - len(XLNET_SPECIAL) - len(chars))]]
    total = sum(n for _, n in entries)
    vocab = [(piece, 0.0) for piece in XLNET_SPECIAL] + [(piece, math.log(n / total)) for piece, n in entries]
    return XLNetTokenizer(vocab=vocab, unk_id=XLNET_SPECIAL.index("<unk>"))


def _model(kind: str, s: Mapping[str, Any], vocab_size: int | None) -> torch.nn.Module:
    from transformers import (
        BertConfig,
        BertModel,
        VideoMAEConfig,
        VideoMAEModel,
        Wav2Vec2Config,
        Wav2Vec2Model,
        XLNetConfig,
        XLNetModel,
    )

    if kind == "bert":
        return BertModel(BertConfig(
            vocab_size=vocab_size, hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
            intermediate_size=s["intermediate"], max_position_embeddings=s["max_positions"],
        ))
    if kind == "xlnet":
        return XLNetModel(XLNetConfig(
            vocab_size=vocab_size, d_model=s["hidden"], n_layer=s["layers"], n_head=s["heads"], d_inner=s["intermediate"],
            pad_token_id=XLNET_SPECIAL.index("<pad>"),
        ))
    if kind == "videomae":
        return VideoMAEModel(VideoMAEConfig(
            image_size=s["image_size"], patch_size=s["patch_size"], num_frames=s["num_frames"],
            tubelet_size=s["tubelet_size"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
            num_attention_heads=s["heads"], intermediate_size=s["intermediate"],
        ))
    return Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=s["hidden"], num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
        intermediate_size=s["intermediate"], conv_dim=(s["conv_dim"],) * 7,
        num_conv_pos_embeddings=s["conv_pos"], num_conv_pos_embedding_groups=s["conv_pos_groups"],
    ))


def _processor(kind: str, s: Mapping[str, Any]) -> Any | None:
    """The processor config a real checkpoint of ``kind`` ships, sized for the tiny model; None for text kinds."""
    from transformers import VideoMAEImageProcessor, Wav2Vec2FeatureExtractor
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

    if kind == "videomae":
        side = int(s["image_size"])
        return VideoMAEImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, resample=PILImageResampling.BILINEAR,
            image_mean=list(IMAGENET_DEFAULT_MEAN), image_std=list(IMAGENET_DEFAULT_STD),
        )
    if kind == "wav2vec2":
        return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                        return_attention_mask=False)
    return None


def build_tiny_model(
    kind: str, out_dir: str | Path, *, settings: Mapping[str, Any] | None = None, texts: Sequence[str] = (), seed: int = 0
) -> Path:
    """Build, seed and save one tiny model (and its tokenizer for text kinds) into ``out_dir``.

    Args:
        kind: bert, xlnet, videomae or wav2vec2.
        out_dir: the model folder (config.json, model.safetensors, and the tokenizer or processor config); written
            to a temporary sibling first and renamed into place when complete.
        settings: size overrides of :data:`DEFAULT_SIZES` for this kind.
        texts: tokenizer training corpus (text kinds only; required there).
        seed: seeds the weights.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"tiny model kind '{kind}', expected one of {TINY_KINDS}")
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULT_SIZES[kind]))
    if unknown:
        raise ValueError(f"tiny model ({kind}): unknown settings {unknown}, expected {sorted(DEFAULT_SIZES[kind])}")
    sizes = {**DEFAULT_SIZES[kind], **settings}
    tokenizer = None
    if kind in TEXT_KINDS:
        if not texts:
            raise ValueError(f"tiny model ({kind}): a text corpus is needed to train the tokenizer, got none")
        make = _bert_tokenizer if kind == "bert" else _xlnet_tokenizer
        tokenizer = make(list(texts), int(sizes["vocab_size"]))
    torch.manual_seed(seed)
    model = _model(kind, sizes, len(tokenizer) if tokenizer is not None else None).eval()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        processor = _processor(kind, sizes)
        if processor is not None:
            processor.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def tiny_model_from_config(
    entry: Mapping[str, Any],
    out_dir: str | Path,
    *,
    data_dir: str | Path | None,
    columns: Mapping[str, Mapping[str, list[str]]],
) -> Path:
    """Build the tiny model described by one ``tiny_models`` entry (``kind``, ``seed``, ``settings``).

    Text kinds train their tokenizer on the text columns of the validated dataset in ``data_dir`` (required for them;
    other kinds ignore it).
    """
    unknown = sorted(set(entry) - {"kind", "seed", "settings"})
    if unknown:
        raise ValueError(f"tiny_models entry: unknown keys {unknown}, expected kind, seed, settings")
    kind = entry["kind"]
    if kind in TEXT_KINDS and data_dir is None:
        raise ValueError(f"tiny model ({kind}): a text model needs the dataset (data_dir) to train its tokenizer")
    texts = dataset_texts(load_clean(data_dir), columns) if kind in TEXT_KINDS else []
    return build_tiny_model(kind, out_dir, settings=entry.get("settings"), texts=texts, seed=int(entry.get("seed", 0)))
