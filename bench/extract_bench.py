"""Extraction throughput per modality: end to end (decode in isolated workers + model) against the model alone.

For each of text, image, video and audio it prints items/s end to end, items/s of the model alone, their ratio (1.0
= decoding fully hidden behind the model), the model's FLOPs per item (counted by ``torch.utils.flop_counter`` on one
item, attention included) and the peak memory: host RSS, and on CUDA the peak allocated device memory of each
measurement. "Model alone" is the extractor's model forward on inputs decoded, batched, normalised and moved to the
device beforehand; "end to end" is the extractor's real path from the files (:func:`memf.features.extract.embed_files`
for media, ``embed_texts`` for text). Inputs are a synthetic fixture dataset (tests/fixture_data.py).

    python bench/extract_bench.py                       # tiny models, CPU
    python bench/extract_bench.py --paper-sizes --device cuda --streams 64 --text-tokens 32
        # BERT-base, ResNet50 at 224, VideoMAE-base (16 x 224 x 224), wav2vec2-base, all with random weights

``bench/gpu_bench.py`` (run by ``bench/gpu.sh``) calls :func:`build_workspace` and :func:`measure` for its figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fixture dataset is test data
from fixture_data import WORDS, FixtureSizes, write_fixture_dataset  # noqa: E402
from memf.data.contract import DEFAULT_COLUMNS  # noqa: E402
from memf.data.dataset import CleanDataset, load_clean  # noqa: E402
from memf.features.audio import chunk_bounds  # noqa: E402
from memf.features.base import Extractor, MediaExtractor, build_extractor  # noqa: E402
from memf.features.extract import embed_files, field_rows  # noqa: E402
from memf.features.spec import ExtractionSettings, ExtractorSpec  # noqa: E402
from memf.features.text import TransformersText  # noqa: E402
from memf.features.tiny import build_tiny_model, dataset_texts  # noqa: E402

MODALITIES: tuple[str, ...] = ("text", "image", "video", "audio")
TINY = {"bert": {"vocab_size": 1000}, "videomae": {"image_size": 32, "num_frames": 4}, "wav2vec2": {}}
# Random-weight stand-ins of the paper's checkpoints: the configs' defaults are the base sizes.
PAPER = {
    "bert": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "vocab_size": 21128, "max_positions": 512},
    "videomae": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "image_size": 224, "patch_size": 16,
                 "num_frames": 16, "tubelet_size": 2},
    "wav2vec2": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "conv_dim": 512, "conv_pos": 128,
                 "conv_pos_groups": 16},
}
#: One model call's keyword inputs, already on the device.
DeviceBatch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Measured:
    """One modality's figures (rates are medians over the repeats; peaks the largest over them, None on the CPU)."""

    modality: str
    items: int
    e2e_per_s: float
    model_per_s: float
    ratio: float  # median of the per-repeat end-to-end / model-alone ratios
    flops_per_item: float  # counted on the first item (2 x multiply-adds)
    e2e_peak_mib: float | None
    model_peak_mib: float | None
    host_rss_mib: float


def host_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(run: Callable[[], None], items: int, device: torch.device, min_seconds: float) -> float:
    """Items/s of ``run`` (which processes ``items`` inputs), repeated until ``min_seconds`` have passed."""
    start, rounds = time.perf_counter(), 0
    while True:
        run()
        sync(device)
        rounds += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return rounds * items / elapsed


def rate_and_peak(run: Callable[[], None], items: int, device: torch.device,
                  min_seconds: float) -> tuple[float, float | None]:
    """:func:`rate` and the peak allocated device memory (MiB) during it; None on the CPU."""
    if device.type != "cuda":
        return rate(run, items, device, min_seconds), None
    torch.cuda.reset_peak_memory_stats(device)
    measured = rate(run, items, device, min_seconds)
    return measured, torch.cuda.max_memory_allocated(device) / 2**20


def median_rates(e2e: Callable[[], None], model: Callable[[], None], items: int, device: torch.device, repeats: int,
                 min_seconds: float) -> tuple[float, float, float, float | None, float | None]:
    """Median end-to-end and model-alone rates, the median of their per-repeat ratios, and each one's peak device
    memory; the two are measured alternately so that a change in the machine's load hits both."""
    pairs = [(rate_and_peak(e2e, items, device, min_seconds), rate_and_peak(model, items, device, min_seconds))
             for _ in range(repeats)]
    e2e_peaks = [p for (_, p), _ in pairs if p is not None]
    model_peaks = [p for _, (_, p) in pairs if p is not None]
    return (statistics.median(a for (a, _), _ in pairs), statistics.median(b for _, (b, _) in pairs),
            statistics.median(a / b for (a, _), (b, _) in pairs),
            max(e2e_peaks) if e2e_peaks else None, max(model_peaks) if model_peaks else None)


