"""The retrieval service: an index root, its retrievers behind batchers, a result cache, metrics.

Everything the HTTP server does lives here, importable and testable without a network; the
FastAPI app and the in-process client are thin layers over one ``RetrievalService``.

>>> # svc = RetrievalService(ServiceConfig(index="demo-index")).start()
>>> # svc.retrieve(["who wrote hamlet"], topk=3)[0][0]["title"]
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from .. import __version__
from ..errors import BadRequestError, QueueFullError, ServiceUnavailableError
from ..hybrid import DEFAULT_DEPTH, DEFAULT_K_RRF, HybridRetriever
from ..store.access import access_pages
from ..types import Hit
from .batching import Batcher
from .cache import LRUCache
from .metrics import Metrics

log = logging.getLogger(__name__)

__all__ = [
    "QueueFullError",
    "RetrievalService",
    "ServiceConfig",
    "ServiceUnavailableError",
]


@dataclass(frozen=True)
class ServiceConfig:
    """How to serve an index root; every field has a ``--kebab-case`` flag in the server CLI."""

    index: str | os.PathLike
    retrievers: tuple[str, ...] | None = None  # None: every part of the index (+ hybrid)
    default_retriever: str | None = None  # None: bm25 when loaded, else the first loaded
    device: str | None = None  # for dense retrievers: cpu, cuda, cuda:0,1
    dense_mode: str | None = None  # several devices: sharded (split vectors) or replicated
    dense_backend: str | None = None  # auto (faiss when built), faiss, torch
    search_threads: int | None = None  # BM25 kernel threads per batch (None: all cores)
    max_batch: int = 64
    max_wait_ms: float = 0.0  # 0: take what queued while the worker was busy, no extra wait
    queue_size: int = 1024
    cache_size: int = 100_000
    default_topk: int = 3
    max_topk: int = 1000
    max_queries_per_request: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    hybrid_k_rrf: float = DEFAULT_K_RRF
    hybrid_depth: int = DEFAULT_DEPTH
    token: str | None = None
    warmup: bool = True

    def __post_init__(self):
        for name in ("max_batch", "queue_size", "default_topk", "max_topk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queries_per_request < 1 or self.max_body_bytes < 1:
            raise ValueError("max_queries_per_request and max_body_bytes must be >= 1")
        if self.cache_size < 0 or self.max_wait_ms < 0:
            raise ValueError("cache_size and max_wait_ms must be >= 0")
        if self.default_topk > self.max_topk:
            raise ValueError(f"default_topk {self.default_topk} > max_topk {self.max_topk}")
        if self.dense_mode not in (None, "sharded", "replicated"):
            raise ValueError(f"dense_mode must be sharded or replicated, got {self.dense_mode!r}")
        if self.dense_backend not in (None, "auto", "faiss", "torch"):
            raise ValueError(
                f"dense_backend must be auto, faiss or torch, got {self.dense_backend!r}"
            )


def rss_bytes() -> int:
    """Resident memory of this process (0 when psutil is unavailable)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover - psutil is a dependency, but never fail on metrics
        return 0


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
        self.cache = LRUCache(config.cache_size)
        self.index = None
        self.state = "created"
        self.error: BaseException | None = None
        self.load_seconds: float | None = None
        self.rss_at_ready: int | None = None
        self.default_retriever: str | None = None
        self._retrievers: dict = {}
        self._batchers: dict[str, Batcher] = {}
        self._hybrids: dict[str, HybridRetriever] = {}
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._start_called = False
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
                hybrid = self.index.retriever(
                    "hybrid", k_rrf=self.config.hybrid_k_rrf, depth=self.config.hybrid_depth
                )
                self._add_hybrid("hybrid", hybrid)
            default = self.config.default_retriever
            if default is None:
                default = (
                    "bm25" if "bm25" in self._retrievers else next(iter(self._retrievers), None)
                )
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

    def _add_hybrid(self, name: str, hybrid: HybridRetriever) -> None:
        for part in hybrid.parts:
            if part.name not in self._batchers:
                self._load(part.name, part)
        self._hybrids[name] = hybrid
        self._retrievers[name] = hybrid

    def _load(self, name: str, retriever=None) -> None:
        if retriever is None:
            options = {}
            if name.startswith("dense-"):
                if self.config.device is not None:
                    options["device"] = self.config.device
                if self.config.dense_mode is not None:  # the loader's shard flag
                    options["shard"] = self.config.dense_mode == "sharded"
                if self.config.dense_backend is not None:
                    options["backend"] = self.config.dense_backend
            if name == "bm25" and self.config.search_threads is not None:
                options["threads"] = self.config.search_threads
            retriever = self.index.retriever(name, **options)
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
        raise ServiceUnavailableError("the service is shutting down")

    @property
    def names(self) -> list[str]:
        return sorted(self._retrievers)

    def resolve(self, retriever: str | None) -> str:
        """The retriever name a request means (``None`` is the default); 422 when unknown."""
        self._check_ready()
        if retriever is None:
            return self.default_retriever
        if retriever == "sparse" and "bm25" in self._retrievers:
            return "bm25"
        if retriever == "dense" and "dense" not in self._retrievers:
            dense = [n for n in self.names if n.startswith("dense-")]
            if dense:
                return dense[0]
        if not isinstance(retriever, str) or retriever not in self._retrievers:
            raise BadRequestError(f"unknown retriever {retriever!r}; this server has {self.names}")
        return retriever

    def check_queries(self, queries: Sequence[str], topk: int | None) -> tuple[list[str], int]:
        """Validate a retrieve call's queries and topk; returns them normalised."""
        if isinstance(queries, str | bytes) or not isinstance(queries, Sequence):
            raise BadRequestError("queries must be a list of strings (use 'query' for one string)")
        queries = list(queries)
        if not queries:
            raise BadRequestError("queries is empty: send at least one query")
        limit = self.config.max_queries_per_request
        if len(queries) > limit:
            raise BadRequestError(
                f"{len(queries)} queries in one request; the limit is {limit}: split the request"
            )
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise BadRequestError(f"query {i} is {type(q).__name__}, expected a string")
        if topk is None:
            topk = self.config.default_topk
        if isinstance(topk, bool) or not isinstance(topk, int):
            raise BadRequestError(f"topk must be an integer, got {topk!r}")
        if not 1 <= topk <= self.config.max_topk:
            raise BadRequestError(f"topk must be between 1 and {self.config.max_topk}, got {topk}")
        return queries, topk

    # ---- search ---------------------------------------------------------------------------
    def submit(
        self,
        queries: Sequence[str],
        topk: int | None = None,
        retriever: str | None = None,
        *,
        block: bool = False,
    ) -> Future:
        """Validate, serve what the cache holds, queue the rest; a future of hit lists."""
        name = self.resolve(retriever)
        queries, k = self.check_queries(queries, topk)
        k = min(k, len(self.index.store))
        self.metrics.queries.inc(len(queries), retriever=name)
        results: list = [None] * len(queries)
        missing: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            cached = self.cache.get((name, q, k)) if self.cache.maxsize else None
            if cached is not None:
                results[i] = cached
            else:
                missing.setdefault(q, []).append(i)
        hits = len(queries) - sum(len(v) for v in missing.values())
        if hits:
            self.metrics.cache_hits.inc(hits, retriever=name)
        outer: Future = Future()
        if not missing:
            outer.set_result(results)
            return outer
        self.metrics.cache_misses.inc(len(queries) - hits, retriever=name)
        todo = list(missing)
        inner = self._search_uncached(name, todo, k, block)

        def fill(done: Future) -> None:
            try:
                found = done.result()
                for q, q_hits in zip(todo, found, strict=True):
                    q_hits = tuple(q_hits)
                    self.cache.put((name, q, k), q_hits)
                    for i in missing[q]:
                        results[i] = q_hits
            except BaseException as exc:
                outer.set_exception(exc)
                return
            outer.set_result(results)

        inner.add_done_callback(fill)
        return outer

    def _submit_part(self, name: str, queries: list[str], k: int, block: bool) -> Future:
        try:
            return self._batchers[name].submit(queries, k, block=block)
        except QueueFullError:
            self.metrics.rejected.inc(retriever=name)
            raise

    def _search_uncached(self, name: str, queries: list[str], k: int, block: bool) -> Future:
        hybrid = self._hybrids.get(name)
        if hybrid is None:
            return self._submit_part(name, queries, k, block)
        depth = hybrid.depth_for(k)
        parts = [self._submit_part(p.name, queries, depth, block) for p in hybrid.parts]
        outer: Future = Future()
        remaining = [len(parts)]
        lock = threading.Lock()

        def one_done(_: Future) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            try:
                outer.set_result(hybrid.fuse([p.result() for p in parts], k))
            except BaseException as exc:
                outer.set_exception(exc)

        for p in parts:
            p.add_done_callback(one_done)
        return outer

    def search(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[Hit]]:
        """Blocking search (waits for queue room instead of raising ``QueueFullError``)."""
        return [list(h) for h in self.submit(queries, topk, retriever, block=True).result()]

    async def asearch(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[Hit]]:
        """Search from a coroutine; raises ``QueueFullError`` when the queue is full."""
        found = await asyncio.wrap_future(self.submit(queries, topk, retriever))
        return [list(h) for h in found]

    def documents(self, results: list[list[Hit]]) -> list[list[dict]]:
        """Hit lists to document dicts (``id``, ``contents``, ``title``, ``text``, ``url``, ``score``)."""
        store = self.index.store
        return [
            [{**store.get(h.row).to_dict(), "score": float(h.score)} for h in hits]
            for hits in results
        ]

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
        if self.index is None:
            self._check_ready()
        for label, values in (("urls", urls), ("titles", titles), ("ids", ids)):
            if isinstance(values, str | bytes) or not isinstance(values, Sequence):
                raise BadRequestError(f"{label} must be a list of strings")
        count = len(urls) + len(titles) + len(ids)
        if count == 0:
            raise BadRequestError("nothing to access: send urls, titles or ids")
        if count > self.config.max_queries_per_request:
            raise BadRequestError(
                f"{count} pages in one request; the limit is "
                f"{self.config.max_queries_per_request}: split the request"
            )
        return access_pages(self.index.store, urls, titles, ids, offset, max_chars)

    # ---- reports --------------------------------------------------------------------------
    def health(self) -> dict:
        workers = {
            name: {
                "alive": b.alive,
                "queue_depth": b.depth(),
                "error": None if b.died is None else repr(b.died),
            }
            for name, b in self._batchers.items()
        }
        ok = self.state == "ready" and all(w["alive"] for w in workers.values())
        status = "ok" if ok else ("degraded" if self.state == "ready" else self.state)
        return {
            "status": status,
            "ready": ok,
            "retrievers": workers,
            "error": None if self.error is None else str(self.error),
            "uptime_s": round(time.monotonic() - self._started, 3),
        }

    def info(self) -> dict:
        config = {k: v for k, v in asdict(self.config).items() if k != "token"}
        config["index"] = str(self.config.index)
        config["token"] = "set" if self.config.token else None
        out = {
            "version": __version__,
            "state": self.state,
            "config": config,
            "default_retriever": self.default_retriever,
            "retrievers": {},
            "load_seconds": self.load_seconds,
            "rss_bytes_at_ready": self.rss_at_ready,
            "rss_bytes": rss_bytes(),
            "cache": self.cache.stats(),
        }
        if self.index is not None:
            out["corpus"] = self.index.store.stats()
            parts = self.index.parts()
            for name in self._retrievers:
                if name in self._hybrids:
                    h = self._hybrids[name]
                    out["retrievers"][name] = {
                        "kind": "hybrid",
                        "parts": [p.name for p in h.parts],
                        "k_rrf": h.k_rrf,
                        "depth": h.depth,
                    }
                else:
                    out["retrievers"][name] = parts.get(name, {})
        return out

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
