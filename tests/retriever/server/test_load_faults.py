"""Load and faults over real HTTP: 200 concurrent clients, queue full, failing batches, shutdown,
and a bounded schemathesis fuzz of the OpenAPI schema. Every case must end, none with a 500
for bad input."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from retriever_fakes import (
    FakeRetriever,
    LiveServer,
    build_root,
    hotpot_questions,
)

from retriever.index import Index
from retriever.server.app import create_app
from retriever.server.service import RetrievalService, ServiceConfig

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("load"), bm25=True)


@pytest.fixture
def fake(root):
    return FakeRetriever(len(Index.open(root).store), "bm25")


def fake_server(root, fake, **config):
    config.setdefault("max_wait_ms", 2)
    return LiveServer(RetrievalService(ServiceConfig(index=root, **config), {"bm25": fake}))


async def post_many(url: str, bodies: list[dict], timeout: float = 30.0) -> list:
    """Each body from its own concurrent client; an exception instead of a response on failure."""
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        return await asyncio.gather(
            *[client.post("/retrieve", json=b) for b in bodies], return_exceptions=True
        )


def test_200_concurrent_clients_all_answered_and_equal_to_library(root):
    questions = hotpot_questions(200)
    want = Index.open(root).search(questions, k=3)
    service = RetrievalService(ServiceConfig(index=root, max_batch=32, cache_size=0))
    with LiveServer(service) as server:
        bodies = [{"queries": [q], "topk": 3, "return_scores": True} for q in questions]
        responses = asyncio.run(post_many(server.url, bodies))
        batches = service.metrics.value("retriever_batch_size_count", retriever="bm25")
    assert all(isinstance(r, httpx.Response) and r.status_code == 200 for r in responses)
    for r, hits in zip(responses, want):
        got = [(item["document"]["id"], item["score"]) for item in r.json()["result"][0]]
        assert got == [(p.id, pytest.approx(s)) for p, s in hits]
    assert batches < 200  # requests were coalesced


def test_queue_full_gives_429_then_recovers(root, fake):
    with fake_server(root, fake, queue_size=2, max_batch=1) as server:
        fake.gate = threading.Event()  # the warm-up passed; now hold the worker
        blocker = threading.Thread(
            target=httpx.post, args=(server.url + "/retrieve",), kwargs={"json": {"queries": ["b"]}}
        )
        blocker.start()
        time.sleep(0.2)
        threading.Timer(1.0, fake.gate.set).start()
        responses = asyncio.run(post_many(server.url, [{"queries": [f"q{i}"]} for i in range(30)]))
        blocker.join(10)
        codes = [r.status_code for r in responses]
        assert codes.count(429) >= 27 and set(codes) <= {200, 429}, codes
        rejected = next(r for r in responses if r.status_code == 429)
        assert int(rejected.headers["retry-after"]) >= 1 and "queue" in rejected.json()["detail"]
        # the queue drained: no permanent 429
        assert httpx.post(server.url + "/retrieve", json={"queries": ["later"]}).status_code == 200


def test_failing_batch_fails_each_request_and_next_batch_works(root, fake):
    with fake_server(root, fake, max_wait_ms=50) as server:
        fake.fail_on = "boom"
        bodies = [{"queries": [q]} for q in ("a", "b", "boom", "c")]
        responses = asyncio.run(post_many(server.url, bodies))
        assert len(fake.batches[-1]) == 4  # one coalesced batch
        for r in responses:
            assert r.status_code == 500 and "injected failure" in r.json()["detail"]
        fake.fail_on = None
        r = httpx.post(server.url + "/retrieve", json={"queries": ["a"]})
        assert r.status_code == 200


def test_shutdown_with_requests_in_flight(root, fake):
    server = fake_server(root, fake, max_batch=4).__enter__()
    fake.gate = threading.Event()
    outcomes: list = []

    def call(i):
        try:
            r = httpx.post(server.url + "/retrieve", json={"queries": [f"s{i}"]}, timeout=30)
            outcomes.append(r.status_code)
        except httpx.TransportError as exc:  # a closed connection is a clean error too
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20  # wait until the server holds all 12 requests
    while server.service.metrics.value("retriever_queries_total", retriever="bm25") < 12:
        assert time.monotonic() < deadline, "requests did not arrive"
        time.sleep(0.02)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.3)
    fake.gate.set()
    t0 = time.monotonic()
    for t in threads:
        t.join(30)
    stopper.join(30)
    assert time.monotonic() - t0 < 25 and not any(t.is_alive() for t in threads)
    assert len(outcomes) == 12
    assert all(o in (200, 503) or isinstance(o, str) for o in outcomes), outcomes
    assert 200 in outcomes  # the batch in flight was answered
    assert server.service.state == "stopped"


# ---- schema fuzzing -----------------------------------------------------------------------
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_schema(root):
    fake = FakeRetriever(len(Index.open(root).store), "bm25")
    config = ServiceConfig(index=root, max_wait_ms=0, max_topk=100, max_queries_per_request=50)
    service = RetrievalService(config, {"bm25": fake}).start()
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    service.stop()


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_500(fuzz_schema):
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/retrieve", "/access", "/health", "/metrics"}
    calls = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case):
            response = case.call_and_validate(checks=[not_a_server_error])
            calls.append(response.status_code)

        fuzz()
    assert 200 in calls and 422 in calls
