"""The compact posting layout (``retriever.bm25.compact``) against the float layout: the same
rows and bit-identical float32 scores from its kernels, on random matrices and the real index."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import DATA

from retriever.bm25 import bmp, compact, compact_kernels, exhaustive, rowmax, termmax
from retriever.bm25.formula import idf, posting_scores
from retriever.bm25.retriever import BM25Retriever
from retriever.errors import CorruptStoreError, IndexFormatError
from retriever.manifest import read_manifest

HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"


def _random_postings(rng: np.random.Generator, num_docs: int, vocab: int):
    """(docs, tf, indptr, lengths): columns from 1 posting to every document, with gaps from 0
    to the whole corpus and term frequencies past uint8 and uint16."""
    cols, tfs, ptr = [], [], [0]
    for t in range(vocab):
        df = int(min(num_docs, max(1, rng.pareto(0.6) * 3)))
        if t == 0:
            df = num_docs  # every row: gaps of 0
        cols.append(np.sort(rng.choice(num_docs, size=df, replace=False)).astype(np.int32))
        tf = rng.integers(1, 4, size=df)
        tf[rng.random(df) < 0.05] = 300
        tf[rng.random(df) < 0.01] = 70_000
        tfs.append(tf.astype(np.int32))
        ptr.append(ptr[-1] + df)
    lengths = rng.integers(1, 400, size=num_docs).astype(np.int32)
    return np.concatenate(cols), np.concatenate(tfs), np.asarray(ptr, np.int64), lengths


def _float_matrix(docs, tf, indptr, lengths, params):
    """The float layout's scores of the same postings (``formula``, as the build writes them)."""
    n = len(lengths)
    df = np.diff(indptr)
    term_idf = idf(df, n, params["method"])
    avgdl = float(lengths.mean())
    data = posting_scores(
        tf, lengths[docs], np.repeat(term_idf, df), avgdl, params["k1"], params["b"],
        params["method"],
    )  # fmt: skip
    return data, term_idf, avgdl


def _queries(rng: np.random.Generator, vocab: int, n: int):
    qptr, tids, tw = [0], [], []
    for _ in range(n):
        terms = rng.choice(vocab, size=int(rng.integers(1, 9)), replace=False)
        tids.extend(terms.tolist())
        tw.extend(rng.integers(1, 4, size=len(terms)).tolist())
        qptr.append(len(tids))
    return np.asarray(qptr, np.int64), np.asarray(tids, np.int32), np.asarray(tw, np.float32)


def test_encode_decode_round_trip():
    """Every block decodes to its rows and term frequencies, for widths 0 to 32."""
    rng = np.random.default_rng(1)
    docs = np.concatenate([np.arange(300), np.int32([0, 2**31 - 2]), np.int32([5])])
    tf = np.concatenate([rng.integers(1, 2**31 - 1, 300), np.int32([1, 1, 2**31 - 1])])
    indptr = np.int64([0, 300, 302, 303])
    c = compact.from_postings(docs.astype(np.int32), tf.astype(np.int32), indptr,
                              np.ones(1, np.int32), np.ones(3, np.float32),
                              {"k1": 0.9, "b": 0.4, "method": "lucene"}, 1.0)  # fmt: skip
    assert c.bits[:, 0].tolist() == [0, 0, 0, 31, 0]
    rows, got = np.zeros(compact.BLOCK, np.int32), np.zeros(compact.BLOCK, np.int32)
    for t in range(3):
        for b in range(c.bptr[t], c.bptr[t + 1]):
            lo = indptr[t] + (b - c.bptr[t]) * compact.BLOCK
            n = min(compact.BLOCK, indptr[t + 1] - lo)
            compact.decode(c.words, c.first, c.offset, c.bits, b, n, rows, got)
            assert rows[:n].tolist() == docs[lo : lo + n].tolist()
            assert got[:n].tolist() == tf[lo : lo + n].tolist()


