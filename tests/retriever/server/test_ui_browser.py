"""/ui in a real headless Chromium (DevTools protocol): what the pages show is what the library
returns (search deep links, side by side, pages through /access), trajectories are browsable
down to one episode, and hostile corpus and trajectory text renders as text.

Skipped, with the reason, where no chromium is installed (``make setup`` installs it with apt).
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse

import httpx
import pytest
from retriever_fakes import FakeRetriever
from ui_browser import Browser, find_chromium
from ui_support import (
    HOSTILE_PREDICTION,
    HOSTILE_TITLE,
    LiveServer,
    build_index,
    write_trajectories,
)

from retriever.index import Index
from retriever.server.app import create_app
from retriever.server.service import RetrievalService, ServiceConfig

TOKEN = "browser-token"
pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium: make setup installs it with apt (or set $CHROMIUM); /ui browser tests skipped",
)
NO_MARKUP = "document.querySelectorAll('main img, main script, main b, main i, main iframe').length"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("ui-browser") / "index")


@pytest.fixture(scope="module")
def fake(root):
    """The server's second retriever: seeded pseudo-random results, and a gate to hold them."""
    return FakeRetriever(len(Index.open(root).store), name="fake")


@pytest.fixture(scope="module")
def site(root, fake):
    """(base url, service, trajectory records) of a live server with a token."""
    path = root.parent / "trajectories.jsonl"
    records = write_trajectories(path, root)
    index = Index.open(root)
    retrievers = {"bm25": index.retriever("bm25"), "fake": fake}
    config = ServiceConfig(index=str(root), token=TOKEN, warmup=False, trajectories=(str(path),))
    service = RetrievalService(config, retrievers=retrievers).start()
    with LiveServer(create_app(service)) as base:
        yield base, service, records
    service.stop()


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


@pytest.fixture(autouse=True)
def no_page_errors(browser):
    browser.errors.clear()
    yield
    assert browser.errors == [], "the page raised or logged errors"


def url(base: str, path: str, **params) -> str:
    query = urllib.parse.urlencode(params)
    return f"{base}{path}{'?' + query if query else ''}#token={TOKEN}"


def test_search_deep_link_shows_the_library_results(site, browser):
    base, service, _ = site
    q = "fight song of the university in Lawrence Kansas"
    browser.open(url(base, "/ui", q=q, retriever="bm25", k=5))
    expected = service.retrieve([q], 5, "bm25")[0]
    assert browser.texts(".hit .title") == [d["title"] for d in expected]
    scores = browser.texts(".hit .score")
    assert scores == [f"score {d['score']:.4f}" for d in expected]
    marks = {m.lower() for m in browser.texts(".hit mark")}
    assert marks and marks <= {"fight", "song", "university", "lawrence", "kansas"}
    assert browser.evaluate("document.getElementById('q').value") == q
    assert "5 results" in browser.texts("#status")[0]


def test_side_by_side_marks_the_overlap(site, browser):
    base, service, _ = site
    q = "airport"
    browser.open(url(base, "/ui", q=q, retriever="bm25", k=60, compare="fake"))
    left, right = (service.retrieve([q], 60, name)[0] for name in ("bm25", "fake"))
    assert browser.texts("#col-0 .hit .title") == [d["title"] for d in left]
    assert browser.texts("#col-1 .hit .title") == [d["title"] for d in right]
    both = {d["id"] for d in left} & {d["id"] for d in right}
    assert both, "pick k so the two lists share results"
    for column, other in (("#col-0", right), ("#col-1", left)):
        marked = browser.evaluate(
            f"[...document.querySelectorAll('{column} .hit.overlap')].map(e => e.dataset.id)"
        )
        assert set(marked) == both
        badges = browser.texts(f"{column} .hit.overlap .badge")
        ranks = {d["id"]: i + 1 for i, d in enumerate(other)}
        assert badges == [f"in both · #{ranks[i]} there" for i in marked]
    assert f"{len(both)} in both" in browser.texts("#status")[0]


