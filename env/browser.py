"""One episode's browser: gpt-oss's stack of opened views, and the ``browse`` requests of its
``open``/``find``/``sections`` calls.

Every view the policy is shown (a page opened at some line, the matches of a find, a table of
contents, search results when browsing) is pushed on a stack; its index is its *cursor*, shown
as ``[cursor]`` in the view's first line. ``open(id=N)`` follows link N of the view at
``cursor`` (default: the last one): a search result, a link in a page, a match of find, a
section. ``open`` without an id scrolls the view at ``cursor`` to ``loc``; ``find`` and
``sections`` read the page at ``cursor``. A call that cannot be resolved (no view yet, cursor or
link number out of range, find on a search results view) is a tool error; nothing is pushed.

The views of pages come from the retriever (``browse``, ``retriever.store.browse``): they are
pure functions of the store, the cursor is this object's. Search results shown as a view (the
``browser`` style) are laid out here with the same functions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from urllib.parse import quote

from .browse_actions import BrowseAction
from .tools import ToolResult
from .types import FIND, OPEN, SECTIONS

SEARCH_VIEW = "search"
FIND_CONTEXT = 4  # a match of find opens this many lines above it (gpt-oss)


@dataclass
class View:
    """One opened view: what it is, its page, and its links ``(target, line)`` numbered from
    ``base`` (search results shown as ``[Doc k]`` count from 1)."""

    kind: str  # search, open, find or sections
    title: str
    url: str  # the page's URL (find and sections: the page they were made from)
    links: list[tuple[str, int]] = field(default_factory=list)
    base: int = 0
    page: object | None = None  # search results laid out as a page (retriever.store.browse)


def _doc_title(doc: dict) -> str:
    title = doc.get("title")
    if not title:
        title = str(doc.get("contents") or "").split("\n", 1)[0].strip().strip('"')
    return str(title)


def _doc_text(doc: dict) -> str:
    contents = doc.get("contents")
    if isinstance(contents, str):
        return contents.partition("\n")[2].strip()
    return str(doc.get("text") or "").strip()


class Browser:
    """The views of one episode. ``prepare`` turns a call into a ``browse`` request (or answers
    it here), ``finish`` takes the backend's view and pushes it."""

    def __init__(self, link_base: int = 0, search_as_page: bool = False):
        self.link_base = link_base
        self.search_as_page = search_as_page
        self.stack: list[View] = []
        # (kind, page url) of the call in flight; (search, View) when search results are scrolled
        self._pending: tuple[str, str | View] | None = None
        self._local: ToolResult | None = None

    # ---- a call -----------------------------------------------------------------------------
    def prepare(self, action: BrowseAction) -> dict | None:
        """The ``browse`` request of ``action``; None when it is answered without the backend
        (an error, or scrolling search results), then ``finish`` gives that answer."""
        self._pending, self._local = None, None
        try:
            return self._request(action)
        except _Refused as exc:
            self._local = ToolResult(error=str(exc))
            return None

    def finish(self, result: ToolResult | None) -> ToolResult:
        """The call's result (the backend's, or the one ``prepare`` made); a view is pushed."""
        local, pending = self._local, self._pending
        self._local = self._pending = None
        result = local or result or ToolResult(error="the browser returned nothing")
        if result.view is not None and pending is not None:
            kind, source = pending
            if isinstance(source, View):  # scrolled search results keep their links and layout
                self.stack.append(dataclasses.replace(source))
                return result
            view = result.view
            links = [(str(t), int(line)) for t, line in view.get("links") or []]
            url = source if kind in (FIND, SECTIONS) else str(view.get("url", ""))
            self.stack.append(View(kind, str(view.get("title", "")), url, links))
        return result

    def add_search(self, query: str, docs: list[dict]) -> dict | None:
        """Push the results of a search as a view whose links are the results; its text when
        results are shown as a view (``search_as_page``), else None (the style lays them out)."""
        links = [(str(d.get("url") or _doc_title(d)), 0) for d in docs if isinstance(d, dict)]
        if not self.search_as_page:
            self.stack.append(View(SEARCH_VIEW, query, "", links, self.link_base))
            return None
        from retriever.store.browse import make_page, view

        parts, meta, at = [], [], 0
        for d in (d for d in docs if isinstance(d, dict)):
            title = _doc_title(d) or str(d.get("url", ""))
            entry = f"# {title}\n{_doc_text(d)}\n\n"
            meta.append([str(d.get("url") or title), title, at + 2])
            parts.append(entry)
            at += len(entry)
        text = "".join(parts).rstrip("\n") or "No search results are found."
        url = f"search?query={quote(query)}"
        page = make_page(f"Search results for `{query}`", url, text, {"links": meta})
        shown = view(page, cursor=len(self.stack))
        self.stack.append(View(SEARCH_VIEW, page.title, "", links, self.link_base, page))
        return shown

    # ---- resolving a call --------------------------------------------------------------------
    def _at(self, cursor: int | None) -> tuple[int, View]:
        if not self.stack:
            raise _Refused("No pages to access! Search, or open a URL, first")
        if cursor is None:
            return len(self.stack) - 1, self.stack[-1]
        if cursor >= len(self.stack):
            raise _Refused(
                f"Cursor `{cursor}` is out of range. "
                f"Available cursor indices: [0 - {len(self.stack) - 1}]."
            )
        return cursor, self.stack[cursor]

    def _request(self, action: BrowseAction) -> dict | None:
        new = len(self.stack)  # the cursor of the view this call shows
        if action.kind == FIND:
            at, current = self._at(action.cursor)
            if current.kind in (SEARCH_VIEW, FIND, SECTIONS):
                raise _Refused(
                    f"Cannot run `find` on search results page or find results page ([{at}]); "
                    "open a page first"
                )
            self._pending = (FIND, current.url)
            request = {"action": FIND, "id": current.url, "pattern": action.arg}
            return {**request, "regex": action.regex, "cursor": new}
        if action.kind == SECTIONS:
            target = action.arg
            if not target and action.link is not None:  # the sections of a linked page
                target = self._link(action)[0]
            elif not target:
                at, current = self._at(action.cursor)
                if current.kind == SEARCH_VIEW:
                    raise _Refused(f"[{at}] is search results; open a page to list its sections")
                target = current.url
            self._pending = (SECTIONS, target)
            return {"action": SECTIONS, "id": target, "cursor": new}
        loc = action.loc
        if action.arg:  # a URL or title
            target = action.arg
        elif action.link is not None:  # follow a link of a view
            target, line, kind = self._link(action)
            if loc is None:
                loc = max(line - FIND_CONTEXT, 0) if kind == FIND else line
        else:  # scroll a view
            at, current = self._at(action.cursor)
            if current.kind == SEARCH_VIEW:
                return self._scroll_results(current, loc, action.num_lines)
            if current.kind != OPEN:
                raise _Refused(f"[{at}] `{current.title}` is shown whole; open one of its links")
            target = current.url
        self._pending = (OPEN, target)
        request = {"action": OPEN, "id": target, "loc": loc or 0, "cursor": new}
        return request if action.num_lines is None else {**request, "num_lines": action.num_lines}

    def _link(self, action: BrowseAction) -> tuple[str, int, str]:
        """(target, line, kind of the view) of link ``action.link`` of the view at its cursor."""
        at, current = self._at(action.cursor)
        i = action.link - current.base
        if not 0 <= i < len(current.links):
            have = (
                f"its links are {current.base} to {current.base + len(current.links) - 1}"
                if current.links
                else "it has no links"
            )
            raise _Refused(f"Invalid link id `{action.link}`: [{at}] `{current.title}`; {have}")
        target, line = current.links[i]
        return target, line, current.kind

    def _scroll_results(self, results: View, loc: int | None, num_lines: int | None) -> None:
        if results.page is None:
            raise _Refused("search results cannot be scrolled; open a result by its number")
        from retriever.store.browse import view

        try:
            shown = view(results.page, len(self.stack), loc or 0, num_lines)
        except ValueError as exc:  # retriever's BadRequestError: loc past the end
            raise _Refused(str(exc)) from None
        self._pending = (SEARCH_VIEW, results)
        self._local = ToolResult(view=shown)
        return None


class _Refused(Exception):
    """A call that cannot be resolved against the views: its message is the tool error."""
