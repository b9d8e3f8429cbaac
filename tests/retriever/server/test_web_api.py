"""Web-API compatible endpoints (retriever/server/webapi.py) against a live server over the
real HotpotQA BM25 index.

None of the web clients is published on PyPI with its web tools (AReaL's and ASearcher's
``AsyncOnlineSearchClient``, SkyRL-agent's ``search_engine``/``web_browser``, FlashRAG's
``SerperRetriever`` — flashrag-dev 0.1.2 predates it — and OpenResearcher's
``LocalServiceBrowserBackend``), so each client test REPLAYS the exact request that client's
code sends (path, headers, body, HTTP library) and reads the answer the way its code does; the
file each one follows is named in its test.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from retriever_fakes import (  # noqa: F401 (root, server, library)
    LiveServer,
    build_root,
    hotpot_questions,
    live_bm25_library,
    live_bm25_root,
    live_bm25_server,
)

from retriever.bm25.analyzer import Analyzer
from retriever.server.service import RetrievalService, ServiceConfig
from retriever.server.snippets import snippet

pytestmark = pytest.mark.timeout(120)
QUERY = "Which magazine was started first Arthur's Magazine or First for Women?"
MISSING = "https://en.wikipedia.org/wiki/No_such_page_zz"


def top(library, query: str, k: int):
    return [p for p, _ in library.search([query], k=k)[0]]


# ---- Serper -------------------------------------------------------------------------------
def test_serper_shape_matches_the_library(server, library):
    r = requests.post(
        server.url + "/search",
        headers={"X-API-KEY": "unused", "Content-Type": "application/json"},
        json={"q": QUERY, "num": 4, "gl": "us"},
        timeout=30,
    )
    assert r.status_code == 200
    out = r.json()
    assert out["searchParameters"] == {
        "q": QUERY, "gl": "us", "type": "search", "num": 4, "page": 1, "engine": "google"
    }  # fmt: skip
    want = top(library, QUERY, 4)
    assert [o["link"] for o in out["organic"]] == [p.url for p in want]
    assert [o["title"] for o in out["organic"]] == [p.title for p in want]
    assert [o["position"] for o in out["organic"]] == [1, 2, 3, 4]
    assert all(isinstance(o["snippet"], str) and o["snippet"] for o in out["organic"])


def test_serper_batch_and_page(server):
    single = [
        requests.post(server.url + "/search", json={"q": q, "num": 2}, timeout=30).json()
        for q in (QUERY, "Kansas City downtown")
    ]
    batch = requests.post(
        server.url + "/search",
        json=[{"q": QUERY, "num": 2}, {"q": "Kansas City downtown", "num": 2}],
        timeout=30,
    ).json()
    assert batch == single
    page2 = requests.post(
        server.url + "/search", json={"q": QUERY, "num": 2, "page": 2}, timeout=30
    ).json()["organic"]
    four = requests.post(server.url + "/search", json={"q": QUERY, "num": 4}, timeout=30).json()
    assert [o["link"] for o in page2] == [o["link"] for o in four["organic"][2:]]
    assert [o["position"] for o in page2] == [3, 4]


def test_snippets_are_query_biased(server, library):
    """A query made of a long passage's late words gets a snippet around them, not the
    passage's lead; stemmed forms count as matches (the index's analyzer)."""
    passage = next(p for p in library.store.iter_passages(0, 400) if len(p.text.split()) > 120)
    words = passage.text.split()
    late = " ".join(words[90:96])
    hit = requests.post(server.url + "/search", json={"q": late, "num": 50}, timeout=30).json()[
        "organic"
    ]
    mine = next(o for o in hit if o["link"] == passage.url)
    assert mine["snippet"].startswith("...")
    assert late.split()[2] in mine["snippet"]
    assert not mine["snippet"].startswith(" ".join(words[:5]))
    assert snippet("The cats were running home", "run", Analyzer(), mark=("<b>", "</b>")) == (
        "The cats were <b>running</b> home"
    )


def test_snippets_of_a_big_batch_equal_the_library(server, library):
    """A Serper batch of more than 64 hits makes its snippets off the event loop: the same
    snippets as the library's, for each query's own hits, in order."""
    questions = hotpot_questions(9)
    body = [{"q": q, "num": 8} for q in questions]
    out = requests.post(server.url + "/search", json=body, timeout=60).json()
    analyzer = Analyzer.from_dict(library.parts()[library.default_bm25()]["analyzer"])
    assert sum(len(r["organic"]) for r in out) > 64
    for q, r in zip(questions, out, strict=True):
        want = [snippet(p.text, q, analyzer, 30, 200) for p in top(library, q, 8)]
        assert [o["snippet"] for o in r["organic"]] == want


# ---- the clients, replayed ----------------------------------------------------------------
def test_areal_asearcher_online_client(server, library):
    """AReaL examples/search_agent/asearcher/utils/search_utils.py and ASearcher's
    AReaL/ASearcher/utils/search_utils.py, ``AsyncOnlineSearchClient``: aiohttp POST
    ``{serper_server_addr}/search`` with ``X-API-KEY`` and ``{"q", "num"}``, reads
    ``organic[:topk]`` title/link/snippet; Jina pages by GET ``https://r.jina.ai/{url}`` with a
    bearer key: 200 -> the text, else ``[visit] Failed``."""
    import aiohttp

    async def episode() -> tuple[list[dict], list[str]]:
        headers = {"X-API-KEY": "unused", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{server.url}/search",
                headers=headers,
                json={"q": QUERY[:2000], "num": 5},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                assert response.status == 200
                data = await response.json()
            found = [
                {"title": o.get("title", ""), "url": o.get("link", ""), "snippet": o["snippet"]}
                for o in data.get("organic", [])[:5]
            ]
            pages = []
            jina = {"Authorization": "Bearer unused", "Content-Type": "application/json"}
            for url in (found[0]["url"], MISSING):
                async with session.get(f"{server.url}/r/{url}", headers=jina) as response:
                    ok = response.status == 200
                    text = await response.text()
                    pages.append(text if ok else f"[visit] Failed to read page. {response.status}")
        return found, pages

    found, pages = asyncio.run(episode())
    assert [f["url"] for f in found] == [p.url for p in top(library, QUERY, 5)]
    page = library.store.page(found[0]["url"])
    assert pages[0] == (
        f"Title: {page.title}\n\nURL Source: {page.url}\n\nMarkdown Content:\n{page.text}\n"
    )
    assert pages[1] == "[visit] Failed to read page. 404"


def test_skyrl_agent_search_engine(server, library):
    """SkyRL-agent skyrl_agent/tools/search_engine.py: requests POST with ``data=json.dumps``
    of ``{"q": query + " -site:..." filters, "num": 10, "extendParams": {...}}``; reads
    ``organic`` title/link/snippet. The ``-site:`` operators do not change the results."""
    blocked = ["chegg.com", "github.com", "huggingface.co"]
    q = QUERY + " " + " ".join(f"-site:{d}" for d in blocked)
    data = {"q": q, "num": 10, "extendParams": {"country": "en", "page": 1}}
    headers = {"X-API-KEY": "unused", "Content-Type": "application/json"}
    response = requests.post(server.url + "/search", headers=headers, data=json.dumps(data))
    assert response.status_code == 200
    results = response.json()
    assert "organic" in results
    assert [p["link"] for p in results["organic"]] == [p.url for p in top(library, QUERY, 10)]
    lines = [f"{i}. [{p['title']}]({p['link']})\n\n{p['snippet']}" for i, p in
             enumerate(results["organic"], 1)]  # fmt: skip
    assert len(lines) == 10


def test_skyrl_agent_web_browser_reader(server, library):
    """SkyRL-agent skyrl_agent/tools/web_browser.py reads ``jina_reader_url_prefix + url``
    with requests; a page that is not there is a 404 the tool turns into an error string."""
    url = top(library, QUERY, 1)[0].url
    r = requests.get(f"{server.url}/r/{url}", headers={"Authorization": "Bearer x"}, timeout=30)
    assert r.status_code == 200 and r.text.startswith("Title: ")
    r = requests.get(f"{server.url}/r/{MISSING}", timeout=30)
    assert r.status_code == 404 and r.json()["code"] == 404


def test_flashrag_serper_retriever(server, library):
    """FlashRAG flashrag/retriever/retriever.py ``SerperRetriever._search``: requests POST
    ``{"q", "num", "hl", "location", "gl"}``, ``raise_for_status``, then ``organic[:num]``
    as ``{"title", "text": snippet, "url": link}``."""
    payload = {"q": QUERY, "num": 3, "hl": "en", "location": "United States", "gl": "us"}
    headers = {"X-API-KEY": "unused", "Content-Type": "application/json"}
    response = requests.post(server.url + "/search", headers=headers, json=payload, timeout=30)
    response.raise_for_status()
    results = [
        {"title": o.get("title", ""), "text": o.get("snippet", ""), "url": o.get("link", "")}
        for o in response.json().get("organic", [])[:3]
    ]
    assert [r["url"] for r in results] == [p.url for p in top(library, QUERY, 3)]


def test_openresearcher_local_backend(server, library):
    """OpenResearcher browser.py ``LocalServiceBrowserBackend`` (``--search_url`` is its base):
    aiohttp POST ``/search`` ``{"query", "topn"}`` -> ``results`` of title/url/summary, POST
    ``/get_content`` ``{"url"}`` -> title/content; any non-200 raises its BackendError."""
    import aiohttp

    async def post(session, endpoint: str, payload: dict) -> tuple[int, dict]:
        async with session.post(f"{server.url}{endpoint}", json=payload) as resp:
            return resp.status, await resp.json()

    async def run() -> list:
        async with aiohttp.ClientSession() as session:
            return [
                await post(session, "/search", {"query": QUERY, "topn": 5}),
                await post(session, "/get_content", {"url": top(library, QUERY, 1)[0].url}),
                await post(session, "/get_content", {"url": MISSING}),
            ]

    (s1, found), (s2, page), (s3, missing) = asyncio.run(run())
    assert s1 == 200 and [r["url"] for r in found["results"]] == [
        p.url for p in top(library, QUERY, 5)
    ]
    assert all(set(r) == {"url", "title", "summary"} for r in found["results"])
    assert all(0 < len(r["summary"]) <= 180 for r in found["results"])
    first = library.store.page(found["results"][0]["url"])
    assert s2 == 200 and page == {"title": first.title, "content": first.text}
    assert s3 == 404 and MISSING in missing["detail"]


def test_browsecomp_plus_tools(server, library):
    """BrowseComp-Plus searcher/tools.py: search -> ``[{"docid", "score", "snippet"}]`` (the
    snippet: a document's first tokens), get_document -> ``{"docid", "text"}``."""
    hits = requests.post(
        server.url + "/browsecomp-plus/search", json={"query": QUERY, "k": 3}, timeout=30
    ).json()
    want = library.search([QUERY], k=3)[0]
    assert [h["docid"] for h in hits] == [p.id for p, _ in want]
    assert [h["score"] for h in hits] == pytest.approx([s for _, s in want])
    assert hits[0]["snippet"] == want[0][0].contents.strip()  # shorter than 512 words
    doc = requests.post(
        server.url + "/browsecomp-plus/get_document", json={"docid": hits[0]["docid"]}
    ).json()
    assert doc == {"docid": hits[0]["docid"], "text": library.store.get(want[0][0].row).text}
    cut = requests.post(
        server.url + "/browsecomp-plus/search",
        json={"query": QUERY, "k": 1, "snippet_max_tokens": 3},
    ).json()
    assert cut[0]["snippet"] == " ".join(want[0][0].contents.split()[:3])


# ---- Jina forms -----------------------------------------------------------------------------
def test_jina_json_and_path_forms(server, library):
    page = library.store.get(5)
    by_json = requests.get(
        f"{server.url}/r/{page.url}", headers={"Accept": "application/json"}, timeout=30
    ).json()
    assert by_json["code"] == 200 and by_json["status"] == 20000
    assert {k: by_json["data"][k] for k in ("title", "url", "content")} == {
        "title": page.title, "url": page.url, "content": page.text
    }  # fmt: skip
    host_form = requests.get(f"{server.url}/r.jina.ai/{page.url}", timeout=30)
    query_form = requests.get(
        f"{server.url}/r/https://en.wikipedia.org/w/index.php?title="
        + page.title.replace(" ", "%20"),
        timeout=30,
    )
    posted = requests.post(f"{server.url}/r/", json={"url": page.url}, timeout=30)
    plain = requests.get(f"{server.url}/r/{page.url}", timeout=30)
    assert plain.status_code == 200
    assert host_form.text == query_form.text == posted.text == plain.text


# ---- bad input: clear 4xx, never a stall or a 500 ------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("/search", {"q": "x", "num": 1000}, "num"),
        ("/search", {"q": "", "num": 3}, "q"),
        ("/search", {"num": 3}, "q"),
        ("/search", {"q": "x", "num": "ten"}, "num"),
        ("/search", {"q": "x", "num": 50, "page": 3}, "page"),
        ("/search", [], "batch"),
        ("/search", [{"q": "x"}] * 101, "batch"),
        ("/search", ["x"], "search 0"),
        ("/search", "x", "send"),
        ("/search", {"query": "x", "topn": 10**6}, "topn"),
        ("/get_content", {"url": ""}, "url"),
        ("/browsecomp-plus/search", {"query": "x", "k": 0}, "k"),
        ("/browsecomp-plus/get_document", {"docid": None}, "docid"),
        ("/r/", {"goal": "find it"}, "url"),
    ],
)
def test_bad_input_is_a_clear_422(server, path, body, names):
    r = requests.post(server.url + path, json=body, timeout=10)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["error"] == "bad_request" and names in out["detail"]
    if path == "/search" and not (isinstance(body, dict) and "query" in body):
        assert out["statusCode"] == 422 and out["message"] == out["detail"]  # Serper's shape


