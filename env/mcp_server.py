"""The env's tools as an MCP server (the official ``mcp`` SDK), over stdio or streamable HTTP.

    python -m env.mcp_server --server http://127.0.0.1:8000 [--transport stdio|http]
    python -m env.mcp_server --index ROOT --transport http --port 8765 \\
        --visit-url http://127.0.0.1:8001 --visit-model Qwen/Qwen2.5-7B-Instruct

Tools: ``search(query, topk)``, ``access(url, page)``, ``open(id, loc, num_lines, section)``,
``find(id, pattern, regex)`` and ``sections(id)`` (the store's browser views, when the client
has ``browse``: the env's ``open``/``find``/``sections``) and, with an extractor model,
``visit(url, goal)`` (``env.visit``). Each answers the text the env's ``tool-call`` style shows
a policy (the same formatting and budgets). Bad arguments, unknown pages, a failed extractor
and an unreachable search backend are MCP tool errors (``isError``) whose text says what was
wrong, never a crash of the session.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import sys
from typing import Any

from . import formatting as fmt
from .types import PageWindow
from .visit import VisitConfig, Visitor

log = logging.getLogger(__name__)

STYLE = "tool-call"
MAX_QUERY_CHARS = 2000
MAX_TOPK = 50


async def _call(client: Any, method: str, **kwargs) -> Any:
    """A client method, async when the client has one, else in a thread."""
    afn = getattr(client, "a" + method, None)
    if afn is not None and inspect.iscoroutinefunction(afn):
        return await afn(**kwargs)
    return await asyncio.to_thread(getattr(client, method), **kwargs)


class Tools:
    """The tool bodies, independent of MCP: text on success, ``ToolError`` with a message for
    the caller otherwise."""

    def __init__(
        self,
        client: Any,
        visitor: Visitor | None = None,
        *,
        topk: int = 3,
        page_chars: int = 4000,
        obs_max_chars: int | None = 6000,
        retriever: str | None = None,
    ):
        self.client, self.visitor = client, visitor
        self.topk, self.page_chars, self.retriever = topk, page_chars, retriever
        self.budget = fmt.Budget(obs_max_chars)

    @staticmethod
    def _error(message: str) -> Exception:
        from mcp.server.mcpserver.exceptions import ToolError

        return ToolError(message)

    async def _backend(self, method: str, **kwargs) -> Any:
        from .tools import OUTAGES

        try:
            return await _call(self.client, method, **kwargs)
        except OUTAGES as exc:
            raise self._error(f"the search backend is unavailable: {exc}; try again") from None
        except ValueError as exc:  # refused input (retriever.errors subclass ValueError)
            raise self._error(f"{method} refused: {exc}") from None

    async def search(self, query: str, topk: int | None = None) -> str:
        if not isinstance(query, str) or not query.strip():
            raise self._error(f"search needs a non-empty query, got {query!r:.100}")
        if len(query) > MAX_QUERY_CHARS:
            raise self._error(
                f"the query has {len(query)} characters; use at most {MAX_QUERY_CHARS}"
            )
        k = self.topk if topk is None else topk
        if not 1 <= k <= MAX_TOPK:
            raise self._error(f"topk must be between 1 and {MAX_TOPK}, got {k}")
        result = await self._backend("retrieve", queries=[query], topk=k, retriever=self.retriever)
        return fmt.format_search_body(result[0] if result else [], STYLE, self.budget)

    async def access(self, url: str, page: int = 1) -> str:
        if not isinstance(url, str) or not url.strip():
            raise self._error(f"access needs a url from the search results, got {url!r:.100}")
        if page < 1:
            raise self._error(f"page must be >= 1, got {page}")
        window = PageWindow(page, self.page_chars)
        found = None
        for key in ("urls", "titles"):
            pages = await self._backend(
                "access", **{key: [url]}, offset=window.offset, max_chars=window.size
            )
            if pages and isinstance(pages[0], dict):
                found = pages[0]
                break
        if found is None:
            raise self._error(f"no page found for {url!r:.200}; use a URL from the search results")
        n = window.count(int(found.get("total_chars") or 0))
        if page > n:
            raise self._error(f"{url[:200]} has {n} page(s); page {page} does not exist")
        text = fmt.format_page(found, window, n, STYLE, self.budget)
        return _unwrap(text)

    async def browse(self, request: dict) -> str:
        """One view of the store's browser (``open``/``find``; ``retriever.store.browse``)."""
        if not isinstance(request.get("id"), str) or not request["id"].strip():
            raise self._error(
                f"{request['action']} needs an id: a URL or title, got {request.get('id')!r:.100}"
            )
        views = await self._backend("browse", requests=[request])
        view = views[0] if views else None
        if not isinstance(view, dict) or "error" in view or "text" not in view:
            why = view.get("error") if isinstance(view, dict) else view
            raise self._error(f"{request['action']} failed: {why!s:.300}")
        return str(view["text"])

    async def visit(self, url: str, goal: str) -> str:
        if self.visitor is None:
            raise self._error("visit is not configured on this server (start it with --visit-url)")
        result = await self.visitor.visit(url, goal)
        if result.error is not None:
            raise self._error(result.error)
        return result.text