@pytest.mark.parametrize("seed", range(6))
def test_compact_kernels_equal_float_kernels(seed):
    """exhaustive-compact and bmp-compact give the float kernels' rows and bit-identical
    scores, for k from 1 to past the corpus, every BM25 variant, serial and parallel."""
    rng = np.random.default_rng(300 + seed)
    num_docs = int(rng.integers(1, 3000)) if seed else 1
    params = {"k1": [0.9, 1.2, 1.5][seed % 3], "b": [0.4, 0.75, 0.0][seed % 3],
              "method": ["lucene", "robertson", "atire"][seed % 3]}  # fmt: skip
    docs, tf, indptr, lengths = _random_postings(rng, num_docs, 50)
    data, term_idf, avgdl = _float_matrix(docs, tf, indptr, lengths, params)
    c = compact.from_postings(docs, tf, indptr, lengths, term_idf, params, avgdl)
    qptr, tids, tw = _queries(rng, 50, 60)
    tmax = termmax.term_maxima(data, indptr)
    acc = np.zeros(num_docs, np.float32)
    seen = np.zeros(num_docs, np.bool_)
    acc2 = np.zeros((3, num_docs), np.float32)
    seen2 = np.zeros((3, num_docs), np.bool_)
    no_gaps = (np.zeros(1, np.int64), np.zeros(0, np.uint8))
    v1 = (np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.uint8), *no_gaps)  # none
    for k in (1, 3, 10, 100, 1000, num_docs + 3):
        want = exhaustive.search_serial(qptr, tids, tw, data, docs, indptr, k, acc, seen)
        got = [
            compact_kernels.exhaustive_serial(qptr, tids, tw, *c, k, acc, seen),
            compact_kernels.exhaustive_parallel(qptr, tids, tw, *c, k, acc2, seen2),
        ]
        for shift, min_df in ((3, 30), (0, 1), (2, num_docs + 1)):
            slot, qmax = rowmax.compute(data, docs, indptr, tmax, num_docs, shift, min_df)
            r = (tmax, slot, qmax, shift, k)
            ref = bmp.search_serial(qptr, tids, tw, data, docs, indptr, *r, 16, 64, acc, seen)
            for w, g in zip(want, ref):
                np.testing.assert_array_equal(g, w)
            r = (tmax, slot, qmax, shift)
            # every term without dense bytes, past df 5, past df 5 as compact-v2 (rows
            # decoded, no gap bytes), none
            for sparse_df, v2 in ((0, False), (5, False), (5, True), (None, False)):
                sp = v1 if sparse_df is None else _sparse(data, docs, indptr, tmax, slot, shift,
                                                          sparse_df)  # fmt: skip
                sp = (*sp[:3], *no_gaps) if v2 else sp
                for first, fb in ((16, 64), (1, 0), (1000, 10**6)):
                    got.append(compact_kernels.bmp_serial(qptr, tids, tw, *c, *r, *sp, k,
                                                          first, fb, acc, seen))  # fmt: skip
            got.append(compact_kernels.bmp_parallel(qptr, tids, tw, *c, *r, *sp, k, 16, 64,
                                                    acc2, seen2))  # fmt: skip
        assert not acc.any() and not seen.any() and not acc2.any() and not seen2.any()
        for i, g in enumerate(got):
            for w, x in zip(want, g):
                np.testing.assert_array_equal(x, w, err_msg=f"k {k}, result {i}")


def _sparse(data, docs, indptr, tmax, slot, shift, min_df):
    """(terms, ptr, bytes, gap ptr, gap bytes): sparse range bytes and their gaps of the terms
    without dense ones past ``min_df``."""
    terms = np.flatnonzero((slot < 0) & (np.diff(indptr) > min_df))
    counts, q = compact.sparse_maxima(data, docs, indptr, tmax, terms, shift)
    gcounts, gaps = compact.sparse_gaps(docs, indptr, terms, shift)
    ptr, gptr = (np.concatenate([[0], np.cumsum(c)]).astype(np.int64) for c in (counts, gcounts))
    return terms.astype(np.int32), ptr, q, gptr, gaps


