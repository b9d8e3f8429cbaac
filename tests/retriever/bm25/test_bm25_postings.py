"""The spilling BM25 builder's parts against their references: compiled tokens against
``Analyzer.words`` (real passages and hostile text), the sequential row reader against
``DocStore.get``, the counting-sort runs against a stable argsort, and whole builds through the
Python tokenizer path against the in-memory ``score_matrix``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from index_build import bm25_postings as postings
from index_build.bm25_tokens import char_classes, chunk_tokens, compiled
from index_build.corpus import CorpusConfig, build_corpus
from retriever.bm25 import termmax
from retriever.bm25.analyzer import Analyzer
from retriever.bm25.formula import score_matrix
from retriever.store.docstore import DocStore

PARAMS = {"k1": 0.9, "b": 0.4, "method": "lucene"}

# Characters where a hand-written scanner could part from Python's regex: separators inside
# numbers and words, non-ASCII digits (Arabic-Indic, fullwidth) and numerics that are not \d
# (superscript one), letters that lowercase to two code points (U+0130) or by context (final
# sigma), combining marks, kana marks inside the CJK range that are not word characters, kana
# outside it, hangul, Thai, astral letters and emoji, a lone surrogate, NUL, underscores.
HOSTILE = (
    "aAzZ09_ .,'’-\n\t\u00a0\u0660\u0669\uff10\u00b9İΣσςßé\u0301ǅあア\u3099\u309b\u30fc東京"
    '한กि\u093f𝐀😀\ud800\x00\u2019\u2028:;!?"()'
)


def _reference_tokens(analyzer: Analyzer, texts: list[str]):
    raw: dict[str, int] = {}
    ids: list[int] = []
    lengths = []
    for text in texts:
        words = analyzer.words(text)
        lengths.append(len(words))
        ids.extend(raw.setdefault(w, len(raw)) for w in words)
    return list(raw), ids, lengths


def _assert_same_tokens(analyzer: Analyzer, texts: list[str]) -> None:
    tokens, ids, lengths = chunk_tokens(analyzer, texts)
    want_tokens, want_ids, want_lengths = _reference_tokens(analyzer, texts)
    assert tokens == want_tokens
    assert ids.tolist() == want_ids
    assert lengths.tolist() == want_lengths


@pytest.fixture(scope="module")
def store(hotpot_root) -> DocStore:
    return DocStore.open(hotpot_root / "corpus")


def test_compiled_tokens_equal_analyzer_words_on_real_passages(store):
    texts = [f"{p.title}\n{p.text}" for p in store.iter_passages()]
    for analyzer in (Analyzer(), Analyzer(lowercase=False)):
        assert compiled(analyzer)
        _assert_same_tokens(analyzer, texts)


def test_compiled_tokens_equal_analyzer_words_on_hostile_text():
    rng = np.random.default_rng(11)
    alphabet = np.array(list(HOSTILE))
    texts = ["", "1,000 3.14 u.s. o'neil don’t 1.5abc 12,34,56 a..b 1,,2 .5 5. x'"]
    texts += ["".join(rng.choice(alphabet, size=int(rng.integers(0, 80)))) for _ in range(3000)]
    # runs of one kind: long numbers and words, CJK and kana back to back
    texts += [
        "1.2.3.4,5,6",
        "ΟΔΟΣ ΟΔΟΣ.",
        "İSTANBUL'S",
        "東京タワー東",
        "\u3099\u309bあ",
        "_".join("ab"),
    ]
    # and without U+0130 (the one letter whose lowercase is longer): offsets stay put
    undotted = [t.replace("İ", "I") for t in texts]
    for analyzer in (Analyzer(), Analyzer(lowercase=False)):
        _assert_same_tokens(analyzer, texts)
        _assert_same_tokens(analyzer, undotted)
        for text in texts[:300]:  # one text at a time too (no neighbours in the joined string)
            _assert_same_tokens(analyzer, [text])
    assert chunk_tokens(Analyzer(), [])[0] == []


def test_newline_between_texts_is_never_part_of_a_token():
    table = char_classes()
    assert table[ord("\n")] == 0
    assert table[ord("7")] & 1 and table[ord("a")] & 2 and table[ord("東")] & 4


def test_other_languages_tokens_equal_analyzer_words(store):
    """German keeps the standard pattern (compiled); Chinese bigrams take the Python path."""
    texts = [f"{p.title}\n{p.text}" for p in store.iter_passages(0, 300)]
    texts += ["東京都に住む Die Katzen 1,000", "ภาษาไทย กข"]
    assert compiled(Analyzer.for_language("de")) and not compiled(Analyzer.for_language("zh"))
    for analyzer in (Analyzer.for_language("zh"), Analyzer.for_language("de")):
        _assert_same_tokens(analyzer, texts)


@pytest.mark.parametrize("block_bytes", [1, 700, 1 << 23])
def test_sequential_reader_equals_docstore_get(store, block_bytes):
    for lo, hi in ((0, len(store)), (17, 18), (1000, 2345), (len(store) - 3, len(store))):
        got = list(postings.read_rows(store, lo, hi, block_bytes))
        assert got == [(p.title, p.text) for p in store.iter_passages(lo, hi)]


def test_sequential_reader_skips_lines_the_store_skipped(tmp_path):
    """An in-place user file with malformed lines: a row's byte slice runs on over them."""
    rows = [
        {"id": "0", "contents": '"T"\n  body  '},
        {"id": "1", "contents": '"T"\nsecond part of T'},
        '{"id": "x", "contents": ',
        "",
        {"id": "2", "contents": '"iPhone"\nA phone.'},
        {"id": "9"},
        {"id": "4", "contents": "Body only", "wikipedia_title": "Given", "url": "https://x.org/G"},
    ]
    src = tmp_path / "bad.jsonl"
    src.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    build_corpus([src], tmp_path / "r", CorpusConfig(in_place="yes", on_error="skip"))
    s = DocStore.open(tmp_path / "r")
    for block_bytes in (1, 40, 1 << 20):
        got = list(postings.read_rows(s, 0, len(s), block_bytes))
        assert got == [(p.title, p.text) for p in s.iter_passages()]
    assert got[1] == ("T", "second part of T")


