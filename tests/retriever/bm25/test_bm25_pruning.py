"""Dynamic pruning (block-max pruning over row ranges) against the exhaustive kernel, and the
spilling build against the in-memory reference: same rows, same float32 scores, ties by row."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA

from retriever.bm25 import bmp, exhaustive, rowmax, termmax
from retriever.bm25.analyzer import Analyzer
from retriever.bm25.formula import score_matrix
from retriever.bm25.retriever import KERNELS, BM25Retriever
from retriever.errors import IndexFormatError
from retriever.files import file_table
from retriever.manifest import read_manifest, write_manifest

HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"


def _build(root: Path, *extra: str) -> None:
    from index_build.__main__ import main

    assert main(["bm25", "--index", str(root), "--no-progress", *extra]) == 0


@pytest.fixture(scope="module")
def root(hotpot_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pruning") / "index"
    shutil.copytree(hotpot_root / "corpus", root / "corpus")
    _build(root, "--workers", "1")
    return root


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()]


def _random_matrix(rng: np.random.Generator, num_docs: int, vocab: int, levels: int):
    """A CSC score matrix with columns from 1 posting to most documents; scores from
    ``levels`` distinct values (few levels: many ties), or continuous when ``levels`` is 0."""
    cols, ptr = [], [0]
    for _ in range(vocab):
        df = int(min(num_docs, max(1, rng.pareto(0.7) * 3)))
        cols.append(np.sort(rng.choice(num_docs, size=df, replace=False)).astype(np.int32))
        ptr.append(ptr[-1] + df)
    indices = np.concatenate(cols)
    if levels:
        data = (rng.integers(1, levels + 1, size=len(indices)) / 4).astype(np.float32)
    else:
        data = rng.gamma(2.0, 1.0, size=len(indices)).astype(np.float32)
    return data, indices, np.asarray(ptr, dtype=np.int64)


def _queries(rng: np.random.Generator, vocab: int, n: int):
    qptr, tids, tw = [0], [], []
    for _ in range(n):
        terms = rng.choice(vocab, size=int(rng.integers(1, 9)), replace=False)
        tids.extend(terms.tolist())
        tw.extend(rng.integers(1, 4, size=len(terms)).tolist())
        qptr.append(len(tids))
    return (
        np.asarray(qptr, np.int64),
        np.asarray(tids, np.int32),
        np.asarray(tw, np.float32),
    )


@pytest.mark.parametrize("seed", range(8))
def test_bmp_kernel_equals_exhaustive_on_random_matrices(seed):
    """Row-range pruning: same rows and float32 scores, ties by row, for ranges of 1 to 64 rows,
    every term rare, every term precomputed or a mix, ``first`` from 1 to past the ranges, k
    past the corpus, serial and parallel; the scratch is left zeroed."""
    rng = np.random.default_rng(200 + seed)
    num_docs = int(rng.integers(1, 5000)) if seed else 1
    data, indices, indptr = _random_matrix(rng, num_docs, 40, levels=[3, 8, 0, 1][seed % 4])
    qptr, tids, tw = _queries(rng, 40, 60)
    tmax = termmax.term_maxima(data, indptr)
    acc = np.zeros(num_docs, np.float32)
    seen = np.zeros(num_docs, np.bool_)
    for shift in (0, 1, 4, 6):
        for min_df in (1, 30, num_docs + 1):  # all terms precomputed, a mix, none
            slot, qmax = rowmax.compute(data, indices, indptr, tmax, num_docs, shift, min_df)
            for k, first in ((1, 1), (3, 16), (10, 2), (33, 1000), (num_docs + 3, 16)):
                want = exhaustive.search_serial(qptr, tids, tw, data, indices, indptr, k, acc, seen)
                args = (qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, shift, k, first)
                # fallback 0: never exhaustive; 1: when more ranges than postings are left;
                # 10**6: whenever a range is left after the first ones
                got = [bmp.search_serial(*args, fb, acc, seen) for fb in (0, 1, 10**6)]
                got.append(bmp.search_parallel(*args, 0, np.zeros((3, num_docs), np.float32),
                                               np.zeros((3, num_docs), np.bool_)))  # fmt: skip
                assert not acc.any() and not seen.any()
                for g in got:
                    for w, x in zip(want, g):
                        np.testing.assert_array_equal(
                            x, w, err_msg=f"shift {shift}, min_df {min_df}, k {k}"
                        )


def test_range_maxima_bound_every_score():
    """Each byte, scaled by the term's maximum, is at least every score of its range."""
    rng = np.random.default_rng(5)
    data, indices, indptr = _random_matrix(rng, 3000, 60, levels=0)
    tmax = termmax.term_maxima(data, indptr)
    slot, qmax = rowmax.compute(data, indices, indptr, tmax, 3000, 3, 20)
    dense = np.flatnonzero(slot >= 0)
    assert 0 < len(dense) < 60
    for t in dense:
        rows = indices[indptr[t] : indptr[t + 1]]
        bound = np.float64(tmax[t]) * qmax[slot[t]].astype(np.float64) / 255
        assert (bound[rows >> 3] >= data[indptr[t] : indptr[t + 1]]).all()
        present = np.zeros(qmax.shape[1], bool)
        present[rows >> 3] = True
        assert ((qmax[slot[t]] > 0) == present).all()  # 0 exactly where the term is absent