def test_sparse_range_bytes_are_the_dense_bytes_of_the_ranges_a_term_occurs_in():
    """A term's sparse bytes are exactly the non-zero bytes of its dense row (``rowmax``), so
    each bounds every posting of its range and the bounds equal those of a dense row."""
    rng = np.random.default_rng(7)
    params = {"k1": 0.9, "b": 0.4, "method": "lucene"}
    docs, tf, indptr, lengths = _random_postings(rng, 2000, 80)
    data, _, _ = _float_matrix(docs, tf, indptr, lengths, params)
    tmax = termmax.term_maxima(data, indptr)
    for shift in (0, 3, 5):
        slot, dense = rowmax.compute(data, docs, indptr, tmax, 2000, shift, min_df=1)
        none = np.full_like(slot, -1)
        terms, ptr, q, gptr, gaps = _sparse(data, docs, indptr, tmax, none, shift, 1)
        assert len(terms) == (slot >= 0).sum() > 10
        for s, t in enumerate(terms):
            row = dense[slot[t]]
            assert q[ptr[s] : ptr[s + 1]].tolist() == row[row > 0].tolist(), (shift, t)
            g = gaps[gptr[s] : gptr[s + 1]].astype(np.int64)  # the ranges, from the gap bytes
            at = np.cumsum(np.where(g == 0, compact.SKIP, g)) - 1
            assert at[g > 0].tolist() == np.flatnonzero(row).tolist(), (shift, t)
            for p in range(indptr[t], indptr[t + 1]):  # each posting under its range's byte
                j = np.count_nonzero(row[: docs[p] >> shift])
                bound = np.float32(np.float64(tmax[t]) / 255.0) * np.float32(q[ptr[s] + j])
                assert np.float64(bound) * (1 + 5e-6) >= data[p]


@pytest.fixture(scope="module")
def roots(hotpot_root, tmp_path_factory):
    """The HotpotQA corpus built in both formats (the compact one through the CLI flag)."""
    from index_build.__main__ import main

    out = {}
    for fmt in ("float", "compact"):
        root = tmp_path_factory.mktemp(fmt) / "index"
        shutil.copytree(hotpot_root / "corpus", root / "corpus")
        argv = ["bm25", "--index", str(root), "--no-progress", "--workers", "1", "--format", fmt]
        assert main(argv) == 0
        out[fmt] = root
    return out


