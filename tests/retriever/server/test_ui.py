"""/ui without a browser: trajectory paging against a naive whole-file reference, the stats
snapshot against prometheus_client's registry (the server's and one of its own), the token,
headers, flags and errors. The browser tests are in test_ui_browser.py."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import threading

import pytest
from conftest import REPO
from env_support import HOTPOT
from fastapi.testclient import TestClient
from ui_support import build_index, write_trajectories

from retriever.errors import BadRequestError, ServiceUnavailableError
from retriever.server.app import build_parser, config_from_args, create_app
from retriever.server.service import RetrievalService, ServiceConfig
from retriever.server.ui.rows import NUMERIC, SORT_KEYS, Query
from retriever.server.ui.stats import snapshot
from retriever.server.ui.trajectories import TrajectoryFile

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def ui_root(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("ui") / "index")


@pytest.fixture(scope="module")
def records(ui_root):
    return write_trajectories(ui_root.parent / "trajectories.jsonl", ui_root)


@pytest.fixture(scope="module")
def traj_path(ui_root, records):
    return ui_root.parent / "trajectories.jsonl"


@pytest.fixture(scope="module")
def client(ui_root, traj_path):
    config = ServiceConfig(
        index=str(ui_root), warmup=False, token=TOKEN, trajectories=(str(traj_path),)
    )
    service = RetrievalService(config).start()
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c
    service.stop()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---- the trajectory index against a naive reference ----------------------------------------
def big_file(path, records, n: int, seed: int = 0) -> list:
    """``n`` episodes varied from the real ones, with blank and broken lines between them;
    returns each line's record (None for lines that are not episodes)."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        rec = json.loads(json.dumps(rng.choice(records)))
        rec["dataset"] = rng.choice(["nq", "hotpotqa", "musique", "bamboogle"])
        rec["question"] = f"{rng.choice(['Who', 'what', 'When', 'where'])} {rng.randrange(300)}"
        rec["rewards"]["em"] = float(rng.random() < 0.4)
        rec["rewards"]["f1"] = rng.choice([0.0, 0.25, 0.5, 1.0])
        if rng.random() < 0.05:
            del rec["rewards"]["format"]  # a record without a metric sorts last
        rec["counts"]["search"] = rng.randrange(5)
        rec["num_turns"] = rng.randrange(1, 9)
        if rng.random() < 0.03:
            rec["policy_error"] = "timeout"
        lines.append(rec)
        if i % 97 == 5:
            lines.append(None)  # broken JSON
        if i % 211 == 7:
            lines.append("")  # blank line
    with open(path, "w", encoding="utf-8") as f:
        for rec in lines:
            if rec is None:
                f.write('{"question": "cut off in the mid\n')
            elif rec == "":
                f.write("\n")
            else:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return lines


def naive(lines: list, q: Query) -> tuple[list[int], int]:
    """Load everything, filter, sort: the line numbers of the requested page."""
    rows = []
    for number, rec in enumerate(lines, 1):
        if not isinstance(rec, dict):
            continue
        em = rec["rewards"].get("em", math.nan)
        value = {
            "line": number,
            "dataset": rec["dataset"],
            "question": rec["question"].casefold(),
            "em": em,
            "cover_em": rec["rewards"].get("cover_em", math.nan),
            "f1": rec["rewards"].get("f1", math.nan),
            "format": rec["rewards"].get("format", math.nan),
            "turns": rec["num_turns"],
            "searches": rec["counts"].get("search", 0),
            "accesses": rec["counts"].get("access", 0),
            "invalid": rec["counts"].get("invalid", 0),
        }[q.sort]
        failed = not em >= 1 or rec.get("policy_error") is not None
        if q.failed_only and not failed:
            continue
        if q.dataset is not None and rec["dataset"] != q.dataset:
            continue
        if q.text and q.text.casefold() not in rec["question"].casefold():
            continue
        rows.append((value, number))
    # ties keep file order; missing numbers last in both directions
    if q.sort in NUMERIC:
        present = [r for r in rows if not math.isnan(r[0])]
        present.sort(key=lambda r: r[0], reverse=q.descending)
        rows = present + [r for r in rows if math.isnan(r[0])]
    else:
        rows.sort(key=lambda r: r[0], reverse=q.descending)
    return [n for _, n in rows][q.offset : q.offset + q.limit], len(rows)


