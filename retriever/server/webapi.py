"""Web-API compatible endpoints over the local corpus, so web-agent recipes run offline.

Each answers in the real service's JSON shape, so a client whose base URL can be pointed here
works unchanged:

- ``POST /search`` with ``{"q", "num", "page"}`` (or a JSON list of them): Serper's
  ``{"searchParameters", "organic": [{"title", "link", "snippet", "position"}], "credits"}``;
  with ``{"query", "topn"}``: OpenResearcher's search service, ``{"results": [{"url",
  "title", "summary"}]}``.
- ``POST /get_content`` ``{"url"}``: OpenResearcher's ``{"title", "content"}``.
- ``GET /r/<url>`` and ``GET /r.jina.ai/<url>`` (or ``POST /r/`` ``{"url"}``): Jina Reader's
  text (``Title:``, ``URL Source:``, ``Markdown Content:``), or with ``Accept:
  application/json`` its ``{"code", "status", "data": {"title", "url", "content", ...}}``.
- ``POST /browsecomp-plus/search`` ``{"query", "k"}`` and ``/browsecomp-plus/get_document``
  ``{"docid"}``: BrowseComp-Plus's tool outputs ``[{"docid", "score", "snippet"}]`` and
  ``{"docid", "text"}``.

Snippets are query-biased windows (``snippets.py``) where the service's are (Serper,
OpenResearcher); BrowseComp-Plus's are a document's first tokens, as its server cuts them.
Errors keep this server's ``{"error", "detail"}`` and add the service's own keys (Serper's
``message``/``statusCode``, Jina's ``code``/``name``/``message``/``data``).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from ..bm25.analyzer import Analyzer
from ..errors import AuthError, BadRequestError, RetrieverError
from . import fastpath
from .service import RetrievalService
from .snippets import first_words, snippets
from .web import error_response, json_response, read_body

__all__ = ["ENDPOINTS", "web_router"]

ENDPOINTS = frozenset(
    {"/search", "/get_content", "/browsecomp-plus/search", "/browsecomp-plus/get_document"}
)
SERPER_MAX_NUM = 100  # Serper's own cap on num; also the most queries of one batch
SERPER_WORDS, SERPER_CHARS = 30, 200  # about a Google snippet
OPENRESEARCHER_WORDS, OPENRESEARCHER_CHARS = 30, 180  # its service's MAX_SNIPPET_LEN default
BROWSECOMP_K, BROWSECOMP_TOKENS = 5, 512  # its MCP server's defaults
_OPERATOR = re.compile(r"(?:^|\s)(?:-\S+|(?:site|filetype|inurl|related|cache):\S+)")


def plain_query(q: str) -> str:
    """A web query without the operators a local corpus cannot honour (``-word``, ``-site:x``,
    ``site:x``, ``filetype:x``): SkyRL-agent appends ``-site:`` filters to every query.

    >>> plain_query("eiffel tower height -site:github.com -site:chegg.com")
    'eiffel tower height'
    """
    return " ".join(_OPERATOR.sub(" ", q).split())


class NotFoundError(RetrieverError):
    """A page or document this corpus does not have (404)."""


class _Shapes:
    """What the routes share: the service, its analyzer, and the error shapes."""

    def __init__(self, service: RetrievalService):
        self.service = service

    @cached_property
    def analyzer(self) -> Analyzer:
        """The BM25 part's analyzer (stemmed matches count); the default English one for an
        index with no BM25 part."""
        index = self.service.index
        name = index.default_bm25() if index is not None else None
        if name is None:
            return Analyzer()
        return Analyzer.from_dict(index.parts()[name]["analyzer"])

    async def body(self, request: Request) -> Any:
        return self.parse(await read_body(request, self.service.config.max_body_bytes))

    @staticmethod
    def parse(raw: bytes) -> Any:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequestError(f"the body is not JSON ({exc}): send a JSON object") from None

    async def search(self, queries: list[str], k: int) -> list[list]:
        hits = await self.service.asearch(queries, k)
        if sum(len(h) for h in hits) > 64:  # snippets of many hits: off the event loop
            return await run_in_threadpool(lambda: list(self.service.passages(hits)))
        return list(self.service.passages(hits))

    async def snippets(
        self, jobs: list[tuple[list[str], str]], max_words: int, max_chars: int
    ) -> list[list[str]]:
        """The snippets of each ``(texts, query)`` job: a request's few on the event loop (a
        thread hand-off costs more than they do), many off it, as ``search`` does."""

        def make() -> list[list[str]]:
            return [snippets(t, q, self.analyzer, max_words, max_chars) for t, q in jobs]

        if sum(len(texts) for texts, _ in jobs) > 64:
            return await run_in_threadpool(make)
        return make()

    async def page(self, name: str) -> dict:
        """The page a URL, title or id names, up to ``--max-access-chars``; 404 when unknown."""
        if not isinstance(name, str) or not name.strip():
            raise BadRequestError(f"a page URL must be a non-empty string, got {name!r}")
        limit = self.service.config.max_access_chars
        found = await run_in_threadpool(self.service.access, [name], (), (), 0, limit)
        if found[0] is None:
            raise NotFoundError(
                f"no page for {name!r} in this corpus: use a link from a search result"
            )
        return found[0]


def _error(exc: Exception, extra) -> Response:
    """This server's error response with the service's own keys added (``extra(status,
    message) -> dict``); 404 for a missing page."""
    if isinstance(exc, NotFoundError):
        status, body, headers = 404, {"error": "not_found", "detail": str(exc)}, None
    else:
        plain = error_response(exc)
        status, body = plain.status_code, orjson.loads(plain.body)
        headers = {k: v for k, v in plain.headers.items() if k.lower() == "retry-after"}
    return json_response({**body, **extra(status, body["detail"])}, status, headers or None)


def _serper_error(status: int, message: str) -> dict:
    return {"message": message, "statusCode": status}


def _jina_error(status: int, message: str) -> dict:
    name = {404: "NotFoundError", 422: "ParamValidationError"}.get(status, "ServiceError")
    return {
        "data": None,
        "code": status,
        "name": name,
        "status": status * 100,
        "message": message,
        "readableMessage": f"{name}: {message}",
    }


def _no_extra(status: int, message: str) -> dict:
    return {}


def _int(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(f"{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def _text(body: dict, key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRequestError(f"{key} must be a non-empty string, got {value!r}")
    return value


# ---- Serper -----------------------------------------------------------------------------
async def _serper(shapes: _Shapes, items: list[dict]) -> list[dict]:
    max_k = min(SERPER_MAX_NUM, shapes.service.config.max_topk)
    asked = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequestError(f"search {i} is {type(item).__name__}: send {{'q': ...}}")
        num = _int(item, "num", 10, 1, max_k)
        page = _int(item, "page", 1, 1, max(1, max_k // num))
        if page * num > max_k:
            raise BadRequestError(f"page {page} of num {num} goes past result {max_k}")
        asked.append((_text(item, "q"), num, page))
    k = max(num * page for _, num, page in asked)
    found = await shapes.search([plain_query(q) or q for q, _, _ in asked], k)
    pages = [hits[(page - 1) * num : page * num] for (_, num, page), hits in zip(asked, found)]
    jobs = [([p.text for p, _ in hits], q) for hits, (q, _, _) in zip(pages, asked)]
    made = await shapes.snippets(jobs, SERPER_WORDS, SERPER_CHARS)
    out = []
    for item, (q, num, page), hits, texts in zip(items, asked, pages, made, strict=True):
        organic = [
            {"title": p.title, "link": p.url, "snippet": text, "position": (page - 1) * num + i + 1}
            for i, ((p, _score), text) in enumerate(zip(hits, texts, strict=True))
        ]
        params = {k: v for k, v in item.items() if k in ("gl", "hl", "location", "autocorrect")}
        params.update(q=q, type="search", num=num, page=page, engine="google")
        out.append({"searchParameters": params, "organic": organic, "credits": 1})
    return out


# ---- OpenResearcher ---------------------------------------------------------------------
async def _openresearcher(shapes: _Shapes, body: dict) -> dict:
    query = _text(body, "query")
    topn = _int(body, "topn", 10, 1, shapes.service.config.max_topk)
    (hits,) = await shapes.search([query], topn)
    jobs = [([p.text for p, _ in hits], query)]
    (texts,) = await shapes.snippets(jobs, OPENRESEARCHER_WORDS, OPENRESEARCHER_CHARS)
    results = [
        {"url": p.url, "title": p.title, "summary": text}
        for (p, _score), text in zip(hits, texts, strict=True)
    ]
    return {"results": results}


# ---- Jina Reader ------------------------------------------------------------------------
def _target(path: str, query: str) -> str:
    """The page URL of a Reader path: its query string put back, and ``https:/x`` (one slash,
    as some proxies collapse ``//``) mended.

    >>> _target("https:/en.wikipedia.org/w/index.php", "title=Paris")
    'https://en.wikipedia.org/w/index.php?title=Paris'
    """
    path = re.sub(r"^(https?):/(?!/)", r"\1://", path)
    return f"{path}?{query}" if query else path


def _reader(page: dict, wants_json: bool) -> Response:
    title, url, content = page["title"], page["url"], page["contents"]
    if wants_json:
        data = {
            "title": title,
            "description": "",
            "url": url,
            "content": content,
            "usage": {"tokens": len(content.split())},  # words: the nearest thing we count
        }
        return json_response({"code": 200, "status": 20000, "data": data})
    text = f"Title: {title}\n\nURL Source: {url}\n\nMarkdown Content:\n{content}\n"
    return Response(text, media_type="text/plain; charset=utf-8")


# ---- POST /search, the route's and the fast path's ---------------------------------------
async def search_answer(shapes: _Shapes, body: Callable[[], Awaitable[Any]]) -> Response:
    """The answer to one ``POST /search``, Serper's or OpenResearcher's; ``body()`` reads and
    parses the request body (the route's way or the fast path's)."""
    extra = _serper_error
    try:
        got = await body()
        if isinstance(got, dict) and "q" not in got and "query" in got:
            extra = _no_extra
            return json_response(await _openresearcher(shapes, got))
        if isinstance(got, list):
            if not 1 <= len(got) <= SERPER_MAX_NUM:
                raise BadRequestError(f"a batch of {len(got)} searches: send 1 to {SERPER_MAX_NUM}")
            return json_response(await _serper(shapes, got))
        if not isinstance(got, dict):
            raise BadRequestError("send {'q': ..., 'num': ...} or a list of them")
        return json_response((await _serper(shapes, [got]))[0])
    except RetrieverError as exc:
        return _error(exc, extra)


class SearchFastPath:
    """The ASGI handler of an admitted ``POST /search``: the framework's routing, middleware
    and dependencies skipped, as ``fastpath`` does for ``/retrieve`` (whose ``admits`` decides:
    the Host check, and the token as ``Bearer``, which the route's key check takes too)."""

    def __init__(self, service: RetrievalService):
        self.shapes = _Shapes(service)
        self.limit = service.config.max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)

        async def body() -> Any:
            return _Shapes.parse(await fastpath.read_body(receive, declared, self.limit))

        try:
            response = await search_answer(self.shapes, body)
        except Exception as exc:  # what the app's exception handlers answer
            response = error_response(exc)
        await response(scope, receive, send)


# ---- the router -------------------------------------------------------------------------
def key_dependency(token: str):
    """With ``--token``: the token as Serper sends its key (``X-API-KEY``) or as Jina does
    (``Authorization: Bearer``), so ``SERPER_API_KEY``/``JINA_API_KEY`` set to it work."""
    expected = token.encode()

    async def require_key(request: Request) -> None:
        given = request.headers.get("x-api-key") or ""
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        for key in (given, bearer if scheme.lower() == "bearer" else ""):
            if key and hmac.compare_digest(key.encode(), expected):
                return
        raise AuthError("missing or wrong key: send the server's --token as X-API-KEY or Bearer")

    return require_key


def web_router(service: RetrievalService) -> APIRouter:
    """The web-style routes over ``service`` (its search and access, nothing else)."""
    shapes = _Shapes(service)
    token = service.config.token
    guard = [Depends(key_dependency(token))] if token else []
    router = APIRouter(dependencies=guard, tags=["web-api compatible"])

    @router.post("/search")
    async def search(request: Request) -> Response:
        """Serper (``q``, or a list of ``{q}``) or OpenResearcher (``query``) search."""
        return await search_answer(shapes, lambda: shapes.body(request))

    @router.post("/get_content")
    async def get_content(request: Request) -> Response:
        """OpenResearcher's page fetch: ``{"title", "content"}``; 404 for an unknown URL."""
        try:
            body = await shapes.body(request)
            if not isinstance(body, dict):
                raise BadRequestError("send {'url': ...}")
            page = await shapes.page(_text(body, "url"))
            return json_response({"title": page["title"], "content": page["contents"]})
        except RetrieverError as exc:
            return _error(exc, _no_extra)

    async def read(request: Request, target: str) -> Response:
        try:
            page = await shapes.page(target)
            return _reader(page, "application/json" in request.headers.get("accept", ""))
        except RetrieverError as exc:
            return _error(exc, _jina_error)

    @router.get("/r/{target:path}")
    async def reader(request: Request, target: str) -> Response:
        """Jina Reader: the page at ``target`` as text (or JSON with ``Accept``)."""
        return await read(request, _target(target, request.url.query))

    @router.get("/r.jina.ai/{target:path}", include_in_schema=False)
    async def reader_host_path(request: Request, target: str) -> Response:
        return await read(request, _target(target, request.url.query))

    @router.post("/r/")
    async def reader_post(request: Request) -> Response:
        """Jina Reader's POST form: ``{"url": ...}``."""
        try:
            body = await shapes.body(request)
            if not isinstance(body, dict):
                raise BadRequestError("send {'url': ...}")
            target = _text(body, "url")
        except RetrieverError as exc:
            return _error(exc, _jina_error)
        return await read(request, target)

    @router.post("/browsecomp-plus/search")
    async def browsecomp_search(request: Request) -> Response:
        """BrowseComp-Plus's search tool: ``[{"docid", "score", "snippet"}]``."""
        try:
            body = await shapes.body(request)
            if not isinstance(body, dict):
                raise BadRequestError("send {'query': ..., 'k': ...}")
            query = _text(body, "query")
            k = _int(body, "k", BROWSECOMP_K, 1, service.config.max_topk)
            tokens = _int(body, "snippet_max_tokens", BROWSECOMP_TOKENS, 1, 1_000_000)
            (hits,) = await shapes.search([query], k)
            return json_response(
                [
                    {"docid": p.id, "score": float(s), "snippet": first_words(p.contents, tokens)}
                    for p, s in hits
                ]
            )
        except RetrieverError as exc:
            return _error(exc, _no_extra)

    @router.post("/browsecomp-plus/get_document")
    async def browsecomp_document(request: Request) -> Response:
        """BrowseComp-Plus's get_document tool: ``{"docid", "text"}`` of the page holding it."""
        try:
            body = await shapes.body(request)
            if not isinstance(body, dict):
                raise BadRequestError("send {'docid': ...}")
            docid = _text(body, "docid")
            limit = service.config.max_access_chars
            found = await run_in_threadpool(service.access, (), (), [docid], 0, limit)
            if found[0] is None:
                raise NotFoundError(f"no document {docid!r}: use a docid from a search result")
            return json_response({"docid": docid, "text": found[0]["contents"]})
        except RetrieverError as exc:
            return _error(exc, _no_extra)

    return router
