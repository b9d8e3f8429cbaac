"""Index parts are found by their manifest's kind, never by folder name: a BM25 part in any
folder (``bm25-lucene``, ``keywords``) and a dense part in any folder give ``sparse``, ``dense``
and ``hybrid``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from retriever_fakes import HashEncoder, paragraphs_jsonl

from index_build.encode import encode_corpus
from retriever.errors import BadRequestError
from retriever.index import Index


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A corpus with a BM25 part in ``keywords/`` and a dense part in ``vectors/``."""
    from index_build.__main__ import main

    src = tmp_path_factory.mktemp("parts")
    corpus = paragraphs_jsonl(src / "passages.jsonl", 30)
    root = src / "index"
    assert main(["corpus", "--input", str(corpus), "--out", str(root), "--no-progress"]) == 0
    args = ["bm25", "--index", str(root), "--name", "keywords", "--no-progress"]
    assert main([*args, "--workers", "1"]) == 0
    encode_corpus(root, "fake", HashEncoder().config, shard_size=70, encoder=HashEncoder())
    (root / "dense-fake").rename(root / "vectors")
    return root


def test_parts_by_kind_not_folder_name(root):
    idx = Index.open(root)
    assert idx.names_of_kind("bm25") == ["keywords"]
    assert idx.names_of_kind("dense") == ["vectors"]
    assert idx.default_bm25() == "keywords" and idx.default_dense() == "vectors"
    assert idx.names() == ["keywords", "vectors", "hybrid"]
    assert idx.resolve_alias("sparse") == "keywords"
    assert idx.resolve_alias("dense") == "vectors"
    assert idx.resolve_alias("keywords") == "keywords"


def test_hybrid_over_parts_in_any_folder(root):
    idx = Index.open(root)
    dense = idx.retriever("vectors", encoder=HashEncoder(), backend="torch")
    hybrid = idx.retriever("hybrid")
    assert [p.name for p in hybrid.parts] == ["keywords", "vectors"]
    assert hybrid.parts[1] is dense
    hits = hybrid.search(["Which magazine was started first"], 5)[0]
    assert len(hits) == 5


def test_service_sparse_and_dense_aliases_follow_the_kind(root):
    from retriever.server.service import RetrievalService, ServiceConfig

    idx = Index.open(root)
    given = {
        "keywords": idx.retriever("keywords"),
        "vectors": idx.retriever("vectors", encoder=HashEncoder(), backend="torch"),
    }
    with RetrievalService(ServiceConfig(index=str(root), warmup=False), given) as svc:
        assert svc.resolve("sparse") == "keywords"
        assert svc.resolve("dense") == "vectors"
        with pytest.raises(BadRequestError):
            svc.resolve("bm25")


def test_no_bm25_part_means_no_hybrid(root, tmp_path):
    other = tmp_path / "index"
    shutil.copytree(root / "corpus", other / "corpus")
    shutil.copytree(root / "vectors", other / "vectors")
    idx = Index.open(other)
    assert idx.default_bm25() is None and idx.names() == ["vectors"]
    assert idx.resolve_alias("sparse") == "sparse"
    with pytest.raises(BadRequestError, match="hybrid needs"):
        idx.retriever("hybrid")


@pytest.fixture(scope="module")
def renamed(root, tmp_path_factory) -> Path:
    """The same parts in folders no prefix rule knows: ``bm25-big`` (bm25) and ``vectors``."""
    other = tmp_path_factory.mktemp("renamed") / "index"
    shutil.copytree(root / "corpus", other / "corpus")
    shutil.copytree(root / "keywords", other / "bm25-big")
    shutil.copytree(root / "vectors", other / "vectors")
    return other


def test_server_options_reach_parts_by_kind(renamed, monkeypatch):
    """--device, --dense-mode, --dense-backend reach the dense part in ``vectors`` and
    --search-threads the BM25 part in ``bm25-big``, loaded by the service itself."""
    import retriever.dense.retriever as dense_module
    from retriever.dense.torch_backend import TorchBackend
    from retriever.server.service import RetrievalService, ServiceConfig

    real_load, seen = dense_module.load, {}

    def load(folder, store, **options):  # the real loader, with the fake encoder
        seen[Path(folder).name] = dict(options)
        return real_load(folder, store, encoder=HashEncoder(), **options)

    monkeypatch.setattr(dense_module, "load", load)
    config = ServiceConfig(
        index=str(renamed),
        device="cpu:0,cpu:1",
        dense_mode="replicated",
        dense_backend="torch",
        search_threads=3,
        warmup=False,
    )
    with RetrievalService(config) as svc:
        assert seen == {"vectors": {"device": "cpu:0,cpu:1", "shard": False, "backend": "torch"}}
        backend = svc._retrievers["vectors"].backend
        assert isinstance(backend, TorchBackend) and backend.mode == "replicated"
        assert len(backend.devices) == 2
        assert svc._retrievers["bm25-big"].threads == 3
        assert svc.default_retriever == "bm25-big"
        assert svc.resolve("sparse") == "bm25-big" and svc.resolve("dense") == "vectors"
        hybrid = svc._hybrids["hybrid"]
        assert hybrid.parts == (svc._retrievers["bm25-big"], svc._retrievers["vectors"])
        assert len(svc.search(["Which magazine was started first"], 4, "hybrid")[0]) == 4


def test_verify_passes_on_parts_in_any_folder(renamed, tmp_path):
    from index_build.verify import verify_root

    report = verify_root(renamed, queries=5, k=3)
    assert report["ok"], report["problems"]
    assert {n: p["kind"] for n, p in report["parts"].items()} == {
        "bm25-big": "bm25",
        "vectors": "dense",
    }
    stray = tmp_path / "index"
    shutil.copytree(renamed, stray)
    (stray / "vectors" / "manifest.json").unlink()  # an unfinished part, whatever its name
    problems = verify_root(stray, queries=5, k=3)["problems"]
    assert any(p.startswith("vectors: no manifest.json") for p in problems), problems
