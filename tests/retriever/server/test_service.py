"""The service object without a network: cache, validation, hybrid routing, access, reports."""

from __future__ import annotations

import asyncio
import time

import pytest
from retriever_fakes import FakeRetriever, build_root, hotpot_questions

from retriever.errors import (
    BadRequestError,
    BatchError,
    IndexFormatError,
    ServiceUnavailableError,
)
from retriever.hybrid import HybridRetriever
from retriever.index import Index
from retriever.server.service import RetrievalService, ServiceConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("svc"), bm25=False)


@pytest.fixture
def fake(root):
    return FakeRetriever(len(Index.open(root).store), "bm25")


@pytest.fixture
def svc(root, fake):
    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1), {"bm25": fake}).start()
    yield service
    service.stop()


def test_retrieve_matches_retriever_and_store(svc, fake):
    store = svc.index.store
    docs = svc.retrieve(["first query", "second query"], topk=4)
    for q, got in zip(["first query", "second query"], docs):
        want = fake.search_one(q, 4)
        assert [d["id"] for d in got] == [store.get(h.row).id for h in want]
        assert [d["score"] for d in got] == [h.score for h in want]
        assert set(got[0]) == {"id", "contents", "title", "text", "url", "score"}
        assert got[0]["contents"] == f'"{got[0]["title"]}"\n{got[0]["text"]}'


def test_cache_counts_hits_and_dedupes(svc, fake):
    first = svc.search(["repeat", "repeat", "other"], topk=3)
    assert first[0] == first[1]
    assert sum(len(b) for b in fake.batches) == 1 + 2  # warm-up, then one search per distinct query
    again = svc.search(["repeat"], topk=3)
    assert again[0] == first[0]
    assert svc.cache.hits == 1
    svc.search(["repeat"], topk=5)  # another k is another key
    assert svc.cache.hits == 1
    text = svc.metrics_text()
    assert 'retriever_cache_hits_total{retriever="bm25"} 1.0' in text
    assert 'retriever_cache_misses_total{retriever="bm25"} 4.0' in text


def test_cache_disabled(root, fake):
    with RetrievalService(ServiceConfig(index=root, cache_size=0), {"bm25": fake}) as svc:
        svc.search(["x"], 2)
        svc.search(["x"], 2)
        assert sum(b.count("x") for b in fake.batches) == 2 and len(svc.cache) == 0


@pytest.mark.parametrize(
    "queries, topk, retriever, message",
    [
        ("one string", 3, None, "list of strings"),
        ([1], 3, None, "query 0 is int"),
        (["q"] * 11, 3, None, "limit is 10"),
        (["q"], -1, None, "between 1 and 50"),  # 0 is the default, as over HTTP
        (["q"], 51, None, "between 1 and 50"),
        (["q"], True, None, "integer"),
        (["q"], "3", None, "integer"),
        (["q"], 3, "dense-nope", "unknown retriever 'dense-nope'"),
    ],
)
def test_bad_requests_name_the_problem(root, fake, queries, topk, retriever, message):
    config = ServiceConfig(index=root, max_queries_per_request=10, max_topk=50)
    with RetrievalService(config, {"bm25": fake}) as svc:
        with pytest.raises(BadRequestError, match=message):
            svc.search(queries, topk, retriever)


def test_default_topk_and_aliases(svc, fake):
    assert len(svc.retrieve(["q"])[0]) == 3  # default_topk
    assert svc.retrieve([]) == [] and svc.search([], 5) == []  # nobody searched this turn
    assert svc.resolve("sparse") == "bm25"
    with pytest.raises(BadRequestError):
        svc.resolve("dense")  # no dense part loaded


def test_a_failing_retriever_is_a_batch_error_naming_it(svc, fake):
    fake.fail_on = "boom"
    with pytest.raises(BatchError, match="retriever 'bm25' failed: RuntimeError.*injected") as info:
        svc.search(["boom"], 2)
    assert isinstance(info.value.__cause__, RuntimeError)
    fake.fail_on = None
    assert len(svc.search(["boom"], 2)[0]) == 2


def test_not_ready_then_ready(root, fake):
    svc = RetrievalService(ServiceConfig(index=root), {"bm25": fake})
    with pytest.raises(ServiceUnavailableError, match="loading"):
        svc.search(["q"], 1)
    assert svc.health()["status"] == "created"
    svc.start_background().join(10)
    assert svc.health() | {"uptime_s": 0} == {
        "status": "ok",
        "ready": True,
        "retrievers": {"bm25": {"alive": True, "queue_depth": 0, "error": None}},
        "error": None,
        "uptime_s": 0,
    }
    svc.stop()
    assert svc.health()["status"] == "stopped"
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        svc.search(["q"], 1)


def test_load_failure_is_reported(tmp_path):
    svc = RetrievalService(ServiceConfig(index=tmp_path / "missing"))
    with pytest.raises(IndexFormatError):
        svc.start()
    assert svc.health()["status"] == "failed" and "does not exist" in svc.health()["error"]
    with pytest.raises(ServiceUnavailableError, match="failed to load"):
        svc.search(["q"], 1)