def test_compact_index_equals_float_index_on_hotpotqa(roots):
    """Built with ``--format compact``: the same hits and bit-identical scores as the float
    part, pruned and exhaustive, batched and one by one; smaller; the same term maxima, range
    bytes only for the terms in more than half of the ranges."""
    floats, comp = roots["float"] / "bm25", roots["compact"] / "bm25"
    manifest = read_manifest(comp)
    assert manifest["postings"]["layout"] == compact.LAYOUT == "compact-v3"
    for name in (termmax.FILE, "vocab.hash.npy", "indptr.csc.index.npy"):
        assert (comp / name).read_bytes() == (floats / name).read_bytes(), name
    ranges = manifest["postings"]["row_ranges"]
    num_docs = manifest["num_docs"]
    assert ranges["min_df"] == compact.dense_min_df(num_docs, ranges["shift"])
    df = np.diff(np.load(comp / "indptr.csc.index.npy"))
    assert ranges["dense_terms"] == (df > ranges["min_df"]).sum()
    assert (
        0 < ranges["dense_terms"] < read_manifest(floats)["postings"]["row_ranges"]["dense_terms"]
    )
    assert np.load(comp / "postings.offset.npy").dtype == np.uint32
    assert np.load(comp / "docs.len.npy").dtype == np.uint16
    assert not (comp / "data.csc.index.npy").exists() and not (comp / "vocab.index.json").exists()
    # the postings (rows and scores / blocks, lengths and idf): at this tiny scale one block of
    # skip data per term weighs most; at 666k passages the ratio is BENCHMARKS.md's
    posting_bytes = sum((comp / f).stat().st_size for f in compact.FILES[1:])
    float_bytes = sum((floats / f).stat().st_size for f in ("data.csc.index.npy",
                                                             "indices.csc.index.npy"))  # fmt: skip
    assert posting_bytes < 0.7 * float_bytes
    questions = [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()]
    vocab = list(json.loads((floats / "vocab.index.json").read_text()))
    rng = np.random.default_rng(11)
    texts = questions[:200] + [" ".join(rng.choice(vocab, 6)) for _ in range(100)] + ["film"]
    ref = BM25Retriever(floats, threads=1, pruning=False)
    pruned = BM25Retriever(comp, threads=2)
    full = BM25Retriever(comp, threads=1, pruning=False)
    assert (pruned.method, full.method) == ("bmp-compact", "exhaustive-compact")
    assert BM25Retriever(comp, warmup=False, pruning="bmp").method == "bmp-compact"
    for k in (1, 3, 10, 100, 1000):
        want = ref.search(texts, k)
        assert pruned.search(texts, k) == want, k  # parallel batch
        assert full.search(texts, k) == want, k
        assert [pruned.search([t], k)[0] for t in texts[::20]] == want[::20]


def test_queries_of_mid_frequency_terms_only(roots):
    """Queries whose every term is bounded by its sparse range bytes (df between the
    scored-bound cut and the dense one): bmp-compact gives the exhaustive float rows and
    scores."""
    floats, comp = roots["float"] / "bm25", roots["compact"] / "bm25"
    ranges = read_manifest(comp)["postings"]["row_ranges"]
    df = np.diff(np.load(comp / "indptr.csc.index.npy"))
    sparse = np.load(comp / compact.SPARSE[0])
    mid = (df > ranges["sparse_min_df"]) & (df <= ranges["min_df"])
    assert sparse.tolist() == np.flatnonzero(mid).tolist() and len(sparse) >= 20
    vocab = json.loads((floats / "vocab.index.json").read_text())
    words = sorted(t for t, i in vocab.items() if mid[i])
    rng = np.random.default_rng(5)
    texts = [" ".join(rng.choice(words, int(rng.integers(1, 5)), replace=False))
             for _ in range(150)]  # fmt: skip
    ref = BM25Retriever(floats, threads=1, pruning=False)
    pruned = BM25Retriever(comp, threads=1)
    for k in (1, 3, 10, 100):
        assert pruned.search(texts, k) == ref.search(texts, k), k


def test_a_compact_v1_part_still_opens(roots, tmp_path):
    """A compact-v1 part (int64 pointers, uint32 lengths, dense range bytes past df R/16, no
    sparse ones, bm25s's vocabulary file) opens as it is and answers as the float part."""
    floats, part = roots["float"] / "bm25", tmp_path / "bm25"
    shutil.copytree(roots["compact"] / "bm25", part)
    for name in compact.SPARSE:
        (part / name).unlink()
    for name, dtype in (("postings.bptr.npy", np.int64), ("postings.offset.npy", np.int64),
                        ("docs.len.npy", np.uint32)):  # fmt: skip
        np.save(part / name, np.load(part / name).astype(dtype))
    for name in (*rowmax.FILES, "vocab.index.json"):
        shutil.copy(floats / name, part / name)
    manifest = read_manifest(part)
    manifest["postings"]["layout"] = "compact-v1"
    manifest["postings"]["row_ranges"] = read_manifest(floats)["postings"]["row_ranges"]
    manifest["files"] = {f.name: {"bytes": f.stat().st_size} for f in part.glob("*.npy")}
    (part / "manifest.json").write_text(json.dumps(manifest))
    questions = [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()]
    old = BM25Retriever(part, threads=1)
    assert old.method == "bmp-compact" and len(old._sparse[0]) == 0
    ref = BM25Retriever(floats, threads=1, pruning=False)
    for k in (1, 10):
        assert old.search(questions[:100], k) == ref.search(questions[:100], k)


