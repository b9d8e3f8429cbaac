"""The pyserini (Lucene) BM25 backend: agreement with bm25s, docid mapping, bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import DATA

from retriever.bm25.lucene import java_available
from retriever.errors import BadRequestError, ClosedError, IndexFormatError, RetrieverError
from retriever.index import Index
from retriever.manifest import read_manifest

HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"

pytestmark = [
    pytest.mark.lucene,
    pytest.mark.skipif(
        java_available() is None,
        reason="Java 17 not found (java on PATH or JAVA_HOME): the pyserini backend needs it; "
        "`make setup` installs it",
    ),
]

# Measured on the HotpotQA mini corpus (500 questions): mean overlap@10 between Lucene and
# bm25s with the same analyzer settings = 0.994, same top-1 for 0.992 of the questions.
OVERLAP_FLOOR = 0.97
TOP1_FLOOR = 0.97


def _build(root: Path, *extra: str) -> None:
    from index_build.__main__ import main

    assert main(["bm25", "--index", str(root), "--no-progress", *extra]) == 0


@pytest.fixture(scope="module")
def root(hotpot_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lucene") / "index"
    shutil.copytree(hotpot_root / "corpus", root / "corpus")
    _build(root)
    _build(root, "--backend", "pyserini")
    return root


@pytest.fixture(scope="module")
def index(root) -> Index:
    return Index.open(root)


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()]


def test_part_coexists_with_bm25s(root, index):
    m = read_manifest(root / "bm25-lucene", kind="bm25")
    assert m["backend"] == "pyserini" and m["docids"] == "row"
    assert m["num_docs"] == m["lucene_num_docs"] == len(index.store)
    assert not (root / "bm25-lucene" / "collection").exists()
    assert {"bm25", "bm25-lucene"} <= set(index.names())


def test_lucene_agrees_with_bm25s(index, questions):
    ours = index.retriever("bm25").search(questions, 10)
    lucene = index.retriever("bm25-lucene").search(questions, 10)
    overlap = [len({h.row for h in a} & {h.row for h in b}) / 10 for a, b in zip(ours, lucene)]
    top1 = [a[0].row == b[0].row for a, b in zip(ours, lucene) if a and b]
    assert sum(overlap) / len(overlap) >= OVERLAP_FLOOR
    assert sum(top1) / len(top1) >= TOP1_FLOOR


def test_batched_equals_one_by_one_and_ties_by_row(index, questions):
    r = index.retriever("bm25-lucene")
    batched = r.search(questions[:60], 10)
    assert batched == [r.search([q], 10)[0] for q in questions[:60]]
    for hits in batched:
        keys = [(-h.score, h.row) for h in hits]
        assert keys == sorted(keys)


def test_bad_input_is_defined(index):
    r = index.retriever("bm25-lucene")
    assert r.search([], 5) == []
    assert r.search(["", "the of and", "?!", "zzzqqqxxyy"], 5) == [[]] * 4
    many_terms = " ".join(f"w{i}" for i in range(5000)) + " film"  # > Lucene's 1024 clauses
    out = r.search([many_terms, "Москва 東京", "x" * 100_000], 5)
    assert len(out) == 3
    assert r.search(["film"], 0) == [[]]
    assert len(r.search(["film"], 10**9)[0]) <= len(index.store)
    with pytest.raises(BadRequestError):
        r.search(["film"], -1)


def test_register_existing_pyserini_index(root, index, questions):
    """An index a user already has (docid = corpus passage id) maps onto the store rows."""
    _build(root, "--lucene-index", str(root / "bm25-lucene" / "lucene"), "--name", "bm25-user")
    m = read_manifest(root / "bm25-user")
    assert m["docids"] == "id" and Path(m["lucene_index"]).is_absolute()
    fresh = Index.open(root)
    assert fresh.retriever("bm25-user").search(questions[:30], 10) == index.retriever(
        "bm25-lucene"
    ).search(questions[:30], 10)


def test_register_refuses_another_corpus(root, tmp_path):
    from index_build.__main__ import main

    small = tmp_path / "small.jsonl"
    small.write_text(
        "".join(json.dumps({"id": f"d{i}", "contents": f"T{i}\ntext {i}"}) + "\n" for i in range(3))
    )
    other = tmp_path / "index"
    assert main(["corpus", "--input", str(small), "--out", str(other), "--no-progress"]) == 0
    from index_build.build_bm25 import BM25Config, build_bm25

    with pytest.raises(IndexFormatError, match="4920 documents"):
        build_bm25(
            other, BM25Config(backend="pyserini", lucene_index=str(root / "bm25-lucene" / "lucene"))
        )
    assert not (other / "bm25-lucene.partial").exists()


def test_analyzer_lucene_cannot_reproduce_is_refused(root):
    from index_build.build_bm25 import BM25Config, build_bm25
    from retriever.bm25.analyzer import Analyzer

    with pytest.raises(RetrieverError, match="porter"):
        build_bm25(
            root,
            BM25Config(backend="pyserini", name="bm25-x", analyzer=Analyzer(stemmer="english")),
        )


def test_lucene_part_in_its_default_folder_is_the_sparse_part(root, tmp_path):
    """Chosen by manifest kind: with no ``bm25`` folder, ``bm25-lucene`` is what ``sparse`` and
    ``hybrid`` use."""
    other = tmp_path / "index"
    shutil.copytree(root / "corpus", other / "corpus")
    shutil.copytree(root / "bm25-lucene", other / "bm25-lucene")
    idx = Index.open(other)
    assert idx.names_of_kind("bm25") == ["bm25-lucene"]
    assert idx.default_bm25() == "bm25-lucene"
    assert idx.resolve_alias("sparse") == "bm25-lucene"
    # beside a bm25s part, ``bm25`` stays the default
    assert Index.open(root).default_bm25() == "bm25"


def test_closing_the_index_closes_the_lucene_files(root, questions, tmp_path):
    # a copy of its own: other tests' searchers in this JVM keep the module's part mapped
    shutil.copytree(root / "corpus", tmp_path / "corpus")
    shutil.copytree(root / "bm25-lucene", tmp_path / "bm25-lucene")
    root = tmp_path

    def held() -> list[str]:
        """The part's files this process holds open or mapped (Lucene maps its segments and
        closes their descriptors)."""
        part = str(root / "bm25-lucene")
        targets = [line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()]
        for fd in os.listdir("/proc/self/fd"):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return sorted({t for t in targets if t.startswith(part)})

    index = Index.open(root)
    lucene = index.retriever("bm25-lucene")
    assert lucene.search(questions[:2], 3)[0]
    assert held()  # Lucene's segment files, mapped by the JVM in this process
    index.close()
    assert held() == []
    with pytest.raises(ClosedError, match="bm25-lucene"):
        lucene.search(questions[:1], 3)