def test_open_a_page_and_turn_its_pages(site, browser):
    base, service, _ = site
    browser.open(url(base, "/ui", q="zeppelin manual", k=3, chars=1000))
    first_id = browser.evaluate("document.querySelector('.hit').dataset.id")
    browser.click(".hit .title")
    browser.wait_for("!document.getElementById('reader').hidden")
    browser.wait_idle()
    full = service.access(ids=[first_id])[0]
    n = math.ceil(full["total_chars"] / 1000)
    assert n >= 2, "the test page should span several pages"
    assert browser.texts("#reader-page") == [f"Page 1 of {n}"]
    assert browser.texts("#reader-title") == [full["title"]]
    page = service.access(ids=[first_id], offset=0, max_chars=1000)[0]
    assert browser.texts("#reader-text") == [page["contents"]]
    browser.click("#reader-next")
    browser.wait_for(f"document.getElementById('reader-page').textContent === 'Page 2 of {n}'")
    browser.wait_idle()
    page2 = service.access(ids=[first_id], offset=1000, max_chars=1000)[0]
    assert browser.texts("#reader-text") == [page2["contents"]]
    link = browser.evaluate("location.href")
    assert "p=2" in link and "open=" in link
    browser.open(link + f"#token={TOKEN}")  # the link reproduces the open page
    assert browser.texts("#reader-page") == [f"Page 2 of {n}"]
    assert browser.texts("#reader-text") == [page2["contents"]]


def test_hostile_corpus_text_renders_as_text(site, browser):
    base, service, _ = site
    q = "marmalade quokka"
    browser.open(url(base, "/ui", q=q, k=3))
    hostile = service.retrieve([q], 3)[0][0]
    assert hostile["title"] == HOSTILE_TITLE  # the store keeps the markup as it came
    assert browser.texts(".hit .title")[0] == HOSTILE_TITLE
    assert any("<script>window.xssFired=2</script>" in t for t in browser.texts(".hit .text"))
    assert browser.evaluate(NO_MARKUP) == 0
    assert browser.evaluate("document.querySelectorAll('main a').length") == 0
    assert browser.evaluate("typeof window.xssFired") == "undefined"
    browser.open(url(base, "/ui", q=q, k=3, open=hostile["id"]))
    assert browser.texts("#reader-title") == [HOSTILE_TITLE]
    assert "<script>" in browser.texts("#reader-text")[0]
    assert browser.evaluate("document.querySelectorAll('#reader img, #reader script').length") == 0
    assert browser.evaluate("typeof window.xssFired") == "undefined"


def test_trajectory_table_filters_sorts_and_opens_an_episode(site, browser):
    base, _, records = site
    browser.open(url(base, "/ui/trajectories"))
    assert browser.texts("#episodes tbody .question") == [r["question"] for r in records]
    assert browser.texts("#range") == [f"rows 1–{len(records)} of {len(records)}"]
    assert HOSTILE_PREDICTION in " ".join(browser.texts("#episodes tbody td"))
    assert browser.evaluate(NO_MARKUP) == 0

    browser.click("#failed")
    browser.wait_for("location.search.includes('failed=1')")
    browser.wait_idle()
    failed = [i + 1 for i, r in enumerate(records) if r["rewards"]["em"] < 1]
    assert (
        browser.evaluate(
            "[...document.querySelectorAll('#episodes tbody tr')].map(r => +r.dataset.line)"
        )
        == failed
    )

    browser.click("th[data-sort='turns']")  # ascending, then descending
    browser.wait_for("location.search.includes('sort=turns')")
    browser.wait_idle()
    browser.click("th[data-sort='turns']")
    browser.wait_for("location.search.includes('desc=1')")
    browser.wait_idle()
    turns = [int(t) for t in browser.texts("#episodes tbody td:nth-child(9)")]
    assert turns == sorted((records[i - 1]["num_turns"] for i in failed), reverse=True)

    line = int(browser.evaluate("document.querySelector('#episodes tbody tr').dataset.line"))
    browser.click("#episodes tbody tr .question")
    browser.wait_for(f"location.search.includes('episode={line}&v=')")  # the line's digest
    browser.wait_idle()
    rec = records[line - 1]
    assert browser.texts("#ep-question") == [rec["question"]]
    assert browser.texts(".turn pre.action") == [t["action"] for t in rec["turns"]]
    observations = [t["observation"] for t in rec["turns"] if t["observation"]]
    assert browser.texts(".turn pre.observation") == observations
    assert browser.evaluate(NO_MARKUP) == 0
    assert browser.evaluate("typeof window.xssFired") == "undefined"


def test_episode_deep_link(site, browser):
    base, _, records = site
    line = next(i + 1 for i, r in enumerate(records) if r["counts"].get("invalid"))
    browser.open(url(base, "/ui/trajectories", file=0, episode=line))
    rec = records[line - 1]
    assert browser.texts("#ep-question") == [rec["question"]]
    calls = browser.texts(".turn .call")
    assert len(calls) == len(rec["turns"])
    assert calls[0] == f"invalid ({rec['turns'][0]['reason']})"
    assert browser.texts(".turn.invalid .reward") == ["reward: format penalty"]
    assert browser.evaluate("document.getElementById('table-view').hidden") is True


