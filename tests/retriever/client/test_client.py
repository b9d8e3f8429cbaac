"""Clients: HTTP (sync and async) and in-process give the library's results; retries are bounded."""

from __future__ import annotations

import time

import httpx
import pytest
from retriever_fakes import LiveServer, build_root, free_port, hotpot_questions

from retriever.client import HTTPClient, InProcessClient, connect
from retriever.errors import (
    AuthError,
    BadRequestError,
    QueueFullError,
    RetrieverError,
    ServiceUnavailableError,
)
from retriever.index import Index
from retriever.protocol import SearchClient
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("cli-bm25"), bm25=True)


@pytest.fixture(scope="module")
def live(bm25_root):
    service = RetrievalService(ServiceConfig(index=bm25_root, max_wait_ms=2))
    with LiveServer(service) as server:
        yield server


def library_docs(root, queries, k):
    index = Index.open(root)
    return [
        [{**p.to_dict(), "score": s} for p, s in hits]
        for hits in index.search(queries, k=k, retriever="bm25")
    ]


def approx(results):
    return [[{**d, "score": pytest.approx(d["score"])} for d in r] for r in results]


def test_http_and_in_process_clients_equal_the_library(live, bm25_root):
    queries = hotpot_questions(40)
    want = library_docs(bm25_root, queries, 5)
    with HTTPClient(live.url) as http, InProcessClient(bm25_root) as local:
        assert isinstance(http, SearchClient) and isinstance(local, SearchClient)
        assert http.retrieve(queries, topk=5) == approx(want)
        assert local.retrieve(queries, topk=5) == approx(want)
        page_names = [want[0][0]["url"], "No such page qq"]
        assert http.access(urls=page_names, max_chars=50) == local.access(
            urls=page_names, max_chars=50
        )
        assert http.health()["ready"] and http.info()["retrievers"]["bm25"]["kind"] == "bm25"


async def test_async_clients_equal_sync(live, bm25_root):
    import asyncio

    queries = hotpot_questions(30)
    want = library_docs(bm25_root, queries, 3)
    client = HTTPClient(live.url)
    local = InProcessClient.from_index(bm25_root)
    try:
        got = await asyncio.gather(*[client.aretrieve([q], topk=3) for q in queries])
        assert [g[0] for g in got] == approx(want)
        got = await asyncio.gather(*[local.aretrieve([q], topk=3) for q in queries])
        assert [g[0] for g in got] == approx(want)
        name = want[0][0]["title"]
        assert await client.aaccess(titles=[name]) == await local.aaccess(titles=[name])
    finally:
        await client.aclose()
        local.close()


async def test_async_with_closes_what_the_client_owns(live, bm25_root):
    async with InProcessClient.from_index(bm25_root) as owned:
        assert (await owned.aretrieve(["paris"], topk=1))[0][0]["score"] > 0
    assert owned.service.state in ("stopping", "stopped")
    service = RetrievalService(ServiceConfig(index=bm25_root)).start()
    async with InProcessClient(service) as borrowed:
        assert borrowed.retrieve(["paris"], topk=1)[0][0]["score"] > 0
    assert service.state == "ready"  # borrowed, not stopped
    service.stop()
    async with HTTPClient(live.url) as http:
        assert (await http.aretrieve(["paris"], topk=1))[0][0]["score"] > 0
        assert http._async  # a pooled async connection per URL, closed on the way out
    assert not http._async and not http._sync


def test_in_process_client_borrows_a_service(bm25_root):
    service = RetrievalService(ServiceConfig(index=bm25_root)).start()
    with connect(service) as client:
        assert client.retrieve(["paris"], topk=1)[0][0]["score"] > 0
    assert service.state == "ready"  # borrowed, not stopped
    service.stop()
    assert isinstance(connect("http://127.0.0.1:1"), HTTPClient)


def test_errors_map_to_exceptions(live):
    with HTTPClient(live.url) as client:
        assert client.retrieve([]) == []  # as Search-R1's server: no queries, no results
        with pytest.raises(BadRequestError, match="unknown retriever"):
            client.retrieve(["a"], retriever="dense-none")
        with pytest.raises(BadRequestError, match="not one string"):
            client.retrieve("a")


def test_connection_refused_retries_are_bounded():
    client = HTTPClient(f"http://127.0.0.1:{free_port()}", retries=3, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="after 4 attempts"):
        client.retrieve(["a"])
    assert time.monotonic() - t0 < 5


