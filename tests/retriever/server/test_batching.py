"""Coalescing batcher: batched equals one-by-one, every request answered on errors and shutdown."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import pytest
from retriever_fakes import FakeRetriever

from retriever.errors import BatchError, QueueFullError, ServiceUnavailableError
from retriever.server.batching import Batcher

N = 500


@pytest.fixture
def fake():
    return FakeRetriever(N, "fake")


def make(fake, **kw) -> Batcher:
    kw.setdefault("max_wait_ms", 5)
    return Batcher("fake", fake.search, **kw).start()


def hold(b: Batcher, fake, query: str = "blocker", k: int = 1):
    """Submit one request and wait until the worker is inside its batch, held at ``fake.gate``:
    what is submitted next queues up behind it. The request's future."""
    fake.gate = threading.Event()
    future = b.submit([query], k)
    assert fake.entered.wait(5)
    return future


def test_coalesced_results_equal_one_by_one(fake):
    b = make(fake, max_batch=16)
    first = hold(b, fake, k=3)
    futures = [b.submit([f"q{i}"], 3) for i in range(40)]
    fake.gate.set()
    assert first.result(5) == [fake.search_one("blocker", 3)]
    for i, f in enumerate(futures):
        assert f.result(5) == [fake.search_one(f"q{i}", 3)]
    sizes = [len(batch) for batch in fake.batches[1:]]
    assert sum(sizes) == 40 and max(sizes) == 16  # coalesced, capped at max_batch
    assert len(fake.threads) == 1  # one worker owns the retriever
    b.stop()


def test_mixed_k_in_one_batch_each_gets_its_k(fake):
    b = make(fake, max_batch=64)
    hold(b, fake)
    futures = {k: b.submit(["same query", "other"], k) for k in (1, 5, 10)}
    fake.gate.set()
    for k, f in futures.items():
        assert f.result(5) == [fake.search_one("same query", k), fake.search_one("other", k)]
    b.stop()


def test_large_request_taken_whole(fake):
    b = make(fake, max_batch=8)
    queries = [f"q{i}" for i in range(100)]
    assert b.submit(queries, 2).result(5) == [fake.search_one(q, 2) for q in queries]
    assert [len(x) for x in fake.batches] == [100]
    b.stop()


def test_batch_that_raises_fails_each_request_and_next_batch_works(fake):
    b = make(fake, max_batch=64)
    hold(b, fake)
    fake.fail_on = "boom"
    doomed = [b.submit([q], 3) for q in ("a", "boom", "c")]
    fake.gate.set()
    for f in doomed:
        with pytest.raises(RuntimeError, match="injected failure"):
            f.result(5)
    fake.fail_on = None
    assert b.submit(["a"], 3).result(5) == [fake.search_one("a", 3)]
    assert b.alive
    b.stop()


def test_wrong_result_length_is_an_error_not_a_hang(fake):
    b = make(fake)
    fake.wrong_length = True
    with pytest.raises(BatchError, match="returned 1 result lists for 2 queries"):
        b.submit(["a", "b"], 3).result(5)
    fake.wrong_length = False
    assert len(b.submit(["a", "b"], 3).result(5)) == 2
    b.stop()


def test_queue_full_raises_then_drains(fake):
    b = make(fake, queue_size=4)
    running = hold(b, fake)
    queued = [b.submit([f"q{i}"], 1) for i in range(4)]
    with pytest.raises(QueueFullError) as info:
        b.submit(["one too many"], 1)
    assert info.value.retry_after >= 1
    fake.gate.set()
    wait([running, *queued], timeout=5)
    assert all(f.done() and f.exception() is None for f in [running, *queued])
    # no permanent 429: the queue drained, new requests are admitted
    assert b.submit(["later"], 1).result(5) == [fake.search_one("later", 1)]
    b.stop()


def test_blocking_submit_waits_for_room(fake):
    b = make(fake, queue_size=1)
    fake.delay = 0.02
    futures = [b.submit([f"q{i}"], 1, block=True, timeout=10) for i in range(10)]
    assert [f.result(5) for f in futures] == [[fake.search_one(f"q{i}", 1)] for i in range(10)]
    b.stop()


def test_shutdown_answers_every_waiting_request(fake):
    b = make(fake)
    running = hold(b, fake, "in flight", 2)
    queued = [b.submit([f"q{i}"], 2) for i in range(20)]
    stopper = threading.Thread(target=b.stop, kwargs={"timeout": 5})
    stopper.start()
    wait(queued, timeout=5)  # stop() fails every queued request before joining the worker
    fake.gate.set()
    stopper.join(5)
    assert running.result(5) == [fake.search_one("in flight", 2)]  # the batch in flight finishes
    for f in queued:
        with pytest.raises(ServiceUnavailableError, match="shutting down"):
            f.result(5)
    with pytest.raises(ServiceUnavailableError):
        b.submit(["after"], 1)
    assert not b.alive


def test_dead_worker_answers_everyone_and_refuses_new_requests(fake):
    def dies(queries, k):
        raise SystemExit("worker killed")

    b = Batcher("dies", dies, max_wait_ms=1).start()
    with pytest.raises(ServiceUnavailableError, match="worker died"):
        b.submit(["x"], 1).result(5)
    b._thread.join(5)  # the worker thread ends after answering
    assert not b.alive and isinstance(b.died, SystemExit)
    with pytest.raises(ServiceUnavailableError, match="worker died"):
        b.submit(["y"], 1)


def test_not_started_is_unavailable(fake):
    b = Batcher("idle", fake.search)
    with pytest.raises(ServiceUnavailableError, match="not started"):
        b.submit(["x"], 1)


def test_observer_sees_every_batch(fake):
    seen = []
    b = make(fake, observer=lambda *args: seen.append(args))
    b.submit(["a", "b"], 3).result(5)
    assert seen and seen[0][:3] == ("fake", 2, 1) and seen[0][4] is None
    b.stop()


@pytest.mark.parametrize("kw", [{"max_batch": 0}, {"queue_size": 0}, {"max_wait_ms": -1}])
def test_bad_settings_refused(fake, kw):
    with pytest.raises(ValueError):
        Batcher("x", fake.search, **kw)
