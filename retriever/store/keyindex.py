"""A sorted-hash lookup table: string key -> rows, stored as two memory-mapped ``.npy`` files.

Keys are hashed to 63 bits (``titles.key_hash``); several rows may share a key (a title that
names a run of passages, or a hash collision, which callers resolve by checking the row).
"""

from __future__ import annotations

import mmap
import os
from array import array
from pathlib import Path

import numpy as np

from ..errors import ClosedError, CorpusInputError
from .titles import key_hash, lookup_key, title_to_url


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


def save_key_runs(folder: str | os.PathLike, name: str, hashes, rows) -> int:
    """Like ``save_key_index``, but each run of consecutive rows under one key is one entry:
    ``NAME.rows.npy`` holds its first row and ``NAME.count.npy`` its length. A title's
    passages are such a run, so the table has an entry per page, not per passage (a spans
    store's titles: 21 MB -> 1.2 MB at 666k passages). Returns the number of entries."""
    hashes = np.asarray(hashes, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    order = np.lexsort((rows, hashes))
    hashes, rows = hashes[order], rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (hashes[1:] != hashes[:-1]) | (rows[1:] != rows[:-1] + 1)
    firsts = np.flatnonzero(new)
    counts = np.diff(np.append(firsts, len(rows))).astype(np.uint32)
    folder = Path(folder)
    np.save(folder / f"{name}.hash.npy", hashes[firsts])
    np.save(folder / f"{name}.rows.npy", rows[firsts])
    np.save(folder / f"{name}.count.npy", counts)
    return len(firsts)


class PassageTables:
    """The one builder of a passage store's row tables, for copied and in-place stores alike:
    byte offsets, the id table and the title/url table, fed one row at a time.

    ``offsets`` holds each row's start and, last, the end of the data; with rows skipped in a
    user's file a row's slice runs on to the next kept row, and readers stop at its newline.
    """

    def __init__(self) -> None:
        self._starts = array("Q")
        self._id_hashes = array("q")
        self._title_hashes = array("q")
        self._title_rows = array("q")
        self._prev: tuple[str, str | None] | None = None
        self._prev_hashes: list[int] = []
        self.ids_are_rows = True
        self.words = 0

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, start: int, pid: str | None, title: str, text: str, url: str | None) -> int:
        """Record the row that starts at byte ``start``; returns its row number."""
        row = len(self._starts)
        self._starts.append(start)
        pid = str(row) if pid is None else pid
        self._id_hashes.append(key_hash(pid))
        if self.ids_are_rows and pid != str(row):
            self.ids_are_rows = False
        if (title, url) != self._prev:
            self._prev = (title, url)
            keys = {lookup_key(title), lookup_key(url or title_to_url(title))}
            self._prev_hashes = [key_hash(k) for k in keys]
        for h in self._prev_hashes:
            self._title_hashes.append(h)
            self._title_rows.append(row)
        self.words += (text.count(" ") + 1) if text else 0
        return row

    def save(
        self,
        folder: str | os.PathLike,
        end: int,
        source: str,
        offsets: bool = True,
        id_rows: np.ndarray | None = None,
        title_runs: bool = False,
    ) -> dict:
        """Write ``passages.offsets.npy`` (unless ``offsets`` is false: a layout without
        passage rows) and the key tables; returns the manifest's keys. ``id_rows``: the only
        rows the id table holds (a layout that derives the other ids from their pages);
        ``title_runs``: the title table as runs of rows (``save_key_runs``)).
        Two rows with one id are refused, naming both (``source`` names the input)."""
        folder = Path(folder)
        n = len(self._starts)
        if offsets:
            table = np.empty(n + 1, dtype=np.uint64)
            table[:n] = np.frombuffer(self._starts, dtype=np.uint64)
            table[n] = end
            np.save(folder / "passages.offsets.npy", table)
        if not self.ids_are_rows:
            hashes = np.frombuffer(self._id_hashes, dtype=np.int64)
            order = np.argsort(hashes, kind="stable")
            dup = np.flatnonzero(np.diff(hashes[order]) == 0)
            if len(dup):
                a, b = int(order[dup[0]]), int(order[dup[0] + 1])
                raise CorpusInputError(
                    source, f"passages {a} and {b}", "two passages share one id; ids must be unique"
                )
            if id_rows is None:
                save_key_index(folder, "ids", hashes, np.arange(n))
            else:
                save_key_index(folder, "ids", hashes[id_rows], id_rows)
        save = save_key_runs if title_runs else save_key_index
        save(folder, "titles", self._title_hashes, self._title_rows)
        return {
            "num_docs": n,
            "ids": "row" if self.ids_are_rows else "table" if id_rows is None else "pages",
            "words_per_passage": round(self.words / max(1, n), 2),
        }


class KeyIndex:
    """Read side of ``save_key_index`` (and of ``save_key_runs``, when ``NAME.count.npy`` is
    there): memory-mapped, opened in microseconds."""

    def __init__(self, folder: str | os.PathLike, name: str):
        folder = Path(folder)
        self.path = folder / f"{name}.hash.npy"
        self.hashes = load_array(self.path)
        self.rows = load_array(folder / f"{name}.rows.npy")
        runs = folder / f"{name}.count.npy"
        self.counts = load_array(runs) if runs.is_file() else None

    @staticmethod
    def exists(folder: str | os.PathLike, name: str) -> bool:
        return (Path(folder) / f"{name}.hash.npy").is_file()

    def close(self) -> None:
        """Drop the mapped tables: their descriptors close now, not when the garbage collector
        runs (a mapped array holds one). Safe twice; a lookup afterwards raises ClosedError."""
        self.hashes = self.rows = self.counts = None

    def _check_open(self) -> None:
        if self.hashes is None:
            raise ClosedError(f"key table {self.path}")

    def __len__(self) -> int:
        self._check_open()
        return len(self.hashes)

    def find_hash(self, h: int) -> list[int]:
        self._check_open()
        lo = int(np.searchsorted(self.hashes, h, side="left"))
        hi = int(np.searchsorted(self.hashes, h, side="right"))
        if self.counts is None:
            return [int(r) for r in self.rows[lo:hi]]
        out: list[int] = []
        for first, count in zip(self.rows[lo:hi].tolist(), self.counts[lo:hi].tolist()):
            out.extend(range(first, first + count))
        return out

    def find(self, key: str) -> list[int]:
        """Rows stored under ``key`` (in row order), possibly empty."""
        return self.find_hash(key_hash(key))

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """First row for each hash, -1 where absent (vectorised, for redirect resolution)."""
        self._check_open()
        hashes = np.asarray(hashes, dtype=np.int64)
        if len(self.hashes) == 0:
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self.hashes, hashes, side="left")
        pos_c = np.minimum(pos, len(self.hashes) - 1)
        found = self.hashes[pos_c] == hashes
        return np.where(found, self.rows[pos_c], -1).astype(np.int64)