def test_bmp_kernel_edge_cases():
    """Empty queries, a term without postings, all scores tied across ranges."""
    data = np.ones(6, np.float32)
    indices = np.array([0, 1, 2, 3, 4, 5], np.int32)
    indptr = np.array([0, 0, 1, 6], np.int64)
    tmax = termmax.term_maxima(data, indptr)
    qptr = np.array([0, 0, 1, 3, 4], np.int64)
    tids = np.array([0, 0, 1, 2], np.int32)
    tw = np.ones(4, np.float32)
    acc, seen = np.zeros(6, np.float32), np.zeros(6, np.bool_)
    want = exhaustive.search_serial(qptr, tids, tw, data, indices, indptr, 3, acc, seen)
    assert want[0].tolist() == [[-1, -1, -1], [-1, -1, -1], [0, -1, -1], [1, 2, 3]]
    for min_df in (0, 2):
        slot, qmax = rowmax.compute(data, indices, indptr, tmax, 6, 1, min_df)
        got = bmp.search_serial(
            qptr, tids, tw, data, indices, indptr, tmax, slot, qmax, 1, 3, 1, 0, acc, seen
        )
        for w, g in zip(want, got):
            np.testing.assert_array_equal(g, w)


@pytest.mark.slow
def test_pruned_equals_exhaustive_on_the_real_index(root, questions):
    ref = BM25Retriever(root / "bm25", threads=1, pruning=False)
    default = BM25Retriever(root / "bm25", threads=2)
    assert (default.method, ref.method) == ("bmp", "exhaustive")
    # questions, plus random mixes of frequent and rare vocabulary terms
    vocab = list(json.loads((root / "bm25" / "vocab.index.json").read_text()))
    rng = np.random.default_rng(7)
    mixes = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 12)))) for _ in range(300)]
    texts = questions + mixes + ["film", "the film", "born american film director"]
    for k in (1, 3, 5, 10, 40, 1000):
        want = ref.search(texts, k)
        assert default.search(texts, k) == want  # parallel batch
        assert [default.search([t], k)[0] for t in texts[::25]] == want[::25]  # one by one


def test_ranges_verb_upgrades_an_older_index(root, questions, tmp_path, caplog):
    """A part built before row ranges: searched exhaustively with a hint; ``index_build
    ranges`` adds them (manifest and verify's file table too), then the default prunes."""
    from index_build.__main__ import main

    old = tmp_path / "index"
    shutil.copytree(root / "bm25", old / "bm25")
    for name in rowmax.FILES:
        (old / "bm25" / name).unlink()
    manifest = read_manifest(old / "bm25")
    del manifest["postings"]["row_ranges"]
    manifest["files"] = file_table(old / "bm25")
    write_manifest(old / "bm25", manifest)
    with caplog.at_level(logging.WARNING, logger="retriever.bm25.retriever"):
        before = BM25Retriever(old / "bm25", threads=1)
    assert before.method == "exhaustive" and "index_build ranges" in caplog.text
    with pytest.raises(IndexFormatError, match="bmp"):
        BM25Retriever(old / "bm25", pruning="bmp")
    assert main(["ranges", "--index", str(old), "--no-progress"]) == 0
    after = BM25Retriever(old / "bm25", threads=1)
    assert after.method == "bmp"
    assert after.search(questions, 10) == before.search(questions, 10)
    upgraded = read_manifest(old / "bm25")
    assert upgraded["files"] == file_table(old / "bm25")
    assert upgraded["postings"] == read_manifest(root / "bm25")["postings"]  # as built


