"""Index parts are found by their manifest's kind, never by folder name: a BM25 part in any
folder (``bm25-lucene``, ``keywords``) and a dense part in any folder give ``sparse``, ``dense``
and ``hybrid``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from retriever_fakes import paragraphs_jsonl
from test_dense import HashEncoder

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
