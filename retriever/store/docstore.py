"""The memory-mapped passage store (``INDEX_ROOT/corpus``): write once, read rows anywhere.

Layout (all plain files, opened with ``mmap``; nothing is loaded whole):

- ``passages.jsonl`` + ``passages.offsets.npy`` (uint64, n+1 byte offsets). The data file may
  also be a user's own JSONL (a Search-R1 ``wiki-18.jsonl``) read in place: the manifest names
  its path and row format, and only the offsets and key tables are written here.
- ``pages.jsonl`` + ``pages.offsets.npy``: full articles for the access tool (optional; may
  also be a user's page file read in place, such as ASearcher's ``wiki_webpages.jsonl``).
- ``ids.*.npy``: passage id -> row (absent when every id is its row number).
- ``titles.*.npy``: title/url key -> rows of that title's passages.
- ``pagekeys.*.npy``: title/url/redirect/``id:`` key -> page row.

A store built with ``--store spans[,zstd]`` keeps no ``passages.jsonl``/``pages.jsonl``: its
manifest's ``store.layout`` says so and rows are read through ``spans.SpansReader`` (each word
stored once). The key tables are the same in both layouts, except that a ``spans`` store's
title table holds runs of rows (``titles.count.npy``: one entry per page, not per passage).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import orjson

from ..errors import ClosedError, CorruptStoreError, IndexFormatError
from ..manifest import read_manifest
from ..types import Page, Passage
from .keyindex import KeyIndex
from .rows import STORE_FORMAT, parse_row
from .spans import LAYOUT as SPANS
from .spans import SpansReader
from .titles import lookup_key, title_to_url

CORPUS_DIR = "corpus"
_PAIR = struct.Struct("<QQ")  # a row's start and end in an offsets table


class RowFile:
    """Rows of a JSONL file addressed through an ``.npy`` offsets table, read with ``pread``.

    ``pread`` rather than ``mmap``: reading a row costs one system call and leaves nothing
    mapped, so a process serving random rows keeps a small, flat RSS however large the file.
    """

    def __init__(self, data: Path, offsets: Path):
        self.path = data
        self._fd = os.open(data, os.O_RDONLY)
        self._off_fd = os.open(offsets, os.O_RDONLY)
        header = np.load(offsets, mmap_mode="r")
        if header.dtype.str != "<u8" or header.ndim != 1:
            raise IndexFormatError(f"{offsets} is not a uint64 offsets table")
        self.num_rows = len(header) - 1
        self._base = header.offset
        del header

    def read(self, row: int) -> bytes:
        """The row's line (without lines skipped after it, which its slice may run on to)."""
        if self._off_fd < 0:
            raise ClosedError(f"passage store file {self.path}")
        pair = os.pread(self._off_fd, 16, self._base + 8 * row)
        if len(pair) != 16:
            raise CorruptStoreError(f"row {row} is past the end of the offsets table")
        start, end = _PAIR.unpack(pair)
        raw = os.pread(self._fd, max(0, end - start), start)
        cut = raw.find(b"\n")
        return raw if cut < 0 or cut == len(raw) - 1 else raw[: cut + 1]

    def close(self) -> None:
        for fd in (self._fd, self._off_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = self._off_fd = -1

    def __del__(self):
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class DocStore:
    """Read side of the corpus store. ``DocStore.open(root)`` is cheap: everything is mmapped."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        if not (folder / "manifest.json").exists() and (folder / CORPUS_DIR).is_dir():
            folder = folder / CORPUS_DIR
        self.folder = folder
        self.manifest = read_manifest(folder, kind="corpus")
        passages = self.manifest["passages"]
        data_path = self._data_file(passages, "passage")
        self._data_paths = {"passages": data_path}
        self.row_format = passages["format"]
        self.layout = (self.manifest.get("store") or {}).get("layout", "jsonl")
        self._spans: SpansReader | None = None
        if self.layout == SPANS:
            self._data_file(self.manifest["pages"], "page text")
            self._spans = SpansReader(folder, self.manifest)
        elif self.layout != "jsonl":
            raise IndexFormatError(
                f"{folder}: store layout {self.layout!r} is unknown to this code: upgrade it or "
                "rebuild the corpus"
            )
        else:
            self._rows = RowFile(data_path, folder / "passages.offsets.npy")
        self._ids = KeyIndex(folder, "ids") if KeyIndex.exists(folder, "ids") else None
        self._titles = KeyIndex(folder, "titles")
        pages = self.manifest.get("pages")
        if pages is None and (folder / "pages.offsets.npy").is_file():  # stores before 'pages'
            pages = {"path": "pages.jsonl", "format": STORE_FORMAT}
        self._has_pages = pages is not None
        if self._spans is not None:
            self.page_format = SPANS
            self._pagekeys = KeyIndex(folder, "pagekeys")
        elif pages is not None:
            self.page_format = pages["format"]
            self._data_paths["pages"] = self._data_file(pages, "page")
            self._pages = RowFile(self._data_paths["pages"], folder / "pages.offsets.npy")
            self._pagekeys = KeyIndex(folder, "pagekeys")
        meta = self.manifest.get("page_meta") if self._has_pages else None
        self._meta = (  # sections and links per page (optional: older stores have none)
            None
            if meta is None
            else RowFile(self._data_file(meta, "page meta"), folder / "pages.meta.offsets.npy")
        )

    def _data_file(self, entry: dict, what: str) -> Path:
        """The data file a manifest entry names, checked against the size it was built on."""
        path = Path(entry["path"])
        if not path.is_absolute():
            path = self.folder / path
        if not path.is_file():
            raise IndexFormatError(f"{self.folder}: {what} file {path} is missing")
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            raise IndexFormatError(
                f"{path} is {path.stat().st_size} bytes but the store was built on "
                f"{entry['bytes']}: the file changed; rebuild the corpus"
            )
        return path

    def close(self) -> None:
        """Close the row files and drop the mapped key tables now, not when the garbage
        collector runs: a server or env that opens and closes indexes (tests, evaluation runs)
        otherwise piles up descriptors. Safe twice; a read afterwards raises ClosedError."""
        for part in (
            self._spans,
            getattr(self, "_rows", None),
            getattr(self, "_pages", None),
            self._meta,
            self._ids,
            self._titles,
            getattr(self, "_pagekeys", None),
        ):
            if part is not None:
                part.close()

    def __enter__(self) -> DocStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def data_path(self, kind: str = "passages") -> Path:
        """The JSONL the ``passages`` (or ``pages``) rows are read from: in the store, or a
        user's file indexed in place (``spans`` stores have none: read rows with ``get``)."""
        if self._spans is not None:
            raise IndexFormatError(
                f"{self.folder} is a {self.layout!r} store: it has no {kind} JSONL; read its "
                "rows with DocStore.get / get_page"
            )
        return self._data_paths[kind]

    @classmethod
    def open(cls, root: str | os.PathLike) -> DocStore:
        return cls(root)

    # ---- passages -------------------------------------------------------------------------
    @property
    def checksum(self) -> str:
        return self.manifest["checksum"]

    def __len__(self) -> int:
        return self._spans.num_passages if self._spans is not None else self._rows.num_rows

    def raw(self, row: int) -> bytes:
        """The passage's row as the jsonl store writes it (a ``spans`` store rebuilds it)."""
        if self._spans is not None:
            pid, title, text, url = self._spans.passage(int(row))
            return orjson.dumps({"id": pid, "title": title, "text": text, "url": url}) + b"\n"
        return self._rows.read(int(row))

    def get(self, row: int) -> Passage:
        """The passage at ``row`` (0-based); IndexError when out of range."""
        row = int(row)
        spans = self._spans
        if spans is not None:  # the hot path of a spans store: no detour through raw()
            if not 0 <= row < spans.num_passages:
                raise IndexError(f"passage row {row} out of range 0..{len(self) - 1}")
            pid, title, text, url = spans.passage(row)
            return Passage(row=row, id=pid, title=title, text=text, url=url or title_to_url(title))
        if not 0 <= row < len(self):
            raise IndexError(f"passage row {row} out of range 0..{len(self) - 1}")
        pid, title, text, url = parse_row(self.raw(row), self.row_format)
        return Passage(
            row=row,
            id=pid if pid is not None else str(row),
            title=title,
            text=text,
            url=url or title_to_url(title),
        )

    def get_many(self, rows: Sequence[int]) -> list[Passage]:
        return [self.get(r) for r in rows]

    def iter_passages(self, start: int = 0, stop: int | None = None) -> Iterator[Passage]:
        stop = len(self) if stop is None else min(stop, len(self))
        for row in range(start, stop):
            yield self.get(row)

    def find_id(self, pid: str) -> int | None:
        """Row of the passage with this id, or None."""
        if self._spans is not None:
            return self._find_span_id(pid)
        if self._ids is None:
            if pid.isascii() and pid.isdigit() and int(pid) < len(self) and str(int(pid)) == pid:
                return int(pid)
            return None
        for row in self._ids.find(pid):
            if self.get(row).id == pid:
                return row
        return None

    def _find_span_id(self, pid: str) -> int | None:
        """A ``spans`` store's id table holds only ids that are not ``PAGE`` or ``PAGE-k``
        (the k-th passage of the page with id ``PAGE``): those come from the page keys."""

        def first_row(key: str, k: int = 0) -> Iterator[int]:
            for page in self._pagekeys.find(key):
                yield self._spans.head(page)[3] + k

        base, sep, k = pid.rpartition("-")
        routes = []
        if sep and k.isascii() and k.isdigit() and str(int(k)) == k:  # the usual id first
            routes.append(lambda: first_row("id:" + base, int(k)))
        routes.append(lambda: first_row("id:" + pid))
        if self._ids is not None and len(self._ids):
            routes.append(lambda: self._ids.find(pid))
        for route in routes:
            for row in route():
                if 0 <= row < len(self) and self.get(row).id == pid:
                    return row
        return None

    def find_title(self, title_or_url: str) -> list[int]:
        """Passage rows of the article this title or URL names (any form), in order."""
        return self._titles.find(lookup_key(title_or_url))

    # ---- pages ----------------------------------------------------------------------------
    @property
    def num_pages(self) -> int:
        if self._spans is not None:
            return self._spans.num_pages
        return self._pages.num_rows if self._has_pages else 0

    def get_page(self, row: int) -> Page:
        row = int(row)
        if not 0 <= row < self.num_pages:
            raise IndexError(f"page row {row} out of range 0..{self.num_pages - 1}")
        if self._spans is not None:
            pid, title, text, url = self._spans.page(row)
        else:
            pid, title, text, url = parse_row(self._pages.read(row), self.page_format)
        return Page(id=pid if pid is not None else url, title=title, url=url, text=text)

    def page(self, name: str) -> Page | None:
        """The full article a title, URL (any form) or ``id:`` names; None when unknown.

        Stores built from passage-only inputs have no pages: the article is then rebuilt from
        the consecutive passages of that title.
        """
        if self._has_pages:
            rows = self._pagekeys.find(lookup_key(name))
            if rows:
                return self.get_page(rows[0])
        rows = self.find_title(name)
        if not rows:
            return None
        return self._page_from_passages(rows)

    def page_row(self, name: str) -> int | None:
        """Row of the full page a title, URL (any form, redirects followed) or ``id:`` names."""
        if not self._has_pages:
            return None
        rows = self._pagekeys.find(lookup_key(name))
        return rows[0] if rows else None

    @property
    def has_page_meta(self) -> bool:
        """Whether the store kept each page's sections and links (XML dumps)."""
        return self._meta is not None

    def page_meta(self, row: int) -> dict | None:
        """``{"sections": [[level, heading, offset]], "links": [[target, anchor, offset]]}`` of
        page ``row``; None when the store kept none."""
        if self._meta is None:
            return None
        return orjson.loads(self._meta.read(int(row)))

    def page_by_id(self, pid: str) -> Page | None:
        """The page with this page id, or the page holding the passage with this id."""
        if self._has_pages:
            rows = self._pagekeys.find("id:" + pid)
            if rows:
                return self.get_page(rows[0])
        row = self.find_id(pid)
        if row is None:
            return None
        passage = self.get(row)
        return self.page(passage.title) or self._page_from_passages([row])

    def _page_from_passages(self, rows: list[int]) -> Page:
        first = self.get(rows[0])
        parts = [first.text]
        for row in rows[1:]:
            parts.append(self.get(row).text)
        return Page(id=first.id, title=first.title, url=first.url, text="\n".join(parts))

    # ---- summaries ------------------------------------------------------------------------
    def stats(self) -> dict:
        m = self.manifest
        return {
            "folder": str(self.folder),
            "num_docs": len(self),
            "num_pages": self.num_pages,
            "num_redirects": m.get("num_redirects", 0),
            "checksum": self.checksum,
            "row_format": self.row_format,
            "passage_bytes": m["passages"]["bytes"],
            "words_per_passage": m.get("words_per_passage"),
            "chunking": m.get("chunking"),
            "sources": m.get("sources"),
            "skipped": m.get("skipped", {}),
        }

    def sample(self, n: int, seed: int = 0) -> list[Passage]:
        if len(self) == 0 or n <= 0:
            return []
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(len(self), size=min(n, len(self)), replace=False))
        return self.get_many(rows.tolist())