def test_paging_equals_naive_reference(tmp_path, records):
    path = tmp_path / "big.jsonl"
    lines = big_file(path, records, 3000)
    f = TrajectoryFile(path)
    assert f.refresh() == sum(isinstance(r, dict) for r in lines)
    assert f.bad_count == sum(r is None for r in lines) > 0
    assert f.describe()["first_bad_lines"][0] == lines.index(None) + 1
    rng = random.Random(1)
    for _ in range(150):
        q = Query(
            sort=rng.choice(SORT_KEYS),
            descending=rng.random() < 0.5,
            failed_only=rng.random() < 0.4,
            dataset=rng.choice([None, None, "nq", "musique", "absent"]),
            text=rng.choice([None, None, "who", "WHAT 1", "zzz"]),
            offset=rng.choice([0, 0, 50, 1000]),
            limit=rng.choice([1, 50, 500]),
        )
        rows, total = f.select(q)
        got = [f.line_numbers[r] for r in rows.tolist()]
        assert (got, total) == naive(lines, q), q
    page = f.page(Query(sort="f1", descending=True, limit=5))
    for row in page["rows"]:  # each row is the record on that line
        assert row["question"] == lines[row["line"] - 1]["question"]
        assert row["f1"] == lines[row["line"] - 1]["rewards"]["f1"]


