"""A ``kiwix-serve`` look-alike over the store: why GEM's WikiGame (navigate Wikipedia by its
links) and other kiwix clients run on our corpus without a ZIM file.

Routes, as kiwix-serve answers them (any book name is accepted: the server has one corpus):

- ``GET /raw/{book}/content/{title}`` and ``GET /content/{book}/{title}`` (also ``.../A/{title}``,
  the older layout): the article as HTML, ``<h1 id="firstHeading" class="firstHeading">``, body
  in ``<div class="mw-content-ltr mw-parser-output">`` with ``<h2>``.. section headings and
  ``<a href="Other_Title">`` for every stored link whose target page this corpus has (redirects
  followed, so each href names a real page); 404 for an unknown title.
- ``GET /search?pattern=...`` (``books.name``/``content``, ``start``, ``pageLength``): kiwix's
  results page, ``<div class="results"><ul><li><a href="/content/{book}/{Title}">Title</a>``,
  from the index's default retriever (titles when the index has none).
- ``GET /random?content={book}``: a 302 to a random article.
"""

from __future__ import annotations

import html
import logging
import random
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from ..errors import BadRequestError, RetrieverError
from ..store.docstore import DocStore
from .service import RetrievalService
from .web import bearer_dependency

log = logging.getLogger(__name__)
DEFAULT_BOOK = "wikipedia"
MAX_RESULTS = 100
_HREF_SAFE = "()_,'!:;@$*+=-.~"


def href_of(title: str) -> str:
    """A relative kiwix href of a title: spaces as underscores, URL-reserved signs quoted."""
    return quote(title.replace(" ", "_"), safe=_HREF_SAFE)


def _store(service: RetrievalService) -> DocStore:
    return service.store


def page_html(store: DocStore, name: str) -> str | None:
    """The article ``name`` names as kiwix-style HTML; None when the corpus has no such page."""
    row = store.page_row(name)
    page = store.get_page(row) if row is not None else store.page(name)
    if page is None:
        return None
    meta = (store.page_meta(row) if row is not None else None) or {}
    text = page.text
    heads = {int(at): int(level) for level, _, at in meta.get("sections") or ()}
    spans = []  # (offset, end, href, title) of links whose target this corpus has
    last = 0
    for target, anchor, at in meta.get("links") or ():
        if not isinstance(at, int) or at < last or text[at : at + len(anchor)] != anchor:
            continue
        found = store.page_row(target)
        if found is None:
            continue
        shown = store.get_page(found).title
        spans.append((at, at + len(anchor), href_of(shown), shown))
        last = at + len(anchor)
    title = html.escape(page.title)
    out = [
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">',
        f"<title>{title}</title></head><body>",
        f'<h1 id="firstHeading" class="firstHeading">{title}</h1>',
        '<div id="mw-content-text" class="mw-body-content mw-content-ltr mw-parser-output">',
    ]
    k = 0
    pos = 0
    for block in text.split("\n\n"):
        start, end = pos, pos + len(block)
        pos = end + 2
        if start in heads:
            level = min(max(heads[start], 2), 6)
            anchor_id = html.escape(block.replace(" ", "_"), quote=True)
            out.append(f'<h{level} id="{anchor_id}">{html.escape(block)}</h{level}>')
            continue
        parts, cur = [], start
        while k < len(spans) and spans[k][0] < end:
            s, e, href, target = spans[k]
            k += 1
            if s < cur:
                continue
            parts.append(html.escape(text[cur:s]))
            parts.append(
                f'<a href="{html.escape(href, quote=True)}" title="{html.escape(target, quote=True)}">'
                f"{html.escape(text[s:e])}</a>"
            )
            cur = e
        parts.append(html.escape(text[cur:end]))
        out.append("<p>" + "".join(parts).replace("\n", "<br>\n") + "</p>")
    out.append("</div></body></html>")
    return "\n".join(out)


