"""The HTTP client over several base URLs: load spread, fail-over, bounded retries; and a real
server process killed mid-load while a multi-URL client keeps every request answered."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO
from retriever_fakes import build_root, free_port, hotpot_questions

from retriever.client import HTTPClient, connect
from retriever.client.balancer import parse_urls
from retriever.errors import (
    BadRequestError,
    CorruptStoreError,
    RetrieverError,
    ServiceUnavailableError,
)
from retriever.index import Index

pytestmark = pytest.mark.timeout(120)
OK = {"result": [[{"document": {"id": "1", "contents": "c"}, "score": 1.0}]]}


def hosts(behaviour):
    """A mock transport answering per host with ``behaviour[host](request)``; counts calls."""
    calls = collections.Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        calls[request.url.host] += 1
        return behaviour[request.url.host](request)

    return calls, handler


def ok(request):
    return httpx.Response(200, json=OK)


def refused(request):
    raise httpx.ConnectError("connection refused", request=request)


def test_urls_from_a_list_or_a_comma_string():
    assert parse_urls(["http://a:1/", "http://b:2"]) == ["http://a:1", "http://b:2"]
    assert HTTPClient("http://a:1, http://b:2").urls == ["http://a:1", "http://b:2"]
    assert connect(["http://a:1", "http://b:2"]).urls == ["http://a:1", "http://b:2"]
    for bad, match in (
        ("", "no server URL"),
        ("a:1", "must start with http"),
        ("http://a,http://a", "repeat"),
    ):
        with pytest.raises(BadRequestError, match=match):
            HTTPClient(bad)


def test_sequential_requests_alternate_between_urls():
    calls, handler = hosts({"a": ok, "b": ok, "c": ok})
    client = HTTPClient("http://a,http://b,http://c", transport=httpx.MockTransport(handler))
    for _ in range(30):
        client.retrieve(["q"])
    assert calls == {"a": 10, "b": 10, "c": 10}


def test_a_refusing_url_is_skipped_for_a_while_then_tried_again():
    calls, handler = hosts({"a": refused, "b": ok})
    client = HTTPClient(
        ["http://a", "http://b"], transport=httpx.MockTransport(handler), down_seconds=0.3
    )
    t0 = time.monotonic()
    for _ in range(20):
        assert client.retrieve(["q"])[0][0]["id"] == "1"
    assert calls == {"a": 1, "b": 20}  # one failed try, then a was left out
    assert time.monotonic() - t0 < 0.3  # failing over does not wait for a backoff
    time.sleep(0.35)
    client.retrieve(["q"])
    client.retrieve(["q"])
    assert calls["a"] == 2  # back in the rotation, refused again, failed over again


def test_503_fails_over_and_retries_stay_bounded():
    calls, handler = hosts(
        {"a": lambda r: httpx.Response(503, json={"detail": "loading"}), "b": ok}
    )
    client = HTTPClient(["http://a", "http://b"], transport=httpx.MockTransport(handler))
    for _ in range(4):
        client.retrieve(["q"])
    assert calls == {"a": 1, "b": 4}
    calls, handler = hosts({"a": refused, "b": refused})
    client = HTTPClient(
        ["http://a", "http://b"], transport=httpx.MockTransport(handler), retries=3, backoff=0.001
    )
    with pytest.raises(ServiceUnavailableError, match="http://a, http://b .*after 4 attempts"):
        client.retrieve(["q"])
    assert sum(calls.values()) == 4


def test_a_damaged_index_is_not_retried_but_fails_over():
    """503 ``index_damaged``: one URL raises at once (no backoff mends it); with several,
    the request goes to another URL and the damaged one is left out."""
    damaged = lambda r: httpx.Response(503, json={"error": "index_damaged", "detail": "row 7"})  # noqa: E731
    calls, handler = hosts({"a": damaged})
    client = HTTPClient("http://a", transport=httpx.MockTransport(handler), retries=5)
    with pytest.raises(CorruptStoreError, match="row 7"):
        client.retrieve(["q"])
    assert calls["a"] == 1
    calls, handler = hosts({"a": damaged, "b": ok})
    client = HTTPClient(["http://a", "http://b"], transport=httpx.MockTransport(handler))
    for _ in range(4):
        assert client.retrieve(["q"])[0][0]["id"] == "1"
    assert calls == {"a": 1, "b": 4}


def test_proxy_500_is_retried_but_a_service_500_is_not():
    proxy = {"n": 0}

    def flaky(request):  # Ray Serve's proxy when a replica dies mid-request: plain text 500
        proxy["n"] += 1
        if proxy["n"] == 1:
            return httpx.Response(500, text="Internal Server Error")
        return httpx.Response(200, json=OK)

    calls, handler = hosts({"a": flaky})
    client = HTTPClient("http://a", transport=httpx.MockTransport(handler), backoff=0.001)
    assert client.retrieve(["q"])[0][0]["id"] == "1" and calls["a"] == 2
    service_500 = {
        "a": lambda r: httpx.Response(500, json={"error": "search_failed", "detail": "x"})
    }
    calls, handler = hosts(service_500)
    with pytest.raises(RetrieverError, match="500"):
        HTTPClient("http://a", transport=httpx.MockTransport(handler)).retrieve(["q"])
    assert calls["a"] == 1


async def test_async_requests_spread_by_outstanding_count():
    in_flight = collections.Counter()
    peak = collections.Counter()

    async def slow(request):
        host = request.url.host
        in_flight[host] += 1
        peak[host] = max(peak[host], in_flight[host])
        await asyncio.sleep(0.02)
        in_flight[host] -= 1
        return httpx.Response(200, json=OK)

    client = HTTPClient(["http://a", "http://b"], async_transport=httpx.MockTransport(slow))
    try:
        await asyncio.gather(*[client.aretrieve(["q"]) for _ in range(40)])
    finally:
        await client.aclose()
    assert peak["a"] == peak["b"] == 20  # least outstanding: an even split of 40 at once


# ---- real processes -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("failover"), bm25=True)


def start_server(root: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "retriever.server", "--index", str(root), "--port", str(port)]
    cmd += ["--log-level", "warning", "--max-wait-ms", "2", "--cache-size", "0"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def two_servers(bm25_root):
    ports = [free_port(), free_port()]
    procs = [start_server(bm25_root, p) for p in ports]
    try:
        HTTPClient([f"http://127.0.0.1:{p}" for p in ports]).wait_ready(timeout=60)
        yield [f"http://127.0.0.1:{p}" for p in ports], procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_killing_a_server_mid_load_loses_no_request(two_servers, bm25_root):
    urls, procs = two_servers
    questions = hotpot_questions(120)
    want = [[p.id for p, _ in hits] for hits in Index.open(bm25_root).search(questions, k=3)]
    client = HTTPClient(urls, retries=8, backoff=0.05)
    got: dict[int, list] = {}
    errors: list = []
    served = collections.Counter()
    killed = threading.Event()

    def worker(offset: int) -> None:
        for i in range(offset, len(questions), 6):
            try:
                got[i] = [d["id"] for d in client.retrieve([questions[i]], topk=3)[0]]
            except Exception as exc:  # must not happen: the client fails over
                errors.append(exc)
            served[killed.is_set()] += 1
            time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(o,)) for o in range(6)]
    for t in threads:
        t.start()
    while sum(served.values()) < 30:
        time.sleep(0.005)
    procs[0].kill()  # SIGKILL: no graceful shutdown, connections drop
    killed.set()
    for t in threads:
        t.join(60)
    assert not errors
    assert [got[i] for i in range(len(questions))] == want
    assert served[True] > 30  # a good part of the load came after the kill
    assert client._balancer.down_until[urls[0]] > 0  # the dead one was marked down

    async def after_kill():  # the async path fails over too
        try:
            return await asyncio.gather(*[client.aretrieve([q], topk=3) for q in questions[:20]])
        finally:
            await client.aclose()

    results = asyncio.run(after_kill())
    assert [[d["id"] for d in r[0]] for r in results] == want[:20]
    client.close()
