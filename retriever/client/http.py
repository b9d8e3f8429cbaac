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
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson

from ..errors import BadRequestError, QueueFullError, RetrieverError, ServiceUnavailableError
from .balancer import Balancer, parse_urls

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


class HTTPClient:
    """Client of ``python -m retriever.server`` (one URL or several); sync methods and
    ``a``-prefixed coroutines.

    >>> # with HTTPClient("http://127.0.0.1:8000") as c: c.retrieve(["who wrote hamlet"], topk=3)
    >>> # HTTPClient(["http://node1:8000", "http://node2:8000"])  # spread, fail over
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
    ):
        """``url``: a base URL, a list of them, or a comma-separated string; ``retries``: how
        many times a request is sent again (to any URL) before giving up; ``down_seconds``: how
        long a URL that failed is skipped while others are up; ``transport`` /
        ``async_transport``: httpx transports (tests, unix sockets)."""
        import httpx

        self.urls = parse_urls(url)
        self.url = self.urls[0]
        self.down_seconds = down_seconds
        self._balancer = Balancer(self.urls)
        self._lock = threading.Lock()
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
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

    def _delay(self, attempt: int, response=None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after is not None:
                try:
                    return min(float(retry_after), 60.0)
                except ValueError:
                    pass
        base = min(self.max_backoff, self.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2)

    def _outcome(self, response, attempt: int, url: str) -> tuple[Any, float | None]:
        """(parsed body, None) on success; (exception, delay) when to retry; raises otherwise.

        A retried failure marks ``url`` down, so the next attempt goes to another URL."""
        code = response.status_code
        if code == 200:
            self._balancer.mark_up(url)
            return orjson.loads(response.content), None
        try:
            detail = orjson.loads(response.content).get("detail", response.text)
            ours = True
        except Exception:
            detail, ours = response.text, False
        if code == 422 or code == 400 or code == 413:
            raise BadRequestError(f"{url} refused the request: {detail}")
        if code == 429:
            exc: RetrieverError = QueueFullError(f"{url} is overloaded: {detail}")
        elif code in (502, 503, 504):
            exc = ServiceUnavailableError(f"{url} is unavailable ({code}): {detail}")
        elif code == 500 and not ours:
            # not the service's JSON error but a proxy's (Ray Serve: the replica died while
            # answering); the request only reads, so sending it again is safe
            exc = ServiceUnavailableError(f"{url} failed in front of the service (500): {detail}")
        else:
            raise RetrieverError(f"{url} answered {code}: {detail}")
        if attempt >= self.retries:
            raise exc
        delay = self._delay(attempt, response)
        if code != 500:  # a proxy 500 is one replica's failure, not the URL's
            self._balancer.mark_down(url, delay if code == 429 else max(delay, self.down_seconds))
        return exc, delay

    def _transport_failed(self, exc: Exception, attempt: int, url: str) -> float:
        self._balancer.mark_down(url, self.down_seconds)
        if attempt >= self.retries:
            where = url if len(self.urls) == 1 else f"{', '.join(self.urls)} (last {url})"
            raise ServiceUnavailableError(
                f"cannot reach {where} after {attempt + 1} attempts: {exc!r}; is the server running?"
            ) from exc
        return self._delay(attempt)

    def _wait(self, delay: float) -> float:
        """No wait when another URL is up (fail over at once), else the backoff delay."""
        return 0.0 if len(self.urls) > 1 and self._balancer.any_up() else delay

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)
        for attempt in range(self.retries + 1):
            url = self._balancer.acquire()
            try:
                response = self._client(url).request(method, path, content=content)
            except httpx.TransportError as exc:
                delay = self._transport_failed(exc, attempt, url)
            else:
                parsed, delay = self._outcome(response, attempt, url)
                if delay is None:
                    return parsed
            finally:
                self._balancer.release(url)
            time.sleep(self._wait(delay))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arequest(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)
        for attempt in range(self.retries + 1):
            url = self._balancer.acquire()
            try:
                response = await self._aclient(url).request(method, path, content=content)
            except httpx.TransportError as exc:
                delay = self._transport_failed(exc, attempt, url)
            else:
                parsed, delay = self._outcome(response, attempt, url)
                if delay is None:
                    return parsed
            finally:
                self._balancer.release(url)
            await asyncio.sleep(self._wait(delay))
        raise AssertionError("unreachable")  # pragma: no cover

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
        self, queries: Sequence[str], topk: int = 3, retriever: str | None = None
    ) -> list[list[dict]]:
        body = self._retrieve_body(queries, topk, retriever)
        return _scored(self._request("POST", "/retrieve", body)["result"])

    async def aretrieve(
        self, queries: Sequence[str], topk: int = 3, retriever: str | None = None
    ) -> list[list[dict]]:
        body = self._retrieve_body(queries, topk, retriever)
        return _scored((await self._arequest("POST", "/retrieve", body))["result"])

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

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> HTTPClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
