"""``POST /retrieve``'s fast path (``retriever/server/fastpath.py``) and ``POST /search``'s
(``webapi.SearchFastPath``) answer byte for byte what the FastAPI routes answer: the same
service behind two apps, one with the fast paths, one without, over a corpus of valid, invalid
and fuzzed bodies (JSON and msgpack), on the real BM25 part of the HotpotQA index."""

from __future__ import annotations

import random

import msgpack
import orjson
import pytest
from fastapi.testclient import TestClient
from retriever_fakes import build_root, hotpot_questions

from retriever.server.app import create_app
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("fast"), bm25=True)


class Counting:
    """Wraps an ASGI app and counts the requests it answered."""

    def __init__(self, app):
        self.app, self.calls = app, 0

    async def __call__(self, scope, receive, send):
        self.calls += 1
        await self.app(scope, receive, send)


def both_apps(service, **options):
    fast, slow = create_app(service, **options), create_app(service, fast_path=False, **options)
    assert slow.fast is None and fast.fast is not None
    fast.fast = Counting(fast.fast)
    url = "http://localhost"  # a Host the check of a server bound to 127.0.0.1 allows
    return fast, TestClient(fast, base_url=url), TestClient(slow, base_url=url)


@pytest.fixture(scope="module")
def service(root):
    config = ServiceConfig(
        index=root, max_wait_ms=1, cache_size=0, max_body_bytes=4096, max_queries_per_request=8
    )
    service = RetrievalService(config)
    service.start()
    yield service
    service.stop()


def same_answer(fast_client, slow_client, content: bytes, headers: dict, path="/retrieve") -> tuple:
    a = fast_client.post(path, content=content, headers=headers)
    b = slow_client.post(path, content=content, headers=headers)
    assert (a.status_code, dict(a.headers), a.content) == (
        b.status_code,
        dict(b.headers),
        b.content,
    ), content
    return a.status_code, a.content


def valid_bodies() -> list[dict]:
    q = hotpot_questions(6)
    return [
        {"queries": q[:3], "topk": 3},
        {"queries": q[:2], "topk": 5, "return_scores": True},
        {"queries": q[:1], "topk": 3, "retriever": "bm25"},
        {"query": q[0], "top_k": 2},
        {"query": q[1], "k": 4, "return_scores": "true", "retriever_type": "bm25"},
        {"queries": [q[2]], "topk": 0},
        {"queries": [q[3]], "topk": None},
        {"queries": []},
        {"queries": [], "topk": 3, "return_scores": True},
        {"queries": [q[4], q[4]], "topk": 1},
        {"queries": [""], "topk": 2},
        {"queries": ["Kansas \u00e9t\u00e9 \u6771\u4eac"], "topk": 2},
        {"query": q[5], "top_k": 2, "description": "", "args": [], "kwargs": {}},
        {"queries": q[:2], "topk": 3, "return_scores": False, "single": True},
        {"queries": q[:1], "topk_rerank": 2},
    ]


BAD_BODIES = [
    {},
    {"queries": "abc"},
    {"queries": [None]},
    {"queries": ["a"], "topk": -1},
    {"queries": ["a"], "topk": 10**6},
    {"queries": ["a"], "topk": 2.5},
    {"queries": ["a"], "topk": True},
    {"queries": ["a"], "topk": 2, "k": 3},
    {"queries": ["a"], "query": "b"},
    {"queries": ["a"], "retriever": "dense-x"},
    {"queries": ["a"], "retriever": 5},
    {"queries": ["a"], "return_scores": "maybe"},
    {"queries": ["a"], "rerank_depth": "x"},
    {"queries": ["a"], "retriever": "bm25+rerank"},
    {"queries": ["q"] * 9},
    {"queries": ["x" * 5000]},
    [1, 2],
    "just a string",
    None,
]


