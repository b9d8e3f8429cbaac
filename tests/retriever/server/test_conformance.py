"""Conformance per client: each trainer's request, over a real socket, through the HTTP library
that trainer uses (requests, aiohttp, httpx), read the way its code reads it.

Clients published on PyPI run their own code here: GEM's ``SearchTool`` (gem-llm: one ``query``
in a msgpack body with no Content-Type, ``["result"]`` read as one flat list of
``{"document", "score"}``) and SkyRL's ``SearchToolGroup`` (skyrl-gym: one ``query`` in JSON,
``result[i][j]["document"]["contents"]``). For the others, what each sends and reads was learned
from its public code (not copied): Search-R1's ``LLMGenerationManager._batch_search`` (requests,
JSON, ``["result"]`` even for an empty batch); SkyRL's earlier ``queries`` form; ASearcher's ``AsyncSearchBrowserClient`` (aiohttp,
servers found through ``Host*_IP*.txt`` files holding ``ip:port``, ``/retrieve`` docs'
``contents`` and ``url``, ``/access`` pages' ``contents``); rLLM's ``LocalRetrievalTool`` (httpx,
one ``query`` and ``top_k``, ``results[i]``'s ``id`` and ``content`` in its first version and
its deepresearch tool, ``results[i]["document"]`` in its later one).
"""

from __future__ import annotations

import asyncio
import glob
import importlib
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import types

import httpx
import msgpack
import pytest
import requests
from conftest import REPO
from retriever_fakes import (  # noqa: F401 (root, server, library)
    LiveServer,
    build_root,
    free_port,
    hotpot_questions,
    live_bm25_library,
    live_bm25_root,
    live_bm25_server,
)

from retriever.client import HTTPClient
from retriever.client.addresses import write_address
from retriever.errors import BadRequestError

pytestmark = pytest.mark.timeout(120)


def doc_lines(items) -> list[str]:
    """The ``Doc i(Title: ...) text`` block Search-R1, verl and GEM render for the model."""
    out = []
    for i, item in enumerate(items):
        title, _, text = item["document"]["contents"].partition("\n")
        out.append(f"Doc {i + 1}(Title: {title}) {text}")
    return out


def expected_lines(library, query: str, k: int) -> list[str]:
    hits = library.search([query], k=k)[0]
    return [f'Doc {i + 1}(Title: "{p.title}") {p.text}' for i, (p, _) in enumerate(hits)]


# ---- Search-R1 ------------------------------------------------------------------------------
def test_search_r1_batch_and_its_empty_turn(server, library):
    url = server.url + "/retrieve"
    queries = hotpot_questions(4)
    payload = {"queries": queries, "topk": 3, "return_scores": True}
    results = requests.post(url, json=payload).json()["result"]
    assert [doc_lines(r) for r in results] == [expected_lines(library, q, 3) for q in queries]
    # a turn where no sample searched: its own server answers 200 {"result": []}
    empty = requests.post(url, json={"queries": [], "topk": 3, "return_scores": True})
    assert empty.status_code == 200 and empty.json()["result"] == []


def test_topk_zero_or_null_is_the_default(server):
    for topk in (0, None):
        body = {"queries": ["Kansas"], "topk": topk, "return_scores": True}
        assert len(requests.post(server.url + "/retrieve", json=body).json()["result"][0]) == 3


# ---- SkyRL ----------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["queries", "query"])
def test_skyrl_search_tool_group(server, library, form):
    query = "  Ed Wood nationality ".strip()
    payload = {"queries": [query]} if form == "queries" else {"query": query}
    payload |= {"topk": 3, "return_scores": True}
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    with requests.Session() as session:
        response = session.post(server.url + "/retrieve", headers=headers, json=payload, timeout=30)
    assert response.status_code not in (500, 502, 503, 504)
    response.raise_for_status()
    raw = response.json().get("result", [])
    rendered = [
        "".join(f"Doc {i + 1}: {d['document']['contents'].strip()}\n" for i, d in enumerate(r))
        for r in raw
    ]
    want = [p.contents.strip() for p, _ in library.search([query], k=3)[0]]
    assert rendered == ["".join(f"Doc {i + 1}: {c}\n" for i, c in enumerate(want))]


