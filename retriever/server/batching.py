"""Request coalescing: one bounded queue and one worker thread per retriever.

Many single-query requests become one ``search(queries, k)`` call. The worker thread owns the
retriever (its model and index), so faiss / torch are only ever called from one thread. It takes
queued requests until it holds ``max_batch`` queries or the oldest request has waited
``max_wait_ms``. Every request gets an answer: its hits, the batch's error when the batch raised
(the worker lives on), or ``ServiceUnavailableError`` at shutdown or when the worker died.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from ..errors import BatchError, QueueFullError, ServiceUnavailableError
from ..types import Hit

log = logging.getLogger(__name__)

SearchFn = Callable[[Sequence[str], int], list[list[Hit]]]
# (retriever name, queries in the batch, requests in the batch, seconds, error or None)
BatchObserver = Callable[[str, int, int, float, BaseException | None], None]


@dataclass(eq=False)
class _Request:
    queries: list
    k: int
    enqueued: float
    future: Future = field(default_factory=Future)
    op: str | None = None  # None: search; else an operation added by ``add_op``


class Batcher:
    """A bounded queue of search requests and the one thread that serves them.

    ``queue_size`` bounds the number of waiting requests (not queries), so one large request
    is always admitted when the queue has room and a full queue drains as the worker works.
    """

    def __init__(
        self,
        name: str,
        search: SearchFn,
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        queue_size: int = 1024,
        observer: BatchObserver | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.name = name
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self._observer = observer
        self._ops: dict[str | None, SearchFn] = {None: search}
        self._queue: deque[_Request] = deque()
        self._queued_queries = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._died: BaseException | None = None
        self._busy = False
        self.batches = 0
        self._avg_batch_seconds = 0.01

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> Batcher:
        with self._cond:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._run, name=f"batcher-{self.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the batch in progress, fail every queued request, join the worker."""
        with self._cond:
            self._stopping = True
            pending = list(self._queue)
            self._queue.clear()
            self._queued_queries = 0
            self._cond.notify_all()
        for req in pending:
            _fail(req, ServiceUnavailableError(f"retriever {self.name!r} is shutting down"))
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and not self._stopping
            and self._died is None
        )

    @property
    def died(self) -> BaseException | None:
        return self._died

    def depth(self) -> int:
        """Requests waiting in the queue (not counting the batch being searched)."""
        return len(self._queue)

    def queued_queries(self) -> int:
        return self._queued_queries

    def add_op(self, op: str, fn: Callable[[Sequence, int], list]) -> Batcher:
        """Serve ``fn(items, k)`` on this worker too (``submit(..., op=op)``): a reranker that
        is a dense part's encoder runs on that part's thread, coalesced with its searches'
        queue, never beside them on another thread."""
        if op in self._ops:
            raise ValueError(f"batcher {self.name!r} already serves {op!r}")
        self._ops[op] = fn
        return self

    # ---- submitting -----------------------------------------------------------------------
    def submit(
        self,
        queries: Sequence,
        k: int,
        *,
        block: bool = False,
        timeout: float | None = None,
        op: str | None = None,
    ) -> Future:
        """Queue a search (or an ``op`` added by ``add_op``: then ``queries`` are its items);
        the future resolves to one result per item.

        Raises ``QueueFullError`` when the queue is full (after waiting up to ``timeout`` when
        ``block``) and ``ServiceUnavailableError`` when the worker is not running.
        """
        if op not in self._ops:
            raise ValueError(f"batcher {self.name!r} serves no operation {op!r}")
        req = _Request(list(queries), k, time.monotonic(), op=op)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_running()
                if len(self._queue) < self.queue_size:
                    break
                if not block:
                    raise QueueFullError(
                        f"retriever {self.name!r} has {len(self._queue)} requests queued "
                        f"(queue size {self.queue_size}); retry later",
                        retry_after=self.retry_after(),
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise QueueFullError(
                        f"retriever {self.name!r} queue stayed full for {timeout}s",
                        retry_after=self.retry_after(),
                    )
                self._cond.wait(remaining)
            self._queue.append(req)
            self._queued_queries += len(req.queries)
            self._cond.notify_all()
        return req.future

    def retry_after(self) -> float:
        """A guess of how long the queue needs to drain, at least one second."""
        batches = max(1.0, self._queued_queries / self.max_batch)
        return max(1.0, round(batches * self._avg_batch_seconds, 1))

    def _check_running(self) -> None:
        if self._died is not None:
            raise ServiceUnavailableError(
                f"retriever {self.name!r} worker died ({self._died!r}); restart the server"
            )
        if self._stopping:
            raise ServiceUnavailableError(f"retriever {self.name!r} is shutting down")
        if self._thread is None:
            raise ServiceUnavailableError(
                f"retriever {self.name!r} is not started yet", retry_after=1.0
            )

    # ---- the worker -----------------------------------------------------------------------
    def _take_batch(self) -> list[_Request] | None:
        """Block until a batch is due; None when stopping."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            deadline = self._queue[0].enqueued + self.max_wait
            while self._queued_queries < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._stopping:
                return None
            batch = [self._queue.popleft()]
            size = len(batch[0].queries)
            while self._queue and size + len(self._queue[0].queries) <= self.max_batch:
                req = self._queue.popleft()
                batch.append(req)
                size += len(req.queries)
            self._queued_queries -= size
            self._busy = True
            self._cond.notify_all()  # wake submitters blocked on a full queue
            return batch

    def _run(self) -> None:
        try:
            while True:
                batch = self._take_batch()
                if batch is None:
                    return
                try:
                    self._serve(batch)
                except BaseException as exc:
                    for req in batch:
                        _fail(req, ServiceUnavailableError(f"retriever {self.name!r} worker died"))
                    raise exc
                finally:
                    self._busy = False
        except BaseException as exc:  # a bug in the loop itself: fail loudly, answer everyone
            log.exception("worker of retriever %r died", self.name)
            with self._cond:
                self._died = exc
                pending = list(self._queue)
                self._queue.clear()
                self._queued_queries = 0
                self._cond.notify_all()
            for req in pending:
                _fail(req, ServiceUnavailableError(f"retriever {self.name!r} worker died"))

    def _serve(self, batch: list[_Request]) -> None:
        """Search a batch, one call per distinct (operation, ``k``), and resolve each request's
        future."""
        by_k: dict[tuple[str | None, int], list[_Request]] = {}
        for req in batch:
            by_k.setdefault((req.op, req.k), []).append(req)
        for (op, k), reqs in by_k.items():
            queries = [q for req in reqs for q in req.queries]
            start = time.perf_counter()
            error: BaseException | None = None
            results: list[list[Hit]] = []
            label = self.name if op is None else op
            try:
                results = self._ops[op](queries, k)
                if not isinstance(results, list) or len(results) != len(queries):
                    got = len(results) if isinstance(results, list) else type(results).__name__
                    raise BatchError(
                        f"retriever {label!r} returned {got} result lists for "
                        f"{len(queries)} queries"
                    )
            except Exception as exc:
                error = exc
            seconds = time.perf_counter() - start
            self.batches += 1
            self._avg_batch_seconds = 0.9 * self._avg_batch_seconds + 0.1 * seconds
            if self._observer is not None:
                try:
                    self._observer(label, len(queries), len(reqs), seconds, error)
                except Exception:
                    log.exception("batch observer failed")
            if error is not None:
                log.warning("batch of %d queries on %r failed: %r", len(queries), label, error)
                for req in reqs:
                    _fail(req, error)
                continue
            pos = 0
            for req in reqs:
                n = len(req.queries)
                _resolve(req, results[pos : pos + n])
                pos += n


def _resolve(req: _Request, value: list[list[Hit]]) -> None:
    try:
        if not req.future.done():
            req.future.set_result(value)
    except InvalidStateError:  # cancelled by its caller meanwhile
        pass


def _fail(req: _Request, exc: BaseException) -> None:
    try:
        if not req.future.done():
            req.future.set_exception(exc)
    except InvalidStateError:
        pass