def test_a_deep_link_to_a_line_that_now_holds_another_episode_says_so(site, browser):
    base, _, records = site
    browser.open(url(base, "/ui/trajectories", file=0, episode=2, v="0" * 16))
    status = browser.texts("#status")[0]
    assert "line 2 of trajectories.jsonl now holds another episode" in status, status
    assert browser.texts("#ep-question") in ([""], [])
    browser.open(url(base, "/ui/trajectories", file=0, episode=2))  # no v: what is there now
    assert browser.texts("#ep-question") == [records[1]["question"]]


def test_stats_page_draws_the_metrics(site, browser):
    base, _, _ = site
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for q in ("kansas", "apple remote", "airport"):
        httpx.post(f"{base}/retrieve", json={"queries": [q]}, headers=auth).raise_for_status()
    browser.open(url(base, "/ui/stats", every=0.5), ready="+document.body.dataset.polls >= 2")
    snap = httpx.get(f"{base}/ui/api/stats", headers=auth).json()
    served = sum(
        s["value"]
        for s in snap["counters"]["requests"]
        if s["labels"]["endpoint"] == "/retrieve" and s["labels"]["code"] == "200"
    )
    cells = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#endpoints tbody tr')]"
        ".map(r => [r.cells[0].textContent, r.cells[3].textContent]))"
    )
    assert int(cells["/retrieve"]) == served >= 3
    # no traffic since: the percentiles are the whole run's, as Prometheus would compute them
    (hist,) = [
        h for h in snap["histograms"]["request_seconds"] if h["labels"]["endpoint"] == "/retrieve"
    ]
    shown = browser.evaluate(
        "[...[...document.querySelectorAll('#endpoints tbody tr')]"
        ".find(r => r.cells[0].textContent === '/retrieve').cells].slice(4).map(c => c.textContent)"
    )
    expected = [1000 * histogram_quantile(q, hist["buckets"]) for q in (0.5, 0.9, 0.99)]
    assert [float(v) for v in shown] == pytest.approx(expected, abs=0.006)  # shown to 0.01 ms
    rows = browser.evaluate(
        "[...document.querySelectorAll('#retrievers tbody tr')].map(r => r.cells[0].textContent)"
    )
    assert rows == sorted(snap_names(snap))
    workers = browser.evaluate(
        "[...document.querySelectorAll('#workers tbody tr')]"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent])"
    )
    assert workers == [[name, "alive"] for name in sorted(snap["health"]["retrievers"])]
    assert sorted(snap["health"]["retrievers"]) == ["bm25", "fake"]


def histogram_quantile(q: float, buckets: list) -> float:
    """Prometheus' histogram_quantile over cumulative ``[le, count]`` buckets (linear within
    the bucket that holds the rank; the lower bound when it falls in +Inf)."""
    total = buckets[-1][1]
    rank = q * total
    low_le, low_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == "+Inf":
                return low_le
            return low_le + (le - low_le) * (rank - low_count) / (count - low_count)
        low_le, low_count = le, count
    return low_le


def snap_names(snap) -> set:
    series = snap["counters"].get("queries", []) + snap["gauges"].get("queue_depth", [])
    return {s["labels"]["retriever"] for s in series}


def test_a_missing_token_asks_for_one(site, browser):
    base, _, _ = site
    browser.call("Page.navigate", url=f"{base}/health")  # same origin, to reach its storage
    browser.wait_for("location.pathname === '/health' && document.readyState === 'complete'")
    browser.evaluate("sessionStorage.clear()")
    browser.call("Page.navigate", url=f"{base}/ui?q=kansas")
    browser.wait_for(
        "document.getElementById('token-form') && !document.getElementById('token-form').hidden"
    )
    assert "needs its token" in browser.texts("#token-message")[0]
    assert browser.texts(".hit") == []
    browser.evaluate(f"document.getElementById('token-input').value = {TOKEN!r}")
    browser.click("#token-form button")  # stored for this tab, then the page reloads
    browser.wait_for("document.querySelectorAll('.hit').length > 0")
    browser.wait_idle()
    assert browser.evaluate("document.getElementById('token-form').hidden") is True
    assert TOKEN not in browser.evaluate("location.href")


@pytest.mark.slow
def test_search_page_waits_for_a_loading_server(site, browser):
    _, ready_service, _ = site
    root = ready_service.config.index
    slow = FakeRetriever(len(ready_service.index.store), name="bm25")
    slow.gate = threading.Event()  # the warm-up query (and so loading) waits for it
    service = RetrievalService(ServiceConfig(index=root), retrievers={"bm25": slow})
    with LiveServer(create_app(service)) as base:  # loads in the background: 503 meanwhile
        browser.call("Page.navigate", url=f"{base}/ui?q=kansas&k=3")
        browser.wait_for("document.getElementById('status').textContent.includes('loading')")
        assert browser.texts(".hit") == []
        slow.gate.set()
        browser.wait_for("document.body.dataset.ready === '1'")
        browser.wait_idle()
        expected = service.retrieve(["kansas"], 3)[0]
        assert browser.texts(".hit .title") == [d["title"] for d in expected]