def test_a_compact_v2_part_still_opens(roots, tmp_path):
    """A compact-v2 part (no gap bytes: its mid-frequency terms' rows are decoded for their
    bounds) opens as it is and answers as the float part."""
    floats, part = roots["float"] / "bm25", tmp_path / "bm25"
    shutil.copytree(roots["compact"] / "bm25", part)
    for name in compact.GAPS:
        (part / name).unlink()
    manifest = read_manifest(part)
    manifest["postings"]["layout"] = "compact-v2"
    manifest["files"] = {f.name: {"bytes": f.stat().st_size} for f in part.glob("*.npy")}
    (part / "manifest.json").write_text(json.dumps(manifest))
    questions = [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()]
    old = BM25Retriever(part, threads=1)
    assert old.method == "bmp-compact" and len(old._sparse[0]) > 0 and len(old._sparse[3]) == 1
    ref = BM25Retriever(floats, threads=1, pruning=False)
    for k in (1, 10):
        assert old.search(questions[:100], k) == ref.search(questions[:100], k)


def test_damaged_gap_bytes_are_refused(roots, tmp_path):
    """Gap bytes that place a term's ranges past the documents, or give it more or fewer
    ranges than range bytes, would bound the wrong ranges: refused, at load where the
    pointers disagree, else when a query reads them."""
    part = tmp_path / "bm25"
    shutil.copytree(roots["compact"] / "bm25", part)
    gptr = np.load(part / compact.GAPS[0])
    bad = gptr.copy()
    bad[1] = bad[2] + 1  # not rising
    np.save(part / compact.GAPS[0], bad)
    with pytest.raises(CorruptStoreError, match=r"rows\.sparse\.gptr\.npy"):
        BM25Retriever(part, warmup=False)
    np.save(part / compact.GAPS[0], gptr)
    gaps = np.load(part / compact.GAPS[1])
    terms = np.load(part / compact.SPARSE[0])
    gaps[gptr[0] : gptr[1]] = 255  # the first term's ranges run past the documents' ranges
    np.save(part / compact.GAPS[1], gaps)
    vocab = json.loads((roots["float"] / "bm25" / "vocab.index.json").read_text())
    word = next(w for w, i in vocab.items() if i == terms[0])
    with pytest.raises(CorruptStoreError):
        BM25Retriever(part, threads=1).search([word], 3)


def test_verify_passes_on_a_compact_part(roots):
    from index_build.__main__ import main

    assert main(["verify", "--index", str(roots["compact"]), "--no-progress"]) == 0


def test_float_index_refuses_compact_kernels_with_the_fix(roots):
    with pytest.raises(IndexFormatError, match="--format compact"):
        BM25Retriever(roots["float"] / "bm25", warmup=False, pruning="bmp-compact")


def test_damaged_block_offsets_are_refused_at_load(roots, tmp_path):
    """A flipped block offset would make a decode read outside the words: refused naming it."""
    part = tmp_path / "bm25"
    shutil.copytree(roots["compact"] / "bm25", part)
    offsets = np.load(part / "postings.offset.npy")
    offsets[len(offsets) // 2] += 1
    np.save(part / "postings.offset.npy", offsets)  # same size: only the values changed
    with pytest.raises(CorruptStoreError, match=r"postings\.offset\.npy"):
        BM25Retriever(part, warmup=False)


def test_ranges_verb_refuses_a_compact_part_with_the_fix(roots):
    """Its build writes the range maxima (and ``ranges`` reads the float scores it lacks)."""
    from index_build.ranges import add_ranges

    with pytest.raises(IndexFormatError, match="--format compact"):
        add_ranges(roots["compact"] / "bm25")
