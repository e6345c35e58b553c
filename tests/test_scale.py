"""Stage 2 in bounded memory: the peak resident set of pad, of a fit job, and of the export's neutral reference with
the prediction of every stream, at 10 times the streams, stays within 1.3 times (bench/scale_bench.py runs each step in
a fresh process on synthetic features; before the padded store, each grew with the streams: docs/training.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scale_support import PAPER_DIMS, write_synthetic

ROOT = Path(__file__).resolve().parents[1]
#: The paper's dimensions: at the larger size the dense arrays of every stream (380 MB; the layout before the padded
#: store held them and a copy of the training part) are a third of a fit job's baseline (torch alone is 650 MB).
DIMS = PAPER_DIMS
SMALL, LARGE = 150, 1500
#: Blocks, batches and the cache small enough to be full at both sizes, and a training part shuffled by blocks.
LIMITS = ("--batch-size", "16", "--block-rows", "16", "--pad-block", "16", "--field-batch-rows", "128",
          "--cache-mb", "4", "--whole-shuffle-bytes", "0")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for n in (SMALL, LARGE):
        root = tmp_path_factory.mktemp(f"scale{n}")
        write_synthetic(root, n, DIMS, n_shards=2, seed=n)
        out[n] = root
    return out


def peak(step: str, data: Path) -> float:
    """The peak RSS (MiB) of one step run alone in a fresh process (pad first, once, for the others)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from scale_bench import measure_step
    finally:
        sys.path.pop(0)
    if step != "pad" and not (data / "padded.h5").exists():
        measure_step("pad", data, ROOT / "src", *LIMITS)
    return measure_step(step, data, ROOT / "src", *LIMITS)["peak_mib"]


@pytest.mark.parametrize("step", ["pad", "fit", "predict"])
def test_peak_memory_does_not_grow_with_the_streams(synthetic, step):
    small, large = peak(step, synthetic[SMALL]), peak(step, synthetic[LARGE])
    assert large <= 1.3 * small, (small, large)