def test_hybrid_routes_through_part_batchers_and_equals_library(root):
    n = len(Index.open(root).store)
    bm25, dense = FakeRetriever(n, "bm25"), FakeRetriever(n, "dense-fake")
    hybrid = HybridRetriever(bm25, dense, k_rrf=10, depth=20)
    config = ServiceConfig(index=root, max_wait_ms=1)
    with RetrievalService(config, {"hybrid": hybrid}) as svc:
        assert svc.names == ["bm25", "dense-fake", "hybrid"]
        queries = [f"hybrid {i}" for i in range(7)]
        got = svc.search(queries, topk=5, retriever="hybrid")
        assert got == hybrid.search(queries, 5)
        assert svc.resolve("dense") == "dense-fake"
        assert svc.info()["retrievers"]["hybrid"]["k_rrf"] == 10


async def test_async_search_equals_sync(svc):
    queries = [f"async {i}" for i in range(30)]
    results = await asyncio.gather(*[svc.aretrieve([q], 2) for q in queries])
    assert [r[0] for r in results] == svc.retrieve(queries, 2)


def test_access_pages_by_url_title_and_id(svc):
    store = svc.index.store
    passage = store.get(10)
    pages = svc.access(urls=[passage.url], titles=[passage.title.lower(), "no such page xyz"])
    assert pages[0]["title"] == passage.title and pages[0] == pages[1]
    assert pages[2] is None
    total = pages[0]["total_chars"]
    window = svc.access(ids=[passage.id], offset=5, max_chars=20)[0]
    assert window["contents"] == pages[0]["contents"][5:25] and window["total_chars"] == total
    with pytest.raises(BadRequestError, match="nothing to access"):
        svc.access()
    with pytest.raises(BadRequestError, match="offset"):
        svc.access(urls=[passage.url], offset=-1)


def test_info_and_metrics(svc):
    svc.search(["m1", "m2"], 3)
    info = svc.info()
    assert info["corpus"]["num_docs"] == len(svc.index.store)
    assert info["default_retriever"] == "bm25" and info["config"]["token"] is None
    assert info["load_seconds"] > 0 and info["rss_bytes"] > 0
    text = svc.metrics_text()
    for name in (
        "retriever_batch_size_bucket",
        "retriever_batch_seconds_count",
        "retriever_queue_depth",
        "retriever_queries_total",
        "retriever_ready 1",
    ):
        assert name in text


# ---- the real BM25 index ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory):
    return build_root(tmp_path_factory.mktemp("svc-bm25"), bm25=True)


def test_service_equals_library_on_real_bm25(bm25_root):
    questions = hotpot_questions()
    index = Index.open(bm25_root)
    want = index.search(questions, k=5, retriever="bm25")
    with RetrievalService(ServiceConfig(index=bm25_root, max_batch=16)) as svc:
        t0 = time.perf_counter()
        got = svc.retrieve(questions, topk=5)
        assert time.perf_counter() - t0 < 30
    assert [[(d["id"], d["score"]) for d in r] for r in got] == [
        [(p.id, pytest.approx(s)) for p, s in r] for r in want
    ]


@pytest.fixture(scope="module")
def minilm_faiss_root(tmp_path_factory):
    """Two questions' HotpotQA paragraphs (about 20 passages) encoded with the packaged MiniLM,
    searched through a faiss Flat index: the server's default dense path on CPU."""
    from retriever_fakes import paragraphs_jsonl

    from index_build.__main__ import main
    from retriever.dense.encoders import packaged_model_path

    src = tmp_path_factory.mktemp("minilm-faiss")
    corpus = paragraphs_jsonl(src / "small.jsonl", 2)
    root = src / "index"
    model = str(packaged_model_path())
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    for verb in (["encode", "--model", model], ["faiss", "--factory", "Flat"]):
        argv = [verb[0], "--index", str(root), "--name", "m", *verb[1:], "--no-progress"]
        assert main(argv) == 0
    return root


@pytest.mark.slow
def test_a_batched_request_costs_no_more_per_query_than_coalesced_singles(minilm_faiss_root):
    """Issue 26: a 64-query request was 0.94x Search-R1 and a lone query was encoded on one
    core: faiss's single-query search (the warm-up) left the worker thread's OpenMP count at 1
    and torch encoded every later batch with it. Counted, not timed: the encoder's forward
    passes, their rows, and the torch threads each ran with, for one request of 64 queries and
    for 64 single-query requests coalesced by the batcher (before the fix: 1 thread, not 2)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    fresh: list[int] = []  # what a new thread's torch uses: what the worker should encode with
    probe = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
    probe.start()
    probe.join()
    queries = hotpot_questions(64)
    config = ServiceConfig(
        index=minilm_faiss_root, retrievers=("dense-m",), dense_backend="faiss", cache_size=0,
        max_batch=64, max_wait_ms=300,
    )  # fmt: skip
    with RetrievalService(config) as svc:
        encoder = svc._retrievers["dense-m"].encoder
        forward, calls = encoder._forward, []

        def spy(ids):
            calls.append((len(ids), torch.get_num_threads()))
            return forward(ids)

        encoder._forward = spy
        batched = svc.retrieve(queries, topk=3, retriever="dense-m")
        one_request, calls[:] = list(calls), []
        with ThreadPoolExecutor(len(queries)) as pool:
            singles = list(pool.map(lambda q: svc.retrieve([q], 3, "dense-m")[0], queries))
        coalesced = list(calls)
    assert singles == batched  # the same answers either way
    assert sum(n for n, _ in one_request) == sum(n for n, _ in coalesced) == len(queries)
    assert len(one_request) <= len(coalesced)  # no more forward passes per query
    assert {t for _, t in one_request + coalesced} == {fresh[0]}, (one_request, coalesced)
