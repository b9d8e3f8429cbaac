"""The bm25s-format BM25 index of a store, built in memory that does not grow with the corpus.

1. Tokenize fixed row chunks in worker processes (a bounded number in flight): each reads its
   rows' bytes sequentially, finds raw tokens with compiled code (``bm25_tokens``) and returns
   its terms and (doc, tf) postings sorted by (term, doc). The parent maps chunk terms onto one
   vocabulary (first-seen order) and buffers the chunks.
2. Every ``RUN_POSTINGS`` postings, place the buffered chunks in global term order (a counting
   sort: each chunk is sorted by term already, so every term's group is copied to its slot;
   rows stay ascending) and spill them to disk as a run: docs and tfs plus a per-term offset
   table.
3. Merge term ranges of about ``MERGE_POSTINGS`` postings: place each run's slice of the range
   the same way (runs are in row order, so rows stay ascending), score it with
   ``retriever.bm25.formula`` and append it to the output files; each term's largest score
   (``retriever.bm25.termmax``, the bound dynamic pruning scales by) is computed on the way.

Resident memory is the vocabulary, one int32 length per passage, the run buffer and one merge
range; the score matrix itself only ever exists on disk. The bytes equal an in-memory build's
(``retriever.bm25.formula.score_matrix``), whatever the chunk, run and range sizes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from retriever.bm25 import compact, rowmax, termmax
from retriever.bm25.analyzer import Analyzer
from retriever.bm25.formula import idf, posting_scores
from retriever.bm25.retriever import BM25S_FILES, save_params, save_vocab
from retriever.store.docstore import DocStore
from retriever.store.rows import parse_row

from .bm25_tokens import chunk_tokens

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000  # passages per tokenizing task
RUN_POSTINGS = 1 << 23  # postings buffered before a run is spilled (8M: ~130 MB)
MERGE_POSTINGS = 1 << 22  # postings per merge range (at most; a worker holds one: ~0.3 GB)
READ_BYTES = 1 << 23  # passage-file bytes a worker reads at once


# ---- 1. tokenize ------------------------------------------------------------------------------
def read_rows(store: DocStore, lo: int, hi: int, block_bytes: int | None = None):
    """``(title, text)`` of rows ``[lo, hi)``, read sequentially from the passage file in blocks
    of about ``block_bytes`` (one read per block instead of two ``pread`` calls per row); rows
    are parsed by the store's own parser, exactly as ``DocStore.get`` parses them. A ``spans``
    store has no row file: its rows are read with ``DocStore.get`` (sequential reads of one
    page's passages share its text)."""
    if store.layout != "jsonl":
        for row in range(lo, hi):
            p = store.get(row)
            yield p.title, p.text
        return
    offsets = np.load(store.folder / "passages.offsets.npy", mmap_mode="r")
    off = np.array(offsets[lo : hi + 1], dtype=np.int64)
    del offsets
    fmt = store.row_format
    block_bytes = block_bytes or READ_BYTES
    if len(off) > 1 and np.any(off[1:] < off[:-1]):  # not in file order: row by row
        for row in range(lo, hi):
            p = store.get(row)
            yield p.title, p.text
        return
    with open(store.data_path("passages"), "rb", buffering=0) as f:
        i = 0
        while i < hi - lo:
            # rows [i, j): at least one, at most about block_bytes
            j = int(np.searchsorted(off, off[i] + block_bytes, side="right")) - 1
            j = min(max(j, i + 1), hi - lo)
            base = int(off[i])
            f.seek(base)
            data = f.read(int(off[j]) - base)
            view = memoryview(data)
            starts = (off[i:j] - base).tolist()
            ends = (off[i + 1 : j + 1] - base).tolist()
            find = data.find
            for s, e in zip(starts, ends):
                cut = find(b"\n", s, e)  # a row's slice may run on over skipped lines
                _, title, text, _ = parse_row(view[s : e if cut < 0 else cut + 1], fmt)
                yield title, text
            i = j


def _tokenize_chunk(task: tuple[str, int, int, dict]):
    """Worker: (chunk vocab in first-seen order, doc lengths, postings per chunk term, and the
    chunk's (doc, tf) postings sorted by (term, doc)).

    Each passage is only split into raw tokens here; possessive, stopword and stemming rules
    (``Analyzer.word_terms``) run once per distinct token of the chunk.
    """
    folder, lo, hi, analyzer_dict = task
    store = DocStore.open(folder)
    analyzer = Analyzer.from_dict(analyzer_dict)
    texts = (f"{title}\n{text}" for title, text in read_rows(store, lo, hi))
    raw, ids, raw_lengths = chunk_tokens(analyzer, texts)
    if len(raw_lengths) != hi - lo:
        raise RuntimeError(f"read {len(raw_lengths)} rows of {hi - lo} from {folder}")
    # raw token id -> term id (first-seen order of terms), -1 for stopwords
    vocab: dict[str, int] = {}
    to_term = np.array(
        [-1 if t is None else vocab.setdefault(t, len(vocab)) for t in analyzer.word_terms(raw)],
        dtype=np.int64,
    )
    raw_docs = np.repeat(np.arange(hi - lo, dtype=np.int64), raw_lengths)
    term_ids = to_term[ids] if len(ids) else np.zeros(0, np.int64)
    keep = term_ids >= 0
    term_ids, docs = term_ids[keep], raw_docs[keep]
    lengths = np.bincount(docs, minlength=hi - lo).astype(np.int32)
    # sorted by (term, doc): the parent places each term's group without sorting
    m = max(hi - lo, 1)
    keys, tf = np.unique(term_ids * m + docs, return_counts=True)
    counts = np.bincount(keys // m, minlength=len(vocab))
    return list(vocab), lengths, counts, (keys % m).astype(np.int32), tf.astype(np.int32)


def _chunks(store: DocStore, analyzer: Analyzer, pool: ProcessPoolExecutor | None, workers: int):
    """Yield ``(lo, hi, chunk result)`` in row order, at most ``2 * workers`` tasks in flight."""
    n = len(store)
    ad = analyzer.to_dict()
    tasks = [(str(store.folder), lo, min(lo + CHUNK_ROWS, n), ad) for lo in range(0, n, CHUNK_ROWS)]
    if pool is None:
        for t in tasks:
            yield t[1], t[2], _tokenize_chunk(t)
        return
    pending: deque = deque()
    it = iter(tasks)
    for t in it:
        pending.append((t[1], t[2], pool.submit(_tokenize_chunk, t)))
        if len(pending) >= 2 * workers:
            break
    while pending:
        lo, hi, fut = pending.popleft()
        result = fut.result()
        for t in it:
            pending.append((t[1], t[2], pool.submit(_tokenize_chunk, t)))
            break
        yield lo, hi, result


# ---- 2. spill runs ----------------------------------------------------------------------------
def _place(nxt: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Destinations of postings grouped by term (group ``i``: ``counts[i]`` postings from
    ``starts[i]`` of the source) whose groups go to ``nxt[i]`` onwards: a stable counting sort
    of pieces that are each sorted by term already."""
    return np.repeat(nxt - starts, counts) + np.arange(int(counts.sum()), dtype=np.int64)


class _Runs:
    """Sorted runs on disk: ``runNNN.docs`` / ``.tf`` (int32, term order), ``.ptr.npy`` offsets."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        # per chunk: (global ids of its terms, postings per term, docs, tfs sorted by term)
        self.buf: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0

    def add(
        self,
        terms: np.ndarray,
        counts: np.ndarray,
        docs: np.ndarray,
        tf: np.ndarray,
        vocab_size: int,
    ) -> None:
        """One chunk: ``docs``/``tf`` grouped by its terms ``terms`` (``counts`` each, rows
        ascending within a group); chunks arrive in row order."""
        self.buf.append((terms, counts, docs, tf))
        self.buffered += len(docs)
        if self.buffered >= RUN_POSTINGS:
            self.flush(vocab_size)

    def flush(self, vocab_size: int) -> None:
        if not self.buf:
            return
        per_term = np.zeros(vocab_size, dtype=np.int64)
        for terms, counts, _, _ in self.buf:
            per_term[terms] += counts  # a chunk's terms are distinct
        ptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(per_term, out=ptr[1:])
        docs = np.empty(self.buffered, dtype=np.int32)
        tf = np.empty(self.buffered, dtype=np.int32)
        nxt = ptr[:-1].copy()  # the next free slot of each term
        for terms, counts, d, f in self.buf:
            dest = _place(nxt[terms], np.cumsum(counts) - counts, counts)
            docs[dest] = d
            tf[dest] = f
            nxt[terms] += counts
        self.buf.clear()
        self.buffered = 0
        prefix = self.folder / f"run{self.count:04d}"
        docs.tofile(f"{prefix}.docs")
        tf.tofile(f"{prefix}.tf")
        np.save(f"{prefix}.ptr.npy", ptr)
        self.count += 1

    def read_range(self, t_lo: int, t_hi: int, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return read_range(self.folder, self.count, t_lo, t_hi, df)


def read_range(
    folder: Path, runs: int, t_lo: int, t_hi: int, df: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(docs, tf) of terms ``[t_lo, t_hi)`` (``df``: their posting counts) over the first
    ``runs`` runs in ``folder``, in term order, rows ascending within a term (runs are in row
    order)."""
    df = np.asarray(df, dtype=np.int64)
    total = int(df.sum())
    docs = np.empty(total, dtype=np.int32)
    tf = np.empty(total, dtype=np.int32)
    nxt = np.cumsum(df) - df
    for r in range(runs):
        prefix = folder / f"run{r:04d}"
        ptr = np.load(f"{prefix}.ptr.npy", mmap_mode="r")
        hi = min(t_hi, len(ptr) - 1)
        if hi <= t_lo:
            continue
        p = np.array(ptr[t_lo : hi + 1], dtype=np.int64)
        del ptr
        a, b = int(p[0]), int(p[-1])
        if b == a:
            continue
        counts = np.diff(p)
        dest = _place(nxt[: hi - t_lo], p[:-1] - a, counts)
        docs[dest] = np.fromfile(f"{prefix}.docs", dtype=np.int32, count=b - a, offset=4 * a)
        tf[dest] = np.fromfile(f"{prefix}.tf", dtype=np.int32, count=b - a, offset=4 * a)
        nxt[: hi - t_lo] += counts
    return docs, tf


# ---- 3. merge ---------------------------------------------------------------------------------
def _npy_file(path: Path, dtype, length: int) -> int:
    """Create the 1-D ``.npy`` file of ``length`` entries that merge tasks fill by offset
    (no memory map, so no resident pages of the whole output); returns where its data begin."""
    dtype = np.dtype(dtype)
    with open(path, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (length,)})
        start = f.tell()
        f.truncate(start + length * dtype.itemsize)
    return start


def _pwrite(path: Path, at: int, a: np.ndarray) -> None:
    data = memoryview(np.ascontiguousarray(a)).cast("B")
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], at + done)
    finally:
        os.close(fd)


def _scored_range(
    folder: Path, runs, t_lo: int, t_hi: int, avgdl: float, k1: float, b: float, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Terms ``[t_lo, t_hi)`` read back from the spill runs and scored, for either layout's
    merge worker: (their indptr slice, docs, term frequencies, scores)."""
    spill = folder / "spill"
    ip = np.array(np.load(folder / BM25S_FILES[2], mmap_mode="r")[t_lo : t_hi + 1])
    df = np.diff(ip)
    term_idf = np.array(np.load(spill / "idf.npy", mmap_mode="r")[t_lo:t_hi])
    lengths = np.load(spill / "lengths.npy", mmap_mode="r")
    docs, tf = read_range(spill, runs, t_lo, t_hi, df)
    # float64 temporaries in steps of 1M postings: five of them, 40 MB
    scores = posting_scores(
        tf, lengths[docs], np.repeat(term_idf, df), avgdl, k1, b, method, step=1 << 20
    )
    return ip, docs, tf, scores


def _merge_range(task: tuple) -> tuple[int, np.ndarray]:
    """Worker: score terms ``[t_lo, t_hi)`` and write their postings into the output files at
    their offsets; returns (postings, the terms' maximum scores)."""
    if task[0] == compact.LAYOUT:
        return _merge_compact(task[1:])
    folder, runs, t_lo, t_hi, starts, avgdl, k1, b, method = task
    ip, docs, _, scores = _scored_range(folder, runs, t_lo, t_hi, avgdl, k1, b, method)
    for name, a in ((BM25S_FILES[0], scores), (BM25S_FILES[1], docs)):
        _pwrite(folder / name, starts[name] + int(ip[0]) * a.itemsize, a)
    return len(docs), termmax.term_maxima(scores, ip - ip[0])


def _merge_compact(task: tuple) -> tuple:
    """Worker, compact layout: encode terms ``[t_lo, t_hi)`` into ``spill/part.T_LO`` (words)
    and fill their rows of the range maxima; returns (postings, term maxima, block first rows,
    block offsets from 0, block bit widths, (mid-frequency terms, their range-byte counts,
    the bytes, their gap-byte counts, the gap bytes)). Scores are computed only for the
    maxima."""
    folder, runs, t_lo, t_hi, avgdl, k1, b, method, slot, sparse_df = task
    spill = folder / "spill"
    ip, docs, tf, scores = _scored_range(folder, runs, t_lo, t_hi, avgdl, k1, b, method)
    local = ip - ip[0]
    tmax = termmax.term_maxima(scores, local)
    frequent = np.flatnonzero(slot >= 0)
    if len(frequent):
        out = np.lib.format.open_memmap(folder / (rowmax.FILES[1] + ".partial"), mode="r+")
        s_lo = int(slot[frequent[0]])
        rows = out[s_lo : s_lo + len(frequent)].view(np.ndarray)
        rowmax.fill(scores, docs, local, tmax, frequent.astype(np.int64), rowmax.SHIFT, rows)
        out.flush()
        del out, rows
    mid = np.flatnonzero((slot < 0) & (np.diff(local) > sparse_df))
    counts, q = compact.sparse_maxima(scores, docs, local, tmax, mid, rowmax.SHIFT)
    del scores
    gcounts, gaps = compact.sparse_gaps(docs, local, mid, rowmax.SHIFT)
    words, first, offset, bits = compact.encode(docs, tf, local)
    words.tofile(spill / f"part.{t_lo}")
    sparse = ((mid + t_lo).astype(np.int32), counts, q, gcounts, gaps)
    return len(docs), tmax, first, offset, bits, sparse


# ---- the build --------------------------------------------------------------------------------
def build_postings(
    store: DocStore,
    folder: Path,
    analyzer: Analyzer,
    params: dict,
    workers: int,
    show_progress: bool = False,
    layout: str = termmax.LAYOUT,
) -> dict:
    """Write the bm25s files, hashed vocabulary and term maxima of ``store`` into ``folder``
    (``layout`` ``compact.LAYOUT``: the compact files and the range maxima instead); returns
    manifest keys. One pool of ``workers`` processes tokenizes and then merges."""
    pool = None
    if workers > 1:
        # spawn, not fork: the caller may hold threads (a JVM, a server) that fork copies badly
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        return _build(store, folder, analyzer, params, pool, max(workers, 1), show_progress, layout)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _bar(show: bool, total: int, unit: str, desc: str):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, smoothing=0.1)


def _build(store, folder, analyzer, params, pool, workers, show_progress, layout) -> dict:
    n = len(store)
    bar = _bar(show_progress, n, "passage", "bm25 tokenize")
    t0, c0 = time.perf_counter(), time.process_time()
    spill = folder / "spill"
    runs = _Runs(spill)
    vocab: dict[str, int] = {}
    df = np.zeros(1 << 16, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int32)
    for lo, hi, (chunk_vocab, chunk_len, counts, docs, tf) in _chunks(
        store, analyzer, pool, workers
    ):
        terms = np.fromiter(
            (vocab.setdefault(t, len(vocab)) for t in chunk_vocab),
            dtype=np.int64,
            count=len(chunk_vocab),
        )
        if len(vocab) > len(df):
            df = np.concatenate([df, np.zeros(max(len(vocab), 2 * len(df)) - len(df), np.int64)])
        df[terms] += counts  # a chunk's terms are distinct
        lengths[lo:hi] = chunk_len
        runs.add(terms, counts, docs + np.int32(lo), tf, len(vocab))
        if bar is not None:
            bar.update(hi - lo)
    runs.flush(len(vocab))
    if bar is not None:
        bar.close()
    v = len(vocab)
    df = df[:v]
    total = int(df.sum())
    log.info(
        "tokenized %d passages in %.1f s (this process: %.1f s CPU): %d terms, %d postings "
        "in %d runs",
        n,
        time.perf_counter() - t0,
        time.process_time() - c0,
        v,
        total,
        runs.count,
    )
    t0 = time.perf_counter()
    indptr = np.zeros(v + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    np.save(folder / BM25S_FILES[2], indptr)
    avgdl = float(lengths.mean()) if n else 0.0
    np.save(spill / "idf.npy", idf(df, n, params["method"]))
    np.save(spill / "lengths.npy", lengths)
    if layout == compact.LAYOUT:
        compact.write(folder, lengths, np.load(spill / "idf.npy"))
    del lengths, df
    if layout == compact.LAYOUT:
        dense = compact.dense_min_df(n, rowmax.SHIFT)
        min_df, frequent, slot = rowmax._dense(indptr, n, rowmax.SHIFT, dense)
        sparse_df = rowmax.default_min_df(n, rowmax.SHIFT)  # sparse range bytes past it
        shape = (len(frequent), rowmax.ranges(n, rowmax.SHIFT))
        partial = folder / (rowmax.FILES[1] + ".partial")
        np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape).flush()
    else:
        starts = {
            BM25S_FILES[0]: _npy_file(folder / BM25S_FILES[0], np.float32, total),
            BM25S_FILES[1]: _npy_file(folder / BM25S_FILES[1], np.int32, total),
        }
    # term ranges of at most MERGE_POSTINGS postings, at least four per worker
    step = max(1, min(MERGE_POSTINGS, -(-total // (4 * workers))))
    bounds, t_lo = [], 0
    while t_lo < v:
        t_hi = int(np.searchsorted(indptr, indptr[t_lo] + step, side="right")) - 1
        t_hi = min(max(t_hi, t_lo + 1), v)
        bounds.append((t_lo, t_hi))
        t_lo = t_hi
    k1, b, method = params["k1"], params["b"], params["method"]
    if layout == compact.LAYOUT:
        tasks = [
            (layout, folder, runs.count, lo, hi, avgdl, k1, b, method, slot[lo:hi], sparse_df)
            for lo, hi in bounds
        ]
        blocks = compact.Blocks(folder)
    else:
        tasks = [(folder, runs.count, lo, hi, starts, avgdl, k1, b, method) for lo, hi in bounds]
    results = (
        map(_merge_range, tasks) if pool is None else [pool.submit(_merge_range, t) for t in tasks]
    )
    # the vocabulary is written while the workers merge
    # (bm25s's vocab.index.json only where bm25s can open the part: 9 MB at 666k passages)
    save_vocab(folder, list(vocab), bm25s_json=layout != compact.LAYOUT)
    del vocab
    if layout != compact.LAYOUT:
        save_params(folder, params, n)  # bm25s opens the float layout as its own
    bar = _bar(show_progress, total, "posting", "bm25 merge")
    term_max = np.zeros(v, dtype=np.float32)
    for i, (lo, hi) in enumerate(bounds):
        if pool is None:
            got = next(results)
        else:  # a done future keeps its result: drop it once written (at 21.3M passages the
            # kept results made the compact build's largest process 1.0 GB instead of 0.5)
            got, results[i] = results[i].result(), None
        done, term_max[lo:hi] = got[:2]
        if layout == compact.LAYOUT:
            blocks.add(spill / f"part.{lo}", *got[2:])
        if bar is not None:
            bar.update(done)
    if bar is not None:
        bar.close()
    np.save(folder / termmax.FILE, term_max)
    postings = {"layout": layout}
    if layout == compact.LAYOUT:
        blocks.finish(indptr)
        os.replace(partial, folder / rowmax.FILES[1])
        np.save(folder / rowmax.FILES[0], slot)
        postings["block"] = compact.BLOCK
        postings["row_ranges"] = {
            "shift": rowmax.SHIFT,
            "min_df": int(min_df),
            "dense_terms": int(len(frequent)),
            "sparse_min_df": int(sparse_df),
        }
    shutil.rmtree(spill)
    log.info("merged and scored %d postings in %.1f s", total, time.perf_counter() - t0)
    return {
        "analyzer": analyzer.to_dict(),
        "vocab_size": v,
        "num_postings": total,
        "avg_doc_len": avgdl,
        "postings": postings,
    }
