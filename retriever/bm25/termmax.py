"""Each term's largest score (``terms.max.npy``, float32[V]), written beside the bm25s files.

``bmp`` stores a frequent term's range maxima as bytes relative to it (``rowmax``) and reads it
back to bound a range. The maximum is taken over the very float32 scores the kernels add, so
the bounds are exact. Parts built before this layout (``csc+blockmax``) have the same file plus
per-block arrays (``blocks.*.npy``) of a removed kernel: they open as they are, those files
are ignored.

>>> term_maxima(np.float32([1, 5, 2, 3, 1, 4, 4, 9]), np.array([0, 3, 3, 8])).tolist()
[5.0, 0.0, 9.0]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

FILE = "terms.max.npy"
LAYOUT = "csc+termmax"
LAYOUTS = (LAYOUT, "csc+blockmax")  # every layout that has ``FILE``


def term_maxima(scores: np.ndarray, local_indptr: np.ndarray) -> np.ndarray:
    """The largest score of each of the consecutive columns whose postings are ``scores`` and
    whose pointers (starting at 0) are ``local_indptr``; 0 for a term without postings."""
    local_indptr = np.asarray(local_indptr, dtype=np.int64)
    out = np.zeros(len(local_indptr) - 1, dtype=np.float32)
    has = np.diff(local_indptr) > 0
    if has.any():
        out[has] = np.maximum.reduceat(np.asarray(scores, np.float32), local_indptr[:-1][has])
    return out


def load(folder: str | os.PathLike) -> np.ndarray | None:
    """The memory-mapped maxima, or None for a part built without them."""
    path = Path(folder) / FILE
    return np.load(path, mmap_mode="r") if path.is_file() else None