def search_html(book: str, pattern: str, titles: list[str], start: int, total: int) -> str:
    """kiwix-serve's full-text search results page."""
    q = html.escape(pattern)
    items = "\n".join(
        f'<li><a href="/content/{quote(book)}/{href_of(t)}">{html.escape(t)}</a></li>'
        for t in titles
    )
    shown = f"{start + 1}-{start + len(titles)}" if titles else "0"
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>Search: {q}</title></head><body>\n"
        f'<div class="header">Results <b>{shown}</b> of <b>{total}</b> for <b>"{q}"</b></div>\n'
        f'<div class="results"><ul>\n{items}\n</ul></div>\n</body></html>'
    )


def _not_found(name: str) -> Response:
    body = f"<html><body><h1>Not Found</h1><p>No article {html.escape(name[:200])!s} in this corpus.</p></body></html>"
    return HTMLResponse(body, status_code=404)


def _bad(message: str) -> Response:
    return HTMLResponse(
        f"<html><body><h1>Bad request</h1><p>{html.escape(message)}</p></body></html>", 400
    )


async def _search_titles(service: RetrievalService, pattern: str, want: int) -> list[str]:
    """Distinct page titles of the best passages for ``pattern`` (an exact title first)."""
    store = _store(service)
    titles: list[str] = []
    row = store.page_row(pattern)
    if row is not None:
        titles.append(store.get_page(row).title)
    try:
        hits = await service.asearch([pattern], min(want * 3, 100))
        docs = await run_in_threadpool(lambda: list(service.passages(hits)))
    except RetrieverError as exc:  # an index with no retriever: titles only
        log.debug("kiwix search by title only: %s", exc)
        docs = [[]]
    for scored in docs[0]:
        title = scored.passage.title
        if title and title not in titles:
            titles.append(title)
    return titles


def kiwix_router(service: RetrievalService) -> APIRouter:
    """kiwix-serve's article, search and random routes over ``service``'s store."""
    token = service.config.token
    router = APIRouter(
        dependencies=[Depends(bearer_dependency(token))] if token else [],
        tags=["kiwix-serve compatible"],
    )

    async def article(name: str) -> Response:
        if name.startswith("A/"):
            name = name[2:]
        name = name.replace("_", " ").strip()
        if not name:
            return _bad("name an article: /content/{book}/{Title}")
        body = await run_in_threadpool(page_html, _store(service), name)
        return _not_found(name) if body is None else HTMLResponse(body)

    @router.get("/raw/{book}/content/{name:path}")
    async def raw(book: str, name: str) -> Response:
        """The article as HTML (kiwix-serve 3's raw route; GEM's WikiGame reads this one)."""
        return await article(name)

    @router.get("/content/{book}/{name:path}")
    async def content(book: str, name: str) -> Response:
        """The article as HTML (``/content/{book}/A/{title}`` too)."""
        return await article(name)

    @router.get("/search")
    async def search(request: Request) -> Response:
        """Full-text search, as kiwix-serve's HTML results page."""
        params = request.query_params
        pattern = (params.get("pattern") or "").strip()
        book = params.get("books.name") or params.get("content") or DEFAULT_BOOK
        if not pattern:
            return _bad("give the words to search for as ?pattern=...")
        try:
            start = int(params.get("start", 0))
            length = int(params.get("pageLength", 25))
        except ValueError:
            return _bad("start and pageLength must be whole numbers")
        if start < 0 or not 1 <= length <= MAX_RESULTS:
            return _bad(f"start must be >= 0 and pageLength 1..{MAX_RESULTS}")
        if len(pattern) > 1000:
            return _bad("the search pattern is over 1000 characters")
        try:
            titles = await _search_titles(service, pattern, start + length)
        except BadRequestError as exc:
            return _bad(str(exc))
        return HTMLResponse(
            search_html(book, pattern, titles[start : start + length], start, len(titles))
        )

    @router.get("/random")
    async def random_page(request: Request) -> Response:
        """A 302 to a random article of the corpus."""
        params = request.query_params
        book = params.get("content") or params.get("books.name") or DEFAULT_BOOK
        store = _store(service)
        if store.num_pages == 0:
            return _not_found("(random): this corpus keeps no full pages")
        title = store.get_page(random.randrange(store.num_pages)).title
        return RedirectResponse(f"/content/{quote(book)}/{href_of(title)}", status_code=302)

    return router