def test_skyrl_gym_search_tool_group(server, library):
    """SkyRL's real tool: one ``query`` string in JSON, ``result`` read as a list of lists (so a
    JSON ``query`` keeps the nested answer; only GEM's msgpack ``query`` gets the flat one)."""
    search = pytest.importorskip("skyrl_gym.tools.search")
    query = hotpot_questions(2)[1]
    group = search.SearchToolGroup(search_url=server.url + "/retrieve", topk=3, log_requests=False)
    observation = json.loads(group.execute_tool("search", f" {query} "))
    want = [p.contents.strip() for p, _ in library.search([query], k=3)[0]]
    assert observation == {"result": "".join(f"Doc {i + 1}: {c}\n" for i, c in enumerate(want))}


# ---- GEM ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gem_search_tool():
    """GEM's own ``SearchTool`` class (gem-llm, installed without its dependencies by ``make
    setup``). ``gem/__init__`` imports GEM's env registry, which needs reasoning-gym and its
    many dependencies; the tool module needs only msgspec and requests, so the package is
    stood in by a bare module on GEM's own path and the tool module imported unchanged."""
    pytest.importorskip("msgspec")
    spec = importlib.util.find_spec("gem")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gem-llm is not installed (make setup installs it)")
    package = types.ModuleType("gem")
    package.__path__ = list(spec.submodule_search_locations)
    saved = {name: mod for name, mod in sys.modules.items() if name.split(".")[0] == "gem"}
    sys.modules["gem"] = package
    try:
        yield importlib.import_module("gem.tools.search_tool").SearchTool
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "gem"]:
            del sys.modules[name]
        sys.modules.update(saved)


def test_gem_search_tool(server, library, gem_search_tool):
    """GEM's real tool: one ``query`` string in a msgpack body, ``["result"]`` read as one flat
    list of ``{"document", "score"}`` (what GEM's own mosec retrieval server answers)."""
    query = hotpot_questions(3)[2]
    tool = gem_search_tool(search_url=server.url + "/retrieve", topk=3)
    valid, has_error, observation, parsed = tool.execute_action(
        f"<think>look it up</think><search> {query} </search> trailing"
    )
    assert (valid, has_error) == (True, False), observation
    assert parsed == f"<think>look it up</think><search> {query} </search>"
    lines = "".join(line + "\n" for line in expected_lines(library, query, 3))
    assert observation == f"\n\n<information>{lines}</information>\n\n"


def test_gem_server_shapes(server, library):
    """GEM's server (mosec, msgpack only) answers ``QueryRequest{query, topk, return_scores}``
    with ``RetrievalResponse{result: [{"document", "score"}]}``; its score is None without
    ``return_scores``. A ``queries`` list in msgpack keeps Search-R1's nested answer."""
    url = server.url + "/retrieve"
    want = library.search(["Kansas"], k=2)[0]
    docs = [p.to_dict() for p, _ in want]
    for scores in (True, False):
        body = msgpack.packb({"query": "Kansas", "topk": 2, "return_scores": scores})
        response = requests.post(url, data=body, timeout=5)
        assert response.headers["content-type"] == "application/msgpack"
        got = msgpack.unpackb(response.content)
        assert list(got) == ["result"]
        assert [item["document"] for item in got["result"]] == docs
        if scores:
            assert [item["score"] for item in got["result"]] == pytest.approx([s for _, s in want])
        else:
            assert [item["score"] for item in got["result"]] == [None, None]
    body = msgpack.packb({"queries": ["Kansas"], "topk": 2, "return_scores": True})
    nested = msgpack.unpackb(requests.post(url, data=body, timeout=5).content)["result"]
    assert [[item["document"] for item in r] for r in nested] == [docs]


def test_msgpack_declared_and_errors_stay_json(server):
    url = server.url + "/retrieve"
    body = msgpack.packb({"queries": ["Kansas"], "topk": 2})
    declared = requests.post(url, data=body, headers={"Content-Type": "application/msgpack"})
    assert len(msgpack.unpackb(declared.content)["result"][0]) == 2
    asked = requests.post(
        url, json={"queries": ["Kansas"]}, headers={"Accept": "application/msgpack"}
    )
    assert asked.headers["content-type"] == "application/msgpack"
    bad = requests.post(url, data=msgpack.packb({"queries": [1]}))
    assert bad.status_code == 422 and "queries.0" in bad.json()["detail"]
    broken = requests.post(url, data=b"\x81\xc1", headers={"Content-Type": "application/msgpack"})
    assert broken.status_code == 422 and "not valid msgpack" in broken.json()["detail"]


