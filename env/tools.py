"""Run the tool calls of many episodes against a ``SearchClient`` with as few calls as possible.

All searches of a step go out as ONE ``retrieve`` call; page accesses as one ``access`` call per
distinct chunk offset; browser views (open, find, sections) as ONE ``browse`` call; visits as
ONE ``visit`` call (run concurrently by ``VisitBackend``, bounded by the visitor). The plan is a
generator that yields backend calls and receives their results, so the same logic drives a sync
client and an async one.

Whatever a policy writes, a backend error never escapes a step: a failed shared call is sent
again one episode at a time, so one bad query or URL fails only its own episode's call. Only
an outage (``OUTAGES``: unreachable, still overloaded after the client's retries, refused
credentials) raises: that step did not happen, and the same actions may be sent again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .types import ACCESS, SEARCH, VISIT, Action, PageWindow

log = logging.getLogger(__name__)


def _outage_types() -> tuple[type[BaseException], ...]:
    from retriever.errors import AuthError, QueueFullError, ServiceUnavailableError

    return (ConnectionError, TimeoutError, ServiceUnavailableError, QueueFullError, AuthError)


OUTAGES = _outage_types()


@dataclass(slots=True)
class ToolResult:
    """What a tool call returned: search docs, or a page chunk, or a browser view (``browse``),
    or an error message."""

    docs: list[dict] | None = None
    page: dict | None = None
    error: str | None = None
    view: dict | None = None
    visit: Any = None  # an env.visit.VisitResult (also with an error: it has the call's cost)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call ready to run: the parsed action plus, for an access, its page window, for
    a browser tool its ``browse`` request (``env.browser``)."""

    action: Action
    window: PageWindow | None = None
    request: dict | None = field(default=None, hash=False, compare=False)


Plan = Generator[tuple[str, dict], tuple[object, Exception | None], list[ToolResult | None]]


def _is_url(name: str) -> bool:
    return "://" in name or name.startswith(("/wiki/", "wiki/", "index.php", "/w/"))


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{exc}" or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def plan_calls(calls: Sequence[Call | None], topk: int, retriever: str | None) -> Plan:
    """Yield ``(method, kwargs)`` backend calls; return one ToolResult (or None) per call."""
    out: list[ToolResult | None] = [None] * len(calls)
    searches = [i for i, c in enumerate(calls) if c is not None and c.action.kind == SEARCH]
    if searches:
        queries = [calls[i].action.arg for i in searches]
        result, exc = yield "retrieve", {"queries": queries, "topk": topk, "retriever": retriever}
        if exc is None and (not isinstance(result, list) or len(result) != len(searches)):
            exc = ValueError(f"the backend answered {len(searches)} queries with {result!r:.100}")
        if exc is not None and len(searches) > 1:
            # one bad query must not fail the others: isolate it
            for i in searches:
                one, err = yield (
                    "retrieve",
                    {"queries": [calls[i].action.arg], "topk": topk, "retriever": retriever},
                )
                ok = err is None and isinstance(one, list) and len(one) == 1
                out[i] = (
                    ToolResult(docs=one[0])
                    if ok
                    else ToolResult(error=f"search failed: {_short(err or ValueError(one))}")
                )
        elif exc is not None:
            out[searches[0]] = ToolResult(error=f"search failed: {_short(exc)}")
        else:
            for i, docs in zip(searches, result):
                out[i] = ToolResult(docs=docs)
    groups: dict[PageWindow, list[int]] = {}
    for i, c in enumerate(calls):
        if c is not None and c.action.kind == ACCESS:
            groups.setdefault(c.window, []).append(i)
    for window, idxs in groups.items():
        pages, exc = yield "access", _access_kwargs(calls, idxs, window)
        if exc is not None and len(idxs) > 1:
            for i in idxs:
                one, err = yield "access", _access_kwargs(calls, [i], window)
                _access_results(calls, [i], one, err, out)
        else:
            _access_results(calls, idxs, pages, exc, out)
    browses = [i for i, c in enumerate(calls) if c is not None and c.request is not None]
    if browses:
        views, exc = yield "browse", {"requests": [calls[i].request for i in browses]}
        if exc is not None and len(browses) > 1:
            for i in browses:  # one bad request must not fail the others
                one, err = yield "browse", {"requests": [calls[i].request]}
                _browse_results([i], one, err, out)
        else:
            _browse_results(browses, views, exc, out)
    visits = [i for i, c in enumerate(calls) if c is not None and c.action.kind == VISIT]
    if visits:
        requests = [(calls[i].action.arg, calls[i].action.goal) for i in visits]
        results, exc = yield "visit", {"requests": requests}
        _visit_results(visits, results, exc, out)
    return out


def _visit_results(idxs: list[int], results, exc, out) -> None:
    if exc is None and (not isinstance(results, list) or len(results) != len(idxs)):
        exc = ValueError(f"the visitor answered {len(idxs)} visits with {results!r:.100}")
    for k, i in enumerate(idxs):
        if isinstance(exc, AttributeError):
            out[i] = ToolResult(error="visit is not available: this env has no visit extractor")
        elif exc is not None:
            out[i] = ToolResult(error=f"visit failed: {_short(exc)}")
        else:
            result = results[k]
            out[i] = ToolResult(error=result.error, visit=result)