def scripted(*responses):
    """A mock transport answering the given (status, headers, body) in turn; counts calls."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        status, headers, body = responses[min(len(calls), len(responses) - 1)]
        calls.append(request)
        return httpx.Response(status, headers=headers, json=body)

    return httpx.MockTransport(handler), calls


OK = (200, {}, {"result": [[{"document": {"id": "1", "contents": "c"}, "score": 1.0}]]})


def test_429_honours_retry_after():
    transport, calls = scripted((429, {"Retry-After": "1"}, {"detail": "full"}), OK)
    client = HTTPClient("http://x", transport=transport, backoff=0.001)
    t0 = time.monotonic()
    assert client.retrieve(["a"]) == [[{"id": "1", "contents": "c", "score": 1.0}]]
    assert len(calls) == 2 and time.monotonic() - t0 >= 0.9


def test_503_retried_then_given_up():
    transport, calls = scripted((503, {}, {"detail": "loading"}))
    client = HTTPClient("http://x", transport=transport, retries=2, backoff=0.001)
    with pytest.raises(ServiceUnavailableError, match="loading"):
        client.retrieve(["a"])
    assert len(calls) == 3


def test_429_given_up_after_retries():
    transport, calls = scripted((429, {"Retry-After": "0"}, {"detail": "full"}))
    client = HTTPClient("http://x", transport=transport, retries=1)
    with pytest.raises(QueueFullError):
        client.retrieve(["a"])
    assert len(calls) == 2


def test_422_and_500_are_not_retried():
    transport, calls = scripted((422, {}, {"detail": "bad topk"}))
    with pytest.raises(BadRequestError, match="bad topk"):
        HTTPClient("http://x", transport=transport).retrieve(["a"])
    assert len(calls) == 1
    transport, calls = scripted((500, {}, {"detail": "search failed"}))
    with pytest.raises(RetrieverError, match="500"):
        HTTPClient("http://x", transport=transport).retrieve(["a"])
    assert len(calls) == 1


def test_401_is_an_auth_error_at_once():
    transport, calls = scripted((401, {"WWW-Authenticate": "Bearer"}, {"detail": "no token"}))
    with pytest.raises(AuthError, match="no token"):
        HTTPClient("http://x", transport=transport, backoff=0.001).retrieve(["a"])
    assert len(calls) == 1


def test_client_bodies_are_what_the_server_models_accept():
    """The client stays light (no pydantic); its bodies are checked against the wire models."""
    from retriever.wire import AccessRequest, RetrieveRequest

    transport, calls = scripted(OK)
    client = HTTPClient("http://x", transport=transport)
    client.retrieve(["a", "b"], topk=4, retriever="bm25")
    body = RetrieveRequest.model_validate_json(calls[0].content)
    assert (body.queries, body.topk, body.return_scores, body.retriever) == (
        ["a", "b"], 4, True, "bm25"
    )  # fmt: skip
    transport, calls = scripted((200, {}, {"result": [None]}))
    HTTPClient("http://x", transport=transport).access(
        urls=["u"], titles=["t"], ids=["7"], offset=3, max_chars=9
    )
    page = AccessRequest.model_validate_json(calls[0].content)
    assert (page.urls, page.titles, page.ids, page.offset, page.max_chars) == (
        ["u"], ["t"], ["7"], 3, 9
    )  # fmt: skip


def test_token_is_sent():
    transport, calls = scripted(OK)
    HTTPClient("http://x", transport=transport, token="t0k").retrieve(["a"], topk=1)
    assert calls[0].headers["authorization"] == "Bearer t0k"
    import orjson

    assert orjson.loads(calls[0].content) == {"queries": ["a"], "topk": 1, "return_scores": True}


def test_one_default_k_library_server_and_clients_agree(live, bm25_root):
    """No k, k=0 and k=None mean DEFAULT_K everywhere; k past the corpus is clipped to it."""
    from retriever.protocol import DEFAULT_K

    queries = hotpot_questions(4)
    index = Index.open(bm25_root)
    want = [[p.id for p, _ in hits] for hits in index.search(queries, k=DEFAULT_K)]
    assert all(len(ids) == DEFAULT_K for ids in want)

    def ids(results):
        return [[d["id"] for d in r] for r in results]

    with HTTPClient(live.url) as http, InProcessClient(bm25_root) as local:
        for k in ((), (None,), (0,)):
            assert [[p.id for p, _ in h] for h in index.search(queries, *k)] == want
            assert ids(live.service.retrieve(queries, *k)) == want
            assert ids(http.retrieve(queries, *k)) == want
            assert ids(local.retrieve(queries, *k)) == want
        for body in ({"queries": queries}, {"queries": queries, "topk": 0}):
            answer = httpx.post(live.url + "/retrieve", json=body).json()["result"]
            assert ids(answer) == want
        n = len(index.store)
        every = [[p.id for p, _ in h] for h in index.search(queries[:1], k=n + 5)]
        assert 0 < len(every[0]) <= n  # every passage that matches, none past the corpus
        with InProcessClient(bm25_root, max_topk=n + 5, cache_size=0) as wide:
            assert ids(wide.retrieve(queries[:1], topk=n + 5)) == every
        with pytest.raises(BadRequestError, match="between 1 and 1000"):
            http.retrieve(queries, topk=1001)
        for bad in (-1, 1.5):
            with pytest.raises(BadRequestError, match="between 1 and|integer|>= 0"):
                index.search(queries, k=bad)
            with pytest.raises(BadRequestError):
                local.retrieve(queries, topk=bad)