def fuzzed_bodies(n: int, seed: int = 26) -> list:
    """Random values under the request's own keys and aliases (and a stranger), as a schema
    fuzzer sends them."""
    rng = random.Random(seed)
    keys = ["queries", "query", "topk", "top_k", "k", "return_scores", "retriever",
            "retriever_type", "rerank_depth", "topk_retrieval", "single", "other"]  # fmt: skip
    scalars = [None, True, False, 0, 1, 3, -1, 2**70, 1.5, float("1e308"), "", "bm25", "a",
               "\u00b9", "\ud7ff", "dense-e5"]  # fmt: skip

    def value(depth: int = 0):
        pick = rng.random()
        if pick < 0.6 or depth > 1:
            return rng.choice(scalars)
        if pick < 0.85:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randint(0, 2))}

    out = []
    for _ in range(n):
        body = {rng.choice(keys): value() for _ in range(rng.randint(0, 4))}
        if rng.random() < 0.5:
            body["queries" if rng.random() < 0.7 else "query"] = (
                [rng.choice(["who", "Kansas", "a river"]) for _ in range(rng.randint(0, 3))]
                if rng.random() < 0.8
                else value()
            )
        out.append(body)
    return out


def test_fast_path_answers_exactly_as_the_framework(service):
    app, fast, slow = both_apps(service)
    json_headers = {"content-type": "application/json"}
    statuses = set()
    for body in valid_bodies():
        status, content = same_answer(fast, slow, orjson.dumps(body), json_headers)
        assert status == 200, content
        # msgpack with and without a declared type (GEM), JSON asking for msgpack back
        packed = msgpack.packb(body)
        assert same_answer(fast, slow, packed, {})[0] == 200
        assert same_answer(fast, slow, packed, {"content-type": "application/msgpack"})[0] == 200
        accept = {**json_headers, "accept": "application/msgpack"}
        assert same_answer(fast, slow, orjson.dumps(body), accept)[0] == 200
    for body in BAD_BODIES + fuzzed_bodies(300):
        packed = msgpack.packb(body) if _packable(body) else b"\x81\xc1"
        for content, headers in ((_json(body), json_headers), (packed, {})):
            statuses.add(same_answer(fast, slow, content, headers)[0])
    for content in (b"", b"{not json", b"\x81\xc1", b"[1", b"\xff\xfe", b"null", b"{}" * 3000):
        for headers in (json_headers, {}, {"content-type": "application/msgpack"}):
            statuses.add(same_answer(fast, slow, content, headers)[0])
    assert statuses == {200, 422}
    assert app.fast.calls > 700  # every request above took the fast path


def _json(body) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # an int past 64 bits: send it as JSON text all the same
        return str(body).replace("'", '"').replace("None", "null").encode()


def _packable(body) -> bool:
    try:
        msgpack.packb(body)
    except (OverflowError, TypeError):
        return False
    return True


def test_chunked_body_is_read_whole(service):
    app, fast, slow = both_apps(service)
    body = orjson.dumps({"queries": hotpot_questions(3), "topk": 2})

    def chunks():
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    a = fast.post("/retrieve", content=chunks())
    b = slow.post("/retrieve", content=chunks())
    assert a.status_code == 200 and a.content == b.content and app.fast.calls == 1


def test_token_and_host_refusals_come_from_the_framework(root):
    """The fast path takes only what the framework would let through; every refusal is the
    framework's own answer (same status, headers, body)."""
    config = ServiceConfig(index=root, max_wait_ms=1, cache_size=0, token="s3cret")
    service = RetrievalService(config)
    service.start()
    try:
        app, fast, slow = both_apps(service, bind_host="127.0.0.1")
        body = orjson.dumps({"queries": ["Kansas"], "topk": 2})
        cases = [
            ({"authorization": "Bearer s3cret"}, 200, True),
            ({"authorization": "bearer s3cret"}, 200, False),  # the framework's leniency
            ({"authorization": "Bearer  s3cret "}, 200, False),
            ({"authorization": "Bearer wrong"}, 401, False),
            ({"authorization": "Basic s3cret"}, 401, False),
            ({}, 401, False),
            ({"authorization": "Bearer s3cret", "host": "evil.example"}, 421, False),
            ({"authorization": "Bearer s3cret", "host": "localhost:8000"}, 200, True),
        ]
        for headers, status, took_fast in cases:
            before = app.fast.calls
            got, _ = same_answer(fast, slow, body, {"content-type": "application/json", **headers})
            assert got == status, headers
            assert (app.fast.calls > before) == took_fast, headers
    finally:
        service.stop()


