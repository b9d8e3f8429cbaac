"""Per-block score maxima over the postings of a bm25s CSC matrix, for exact dynamic pruning.

Each term's column (rows ascending) is cut into blocks of ``BLOCK_SIZE`` postings. Stored beside
the bm25s files, all memory-mapped at search time:

- ``blocks.ptr.npy``  int64[V+1]: first block of each term (term ``t`` owns blocks
  ``ptr[t]:ptr[t+1]``; block ``j`` of it covers postings ``indptr[t] + j*BLOCK_SIZE`` on);
- ``blocks.max.npy``  float32[B]: the largest precomputed score in the block;
- ``blocks.last.npy`` int32[B]: the block's last row (a cursor skips the block when it wants
  a higher row);
- ``terms.max.npy``   float32[V]: the largest score of each term (MaxScore's term bound).

The maxima are taken over the very float32 scores the kernel adds, so the bounds are exact.

>>> ptr = block_pointers(np.array([0, 3, 3, 8]), 2)
>>> ptr.tolist()
[0, 2, 2, 5]
>>> bmax, blast = block_stats(np.float32([1, 5, 2, 3, 1, 4, 4, 9]), np.arange(8), np.array([0, 3, 3, 8]), 2)
>>> bmax.tolist(), blast.tolist()
([5.0, 2.0, 3.0, 4.0, 9.0], [1, 2, 4, 6, 7])
>>> term_maxima(bmax, ptr).tolist()
[5.0, 0.0, 9.0]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOCK_SIZE = 128
LAYOUT = "csc+blockmax"
FILES = ("blocks.ptr.npy", "blocks.max.npy", "blocks.last.npy", "terms.max.npy")


def block_pointers(indptr: np.ndarray, block_size: int = BLOCK_SIZE) -> np.ndarray:
    """First block of each term from the CSC column pointers."""
    df = np.diff(np.asarray(indptr, dtype=np.int64))
    ptr = np.zeros(len(df) + 1, dtype=np.int64)
    np.cumsum((df + block_size - 1) // block_size, out=ptr[1:])
    return ptr


def block_stats(
    scores: np.ndarray, docs: np.ndarray, local_indptr: np.ndarray, block_size: int = BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """(max score, last row) of every block of the consecutive columns whose postings are
    ``scores``/``docs`` and whose pointers (starting at 0) are ``local_indptr``."""
    local_indptr = np.asarray(local_indptr, dtype=np.int64)
    df = np.diff(local_indptr)
    nb = (df + block_size - 1) // block_size
    if nb.sum() == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int32)
    term_of_block = np.repeat(np.arange(len(df)), nb)
    first_block = np.concatenate([[0], np.cumsum(nb)[:-1]])
    j = np.arange(len(term_of_block)) - first_block[term_of_block]
    starts = local_indptr[term_of_block] + j * block_size
    ends = np.minimum(starts + block_size, local_indptr[term_of_block + 1])
    bmax = np.maximum.reduceat(np.asarray(scores, dtype=np.float32), starts)
    return bmax.astype(np.float32), np.asarray(docs, dtype=np.int32)[ends - 1]


def term_maxima(block_max: np.ndarray, local_block_ptr: np.ndarray) -> np.ndarray:
    """The largest score of each term (0 for a term without postings)."""
    local_block_ptr = np.asarray(local_block_ptr, dtype=np.int64)
    out = np.zeros(len(local_block_ptr) - 1, dtype=np.float32)
    has = np.diff(local_block_ptr) > 0
    if has.any():
        out[has] = np.maximum.reduceat(block_max, local_block_ptr[:-1][has])
    return out


def compute(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, block_size: int = BLOCK_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All four arrays of an in-memory matrix (what the builder writes, for tests and tools)."""
    ptr = block_pointers(indptr, block_size)
    bmax, blast = block_stats(data, indices, np.asarray(indptr) - indptr[0], block_size)
    return ptr, bmax, blast, term_maxima(bmax, ptr)


def load(folder: Path) -> tuple[np.ndarray, ...] | None:
    """The memory-mapped arrays of ``folder``, or None for an index built without them."""
    paths = [Path(folder) / f for f in FILES]
    if not all(p.is_file() for p in paths):
        return None
    return tuple(np.load(p, mmap_mode="r") for p in paths)
