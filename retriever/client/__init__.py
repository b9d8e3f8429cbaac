"""Search clients with one interface: ``HTTPClient`` (over HTTP) and ``InProcessClient``.

Importing this package is light: ``HTTPClient`` needs only orjson and httpx; the in-process
client (which loads the service, numpy and the store) is imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .http import HTTPClient

if TYPE_CHECKING:
    from .inprocess import InProcessClient


def __getattr__(name: str) -> Any:
    if name == "InProcessClient":
        from .inprocess import InProcessClient

        return InProcessClient
    raise AttributeError(f"module 'retriever.client' has no attribute {name!r}")


def connect(
    target: str | os.PathLike | Any | Sequence[str], **options
) -> HTTPClient | InProcessClient:
    """An ``HTTPClient`` for ``http(s)://`` URLs (one, a list, or comma-separated), else an
    ``InProcessClient`` over an index root."""
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return HTTPClient(target, **options)
    if isinstance(target, list | tuple):
        return HTTPClient(list(target), **options)
    from .inprocess import InProcessClient

    return InProcessClient(target, **options)


__all__ = ["HTTPClient", "InProcessClient", "connect"]
