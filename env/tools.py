"""Run the tool calls of many episodes against a ``SearchClient`` with as few calls as possible.

All searches of a step go out as ONE ``retrieve`` call; page accesses as one ``access`` call per
distinct chunk offset. The plan is a generator that yields backend calls and receives their
results, so the same logic drives a sync client and an async one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from .types import ACCESS, SEARCH, Action

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ToolResult:
    """What a tool call returned: search docs, or a page chunk, or an error message."""

    docs: list[dict] | None = None
    page: dict | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call ready to run: the parsed action plus the resolved page chunk number."""

    action: Action
    page: int = 1


Plan = Generator[tuple[str, dict], tuple[object, Exception | None], list[ToolResult | None]]


def _is_url(name: str) -> bool:
    return "://" in name or name.startswith(("/wiki/", "wiki/", "index.php", "/w/"))


def plan_calls(
    calls: Sequence[Call | None], topk: int, retriever: str | None, page_chars: int
) -> Plan:
    """Yield ``(method, kwargs)`` backend calls; return one ToolResult (or None) per call."""
    out: list[ToolResult | None] = [None] * len(calls)
    searches = [i for i, c in enumerate(calls) if c is not None and c.action.kind == SEARCH]
    if searches:
        queries = [calls[i].action.arg for i in searches]
        result, exc = yield "retrieve", {"queries": queries, "topk": topk, "retriever": retriever}
        if exc is not None and len(searches) > 1:
            # one bad query must not fail the others: isolate it
            for i in searches:
                one, err = yield (
                    "retrieve",
                    {"queries": [calls[i].action.arg], "topk": topk, "retriever": retriever},
                )
                out[i] = (
                    ToolResult(error=f"search failed: {err}") if err else ToolResult(docs=one[0])
                )
        elif exc is not None:
            out[searches[0]] = ToolResult(error=f"search failed: {exc}")
        else:
            for i, docs in zip(searches, result):
                out[i] = ToolResult(docs=docs)
    by_offset: dict[int, list[int]] = {}
    for i, c in enumerate(calls):
        if c is not None and c.action.kind == ACCESS:
            by_offset.setdefault((c.page - 1) * page_chars, []).append(i)
    for offset, idxs in sorted(by_offset.items()):
        names = [calls[i].action.arg for i in idxs]
        urls = [i for i, n in zip(idxs, names) if _is_url(n)]
        titles = [i for i, n in zip(idxs, names) if not _is_url(n)]
        kwargs = {
            "urls": [calls[i].action.arg for i in urls],
            "titles": [calls[i].action.arg for i in titles],
            "offset": offset,
            "max_chars": page_chars,
        }
        pages, exc = yield "access", kwargs
        if exc is not None:
            for i in idxs:
                out[i] = ToolResult(error=f"access failed: {exc}")
            continue
        for i, page in zip(urls + titles, pages):
            if page is None:
                out[i] = ToolResult(
                    error=f"no page found for {calls[i].action.arg!r}; use a URL from the search results"
                )
            else:
                out[i] = ToolResult(page=page)
    return out


def run_plan(client, plan: Plan) -> list[ToolResult | None]:
    """Drive a plan with a sync client. Bad-input errors (ValueError) become tool errors."""
    try:
        method, kwargs = next(plan)
        while True:
            try:
                reply = (getattr(client, method)(**kwargs), None)
            except ValueError as exc:
                log.debug("%s rejected: %s", method, exc)
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
            fn = getattr(client, method)
            try:
                if afn is not None and inspect.iscoroutinefunction(afn):
                    value = await afn(**kwargs)
                elif inspect.iscoroutinefunction(fn):
                    value = await fn(**kwargs)
                else:
                    value = await asyncio.to_thread(fn, **kwargs)
                reply = (value, None)
            except ValueError as exc:
                reply = (None, exc)
            method, kwargs = plan.send(reply)
    except StopIteration as stop:
        return stop.value
