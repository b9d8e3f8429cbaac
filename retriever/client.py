"""Search clients with one interface: over HTTP (``HTTPClient``) or in this process (``InProcessClient``).

Both satisfy ``retriever.protocol.SearchClient`` and also offer coroutine forms ``aretrieve`` /
``aaccess``. ``retrieve`` returns one list per query of document dicts (``id``, ``contents``,
``title``, ``text``, ``url``, ``score``); ``access`` one page dict or None per requested name.

The HTTP client pools connections (httpx), has timeouts, and retries a bounded number of times
with exponential backoff on connection errors, 503, and 429 (waiting ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any

import orjson

from .batching import QueueFullError, ServiceUnavailableError
from .errors import BadRequestError, RetrieverError
from .service import RetrievalService, ServiceConfig

__all__ = ["HTTPClient", "InProcessClient", "connect"]


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
    """Client of ``python -m retriever.server``; sync methods and ``a``-prefixed coroutines.

    >>> # with HTTPClient("http://127.0.0.1:8000") as c: c.retrieve(["who wrote hamlet"], topk=3)
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
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
    ):
        """``transport`` / ``async_transport``: httpx transports (tests, unix sockets)."""
        import httpx

        self.url = url.rstrip("/")
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
        self._sync: httpx.Client | None = None
        self._async: dict[int, httpx.AsyncClient] = {}

    # ---- plumbing -------------------------------------------------------------------------
    def _client(self):
        import httpx

        if self._sync is None:
            self._sync = httpx.Client(
                base_url=self.url,
                timeout=self._timeout,
                limits=self._limits,
                headers=self._headers,
                transport=self._transport,
            )
        return self._sync

    def _aclient(self):
        import httpx

        loop = id(asyncio.get_running_loop())
        client = self._async.get(loop)
        if client is None:  # an httpx.AsyncClient is bound to its event loop
            client = httpx.AsyncClient(
                base_url=self.url,
                timeout=self._timeout,
                limits=self._limits,
                headers=self._headers,
                transport=self._async_transport,
            )
            self._async[loop] = client
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

    def _outcome(self, response, attempt: int) -> tuple[Any, float | None]:
        """(parsed body, None) on success; (exception, delay) when to retry; raises otherwise."""
        code = response.status_code
        if code == 200:
            return orjson.loads(response.content), None
        try:
            detail = orjson.loads(response.content).get("detail", response.text)
        except Exception:
            detail = response.text
        if code == 422 or code == 400 or code == 413:
            raise BadRequestError(f"{self.url} refused the request: {detail}")
        if code == 429:
            exc: RetrieverError = QueueFullError(f"{self.url} is overloaded: {detail}")
        elif code in (502, 503, 504):
            exc = ServiceUnavailableError(f"{self.url} is unavailable ({code}): {detail}")
        else:
            raise RetrieverError(f"{self.url} answered {code}: {detail}")
        if attempt >= self.retries:
            raise exc
        return exc, self._delay(attempt, response)

    def _transport_failed(self, exc: Exception, attempt: int) -> float:
        if attempt >= self.retries:
            raise ServiceUnavailableError(
                f"cannot reach {self.url} after {attempt + 1} attempts: {exc!r}; is the server running?"
            ) from exc
        return self._delay(attempt)

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)
        for attempt in range(self.retries + 1):
            try:
                response = self._client().request(method, path, content=content)
            except httpx.TransportError as exc:
                time.sleep(self._transport_failed(exc, attempt))
                continue
            parsed, delay = self._outcome(response, attempt)
            if delay is None:
                return parsed
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _arequest(self, method: str, path: str, body: dict | None = None) -> Any:
        import httpx

        content = None if body is None else orjson.dumps(body)
        for attempt in range(self.retries + 1):
            try:
                response = await self._aclient().request(method, path, content=content)
            except httpx.TransportError as exc:
                await asyncio.sleep(self._transport_failed(exc, attempt))
                continue
            parsed, delay = self._outcome(response, attempt)
            if delay is None:
                return parsed
            await asyncio.sleep(delay)
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
        """Poll ``/health`` until the server is ready; ``ServiceUnavailableError`` on timeout."""
        import httpx

        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = self._client().get("/health")
                if response.status_code == 200:
                    return orjson.loads(response.content)
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(interval)
        raise ServiceUnavailableError(f"{self.url} not ready after {timeout}s: {last!r}")

    # ---- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

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


class InProcessClient:
    """The same interface as ``HTTPClient``, over a ``RetrievalService`` in this process.

    ``InProcessClient(root)`` (or ``InProcessClient.from_index(root)``) loads the index root
    and owns the service; ``InProcessClient(service)`` borrows a running one.
    """

    def __init__(
        self, service: RetrievalService | str | os.PathLike, *, retries: int = 50, **options
    ):
        if isinstance(service, RetrievalService):
            if options:
                raise TypeError("options only apply when the client builds the service")
            self.service = service
            self._owns = False
            if service.state == "created":
                service.start()
        else:
            self.service = RetrievalService(ServiceConfig(index=service, **options)).start()
            self._owns = True
        self.retries = retries

    @classmethod
    def from_index(cls, root: str | os.PathLike, **options) -> InProcessClient:
        return cls(root, **options)

    def retrieve(
        self, queries: Sequence[str], topk: int = 3, retriever: str | None = None
    ) -> list[list[dict]]:
        return self.service.retrieve(queries, topk, retriever)

    async def aretrieve(
        self, queries: Sequence[str], topk: int = 3, retriever: str | None = None
    ) -> list[list[dict]]:
        for attempt in range(self.retries + 1):
            try:
                return await self.service.aretrieve(queries, topk, retriever)
            except QueueFullError:
                if attempt >= self.retries:
                    raise
                await asyncio.sleep(min(0.5, 0.001 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def access(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        return self.service.access(urls, titles, ids, offset, max_chars)

    async def aaccess(
        self,
        urls: Sequence[str] = (),
        titles: Sequence[str] = (),
        ids: Sequence[str] = (),
        offset: int = 0,
        max_chars: int | None = None,
    ) -> list[dict | None]:
        return self.access(urls, titles, ids, offset, max_chars)

    def health(self) -> dict:
        return self.service.health()

    def info(self) -> dict:
        return self.service.info()

    def close(self) -> None:
        if self._owns:
            self.service.stop()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> InProcessClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> InProcessClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


def connect(
    target: str | os.PathLike | RetrievalService, **options
) -> HTTPClient | InProcessClient:
    """An ``HTTPClient`` for an ``http(s)://`` URL, else an ``InProcessClient`` over an index root."""
    if isinstance(target, str) and target.startswith(("http://", "https://")):
        return HTTPClient(target, **options)
    return InProcessClient(target, **options)
