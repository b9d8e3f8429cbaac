"""Every analyzer option ``index_build bm25 --help`` offers builds an index that searches.

The values come from the constants the help and the flags are built from (``STEMMERS``,
``STOPWORD_LISTS``, ``SEGMENTERS``), so a value cannot be offered without being built here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from conftest import DATA

from index_build.__main__ import main as build
from index_build.build_bm25 import add_arguments
from retriever.bm25.analyzer import SEGMENTERS, STEMMERS, STOPWORD_LISTS, Analyzer
from retriever.bm25.retriever import BM25Retriever
from retriever.store.docstore import DocStore

HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"
PASSAGES = 24


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def _action(flag: str) -> argparse.Action:
    return next(a for a in _parser()._actions if flag in a.option_strings)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[tuple[str, str]]]:
    """An index root of the first HotpotQA paragraphs, one passage each."""
    folder = tmp_path_factory.mktemp("options")
    seen: dict[str, str] = {}
    for line in HOTPOT.read_text(encoding="utf-8").splitlines():
        for title, sentences in json.loads(line)["context"]:
            seen.setdefault(title, "".join(sentences))
        if len(seen) >= PASSAGES:
            break
    docs = list(seen.items())[:PASSAGES]
    src = folder / "p.jsonl"
    src.write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in docs))
    root = folder / "index"
    argv = ["corpus", "--input", str(src), "--out", str(root), "--workers", "1", "--no-progress"]
    assert build(argv) == 0
    return root, docs


def test_help_offers_exactly_the_tested_values():
    assert tuple(_action("--stemmer").choices) == STEMMERS
    assert tuple(_action("--segmenter").choices) == SEGMENTERS
    help_text = _action("--stopwords").help
    for name in STOPWORD_LISTS:
        assert f"{name}" in help_text, name
    assert "@FILE" in help_text


def _build_and_search(corpus, flag: str, value: str) -> dict:
    root, docs = corpus
    name = f"bm25-{flag}-{value}"
    argv = ["bm25", "--index", str(root), "--name", name, f"--{flag}", value]
    assert build([*argv, "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((root / name / "manifest.json").read_text())
    retriever = BM25Retriever(root / name, threads=1)
    assert Analyzer.from_dict(manifest["analyzer"]) == retriever.analyzer
    store = DocStore.open(root)
    title, text = docs[5]
    hits = retriever.search([f"{title} {text[:120]}"], 3)[0]
    assert hits and store.get(hits[0].row).title == title
    return manifest["analyzer"]


@pytest.mark.parametrize("value", STEMMERS)
def test_every_stemmer_builds_and_searches(corpus, value):
    analyzer = _build_and_search(corpus, "stemmer", value)
    assert analyzer["stemmer"] == (None if value == "none" else value)


@pytest.mark.parametrize("value", STOPWORD_LISTS)
def test_every_stopword_list_builds_and_searches(corpus, value):
    analyzer = _build_and_search(corpus, "stopwords", value)
    want = {"none": 0, "lucene": 33, "english": 179}
    if value in want:
        assert len(analyzer["stopwords"]) == want[value]
    else:
        assert len(analyzer["stopwords"]) > 50
    assert len(set(analyzer["stopwords"])) == len(analyzer["stopwords"])


def test_stopword_file_and_unknown_list(corpus, tmp_path, capsys):
    words = tmp_path / "stop.txt"
    words.write_text("the\n\nof\n")
    assert _build_and_search(corpus, "stopwords", f"@{words}")["stopwords"] == ["the", "of"]
    root, _ = corpus
    argv = ["bm25", "--index", str(root), "--stopwords", "klingon", "--no-progress"]
    assert build(argv) != 0
    err = capsys.readouterr().err
    assert "'klingon'" in err and "english" in err


@pytest.mark.parametrize("value", SEGMENTERS)
def test_every_segmenter_builds_and_searches(corpus, value):
    assert _build_and_search(corpus, "segmenter", value)["segmenter"] == value


def test_stopword_lists_are_bm25s_lists():
    import bm25s.stopwords as lists

    names = {n.removeprefix("STOPWORDS_").lower() for n in dir(lists) if n.startswith("STOPWORDS_")}
    assert set(STOPWORD_LISTS) - {"lucene", "english", "none"} == names - {"en", "en_plus"}


# ---- corpus --chinese-script: queries are converted to the corpus's script -------------------
ZH = DATA / "zhwiki-sample-pages-articles.xml.bz2"


def _zh_root(tmp_path: Path, script: str) -> Path:
    root = tmp_path / script
    argv = ["corpus", "--input", str(ZH), "--out", str(root), "--chinese-script", script]
    assert build([*argv, "--workers", "1", "--no-progress"]) == 0
    return root


def _other_script_queries(root: Path, other: str) -> tuple[list[str], list[str]]:
    """Passage openings whose spelling in the other script differs, and those spellings."""
    import opencc

    to_other = opencc.OpenCC(other).convert
    queries = [p.text[:24] for p in DocStore.open(root).iter_passages()]
    queries = [q for q in queries if to_other(q) != q]
    assert len(queries) >= 5
    return queries, [to_other(q) for q in queries]


@pytest.mark.parametrize(("script", "other"), [("simplified", "s2t"), ("traditional", "t2s")])
def test_chinese_script_applies_to_queries(tmp_path, script, other):
    from retriever.index import Index

    root = _zh_root(tmp_path, script)
    assert build(["bm25", "--index", str(root), "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((root / "bm25" / "manifest.json").read_text())
    assert manifest["analyzer"]["script"] == script  # recorded with the index
    queries, others = _other_script_queries(root, other)
    for retriever in (BM25Retriever(root / "bm25", threads=1), Index.open(root).retriever()):
        same = retriever.search(queries, 5)
        assert all(same)
        assert retriever.search(others, 5) == same


@pytest.mark.slow
@pytest.mark.lucene
def test_chinese_script_applies_to_lucene_queries(tmp_path):
    from retriever.bm25.lucene import java_available
    from retriever.index import Index

    if java_available() is None:
        pytest.skip("Java 17 not found: the pyserini backend needs it")
    root = _zh_root(tmp_path, "simplified")
    argv = ["bm25", "--index", str(root), "--backend", "pyserini", "--segmenter", "standard"]
    assert build([*argv, "--threads", "1", "--no-progress"]) == 0
    manifest = json.loads((root / "bm25-lucene" / "manifest.json").read_text())
    assert manifest["analyzer"]["script"] == "simplified"
    queries, others = _other_script_queries(root, "s2t")
    lucene = Index.open(root).retriever("bm25-lucene")
    same = lucene.search(queries, 5)
    assert all(same)
    assert lucene.search(others, 5) == same


class _CharEncoder:
    """Hashed character vectors that remember the queries they were given."""

    def __init__(self):
        from retriever.dense.encoders import EncoderConfig

        self.config = EncoderConfig(model="fake-chars", pooling="mean", normalize=True)
        self.dim = 64
        self.queries: list[str] = []

    def encode_passages(self, texts):
        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for ch in text:
                out[i, ord(ch) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def encode_queries(self, texts):
        self.queries.extend(texts)
        return self.encode_passages(texts)


def test_chinese_script_applies_to_dense_queries(tmp_path):
    from index_build.encode import encode_corpus
    from retriever.index import Index

    root = _zh_root(tmp_path, "simplified")
    encoder = _CharEncoder()
    encode_corpus(root, "chars", encoder.config, encoder=encoder)
    queries, others = _other_script_queries(root, "s2t")
    dense = Index.open(root).retriever("dense-chars", encoder=encoder, backend="torch")
    same = dense.search(queries, 5)
    encoder.queries.clear()
    assert dense.search(others, 5) == same
    assert encoder.queries == queries  # the encoder saw them in the corpus's script