def _unwrap(text: str) -> str:
    """A tool-call observation without its ``<tool_response>`` wrapper (MCP wraps results)."""
    text = text.strip("\n")
    head, tail = "<tool_response>\n", "\n</tool_response>"
    if text.startswith(head) and text.endswith(tail):
        return text[len(head) : -len(tail)]
    return text


def build_server(tools: Tools, name: str = "wikisearch"):
    """An ``mcp.server.mcpserver.MCPServer`` with the tools registered."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(
        name,
        instructions="Search a local Wikipedia: search finds passages, access reads a page in "
        "chunks; open shows a page as numbered lines, find finds text in it, sections lists its "
        "headings (open one with section=); visit reads a page for a goal and returns the "
        "evidence and a summary.",
    )

    @server.tool()
    async def search(query: str, topk: int = tools.topk) -> str:
        """Search the local Wikipedia; returns the top passages with their URLs."""
        return await tools.search(query, topk)

    @server.tool()
    async def access(url: str, page: int = 1) -> str:
        """Read one page (a URL from the search results) in chunks; page is 1-based."""
        return await tools.access(url, page)

    if hasattr(tools.client, "browse"):

        @server.tool()
        async def open(  # noqa: A001
            id: str, loc: int = 0, num_lines: int = 40, section: str | None = None
        ) -> str:
            """Open a page (URL or title) as numbered lines from line loc, with its links; with
            section (a heading that sections lists), from that section's heading instead."""
            request = {"action": "open", "id": id, "loc": loc, "num_lines": num_lines}
            if section is not None:
                request["section"] = section
            return await tools.browse(request)

        @server.tool()
        async def find(id: str, pattern: str, regex: bool = False) -> str:
            """Find a text in a page (literal and case-insensitive; a time-bounded regex when
            regex is true): the lines where it occurs."""
            return await tools.browse(
                {"action": "find", "id": id, "pattern": pattern, "regex": regex}
            )

        @server.tool()
        async def sections(id: str) -> str:
            """List a page's section headings (URL or title) with the line each starts at;
            open one with open(id, section=heading)."""
            return await tools.browse({"action": "sections", "id": id})

    if tools.visitor is not None:

        @server.tool()
        async def visit(url: str, goal: str) -> str:
            """Read a page for a goal: the evidence it holds and a summary of it."""
            return await tools.visit(url, goal)

    return server


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m env.mcp_server", description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="retrieval server URL (python -m retriever.server)")
    where.add_argument("--index", help="index root, searched in this process")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument("--port", type=int, default=8765, help="HTTP port (the path is /mcp)")
    p.add_argument("--topk", type=int, default=3, help="passages per search by default")
    p.add_argument("--page-chars", type=int, default=4000, help="characters of one page chunk")
    p.add_argument("--retriever", default=None, help="bm25, dense-NAME or hybrid")
    p.add_argument("--visit-url", help="OpenAI-compatible URL of the visit extractor model")
    p.add_argument("--visit-model", help="extractor model name")
    p.add_argument("--visit-max-input-tokens", type=int, default=VisitConfig.max_input_tokens)
    p.add_argument("--visit-cache", help="JSONL file of cached visit results")
    p.add_argument("--api-key", default=None, help="bearer key of the extractor endpoint")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from retriever.cli import configure_process, fail

    configure_process()
    args = build_parser().parse_args(argv)
    # stdout carries the protocol on stdio: logs go to stderr
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if (args.visit_url is None) != (args.visit_model is None):
        return fail("--visit-url and --visit-model go together")
    from .errors import ConfigError

    try:
        from retriever.client import HTTPClient, InProcessClient

        client = HTTPClient(args.server) if args.server else InProcessClient(args.index)
        visitor = None
        if args.visit_url:
            config = VisitConfig(
                args.visit_url, args.visit_model, api_key=args.api_key,
                max_input_tokens=args.visit_max_input_tokens, cache_path=args.visit_cache,
            )  # fmt: skip
            visitor = Visitor(client, config)
        tools = Tools(client, visitor, topk=args.topk, page_chars=args.page_chars,
                      retriever=args.retriever)  # fmt: skip
    except (ConfigError, OSError, ValueError) as exc:
        return fail(str(exc))
    server = build_server(tools)
    try:
        if args.transport == "stdio":
            server.run("stdio")
        else:
            server.run("streamable-http", host=args.host, port=args.port)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
