"""Stage 1: feature extractors (one registry), the sharded feature store, tiny local models (docs/features.md).

Kinds (:data:`memf.features.spec.KINDS`): ``transformers-text`` (text), ``torchvision`` (image), ``videomae``
(video), ``wav2vec2`` (audio) and ``log-standard`` (numeric). Importing this package does not import torch; the
module of a kind is imported when an extractor of that kind is built.
"""
