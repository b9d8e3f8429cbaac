"""``POST /retrieve`` without the framework: the request trainers send thousands of a second.

Profiling the server under load (``scripts/bench/server_layers.py``) showed FastAPI/Starlette's
per-request machinery (middleware stack, routing, dependency solving, ``Request`` objects) costing
more CPU on the event loop than parsing, validating and answering the body together. Here an
admitted ``POST /retrieve`` goes straight to ``retrieve``, the one function the FastAPI route
calls too, so both paths give the same bytes for every body (tests/retriever/server/test_fastpath.py).
Admission is only ever narrower than the framework's: a request whose ``Host`` the check would
refuse, or whose ``Authorization`` is not exactly ``Bearer <token>``, goes the framework's way
and gets its refusal from there.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import wire
from ..errors import BadRequestError
from .web import error_response, json_response

if TYPE_CHECKING:
    from .hosts import HostCheck
    from .service import RetrievalService

# a large body (up to --max-body-bytes) is decoded off the event loop: /health stays fast
LARGE_BODY = 2**18
# an answer of more hits than this is built off the event loop
LARGE_ANSWER = 512


def wants_msgpack(accept: str | None, packed: bool) -> bool:
    return packed or (accept is not None and wire.MSGPACK in accept)


def answer(obj: Any, packed: bool) -> Response:
    if packed:
        return Response(wire.encode_body(obj, True), media_type=wire.MSGPACK)
    return json_response(obj)


async def parse_body(body: bytes, content_type: str | None, model: type) -> tuple[Any, bool]:
    """(the body validated as ``model``, whether it was msgpack)."""

    def decode() -> tuple[Any, bool]:
        obj, packed = wire.decode_body(body, content_type)
        return wire.parse(model, obj), packed

    return await run_in_threadpool(decode) if len(body) > LARGE_BODY else decode()


async def retrieve(
    service: RetrievalService, body: bytes, content_type: str | None, accept: str | None
) -> Response:
    """The answer to one ``/retrieve`` body; raises the errors the handlers map to statuses."""
    request, packed = await parse_body(body, content_type, wire.RetrieveRequest)
    hits = await service.asearch(
        request.queries, request.topk, request.retriever, rerank_depth=request.rerank_depth
    )
    if sum(len(h) for h in hits) > LARGE_ANSWER:  # do not stall the event loop
        out = await run_in_threadpool(format_hits, service, hits, request, packed)
    else:
        out = format_hits(service, hits, request, packed)
    return answer(out, wants_msgpack(accept, packed))


def format_hits(
    service: RetrievalService, hits: list, request: wire.RetrieveRequest, packed: bool
) -> dict:
    return wire.retrieve_response(service.passages(hits), request, msgpack_body=packed)


async def read_body(receive, declared: bytes | None, limit: int) -> bytes:
    """The body from ASGI ``receive``, refused past ``limit`` bytes exactly as ``web.read_body``
    refuses it (same checks, same messages)."""
    if declared is not None:
        text = declared.decode("latin-1")
        if text.isascii() and text.isdigit() and int(text) > limit:
            raise BadRequestError(f"body of {text} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("the connection closed before the whole body arrived")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BadRequestError(f"body is over the limit of {limit} bytes: split the request")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RetrieveFastPath:
    """The ASGI handler of an admitted ``POST /retrieve``; ``admits(scope)`` says which are."""

    def __init__(
        self,
        service: RetrievalService,
        max_body_bytes: int,
        token: str | None,
        host_check: HostCheck | None,
    ):
        self.service = service
        self.limit = max_body_bytes
        self.authorization = f"Bearer {token}".encode() if token else None
        self.host_check = host_check

    def admits(self, scope: dict) -> bool:
        """True for a request the framework would let through: Host allowed, token right."""
        if self.host_check is None and self.authorization is None:
            return True
        host = auth = None
        for key, value in scope["headers"]:
            if key == b"host" and host is None:
                host = value
            elif key == b"authorization" and auth is None:
                auth = value
        if self.host_check is not None:
            if not self.host_check.allows(host.decode("latin-1") if host is not None else None):
                return False
        if self.authorization is not None:
            return auth is not None and hmac.compare_digest(auth, self.authorization)
        return True

    async def __call__(self, scope, receive, send) -> None:
        declared = ctype = accept = None  # the first of each, as Starlette's headers.get
        for key, value in scope["headers"]:
            if key == b"content-length" and declared is None:
                declared = value
            elif key == b"content-type" and ctype is None:
                ctype = value.decode("latin-1")
            elif key == b"accept" and accept is None:
                accept = value.decode("latin-1")
        try:
            body = await read_body(receive, declared, self.limit)
            response = await retrieve(self.service, body, ctype, accept)
        except Exception as exc:  # what the exception handlers of the app answer
            response = error_response(exc)
        await response(scope, receive, send)
