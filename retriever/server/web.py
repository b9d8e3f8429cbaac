"""The FastAPI plumbing of the app: error mapping (exception handlers), the bearer token (a
dependency), request metrics (an ASGI middleware), and body reading within a size limit.

One exception type, one status: 422 bad request, 401 missing token, 429 queue full (with
``Retry-After``), 503 loading / shutting down / worker died, 500 for a failed search or a bug;
always a JSON body ``{"error", "detail"}``.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from typing import Any

import orjson
from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from ..errors import (
    AuthError,
    BadRequestError,
    CorruptStoreError,
    QueueFullError,
    RetrieverError,
    ServiceUnavailableError,
)
from .metrics import Metrics

log = logging.getLogger(__name__)


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    # built by hand: FastAPI's ORJSONResponse warns per request, and validation of our own
    # output would cost more than the search
    return Response(
        orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers
    )


def _retry_after(seconds: float) -> dict:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_response(exc: BaseException) -> Response:
    """One exception type -> one status code; the body names what was wrong."""
    headers = None
    if isinstance(exc, BadRequestError):
        status, kind = 422, "bad_request"
    elif isinstance(exc, AuthError):
        status, kind = 401, "unauthorized"
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, QueueFullError):
        status, kind = 429, "overloaded"
        headers = _retry_after(exc.retry_after)
    elif isinstance(exc, ServiceUnavailableError):
        status, kind = 503, "unavailable"
        if exc.retry_after is not None:
            headers = _retry_after(exc.retry_after)
    elif isinstance(exc, CorruptStoreError):
        # the index on disk is damaged: not the caller's fault, and no retry will mend it;
        # the detail names the damaged row and `python -m index_build verify`
        status, kind = 503, "index_damaged"
    elif isinstance(exc, RetrieverError):
        status, kind = 500, "search_failed"
    else:
        status, kind = 500, "internal_error"
    if status == 500 or kind == "index_damaged":
        log.error("request failed: %r", exc)
    return json_response({"error": kind, "detail": str(exc) or repr(exc)}, status, headers)


async def on_error(request: Request, exc: Exception) -> Response:
    """The exception handler registered for ``RetrieverError`` and ``Exception``."""
    return error_response(exc)


def bearer_dependency(token: str):
    """A dependency that refuses requests without ``Authorization: Bearer <token>`` (401)."""
    scheme = HTTPBearer(auto_error=False, description="the server's --token")
    expected = token.encode()

    async def require_token(
        given: HTTPAuthorizationCredentials | None = Depends(scheme),  # noqa: B008
    ) -> None:
        if given is None or not hmac.compare_digest(given.credentials.encode(), expected):
            raise AuthError("missing or wrong bearer token (Authorization: Bearer ...)")

    return require_token


class RequestMetrics:
    """ASGI middleware: count requests by endpoint and status code and time them, for the
    given endpoints only (a scan of random paths must not grow the label set)."""

    def __init__(self, app, metrics: Metrics, endpoints: frozenset[str]):
        self.app = app
        self.metrics = metrics
        self.endpoints = endpoints

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in self.endpoints:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client sees when the app raises past every handler

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            metrics = self.metrics
            metrics.child(metrics.requests, path, str(status)).inc()
            metrics.child(metrics.request_seconds, path).observe(time.perf_counter() - start)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing bodies over ``limit`` bytes (422) before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BadRequestError(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequestError(f"body is over the limit of {limit} bytes: split the request")
            chunks.append(chunk)
    except ClientDisconnect:  # closed mid-body (or by the request timeout): no traceback
        raise BadRequestError("the connection closed before the whole body arrived") from None
    return b"".join(chunks)
