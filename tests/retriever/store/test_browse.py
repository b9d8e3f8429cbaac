"""Browser tools over the store: sections and links kept by the corpus build, the gpt-oss style
views (open/find/sections), ``POST /browse`` and the kiwix-serve routes GEM's WikiGame reads."""

from __future__ import annotations

import bz2
import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import XML_SAMPLE

from index_build.wikitext import wikitext_to_page, wikitext_to_text
from retriever.errors import BadRequestError, PageNotFoundError
from retriever.store import browse as B
from retriever.store.docstore import DocStore

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """The XML sample's corpus with a BM25 part (kiwix search needs a retriever)."""
    from index_build.__main__ import main

    out = tmp_path_factory.mktemp("browse") / "index"
    assert main(["corpus", "--input", str(XML_SAMPLE), "--out", str(out), "--no-progress"]) == 0
    assert main(["bm25", "--index", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def store(root) -> DocStore:
    return DocStore(root)


def _wikitext(title: str) -> str:
    xml = bz2.open(XML_SAMPLE).read().decode()
    start = xml.index(f"<title>{title}</title>")
    body = xml[start : xml.index("</page>", start)]
    import html

    return html.unescape(body[body.index("<text") : body.index("</text>")].split(">", 1)[1])


# ---- what the build keeps ------------------------------------------------------------------
def test_sections_and_links_of_the_sample_match_the_wikitext(store):
    row = store.page_row("Anarchism")
    page, meta = store.get_page(row), store.page_meta(row)
    # by hand from the wikitext: '''Anarchism''' is a [[political philosophy]] that advocates
    # [[self-governance|self-governed]] societies ... [[stateless society|stateless societies]]
    assert meta["links"][:3] == [
        ["Political philosophy", "political philosophy", 15],
        ["Self-governance", "self-governed", 51],
        ["Stateless society", "stateless societies", 137],
    ]
    assert [s[:2] for s in meta["sections"][:4]] == [
        [2, "Etymology and terminology"],
        [2, "History"],
        [3, "Origins"],
        [3, "First International and the Paris Commune"],
    ]
    wikitext = _wikitext("Anarchism")
    headings = re.findall(r"^(={2,6})\s*(.+?)\s*\1\s*$", wikitext, re.M)
    kept = [
        h
        for h in headings
        if h[1].lower()
        not in (
            "references",
            "further reading",
            "external links",
            "see also",
            "notes",
            "citations",
            "general and cited sources",
            "sources",
        )
    ]
    assert len(meta["sections"]) >= len(kept) - 3  # reference-only sections are dropped
    for _level, heading, at in meta["sections"]:
        assert page.text[at : at + len(heading)] == heading
        assert at == 0 or page.text[at - 1] == "\n"
    for target, anchor, at in meta["links"]:  # every link sits on its anchor text
        assert at >= 0 and page.text[at : at + len(anchor)] == anchor, (target, anchor)
    # counts over the whole sample, as the manifest records them
    rows = [store.page_meta(r) for r in range(store.num_pages)]
    entry = store.manifest["page_meta"]
    assert entry["num_links"] == sum(len(m["links"]) for m in rows) > 20000
    assert entry["num_sections"] == sum(len(m["sections"]) for m in rows) > 1000
    assert "pages.meta.jsonl" in store.manifest["files"]


def test_page_text_is_unchanged_by_the_link_table():
    """The store's text is byte-for-byte what ``wikitext_to_text`` gives (existing builds)."""
    for title in ("Anarchism", "Ayn Rand", "Aristotle", "Alabama"):
        wikitext = _wikitext(title)
        text, meta = wikitext_to_page(wikitext)
        assert text == wikitext_to_text(wikitext)
        assert meta["links"]


def test_old_store_without_meta_still_opens_and_says_so(root, tmp_path):
    old = tmp_path / "corpus"
    shutil.copytree(Path(root) / "corpus", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["page_meta"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    (old / "pages.meta.jsonl").unlink()
    store = DocStore(old)
    assert not store.has_page_meta
    shown = B.browse_one(store, {"id": "Anarchism"})
    assert "Anarchism" in shown["text"] and shown["links"] == [] and not shown["has_links"]
    with pytest.raises(BadRequestError, match="no sections for this corpus"):
        B.browse_one(store, {"action": "sections", "id": "Anarchism"})


# ---- the library ---------------------------------------------------------------------------
def test_open_scroll_find_sections_and_follow_a_link(store):
    page = B.load_page(store, "https://en.wikipedia.org/wiki/Ayn_Rand")
    first = B.view(page, cursor=0)
    assert first["text"].startswith(f"[0] Ayn Rand ({page.url})\n**viewing lines [0 - 39] of ")
    assert (
        "\nL0: " in first["text"] and "\nL39: " in first["text"] and "\nL40: " not in first["text"]
    )
    second = B.view(page, cursor=0, loc=40, num_lines=5)
    assert "**viewing lines [40 - 44]" in second["text"] and "\nL44: " in second["text"]
    # link numbers in the text are the indexes of the links list
    mark = re.search(r"【(\d+)†anarchism】", " ".join(page.lines))
    assert mark is not None
    assert first["links"][int(mark.group(1))][0] == "Anarchism"
    toc = B.sections(page, cursor=1)
    assert "Early life" in toc["text"]
    at = B.view(page, cursor=0, section="early life")
    assert at["text"].split("\n")[3].endswith("Early life")
    found = B.find(page, "objectivism", cursor=2)
    assert found["text"].startswith("[2] Find results for text: `objectivism` in `Ayn Rand`")
    assert "# 【0†match at L" in found["text"]
    line = found["links"][0][1]
    assert "objectivism" in B.view(page, 0, loc=line, num_lines=4)["text"].lower()


def test_bad_input_is_a_clear_error_never_a_stall(store):
    page = B.load_page(store, "Anarchism")
    with pytest.raises(PageNotFoundError, match="no page 'No such page zz'"):
        B.load_page(store, "No such page zz")
    with pytest.raises(BadRequestError, match="Invalid location parameter: `99999`"):
        B.view(page, loc=99999)
    # a find pattern is literal text unless asked: regex signs match themselves
    assert "No `find` results" in B.find(page, "(a|aa)+$")["text"]
    evil = B.make_page("T", "u", "a" * 60 + "!", None)
    t = time.monotonic()
    with pytest.raises(BadRequestError, match="took over"):
        B.find(evil, "(a|aa)+$", regex=True)
    assert time.monotonic() - t < 3
    with pytest.raises(BadRequestError, match="not a valid regex"):
        B.find(page, "(unclosed", regex=True)
    results = B.browse(store, [{"id": "Anarchism"}, {"id": "No such page zz"}, {"action": "x"}])
    assert "Anarchism" in results[0]["text"]
    assert results[1]["status"] == 404 and results[2]["status"] == 422


# ---- HTTP -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def http(root):
    from fastapi.testclient import TestClient

    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService
    from retriever.server.service_config import ServiceConfig

    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1))
    with TestClient(create_app(service, background=False)) as client:
        yield client


def test_browse_route_answers_views_and_4xx(http, store):
    r = http.post("/browse", json={"id": "Anarchism", "loc": 48, "num_lines": 3})
    assert r.status_code == 200 and r.json() == B.browse_one(
        store, {"id": "Anarchism", "loc": 48, "num_lines": 3}
    )
    assert http.post("/browse", json={"id": "No such page zz"}).status_code == 404
    for bad in ({"id": "Anarchism", "loc": -1}, {"action": "find", "id": "Anarchism"}, [1]):
        r = http.post("/browse", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"]
    r = http.post("/browse", content=b"{nope")
    assert r.status_code == 422
    batch = [{"id": "Anarchism"}, {"id": "No such page zz"}, {"action": "find", "id": "A"}]
    r = http.post("/browse", json={"requests": batch})
    assert r.status_code == 200
    result = r.json()["result"]
    assert "Anarchism" in result[0]["text"]
    assert [x.get("status") for x in result[1:]] == [404, 422]


class _Links(HTMLParser):
    """What GEM's KiwixWikiTrawler reads: the h1 title, the content div's text and hrefs."""

    def __init__(self):
        super().__init__()
        self.title, self.hrefs, self.results, self._in = "", [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h1" and "firstHeading" in (a.get("class") or ""):
            self._in = "h1"
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])

    def handle_endtag(self, tag):
        self._in = None if tag == "h1" else self._in

    def handle_data(self, data):
        if self._in == "h1":
            self.title += data


def test_kiwix_routes_walk_the_link_graph_as_wikigame_does(http):
    """GEM's KiwixWikiTrawler requests ``/raw/{zim}/content/{Title_with_underscores}``, takes
    the hrefs of the content div as the neighbouring titles and requests them the same way;
    ``/search?pattern=`` and ``/random?content=`` are its other two calls."""
    zim = "wikipedia_en_simple_all_nopic_2025-09"
    path = ["Aristotle", "Ayn_Rand", "Anarchism"]
    for here, there in zip(path, path[1:]):
        r = http.get(f"/raw/{zim}/content/{here}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'mw-content-ltr mw-parser-output">' in r.text
        page = _Links()
        page.feed(r.text)
        assert page.title == here.replace("_", " ")
        assert there in page.hrefs  # the game's \\boxed{Ayn_Rand} is one of these
    assert http.get(f"/content/{zim}/A/Anarchism").status_code == 200
    assert http.get(f"/raw/{zim}/content/No_such_page_zz").status_code == 404
    r = http.get("/search", params={"pattern": "anarchism", "books.name": zim})
    assert r.status_code == 200
    assert (
        f'<div class="results"><ul>\n<li><a href="/content/{zim}/Anarchism">Anarchism</a>' in r.text
    )
    assert http.get("/search", params={"pattern": ""}).status_code == 400
    assert http.get("/search", params={"pattern": "x", "pageLength": "zz"}).status_code == 400
    r = http.get(f"/random?content={zim}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"].startswith(f"/content/{zim}/")
    assert http.get(r.headers["location"]).status_code == 200


# ---- a scripted browsing episode through both clients ---------------------------------------
def _episode(client) -> list[str]:
    """A scripted policy: open a page, scroll, list sections, open one, find, follow a link
    (the cursor stack is the caller's, as in gpt-oss's browser)."""
    stack: list[dict] = []

    def call(**request) -> dict:
        (result,) = client.browse([{**request, "cursor": len(stack)}])
        if "error" not in result:
            stack.append(result)
        return result

    shown = [call(id="Aristotle")["text"]]
    shown.append(call(id=stack[0]["url"], loc=40, num_lines=10)["text"])  # scroll
    shown.append(call(action="sections", id="Aristotle")["text"])
    shown.append(call(id="Aristotle", section="Logic")["text"])
    found = call(action="find", id="Aristotle", pattern="ayn rand")
    shown.append(found["text"])
    line = found["links"][0][1]
    page = call(id="Aristotle", loc=line, num_lines=4)
    mark = re.search(r"【(\d+)†Ayn Rand】", page["text"])
    target, at = page["links"][int(mark.group(1))]
    shown.append(call(id=target, loc=at)["text"])  # follow the link
    shown.append(call(id="No such page zz").get("error", ""))
    return shown


def test_scripted_episode_same_in_process_and_over_http(root):
    from retriever_fakes import LiveServer

    from retriever.client.http import HTTPClient
    from retriever.client.inprocess import InProcessClient
    from retriever.server.service import RetrievalService
    from retriever.server.service_config import ServiceConfig

    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1))
    with LiveServer(service) as live, HTTPClient(live.url) as http:
        over_http = _episode(http)
        in_process = _episode(InProcessClient(service))
    assert over_http == in_process
    assert over_http[0].startswith("[0] Aristotle (")
    assert "**viewing lines [40 - 49]" in over_http[1]
    assert over_http[2].startswith("[2] Sections of `Aristotle`") and "Logic" in over_http[2]
    assert over_http[3].startswith("[3] Aristotle") and over_http[3].split("\n")[3].endswith(
        "Logic"
    )
    assert "match at L" in over_http[4]
    assert over_http[5].startswith("[6] Ayn Rand (")
    assert "no page 'No such page zz'" in over_http[6]
