"""The ``/ui`` routes: the three pages, their static files and the ``/ui/api`` JSON they read
(``/ui/api/stats`` from the service's metrics registry, through ``stats.snapshot``).
"""

from __future__ import annotations

import string
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ...errors import BadRequestError, ServiceUnavailableError
from ..web import bearer_dependency, error_response, json_response
from .rows import MAX_OFFSET, MAX_PAGE, Query
from .stats import snapshot
from .trajectories import TrajectoryFile

INDEX_WAIT = 1.0  # seconds a request waits for indexing before answering 503 "indexing N%"
PAGES = {"/ui": "search.html", "/ui/trajectories": "trajectories.html", "/ui/stats": "stats.html"}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# ---- HTTP -----------------------------------------------------------------------------------
def _whole(raw: str, lo: int, hi: int) -> int | None:
    """``raw`` as an integer in ``[lo, hi)``, or None. Only ASCII digits with an optional
    ``-`` (``int`` would also take ``1_000``, spaces and other scripts' digits), and never a
    string longer than ``hi``'s digits into ``int`` (``10**30`` or 5,000 digits come to None).

    >>> _whole("12", 0, 50), _whole("50", 0, 50), _whole("1_0", 0, 50), _whole("9" * 5000, 0, 50)
    (12, None, None, None)
    """
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(hi)):
        return None
    value = int(raw)
    return value if lo <= value < hi else None


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def _int(params, name: str, default: int, lo: int = 0, hi: int = MAX_OFFSET) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    value = _whole(raw, lo, hi)
    if value is None:
        raise BadRequestError(f"{name} must be an integer from {lo} to {hi - 1}, got {_shown(raw)}")
    return value


def _is_digest(text: str) -> bool:
    return len(text) == 16 and all(c in string.hexdigits[:16] for c in text)


def _bool(params, name: str) -> bool:
    raw = (params.get(name) or "").lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadRequestError(f"{name} must be 1 or 0, got {raw!r}")


def query_from_params(params) -> Query:
    """A table ``Query`` from ``?sort=f1&desc=1&failed=1&dataset=nq&q=who&offset=0&limit=50``."""
    return Query(
        sort=params.get("sort") or "line",
        descending=_bool(params, "desc"),
        failed_only=_bool(params, "failed"),
        dataset=params.get("dataset") or None,
        text=params.get("q") or None,
        offset=_int(params, "offset", 0),
        limit=_int(params, "limit", 50, 1, MAX_PAGE + 1),
    )


def _static_files() -> dict[str, Any]:
    root = resources.files(__package__) / "static"
    return {f.name: f for f in root.iterdir() if f.is_file() and f.name[0] != "."}


def build_router(
    service, trajectories: Sequence[TrajectoryFile] = (), token: str | None = None
) -> APIRouter:
    """The ``/ui`` pages, their static files and the ``/ui/api`` JSON they read."""
    router = APIRouter(include_in_schema=False)
    static = _static_files()
    files = list(trajectories)

    # the server's own token check (a 401 through its exception handlers), on the data only
    guard = [Depends(bearer_dependency(token))] if token else []

    def serve(name: str) -> Response:
        item = static.get(name)
        if item is None:
            return json_response({"error": "not_found", "detail": f"no UI file {name!r}"}, 404)
        suffix = name[name.rfind(".") :]
        return Response(
            item.read_bytes(),
            media_type=_TYPES.get(suffix, "application/octet-stream"),
            headers=SECURITY_HEADERS,
        )

    def page_route(name: str):
        async def page() -> Response:  # no parameters: the query string is the page's own
            return serve(name)

        return page

    for path, name in PAGES.items():
        router.add_api_route(path, page_route(name), methods=["GET"])
    router.add_api_route("/ui/", page_route(PAGES["/ui"]), methods=["GET"])

    @router.get("/ui/static/{name}")
    async def static_file(name: str) -> Response:
        return serve(name)

    def file_at(file_id: str) -> tuple[int, TrajectoryFile]:
        """The file, indexed up to now (503 while a first, long scan runs in the background)."""
        number = _whole(file_id, 0, len(files))
        if number is None:
            raise BadRequestError(
                f"no trajectory file {_shown(file_id)}; this server has {len(files)} "
                "(start it with --trajectories FILE)"
            )
        f = files[number]
        if not f.refresh_in_background(wait=INDEX_WAIT):
            done, size = f.scanning
            raise ServiceUnavailableError(
                f"indexing {f.name}: {done / 2**20:.0f} of {size / 2**20:.0f} MB "
                f"({100 * done / max(size, 1):.0f}%); retry shortly",
                retry_after=1.0,
            )
        if f.error is not None:
            raise f.error
        return number, f

    async def answer(fn) -> Response:
        try:
            result = await run_in_threadpool(fn)
        except Exception as exc:  # every error is a JSON answer with what was wrong
            return error_response(exc)
        return result if isinstance(result, Response) else json_response(result)

    @router.get("/ui/api/trajectories", dependencies=guard)
    async def trajectory_files() -> Response:
        def run():
            for f in files:  # large files index in the background meanwhile
                f.refresh_in_background(wait=INDEX_WAIT / max(1, len(files)))
            return {"files": [{"id": i, **f.describe()} for i, f in enumerate(files)]}

        return await answer(run)

    @router.get("/ui/api/trajectories/{file_id}", dependencies=guard)
    async def trajectory_page(request: Request, file_id: str) -> Response:
        def run():
            query = query_from_params(request.query_params)
            number, f = file_at(file_id)
            return {"id": number, **f.page(query)}

        return await answer(run)

    @router.get("/ui/api/trajectories/{file_id}/{line}", dependencies=guard)
    async def trajectory_episode(request: Request, file_id: str, line: str) -> Response:
        def run():
            number = _whole(line, 1, MAX_OFFSET)
            if number is None:
                raise BadRequestError(f"line must be a positive integer, got {_shown(line)}")
            version = request.query_params.get("v") or None
            if version is not None and not _is_digest(version):
                raise BadRequestError(
                    f"v must be the 16 hex digits a table link carries, got {_shown(version)}"
                )
            file_number, f = file_at(file_id)
            data, found = f.episode(number, version)
            head = {"id": file_number, "name": f.name, "line": number, "v": found}
            # the record as written, spliced in: orjson would refuse one nested > 254 deep
            body = orjson.dumps(head)[:-1] + b',"record":' + data + b"}"
            return Response(body, media_type="application/json")

        return await answer(run)

    @router.get("/ui/api/stats", dependencies=guard)
    async def stats() -> Response:
        def run():
            return {
                "time": time.time(),
                "state": service.state,
                "health": service.health(),  # workers alive, queue depths, what killed one
                **snapshot(service.metrics.registry),
            }

        return await answer(run)

    return router
