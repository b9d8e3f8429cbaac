"""Per-row-range score maxima of frequent terms, for block-max pruning over row ranges (``bmp``).

Rows are cut into ranges of ``2**shift`` rows (8 by default). A query's bound for a range is
the sum over its terms of ``weight x`` the term's largest score in that range; the kernel scores
the ranges whose bound can still beat the k-th best score. Rare terms' maxima are read off their
postings at query time (at most ``min_df`` of them); frequent terms (more than ``min_df``
postings) have theirs precomputed here, one byte a range, stored beside the bm25s files and
memory-mapped at search time:

- ``rows.slot.npy``  int32[V]: the term's row in ``rows.max.npy``, -1 for a rare term;
- ``rows.max.npy``   uint8[D, R]: ``ceil(255 x max / term max)`` of each range (0: the term has
  no posting there), where term max is ``terms.max.npy`` (``termmax``).

Rounding up keeps every byte an upper bound: ``term max x q / 255 >= max``.

>>> data = np.float32([1, 4, 2, 2, 8]); rows = np.int32([0, 5, 1, 2, 9])
>>> slot, qmax = compute(data, rows, np.array([0, 2, 5]), np.float32([4, 8]), 10, shift=2, min_df=2)
>>> slot.tolist(), qmax.tolist()
([-1, 0], [[64, 0, 255]])
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from numba import njit, prange

from ..files import atomic_write

SHIFT = 3
FILES = ("rows.slot.npy", "rows.max.npy")
CHUNK_POSTINGS = 1 << 25  # postings mapped at once while writing (256 MB of data + rows)


def ranges(num_docs: int, shift: int) -> int:
    """Number of row ranges of ``2**shift`` rows covering ``num_docs`` rows."""
    return ((max(num_docs, 1) - 1) >> shift) + 1


def default_min_df(num_docs: int, shift: int = SHIFT) -> int:
    """Terms with more postings than a sixteenth of the ranges get precomputed maxima: at that
    length, adding a byte per range (vectorised) costs less than reading the postings."""
    return max(16, ranges(num_docs, shift) // 16)


@njit(nogil=True, cache=True, parallel=True)
def _fill(data, indices, indptr, tmax, terms, shift, out):
    for s in prange(len(terms)):
        t = terms[s]
        row = out[s]
        top = np.float64(tmax[t])
        for p in range(indptr[t], indptr[t + 1]):
            r = indices[p] >> shift
            q = np.int64(np.ceil(np.float64(data[p]) * 255.0 / top)) if top > 0 else 255
            q = max(1, min(255, q))
            if q > row[r]:
                row[r] = q


def fill(data, indices, indptr, tmax, terms, shift: int, out: np.ndarray) -> None:
    """Raise ``out[s]`` to the range bytes of ``terms[s]`` in a CSC slice held in memory (the
    compact build fills its rows as it merges)."""
    _fill(data, indices, np.asarray(indptr, dtype=np.int64), tmax, terms, shift, out)


def _dense(indptr, num_docs: int, shift: int, min_df: int):
    """(min_df, the frequent terms ascending, slot int32[V]) of a matrix's column pointers."""
    min_df = min_df or default_min_df(num_docs, shift)
    terms = np.flatnonzero(np.diff(np.asarray(indptr, dtype=np.int64)) > min_df)
    slot = np.full(len(indptr) - 1, -1, dtype=np.int32)
    slot[terms] = np.arange(len(terms), dtype=np.int32)
    return min_df, terms.astype(np.int64), slot


def compute(data, indices, indptr, tmax, num_docs: int, shift: int = SHIFT, min_df: int = 0):
    """(slot int32[V], maxima uint8[D, R]) of an in-memory CSC matrix (tests and tools)."""
    _, terms, slot = _dense(indptr, num_docs, shift, min_df)
    out = np.zeros((len(terms), ranges(num_docs, shift)), dtype=np.uint8)
    if len(terms):
        _fill(data, indices, np.asarray(indptr, dtype=np.int64), tmax, terms, shift, out)
    return slot, out


def write(folder: str | os.PathLike, num_docs: int, shift: int = SHIFT, min_df: int = 0) -> dict:
    """Add the range maxima to a bm25s folder that has ``terms.max.npy``; returns the manifest's
    ``postings.row_ranges`` entry. Terms are done in chunks of about ``CHUNK_POSTINGS`` postings,
    each through fresh memory maps, so resident memory stays bounded at any corpus size."""
    folder = Path(folder)
    indptr = np.load(folder / "indptr.csc.index.npy")
    tmax = np.load(folder / "terms.max.npy")
    min_df, terms, slot = _dense(indptr, num_docs, shift, min_df)
    partial = folder / (FILES[1] + ".partial")
    shape = (len(terms), ranges(num_docs, shift))
    np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape).flush()  # zeroed
    lo = 0
    while lo < len(terms):
        hi = lo + 1
        while hi < len(terms) and indptr[terms[hi] + 1] - indptr[terms[lo]] <= CHUNK_POSTINGS:
            hi += 1
        data = np.load(folder / "data.csc.index.npy", mmap_mode="r")
        indices = np.load(folder / "indices.csc.index.npy", mmap_mode="r")
        out = np.lib.format.open_memmap(partial, mode="r+")
        _fill(data, indices, indptr, tmax, terms[lo:hi], shift,
              out[lo:hi].view(np.ndarray))  # fmt: skip
        out.flush()
        del data, indices, out  # unmapped: their pages leave this process
        lo = hi
    os.replace(partial, folder / FILES[1])
    buf = io.BytesIO()
    np.save(buf, slot)  # then one write: a full disk raises with its errno (tofile's does not)
    with atomic_write(folder / FILES[0]) as f:  # never rewrite a mapped file in place
        f.write(buf.getbuffer())
    return {"shift": int(shift), "min_df": int(min_df), "dense_terms": int(len(terms))}


def load(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The memory-mapped (slot, maxima), or None for an index built without them."""
    paths = [Path(folder) / f for f in FILES]
    if not all(p.is_file() for p in paths):
        return None
    return tuple(np.load(p, mmap_mode="r") for p in paths)
