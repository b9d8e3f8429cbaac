"""``python -m retriever.server --index ROOT``: the HTTP API of DESIGN.md over a ``RetrievalService``.

A thin FastAPI layer: it parses bodies (orjson), calls the service, formats results, and maps
errors to status codes (422 bad request, 429 queue full with ``Retry-After``, 503 loading or
worker dead, 401 bad token). Search-R1 (``/retrieve``) and ASearcher (``/access``) compatible.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from ..errors import BadRequestError, QueueFullError, RetrieverError, ServiceUnavailableError
from .service import RetrievalService, ServiceConfig, rss_bytes

log = logging.getLogger(__name__)

_STR_LIST = {"type": "array", "items": {"type": "string"}}
_INT = {"type": "integer", "minimum": 1}
RETRIEVE_SCHEMA = {
    "type": "object",
    "properties": {
        "queries": {**_STR_LIST, "minItems": 1, "description": "one result list per query"},
        "query": {"type": "string", "description": "a single query (instead of queries)"},
        "topk": {**_INT, "description": "results per query (aliases top_k, k)"},
        "top_k": _INT,
        "k": _INT,
        "return_scores": {"type": "boolean", "default": False},
        "retriever": {"type": "string", "description": "bm25, dense-NAME or hybrid"},
        "retriever_type": {"type": "string", "description": "rLLM alias: sparse, dense, hybrid"},
    },
}
ACCESS_SCHEMA = {
    "type": "object",
    "properties": {
        "urls": _STR_LIST,
        "titles": _STR_LIST,
        "ids": _STR_LIST,
        "offset": {"type": "integer", "minimum": 0, "default": 0},
        "max_chars": {"type": "integer", "minimum": 1},
    },
}
_ERROR = {"description": "error", "content": {"application/json": {}}}


def _openapi(schema: dict) -> dict:
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {"422": _ERROR, "429": _ERROR, "503": _ERROR},
    }


def json_response(obj: Any, status: int = 200, headers: dict | None = None):
    return Response(
        orjson.dumps(obj), status_code=status, media_type="application/json", headers=headers
    )


def error_response(exc: BaseException):
    """One exception type -> one status code; the body names what was wrong."""
    headers = None
    if isinstance(exc, BadRequestError):
        status, kind = 422, "bad_request"
    elif isinstance(exc, QueueFullError):
        status, kind = 429, "overloaded"
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, ServiceUnavailableError):
        status, kind = 503, "unavailable"
        if exc.retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, PermissionError):
        status, kind = 401, "unauthorized"
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RetrieverError):
        status, kind = 500, "search_failed"
    else:
        status, kind = 500, "internal_error"
    if status == 500:
        log.error("request failed: %r", exc)
    return json_response({"error": kind, "detail": str(exc) or repr(exc)}, status, headers)


# ---- request parsing ----------------------------------------------------------------------
async def read_json(request, limit: int) -> dict:
    """The request body as a JSON object, refusing bodies over ``limit`` bytes (422)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequestError(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequestError(f"body is over the limit of {limit} bytes: split the request")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequestError("empty body: send a JSON object")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequestError(f"body must be a JSON object, got {type(obj).__name__}")
    return obj


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) and isinstance(value, int):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise BadRequestError(f"{name} must be true or false, got {value!r}")


def parse_retrieve(body: dict) -> tuple[list, int | None, bool, str | None, bool]:
    """(queries, topk, return_scores, retriever, single) from a Search-R1 / rLLM style body.

    ``single`` is true when the body sent one ``query`` string (rLLM's form), whose response
    also carries rLLM's ``results`` list.
    """
    single = False
    if "queries" in body and "query" in body:
        raise BadRequestError("send either 'queries' (a list) or 'query' (a string), not both")
    if "queries" in body:
        queries = body["queries"]
        if not isinstance(queries, list):
            raise BadRequestError(
                f"queries must be a list of strings, got {type(queries).__name__}"
            )
    elif "query" in body:
        query = body["query"]
        single = isinstance(query, str)
        queries = query if isinstance(query, list) else [query]
    else:
        raise BadRequestError("missing 'queries' (a list of strings) or 'query' (a string)")
    given = {key: body[key] for key in ("topk", "top_k", "k") if body.get(key) is not None}
    if len(set(map(repr, given.values()))) > 1:
        raise BadRequestError(f"conflicting result counts {given}: send one of topk, top_k, k")
    topk = next(iter(given.values()), None)
    return_scores = _flag(body.get("return_scores", False), "return_scores")
    retriever = body.get("retriever")
    if retriever is None:
        retriever = body.get("retriever_type")  # rLLM: dense, sparse, hybrid
    if retriever is not None and not isinstance(retriever, str):
        raise BadRequestError(f"retriever must be a string, got {retriever!r}")
    return queries, topk, return_scores, retriever, single


