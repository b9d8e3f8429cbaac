"""The compact BM25 posting format (manifest ``postings.layout`` ``"compact-v3"``), opt-in.

Why: the bm25s layout stores every posting as an int32 row and a float32 score (8 bytes a
posting: 2.4 GB of the 3.2 GB index at 5.3M passages, against Lucene's 0.56 GB in all). Here a
posting is its row gap and term frequency, bit-packed, and the score is recomputed at query time
with the build's float arithmetic, so hits and scores are bit-identical to the float layout's.

Layout (all ``.npy``, memory-mapped; V terms, B blocks, N documents):

- ``indptr.csc.index.npy`` int64[V+1]: postings of term ``t`` are ``indptr[t]:indptr[t+1]``,
  cut into blocks of ``BLOCK`` (128) postings, the last one shorter;
- ``postings.bptr.npy``   uint32[V+1]: the term's blocks are ``bptr[t]:bptr[t+1]``
  (``ceil(df / BLOCK)`` each; int64 past 2**32 blocks);
- ``postings.first.npy`` int32[B]: the block's first row (its skip key);
- ``postings.offset.npy`` uint32[B+1]: where the block starts in ``postings.words.npy`` (int64
  past 2**32 words);
- ``postings.bits.npy``  uint8[B, 2]: bit widths of the block's row gaps and of its tf - 1;
- ``postings.words.npy`` uint32[W + 1]: per block, ``n`` row gaps ``row[i] - row[i-1] - 1``
  (``0`` for ``i = 0``) packed LSB-first at width ``bits[0]``, then ``n`` values ``tf - 1`` at
  width ``bits[1]``, each section padded to a whole word; one zero word at the end, so a
  decoder may always read two words at once. Widths are exact (up to 32): no escapes.
- ``docs.len.npy`` uint16[N]: each document's length in terms (what BM25 normalises by;
  uint32 when one passes 65535);
- ``terms.idf.npy`` float32[V]: each term's idf (``formula.idf``);
- ``terms.max.npy``, ``rows.slot.npy``, ``rows.max.npy``: term and row-range maxima, as in the
  float layout (``termmax``, ``rowmax``: one byte per 8-row range), kept only for the most
  frequent terms, those with postings in more than ``1 / DENSE`` of the ranges
  (``dense_min_df``);
- ``rows.sparse.terms.npy`` int32[M] (ascending), ``rows.sparse.ptr.npy`` int64[M+1],
  ``rows.sparse.max.npy`` uint8[S]: the same bytes for the mid-frequency terms (df over
  ``rowmax.default_min_df``, not dense), but only for the ranges that hold one of their
  postings, in row order, so its bounds are those of a dense row at the cost of a byte a range
  it occurs in (S <= the terms' postings);
- ``rows.sparse.gptr.npy`` int64[M+1], ``rows.sparse.gap.npy`` uint8[G]: where those ranges
  are, as gaps (``sparse_gaps``: a byte 1-255 moves on to the next range, 0 moves on ``SKIP``
  ranges), so ``bmp-compact`` bounds such a term with a byte read and an add a range instead of
  decoding its rows (G >= S; at 5.3M passages 82 MB, and the sparse bounds 2.7x cheaper).

``compact-v1`` (``LAYOUTS``) had int64 pointers and offsets, uint32 lengths, no sparse bytes,
dense range bytes for every term with df over R/16 (121 MB of its 207 MB at 666k passages) and
bm25s's ``vocab.index.json``; ``compact-v2`` had no gap bytes (the kernel decodes the rows of
its mid-frequency terms for their ranges). Both open as they are.

The score of a posting is ``formula.posting_scores``'s, step by step in float64 and rounded once
to float32: ``norm = k1 * ((1 - b) + b * len / avgdl)``, ``idf * (tf / (norm + tf))`` (atire:
``idf * ((tf * (k1 + 1)) / (tf + norm))``). ``norm`` and the saturated tf of tf 1 to 7 per length
are a float64 table built at load by the same expressions (numpy, like the build), so most
postings cost a table read and a multiplication, not a division.
Blocks are decoded whole into per-term buffers (rows and float32 scores) by the kernels of
``compact_kernels``; the skip keys let ``bmp-compact`` jump to the block of a row range.

>>> enc = encode(np.int32([3, 4, 9, 300]), np.int32([1, 1, 2, 70000]), np.int64([0, 1, 4]))
>>> words, first, offset, bits = enc
>>> first.tolist(), bits.tolist()
([3, 4], [[0, 0], [9, 17]])
>>> rows, tf = np.zeros(BLOCK, np.int32), np.zeros(BLOCK, np.int32)
>>> decode(words, first, offset, bits, 1, 3, rows, tf); rows[:3].tolist(), tf[:3].tolist()
([4, 9, 300], [1, 2, 70000])
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from .formula import METHODS

LAYOUT = "compact-v3"
LAYOUTS = ("compact-v1", "compact-v2", LAYOUT)  # every layout this module reads
BLOCK = 128
SPARSE = ("rows.sparse.terms.npy", "rows.sparse.ptr.npy", "rows.sparse.max.npy")  # v2 on
GAPS = ("rows.sparse.gptr.npy", "rows.sparse.gap.npy")  # v3 on
SKIP = 255  # a gap byte 0 moves on this many ranges without a range byte
DENSE = 3  # range bytes only for terms with postings in more than 1 / DENSE of the ranges
TF_TABLE = 7  # term frequencies whose saturation is tabulated per length (``norm_table``)
FILES = (
    "indptr.csc.index.npy",
    "postings.bptr.npy",
    "postings.first.npy",
    "postings.offset.npy",
    "postings.bits.npy",
    "postings.words.npy",
    "docs.len.npy",
    "terms.idf.npy",
)
KINDS = {  # numpy dtype.kind of each file, for ``integrity.check_sizes``
    "postings.bptr.npy": "iu",
    "postings.first.npy": "i",
    "postings.offset.npy": "iu",
    "postings.bits.npy": "u",
    SPARSE[0]: "i",
    SPARSE[1]: "i",
    SPARSE[2]: "u",
    GAPS[0]: "i",
    GAPS[1]: "u",
    "postings.words.npy": "u",
    "docs.len.npy": "u",
    "terms.idf.npy": "f",
}


# ---- encoding (build side) --------------------------------------------------------------------
@njit(nogil=True, cache=True, inline="always")
def _width(x):
    w = 0
    while x > 0:
        w += 1
        x >>= 1
    return w


@njit(nogil=True, cache=True)
def _pack(words, at, values, n, w):
    """Pack ``values[:n]`` at ``w`` bits LSB-first into zeroed ``words[at:]``; returns the
    words used."""
    if w == 0:
        return 0
    for i in range(n):
        bit = i * w
        j = at + (bit >> 5)
        sh = bit & 31
        v = np.uint64(values[i]) << np.uint64(sh)
        words[j] |= np.uint32(v & np.uint64(0xFFFFFFFF))
        if sh + w > 32:
            words[j + 1] |= np.uint32(v >> np.uint64(32))
    return (n * w + 31) >> 5


@njit(nogil=True, cache=True)
def _encode(docs, tf, indptr, words, first, offset, bits):
    """Fill the blocks of the terms of ``indptr`` (local, from 0); returns the words used."""
    gaps = np.empty(BLOCK, np.int64)
    tfs = np.empty(BLOCK, np.int64)
    b = 0
    at = 0
    for t in range(len(indptr) - 1):
        for lo in range(indptr[t], indptr[t + 1], BLOCK):
            n = min(BLOCK, indptr[t + 1] - lo)
            wd, wt = 0, 0
            gaps[0] = 0
            for i in range(n):
                if i:
                    gaps[i] = np.int64(docs[lo + i]) - docs[lo + i - 1] - 1
                tfs[i] = np.int64(tf[lo + i]) - 1
                wd = max(wd, _width(gaps[i]))
                wt = max(wt, _width(tfs[i]))
            first[b] = docs[lo]
            offset[b] = at
            bits[b, 0] = wd
            bits[b, 1] = wt
            at += _pack(words, at, gaps, n, wd)
            at += _pack(words, at, tfs, n, wt)
            b += 1
    offset[b] = at
    return at


def num_blocks(df: np.ndarray) -> np.ndarray:
    """Blocks of each term of document frequency ``df``."""
    return (np.asarray(df, dtype=np.int64) + BLOCK - 1) // BLOCK


def dense_min_df(num_docs: int, shift: int) -> int:
    """Terms with more postings than this (R / ``DENSE``) get dense range bytes (``rowmax``), at
    most three bytes a posting: at 666k passages 165 terms, 14 MB (R/16 gave 1,402 terms, 117
    MB). Bounding a term by its sparse bytes decodes its rows, which costs more than adding a
    dense row: R/2 made the index 104 MB but bmp-compact 0.46x the float bmp, R/4 116 MB
    (past 1.5x Lucene's 76 MB) and 0.55x, compact-v1 0.58x (CPU time, NQ, k=5)."""
    from .rowmax import ranges

    return max(16, ranges(num_docs, shift) // DENSE)


def narrow(a: np.ndarray) -> np.ndarray:
    """Non-negative pointers as uint32 when they fit (half the bytes), else int64."""
    a = np.asarray(a, dtype=np.int64)
    return a.astype(np.uint32) if not len(a) or int(a.max()) < 2**32 else a


@njit(nogil=True, cache=True)
def _sparse(scores, docs, indptr, tmax, terms, shift, out):
    """Fill ``out`` with the range bytes of ``terms`` (local columns), range by range; returns
    the bytes written."""
    j = 0
    for t in terms:
        top = np.float64(tmax[t])
        c = np.int64(-1)
        for p in range(indptr[t], indptr[t + 1]):
            r = np.int64(docs[p]) >> shift
            q = np.int64(np.ceil(np.float64(scores[p]) * 255.0 / top)) if top > 0 else 255
            q = max(1, min(255, q))
            if r != c:
                out[j] = q
                j += 1
                c = r
            elif q > out[j - 1]:
                out[j - 1] = q
    return j


@njit(nogil=True, cache=True)
def _gaps(docs, indptr, terms, shift, out):
    """Fill ``out`` with the range gap bytes of ``terms`` (``SKIP``); returns bytes written
    per term."""
    j = 0
    used = np.zeros(len(terms), np.int64)
    for i in range(len(terms)):
        t = terms[i]
        c = np.int64(-1)
        start = j
        for p in range(indptr[t], indptr[t + 1]):
            r = np.int64(docs[p]) >> shift
            if r != c:
                g = r - c
                while g > SKIP:
                    out[j] = 0
                    j += 1
                    g -= SKIP
                out[j] = g
                j += 1
                c = r
        used[i] = j - start
    return used


def sparse_gaps(docs, indptr, terms, shift: int):
    """(gap bytes per term int64[len(terms)], uint8 bytes): where each range byte of
    ``sparse_maxima`` lies, as gaps from the term's previous range (the first from range -1):
    a byte 1-255 moves on that many ranges to the next range byte's range, a byte 0 moves on
    ``SKIP`` ranges. ``bmp-compact`` bounds a term by these (a byte read and an add a range)
    instead of decoding the term's row gaps (a bit-unpacking a posting): at 5.3M passages that
    was two thirds of a query's time.

    >>> sparse_gaps(np.int32([0, 1, 9, 3000]), np.int64([0, 4]), np.int64([0]), 3)
    (array([4]), array([  1,   1,   0, 119], dtype=uint8))
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    terms = np.asarray(terms, dtype=np.int64)
    ranges = 0
    for t in terms:  # ranges, and an upper bound on the skip bytes: the last range / SKIP
        n = int(indptr[t + 1] - indptr[t])
        ranges += n + (int(docs[indptr[t + 1] - 1]) >> shift) // SKIP + 1 if n else 0
    out = np.zeros(ranges, dtype=np.uint8)
    used = _gaps(docs, indptr, terms, shift, out)
    return used, out[: int(used.sum())]


def sparse_maxima(scores, docs, indptr, tmax, terms, shift: int):
    """(bytes per term int64[len(terms)], uint8 bytes): ``rowmax``'s byte of each range that
    holds a posting of ``terms`` (columns of the CSC slice ``indptr``, from 0), in row order.

    >>> n, q = sparse_maxima(np.float32([1, 4, 2]), np.int32([0, 1, 9]), np.int64([0, 3]),
    ...                      np.float32([4]), np.int64([0]), 3)
    >>> n.tolist(), q.tolist()
    ([2], [255, 128])
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    terms = np.asarray(terms, dtype=np.int64)
    out = np.zeros(int((indptr[terms + 1] - indptr[terms]).sum()), dtype=np.uint8)
    counts = np.zeros(len(terms), dtype=np.int64)
    for i, t in enumerate(terms):  # the count of each term: its distinct ranges
        r = np.asarray(docs[indptr[t] : indptr[t + 1]], dtype=np.int64) >> shift
        counts[i] = int(np.count_nonzero(np.diff(r))) + 1 if len(r) else 0
    used = _sparse(np.asarray(scores, np.float32), docs, indptr, tmax, terms, shift, out)
    return counts, out[:used]


def encode(docs: np.ndarray, tf: np.ndarray, indptr: np.ndarray):
    """(words uint32, first int32[B], offset int64[B+1] from 0, bits uint8[B, 2]) of the
    postings ``docs``/``tf`` (rows ascending within each term, ``tf >= 1``) of the terms whose
    local pointers are ``indptr``; ``words`` has no end padding (``write`` adds it)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    nb = int(num_blocks(np.diff(indptr)).sum())
    words = np.zeros(2 * len(docs) + nb + 1, dtype=np.uint32)  # at most 32 + 32 bits a posting
    first = np.empty(nb, np.int32)
    offset = np.empty(nb + 1, np.int64)
    bits = np.empty((nb, 2), np.uint8)
    used = _encode(docs, tf, indptr, words, first, offset, bits)
    return words[:used], first, offset, bits


# ---- decoding (kernels) -----------------------------------------------------------------------
@njit(nogil=True, cache=True, inline="always")
def _unpack(words, at, n, w, out):
    if w == 0:
        for i in range(n):
            out[i] = 0
        return
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    for i in range(n):
        bit = i * w
        j = at + (bit >> 5)
        x = np.uint64(words[j]) | (np.uint64(words[j + 1]) << np.uint64(32))
        out[i] = np.int64((x >> np.uint64(bit & 31)) & mask)


@njit(nogil=True, cache=True)
def decode(words, first, offset, bits, b, n, rows, tf):
    """Rows and term frequencies of the ``n`` postings of block ``b`` into ``rows``/``tf``."""
    at = np.int64(offset[b])
    wd = np.int64(bits[b, 0])
    _unpack(words, at, n, wd, rows)
    d = np.int64(first[b])
    rows[0] = d
    for i in range(1, n):
        d += np.int64(rows[i]) + 1
        rows[i] = d
    _unpack(words, at + ((n * wd + 31) >> 5), n, np.int64(bits[b, 1]), tf)
    for i in range(n):
        tf[i] += 1


@njit(nogil=True, cache=True)
def decode_rows(words, first, offset, bits, b, n, rows):
    """Only the rows of block ``b`` (``decode`` without its term frequencies)."""
    _unpack(words, np.int64(offset[b]), n, np.int64(bits[b, 0]), rows)
    d = np.int64(first[b])
    rows[0] = d
    for i in range(1, n):
        d += np.int64(rows[i]) + 1
        rows[i] = d


@njit(nogil=True, cache=True, inline="always")
def tf_at(words, offset, bits, b, n, p):
    """The term frequency of posting ``p`` of block ``b`` (``n`` postings), read alone: the
    values are packed at a fixed width, so no other needs unpacking."""
    wd = np.int64(bits[b, 0])
    w = np.int64(bits[b, 1])
    if w == 0:
        return np.int64(1)
    at = np.int64(offset[b]) + ((n * wd + 31) >> 5)
    bit = p * w
    j = at + (bit >> 5)
    x = np.uint64(words[j]) | (np.uint64(words[j + 1]) << np.uint64(32))
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    return np.int64((x >> np.uint64(bit & 31)) & mask) + 1


# ---- the loaded part --------------------------------------------------------------------------
class Compact(NamedTuple):
    """The arrays the compact kernels read, in their argument order."""

    indptr: np.ndarray
    bptr: np.ndarray
    first: np.ndarray
    offset: np.ndarray
    bits: np.ndarray
    words: np.ndarray
    lengths: np.ndarray
    idf: np.ndarray
    norm: np.ndarray  # float64 per document length: norm, then saturated tf (``norm_table``)
    k1: float
    atire: bool


def norm_table(max_len: int, k1: float, b: float, avgdl: float, atire: bool = False):
    """float64[max_len + 1, TF_TABLE + 1]: column 0 is ``formula.posting_scores``'s ``norm``
    of each length, column ``tf`` its saturated term frequency for ``tf <= TF_TABLE``, by the
    same numpy expressions (so the same bits): most postings need no division at search time,
    and one cache line holds a length's row."""
    lengths = np.arange(max_len + 1, dtype=np.int64)
    out = np.empty((max_len + 1, TF_TABLE + 1), dtype=np.float64)
    norm = k1 * ((1 - b) + b * np.asarray(lengths, dtype=np.float64) / avgdl)
    out[:, 0] = norm
    for tf in range(1, TF_TABLE + 1):
        tf64 = np.full(max_len + 1, tf, dtype=np.float64)
        out[:, tf] = (tf64 * (k1 + 1)) / (tf64 + norm) if atire else tf64 / (norm + tf64)
    return out


def load(folder: str | os.PathLike, manifest: dict) -> Compact:
    """The memory-mapped arrays of a compact part and its norm table."""
    folder = Path(folder)
    arrays = [np.load(folder / f, mmap_mode="r") for f in FILES]
    params = manifest["params"]
    if params["method"] not in METHODS:
        raise ValueError(f"unknown BM25 method {params['method']!r} in {folder}")
    lengths = arrays[6]
    max_len = int(lengths.max()) if len(lengths) else 0
    avgdl = float(manifest["avg_doc_len"]) or 1.0
    atire = params["method"] == "atire"
    norm = norm_table(max_len, float(params["k1"]), float(params["b"]), avgdl, atire)
    return Compact(*arrays, norm, float(params["k1"]), atire)


def sparse_files(layout: str | None) -> tuple[str, ...]:
    """The sparse range files a compact part of ``layout`` has: none in compact-v1 (dense range
    bytes for all its frequent terms), the bytes without their gaps in compact-v2, both after."""
    if layout == "compact-v1":
        return ()
    if layout == "compact-v2":
        return SPARSE
    return SPARSE + GAPS


def load_sparse(folder: str | os.PathLike, manifest: dict) -> tuple[np.ndarray, ...]:
    """The memory-mapped sparse range bytes and their gaps (terms, ptr, bytes, gap ptr, gap
    bytes), empty arrays for what an older part lacks (``sparse_files``): compact-v2's terms'
    rows are decoded for their ranges instead."""
    files = sparse_files(manifest.get("postings", {}).get("layout"))
    got = tuple(np.load(Path(folder) / f, mmap_mode="r") for f in files)
    empty = (np.zeros(0, np.int32), np.zeros(1, np.int64), np.zeros(0, np.uint8))
    empty += (np.zeros(1, np.int64), np.zeros(0, np.uint8))
    return got + empty[len(got) :]


def write(folder: Path, lengths: np.ndarray, term_idf: np.ndarray) -> None:
    """The per-document lengths and per-term idf of a compact part."""
    lengths = np.asarray(lengths)
    small = not len(lengths) or int(lengths.max()) < 2**16
    np.save(folder / "docs.len.npy", lengths.astype(np.uint16 if small else np.uint32))
    np.save(folder / "terms.idf.npy", np.asarray(term_idf, dtype=np.float32))


def from_postings(docs, tf, indptr, lengths, term_idf, params: dict, avgdl: float) -> Compact:
    """The compact arrays of an in-memory CSC matrix of term frequencies (tests and tools), in
    the dtypes ``write`` and ``Blocks`` give them."""
    indptr = np.asarray(indptr, dtype=np.int64)
    words, first, offset, bits = encode(docs, tf, indptr)
    bptr = np.zeros(len(indptr), dtype=np.int64)
    np.cumsum(num_blocks(np.diff(indptr)), out=bptr[1:])
    lengths = np.asarray(lengths)
    max_len = int(lengths.max()) if len(lengths) else 0
    lengths = lengths.astype(np.uint16 if max_len < 2**16 else np.uint32)
    return Compact(
        indptr,
        narrow(bptr),
        first,
        narrow(offset),
        bits,
        np.append(words, np.uint32(0)),
        lengths,
        np.asarray(term_idf, dtype=np.float32),
        norm_table(max_len, params["k1"], params["b"], avgdl or 1.0, params["method"] == "atire"),
        float(params["k1"]),
        params["method"] == "atire",
    )


class _Spill:
    """An append-only file of one dtype's values, written out as an ``.npy`` at the end: what
    the build keeps of every block or range byte stays on disk, not in memory."""

    def __init__(self, path: Path, dtype):
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._f = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed by save()

    def add(self, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a, dtype=self.dtype)
        self._f.write(a.tobytes())
        self.count += len(a)

    def save(self, out: Path, dtype=None, shape: tuple | None = None) -> None:
        """Write ``out`` (``dtype``: converted on the way, chunk by chunk; ``shape``: its rows'
        shape when not flat) and remove the spill file."""
        self._f.close()
        dtype = np.dtype(dtype or self.dtype)
        shape = shape or (self.count,)
        with open(out, "wb") as f, open(self.path, "rb") as src:
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                      "shape": shape}  # fmt: skip
            np.lib.format.write_array_header_1_0(f, header)
            step = 1 << 22
            while chunk := src.read(step * self.dtype.itemsize):
                f.write(np.frombuffer(chunk, self.dtype).astype(dtype, copy=False).tobytes())
        self.path.unlink()


class Blocks:
    """The build's writer of the block files: merge ranges arrive in term order, each with its
    words in a part file, its blocks' skip data (offsets from 0) and its mid-frequency terms'
    range and gap bytes; all of it is appended to spill files and written out at the end, so
    memory holds one range's worth (at 21M passages the skip data and range bytes held in
    memory and joined at the end made the largest process 1.65 GB)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        spill = self.folder / "spill"
        self.raw = spill / "words.raw"
        self.words = 0
        self.first = _Spill(spill / "first.raw", np.int32)
        self.offset = _Spill(spill / "offset.raw", np.int64)
        self.offset.add(np.zeros(1, np.int64))
        self.bits = _Spill(spill / "bits.raw", np.uint8)
        self.q = _Spill(spill / "sparse.q.raw", np.uint8)
        self.gaps = _Spill(spill / "sparse.gaps.raw", np.uint8)
        self.terms: list[np.ndarray] = []  # mid-frequency terms and their byte counts: small
        self.counts: list[np.ndarray] = []
        self.gcounts: list[np.ndarray] = []

    def add(self, part: Path, first, offset, bits, sparse: tuple) -> None:
        """``sparse``: (term ids, bytes per term, bytes, gap bytes per term, gap bytes) of the
        range's mid-frequency terms."""
        with open(part, "rb") as src, open(self.raw, "ab") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.unlink(part)
        self.first.add(first)
        self.offset.add(np.asarray(offset[1:], np.int64) + self.words)
        self.bits.add(np.asarray(bits, np.uint8).reshape(-1))
        terms, counts, q, gcounts, gaps = sparse
        self.terms.append(np.asarray(terms, np.int32))
        self.counts.append(np.asarray(counts, np.int64))
        self.gcounts.append(np.asarray(gcounts, np.int64))
        self.q.add(q)
        self.gaps.add(gaps)
        self.words += int(offset[-1])

    def finish(self, indptr: np.ndarray) -> None:
        """Write the ``postings.*.npy`` files (one zero word of padding)."""
        folder = self.folder
        bptr = np.zeros(len(indptr), dtype=np.int64)
        np.cumsum(num_blocks(np.diff(indptr)), out=bptr[1:])
        np.save(folder / "postings.bptr.npy", narrow(bptr))
        self.first.save(folder / "postings.first.npy")
        small = self.words < 2**32  # ``narrow``: the offsets rise to the word count
        self.offset.save(folder / "postings.offset.npy", np.uint32 if small else np.int64)
        self.bits.save(folder / "postings.bits.npy", shape=(self.bits.count // 2, 2))
        terms = np.concatenate([np.zeros(0, np.int32), *self.terms])
        ptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([np.zeros(0, np.int64), *self.counts]), out=ptr[1:])
        gptr = np.zeros(len(terms) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([np.zeros(0, np.int64), *self.gcounts]), out=gptr[1:])
        np.save(folder / SPARSE[0], terms)
        np.save(folder / SPARSE[1], ptr)
        self.q.save(folder / SPARSE[2])
        np.save(folder / GAPS[0], gptr)
        self.gaps.save(folder / GAPS[1])
        with open(folder / "postings.words.npy", "wb") as f:
            header = {"descr": "<u4", "fortran_order": False, "shape": (self.words + 1,)}
            np.lib.format.write_array_header_1_0(f, header)
            if self.raw.exists():
                with open(self.raw, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 22)
            f.write(b"\0\0\0\0")
