"""What one request may ask for: query count and length, ``topk``, pages per ``/access``.

Checked before anything is queued, so a bad request is a 422 that names the limit and the flag
that sets it, never a failed batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BadRequestError
from ..protocol import resolve_k
from .service_config import ServiceConfig

__all__ = ["check_access", "check_queries"]


def check_queries(
    config: ServiceConfig, queries: Sequence[str], topk: int | None
) -> tuple[list[str], int]:
    """A retrieve call's queries as a list and the ``topk`` it means (None or 0: the default);
    422 naming what is wrong."""
    if isinstance(queries, str | bytes) or not isinstance(queries, Sequence):
        raise BadRequestError("queries must be a list of strings (use 'query' for one string)")
    queries = list(queries)
    limit = config.max_queries_per_request
    if len(queries) > limit:
        raise BadRequestError(
            f"{len(queries)} queries in one request; the limit is {limit}: split the request"
        )
    longest = config.max_query_chars
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequestError(f"query {i} is {type(q).__name__}, expected a string")
        if len(q) > longest:
            raise BadRequestError(
                f"query {i} has {len(q)} characters; the limit is {longest} "
                "(--max-query-chars): shorten it"
            )
    return queries, resolve_k(topk, config.max_topk, config.default_topk, "topk")


def check_access(
    config: ServiceConfig, urls: Sequence[str], titles: Sequence[str], ids: Sequence[str]
) -> None:
    """An ``/access`` call names at least one page and at most the request limit."""
    for label, values in (("urls", urls), ("titles", titles), ("ids", ids)):
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise BadRequestError(f"{label} must be a list of strings")
    count = len(urls) + len(titles) + len(ids)
    if count == 0:
        raise BadRequestError("nothing to access: send urls, titles or ids")
    if count > config.max_queries_per_request:
        raise BadRequestError(
            f"{count} pages in one request; the limit is "
            f"{config.max_queries_per_request}: split the request"
        )