def _names(body: dict, key: str) -> list:
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise BadRequestError(f"{key} must be a list of strings, got {type(value).__name__}")
    return value


def format_results(service: RetrievalService, results: list, return_scores: bool) -> list:
    """Search-R1's two response shapes: docs, or ``{"document": doc, "score": s}`` items."""
    store = service.index.store
    if return_scores:
        return [
            [{"document": store.get(h.row).to_dict(), "score": float(h.score)} for h in hits]
            for hits in results
        ]
    return [[store.get(h.row).to_dict() for h in hits] for hits in results]


# ---- the app ------------------------------------------------------------------------------
def create_app(service_or_config: RetrievalService | ServiceConfig, *, background: bool = True):
    """The FastAPI app. Its lifespan starts the service (in the background: 503 until loaded,
    unless it is already started) and stops it, answering every waiting request."""
    if isinstance(service_or_config, ServiceConfig):
        service = RetrievalService(service_or_config)
    else:
        service = service_or_config
    config = service.config

    @asynccontextmanager
    async def lifespan(app):
        owned = service.state == "created"
        if owned:
            if background:
                service.start_background()
            else:
                await run_in_threadpool(service.start)
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(service.stop)

    app = FastAPI(
        title="retriever",
        description=__doc__,
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    token = config.token
    metrics = service.metrics

    async def handle(
        request: Request, endpoint: str, fn: Callable[[], Awaitable[Any]], auth: bool = True
    ):
        start = time.perf_counter()
        try:
            if auth and token is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    raise PermissionError(
                        "missing or wrong bearer token (Authorization: Bearer ...)"
                    )
            response = await fn()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # every error becomes a JSON answer
            response = error_response(exc)
        metrics.requests.inc(endpoint=endpoint, code=str(response.status_code))
        metrics.request_seconds.observe(time.perf_counter() - start, endpoint=endpoint)
        return response

    @app.post("/retrieve", openapi_extra=_openapi(RETRIEVE_SCHEMA))
    async def retrieve(request: Request) -> Response:
        """Search-R1 compatible: ``{"result": [[doc, ...], ...]}`` (or scored items)."""

        async def run():
            body = await read_json(request, config.max_body_bytes)
            queries, topk, return_scores, name, single = parse_retrieve(body)
            results = await service.asearch(queries, topk, name)
            if sum(len(h) for h in results) > 512:  # do not stall the event loop
                result = await run_in_threadpool(format_results, service, results, return_scores)
            else:
                result = format_results(service, results, return_scores)
            out: dict[str, Any] = {"result": result}
            if single:  # rLLM's LocalRetrievalTool reads "results" items with "content"
                docs = result[0] if not return_scores else [i["document"] for i in result[0]]
                out["query"] = queries[0]
                out["results"] = [
                    {**doc, "content": doc["contents"], "score": float(h.score)}
                    for doc, h in zip(docs, results[0])
                ]
                out["num_results"] = len(docs)
            return json_response(out)

        return await handle(request, "/retrieve", run)

    @app.post("/access", openapi_extra=_openapi(ACCESS_SCHEMA))
    async def access(request: Request) -> Response:
        """ASearcher compatible: ``{"result": [page | null, ...]}``."""

        async def run():
            body = await read_json(request, config.max_body_bytes)
            result = service.access(
                _names(body, "urls"),
                _names(body, "titles"),
                _names(body, "ids"),
                body.get("offset") or 0,
                body.get("max_chars"),
            )
            return json_response({"result": result})

        return await handle(request, "/access", run)

    @app.get("/health")
    async def health(request: Request) -> Response:
        """200 when every retriever's worker is ready, else 503 with what is not."""

        async def run():
            report = service.health()
            headers = {"Retry-After": "2"} if report["status"] == "loading" else None
            return json_response(report, 200 if report["ready"] else 503, headers)

        return await handle(request, "/health", run, auth=False)

    @app.get("/info")
    async def info(request: Request) -> Response:
        """Manifests, sizes, config, load time and memory."""

        async def run():
            return json_response(await run_in_threadpool(service.info))

        return await handle(request, "/info", run)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        """Prometheus text format."""

        async def run():
            return Response(service.metrics_text(), media_type="text/plain; version=0.0.4")

        return await handle(request, "/metrics", run)

    return app


# ---- the CLI ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    d = {f.name: f.default for f in fields(ServiceConfig)}
    p = argparse.ArgumentParser(prog="python -m retriever.server", description=__doc__)
    p.add_argument("--index", required=True, help="index root (corpus/, bm25/, dense-NAME/)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="dense retrievers: cpu, cuda, cuda:0,1")
    p.add_argument(
        "--dense-mode",
        choices=["sharded", "replicated"],
        default=None,
        help="several devices: split the vectors (sharded, default) or the queries (replicated)",
    )
    p.add_argument(
        "--dense-backend", choices=["auto", "faiss", "torch"], default=None, help="default auto"
    )
    p.add_argument("--search-threads", type=int, default=None, help="BM25 threads per batch")
    p.add_argument("--retrievers", default=None, help="comma list to load (default: all parts)")
    p.add_argument("--default-retriever", default=None, help="when a request names none")
    p.add_argument("--max-batch", type=int, default=d["max_batch"], help="queries per batch")
    p.add_argument("--max-wait-ms", type=float, default=d["max_wait_ms"], help="batch wait")
    p.add_argument("--queue-size", type=int, default=d["queue_size"], help="requests per queue")
    p.add_argument("--cache-size", type=int, default=d["cache_size"], help="0 disables")
    p.add_argument("--default-topk", type=int, default=d["default_topk"])
    p.add_argument("--max-topk", type=int, default=d["max_topk"])
    p.add_argument("--max-queries-per-request", type=int, default=d["max_queries_per_request"])
    p.add_argument("--max-body-bytes", type=int, default=d["max_body_bytes"])
    p.add_argument("--hybrid-k-rrf", type=float, default=d["hybrid_k_rrf"], help="RRF constant")
    p.add_argument("--hybrid-depth", type=int, default=d["hybrid_depth"], help="RRF depth")
    p.add_argument(
        "--token",
        default=os.environ.get("RETRIEVER_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (default: $RETRIEVER_TOKEN)",
    )
    p.add_argument("--no-warmup", action="store_true", help="skip the warm-up query")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(
        index=args.index,
        retrievers=tuple(args.retrievers.split(",")) if args.retrievers else None,
        default_retriever=args.default_retriever,
        device=args.device,
        dense_mode=args.dense_mode,
        dense_backend=args.dense_backend,
        search_threads=args.search_threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        cache_size=args.cache_size,
        default_topk=args.default_topk,
        max_topk=args.max_topk,
        max_queries_per_request=args.max_queries_per_request,
        max_body_bytes=args.max_body_bytes,
        hybrid_k_rrf=args.hybrid_k_rrf,
        hybrid_depth=args.hybrid_depth,
        token=args.token or None,
        warmup=not args.no_warmup,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
        from ..index import Index

        names = Index.open(config.index).names()  # fail fast on a wrong root
    except (RetrieverError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not names:
        print(
            f"error: {config.index} has no bm25/ or dense-NAME/ part: "
            "build one with python -m index_build bm25 --index ROOT",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    t0 = time.perf_counter()
    service = RetrievalService(config)
    app = create_app(service)
    log.info(
        "serving %s on http://%s:%d (RSS %.0f MB before loading); loading %s",
        config.index,
        args.host,
        args.port,
        rss_bytes() / 2**20,
        ", ".join(config.retrievers or names),
    )

    def report_ready() -> None:
        while service.state in ("created", "loading"):
            time.sleep(0.05)
        if service.state == "ready":
            log.info(
                "time-to-ready %.2fs (index load %.2fs), RSS %.0f MB",
                time.perf_counter() - t0,
                service.load_seconds,
                (service.rss_at_ready or 0) / 2**20,
            )

    threading.Thread(target=report_ready, name="report-ready", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit 0 instead of dying by it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    if service.state == "failed":
        return 1
    return 0 if server.started else 1