def test_runs_place_postings_as_a_stable_sort(tmp_path, monkeypatch):
    """Chunks sorted by their own terms, spilled in small runs and read back in term ranges:
    every range equals a stable argsort by term of all postings in row order."""
    monkeypatch.setattr(postings, "RUN_POSTINGS", 500)
    rng = np.random.default_rng(5)
    runs = postings._Runs(tmp_path / "spill")
    vocab = 0
    all_docs, all_terms, all_tf = [], [], []
    row = 0
    for _ in range(40):
        n_docs = int(rng.integers(1, 30))
        new_terms = int(rng.integers(0, 20))
        vocab += new_terms
        if vocab == 0:
            continue
        triples = {(d, int(t)) for d in range(n_docs) for t in rng.integers(0, vocab, 8)}
        docs = np.array([d for d, _ in triples]) + row
        terms = np.array([t for _, t in triples])
        tf = rng.integers(1, 5, len(docs))
        order = np.lexsort((docs, terms))  # the worker's order: by term, rows ascending
        docs, terms, tf = docs[order], terms[order], tf[order]
        uniq, counts = np.unique(terms, return_counts=True)
        # the chunk's term ids are global ids in any order; groups follow that order
        perm = rng.permutation(len(uniq))
        starts = np.cumsum(counts) - counts
        pieces = [np.arange(starts[i], starts[i] + counts[i]) for i in perm]
        idx = np.concatenate(pieces)
        runs.add(
            uniq[perm], counts[perm], docs[idx].astype(np.int32), tf[idx].astype(np.int32), vocab
        )
        all_docs.append(docs)
        all_terms.append(terms)
        all_tf.append(tf)
        row += n_docs
    runs.flush(vocab)
    assert runs.count > 3
    docs, terms, tf = (np.concatenate(a) for a in (all_docs, all_terms, all_tf))
    row_order = np.argsort(docs, kind="stable")
    docs, terms, tf = docs[row_order], terms[row_order], tf[row_order]
    order = np.argsort(terms, kind="stable")
    df = np.bincount(terms, minlength=vocab)
    ptr = np.concatenate([[0], np.cumsum(df)])
    for t_lo, t_hi in ((0, vocab), (0, 1), (3, 17), (vocab - 5, vocab)):
        got_docs, got_tf = runs.read_range(t_lo, t_hi, df[t_lo:t_hi])
        want = order[ptr[t_lo] : ptr[t_hi]]
        np.testing.assert_array_equal(got_docs, docs[want])
        np.testing.assert_array_equal(got_tf, tf[want])


def _reference(store: DocStore, analyzer: Analyzer, vocab: dict[str, int]):
    """The in-memory matrix of the analyzer's terms; checks the vocabulary is in first-seen
    order (what makes the bytes independent of chunking)."""
    per_passage = [analyzer.terms(f"{p.title}\n{p.text}") for p in store.iter_passages()]
    assert list(vocab) == list(dict.fromkeys(t for ts in per_passage for t in ts))
    lengths, docs, terms, tf = [], [], [], []
    for row, ts in enumerate(per_passage):
        lengths.append(len(ts))
        ids, counts = np.unique([vocab[t] for t in ts], return_counts=True)
        docs.extend([row] * len(ids))
        terms.extend(ids.tolist())
        tf.extend(counts.tolist())
    return score_matrix(
        np.asarray(lengths, np.int32),
        np.asarray(docs, np.int32),
        np.asarray(terms, np.int32),
        np.asarray(tf, np.int32),
        len(vocab),
        PARAMS["k1"],
        PARAMS["b"],
    )


@pytest.mark.parametrize(
    "analyzer,workers",
    [(Analyzer(), 2), (Analyzer.for_language("zh"), 1), (Analyzer(stemmer=None, stopwords=()), 1)],
    ids=["default-compiled", "bigram-python", "plain-compiled"],
)
def test_build_equals_in_memory_reference(store, tmp_path, monkeypatch, analyzer, workers):
    monkeypatch.setattr(postings, "CHUNK_ROWS", 97)  # several chunks per run
    monkeypatch.setattr(postings, "RUN_POSTINGS", 20_000)
    monkeypatch.setattr(postings, "MERGE_POSTINGS", 3_000)
    monkeypatch.setattr(postings, "READ_BYTES", 5_000)
    folder = tmp_path / "bm25"
    folder.mkdir()
    postings.build_postings(store, folder, analyzer, PARAMS, workers)
    assert not (folder / "spill").exists()
    vocab = json.loads((folder / "vocab.index.json").read_text())
    data, ind, ptr, _ = _reference(store, analyzer, vocab)
    np.testing.assert_array_equal(np.load(folder / "indptr.csc.index.npy"), ptr)
    np.testing.assert_array_equal(np.load(folder / "indices.csc.index.npy"), ind)
    np.testing.assert_array_equal(np.load(folder / "data.csc.index.npy"), data)
    np.testing.assert_array_equal(np.load(folder / termmax.FILE), termmax.term_maxima(data, ptr))
    assert not list(folder.glob("blocks.*"))  # only a removed kernel read them
    shutil.rmtree(folder)
