"""Write side of the corpus store (see ``docstore``): streaming, bounded memory, atomic finish.

Two ways in, one set of tables (``keyindex.PassageTables``) and one row parser (``rows``):
``StoreWriter`` copies passages (and pages, and redirects) into the folder; ``index_in_place``
indexes a user's passage or page JSONL where it lies. The caller fills a ``.partial`` folder
and renames it into place; the manifest is written last, so a folder without one is never
mistaken for a finished store. The caller records the size and sha256 of every file the
store wrote (``retriever.files.file_table``) in the manifest for ``index_build verify``.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Callable, MutableMapping
from pathlib import Path

import numpy as np
import orjson

from ..errors import CorpusInputError
from ..manifest import SPANS_FORMAT_VERSION, write_manifest
from . import spans as span_layout
from .keyindex import KeyIndex, PassageTables, save_key_index
from .rows import STORE_FORMAT, row_fields
from .spans import SpansWriter
from .titles import key_hash, lookup_key

_CHUNK = 1 << 24
META_FILE = "pages.meta.jsonl"  # per page: {"sections": [[level, heading, offset]], "links":
META_OFFSETS = "pages.meta.offsets.npy"  # [[target, anchor, offset]]}; offsets into its text
STORES = ("jsonl", "spans", "spans,zstd")  # layouts: rows as JSONL, or passages as page spans


def page_keys(pid: str | None, title: str, url: str) -> set[str]:
    """Every lookup key of a page: its title, its url and, when it has one, ``id:ID``."""
    keys = {lookup_key(title), lookup_key(url)}
    if pid is not None:
        keys.add("id:" + pid)
    return keys


class StoreWriter:
    """Append passages (and pages, and redirects) in order; ``finish`` writes tables + manifest."""

    def __init__(
        self,
        folder: str | os.PathLike,
        with_pages: bool = True,
        with_meta: bool = False,
        store: str = "jsonl",
    ):
        if store not in STORES:
            raise CorpusInputError(
                str(folder), "options", f"store {store!r} is not one of {', '.join(STORES)}"
            )
        if store != "jsonl" and not with_pages:
            raise CorpusInputError(
                str(folder), "options", f"store {store!r} needs pages; use the jsonl store"
            )
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = store
        # spans: passages are spans of the page text (``spans``); no passages.jsonl, pages.jsonl
        self._spans = (
            None
            if store == "jsonl"
            else SpansWriter(
                self.folder,
                "zstd" if store.endswith(",zstd") else None,
                block_bytes=span_layout.BLOCK_BYTES,  # read here: a test or bench may set them
                dict_bytes=span_layout.DICT_BYTES,
            )
        )
        self._passages = (
            open(self.folder / "passages.jsonl", "wb", buffering=_CHUNK)
            if self._spans is None
            else None
        )
        self._sha = hashlib.sha256()
        self._pos = 0
        self._tables = PassageTables()
        self.with_pages = with_pages
        if with_pages:
            self._pages = (
                open(self.folder / "pages.jsonl", "wb", buffering=_CHUNK)
                if self._spans is None
                else None
            )
            self._page_offsets = array("Q", [0])
            self._page_pos = 0
            self._page_hashes = array("q")
            self._page_rows = array("q")
        # pages.meta.jsonl: one row per page (sections, links), beside pages.jsonl
        self.with_meta = with_pages and with_meta
        if self.with_meta:
            self._meta = open(self.folder / META_FILE, "wb", buffering=_CHUNK)
            self._meta_offsets = array("Q", [0])
            self._meta_counts = {"sections": 0, "links": 0}
        self._redirects: list[tuple[int, int]] = []

    @property
    def num_passages(self) -> int:
        return len(self._tables)

    @property
    def num_pages(self) -> int:
        return len(self._page_offsets) - 1 if self.with_pages else 0

    def add_passage(self, pid: str, title: str, text: str, url: str) -> int:
        line = orjson.dumps({"id": pid, "title": title, "text": text, "url": url}) + b"\n"
        # the checksum is the jsonl store's for either layout: parts built on one fit the other
        self._sha.update(line)
        if self._spans is None:
            self._passages.write(line)
        else:
            self._spans.add_passage(pid, title, text, url)
        row = self._tables.add(self._pos, pid, title, text, url)
        self._pos += len(line)
        return row

    def add_page(self, pid: str, title: str, url: str, text: str, meta: dict | None = None) -> int:
        """Append a page; ``meta`` (``sections``, ``links`` with offsets into ``text``) goes to
        the side file when the store keeps one (a page without it gets an empty row)."""
        row = self.num_pages
        if self._spans is None:
            line = orjson.dumps({"id": pid, "title": title, "url": url, "text": text}) + b"\n"
            self._pages.write(line)
            self._page_pos += len(line)
        else:
            self._spans.add_page(pid, title, url, text)
        self._page_offsets.append(self._page_pos)
        if self.with_meta:
            meta = meta or {}
            sections, links = meta.get("sections") or [], meta.get("links") or []
            self._meta_counts["sections"] += len(sections)
            self._meta_counts["links"] += len(links)
            mline = orjson.dumps({"sections": sections, "links": links}) + b"\n"
            self._meta.write(mline)
            self._meta_offsets.append(self._meta_offsets[-1] + len(mline))
        for key in page_keys(pid, title, url):
            self._page_hashes.append(key_hash(key))
            self._page_rows.append(row)
        return row

    def add_redirect(self, source_title: str, target_title: str) -> None:
        """``source_title`` resolves to the page of ``target_title`` (resolved at ``finish``)."""
        self._redirects.append(
            (key_hash(lookup_key(source_title)), key_hash(lookup_key(target_title)))
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
        spans = None
        if self._spans is None:
            self._passages.close()
        else:
            spans = self._spans.finish()
        tables = self._tables.save(
            self.folder,
            self._pos,
            str(self.folder),
            offsets=self._spans is None,
            # spans: ids derive from the page ids ("PAGE-k"); the table holds the others
            id_rows=None if self._spans is None else np.frombuffer(self._spans.odd_ids, np.int64),
            title_runs=self._spans is not None,  # a title's passages: one run of rows
        )
        num_redirects = 0
        pages = None
        if self.with_pages and spans is None:
            self._pages.close()
            np.save(
                self.folder / "pages.offsets.npy",
                np.frombuffer(self._page_offsets, dtype=np.uint64),
            )
            num_redirects = self._resolve_redirects()
            save_key_index(self.folder, "pagekeys", self._page_hashes, self._page_rows)
            pages = {"path": "pages.jsonl", "format": STORE_FORMAT, "bytes": self._page_pos}
        elif self.with_pages:
            num_redirects = self._resolve_redirects()
            save_key_index(self.folder, "pagekeys", self._page_hashes, self._page_rows)
        page_meta = self._finish_meta()
        full = {
            "kind": "corpus",
            **tables,
            "num_pages": self.num_pages,
            "num_redirects": num_redirects,
            "checksum": "sha256:" + self._sha.hexdigest(),
            "passages": {"path": "passages.jsonl", "format": STORE_FORMAT, "bytes": self._pos},
            "pages": pages,
            **({"page_meta": page_meta} if page_meta else {}),
            **(spans or {}),  # the spans layout: its passages, pages and store entries
            **({"format_version": SPANS_FORMAT_VERSION} if spans else {}),
            **manifest,
        }
        write_manifest(self.folder, full)
        return full

    def _finish_meta(self) -> dict | None:
        """Close the sections/links side file; its manifest entry (None when not kept)."""
        if not self.with_meta:
            return None
        self._meta.close()
        np.save(self.folder / META_OFFSETS, np.frombuffer(self._meta_offsets, dtype=np.uint64))
        return {
            "path": META_FILE,
            "format": "jsonl",
            "bytes": int(self._meta_offsets[-1]),
            "num_sections": self._meta_counts["sections"],
            "num_links": self._meta_counts["links"],
        }

    def abort(self) -> None:
        if self._spans is not None:
            self._spans.abort()
        else:
            self._passages.close()
        if self.with_pages and self._pages is not None:
            self._pages.close()
        if self.with_meta:
            self._meta.close()


def index_in_place(
    source: str | os.PathLike,
    folder: str | os.PathLike,
    kind: str = "passages",
    on_error: str = "raise",
    skipped: MutableMapping[str, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Index a user's JSONL where it lies (no copy): the offsets and key tables of its
    passages (``kind="passages"``) or full pages (``kind="pages"``, ASearcher's
    ``wiki_webpages.jsonl``); returns the manifest entries that describe it.

    Rows that do not parse raise ``CorpusInputError`` naming the line, or with
    ``on_error="skip"`` are left out and counted in ``skipped``; ``progress(n)`` is called with
    the bytes read since its last call.
    """
    source = Path(source).resolve()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    skipped = {} if skipped is None else skipped
    sha = hashlib.sha256()
    tables = PassageTables()
    page_starts = array("Q")
    page_hashes, page_rows = array("q"), array("q")
    pos = reported = 0
    with open(source, "rb") as f:
        for lineno, line in enumerate(f, 1):
            sha.update(line)
            start, pos = pos, pos + len(line)
            if progress is not None and lineno % 10000 == 0:
                progress(pos - reported)
                reported = pos
            if not line.strip():  # blank lines are no rows (as when copying)
                continue
            try:
                pid, title, text, url = row_fields(orjson.loads(line))
                if kind == "pages" and not url:
                    raise KeyError("a page row needs a 'url'")
            except (orjson.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
                if on_error != "skip":
                    raise CorpusInputError(
                        str(source), f"line {lineno}", f"not a {kind} row: {exc}"
                    ) from exc
                reason = "malformed" if kind == "passages" else "malformed pages"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            if kind == "passages":
                tables.add(start, pid, title, text, url)
                continue
            row = len(page_starts)
            page_starts.append(start)
            for key in page_keys(pid, title, url):
                page_hashes.append(key_hash(key))
                page_rows.append(row)
    if progress is not None:
        progress(pos - reported)
    entry = {"path": str(source), "format": "jsonl", "bytes": pos}
    if kind == "pages":
        offsets = np.append(np.frombuffer(page_starts, dtype=np.uint64), np.uint64(pos))
        np.save(folder / "pages.offsets.npy", offsets.astype(np.uint64))
        save_key_index(folder, "pagekeys", page_hashes, page_rows)
        return {"num_pages": len(page_starts), "pages": {**entry, "sha256": sha.hexdigest()}}
    return {
        "kind": "corpus",
        **tables.save(folder, pos, str(source)),
        "checksum": "sha256:" + sha.hexdigest(),
        "passages": entry,
    }