def test_not_json_and_unknown_pages(server):
    r = requests.post(server.url + "/search", data=b"{not json", timeout=10)
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = requests.get(f"{server.url}/r/{MISSING}", headers={"Accept": "application/json"})
    assert r.status_code == 404
    assert r.json()["data"] is None and r.json()["name"] == "NotFoundError"
    r = requests.get(f"{server.url}/r/", timeout=10)
    assert r.status_code == 422
    r = requests.post(server.url + "/browsecomp-plus/get_document", json={"docid": "nope-zz"})
    assert r.status_code == 404 and "nope-zz" in r.json()["detail"]


def test_token_as_serper_or_jina_key(root):
    """With --token, Serper clients send it as X-API-KEY (SERPER_API_KEY) and Jina clients as
    a bearer key (JINA_API_KEY); anything else is a 401."""
    from fastapi.testclient import TestClient

    from retriever.server.app import create_app

    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1, token="s3cret"))
    with TestClient(create_app(service, background=False)) as client:
        body = {"q": QUERY, "num": 1}
        assert client.post("/search", json=body).status_code == 401
        assert client.post("/search", json=body, headers={"X-API-KEY": "no"}).status_code == 401
        assert client.post("/search", json=body, headers={"X-API-KEY": "s3cret"}).status_code == 200
        url = client.post("/search", json=body, headers={"X-API-KEY": "s3cret"}).json()
        link = url["organic"][0]["link"]
        ok = client.get(f"/r/{link}", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and client.get(f"/r/{link}").status_code == 401