def test_trajectory_page_shows_indexing_then_the_table(site, browser, tmp_path, monkeypatch):
    from retriever.server.ui import routes
    from retriever.server.ui.trajectories import TrajectoryFile

    _, ready_service, records = site
    monkeypatch.setattr(routes, "INDEX_WAIT", 0.0)
    hold = threading.Event()  # the scan waits for it: "indexing" for as long as the test needs
    scan = TrajectoryFile._scan
    monkeypatch.setattr(
        TrajectoryFile, "_scan", lambda self, size: (hold.wait(30), scan(self, size))
    )
    path = tmp_path / "large.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(6000):
            f.write(json.dumps({**records[i % len(records)], "question": f"q{i}"}) + "\n")
    config = ServiceConfig(index=ready_service.config.index, trajectories=(str(path),))
    service = RetrievalService(config, retrievers={"bm25": FakeRetriever(10)}).start()
    try:
        with LiveServer(create_app(service)) as base:
            browser.call("Page.navigate", url=f"{base}/ui/trajectories?sort=question&desc=1")
            browser.wait_for("document.getElementById('status').textContent.includes('indexing')")
            assert browser.evaluate("document.body.dataset.busy") == "1"
            hold.set()
            browser.wait_for("document.body.dataset.ready === '1'", timeout=60)
            browser.wait_idle()
            first = sorted((f"q{i}" for i in range(6000)), reverse=True)[:50]
            assert browser.texts("#episodes tbody .question") == first
            assert browser.texts("#range") == ["rows 1–50 of 6000"]
            # listed while indexing, the file had no datasets yet: the table's answer fills them
            datasets = sorted({r["dataset"] for r in records})
            assert browser.texts("#dataset option") == ["all", *datasets]
    finally:
        hold.set()
        service.stop()


def test_a_slow_older_answer_does_not_replace_a_newer_search(site, browser, fake):
    base, service, _ = site
    fake.gate = threading.Event()  # searches of "fake" wait until it is set
    try:
        browser.open(url(base, "/ui"))
        fake.entered.clear()
        browser.evaluate(
            "document.getElementById('q').value = 'slow query';"
            "document.getElementById('retriever').value = 'fake';"
            "document.querySelector('#search-form button').click();"
        )
        assert fake.entered.wait(10)  # the slow search reached the retriever
        browser.evaluate(
            "document.getElementById('q').value = 'kansas';"
            "document.getElementById('retriever').value = 'bm25';"
            "document.querySelector('#search-form button').click();"
        )
        k = service.config.default_topk  # the form starts with the server default
        expected = [d["title"] for d in service.retrieve(["kansas"], k, "bm25")[0]]
        browser.wait_for(f"document.querySelectorAll('.hit').length === {len(expected)}")
        fake.gate.set()  # now the older answer arrives
        browser.wait_idle()
        assert browser.texts("#col-0 h2") == ["bm25"]
        assert browser.texts(".hit .title") == expected
        assert "q=kansas" in browser.evaluate("location.search")
    finally:
        fake.gate.set()
        fake.gate = None


class DyingRetriever(FakeRetriever):
    """Kills its worker thread on the query "die" (as a bug past the batch's guard would)."""

    def search(self, queries, k):
        if "die" in queries:
            raise SystemExit("worker killed by the test")
        return super().search(queries, k)


def test_stats_page_shows_a_dead_worker(site, browser):
    _, ready_service, _ = site
    config = ServiceConfig(index=ready_service.config.index, warmup=False)
    service = RetrievalService(config, retrievers={"bm25": DyingRetriever(10, name="bm25")})
    service.start()
    try:
        with LiveServer(create_app(service)) as base:
            assert httpx.post(f"{base}/retrieve", json={"queries": ["die"]}).status_code == 503
            browser.open(f"{base}/ui/stats?every=0.5", ready="+document.body.dataset.polls >= 1")
            cells = browser.evaluate(
                "[...document.querySelector('#workers tbody tr').cells].map(c => c.textContent)"
            )
            assert cells[:2] == ["bm25", "dead"] and "worker killed by the test" in cells[3]
            assert "degraded" in browser.texts("#process dd")[0]
    finally:
        service.stop()
