"""Extraction throughput per modality: end to end (decode in isolated workers + model) against the model alone.

For each of text, image, video and audio it prints items/s end to end, items/s of the model alone on inputs decoded
beforehand, their ratio (1.0 = decoding fully hidden behind the model), and the peak memory (host RSS; on CUDA also
the peak allocated device memory). Inputs are a synthetic fixture dataset (tests/fixture_data.py).

    python bench/extract_bench.py                       # tiny models, CPU
    python bench/extract_bench.py --paper-sizes --device cuda --streams 64
        # BERT-base, ResNet50 at 224, VideoMAE-base (16 x 224 x 224), wav2vec2-base, all with random weights
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fixture dataset is test data
from fixture_data import FixtureSizes, write_fixture_dataset  # noqa: E402

from memf.data.contract import DEFAULT_COLUMNS  # noqa: E402
from memf.data.dataset import load_clean  # noqa: E402
from memf.features.base import MediaExtractor, build_extractor  # noqa: E402
from memf.features.extract import embed_files, field_rows  # noqa: E402
from memf.features.spec import ExtractionSettings, ExtractorSpec  # noqa: E402
from memf.features.text import TransformersText  # noqa: E402
from memf.features.tiny import build_tiny_model, dataset_texts  # noqa: E402

TINY = {"bert": {"vocab_size": 1000}, "videomae": {"image_size": 32, "num_frames": 4}, "wav2vec2": {}}
# Random-weight stand-ins of the paper's checkpoints: the configs' defaults are the base sizes.
PAPER = {
    "bert": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "vocab_size": 21128, "max_positions": 512},
    "videomae": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "image_size": 224, "patch_size": 16,
                 "num_frames": 16, "tubelet_size": 2},
    "wav2vec2": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "conv_dim": 512, "conv_pos": 128,
                 "conv_pos_groups": 16},
}


def peak_memory(device: torch.device) -> str:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        return f"host {rss:.0f} MiB, device {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    return f"host {rss:.0f} MiB"


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


def median_rates(e2e: Callable[[], None], model: Callable[[], None], items: int, device: torch.device,
                 repeats: int, min_seconds: float) -> tuple[float, float, float]:
    """Median end-to-end and model-only rates, and the median of their per-repeat ratios; the two are measured
    alternately so that a change in the machine's load hits both."""
    pairs = [(rate(e2e, items, device, min_seconds), rate(model, items, device, min_seconds)) for _ in range(repeats)]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(a / b for a, b in pairs))


def bench_media(ext: MediaExtractor, paths: list[str], repeats: int, min_seconds: float) -> tuple[float, float, float]:
    """End to end (decode in isolated workers, then the model) against the model alone on decoded inputs."""
    decoded = [ext.prepare(p) for p in paths]  # raises on a file that does not decode; warms the page cache
    embed_files(ext, paths[: ext.batch_size])  # warm-up: kernels, allocator, worker start

    def model() -> None:
        for i in range(0, len(decoded), ext.batch_size):
            ext.embed(decoded[i : i + ext.batch_size])

    return median_rates(lambda: embed_files(ext, paths), model, len(paths), ext.device, repeats, min_seconds)


def bench_text(ext: TransformersText, texts: list[str], repeats: int, min_seconds: float) -> tuple[float, float, float]:
    """End to end (tokenise, batch, embed, pool) against the model alone on batches tokenised beforehand; both per
    input text, each distinct text computed once as in extraction."""
    ext.embed_texts(texts[:64])
    encodings = sorted(ext.encode(sorted(set(texts))), key=lambda e: len(e.ids))
    encoded = [ext.collate(encodings[i : i + ext.batch_size]) for i in range(0, len(encodings), ext.batch_size)]

    @torch.inference_mode()
    def model() -> None:
        with ext.autocast():
            for enc in encoded:
                ext.model(**{k: v.to(ext.device) for k, v in enc.items()})

    return median_rates(lambda: ext.embed_texts(texts), model, len(texts), ext.device, repeats, min_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-sizes", action="store_true", help="base-size models with random weights")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--streams", type=int, default=24, help="streams in the synthetic dataset")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--modalities", default="text,image,video,audio")
    parser.add_argument("--repeats", type=int, default=3, help="alternating end-to-end/model-only measurements")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="shortest duration of one measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = PAPER if args.paper_sizes else TINY
    work = Path(tempfile.mkdtemp(prefix="memf-bench-"))
    fixture = FixtureSizes(n_streams=args.streams, n_anchors=max(1, args.streams // 4), items=(2, 4), clips=(2, 3),
                           image_size=256 if args.paper_sizes else 96, video_frames=32 if args.paper_sizes else 16,
                           video_size=256 if args.paper_sizes else 64, audio_seconds=4.0)
    write_fixture_dataset(work / "raw", work / "data", fixture)
    ds = load_clean(work / "data")
    for kind, settings in sizes.items():
        build_tiny_model(kind, work / "models" / kind, settings=settings, texts=dataset_texts(ds, DEFAULT_COLUMNS))
    image_opts = {"weights": "none", "resize": 232, "crop": 224} if args.paper_sizes else {"weights": "none", "resize": 72, "crop": 64}
    specs = {
        "text": ExtractorSpec("text", "transformers-text", str(work / "models" / "bert"), {"max_length": 64}),
        "image": ExtractorSpec("image", "torchvision", "resnet50" if args.paper_sizes else "resnet18", image_opts),
        "video": ExtractorSpec("video", "videomae", str(work / "models" / "videomae")),
        "audio": ExtractorSpec("audio", "wav2vec2", str(work / "models" / "wav2vec2")),
    }
    settings = ExtractionSettings(device=args.device, workers=args.workers, batch_size=args.batch_size,
                                  precision="bf16" if device.type == "cuda" else "fp32")
    print(f"{'paper' if args.paper_sizes else 'tiny'} models on {device}, {args.streams} streams, {args.workers} decode workers,"
          f" batch {args.batch_size}")
    print(f"{'modality':8} {'items':>6} {'e2e/s':>9} {'model/s':>9} {'ratio':>6}  peak memory")
    for modality in args.modalities.split(","):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ext = build_extractor(specs[modality], dataclasses.replace(settings), device)
        if modality == "text":
            items = field_rows(ds, DEFAULT_COLUMNS, "text")["value"].to_list()
            e2e, model, ratio = bench_text(ext, items, args.repeats, args.min_seconds)
        elif modality == "image":
            items = sorted({str(ds.media_path(p)) for p in field_rows(ds, DEFAULT_COLUMNS, "image")["value"].to_list()})
            e2e, model, ratio = bench_media(ext, items, args.repeats, args.min_seconds)
        else:
            items = [str(ds.media_path(p)) for p in ds.clips.filter(pl.col("kind") == modality)["path"].to_list()]
            e2e, model, ratio = bench_media(ext, items, args.repeats, args.min_seconds)
        print(f"{modality:8} {len(items):6d} {e2e:9.1f} {model:9.1f} {ratio:6.2f}  {peak_memory(device)}")
        del ext


if __name__ == "__main__":
    main()