class VisitBackend:
    """A search client plus a visitor (``env.visit.Visitor``): a plan's ``visit`` call goes to
    the visitor, every other call to the client. The visits of a step run concurrently; the
    visitor bounds the extractor requests in flight (``VisitConfig.concurrency``)."""

    def __init__(self, client: Any, visitor: Any):
        self.client, self.visitor = client, visitor

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    async def avisit(self, requests: list[tuple[str, str]]) -> list:
        return list(await asyncio.gather(*(self.visitor.visit(u, g) for u, g in requests)))

    def visit(self, requests: list[tuple[str, str]]) -> list:
        """``avisit`` for a sync ``step``, on the visitor's own loop (``Visitor.run``)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.visitor.run(self.avisit(requests))
        raise RuntimeError("step() cannot visit inside a running event loop; use astep()")

    def close(self) -> None:
        """Closes the visitor's sync loop and its HTTP pool (not the client); safe twice."""
        self.visitor.close()


def _browse_results(idxs: list[int], views, exc, out) -> None:
    if exc is None and (not isinstance(views, list) or len(views) != len(idxs)):
        exc = ValueError(f"the backend answered {len(idxs)} browse requests with {views!r:.100}")
    if isinstance(exc, AttributeError):
        error = "this backend cannot browse (open, find, sections): use a retriever client"
    elif exc is not None:
        error = f"browse failed: {_short(exc)}"
    for k, i in enumerate(idxs):
        view = None if exc is not None else views[k]
        if exc is not None:
            out[i] = ToolResult(error=error)
        elif not isinstance(view, dict) or not isinstance(view.get("text", view.get("error")), str):
            out[i] = ToolResult(error=f"browse failed: the backend answered {view!r:.100}")
        elif view.get("error") is not None:
            out[i] = ToolResult(error=str(view["error"]))
        else:
            out[i] = ToolResult(view=view)


def _access_order(calls, idxs: list[int]) -> tuple[list[int], list[int]]:
    names = [calls[i].action.arg for i in idxs]
    urls = [i for i, n in zip(idxs, names) if _is_url(n)]
    titles = [i for i, n in zip(idxs, names) if not _is_url(n)]
    return urls, titles


def _access_kwargs(calls, idxs: list[int], window: PageWindow) -> dict:
    urls, titles = _access_order(calls, idxs)
    return {
        "urls": [calls[i].action.arg for i in urls],
        "titles": [calls[i].action.arg for i in titles],
        "offset": window.offset,
        "max_chars": window.size,
    }


def _access_results(calls, idxs, pages, exc, out) -> None:
    urls, titles = _access_order(calls, idxs)
    if exc is None and (not isinstance(pages, list) or len(pages) != len(idxs)):
        exc = ValueError(f"the backend answered {len(idxs)} pages with {pages!r:.100}")
    for i, page in zip(urls + titles, pages if exc is None else [None] * len(idxs)):
        if exc is not None:
            out[i] = ToolResult(error=f"access failed: {_short(exc)}")
        elif not isinstance(page, dict):
            out[i] = ToolResult(
                error=f"no page found for {calls[i].action.arg!r:.200}; use a URL from the search results"
            )
        else:
            out[i] = ToolResult(page=page)


def _log_failure(method: str, exc: Exception) -> None:
    # a refused request (bad input) is the policy's doing and routine; anything else is news
    level = logging.DEBUG if isinstance(exc, ValueError) else logging.WARNING
    log.log(level, "%s failed: %s: %s", method, type(exc).__name__, _short(exc))


def run_plan(client, plan: Plan) -> list[ToolResult | None]:
    """Drive a plan with a sync client. A backend error becomes the tool error of the calls it
    concerned (logged), never an exception of the step."""
    try:
        method, kwargs = next(plan)
        while True:
            try:
                reply = (getattr(client, method)(**kwargs), None)
            except OUTAGES:
                raise
            except Exception as exc:
                _log_failure(method, exc)
                reply = (None, exc)
            method, kwargs = plan.send(reply)
    except StopIteration as stop:
        return stop.value


async def arun_plan(client, plan: Plan) -> list[ToolResult | None]:
    """Drive a plan with an async client (``aretrieve``/``aaccess`` or coroutine ``retrieve``/
    ``access``) or a sync one (in a thread)."""
    try:
        method, kwargs = next(plan)
        while True:
            afn = getattr(client, "a" + method, None)
            fn = getattr(client, method, None)
            try:
                if fn is None and afn is None:  # e.g. browse of a backend that has none
                    raise AttributeError(f"{type(client).__name__} has no {method}")
                if afn is not None and inspect.iscoroutinefunction(afn):
                    value = await afn(**kwargs)
                elif inspect.iscoroutinefunction(fn):
                    value = await fn(**kwargs)
                else:
                    value = await asyncio.to_thread(fn, **kwargs)
                reply = (value, None)
            except OUTAGES:
                raise
            except Exception as exc:
                _log_failure(method, exc)
                reply = (None, exc)
            method, kwargs = plan.send(reply)
    except StopIteration as stop:
        return stop.value
