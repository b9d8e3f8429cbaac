"""``python -m retriever.server --index ROOT``: the HTTP API of docs/design.md over a ``RetrievalService``.

A thin FastAPI layer: it parses bodies (JSON through orjson, or msgpack) into the wire models of
``retriever.wire``, calls the service, and formats the results; exception handlers map errors to
status codes (422 bad request, 429 queue full with ``Retry-After``, 503 loading or worker dead,
401 bad token). Search-R1 (``/retrieve``) and ASearcher (``/access``) compatible.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from .. import wire
from ..errors import RetrieverError
from . import fastpath
from .browsing import browse_router
from .hosts import WILDCARD_BINDS
from .metrics import CONTENT_TYPE
from .reports import rss_bytes
from .service import RetrievalService
from .service_config import ServiceConfig
from .web import RequestMetrics, bearer_dependency, json_response, on_error, read_body
from .webapi import ENDPOINTS as WEB_ENDPOINTS
from .webapi import SearchFastPath, web_router

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from .lifecycle import ConnectionLimits

log = logging.getLogger(__name__)

ENDPOINTS = frozenset({"/retrieve", "/rerank", "/access", "/health", "/info", "/metrics"})
_ERRORS = {
    code: {"model": wire.ErrorResponse, "description": text}
    for code, text in (
        (401, "missing or wrong bearer token"),
        (421, "Host names no address of this server (--allowed-hosts)"),
        (422, "bad request: the detail says what and how to fix it"),
        (429, "queue full: retry after Retry-After seconds"),
        (503, "loading, shutting down, or a worker died"),
    )
}


def _body(model: type) -> dict:
    """OpenAPI for a body parsed by hand (JSON or msgpack), from the wire model itself."""
    schema = model.model_json_schema()
    content = {"application/json": {"schema": schema}, wire.MSGPACK: {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


class _App(FastAPI):
    """FastAPI with ``POST /retrieve`` and ``POST /search`` answered by their fast paths when
    ``fastpath`` admits the request."""

    fast: Any = None  # RequestMetrics around a RetrieveFastPath
    fast_search: Any = None  # and around a webapi.SearchFastPath (POST /search)
    fast_check: Any = None  # the RetrieveFastPath's ``admits``, for both

    async def __call__(self, scope, receive, send) -> None:
        if self.fast is not None and scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            handler = {"/retrieve": self.fast, "/search": self.fast_search}.get(path)
            if handler is not None and self.fast_check(scope):
                return await handler(scope, receive, send)
        await super().__call__(scope, receive, send)


# ---- the app ------------------------------------------------------------------------------
def create_app(
    service_or_config: RetrievalService | ServiceConfig,
    *,
    background: bool = True,
    bind_host: str | None = None,
    fast_path: bool = True,
):
    """The FastAPI app. Its lifespan starts the service (in the background: 503 until loaded,
    unless it is already started) and stops it, answering every waiting request.
    ``bind_host``: the address the server listens on, for the ``Host`` check (``hosts.py``).
    ``fast_path=False``: every ``/retrieve`` through FastAPI (the reference for the fast path's
    tests; the answers are the same)."""
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

    app = _App(
        title="retriever",
        description=__doc__,
        version="1",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(RequestMetrics, metrics=service.metrics, endpoints=ENDPOINTS | WEB_ENDPOINTS)
    app.add_exception_handler(RetrieverError, on_error)
    app.add_exception_handler(Exception, on_error)
    guarded = [Depends(bearer_dependency(config.token))] if config.token else []

    async def parse(request: Request, model: type) -> tuple[Any, bool]:
        """(the parsed body, whether the body was msgpack)."""
        body = await read_body(request, config.max_body_bytes)
        return await fastpath.parse_body(body, request.headers.get("content-type"), model)

    @app.post(
        "/retrieve",
        dependencies=guarded,
        openapi_extra=_body(wire.RetrieveRequest),
        responses={200: {"model": wire.RetrieveResponse}, **_ERRORS},
    )
    async def retrieve(request: Request) -> Response:
        """Search-R1 compatible: ``{"result": [[doc, ...], ...]}`` (or scored items); one
        ``query`` string in msgpack (GEM) gets ``{"result": [{"document", "score"}, ...]}``."""
        body = await read_body(request, config.max_body_bytes)
        headers = request.headers
        return await fastpath.retrieve(
            service, body, headers.get("content-type"), headers.get("accept")
        )

    @app.post(
        "/rerank",
        dependencies=guarded,
        openapi_extra=_body(wire.RerankRequest),
        responses={200: {"model": wire.RetrieveResponse}, **_ERRORS},
    )
    async def rerank(request: Request) -> Response:
        """Search-R1's ``rerank_server.py``: each query's own documents reranked by the
        server's ``--rerank`` model, the top ``topk`` (``rerank_topk``) in ``/retrieve``'s
        shape: ``{"result": [[doc, ...], ...]}`` or scored items; docs come back as sent."""
        body, packed = await parse(request, wire.RerankRequest)
        texts = [[wire.document_text(d) for d in docs] for docs in body.documents]
        ranked = await service.arerank(body.queries, texts, body.topk)
        result = []
        for docs, order in zip(body.documents, ranked):
            kept = [(wire.unwrap_document(docs[i]), s) for i, s in order]
            if body.return_scores:
                result.append([{"document": d, "score": s} for d, s in kept])
            else:
                result.append([d for d, _ in kept])
        accept = request.headers.get("accept")
        return fastpath.answer({"result": result}, fastpath.wants_msgpack(accept, packed))

    @app.post(
        "/access",
        dependencies=guarded,
        openapi_extra=_body(wire.AccessRequest),
        responses={200: {"model": wire.AccessResponse}, **_ERRORS},
    )
    async def access(request: Request) -> Response:
        """ASearcher compatible: ``{"result": [page | null, ...]}``."""
        body, packed = await parse(request, wire.AccessRequest)
        reply_packed = fastpath.wants_msgpack(request.headers.get("accept"), packed)

        def read() -> Response:  # page reads and encoding off the event loop: /health stays fast
            pages = service.access(body.urls, body.titles, body.ids, body.offset, body.max_chars)
            return fastpath.answer({"result": pages}, reply_packed)

        return await run_in_threadpool(read)

    @app.get("/health", responses={503: _ERRORS[503]})
    async def health() -> Response:
        """200 when every retriever's worker is ready, else 503 with what is not."""
        report = service.health()
        headers = {"Retry-After": "2"} if report["status"] == "loading" else None
        return json_response(report, 200 if report["ready"] else 503, headers)

    @app.get("/info", dependencies=guarded)
    async def info() -> Response:
        """Manifests, sizes, config, load time and memory."""
        return json_response(await run_in_threadpool(service.info))

    @app.get("/metrics", dependencies=guarded)
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(service.metrics_text(), media_type=CONTENT_TYPE)

    app.include_router(web_router(service))  # Serper, Jina Reader, ... (webapi.py)
    app.include_router(browse_router(service))  # /browse and kiwix-serve routes (browsing.py)
    if config.ui:  # the pages: retriever/server/ui/
        from .ui import mount_ui

        mount_ui(app, service, config.trajectories)
    from .hosts import HostCheck, HostGuard

    check = HostCheck.allowing(bind_host, config.allowed_hosts)
    if check is not None:  # outermost: a refused request reaches nothing else
        app.add_middleware(HostGuard, check=check)
    if fast_path:
        fast = fastpath.RetrieveFastPath(service, config.max_body_bytes, config.token, check)
        app.fast = RequestMetrics(fast, metrics=service.metrics, endpoints=ENDPOINTS)
        app.fast_search = RequestMetrics(
            SearchFastPath(service), metrics=service.metrics, endpoints=WEB_ENDPOINTS
        )
        app.fast_check = fast.admits
    return app


