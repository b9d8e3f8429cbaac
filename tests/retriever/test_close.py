"""``close()`` releases every file an index holds at once, not when the garbage collector runs.

Each ``np.load(mmap_mode="r")`` array and each ``mmap.mmap`` keeps a file descriptor; before
``close()`` released them a closed in-process client left 16 open on the HotpotQA root, and a
full test run passed 1,024. The counts are taken with the collector off, so it cannot hide one.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from retriever_fakes import build_root

from retriever.bm25.retriever import BM25Retriever
from retriever.client import InProcessClient
from retriever.errors import BadRequestError, ClosedError
from retriever.index import Index
from retriever.server.service import RetrievalService, ServiceConfig
from retriever.store.docstore import DocStore
from retriever.store.writer import StoreWriter


def open_under(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds a descriptor of (mapped arrays included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, gone already
            continue
        if target.startswith(str(folder) + os.sep):
            found.append(target)
    return sorted(found)


@contextmanager
def no_gc() -> Iterator[None]:
    gc.collect()  # what an earlier test left for the collector
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@pytest.fixture(scope="module")
def bm25_root(tmp_path_factory) -> Path:
    return build_root(tmp_path_factory.mktemp("close-bm25"), bm25=True)


@pytest.fixture(scope="module")
def compact_root(bm25_root, tmp_path_factory) -> Path:
    """The HotpotQA corpus with a compact-layout BM25 part."""
    from index_build.__main__ import main

    root = tmp_path_factory.mktemp("close-compact") / "index"
    shutil.copytree(bm25_root / "corpus", root / "corpus")
    argv = ["bm25", "--index", str(root), "--no-progress", "--workers", "1", "--format", "compact"]
    assert main(argv) == 0
    return root


def test_a_closed_in_process_client_leaves_no_descriptors(bm25_root):
    with no_gc():
        assert open_under(bm25_root) == []
        client = InProcessClient(bm25_root, max_wait_ms=1)
        assert client.retrieve(["history of Kansas City"], 3)[0]
        assert client.access(titles=["History of the Kansas City metropolitan area"])[0] is not None
        assert len(open_under(bm25_root)) >= 10  # store files, postings, vocabulary, maxima
        client.close()
        assert open_under(bm25_root) == []
        client.close()  # twice: harmless


def test_a_stopped_service_closes_its_index_and_says_so(bm25_root):
    with no_gc():
        with RetrievalService(ServiceConfig(index=bm25_root, max_wait_ms=1)) as service:
            service.retrieve(["Kansas City metropolitan area"], 2)
            index = service.index
        assert open_under(bm25_root) == []
        with pytest.raises(ClosedError, match="open it again"):
            index.search(["Kansas City metropolitan area"], 2)
        with pytest.raises(ClosedError, match=str(bm25_root / "corpus")):
            index.store.get(0)


def test_index_close_closes_store_and_retrievers_and_with_closes_too(bm25_root):
    with no_gc():
        with Index.open(bm25_root) as index:
            want = index.search(["Kansas City metropolitan area"], 3)
            retriever = index.retriever("bm25")
            store = index.store
        assert open_under(bm25_root) == []
        with pytest.raises(ClosedError):
            retriever.search(["Kansas City metropolitan area"], 3)
        with pytest.raises(ClosedError):
            store.page("History of the Kansas City metropolitan area")
        with pytest.raises(ClosedError):
            index.retriever("bm25")  # no silent reopen
        index.close()  # twice: harmless
        again = Index.open(bm25_root)  # a new one reads as before
        assert again.search(["Kansas City metropolitan area"], 3) == want
        again.close()


def test_a_compact_bm25_part_closes(compact_root):
    with no_gc():
        retriever = BM25Retriever(compact_root / "bm25", threads=1)
        assert retriever.method == "bmp-compact"
        assert retriever.search(["Kansas City metropolitan area"], 3)[0]
        assert open_under(compact_root / "bm25")
        with retriever:
            pass
        assert open_under(compact_root) == []
        with pytest.raises(ClosedError, match="bm25"):
            retriever.search(["Kansas City metropolitan area"], 3)


@pytest.mark.parametrize("layout", ["spans", "spans,zstd"])
def test_a_spans_store_closes(tmp_path, layout):
    w = StoreWriter(tmp_path, store=layout)
    url = "https://en.wikipedia.org/wiki/T"
    w.add_page("7", "T", url, "One two three. Four five six")
    w.add_passage("7-0", "T", "One two three.", url)
    w.add_passage("7-1", "T", "Four five six", url)
    w.add_passage("x", "T", "not in the page", url)  # a patched row
    w.finish({})
    with no_gc():
        store = DocStore(tmp_path)
        assert [p.text for p in store.iter_passages()][1] == "Four five six"
        assert store.page("T").text.startswith("One")
        assert open_under(tmp_path)
        store.close()
        assert open_under(tmp_path) == []
        store.close()
        for read in (lambda: store.get(0), lambda: store.get(2), lambda: store.page("T")):
            with pytest.raises(ClosedError):
                read()


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_a_dense_part_closes_with_its_index(tmp_path, backend):
    from retriever_fakes import HashEncoder, paragraphs_jsonl

    from index_build.__main__ import main
    from index_build.build_faiss import build_index
    from index_build.encode import encode_corpus

    corpus = paragraphs_jsonl(tmp_path / "wiki-18.jsonl", 10)
    root = tmp_path / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    encode_corpus(root, "fake", HashEncoder().config, shard_size=40, encoder=HashEncoder())
    if backend == "faiss":
        build_index(root, "fake", "Flat")  # read whole: it holds no descriptor while open
    # torch's first import leaves a reference cycle through the importing frames, locals and
    # all (the collector frees it; once a process): import it before the collector is off
    import torch  # noqa: F401

    with no_gc():
        index = Index.open(root)
        dense = index.retriever("dense-fake", encoder=HashEncoder(), backend=backend)
        assert dense.search(["Arthur's Magazine"], 2)[0]
        if backend == "torch":  # the shards, mapped
            assert len(open_under(root / "dense-fake")) == 3
        index.close()
        assert open_under(root) == []
        with pytest.raises(ClosedError, match="dense-fake"):
            dense.search(["Arthur's Magazine"], 2)


def test_a_client_whose_service_fails_to_start_leaves_no_descriptors(bm25_root):
    with no_gc():
        with pytest.raises(BadRequestError, match="unknown retriever 'nope'"):
            InProcessClient(bm25_root, retrievers=["bm25", "nope"])
        assert open_under(bm25_root) == []


def test_the_http_app_closes_the_index_at_shutdown(bm25_root):
    from fastapi.testclient import TestClient

    from retriever.server.app import create_app

    service = RetrievalService(ServiceConfig(index=bm25_root, max_wait_ms=1))
    with no_gc():
        with TestClient(create_app(service, background=False)) as http:
            r = http.post("/retrieve", json={"queries": ["Kansas City"], "topk": 2})
            assert r.status_code == 200 and len(r.json()["result"][0]) == 2
            assert open_under(bm25_root)
        assert service.state == "stopped"
        assert open_under(bm25_root) == []
