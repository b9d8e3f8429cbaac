"""The seams between parts: what a retriever is, and what a search client is.

``Retriever`` is what the library, the server workers and the CLI call. ``SearchClient`` is
what the env calls: the HTTP client and the in-process client both satisfy it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import BadRequestError
from .types import Hit


@runtime_checkable
class Retriever(Protocol):
    """Batch-first search over one index part. Deterministic: ties broken by lower row."""

    name: str

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """One hit list per query, best first, at most ``k`` long (clipped to the corpus)."""
        ...


@runtime_checkable
class SearchClient(Protocol):
    """Search and page access, as the env sees them (sync form).

    ``retrieve`` returns one list per query of document dicts (``id``, ``contents``, ``title``,
    ``text``, ``url``) each with a ``score`` key. ``access`` returns one page dict (``url``,
    ``title``, ``contents``, ``offset``, ``total_chars``) or None per requested name.
    """

    def retrieve(
        self, queries: Sequence[str], topk: int = 3, retriever: str | None = None
    ) -> list[list[dict]]: ...

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]: ...


def check_search_args(queries: Sequence[str], k: int, num_docs: int) -> tuple[list[str], int]:
    """Validate a search call; returns the queries as a list and ``k`` clipped to the corpus.

    >>> check_search_args(["a", "b"], 50, 10)
    (['a', 'b'], 10)
    >>> check_search_args("a", 3, 10)
    Traceback (most recent call last):
    ...
    retriever.errors.BadRequestError: queries must be a list of strings, not one string
    """
    if isinstance(queries, str | bytes):
        raise BadRequestError("queries must be a list of strings, not one string")
    queries = list(queries)
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequestError(f"query {i} is {type(q).__name__}, expected a string")
    if isinstance(k, bool) or not isinstance(k, int):
        raise BadRequestError(f"k must be an integer, got {k!r}")
    if k < 0:
        raise BadRequestError(f"k must be >= 0, got {k}")
    return queries, min(k, num_docs)
