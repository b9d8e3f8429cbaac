"""The retrieval service: an index root, its retrievers behind batchers, a result cache, metrics.

Everything the HTTP server does lives here, importable and testable without a network; the
FastAPI app and the in-process client are thin layers over one ``RetrievalService``.

    svc = RetrievalService(ServiceConfig(index="demo-index")).start()
    svc.retrieve(["who wrote hamlet"], topk=3)[0][0]["title"]
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future

from ..errors import (
    BadRequestError,
    BatchError,
    QueueFullError,
    RetrieverError,
    ServiceUnavailableError,
)
from ..hybrid import HybridRetriever
from ..rerank import SUFFIX as RERANK_SUFFIX
from ..rerank import split_name
from ..store.access import access_pages
from ..types import Hit, ScoredPassage
from . import reports
from .batching import Batcher
from .cache import LRUCache
from .futures import fan_in, settle
from .limits import check_access, check_queries
from .metrics import Metrics
from .reports import rss_bytes
from .rerank_stage import RerankStage
from .service_config import ServiceConfig

log = logging.getLogger(__name__)

__all__ = [
    "QueueFullError",
    "RetrievalService",
    "ServiceConfig",  # its home is service_config; old imports from here keep working
    "ServiceUnavailableError",
    "rss_bytes",
]


class RetrievalService:
    """Loads an index root and answers ``retrieve`` / ``access`` calls through coalescing batchers.

    The constructor has no side effects; ``start()`` loads (or ``start_background()`` loads in a
    thread while ``health()`` reports ``loading``); ``stop()`` answers every waiting request.
    """

    def __init__(self, config: ServiceConfig, retrievers: dict | None = None):
        """``retrievers`` (name -> Retriever) replaces loading from the index (tests, Ray Serve)."""
        self.config = config
        self._given = dict(retrievers) if retrievers else None
        self.metrics = Metrics()
        self.cache = LRUCache(config.cache_size, config.cache_bytes)
        self.index = None
        self.state = "created"
        self.error: BaseException | None = None
        self.load_seconds: float | None = None
        self.rss_at_ready: int | None = None
        self.default_retriever: str | None = None
        self._retrievers: dict = {}
        self._batchers: dict[str, Batcher] = {}
        self._hybrids: dict[str, HybridRetriever] = {}
        self.rerank: RerankStage | None = None  # --rerank: NAME+rerank and /rerank
        self._kinds: dict[str, str | None] = {}  # loaded part -> its manifest kind
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._start_called = False
        self._waiting: set[Future] = set()  # searches not answered yet (abort_waiting fails them)
        self.metrics.add_gauge(
            "retriever_queue_depth", "Requests waiting per retriever", self._queue_depths
        )
        self.metrics.add_gauge("retriever_ready", "1 when every worker is ready", self._ready_gauge)
        self.metrics.add_gauge("retriever_cache_entries", "Cached results", self._cache_gauge)
        self.metrics.add_gauge("retriever_rss_bytes", "Resident memory", self._rss_gauge)

    @classmethod
    def from_index(cls, root: str | os.PathLike, **options) -> RetrievalService:
        return cls(ServiceConfig(index=root, **options))

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> RetrievalService:
        """Open the index, load the retrievers, start one worker per retriever, warm up."""
        from ..index import Index

        with self._lock:
            if self._start_called:
                if self._loader is not None and self._loader is not threading.current_thread():
                    self._loader.join()
                if self.state == "failed":
                    raise self.error
                return self
            self._start_called = True
            self.state = "loading"
        t0 = time.perf_counter()
        try:
            self.index = Index.open(self.config.index)
            if self._given is not None:
                for name, retriever in self._given.items():
                    if isinstance(retriever, HybridRetriever):
                        self._add_hybrid(name, retriever)
                    else:
                        self._load(name, retriever)
                names = []
            else:
                names = list(self.config.retrievers or self.index.names())
            for name in names:
                if name != "hybrid":
                    self._load(name)
            if "hybrid" in names:
                for part in (self.index.default_bm25(), self.index.default_dense()):
                    if part is not None and part not in self._batchers:  # with their options
                        self._load(part)
                hybrid = self.index.retriever(
                    "hybrid", k_rrf=self.config.hybrid_k_rrf, depth=self.config.hybrid_depth
                )
                self._add_hybrid("hybrid", hybrid)
            if self.config.rerank:
                self._add_rerank(self.config.rerank)
            default = self.config.default_retriever
            if default is None:  # the BM25 part that "sparse" means, else the first
                default = self._first_of_kind("bm25") or next(iter(self._retrievers), None)
            elif default not in self._retrievers:
                raise BadRequestError(
                    f"default retriever {default!r} is not loaded; loaded: {sorted(self._retrievers)}"
                )
            self.default_retriever = default
            if self.config.warmup:
                for batcher in self._batchers.values():
                    batcher.submit(["warm up"], 1, block=True).result(timeout=600)
        except BaseException as exc:
            self.error = exc
            self.state = "failed"
            log.error("loading %s failed: %s", self.config.index, exc)
            raise
        self.load_seconds = time.perf_counter() - t0
        self.rss_at_ready = rss_bytes()
        self.state = "ready"
        log.info(
            "ready in %.2fs: %s (%d passages), retrievers %s, RSS %.0f MB",
            self.load_seconds,
            self.config.index,
            len(self.index.store),
            sorted(self._retrievers),
            self.rss_at_ready / 2**20,
        )
        return self

    def start_background(self) -> threading.Thread:
        """Load in a thread; requests get 503 (loading) until it is done."""

        def load():
            try:
                self.start()
            except BaseException:  # recorded in self.error, reported by health()
                pass

        with self._lock:
            if self._loader is None and not self._start_called:
                self.state = "loading"
                self._loader = threading.Thread(target=load, name="retriever-loader", daemon=True)
                self._loader.start()
        return self._loader

    def _add_rerank(self, spec: str) -> None:
        """The rerank stage, and ``NAME+rerank`` for every retriever loaded."""

        def make_batcher(name: str, fn) -> Batcher:
            batcher = Batcher(
                name,
                fn,
                max_batch=self.config.max_batch,
                max_wait_ms=self.config.max_wait_ms,
                queue_size=self.config.queue_size,
                observer=self.metrics.observe_batch,
            ).start()
            self._batchers[name] = batcher
            return batcher

        self.rerank = RerankStage.attach(
            spec,
            self.index,
            self._batchers,
            make_batcher,
            device=self.config.device,
            depth=self.config.rerank_depth,
        )
        for name in list(self._retrievers):
            self._retrievers[name + RERANK_SUFFIX] = self._retrievers[name]

    def _add_hybrid(self, name: str, hybrid: HybridRetriever) -> None:
        for part, kind in zip(hybrid.parts, ("bm25", "dense")):  # HybridRetriever(bm25, dense)
            if part.name not in self._batchers:
                self._load(part.name, part, kind)
        self._hybrids[name] = hybrid
        self._retrievers[name] = hybrid

    def part_options(self, kind: str | None) -> dict:
        """The server flags that reach a part of this manifest ``kind`` (whatever its folder
        is called): device, mode and backend for dense parts, threads for BM25 parts."""
        c = self.config
        if kind == "dense":
            shard = None if c.dense_mode is None else c.dense_mode == "sharded"
            options = {
                "device": c.device,
                "shard": shard,
                "backend": c.dense_backend,
                "query_encoder": c.query_encoder,
            }
        elif kind == "bm25":
            options = {"threads": c.search_threads}
        else:
            options = {}
        return {k: v for k, v in options.items() if v is not None}

    def _load(self, name: str, retriever=None, kind: str | None = None) -> None:
        """Load part ``name`` with the options of its manifest kind (or take the one given)."""
        manifest = self.index.parts().get(name)
        if manifest is not None:
            kind = manifest.get("kind")
        if retriever is None:
            retriever = self.index.retriever(name, **self.part_options(kind))
        self._kinds[name] = kind or getattr(retriever, "kind", None)
        self._retrievers[name] = retriever
        self._batchers[name] = Batcher(
            name,
            retriever.search,
            max_batch=self.config.max_batch,
            max_wait_ms=self.config.max_wait_ms,
            queue_size=self.config.queue_size,
            observer=self.metrics.observe_batch,
        ).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Answer every waiting request (``ServiceUnavailableError``) and stop the workers."""
        if self._loader is not None and self._loader.is_alive():
            self._loader.join(timeout)
        if self.state != "failed":
            self.state = "stopped"
        for batcher in self._batchers.values():
            batcher.stop(timeout)
        if self._loader is not None and self._loader.is_alive():
            log.warning(
                "still loading %s after %.0f s: its files stay open", self.config.index, timeout
            )
        elif self.index is not None:  # after the workers: no batch reads the files any more
            self.index.close()

    def begin_shutdown(self) -> None:
        """New requests get 503 with ``Retry-After``; those already queued are still served."""
        if self.state == "ready":
            self.state = "stopping"

    def abort_waiting(self) -> int:
        """Answer every search still waiting (queued or in a running batch) with 503 and
        ``Retry-After``: the drain time is over. Returns how many."""
        n = 0
        for future in list(self._waiting):  # one answered meanwhile is not counted
            error = ServiceUnavailableError("the server is shutting down", retry_after=5.0)
            n += settle(future, exc=error)
        return n

    def __enter__(self) -> RetrievalService:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- checks ---------------------------------------------------------------------------
    def _check_ready(self) -> None:
        if self.state == "ready":
            return
        if self.state == "loading" or self.state == "created":
            raise ServiceUnavailableError("the index is still loading; retry soon", retry_after=2.0)
        if self.state == "failed":
            raise ServiceUnavailableError(f"the index failed to load: {self.error}")
        raise ServiceUnavailableError("the service is shutting down", retry_after=5.0)

    @property
    def names(self) -> list[str]:
        return sorted(self._retrievers)

    def resolve(self, retriever: str | None) -> str:
        """The retriever name a request means (``None`` is the default); 422 when unknown."""
        self._check_ready()
        if retriever is None:
            return self.default_retriever
        if retriever in ("sparse", "dense") and retriever not in self._retrievers:
            alias = self.index.resolve_alias(retriever)  # by manifest kind, not folder name
            if alias not in self._retrievers:  # the first loaded part of that kind
                alias = self._first_of_kind("bm25" if retriever == "sparse" else "dense")
            retriever = alias or retriever
        if not isinstance(retriever, str) or retriever not in self._retrievers:
            if self.rerank is None and split_name(retriever)[1]:
                raise BadRequestError(
                    f"retriever {retriever!r}: this server has no reranker; start it with "
                    f"--rerank [KIND:]MODEL (it has {self.names})"
                )
            raise BadRequestError(f"unknown retriever {retriever!r}; this server has {self.names}")
        return retriever

    def _first_of_kind(self, kind: str) -> str | None:
        """The part ``sparse`` (kind bm25) or ``dense`` means: the index's default part of
        that kind when loaded, else the first loaded part of that kind by name."""
        default = self.index.default_bm25() if kind == "bm25" else self.index.default_dense()
        if default in self._retrievers:
            return default
        return next((n for n in self.names if self._kinds.get(n) == kind), None)

    def check_queries(self, queries: Sequence[str], topk: int | None) -> tuple[list[str], int]:
        """Validate a retrieve call's queries and topk; returns them normalised."""
        return check_queries(self.config, queries, topk)

    # ---- search ---------------------------------------------------------------------------
    def submit(
        self,
        queries: Sequence[str],
        topk: int | None = None,
        retriever: str | None = None,
        *,
        block: bool = False,
        rerank_depth: int | None = None,
    ) -> Future:
        """Validate, serve what the cache holds, queue the rest; a future of hit lists (an
        empty list for no queries, as Search-R1's server answers a turn where nobody searched)."""
        name = self.resolve(retriever)
        queries, k = self.check_queries(queries, topk)  # the retrievers clip k to the corpus
        key = name  # results are cached per name (and rerank depth), query and k
        if self.rerank is not None and split_name(name)[1]:
            key = f"{name}@{self.rerank.depth_for(k, rerank_depth)}"  # checks the depth
        self.metrics.child(self.metrics.queries, name).inc(len(queries))
        results: list = [None] * len(queries)
        missing: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            cached = self.cache.get((key, q, k)) if self.cache.maxsize else None
            if cached is not None:
                results[i] = cached
            else:
                missing.setdefault(q, []).append(i)
        hits = len(queries) - sum(len(v) for v in missing.values())
        if hits:
            self.metrics.child(self.metrics.cache_hits, name).inc(hits)
        outer: Future = Future()
        if not missing:
            outer.set_result(results)
            return outer
        self.metrics.child(self.metrics.cache_misses, name).inc(len(queries) - hits)
        todo = list(missing)
        inner = self._search_uncached(name, todo, k, block, rerank_depth)
        self._waiting.add(outer)
        outer.add_done_callback(self._waiting.discard)

        def fill(done: Future) -> None:
            try:
                found = done.result()
                for q, q_hits in zip(todo, found, strict=True):
                    q_hits = tuple(q_hits)
                    self.cache.put((key, q, k), q_hits)
                    for i in missing[q]:
                        results[i] = q_hits
            except BaseException as exc:
                settle(outer, exc=exc)
                return
            settle(outer, results)

        inner.add_done_callback(fill)
        return outer

    def _submit_part(self, name: str, queries: list[str], k: int, block: bool) -> Future:
        try:
            return self._batchers[name].submit(queries, k, block=block)
        except QueueFullError:
            self.metrics.rejected.labels(name).inc()
            raise

    def _search_uncached(
        self, name: str, queries: list[str], k: int, block: bool, depth: int | None = None
    ) -> Future:
        base, reranked = split_name(name)
        if reranked and self.rerank is not None and base in self._retrievers:
            wanted = self.rerank.depth_for(k, depth)
            found = self._search_uncached(base, queries, wanted, block)
            return self.rerank.after(found, queries, k)
        hybrid = self._hybrids.get(name)
        if hybrid is None:
            return self._submit_part(name, queries, k, block)
        depth = hybrid.depth_for(k)
        parts = [self._submit_part(p.name, queries, depth, block) for p in hybrid.parts]
        return fan_in(parts, lambda found: hybrid.fuse(found, k))

    def search(
        self,
        queries: Sequence[str],
        topk: int | None = None,
        retriever: str | None = None,
        rerank_depth: int | None = None,
    ) -> list[list[Hit]]:
        """Blocking search (waits for queue room instead of raising ``QueueFullError``)."""
        future = self.submit(queries, topk, retriever, block=True, rerank_depth=rerank_depth)
        try:
            return [list(h) for h in future.result()]
        except RetrieverError:
            raise
        except Exception as exc:
            raise self._batch_error(retriever, exc) from exc

    async def asearch(
        self,
        queries: Sequence[str],
        topk: int | None = None,
        retriever: str | None = None,
        rerank_depth: int | None = None,
    ) -> list[list[Hit]]:
        """Search from a coroutine; raises ``QueueFullError`` when the queue is full."""
        future = self.submit(queries, topk, retriever, rerank_depth=rerank_depth)
        try:
            found = await asyncio.wrap_future(future)
        except RetrieverError:
            raise
        except Exception as exc:
            raise self._batch_error(retriever, exc) from exc
        return [list(h) for h in found]

    async def arerank(
        self, queries: Sequence[str], texts: Sequence[Sequence[str]], topk: int | None = None
    ) -> list[list[tuple[int, float]]]:
        """``/rerank``: per query, (index, score) of its own top ``topk`` texts, best first;
        coalesced with every other request on the rerank worker."""
        self._check_ready()
        if self.rerank is None:
            raise BadRequestError(
                "this server has no reranker: start it with --rerank [KIND:]MODEL"
            )
        queries, k = self.check_queries(queries, topk)
        if len(texts) != len(queries):
            raise BadRequestError(f"{len(queries)} queries but {len(texts)} document lists")
        if not queries:
            return []
        try:
            return await asyncio.wrap_future(self.rerank.documents(queries, texts, k))
        except RetrieverError:
            raise
        except Exception as exc:
            raise BatchError(f"rerank with {self.rerank.reranker.name} failed: {exc!r}") from exc

    def _batch_error(self, retriever: str | None, exc: Exception) -> BatchError:
        """A retriever's own exception (not one of ours) becomes a ``BatchError`` that names
        the retriever and the cause (HTTP 500 with that message)."""
        name = retriever or self.default_retriever
        return BatchError(f"search on retriever {name!r} failed: {exc!r}")

    def passages(self, results: list[list[Hit]]) -> Iterator[list[ScoredPassage]]:
        """Hit lists to scored passages read from the store, one query at a time (a response
        of thousands of queries never holds every passage object at once)."""
        return self.index.passages(results)

    def documents(self, results: list[list[Hit]]) -> list[list[dict]]:
        """Hit lists to scored document dicts (``id``, ``contents``, ``title``, ``text``,
        ``url``, ``score``): what the clients return."""
        return [[p.to_dict() for p in hits] for hits in self.passages(results)]

    def retrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:
        return self.documents(self.search(queries, topk, retriever))

    async def aretrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:
        return self.documents(await self.asearch(queries, topk, retriever))

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        """Pages by url, title or id (in that order), windowed; reads only the store."""
        store = self.store
        check_access(self.config, urls, titles, ids)
        return access_pages(
            store, urls, titles, ids, offset, max_chars, self.config.max_access_chars
        )

    @property
    def store(self):
        """The passage store once loaded (503 before): /access, /browse and kiwix read it."""
        if self.index is None:
            self._check_ready()
        return self.index.store

    def browse(self, requests: Sequence[dict]) -> list[dict]:
        """Browser views over the store (``retriever.store.browse``); a bad request fails
        only its own item."""
        from ..store.browse import browse

        return browse(self.store, requests)

    # ---- reports --------------------------------------------------------------------------
    def health(self) -> dict:
        return reports.health(self)

    def info(self) -> dict:
        return reports.info(self)

    def metrics_text(self) -> str:
        return self.metrics.render()

    def _queue_depths(self) -> dict[tuple, float]:
        return {(("retriever", n),): b.depth() for n, b in self._batchers.items()}

    def _ready_gauge(self) -> dict[tuple, float]:
        return {(): 1.0 if self.health()["ready"] else 0.0}

    def _cache_gauge(self) -> dict[tuple, float]:
        return {(): float(len(self.cache))}

    def _rss_gauge(self) -> dict[tuple, float]:
        return {(): float(rss_bytes())}
