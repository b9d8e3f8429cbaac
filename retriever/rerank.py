"""A rerank stage: retrieve ``depth`` candidates from any retriever, rescore them, return ``k``.

A ``Reranker`` scores (query, passage text) pairs. Pairs are formed per query, never across a
batch: query ``i`` is scored only against its own candidates, so a batch of queries gives what
each gives alone. The new order is by the reranker's score, ties kept in the base order.

Names: ``X+rerank`` is retriever ``X`` (``bm25``, ``dense-NAME``, ``hybrid``) reranked. A
reranker spec is ``[KIND:]MODEL``: ``KIND`` one of ``bi-encoder``, ``cross-encoder``,
``MODEL`` a dense part of the index (its query/passage encoder scores only the candidates, so
BM25 + dense rerank needs no dense vectors) or a model folder (the kind read from its own
files when not given).

>>> split_name("bm25+rerank"), split_name("hybrid")
(('bm25', True), ('hybrid', False))
>>> parse_spec("cross-encoder:/models/ms-marco")
RerankSpec(kind='cross-encoder', model='/models/ms-marco')
>>> parse_spec("dense-minilm")
RerankSpec(kind=None, model='dense-minilm')
>>> from retriever.types import Hit
>>> [h.row for h in rerank_hits([Hit(7, 9.0), Hit(3, 8.0), Hit(5, 7.0)], [0.5, 0.9, 0.5], 2)]
[3, 7]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .errors import BadRequestError
from .protocol import Retriever, check_search_args
from .types import Hit

log = logging.getLogger(__name__)

SUFFIX = "+rerank"
KINDS = ("bi-encoder", "cross-encoder")
DEFAULT_DEPTH = 50
MAX_DEPTH = 1000


@runtime_checkable
class Reranker(Protocol):
    """Scores passages against a query (higher is better); pairs never cross queries."""

    name: str

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One float per passage, in the order given."""
        ...

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """``score`` for many queries in one model call: query ``i`` against ``passages[i]``."""
        ...


class BatchScoring:
    """``score`` through ``score_batch``: an implementation writes only the batched form."""

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_batch([query], [passages])[0]

    def score_batch(
        self, queries: Sequence[str], passages: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        raise NotImplementedError


def split_per_query(flat: np.ndarray, passages: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Cut one flat score array (pairs in query order) back into one array per query."""
    bounds = np.cumsum([len(p) for p in passages])[:-1]
    return [np.asarray(part, dtype=np.float32) for part in np.split(flat, bounds)]


@dataclass(frozen=True)
class RerankSpec:
    """What ``--rerank`` names: a kind (``None``: read from the model) and a model or part."""

    kind: str | None
    model: str


def parse_spec(spec: str) -> RerankSpec:
    """``[KIND:]MODEL`` to a spec; ``BadRequestError`` naming the value when it is empty."""
    if not isinstance(spec, str) or not spec.strip():
        raise BadRequestError(
            f"reranker {spec!r} is empty: give [KIND:]MODEL, KIND one of {KINDS}, MODEL a "
            "dense part (dense-NAME) or a model folder"
        )
    kind, sep, model = spec.partition(":")
    if sep and kind in KINDS:
        if not model:
            raise BadRequestError(f"reranker {spec!r} names no model after {kind}:")
        return RerankSpec(kind, model)
    return RerankSpec(None, spec)


def split_name(name: str) -> tuple[str, bool]:
    """``"bm25+rerank"`` -> ``("bm25", True)``; other names -> ``(name, False)``."""
    if isinstance(name, str) and name.endswith(SUFFIX) and len(name) > len(SUFFIX):
        return name[: -len(SUFFIX)], True
    return name, False


def check_depth(depth: object, limit: int = MAX_DEPTH) -> int:
    """The rerank depth as an int in 1..``limit``; ``BadRequestError`` naming it otherwise."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise BadRequestError(f"rerank_depth must be an integer, got {depth!r}")
    if not 1 <= depth <= limit:
        raise BadRequestError(
            f"rerank_depth must be between 1 and {limit}, got {depth}: "
            "ask for fewer candidates (or raise --max-rerank-depth)"
        )
    return depth


def rerank_hits(hits: Sequence[Hit], scores: Sequence[float], k: int) -> list[Hit]:
    """The top ``k`` of ``hits`` by ``scores`` (the reranker's), ties in the base order."""
    if len(scores) != len(hits):
        raise BadRequestError(f"{len(scores)} scores for {len(hits)} candidates")
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))[:k]
    return [Hit(hits[i].row, float(scores[i])) for i in order]


def rank_scores(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the top ``k`` scores, ties by lower index (``/rerank`` of sent documents)."""
    return sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:k]


class RerankRetriever:
    """``search(queries, k)``: the base retriever's top ``max(depth, k)``, reranked, top ``k``.

    ``text(row)`` is the passage text the reranker reads (the store's ``contents``: ``"Title"``
    and the text, as dense parts encode them)."""

    def __init__(
        self,
        base: Retriever,
        reranker: Reranker,
        text: Callable[[int], str],
        depth: int = DEFAULT_DEPTH,
        name: str | None = None,
    ):
        self.base = base
        self.reranker = reranker
        self.text = text
        self.depth = check_depth(depth)
        self.name = name or f"{base.name}{SUFFIX}"

    def depth_for(self, k: int, depth: int | None = None) -> int:
        return max(self.depth if depth is None else depth, k)

    def texts(self, hits: Sequence[Hit]) -> list[str]:
        return [self.text(h.row) for h in hits]

    def rerank(
        self, queries: Sequence[str], candidates: Sequence[Sequence[Hit]], k: int
    ) -> list[list[Hit]]:
        """Rerank each query's own candidates; the top ``k`` of each."""
        if not queries:
            return []
        scores = self.reranker.score_batch(queries, [self.texts(c) for c in candidates])
        return [rerank_hits(c, s, k) for c, s in zip(candidates, scores, strict=True)]

    def search(self, queries: Sequence[str], k: int, depth: int | None = None) -> list[list[Hit]]:
        queries, k = check_search_args(queries, k, num_docs=2**62)
        if depth is not None:
            check_depth(depth)
        if k == 0 or not queries:
            return [[] for _ in queries]
        candidates = self.base.search(queries, self.depth_for(k, depth))
        return self.rerank(queries, candidates, k)