def media_batches(ext: MediaExtractor, decoded: list[np.ndarray]) -> list[DeviceBatch]:
    """The extractor's model inputs on the device, batched as its ``embed`` batches them (audio: chunks of one
    length together), built before any timing."""
    if ext.kind == "wav2vec2":
        groups: dict[int, list[np.ndarray]] = defaultdict(list)
        for wave in decoded:
            for start, stop in chunk_bounds(wave.size, ext.chunk, ext.min_chunk):
                groups[stop - start].append(wave[start:stop])
        return [{"input_values": ext.model_inputs(chunks[i : i + ext.batch_size])}
                for chunks in groups.values() for i in range(0, len(chunks), ext.batch_size)]
    batches = []
    for i in range(0, len(decoded), ext.batch_size):
        part = decoded[i : i + ext.batch_size]
        if ext.kind == "videomae":
            batches.append({"pixel_values": ext.model_inputs(part)})
        else:  # torchvision: the CNN runs channels-last, as in embed
            batches.append({"x": ext.model_inputs(part).contiguous(memory_format=torch.channels_last)})
    return batches


def text_batches(ext: TransformersText, texts: list[str]) -> list[DeviceBatch]:
    """Distinct texts tokenised, sorted by length and batched as ``embed_texts`` does, on the device."""
    encodings = sorted(ext.encode(sorted(set(texts))), key=lambda e: len(e.ids))
    return [{k: v.to(ext.device) for k, v in ext.collate(encodings[i : i + ext.batch_size]).items()}
            for i in range(0, len(encodings), ext.batch_size)]


def call_model(ext: Extractor, inputs: DeviceBatch, grad_mode: Callable[[], Any] = torch.inference_mode) -> Any:
    """The extractor's model on one device batch, as its embedding path calls it (autocast included)."""
    with grad_mode(), ext.autocast():
        return ext.model(inputs["x"]) if "x" in inputs else ext.model(**inputs)


def count_flops(ext: Extractor, batch: DeviceBatch) -> float:
    """FLOPs (2 x multiply-adds) of the model on one device batch. Attention runs through the math kernel while it
    is counted, because the counter does not see inside the fused CPU kernels (the count is the same either way),
    and under ``no_grad``: in inference mode the counter cannot compute wav2vec2's weight-normed convolution."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        call_model(ext, batch, torch.no_grad)
    return float(counter.get_total_flops())


def long_texts(n: int, tokens: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts of ``2 * tokens`` fixture words (each word is at least one token), so that every one is
    cut at ``tokens`` tokens."""
    rng = np.random.default_rng(seed)
    texts: set[str] = set()
    while len(texts) < n:
        texts.add(" ".join(rng.choice(WORDS, size=2 * tokens).tolist()))
    return sorted(texts)


def modality_items(ds: CleanDataset, modality: str, text_tokens: int | None, n_texts: int) -> list[str]:
    """What one modality embeds: texts (the fixture's fields, or ``n_texts`` long texts when ``text_tokens`` is
    set), distinct image files, or clip files."""
    if modality == "text":
        if text_tokens is not None:
            return long_texts(n_texts, text_tokens)
        return field_rows(ds, DEFAULT_COLUMNS, "text")["value"].to_list()
    if modality == "image":
        return sorted({str(ds.media_path(p)) for p in field_rows(ds, DEFAULT_COLUMNS, "image")["value"].to_list()})
    return [str(ds.media_path(p)) for p in ds.clips.filter(pl.col("kind") == modality)["path"].to_list()]


