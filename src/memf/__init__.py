"""MEMF: multi-entity multimodal fusion for live-commerce sales prediction."""

__version__ = "0.1.0"
