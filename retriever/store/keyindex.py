"""A sorted-hash lookup table: string key -> rows, stored as two memory-mapped ``.npy`` files.

Keys are hashed to 63 bits (``titles.key_hash``); several rows may share a key (a title that
names a run of passages, or a hash collision, which callers resolve by checking the row).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from .titles import key_hash


def random_access(m) -> None:
    """Tell the kernel reads are random: no read-ahead, so RSS grows only by what is read."""
    if hasattr(m, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        m.madvise(mmap.MADV_RANDOM)


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A memory-mapped ``.npy`` read at random places (offsets, key tables)."""
    arr = np.load(path, mmap_mode="r")
    if getattr(arr, "_mmap", None) is not None:
        random_access(arr._mmap)
    return arr


def save_key_index(folder: str | os.PathLike, name: str, hashes, rows) -> int:
    """Sort (hash, row) pairs and write ``NAME.hash.npy`` and ``NAME.rows.npy``; returns count."""
    hashes = np.asarray(hashes, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    order = np.lexsort((rows, hashes))
    folder = Path(folder)
    np.save(folder / f"{name}.hash.npy", hashes[order])
    np.save(folder / f"{name}.rows.npy", rows[order])
    return len(order)


class KeyIndex:
    """Read side of ``save_key_index``: memory-mapped, opened in microseconds."""

    def __init__(self, folder: str | os.PathLike, name: str):
        folder = Path(folder)
        self.hashes = load_array(folder / f"{name}.hash.npy")
        self.rows = load_array(folder / f"{name}.rows.npy")

    @staticmethod
    def exists(folder: str | os.PathLike, name: str) -> bool:
        return (Path(folder) / f"{name}.hash.npy").is_file()

    def __len__(self) -> int:
        return len(self.hashes)

    def find_hash(self, h: int) -> list[int]:
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        return [int(r) for r in self.rows[lo:hi]]

    def find(self, key: str) -> list[int]:
        """Rows stored under ``key`` (in row order), possibly empty."""
        return self.find_hash(key_hash(key))

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """First row for each hash, -1 where absent (vectorised, for redirect resolution)."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if len(self.hashes) == 0:
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self.hashes, hashes, side="left")
        pos_c = np.minimum(pos, len(self.hashes) - 1)
        found = self.hashes[pos_c] == hashes
        return np.where(found, self.rows[pos_c], -1).astype(np.int64)
