"""Search clients with one interface: over HTTP (``HTTPClient``) or in this process (``InProcessClient``).

Both satisfy ``retriever.protocol.SearchClient`` and also offer coroutine forms ``aretrieve`` /
``aaccess``. ``retrieve`` returns one list per query of document dicts (``id``, ``contents``,
``title``, ``text``, ``url``, ``score``); ``access`` one page dict or None per requested name.

The HTTP client pools connections (httpx), has timeouts, and retries a bounded number of times
with exponential backoff on connection errors, 503, and 429 (waiting ``Retry-After``). Given
several base URLs (replicas, or the Ray Serve proxy of each node) it sends each request to the
one with the fewest requests in flight, and fails over: a URL that refused a connection or
answered 503/429 is left out for ``down_seconds`` and the request is retried at once on another.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import (
    AuthError,
    BadRequestError,
    CorruptStoreError,
    QueueFullError,
    RetrieverError,
    ServiceUnavailableError,
)
from ..retry import Retry, RetryPolicy, arun, retryable_status, run
from .balancer import Balancer, parse_urls
from .base import ClientBase

__all__ = ["HTTPClient"]


def _scored(result: list[list[dict]]) -> list[list[dict]]:
    """``[[{"document": doc, "score": s}]]`` (Search-R1 with scores) to ``[[{**doc, "score": s}]]``."""
    return [[{**item["document"], "score": item["score"]} for item in hits] for hits in result]


def _access_body(urls, titles, ids, offset, max_chars) -> dict:
    body: dict[str, Any] = {"urls": list(urls)}
    if titles:
        body["titles"] = list(titles)
    if ids:
        body["ids"] = list(ids)
    if offset:
        body["offset"] = offset
    if max_chars is not None:
        body["max_chars"] = max_chars
    return body


class HTTPClient(ClientBase):
    """Client of ``python -m retriever.server`` (one URL or several); sync methods and
    ``a``-prefixed coroutines.

        with HTTPClient("http://127.0.0.1:8000") as c: c.retrieve(["who wrote hamlet"], topk=3)
        HTTPClient(["http://node1:8000", "http://node2:8000"])  # spread, fail over
    """

    def __init__(
        self,
        url: str | Sequence[str] = "http://127.0.0.1:8000",
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        token: str | None = None,
        max_connections: int = 256,
        transport=None,
        async_transport=None,
        down_seconds: float = 5.0,
        retry: RetryPolicy | None = None,
    ):
        """``url``: a base URL, a list of them, or a comma-separated string; ``retries``,
        ``backoff``, ``max_backoff``: the ``RetryPolicy`` (or pass ``retry``): how many times a
        request is sent again (to any URL) before giving up, and how long to wait;
        ``down_seconds``: how long a URL that failed is skipped while others are up;
        ``transport`` / ``async_transport``: httpx transports (tests, unix sockets)."""
        import httpx

        self.urls = parse_urls(url)
        self.url = self.urls[0]
        self.down_seconds = down_seconds
        self._balancer = Balancer(self.urls)
        self._lock = threading.Lock()
        self.policy = retry or RetryPolicy(
            retries=retries, backoff=backoff, max_backoff=max_backoff
        )
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._transport = transport
        self._async_transport = async_transport
        self._sync: dict[str, httpx.Client] = {}
        self._async: dict[tuple[int, str], httpx.AsyncClient] = {}

    @classmethod
    def discover(cls, folder: str | os.PathLike | None = None, **options) -> HTTPClient:
        """A client of every server listed in ASearcher's address directory (``folder``, or
        ``$RAG_SERVER_ADDR_DIR``): the ``Host{ip}_IP{port}.txt`` files that servers started
        with ``--save-address-to`` write."""
        from ..addresses import read_addresses

        folder = folder or os.environ.get("RAG_SERVER_ADDR_DIR")
        if not folder:
            raise BadRequestError("no address directory: pass one or set RAG_SERVER_ADDR_DIR")
        return cls(read_addresses(folder), **options)

    # ---- plumbing -------------------------------------------------------------------------
    def _client(self, url: str | None = None):
        import httpx

        url = url or self.url
        client = self._sync.get(url)
        if client is None:
            with self._lock:
                client = self._sync.get(url)
                if client is None:
                    client = httpx.Client(
                        base_url=url,
                        timeout=self._timeout,
                        limits=self._limits,
                        headers=self._headers,
                        transport=self._transport,
                    )
                    self._sync[url] = client
        return client

    def _aclient(self, url: str | None = None):
        import httpx

        key = (id(asyncio.get_running_loop()), url or self.url)
        client = self._async.get(key)
        if client is None:  # an httpx.AsyncClient is bound to its event loop
            client = httpx.AsyncClient(
                base_url=key[1],
                timeout=self._timeout,
                limits=self._limits,
                headers=self._headers,
                transport=self._async_transport,
            )
            self._async[key] = client
        return client

    def _outcome(self, response, attempt: int, url: str) -> Any:
        """The parsed body of a 200; else raises: ``Retry`` for what is worth sending again
        (marking ``url`` down, so the next attempt goes to another URL), the mapped error
        for the rest (a 4xx is the caller's fault: reported at once)."""
        code = response.status_code
        if code == 200:
            self._balancer.mark_up(url)
            return orjson.loads(response.content)
        try:
            body = orjson.loads(response.content)
            detail, kind, ours = body.get("detail", response.text), body.get("error"), True
        except Exception:
            detail, kind, ours = response.text, None, False
        if code == 503 and kind == "index_damaged":
            # no wait mends a damaged index: another URL may serve an intact copy, else fail now
            error = CorruptStoreError(f"{url}: {detail}")
            if len(self.urls) == 1:
                raise error
            self._balancer.mark_down(url, self.down_seconds)
            raise Retry(error)
        if code in (400, 413, 422):
            raise BadRequestError(f"{url} refused the request: {detail}")
        if code == 401:
            raise AuthError(f"{url} refused the request: {detail}; pass token=...")
        # a 500 that is not the service's JSON error came from a proxy in front of it (Ray
        # Serve: the replica died while answering); the request only reads, so resending is safe
        if not retryable_status(code, proxy=not ours):
            raise RetrieverError(f"{url} answered {code}: {detail}")
        if code == 429:
            exc: RetrieverError = QueueFullError(f"{url} is overloaded: {detail}")
        elif code == 500:
            exc = ServiceUnavailableError(f"{url} failed in front of the service (500): {detail}")
        else:
            exc = ServiceUnavailableError(f"{url} is unavailable ({code}): {detail}")
        retry_after = response.headers.get("retry-after")
        if code != 500:  # a proxy 500 is one replica's failure, not the URL's
            wait = self.policy.delay(attempt, retry_after)
            self._balancer.mark_down(url, wait if code == 429 else max(wait, self.down_seconds))
        raise Retry(exc, retry_after)

    def _unreachable(self, exc: Exception, attempt: int, url: str) -> Retry:
        self._balancer.mark_down(url, self.down_seconds)
        where = url if len(self.urls) == 1 else f"{', '.join(self.urls)} (last {url})"
        error = ServiceUnavailableError(
            f"cannot reach {where} after {attempt + 1} attempts: {exc!r}; is the server running?"
        )
        error.__cause__ = exc
        return Retry(error)

    def _wait(self, delay: float) -> float:
        """No wait when another URL is up (fail over at once), else the policy's delay."""
        return 0.0 if len(self.urls) > 1 and self._balancer.any_up() else delay

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)

        def attempt(n: int) -> Any:
            url = self._balancer.acquire()
            try:
                try:
                    response = self._client(url).request(method, path, content=content)
                except httpx.TransportError as exc:
                    raise self._unreachable(exc, n, url) from None
                return self._outcome(response, n, url)
            finally:
                self._balancer.release(url)

        return run(self.policy, attempt, sleep=lambda s: time.sleep(self._wait(s)))

    async def _arequest(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)

        async def attempt(n: int) -> Any:
            url = self._balancer.acquire()
            try:
                try:
                    response = await self._aclient(url).request(method, path, content=content)
                except httpx.TransportError as exc:
                    raise self._unreachable(exc, n, url) from None
                return self._outcome(response, n, url)
            finally:
                self._balancer.release(url)

        return await arun(self.policy, attempt, sleep=lambda s: asyncio.sleep(self._wait(s)))

    @staticmethod
    def _retrieve_body(queries, topk, retriever) -> dict:
        if isinstance(queries, str):
            raise BadRequestError("queries must be a list of strings, not one string")
        body: dict[str, Any] = {"queries": list(queries), "topk": topk, "return_scores": True}
        if retriever is not None:
            body["retriever"] = retriever
        return body

    # ---- the SearchClient interface -------------------------------------------------------
    def retrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:
        body = self._retrieve_body(queries, topk, retriever)
        return _scored(self._request("POST", "/retrieve", body)["result"])

    async def aretrieve(
        self, queries: Sequence[str], topk: int | None = None, retriever: str | None = None
    ) -> list[list[dict]]:
        body = self._retrieve_body(queries, topk, retriever)
        return _scored((await self._arequest("POST", "/retrieve", body))["result"])

    def browse(self, requests: Sequence[dict]) -> list[dict]:
        """Browser views (``retriever.store.browse``): one view or ``{"error", "status"}`` per
        request of ``{"action": "open"|"find"|"sections", "id", ...}``."""
        return self._request("POST", "/browse", {"requests": list(requests)})["result"]

    async def abrowse(self, requests: Sequence[dict]) -> list[dict]:
        return (await self._arequest("POST", "/browse", {"requests": list(requests)}))["result"]

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        body = _access_body(urls, titles, ids, offset, max_chars)
        return self._request("POST", "/access", body)["result"]

    async def aaccess(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        body = _access_body(urls, titles, ids, offset, max_chars)
        return (await self._arequest("POST", "/access", body))["result"]

    def health(self) -> dict:
        return self._request("GET", "/health")

    def info(self) -> dict:
        return self._request("GET", "/info")

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.2) -> dict:
        """Poll ``/health`` until every URL is ready; the first URL's report.
        ``ServiceUnavailableError`` on timeout, naming the URLs not ready."""
        import httpx

        deadline = time.monotonic() + timeout
        reports: dict[str, dict] = {}
        last: dict[str, object] = {}
        while time.monotonic() < deadline:
            for url in self.urls:
                if url in reports:
                    continue
                try:
                    response = self._client(url).get("/health")
                    if response.status_code == 200:
                        reports[url] = orjson.loads(response.content)
                        self._balancer.mark_up(url)
                    else:
                        last[url] = response.text
                except httpx.TransportError as exc:
                    last[url] = exc
            if len(reports) == len(self.urls):
                return reports[self.url]
            time.sleep(interval)
        waiting = {u: last.get(u) for u in self.urls if u not in reports}
        raise ServiceUnavailableError(f"not ready after {timeout}s: {waiting!r}")

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        clients, self._sync = list(self._sync.values()), {}
        for client in clients:
            client.close()

    async def aclose(self) -> None:
        self.close()
        clients, self._async = list(self._async.values()), {}
        for client in clients:
            await client.aclose()