# ---- the CLI ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """Flags: ``--host``, ``--port``, ``--save-address-to``, ``--log-level``, and one per
    ``ServiceConfig`` field (generated, so defaults and help live in the dataclass)."""
    from ..cli import add_config_arguments

    p = argparse.ArgumentParser(prog="python -m retriever.server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0: any free port")
    p.add_argument(
        "--save-address-to",
        metavar="DIR",
        help="write ASearcher's Host{ip}_IP{port}.txt into DIR once ready (removed at exit)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port and the memory-mapped index (default 1); "
        "/metrics and /info are per process",
    )
    group = p.add_argument_group("service")
    add_config_arguments(group, ServiceConfig, required=["index"], skip=["trajectories"])
    group.add_argument(
        "--trajectories",
        action="append",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="env.evaluate output (file or --out folder) for /ui/trajectories; repeatable",
    )
    from .lifecycle import ConnectionLimits

    add_config_arguments(p.add_argument_group("connections and shutdown"), ConnectionLimits)
    return p


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    """The ``ServiceConfig`` of the parsed flags; the token defaults to ``$RETRIEVER_TOKEN``."""
    from ..cli import config_from_args as from_flags

    token = getattr(args, "token", None) or os.environ.get("RETRIEVER_TOKEN") or None
    trajectories = tuple(getattr(args, "trajectories", ()))
    return from_flags(ServiceConfig, args, token=token, trajectories=trajectories)


def checked_config(args: argparse.Namespace) -> tuple[ServiceConfig, list[str]]:
    """``config_from_args`` and the index's part names, failing fast (``RetrieverError``) on a
    root with no part, a ``--port`` out of range or a ``--save-address-to`` folder it cannot
    write: the checks both ``python -m retriever.server`` and Ray Serve make first."""
    from ..cli import check_number
    from ..index import Index

    check_number("--port", args.port, 0, 65535)  # uvicorn would bind 70000 - 65536
    check_number("--workers", getattr(args, "workers", 1), 1, 256)
    if args.save_address_to:  # now, not once loaded: a server nobody can find is no use
        from ..addresses import check_folder

        try:
            check_folder(args.save_address_to)
        except OSError as exc:
            raise RetrieverError(
                f"--save-address-to {args.save_address_to}: {exc.strerror or exc}: "
                "give a folder this server may create files in"
            ) from None
    config = config_from_args(args)
    names = Index.open(config.index).names()
    if not names:
        raise RetrieverError(
            f"{config.index} has no bm25/ or dense-NAME/ part: "
            "build one with python -m index_build bm25 --index ROOT"
        )
    return config, names


def main(argv: list[str] | None = None) -> int:
    from ..cli import configure_process, fail, start_logging

    configure_process()
    args = build_parser().parse_args(argv)
    start_logging(args.log_level)
    try:
        config, names = checked_config(args)
        from ..cli import config_from_args as from_flags
        from .lifecycle import ConnectionLimits

        limits = from_flags(ConnectionLimits, args)
        from .lifecycle import bind_listener

        listener = bind_listener(args.host, args.port)  # before the load: a port in use fails now
    except (RetrieverError, ValueError) as exc:
        return fail(str(exc))
    with listener:
        if args.workers > 1:
            return _serve_workers(args, config, names, limits, listener)
        return _serve(args, config, names, limits, listener)


def _serve_workers(
    args: argparse.Namespace,
    config: ServiceConfig,
    names: list[str],
    limits: ConnectionLimits,
    listener: socket.socket,
) -> int:
    """``--workers N``: fork N servers on ``listener`` (``workers.py``); this process writes
    the one address file once all are ready and removes it when they are gone."""
    from ..cli import fail
    from .workers import run_workers, watch_parent

    port = listener.getsockname()[1]
    folder, args.save_address_to = args.save_address_to, None  # the parent's, not each worker's
    address: list = []

    def child(number: int, ready) -> int:
        watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM))
        return _serve(args, config, names, limits, listener, on_ready=ready)

    def all_ready() -> None:
        log.info("%d workers serving on http://%s:%d", args.workers, args.host, port)
        if folder:
            from ..addresses import write_address

            try:
                address.append(write_address(folder, args.host, port))
                log.info("address written to %s", address[0])
            except OSError as exc:  # the folder went away since the start: say so, stop
                log.error("could not write the address file: %s", exc)
                os.kill(os.getpid(), signal.SIGTERM)

    try:
        code = run_workers(args.workers, child, all_ready)
    finally:
        for path in address:
            path.unlink(missing_ok=True)
    if code:
        return fail(f"a worker exited with {code}: see its log above", code)
    return 0


def _serve(
    args: argparse.Namespace,
    config: ServiceConfig,
    names: list[str],
    limits: ConnectionLimits,
    listener: socket.socket,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """``main`` once the flags are checked and the port is bound: load, serve, clean up.
    ``on_ready``: called once loaded and serving (a ``--workers`` worker tells its parent)."""
    from ..cli import fail
    from .lifecycle import Server, server_config

    t0 = time.perf_counter()
    service = RetrievalService(config)
    try:
        app = create_app(service, bind_host=args.host)
    except RetrieverError as exc:  # e.g. a --trajectories file that is not there
        return fail(str(exc))
    log.info(
        "serving %s on http://%s:%d (RSS %.0f MB before loading); loading %s",
        config.index,
        args.host,
        listener.getsockname()[1],
        rss_bytes() / 2**20,
        ", ".join(config.retrievers or names),
    )
    if args.host in WILDCARD_BINDS and not config.token and not config.allowed_hosts:
        log.warning(
            "bound to every interface without --token: any machine that reaches this one can "
            "read the index and the trajectories (Host is not checked: --allowed-hosts does)"
        )
    address: list = []
    unadvertised: list[BaseException] = []
    server: Server | None = None

    def report_ready() -> None:
        while service.state in ("created", "loading") or server is None:
            time.sleep(0.05)
        if service.state == "failed":  # exit non-zero (a supervisor restarts, the user sees why)
            server.should_exit = True
        if service.state == "ready":
            log.info(
                "time-to-ready %.2fs (index load %.2fs), RSS %.0f MB",
                time.perf_counter() - t0,
                service.load_seconds,
                (service.rss_at_ready or 0) / 2**20,
            )
            if on_ready is not None:
                while not server.started and not server.should_exit:
                    time.sleep(0.05)
                if server.started:
                    on_ready()
            if args.save_address_to:
                from ..addresses import write_address

                while not server.started and not server.should_exit:
                    time.sleep(0.05)
                try:  # port 0: the port the system chose
                    port = server.bound_port() or args.port
                    address.append(write_address(args.save_address_to, args.host, port))
                    log.info("address written to %s", address[0])
                except OSError as exc:  # the folder went away since the start: say so, stop
                    unadvertised.append(exc)
                    server.should_exit = True

    threading.Thread(target=report_ready, name="report-ready", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM (and here SIGHUP), then re-raises it: exit 0
    # instead of dying by it, after the address file is removed
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, lambda *_: sys.exit(0))
    uv_config = server_config(
        app, args.host, args.port, limits, log_level=args.log_level, access_log=False
    )
    server = Server(uv_config, service, limits.drain_seconds)
    try:
        server.run(sockets=[listener])
    finally:
        for path in address:
            path.unlink(missing_ok=True)
    if service.state == "failed":
        return fail(f"the index failed to load: {service.error}", 1)
    if unadvertised:
        return fail(f"could not write the address file: {unadvertised[0]}", 1)
    return 0 if server.started else 1
