"""Hybrid retrieval: reciprocal-rank fusion (RRF) of a BM25 and a dense retriever.

A passage's fused score is ``sum(1 / (k_rrf + rank))`` over the lists it appears in (rank
from 1), each list ``depth`` long. Deterministic: lists are summed in a fixed order and ties
are broken by lower row, like every other retriever.

>>> from retriever.types import Hit
>>> fused = rrf_fuse([[Hit(1, 9.0), Hit(2, 8.0)], [Hit(2, 0.9), Hit(3, 0.8)]], k=2, k_rrf=60)
>>> [h.row for h in fused]
[2, 1]
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import BadRequestError
from .protocol import Retriever, check_search_args
from .types import Hit

DEFAULT_K_RRF = 60
DEFAULT_DEPTH = 100


def rrf_fuse(lists: Sequence[Sequence[Hit]], k: int, k_rrf: float = DEFAULT_K_RRF) -> list[Hit]:
    """Fuse ranked hit lists of one query into the top ``k`` by reciprocal rank."""
    scores: dict[int, float] = {}
    for hits in lists:
        for rank, hit in enumerate(hits, start=1):
            scores[hit.row] = scores.get(hit.row, 0.0) + 1.0 / (k_rrf + rank)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return [Hit(row, score) for row, score in ranked[:k]]


class HybridRetriever:
    """``search(queries, k)`` over BM25 and dense, fused by RRF.

    ``depth`` is how many hits each part contributes per query (at least ``k``).
    """

    def __init__(
        self,
        bm25: Retriever,
        dense: Retriever,
        k_rrf: float = DEFAULT_K_RRF,
        depth: int = DEFAULT_DEPTH,
        name: str = "hybrid",
    ):
        if k_rrf < 0:
            raise BadRequestError(f"k_rrf must be >= 0, got {k_rrf}")
        if depth < 1:
            raise BadRequestError(f"depth must be >= 1, got {depth}")
        self.bm25 = bm25
        self.dense = dense
        self.k_rrf = k_rrf
        self.depth = depth
        self.name = name
        self.parts = (bm25, dense)

    def depth_for(self, k: int) -> int:
        return max(self.depth, k)

    def fuse(self, per_part: Sequence[list[list[Hit]]], k: int) -> list[list[Hit]]:
        """Fuse each part's results (one list per query, same query order) into top-``k``."""
        if k == 0:
            return [[] for _ in per_part[0]]
        return [rrf_fuse(lists, k, self.k_rrf) for lists in zip(*per_part)]

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        queries, k = check_search_args(queries, k, num_docs=2**62)
        if k == 0 or not queries:
            return [[] for _ in queries]
        depth = self.depth_for(k)
        return self.fuse([part.search(queries, depth) for part in self.parts], k)
