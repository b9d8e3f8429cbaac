"""Memory-mapped local-corpus retrieval: passage store, BM25 and dense search, server, client.

The public face is lazy: ``from retriever import Index, HTTPClient`` imports only what those
names need, and importing this package has no side effects (no logger levels, no numba or
environment settings; the entry points set what they need, see the README).
"""

from __future__ import annotations

from typing import Any

from .errors import (
    AuthError,
    BadRequestError,
    BatchError,
    BuildError,
    CorpusInputError,
    CorruptStoreError,
    IndexFormatError,
    ManifestMismatchError,
    QueueFullError,
    RetrieverError,
    ServiceUnavailableError,
)
from .types import Hit, Page, Passage, ScoredPassage

__version__ = "0.1.0"

_LAZY = {
    "Index": "retriever.index",
    "HTTPClient": "retriever.client",
    "InProcessClient": "retriever.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'retriever' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AuthError",
    "BadRequestError",
    "BatchError",
    "BuildError",
    "CorpusInputError",
    "CorruptStoreError",
    "HTTPClient",
    "Hit",
    "InProcessClient",
    "Index",
    "IndexFormatError",
    "ManifestMismatchError",
    "Page",
    "Passage",
    "QueueFullError",
    "RetrieverError",
    "ScoredPassage",
    "ServiceUnavailableError",
]