def test_index_follows_a_growing_and_a_rewritten_file(tmp_path, records):
    path = tmp_path / "t.jsonl"
    text = [json.dumps(r) for r in records]
    path.write_text("\n".join(text[:10]) + "\n" + text[10][:50], encoding="utf-8")
    f = TrajectoryFile(path)
    assert f.refresh() == 10  # the unfinished line waits
    assert len(f.select(Query(sort="f1"))[0]) == 10
    with open(path, "a", encoding="utf-8") as out:
        out.write(text[10][50:] + "\n" + "\n".join(text[11:20]) + "\n")
    assert f.refresh() == 20
    assert f.read(f.row_of_line(11))["question"] == records[10]["question"]
    tmp = tmp_path / "t.jsonl.tmp"
    tmp.write_text("\n".join(text[20:23]) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # rewritten (as env.evaluate does on a new run): indexed again
    assert f.refresh() == 3
    assert f.read(f.row_of_line(1))["question"] == records[20]["question"]
    with pytest.raises(BadRequestError, match="no episode on line 4"):
        f.row_of_line(4)


def test_query_is_checked():
    with pytest.raises(BadRequestError, match="sort must be one of"):
        Query(sort="reward")
    with pytest.raises(BadRequestError, match="limit"):
        Query(limit=0)
    with pytest.raises(BadRequestError, match="offset"):
        Query(offset=-1)
    with pytest.raises(BadRequestError, match="offset must be >= 0 and < 2\\*\\*53"):
        Query(offset=10**30)  # a page could not say it back (JSON, JavaScript)


# ---- the stats snapshot ---------------------------------------------------------------------
def test_snapshot_reads_a_prometheus_client_registry():
    import prometheus_client

    registry = prometheus_client.CollectorRegistry()
    requests = prometheus_client.Counter(
        "retriever_requests", "h", ["endpoint", "code"], registry=registry
    )
    seconds = prometheus_client.Histogram(
        "retriever_request_seconds", "h", ["endpoint"], buckets=(0.1, 1.0), registry=registry
    )
    depth = prometheus_client.Gauge("retriever_queue_depth", "h", ["retriever"], registry=registry)
    requests.labels(endpoint='/odd "name"\\x', code="200").inc(3)
    for value in (0.05, 0.05, 0.5):
        seconds.labels(endpoint="/retrieve").observe(value)
    depth.labels(retriever="bm25").set(4)
    snap = snapshot(registry)
    assert snap["counters"]["requests"] == [
        {"labels": {"endpoint": '/odd "name"\\x', "code": "200"}, "value": 3.0}
    ]
    (hist,) = snap["histograms"]["request_seconds"]
    assert hist["labels"] == {"endpoint": "/retrieve"}
    assert hist["buckets"] == [[0.1, 2.0], [1.0, 3.0], ["+Inf", 3.0]]
    assert (hist["count"], round(hist["sum"], 6)) == (3.0, 0.6)
    assert snap["gauges"]["queue_depth"] == [{"labels": {"retriever": "bm25"}, "value": 4.0}]
    assert not any("created" in name for group in snap.values() for name in group)


def test_stats_api_reads_the_registry_not_the_text(client, monkeypatch):
    """/ui/api/stats takes the registry's samples as they are: it renders no Prometheus text
    (and parses none back), and what it answers is what prometheus_client holds."""

    def no_text():
        raise AssertionError("/ui/api/stats rendered the Prometheus text")

    monkeypatch.setattr(client.service, "metrics_text", no_text)
    monkeypatch.setattr(client.service.metrics, "render", no_text)
    r = client.post("/retrieve", json={"queries": ["elko registry"]}, headers=AUTH)
    assert r.status_code == 200
    r = client.get("/ui/api/stats", headers=AUTH)
    assert r.status_code == 200, r.text
    snap = r.json()
    value = client.service.metrics.value
    retrieve = {"endpoint": "/retrieve", "code": "200"}
    (ok,) = [e for e in snap["counters"]["requests"] if e["labels"] == retrieve]
    assert ok["value"] == value("retriever_requests_total", endpoint="/retrieve", code="200") >= 1
    (hist,) = [e for e in snap["histograms"]["batch_size"] if e["labels"] == {"retriever": "bm25"}]
    assert hist["count"] == value("retriever_batch_size_count", retriever="bm25") >= 1
    assert hist["buckets"][-1] == ["+Inf", hist["count"]]
    assert snap["gauges"]["ready"] == [{"labels": {}, "value": 1.0}]


def test_stats_api_counts_what_the_server_served(client):
    before = client.get("/ui/api/stats", headers=AUTH).json()
    for q in ("kansas fight song", "apple remote", "elko airport"):
        r = client.post("/retrieve", json={"queries": [q], "topk": 2}, headers=AUTH)
        assert r.status_code == 200
    snap = client.get("/ui/api/stats", headers=AUTH).json()

    def count(s, group, name, **labels):
        return sum(
            e.get("value", e.get("count", 0))
            for e in s[group].get(name, [])
            if all(e["labels"].get(k) == v for k, v in labels.items())
        )

    def grew(group, name, **labels):
        return count(snap, group, name, **labels) - count(before, group, name, **labels)

    assert grew("counters", "requests", endpoint="/retrieve", code="200") == 3
    assert grew("histograms", "request_seconds", endpoint="/retrieve") == 3
    assert grew("counters", "queries", retriever="bm25") == 3
    assert snap["state"] == "ready"


# ---- HTTP: pages, token, errors, flags --------------------------------------------------------
def test_pages_are_served_without_token_with_a_strict_policy(client):
    for path in ("/ui", "/ui/", "/ui/trajectories", "/ui/stats"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
    r = client.get("/ui?page=search.js&name=x")  # the query string is the page's, not ours
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    r = client.get("/ui/static/search.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert client.get("/ui/static/nope.js").status_code == 404
    assert client.get("/ui/static/..%2Froutes.py").status_code == 404


def test_every_static_file_ships_in_the_package():
    """A wheel (not an editable install) holds only what package-data names: every file the
    routes serve must match a pattern given for the package that holds it."""
    import fnmatch
    import tomllib

    from retriever.server.ui import routes

    pyproject = REPO / "pyproject.toml"
    package_data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data.get(routes.__package__, [])
    served = sorted(routes._static_files())
    assert {"search.html", "stats.js", "style.css", "trajectories.js"} <= set(served)
    unshipped = [n for n in served if not any(fnmatch.fnmatch(f"static/{n}", p) for p in patterns)]
    assert unshipped == [], f"add them to package-data[{routes.__package__!r}] in pyproject.toml"


def test_api_needs_the_token(client):
    for path in ("/ui/api/stats", "/ui/api/trajectories", "/ui/api/trajectories/0"):
        r = client.get(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
        r = client.get(path, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200


def test_trajectory_api_pages_and_episodes(client, records):
    files = client.get("/ui/api/trajectories", headers=AUTH).json()["files"]
    assert [f["episodes"] for f in files] == [len(records)]
    assert files[0]["datasets"] == sorted({r["dataset"] for r in records})
    page = client.get("/ui/api/trajectories/0?failed=1&sort=f1&desc=1&limit=5", headers=AUTH).json()
    failed = [r for r in records if r["rewards"]["em"] < 1]
    assert page["total"] == len(failed) > 0
    assert [r["f1"] for r in page["rows"]] == sorted(
        (r["rewards"]["f1"] for r in failed), reverse=True
    )[:5]
    line = page["rows"][0]["line"]
    episode = client.get(f"/ui/api/trajectories/0/{line}", headers=AUTH).json()
    assert episode["record"] == json.loads(json.dumps(records[line - 1], default=str))


@pytest.mark.parametrize(
    "path, message",
    [
        ("/ui/api/trajectories/0?sort=reward", "sort must be one of"),
        ("/ui/api/trajectories/0?limit=100000", "limit must be"),
        ("/ui/api/trajectories/0?offset=x", "offset must be an integer"),
        ("/ui/api/trajectories/0?failed=maybe", "failed must be 1 or 0"),
        ("/ui/api/trajectories/7", "no trajectory file '7'"),
        ("/ui/api/trajectories/0/99999", "no episode on line 99999"),
        ("/ui/api/trajectories/0/x", "line must be a positive integer"),
        ("/ui/api/trajectories/0/0", "line must be a positive integer"),
        ("/ui/api/trajectories/0/-3", "line must be a positive integer"),
        (f"/ui/api/trajectories/0/{10**30}", "line must be a positive integer"),
        (f"/ui/api/trajectories/0/{2**63}", "line must be a positive integer"),
        (f"/ui/api/trajectories/0/{'9' * 5000}", "line must be a positive integer"),
        (f"/ui/api/trajectories/{10**30}", "no trajectory file '1000000000000000000000000000000'"),
        (f"/ui/api/trajectories/{'9' * 5000}", "no trajectory file '99999"),
        (f"/ui/api/trajectories/{10**30}/1", "no trajectory file"),
        ("/ui/api/trajectories/-1", "no trajectory file '-1'"),
        (f"/ui/api/trajectories/0?offset={10**30}", "offset must be an integer from 0 to"),
        (f"/ui/api/trajectories/0?offset={'9' * 5000}", "offset must be an integer from 0 to"),
        ("/ui/api/trajectories/0?offset=-1", "offset must be an integer from 0 to"),
        ("/ui/api/trajectories/0?offset=1_000", "offset must be an integer from 0 to"),
        (f"/ui/api/trajectories/0?limit={10**30}", "limit must be"),
        ("/ui/api/trajectories/0?limit=-5", "limit must be"),
    ],
)
def test_bad_requests_say_what_was_wrong(client, path, message):
    r = client.get(path, headers=AUTH)
    assert r.status_code == 422 and message in r.json()["detail"], r.text


def test_flags(ui_root, traj_path):
    args = build_parser().parse_args(
        ["--index", str(ui_root), "--trajectories", "a.jsonl", "--trajectories", "b,c.jsonl"]
    )
    config = config_from_args(args)
    assert config.trajectories == ("a.jsonl", "b,c.jsonl") and config.ui
    config = config_from_args(build_parser().parse_args(["--index", str(ui_root), "--no-ui"]))
    assert not config.ui and config.trajectories == ()
    service = RetrievalService(config).start()
    try:
        with TestClient(create_app(service)) as c:
            assert c.get("/ui").status_code == 404
            assert c.post("/retrieve", json={"queries": ["kansas"]}).status_code == 200
    finally:
        service.stop()


def test_missing_trajectory_file_is_refused_up_front(ui_root, tmp_path):
    config = ServiceConfig(index=str(ui_root), trajectories=(str(tmp_path / "nope.jsonl"),))
    with pytest.raises(BadRequestError, match="nope.jsonl: no such file"):
        create_app(RetrievalService(config))


def test_env_record_path_files_are_browsable_too(ui_root, tmp_path):
    """The env's own recorder (``record_path``) writes episodes without ``dataset``/``task_id``:
    they list under an empty dataset, and each row is its episode."""
    from env_support import Oracle

    from env.search_env import SearchEnv
    from env.tasks import load_tasks
    from retriever.client import InProcessClient

    path = tmp_path / "recorded.jsonl"
    questions = []
    with InProcessClient(ui_root, warmup=False) as client:
        env = SearchEnv(client, style="search-r1", topk=3, record_path=str(path))
        for task in load_tasks(HOTPOT, limit=4):
            oracle = Oracle(task, "search-r1")
            obs, _ = env.reset(options=task.options())
            for _ in range(6):
                obs, _, terminated, truncated, _ = env.step(oracle.act(obs))
                if terminated or truncated:
                    break
            questions.append(task.question)
    f = TrajectoryFile(path)
    assert f.refresh() == 4 and f.bad_count == 0
    page = f.page(Query(sort="question"))
    assert [r["question"] for r in page["rows"]] == sorted(questions, key=str.casefold)
    assert {r["dataset"] for r in page["rows"]} == {""} and page["datasets"] == [""]
    assert all(r["em"] == 1.0 and not r["failed"] for r in page["rows"])


def test_a_large_file_is_indexed_in_the_background(ui_root, records, tmp_path, monkeypatch):
    """The first request for a file that takes long to index answers 503 "indexing N%" with
    Retry-After instead of hanging; once indexed, pages come back."""
    import time

    from retriever.server.ui import routes

    monkeypatch.setattr(routes, "INDEX_WAIT", 0.0)
    hold = threading.Event()  # the scan waits for it, so the first answer is surely a 503
    scan = TrajectoryFile._scan
    monkeypatch.setattr(
        TrajectoryFile, "_scan", lambda self, size: (hold.wait(30), scan(self, size))
    )
    path = tmp_path / "large.jsonl"
    lines = big_file(path, records, 3000)
    config = ServiceConfig(index=str(ui_root), warmup=False, trajectories=(str(path),))
    service = RetrievalService(config).start()
    try:
        with TestClient(create_app(service)) as c:
            r = c.get("/ui/api/trajectories/0?limit=3")
            assert r.status_code == 503, r.text
            assert "indexing large.jsonl" in r.json()["detail"] and r.headers["retry-after"] == "1"
            assert c.get("/ui/api/trajectories").json()["files"][0]["indexing"] is True
            hold.set()
            deadline = time.monotonic() + 60
            while r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
                r = c.get("/ui/api/trajectories/0?limit=3")
            assert r.status_code == 200
            assert r.json()["total"] == sum(isinstance(x, dict) for x in lines)
            assert c.get("/ui/api/trajectories").json()["files"][0]["indexing"] is False
    finally:
        hold.set()
        service.stop()


def test_a_vanished_file_is_reported(ui_root, records, tmp_path):
    path = tmp_path / "gone.jsonl"
    path.write_text(json.dumps(records[0]) + "\n", encoding="utf-8")
    config = ServiceConfig(index=str(ui_root), warmup=False, trajectories=(str(path),))
    service = RetrievalService(config).start()
    try:
        with TestClient(create_app(service)) as c:
            assert c.get("/ui/api/trajectories/0").json()["total"] == 1
            path.unlink()
            r = c.get("/ui/api/trajectories/0")
            assert r.status_code == 422 and "cannot be read" in r.json()["detail"]
    finally:
        service.stop()


def test_what_env_evaluate_writes_is_browsable(ui_root, tmp_path, monkeypatch):
    """``python -m env.evaluate``'s own trajectories.jsonl (here with the policy server down,
    so every episode ends in a policy error) through the viewer's API."""
    import socket

    import env.policy as policy
    from env.evaluate import main as evaluate

    real = policy.OpenAIClient.__init__
    monkeypatch.setattr(
        policy.OpenAIClient, "__init__", lambda self, *a, **k: real(self, *a, **{**k, "retries": 0})
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "eval"
    argv = ["--index", str(ui_root), "--policy-url", f"http://127.0.0.1:{port}", "--model", "m"]
    argv += ["--data", str(HOTPOT), "--limit", "3", "--out", str(out), "--concurrency", "1"]
    assert evaluate(argv) == 0
    config = ServiceConfig(
        index=str(ui_root), warmup=False, trajectories=(str(out / "trajectories.jsonl"),)
    )
    service = RetrievalService(config).start()
    try:
        with TestClient(create_app(service)) as c:
            page = c.get("/ui/api/trajectories/0?failed=1").json()
            assert page["total"] == 3 and page["datasets"] == ["hotpotqa-distractor-500"]
            assert all(r["policy_error"] and r["prediction"] is None for r in page["rows"])
            lines = (out / "trajectories.jsonl").read_text(encoding="utf-8").splitlines()
            assert {r["question"] for r in page["rows"]} == {
                json.loads(line)["question"] for line in lines
            }
            one = c.get("/ui/api/trajectories/0/2").json()["record"]
            assert one == json.loads(lines[1]) and "messages" in one and "task_id" in one
    finally:
        service.stop()


# ---- bad and changing files -------------------------------------------------------------------
@contextlib.contextmanager
def viewer(*paths):
    """The /ui router alone over ``paths`` (no index to load: these tests are about the files)."""
    from fastapi import FastAPI

    from retriever.server.ui import build_router
    from retriever.server.ui.trajectories import open_files

    app = FastAPI()
    app.include_router(build_router(None, open_files(paths)))
    with TestClient(app) as c:
        yield c


def write_lines(path, recs, mode="w") -> list[str]:
    lines = [json.dumps(r, ensure_ascii=False) for r in recs]
    with open(path, mode, encoding="utf-8") as f:  # "w" keeps the inode: rewritten in place
        f.write("".join(line + "\n" for line in lines))
    return lines


def test_a_record_with_a_null_count_is_shown_and_counted_once(tmp_path, records):
    path = tmp_path / "odd.jsonl"
    odd = json.loads(json.dumps(records[1]))
    odd["counts"] = {"search": None, "access": "two", "invalid": 1e300}
    write_lines(path, [records[0], odd, records[2]])
    with viewer(path) as c:
        for _ in range(4):
            r = c.get("/ui/api/trajectories/0")
            assert r.status_code == 200, r.text
            assert r.json()["total"] == r.json()["episodes"] == 3
            assert c.get("/ui/api/trajectories").json()["files"][0]["episodes"] == 3
        row = r.json()["rows"][1]
        assert row["question"] == odd["question"] and row["line"] == 2
        assert (row["searches"], row["accesses"]) == (0, 0)
        assert c.get("/ui/api/trajectories/0/2").json()["record"] == odd


def test_a_failed_scan_leaves_the_index_as_it_was(tmp_path, records, monkeypatch):
    """Whatever raises during a scan, the index is what it was before it (not half of a scan
    that the next refresh appends again)."""
    path = tmp_path / "t.jsonl"
    write_lines(path, records[:3])
    f = TrajectoryFile(path)
    assert f.refresh() == 3
    write_lines(path, records[3:8], mode="a")
    add, calls = TrajectoryFile._add, []

    def flaky(self, line, offset):
        calls.append(offset)
        if len(calls) == 3:
            raise MemoryError("simulated")
        add(self, line, offset)

    monkeypatch.setattr(TrajectoryFile, "_add", flaky)
    with pytest.raises(MemoryError):
        f.refresh()
    assert len(f.offsets) == len(f.questions) == 3 and f.describe()["episodes"] == 3
    assert f.refresh() == 8 == len(f.questions) == len(f.line_numbers)
    assert list(f.line_numbers) == list(range(1, 9))
    assert [f.read(i)["question"] for i in range(8)] == [r["question"] for r in records[:8]]


def junk_values():
    deep: list = []
    for _ in range(300):  # deeper than orjson writes (254 levels)
        deep = [deep]
    texts = ["x" * 200_000, "<b>é\u0000</b>"]
    return [None, True, -7, 1e308, 2**64 - 1, *texts, [1, {"a": None}], {"k": [{"z": []}]}, deep]


VIEWED = (  # what the table and the episode view read of a record
    "dataset question answers prediction rewards counts num_turns turns truncated "
    "truncated_reason terminated policy_error task_id sample style judge prompt messages"
).split()


def test_fuzzed_records_never_answer_5xx(tmp_path, records):
    """Every field the viewer reads (and the fields inside rewards, counts and turns) set to
    null, wrong types, huge strings and nested junk: every page and episode answers, each
    record counted once and given back as written."""
    recs = []
    for value in junk_values():
        for field in VIEWED:
            recs.append({**records[0], field: value})
        for inner in ("rewards", "counts"):
            for key in ("em", "f1", "format", "cover_em", "search", "access", "invalid"):
                recs.append({**records[0], inner: {**records[0][inner], key: value}})
        turn = dict(records[0]["turns"][0])
        for key in ("kind", "arg", "reward", "error", "action", "observation", "turn"):
            recs.append({**records[0], "turns": [{**turn, key: value}]})
        recs.append({**records[0], "turns": [value]})
    path = tmp_path / "fuzz.jsonl"
    lines = write_lines(path, recs)
    with viewer(path) as c:
        for sort in SORT_KEYS:
            for extra in ("", "&desc=1", "&failed=1&q=x", "&dataset=hotpotqa"):
                r = c.get(f"/ui/api/trajectories/0?sort={sort}&limit=500{extra}")
                assert r.status_code == 200, (sort, extra, r.text[:300])
        assert r.json()["episodes"] == len(recs) and r.json()["bad_lines"] == 0
        total = 0
        for offset in range(0, len(recs), 500):
            page = c.get(f"/ui/api/trajectories/0?limit=500&offset={offset}").json()
            total += len(page["rows"])
            for row in page["rows"]:
                assert len(row["question"]) <= 1001 and all(
                    isinstance(a, str) for a in row["answers"]
                )
        assert total == len(recs)
        for number in range(1, len(recs) + 1, 7):
            r = c.get(f"/ui/api/trajectories/0/{number}")
            assert r.status_code == 200, (number, r.text[:300])
            assert r.json()["record"] == json.loads(lines[number - 1])


def test_a_file_rewritten_in_place_is_indexed_again(tmp_path, records):
    """``env.evaluate`` rerun into the same --out truncates and rewrites the file (same inode):
    grown, same size with the same mtime, or the same size with new bytes in the middle."""
    path = tmp_path / "t.jsonl"
    write_lines(path, records[:5])
    with viewer(path) as c:
        assert c.get("/ui/api/trajectories/0").json()["total"] == 5
        assert c.get("/ui/api/trajectories/0/3").status_code == 200
        # grown: a longer first record shifts every offset
        first = {**records[7], "question": records[7]["question"] + " (rerun)"}
        new = [first, *records[8:20]]
        write_lines(path, new)
        for _ in range(2):
            page = c.get("/ui/api/trajectories/0?limit=500")
            assert page.status_code == 200, page.text
            assert [r["question"] for r in page.json()["rows"]] == [r["question"] for r in new]
            for line in (1, 3, 13):
                r = c.get(f"/ui/api/trajectories/0/{line}")
                assert r.status_code == 200 and r.json()["record"] == new[line - 1], r.text[:300]

        # same size, same mtime, other bytes at the end (a clock that did not move)
        st = os.stat(path)
        text = path.read_bytes()
        last = json.loads(text.splitlines()[-1])
        swapped = {**last, "question": last["question"][::-1]}
        assert len(json.dumps(swapped)) == len(json.dumps(last))
        write_lines(path, [*new[:-1], swapped])
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.stat(path).st_size == st.st_size
        r = c.get("/ui/api/trajectories/0/13")
        assert r.status_code == 200 and r.json()["record"]["question"] == swapped["question"]

        # same size, other bytes only in the middle: the mtime moved
        a, b = new[5], new[6]
        write_lines(path, [*new[:5], b, a, *new[7:-1], swapped])
        assert os.stat(path).st_size == st.st_size
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert c.get("/ui/api/trajectories/0/6").json()["record"] == b


def test_a_page_read_while_the_file_changes_asks_to_retry(tmp_path, records):
    path = tmp_path / "t.jsonl"
    write_lines(path, records[:5])
    f = TrajectoryFile(path)
    assert f.refresh() == 5
    write_lines(
        path, [{**records[0], "question": "moved " + records[0]["question"]}, *records[1:5]]
    )
    with pytest.raises(ServiceUnavailableError, match="changed while it was read"):
        f.page(Query())
    assert f.refresh() == 5
    assert f.page(Query())["rows"][0]["question"].startswith("moved ")


def test_a_deep_link_knows_when_its_line_holds_another_episode(tmp_path, records):
    path = tmp_path / "t.jsonl"
    write_lines(path, records[:5])
    with viewer(path) as c:
        row = c.get("/ui/api/trajectories/0").json()["rows"][2]
        link = f"/ui/api/trajectories/0/{row['line']}?v={row['v']}"
        r = c.get(link)
        assert r.status_code == 200 and r.json()["record"] == records[2]
        assert r.json()["v"] == row["v"]
        write_lines(path, records[10:15])  # rerun into the same --out
        r = c.get(link)
        assert r.status_code == 422 and "now holds another episode" in r.json()["detail"], r.text
        r = c.get(f"/ui/api/trajectories/0/{row['line']}")  # without v: what is there now
        assert r.status_code == 200 and r.json()["record"] == records[12]
        r = c.get(f"/ui/api/trajectories/0/3?v=zz{'9' * 40}")
        assert r.status_code == 422 and "v must be" in r.json()["detail"]
