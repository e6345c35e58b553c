"""Shared fixtures of the feature-extraction tests: a tiny validated dataset and tiny local models, built once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fixture_data import write_fixture_dataset
from memf.data.contract import DEFAULT_COLUMNS
from memf.data.dataset import load_clean
from memf.features.tiny import build_tiny_model, dataset_texts


@dataclass(frozen=True)
class TinyEnv:
    root: Path  # raw media
    data: Path  # validated tables
    models: Path  # tiny model folders: bert, xlnet, videomae, wav2vec2

    def extractors(self) -> dict[str, dict]:
        """One configured extractor per kind (and XLNet), all on the tiny models."""
        m = self.models
        return {
            "bert": {"kind": "transformers-text", "model": str(m / "bert"), "options": {"max_length": 32}},
            "xlnet": {"kind": "transformers-text", "model": str(m / "xlnet"), "options": {"max_length": 32}},
            "rn": {"kind": "torchvision", "model": "resnet18", "options": {"weights": "none", "resize": 36, "crop": 32}},
            "vm": {"kind": "videomae", "model": str(m / "videomae")},
            "w2v": {"kind": "wav2vec2", "model": str(m / "wav2vec2"),
                    "options": {"chunk_seconds": 0.4, "min_chunk_seconds": 0.1}},
            "num": {"kind": "log-standard"},
        }


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory: pytest.TempPathFactory) -> TinyEnv:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("features")
    env = TinyEnv(root=base / "raw", data=base / "data", models=base / "models")
    write_fixture_dataset(env.root, env.data)
    texts = dataset_texts(load_clean(env.data), DEFAULT_COLUMNS)
    for kind, settings in {"bert": {"vocab_size": 300}, "xlnet": {"vocab_size": 200}, "videomae": {}, "wav2vec2": {}}.items():
        build_tiny_model(kind, env.models / kind, settings=settings, texts=texts, seed=0)
    return env
