"""The seams between parts: what a retriever is, and what a search client is.

``Retriever`` is what the library, the server workers and the CLI call. ``SearchClient`` is
what the env calls: the HTTP client and the in-process client both satisfy it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import BadRequestError
from .types import Hit

DEFAULT_K = 3
"""Results per query when a call names none (or 0): ``Index.search``, the server's
``--default-topk``, the clients and ``retriever.search -k`` (3, as Search-R1's server)."""


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
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]: ...

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]: ...


def resolve_k(
    k: int | None, limit: int | None = None, default: int = DEFAULT_K, name: str = "k"
) -> int:
    """The result count a call means, decided once where the call enters (library, server):
    None or 0 is ``default``; a non-integer, a negative ``k`` or one above ``limit`` is refused.
    What is left past the corpus is clipped by the retriever (``check_search_args``).

    >>> resolve_k(None), resolve_k(0), resolve_k(7)
    (3, 3, 7)
    >>> resolve_k(2000, limit=1000, name="topk")
    Traceback (most recent call last):
    ...
    retriever.errors.BadRequestError: topk must be between 1 and 1000, got 2000
    """
    if k is None or (k == 0 and not isinstance(k, bool)):
        return default
    if isinstance(k, bool) or not isinstance(k, int):
        raise BadRequestError(f"{name} must be an integer, got {k!r}")
    if k < 0 or (limit is not None and k > limit):
        bounds = f"between 1 and {limit}" if limit is not None else ">= 0 (0: the default)"
        raise BadRequestError(f"{name} must be {bounds}, got {k}")
    return k


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