def measure(modality: str, ext: Extractor, items: list[str], repeats: int, min_seconds: float,
            text_tokens: int | None = None) -> Measured:
    """End to end against the model alone for one modality (see the module docstring)."""
    device = ext.device
    if modality == "text":
        assert isinstance(ext, TransformersText)
        ext.embed_texts(items[:64])  # warm-up
        batches = text_batches(ext, items)
        if text_tokens is not None and {int(b["input_ids"].shape[1]) for b in batches} != {text_tokens}:
            raise ValueError(f"text batches are not all {text_tokens} tokens long; make the texts longer")

        def e2e() -> None:
            ext.embed_texts(items)

        one = text_batches(ext, items[:1])[0]
    else:
        assert isinstance(ext, MediaExtractor)
        decoded = [ext.prepare(p) for p in items]  # raises on a file that does not decode; warms the page cache
        embed_files(ext, items[: ext.batch_size])  # warm-up: kernels, allocator, worker start
        batches = media_batches(ext, decoded)

        def e2e() -> None:
            embed_files(ext, items)

        one = media_batches(ext, decoded[:1])[0]

    def model() -> None:
        for inputs in batches:
            call_model(ext, inputs)

    call_model(ext, batches[0])  # warm-up
    # Both rates count every input (text: each distinct text is computed once, as in extraction).
    rates = median_rates(e2e, model, len(items), device, repeats, min_seconds)
    return Measured(modality=modality, items=len(items), e2e_per_s=rates[0], model_per_s=rates[1], ratio=rates[2],
                    flops_per_item=count_flops(ext, one), e2e_peak_mib=rates[3], model_peak_mib=rates[4],
                    host_rss_mib=host_rss_mib())


def build_workspace(work: Path, paper_sizes: bool, streams: int,
                    text_tokens: int | None) -> tuple[CleanDataset, dict[str, ExtractorSpec]]:
    """Write the fixture dataset and the random-weight models under ``work``; return the dataset and one extractor
    spec per modality."""
    fixture = FixtureSizes(n_streams=streams, n_anchors=max(1, streams // 4), items=(2, 4), clips=(2, 3),
                           image_size=256 if paper_sizes else 96, video_frames=32 if paper_sizes else 16,
                           video_size=256 if paper_sizes else 64, audio_seconds=4.0)
    write_fixture_dataset(work / "raw", work / "data", fixture)
    ds = load_clean(work / "data")
    corpus = dataset_texts(ds, DEFAULT_COLUMNS)
    for kind, settings in (PAPER if paper_sizes else TINY).items():
        build_tiny_model(kind, work / "models" / kind, settings=settings, texts=corpus)
    image_opts = {"weights": "none", "resize": 232, "crop": 224} if paper_sizes else {"weights": "none", "resize": 72,
                                                                                      "crop": 64}
    specs = {
        "text": ExtractorSpec("text", "transformers-text", str(work / "models" / "bert"),
                              {"max_length": text_tokens or 64}),
        "image": ExtractorSpec("image", "torchvision", "resnet50" if paper_sizes else "resnet18", image_opts),
        "video": ExtractorSpec("video", "videomae", str(work / "models" / "videomae")),
        "audio": ExtractorSpec("audio", "wav2vec2", str(work / "models" / "wav2vec2")),
    }
    return ds, specs


def run(args: argparse.Namespace, device: torch.device, work: Path) -> None:
    """Print the figures of every modality asked for (the dataset and models written under ``work``)."""
    ds, specs = build_workspace(work, args.paper_sizes, args.streams, args.text_tokens)
    settings = ExtractionSettings(device=args.device, workers=args.workers, batch_size=args.batch_size,
                                  precision="bf16" if device.type == "cuda" else "fp32")
    print(f"{'paper' if args.paper_sizes else 'tiny'} models on {device}, {args.streams} streams, "
          f"{args.workers} decode workers, batch {args.batch_size}")
    print(f"{'modality':8} {'items':>6} {'e2e/s':>9} {'model/s':>9} {'ratio':>6} {'GFLOP':>8}  peak memory")
    for modality in args.modalities.split(","):
        ext = build_extractor(specs[modality], dataclasses.replace(settings), device)
        items = modality_items(ds, modality, args.text_tokens, args.texts)
        m = measure(modality, ext, items, args.repeats, args.min_seconds, args.text_tokens)
        peaks = f"host {m.host_rss_mib:.0f} MiB"
        if m.e2e_peak_mib is not None:
            peaks += f", device {m.e2e_peak_mib:.0f} MiB end to end, {m.model_peak_mib:.0f} MiB model alone"
        print(f"{modality:8} {m.items:6d} {m.e2e_per_s:9.1f} {m.model_per_s:9.1f} {m.ratio:6.2f} "
              f"{m.flops_per_item / 1e9:8.3g}  {peaks}")
        del ext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-sizes", action="store_true", help="base-size models with random weights")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--streams", type=int, default=24, help="streams in the synthetic dataset")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--text-tokens", type=int, default=None,
                        help="embed synthetic texts cut at this many tokens (default: the fixture's short fields)")
    parser.add_argument("--texts", type=int, default=1024, help="synthetic texts with --text-tokens")
    parser.add_argument("--repeats", type=int, default=3, help="alternating end-to-end/model-only measurements")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="shortest duration of one measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="memf-bench-") as work:
        run(args, device, Path(work))


if __name__ == "__main__":
    main()
