"""``python -m env.mcp_server``: the env's tools over MCP, driven by the official SDK's own
client (``mcp.Client``) over streamable HTTP on 127.0.0.1 and over stdio (a subprocess)."""

from __future__ import annotations

import os
import re
import sys

import pytest
from conftest import REPO
from env_support import ensure_bm25, hotpot_client
from policy_server import ServerThread, fake_extractor

from env.mcp_server import Tools, build_server, main
from env.visit import VisitConfig, Visitor

pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

URL = "https://en.wikipedia.org/wiki/University_of_Kansas"
ROOT = REPO


def text_of(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture(scope="module")
def http_url(hotpot_root):
    """The MCP server's streamable HTTP app (search, access, visit over the real in-process
    client and a scripted extractor) served by uvicorn on 127.0.0.1."""
    log: list[dict] = []
    client = hotpot_client(hotpot_root)
    with ServerThread(fake_extractor(log)) as extractor:
        visitor = Visitor(client, VisitConfig(extractor, "extractor", timeout=5))
        app = build_server(Tools(client, visitor, page_chars=200)).streamable_http_app()
        with ServerThread(app) as url:
            yield url + "/mcp"
    client.close()


async def test_http_lists_and_calls_every_tool(http_url):
    async with Client(http_url) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert set(tools) == {"search", "access", "open", "find", "sections", "visit"}
        assert set(tools["visit"].input_schema["required"]) == {"url", "goal"}
        found = await mcp.call_tool("search", {"query": "University of Kansas", "topk": 2})
        assert not found.is_error and text_of(found).count("[Doc ") == 2
        assert URL in text_of(found)
        page = await mcp.call_tool("access", {"url": URL})
        assert not page.is_error and ">>>> Page 1 of" in text_of(page)
        assert "page 2" in text_of(page)  # 200-character chunks: how to read on
        page2 = await mcp.call_tool("access", {"url": URL, "page": 2})
        assert ">>>> Page 2 of" in text_of(page2)
        opened = await mcp.call_tool("open", {"id": URL, "num_lines": 3})
        assert not opened.is_error and "L0: " in text_of(opened), text_of(opened)
        found = await mcp.call_tool("find", {"id": URL, "pattern": "Lawrence"})
        assert not found.is_error and "Lawrence" in text_of(found), text_of(found)
        seen = await mcp.call_tool("visit", {"url": URL, "goal": "good campuses"})
        assert not seen.is_error and "Summary:\nabout good campuses" in text_of(seen)


@pytest.mark.parametrize(
    ("tool", "args", "says"),
    [
        ("search", {"query": ""}, "non-empty query"),
        ("search", {"query": "kansas", "topk": 0}, "topk must be between"),
        ("search", {"query": "kansas", "topk": 10_000}, "topk must be between"),
        ("search", {"query": "x" * 3000}, "at most 2000"),
        ("search", {}, "query"),
        ("search", {"query": ["a", "b"]}, "query"),
        ("access", {"url": "https://en.wikipedia.org/wiki/No_Such_Page_xyz"}, "no page found"),
        ("access", {"url": URL, "page": 99}, "does not exist"),
        ("access", {"url": URL, "page": 0}, "page must be >= 1"),
        ("open", {"id": "https://en.wikipedia.org/wiki/No_Such_Page_xyz"}, "open failed"),
        ("open", {"id": URL, "loc": -1}, "open failed"),
        ("open", {"id": ""}, "needs an id"),
        ("find", {"id": URL, "pattern": ""}, "find failed"),
        ("find", {"id": URL, "pattern": "(x", "regex": True}, "not a valid regex"),
        ("sections", {"id": URL}, "no sections for this corpus"),  # HotpotQA: no page meta
        ("sections", {"id": "https://en.wikipedia.org/wiki/No_Such_Page_xyz"}, "sections failed"),
        ("sections", {"id": " "}, "needs an id"),
        ("open", {"id": URL, "section": "History"}, "no sections for this corpus"),
        ("visit", {"url": URL, "goal": ""}, "needs a goal"),
        ("visit", {"url": URL, "goal": "x" * 5000}, "at most 2000"),
        ("visit", {"url": URL}, "goal"),
        ("visit", {"url": "https://en.wikipedia.org/wiki/Nope_xyz", "goal": "good"}, "no page"),
        ("visit", {"url": URL, "goal": "garbled goal"}, "no usable answer"),
    ],
)
async def test_http_bad_input_is_a_tool_error(http_url, tool, args, says):
    async with Client(http_url) as mcp:
        result = await mcp.call_tool(tool, args)
        assert result.is_error and says in text_of(result), text_of(result)
        ok = await mcp.call_tool("search", {"query": "Kansas"})  # the session goes on
        assert not ok.is_error


@pytest.fixture(scope="module")
def xml_url(xml_root):
    """The MCP server over the Wikipedia XML sample's store (pages with sections and links)."""
    from retriever.client import InProcessClient

    client = InProcessClient(xml_root, warmup=False)
    with ServerThread(build_server(Tools(client)).streamable_http_app()) as url:
        yield url + "/mcp"
    client.close()


async def test_http_sections_lists_and_opens_a_section(xml_url):
    rand = "https://en.wikipedia.org/wiki/Ayn_Rand"
    async with Client(xml_url) as mcp:
        tools = {t.name: t for t in (await mcp.list_tools()).tools}
        assert tools["sections"].input_schema["required"] == ["id"]
        assert "section" in tools["open"].input_schema["properties"]
        toc = await mcp.call_tool("sections", {"id": "Ayn Rand"})
        assert not toc.is_error and "Sections of `Ayn Rand`" in text_of(toc), text_of(toc)
        line = int(re.search(r"†Early life】 \(L(\d+)\)", text_of(toc)).group(1))
        opened = await mcp.call_tool("open", {"id": rand, "section": "early life", "num_lines": 3})
        assert not opened.is_error and f"\nL{line}: Early life\n" in text_of(opened)
        assert f"**viewing lines [{line} - {line + 2}] of " in text_of(opened)
        found = await mcp.call_tool(
            "find", {"id": rand, "pattern": r"Objectivis[mt]", "regex": True}
        )
        assert not found.is_error and "# 【0†match at L" in text_of(found), text_of(found)
        for tool, args, says in [
            (
                "open",
                {"id": rand, "section": "No such heading zz"},
                "no section 'No such heading zz'",
            ),
            ("sections", {"id": "No such page zz"}, "no page 'No such page zz'"),
            ("sections", {"id": 3}, "id"),  # not a string: refused by the tool's schema
        ]:
            bad = await mcp.call_tool(tool, args)
            assert bad.is_error and says in text_of(bad), text_of(bad)
        again = await mcp.call_tool("sections", {"id": rand})  # the session goes on
        assert not again.is_error and text_of(again) == text_of(toc)


async def test_stdio_subprocess(hotpot_root):
    root = ensure_bm25(hotpot_root)
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "env.mcp_server", "--index", str(root), "--transport", "stdio"],
        env=env | {"TOKENIZERS_PARALLELISM": "false"},
        cwd=str(ROOT),
    )
    async with Client(params, read_timeout_seconds=120) as mcp:
        names = {t.name for t in (await mcp.list_tools()).tools}
        assert names == {"search", "access", "open", "find", "sections"}  # no extractor: no visit
        found = await mcp.call_tool("search", {"query": "University of Kansas"})
        assert not found.is_error and URL in text_of(found)
        page = await mcp.call_tool("access", {"url": URL})
        assert not page.is_error and "University of Kansas" in text_of(page)
        bad = await mcp.call_tool("access", {"url": "no such page xyz"})
        assert bad.is_error and "no page found" in text_of(bad)


def test_cli_refuses_half_a_visit_setting(capsys):
    assert main(["--server", "http://127.0.0.1:9", "--visit-url", "http://x"]) == 2
    assert "--visit-url and --visit-model go together" in capsys.readouterr().err