def test_metrics_count_fast_requests(service):
    app, fast, _ = both_apps(service)
    before = service.metrics.value("retriever_requests_total", endpoint="/retrieve", code="200")
    assert fast.post("/retrieve", json={"queries": ["Kansas"]}).status_code == 200
    assert fast.post("/retrieve", json={"queries": [1]}).status_code == 422
    after = service.metrics.value("retriever_requests_total", endpoint="/retrieve", code="200")
    bad = service.metrics.value("retriever_requests_total", endpoint="/retrieve", code="422")
    assert (after - (before or 0), bad >= 1, app.fast.calls) == (1, True, 2)


def search_bodies() -> list:
    """Serper and OpenResearcher bodies, valid and not, for ``POST /search``."""
    q = hotpot_questions(12)
    return [
        {"q": q[0]},
        {"q": q[1], "num": 3, "page": 2, "gl": "us", "hl": "en", "ignored": 1},
        {"q": q[2] + " -site:github.com site:x.org", "num": 1},
        [{"q": q[3], "num": 2}, {"q": q[4]}],
        [{"q": x, "num": 1} for x in q[:9]],  # past --max-queries-per-request 8
        {"query": q[5], "topn": 4},
        {"query": q[6]},
        {"q": ""},
        {"q": q[7], "num": 0},
        {"q": q[7], "num": "3"},
        {"q": q[7], "num": 5, "page": 40},
        {"query": "", "topn": 3},
        {"query": q[8], "topn": -1},
        {"num": 3},
        [],
        [{"q": "x"}] * 101,
        [{"q": "x"}, 3],
        {"q": ["a list"]},
        None,
        7,
        "a string",
        {"q": "Kansas \u00e9t\u00e9 \u6771\u4eac", "num": 2},
    ]


def test_search_fast_path_answers_as_the_route(service):
    """Serper's and OpenResearcher's ``POST /search`` take the fast path too: every answer,
    error or not, is the route's to the byte."""
    app, fast, slow = both_apps(service)
    app.fast_search = Counting(app.fast_search)
    statuses = set()
    json_headers = {"content-type": "application/json"}
    for content in [orjson.dumps(body) for body in search_bodies()] + [
        b"", b"{not json", b"[1", b"\xff\xfe", b"{}" * 3000
    ]:  # fmt: skip
        statuses.add(same_answer(fast, slow, content, json_headers, path="/search")[0])
    body = orjson.dumps({"q": hotpot_questions(1)[0], "num": 2})
    chunks = [body[i : i + 5] for i in range(0, len(body), 5)]
    a, b = fast.post("/search", content=iter(chunks)), slow.post("/search", content=iter(chunks))
    assert a.status_code == 200 and a.content == b.content
    assert statuses == {200, 422}
    assert app.fast_search.calls == len(search_bodies()) + 6 and app.fast.calls == 0
    organic = orjson.loads(fast.post("/search", json={"q": "Kansas", "num": 2}).content)["organic"]
    assert len(organic) == 2 and organic[0]["position"] == 1 and organic[0]["snippet"]


def test_search_fast_path_takes_only_what_the_route_lets_through(root):
    config = ServiceConfig(index=root, max_wait_ms=1, cache_size=0, token="s3cret")
    service = RetrievalService(config)
    service.start()
    try:
        app, fast, slow = both_apps(service, bind_host="127.0.0.1")
        app.fast_search = Counting(app.fast_search)
        body = orjson.dumps({"q": "Kansas", "num": 2})
        cases = [
            ({"authorization": "Bearer s3cret"}, 200, True),
            ({"x-api-key": "s3cret"}, 200, False),  # Serper's header: the route's key check
            ({"authorization": "bearer s3cret"}, 200, False),
            ({"x-api-key": "wrong"}, 401, False),
            ({}, 401, False),
            ({"authorization": "Bearer s3cret", "host": "evil.example"}, 421, False),
        ]
        for headers, status, took_fast in cases:
            before = app.fast_search.calls
            a = fast.post("/search", content=body, headers=headers)
            b = slow.post("/search", content=body, headers=headers)
            assert (a.status_code, a.content) == (b.status_code, b.content), headers
            assert a.status_code == status, headers
            assert (app.fast_search.calls > before) == took_fast, headers
        before = service.metrics.value("retriever_requests_total", endpoint="/search", code="200")
        fast.post("/search", content=body, headers={"authorization": "Bearer s3cret"})
        after = service.metrics.value("retriever_requests_total", endpoint="/search", code="200")
        assert after - (before or 0) == 1  # a fast answer is counted as the route's is
    finally:
        service.stop()
