"""Write side of the corpus store (see ``docstore``): streaming, bounded memory, atomic finish.

The writer fills a folder that the caller later renames into place; ``finish`` writes the
manifest last, so a folder without one is never mistaken for a finished store.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from pathlib import Path

import numpy as np
import orjson

from ..errors import CorpusInputError
from ..manifest import write_manifest
from .keyindex import KeyIndex, save_key_index
from .titles import key_hash, lookup_key

_CHUNK = 1 << 24


class StoreWriter:
    """Append passages (and pages, and redirects) in order; ``finish`` writes tables + manifest."""

    def __init__(self, folder: str | os.PathLike, with_pages: bool = True):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._passages = open(self.folder / "passages.jsonl", "wb", buffering=_CHUNK)
        self._sha = hashlib.sha256()
        self._offsets = array("Q", [0])
        self._pos = 0
        self._id_hashes = array("q")
        self._title_hashes = array("q")
        self._title_rows = array("q")
        self._prev_title: str | None = None
        self._prev_hashes: list[int] = []
        self._ids_are_rows = True
        self._words = 0
        self.with_pages = with_pages
        if with_pages:
            self._pages = open(self.folder / "pages.jsonl", "wb", buffering=_CHUNK)
            self._page_offsets = array("Q", [0])
            self._page_pos = 0
            self._page_hashes = array("q")
            self._page_rows = array("q")
        self._redirects: list[tuple[int, int]] = []

    @property
    def num_passages(self) -> int:
        return len(self._offsets) - 1

    @property
    def num_pages(self) -> int:
        return len(self._page_offsets) - 1 if self.with_pages else 0

    def add_passage(self, pid: str, title: str, text: str, url: str) -> int:
        row = self.num_passages
        line = orjson.dumps({"id": pid, "title": title, "text": text, "url": url}) + b"\n"
        self._passages.write(line)
        self._sha.update(line)
        self._pos += len(line)
        self._offsets.append(self._pos)
        self._id_hashes.append(key_hash(pid))
        if self._ids_are_rows and pid != str(row):
            self._ids_are_rows = False
        if title != self._prev_title:
            self._prev_title = title
            self._prev_hashes = [key_hash(k) for k in {lookup_key(title), lookup_key(url)}]
        for h in self._prev_hashes:
            self._title_hashes.append(h)
            self._title_rows.append(row)
        self._words += (text.count(" ") + 1) if text else 0
        return row

    def add_page(self, pid: str, title: str, url: str, text: str) -> int:
        row = self.num_pages
        line = orjson.dumps({"id": pid, "title": title, "url": url, "text": text}) + b"\n"
        self._pages.write(line)
        self._page_pos += len(line)
        self._page_offsets.append(self._page_pos)
        for key in {lookup_key(title), lookup_key(url), "id:" + pid}:
            self._page_hashes.append(key_hash(key))
            self._page_rows.append(row)
        return row

    def add_redirect(self, source_title: str, target_title: str) -> None:
        """``source_title`` resolves to the page of ``target_title`` (resolved at ``finish``)."""
        self._redirects.append(
            (key_hash(lookup_key(source_title)), key_hash(lookup_key(target_title)))
        )

    def _check_unique_ids(self) -> None:
        hashes = np.frombuffer(self._id_hashes, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        dup = np.flatnonzero(np.diff(hashes[order]) == 0)
        if len(dup):
            a, b = int(order[dup[0]]), int(order[dup[0] + 1])
            raise CorpusInputError(
                str(self.folder),
                f"passages {a} and {b}",
                "two passages share one id; ids must be unique",
            )

    def _resolve_redirects(self) -> int:
        """Add redirect keys to the page-key table, following chains up to 5 hops."""
        if not self._redirects or not self.with_pages:
            return 0
        src = np.array([s for s, _ in self._redirects], dtype=np.int64)
        dst = np.array([t for _, t in self._redirects], dtype=np.int64)
        save_key_index(self.folder, "pagekeys", self._page_hashes, self._page_rows)
        table = KeyIndex(self.folder, "pagekeys")
        redirect_of = dict(zip(src.tolist(), dst.tolist()))
        rows = table.lookup_hashes(dst)
        for _ in range(5):
            missing = np.flatnonzero(rows < 0)
            if not len(missing):
                break
            nxt = np.array([redirect_of.get(int(h), -1) for h in dst[missing]], dtype=np.int64)
            dst[missing] = nxt
            rows[missing] = table.lookup_hashes(nxt)
        ok = rows >= 0
        self._page_hashes.extend(src[ok].tolist())
        self._page_rows.extend(rows[ok].tolist())
        return int(ok.sum())

    def finish(self, manifest: dict) -> dict:
        """Flush, write the key tables and the manifest; returns the manifest written."""
        self._passages.close()
        np.save(self.folder / "passages.offsets.npy", np.frombuffer(self._offsets, dtype=np.uint64))
        if not self._ids_are_rows:
            self._check_unique_ids()
            save_key_index(self.folder, "ids", self._id_hashes, np.arange(self.num_passages))
        save_key_index(self.folder, "titles", self._title_hashes, self._title_rows)
        num_redirects = 0
        if self.with_pages:
            self._pages.close()
            np.save(
                self.folder / "pages.offsets.npy",
                np.frombuffer(self._page_offsets, dtype=np.uint64),
            )
            num_redirects = self._resolve_redirects()
            save_key_index(self.folder, "pagekeys", self._page_hashes, self._page_rows)
        full = {
            "kind": "corpus",
            "num_docs": self.num_passages,
            "num_pages": self.num_pages,
            "num_redirects": num_redirects,
            "checksum": "sha256:" + self._sha.hexdigest(),
            "passages": {"path": "passages.jsonl", "format": "store", "bytes": self._pos},
            "ids": "row" if self._ids_are_rows else "table",
            "words_per_passage": round(self._words / max(1, self.num_passages), 2),
            **manifest,
        }
        write_manifest(self.folder, full)
        return full

    def abort(self) -> None:
        self._passages.close()
        if self.with_pages:
            self._pages.close()


def index_jsonl_in_place(
    source: str | os.PathLike, folder: str | os.PathLike, row_format: str, progress=None
) -> dict:
    """Index a user's passage JSONL where it lies (no copy): offsets, id and title tables.

    ``progress`` (optional) is called with the number of bytes read so far.
    """
    from .docstore import parse_row
    from .titles import title_to_url

    source = Path(source).resolve()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    offsets = array("Q", [0])
    id_hashes = array("q")
    title_hashes = array("q")
    title_rows = array("q")
    ids_are_rows = True
    prev_title = None
    prev_hashes: list[int] = []
    words = 0
    pos = 0
    with open(source, "rb") as f:
        for lineno, line in enumerate(f, 1):
            sha.update(line)
            if not line.strip():
                raise CorpusInputError(
                    str(source), f"line {lineno}", "empty line inside a passage file"
                )
            try:
                pid, title, text, url = parse_row(line, row_format)
            except (orjson.JSONDecodeError, KeyError, AttributeError) as exc:
                raise CorpusInputError(
                    str(source), f"line {lineno}", f"not a {row_format} row: {exc}"
                ) from exc
            row = len(offsets) - 1
            pos += len(line)
            offsets.append(pos)
            pid = pid if pid is not None else str(row)
            id_hashes.append(key_hash(pid))
            if ids_are_rows and pid != str(row):
                ids_are_rows = False
            if title != prev_title:
                prev_title = title
                keys = {lookup_key(title), lookup_key(url or title_to_url(title))}
                prev_hashes = [key_hash(k) for k in keys]
            for h in prev_hashes:
                title_hashes.append(h)
                title_rows.append(row)
            words += (text.count(" ") + 1) if text else 0
            if progress is not None and lineno % 10000 == 0:
                progress(pos)
    n = len(offsets) - 1
    np.save(folder / "passages.offsets.npy", np.frombuffer(offsets, dtype=np.uint64))
    if not ids_are_rows:
        hashes = np.frombuffer(id_hashes, dtype=np.int64)
        if len(np.unique(hashes)) != n:
            raise CorpusInputError(
                str(source), "ids", "two passages share one id; ids must be unique"
            )
        save_key_index(folder, "ids", hashes, np.arange(n))
    save_key_index(folder, "titles", title_hashes, title_rows)
    manifest = {
        "kind": "corpus",
        "num_docs": n,
        "num_pages": 0,
        "checksum": "sha256:" + sha.hexdigest(),
        "passages": {"path": str(source), "format": row_format, "bytes": pos},
        "ids": "row" if ids_are_rows else "table",
        "words_per_passage": round(words / max(1, n), 2),
    }
    return manifest
