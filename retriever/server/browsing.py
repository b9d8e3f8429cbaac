"""``POST /browse``: the browser tools' backend (``retriever.store.browse``) over HTTP, and the
kiwix-serve routes (``kiwix.py``), mounted on the app with one ``include_router``.

Body: one browse request ``{"action": "open"|"find"|"sections", "id", "cursor", "loc",
"num_lines", "section", "pattern", "regex"}`` answered with its view (404 for an unknown page,
422 for bad input), or ``{"requests": [...]}`` answered ``{"result": [view | {"error",
"status"}, ...]}`` (one bad request does not fail the others).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ..errors import BadRequestError, PageNotFoundError
from ..store.browse import browse, browse_one
from .kiwix import _store, kiwix_router
from .service import RetrievalService
from .web import bearer_dependency, error_response, json_response, read_body

MAX_BROWSE_REQUESTS = 256


def browse_router(service: RetrievalService) -> APIRouter:
    """``POST /browse`` and the kiwix-serve routes over ``service``'s store."""
    token = service.config.token
    router = APIRouter(dependencies=[Depends(bearer_dependency(token))] if token else [])

    @router.post("/browse")
    async def browse_route(request: Request) -> Response:
        """Open, find in, or list the sections of stored pages (gpt-oss browser views)."""
        try:
            raw = await read_body(request, service.config.max_body_bytes)
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise BadRequestError(f"the body is not JSON ({exc}): send a JSON object") from None
            store = _store(service)
            if isinstance(body, dict) and "requests" in body:
                requests = body["requests"]
                if isinstance(requests, list) and len(requests) > MAX_BROWSE_REQUESTS:
                    raise BadRequestError(
                        f"{len(requests)} browse requests in one body; send at most "
                        f"{MAX_BROWSE_REQUESTS}"
                    )
                result = await run_in_threadpool(browse, store, requests)
                return json_response({"result": result})
            return json_response(await run_in_threadpool(browse_one, store, body))
        except PageNotFoundError as exc:
            return json_response({"error": "not_found", "detail": str(exc)}, 404)
        except Exception as exc:
            return error_response(exc)

    router.include_router(kiwix_router(service))
    return router
