"""One registry class for every kind of named, pluggable thing: models, entity fusions, extractor kinds, reference
models and simulator worlds (docs/architecture.md, "Where a change goes").

A registry maps a name to an object (a builder, a class, a fit function). Registering a name twice raises; looking
up an unknown name raises a ValueError naming it and the known names. Where the workflow must check names when it
loads without importing torch, a torch-free catalog lists them too (``memf.models.options.MODEL_OPTIONS``,
``memf.features.spec.KINDS``, ``memf.training.matrix.REFERENCE_OPTIONS``); a test keeps each catalog equal to its
registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> object, in registration order.

    Args:
        kind: what the names are, for messages ("model", "extractor kind", ...).
        load: called with an unknown name before :meth:`lookup` gives up, to import the module that registers it
            (extractor kinds are imported on first use); it may register nothing.
    """

    def __init__(self, kind: str, load: Callable[[str], None] | None = None) -> None:
        self.kind = kind
        self._load = load
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or plain call: ``registry.register(name)(obj)``) adding ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return add

    def lookup(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            ValueError: ``name`` is not registered (the message lists the known names).
        """
        if name not in self._items and self._load is not None:
            self._load(name)
        if name not in self._items:
            raise ValueError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._items))})")
        return self._items[name]

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