# ---- ASearcher ------------------------------------------------------------------------------
def asearcher_servers(folder: str) -> list[str]:
    found = []
    for name in glob.glob(folder + "/Host*_IP*.txt"):
        with open(name) as f:
            found.extend(f.readlines())
    return found


async def asearcher_episode(address: str, query: str) -> tuple[list[dict], list[dict]]:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=120, sock_connect=120)
    async with aiohttp.ClientSession() as session:
        req_meta = {"queries": [query], "topk": 5, "return_scores": False}
        async with session.post(f"http://{address}/retrieve", json=req_meta, timeout=timeout) as r:
            r.raise_for_status()
            res = await r.json()
        found = [
            {"documents": [d["contents"] for d in docs], "urls": [d["url"] for d in docs]}
            for docs in res["result"]
        ]
        urls = [found[0]["urls"][0], "https://en.wikipedia.org/wiki/No_such_page_zz"]
        async with session.post(
            f"http://{address}/access", json={"urls": urls}, timeout=timeout
        ) as r:
            r.raise_for_status()
            res = await r.json()
        pages = [{"page": p["contents"] if p is not None else ""} for p in res["result"]]
    return found, pages


def test_asearcher_finds_the_server_through_its_address_file(server, library, tmp_path):
    port = int(server.url.rsplit(":", 1)[1])
    write_address(tmp_path, "127.0.0.1", port)
    addresses = asearcher_servers(str(tmp_path))
    assert addresses == [f"127.0.0.1:{port}"]  # one line, no newline: used as-is in a URL
    query = hotpot_questions(5)[4]
    found, pages = asyncio.run(asearcher_episode(random.choice(addresses), query))
    want = library.search([query], k=5)[0]
    assert found[0]["urls"] == [p.url for p, _ in want]
    assert found[0]["documents"] == [p.contents for p, _ in want]
    assert want[0][0].text in pages[0]["page"] and pages[1]["page"] == ""
    # our client reads the same directory
    with HTTPClient.discover(tmp_path) as client:
        assert client.urls == [server.url]
        assert client.retrieve([query], topk=5)[0][0]["id"] == want[0][0].id
    with pytest.raises(BadRequestError, match="no server address files"):
        HTTPClient.discover(tmp_path / "empty")


def test_server_cli_writes_and_removes_the_address_file(root, tmp_path):
    port = free_port()
    folder = tmp_path / "addr"
    cmd = [sys.executable, "-m", "retriever.server", "--index", str(root), "--port", str(port)]
    cmd += ["--save-address-to", str(folder), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not asearcher_servers(str(folder)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no address file after 60 s"
            time.sleep(0.1)
        # written once ready: the first request that finds it is answered
        (address,) = asearcher_servers(str(folder))
        assert address == f"127.0.0.1:{port}"
        r = requests.post(f"http://{address}/retrieve", json={"queries": ["Kansas"]})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert list(folder.glob("Host*_IP*.txt")) == []  # a stopped server is not advertised


# ---- rLLM -----------------------------------------------------------------------------------
def test_rllm_later_tool_reads_document(server, library):
    query = hotpot_questions(6)[5]
    with httpx.Client(timeout=30) as client:
        response = client.post(server.url + "/retrieve", json={"query": query, "top_k": 4})
    assert response.is_success
    results = response.json().get("results", [])
    lines = [
        f"[Document {i}] (ID: {r.get('document', {}).get('id', f'doc_{i}')}, "
        f"Score: {r.get('score', 0.0):.3f})\n{r.get('document', {}).get('contents', '')[:300]}"
        for i, r in enumerate(results, 1)
    ]
    want = library.search([query], k=4)[0]
    assert lines == [
        f"[Document {i}] (ID: {p.id}, Score: {s:.3f})\n{p.contents[:300]}"
        for i, (p, s) in enumerate(want, 1)
    ]
    assert [r["content"] for r in results] == [p.contents for p, _ in want]  # the first tool