def test_spilled_build_equals_in_memory_reference(root, monkeypatch, tmp_path):
    """Many runs and merge ranges: the same matrix as ``score_matrix`` over all triples, and
    the term maxima of that matrix; no per-block arrays (only a removed kernel read them)."""
    import index_build.bm25_postings as postings
    from retriever.store.docstore import DocStore

    monkeypatch.setattr(postings, "CHUNK_ROWS", 700)
    monkeypatch.setattr(postings, "RUN_POSTINGS", 9_000)
    monkeypatch.setattr(postings, "MERGE_POSTINGS", 4_000)
    other = tmp_path / "index"
    shutil.copytree(root / "corpus", other / "corpus")
    _build(other, "--workers", "1")
    folder = other / "bm25"
    store = DocStore.open(other / "corpus")
    analyzer = Analyzer()
    vocab = json.loads((folder / "vocab.index.json").read_text())
    lengths, docs, terms, tf = [], [], [], []
    for row in range(len(store)):
        p = store.get(row)
        ts = analyzer.terms(f"{p.title}\n{p.text}")
        lengths.append(len(ts))
        ids, counts = np.unique([vocab[t] for t in ts], return_counts=True)
        docs.extend([row] * len(ids))
        terms.extend(ids.tolist())
        tf.extend(counts.tolist())
    data, ind, ptr, _ = score_matrix(
        np.asarray(lengths, np.int32),
        np.asarray(docs, np.int32),
        np.asarray(terms, np.int32),
        np.asarray(tf, np.int32),
        len(vocab),
        0.9,
        0.4,
    )
    np.testing.assert_array_equal(np.load(folder / "indptr.csc.index.npy"), ptr)
    np.testing.assert_array_equal(np.load(folder / "indices.csc.index.npy"), ind)
    np.testing.assert_array_equal(np.load(folder / "data.csc.index.npy"), data)
    tmax = termmax.term_maxima(data, ptr)
    np.testing.assert_array_equal(np.load(folder / termmax.FILE), tmax)
    assert not list(folder.glob("blocks.*"))
    postings = read_manifest(folder)["postings"]
    assert postings["layout"] == "csc+termmax" and "block_size" not in postings
    slot, qmax = rowmax.compute(data, ind, ptr, tmax, len(store))
    np.testing.assert_array_equal(np.load(folder / rowmax.FILES[0]), slot)
    np.testing.assert_array_equal(np.load(folder / rowmax.FILES[1]), qmax)
    assert postings["row_ranges"]["dense_terms"] == len(qmax)


def test_index_without_term_maxima_still_opens(root, questions, tmp_path, caplog):
    """An index from before term maxima: searched exhaustively, same hits, a hint to rebuild."""
    old = tmp_path / "bm25"
    shutil.copytree(root / "bm25", old)
    (old / termmax.FILE).unlink()
    manifest = read_manifest(old)
    del manifest["postings"]
    write_manifest(old, manifest)
    with caplog.at_level(logging.WARNING, logger="retriever.bm25.retriever"):
        r = BM25Retriever(old, threads=1, pruning=True)
    assert not r.pruning
    assert "rebuild" in caplog.text
    assert r.search(questions[:50], 10) == BM25Retriever(root / "bm25").search(questions[:50], 10)


def test_missing_term_maxima_are_refused(root, tmp_path):
    broken = tmp_path / "bm25"
    shutil.copytree(root / "bm25", broken)
    (broken / termmax.FILE).unlink()
    with pytest.raises(IndexFormatError, match=r"terms\.max\.npy"):
        BM25Retriever(broken, pruning=True)


def test_kernels_are_bmp_and_the_exhaustive_reference(root):
    """``pruning`` picks a kernel of ``KERNELS``; the removed ``daat`` is refused by name."""
    assert set(KERNELS) == {"bmp", "exhaustive", "bmp-compact", "exhaustive-compact"}
    assert all(map(callable, KERNELS.values()))
    for pruning, method in ((True, "bmp"), ("bmp", "bmp"), (False, "exhaustive")):
        assert BM25Retriever(root / "bm25", warmup=False, pruning=pruning).method == method
    assert BM25Retriever(root / "bm25", warmup=False, pruning="exhaustive").method == "exhaustive"
    with pytest.raises(ValueError, match="'daat'.*'bmp', 'exhaustive', 'bmp-compact'"):
        BM25Retriever(root / "bm25", warmup=False, pruning="daat")


def test_part_with_old_block_arrays_opens_and_verifies(root, questions, tmp_path):
    """A part built when per-block arrays were written (layout ``csc+blockmax``, ``blocks.*``
    in its file table): it opens and prunes as before (the arrays are ignored), ``verify``
    passes on it and ``ranges`` upgrades it."""
    from index_build.__main__ import main

    old = tmp_path / "index"
    shutil.copytree(root / "corpus", old / "corpus")
    shutil.copytree(root / "bm25", old / "bm25")
    folder = old / "bm25"
    indptr = np.load(folder / "indptr.csc.index.npy")
    bptr = np.zeros(len(indptr), np.int64)
    np.cumsum((np.diff(indptr) + 127) // 128, out=bptr[1:])
    np.save(folder / "blocks.ptr.npy", bptr)
    np.save(folder / "blocks.max.npy", np.ones(bptr[-1], np.float32))
    np.save(folder / "blocks.last.npy", np.zeros(bptr[-1], np.int32))
    manifest = read_manifest(folder)
    manifest["postings"].update(layout="csc+blockmax", block_size=128)
    manifest["files"] = file_table(folder)
    write_manifest(folder, manifest)
    r = BM25Retriever(folder, threads=1)
    assert r.method == "bmp"
    assert r.search(questions, 10) == BM25Retriever(root / "bm25").search(questions, 10)
    assert main(["verify", "--index", str(old), "--no-progress"]) == 0
    assert main(["ranges", "--index", str(old), "--no-progress"]) == 0
    assert BM25Retriever(folder, threads=1).search(questions, 10) == r.search(questions, 10)
