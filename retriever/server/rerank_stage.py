"""The server's rerank stage: ``NAME+rerank`` searches and ``/rerank``, coalesced across requests.

A search ``X+rerank`` takes ``depth`` candidates from ``X``'s own batcher (or the hybrid fan-in),
then queues (query, candidate texts) items on the rerank worker, which scores every queued
request's pairs in one model call: pairs are formed per query, never across the batch. When the
reranker is a served dense part's encoder, that part's worker thread serves it too
(``Batcher.add_op``): one thread owns the model; otherwise the stage has its own worker,
``rerank``. Every request is answered: a failed scoring batch fails its requests only.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

from ..errors import BadRequestError
from ..rerank import (
    DEFAULT_DEPTH,
    MAX_DEPTH,
    Reranker,
    check_depth,
    parse_spec,
    rank_scores,
    rerank_hits,
)
from ..types import Hit
from .batching import Batcher
from .futures import settle

log = logging.getLogger(__name__)

OP = "rerank"
Item = tuple[str, Sequence[str]]  # (query, its candidates' texts)


class RerankStage:
    """A reranker behind a batcher (its own, or a dense part's); see the module docstring."""

    def __init__(
        self,
        reranker: Reranker,
        text: Callable[[int], str],
        batcher: Batcher,
        op: str | None,
        depth: int = DEFAULT_DEPTH,
        max_depth: int = MAX_DEPTH,
    ):
        self.reranker = reranker
        self.text = text
        self.batcher = batcher
        self.op = op  # None: the stage's own batcher; OP: a dense part's batcher serves it
        self.depth = check_depth(depth, max_depth)
        self.max_depth = max_depth

    @classmethod
    def attach(
        cls,
        spec: str,
        index,
        batchers: dict[str, Batcher],
        make_batcher: Callable[[str, Callable], Batcher],
        device: str | None = None,
        **options,
    ) -> RerankStage:
        """Load the reranker ``spec`` names; serve it on the batcher of the dense part it is,
        when that part is served, else on a new one from ``make_batcher(name, fn)``."""
        part = parse_spec(spec).model
        reranker = index.reranker(spec, device=device)
        score = functools.partial(score_items, reranker)
        if part in batchers and part in index.names_of_kind("dense"):
            batcher, op = batchers[part].add_op(OP, score), OP
            log.info("reranker %s runs on the worker of %s", reranker.name, part)
        else:
            batcher, op = make_batcher(OP, score), None
            log.info("reranker %s has its own worker", reranker.name)
        get = index.store.get
        return cls(reranker, lambda row: get(row).contents, batcher, op, **options)

    def depth_for(self, k: int, depth: int | None) -> int:
        """Candidates to fetch for ``k`` results: the request's depth (checked) or the
        server's, at least ``k``."""
        if depth is not None:
            check_depth(depth, self.max_depth)
        return max(self.depth if depth is None else depth, k)

    def scores(self, queries: Sequence[str], texts: Sequence[Sequence[str]]) -> Future:
        """A future of one score array per query (non-blocking: 429 when the queue is full;
        it may be called from a worker's own thread, which must never wait on itself)."""
        return self.batcher.submit(list(zip(queries, texts)), 0, op=self.op)

    def after(self, candidates: Future, queries: Sequence[str], k: int) -> Future:
        """A future of the top ``k`` of each query's candidates (``candidates``: a future of
        hit lists), reranked."""
        out: Future = Future()

        def scored(done: Future, found: list[list[Hit]]) -> None:
            try:
                ranked = [rerank_hits(h, s, k) for h, s in zip(found, done.result(), strict=True)]
            except BaseException as exc:
                settle(out, exc=exc)
                return
            settle(out, ranked)

        def fetched(done: Future) -> None:
            try:
                found = done.result()
                texts = [[self.text(h.row) for h in hits] for hits in found]
                inner = self.scores(queries, texts)
            except BaseException as exc:
                settle(out, exc=exc)
                return
            inner.add_done_callback(lambda f: scored(f, found))

        candidates.add_done_callback(fetched)
        return out

    def documents(self, queries: Sequence[str], texts: Sequence[Sequence[str]], k: int) -> Future:
        """``/rerank``: a future of, per query, the indices and scores of its top ``k`` texts."""
        for i, t in enumerate(texts):
            if len(t) > self.max_depth:
                raise BadRequestError(
                    f"documents[{i}] has {len(t)} documents; the limit is {self.max_depth} per "
                    "query: send fewer"
                )
        out: Future = Future()

        def ranked(done: Future) -> None:
            try:
                found = [[(i, float(s[i])) for i in rank_scores(s, k)] for s in done.result()]
            except BaseException as exc:
                settle(out, exc=exc)
                return
            settle(out, found)

        self.scores(queries, texts).add_done_callback(ranked)
        return out


def score_items(reranker: Reranker, items: Sequence[Item | str], _k: int = 0) -> list[np.ndarray]:
    """One model call for every queued item; a bare string (the service's warm-up query) is
    scored against itself."""
    pairs = [(it, [it]) if isinstance(it, str) else it for it in items]
    return reranker.score_batch([q for q, _ in pairs], [list(t) for _, t in pairs])
