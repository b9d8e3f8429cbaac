"""The ``spans`` corpus layout: each word stored once, passages as spans of their pages.

The ``jsonl`` layout keeps every passage's text beside its page's text, so a corpus with pages
holds every word twice. Here the pages' text is one stream (``pages.text``: UTF-8, optionally
zstd-compressed in blocks of ``block_bytes`` with a block index, so a random row costs one small
decompression), and a passage is a record ``(start, length, page, flags)`` into that stream:

- ``pages.text`` (or ``pages.text.zst`` and its block tables): the stream, written and read by
  ``pagetext`` (which says how its blocks are cut and found)
- ``pages.offsets.npy``: uint64, n+1 stream offsets of the pages
- ``pages.heads.jsonl`` + ``pages.heads.offsets.npy``: per page ``{"id", "title", "p"}`` (``p``:
  its first passage row) and ``"url"`` when it is not the title's Wikipedia url
- ``passages.spans.npy``: one packed record per passage (``SPAN``); a passage's text is its
  span as is (``RAW``), with line breaks made spaces (``LINES``) or with whitespace runs made
  single spaces (``WORDS``: what word windows are); its id is the page's id, or the page's id and ``-k`` for the page's k-th passage
- ``passages.patches.jsonl`` + offsets: whole rows of passages that are not a span of their
  page (no page, another title, a text no span reproduces); the record's ``start`` is the row

The writer checks every span against the passage text it replaces, so reads are exact.
"""

from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

import numpy as np
import orjson

from ..errors import ClosedError, CorruptStoreError, IndexFormatError
from .pagetext import (
    BLOCK_BYTES,
    COMPRESSIONS,
    DICT_BYTES,
    ZSTD_LEVEL,
    PageText,
    TextSink,
    map_file,
    map_table,
    unmap,
)
from .titles import title_to_url

LAYOUT = "spans"
SPAN = np.dtype([("start", "<u8"), ("length", "<u4"), ("page", "<u4"), ("flags", "u1")])
_SPAN = struct.Struct("<QIIB")
_PAIR = struct.Struct("<QQ")
RAW, WORDS, PATCH, LINES = 0, 1, 2, 3  # flags & 3: how the text is made from the span
ID_SUFFIX, ID_PAGE = 0, 4  # flags & 4: page id + "-k", or the page id itself
_MAX_TRIES = 8
_MODES = {RAW: "raw", WORDS: "words", LINES: "lines"}


def _words(text: str) -> str:
    """Whitespace runs made single spaces (what word windows are).

    >>> _words("One  two\\nthree\\u00a0four")
    'One two three four'
    """
    return " ".join(text.split())


def _lines(text: str) -> str:
    """Line breaks made spaces: what most word windows of a page are, 10x faster than
    ``_words`` (the writer picks it only where it gives the same text)."""
    return text.replace("\n", " ")


class SpansWriter:
    """Write side: pages' text once; each passage located in its page and checked."""

    def __init__(
        self,
        folder: str | os.PathLike,
        compression: str | None = None,
        block_bytes: int = BLOCK_BYTES,
        level: int = ZSTD_LEVEL,
        dict_bytes: int = DICT_BYTES,
    ):
        if compression not in COMPRESSIONS:
            raise IndexFormatError(
                f"store compression {compression!r} is not one of none, zstd: pick one of them"
            )
        self.folder = Path(folder)
        self._text = TextSink(self.folder, compression, block_bytes, level, dict_bytes)
        self._page_offsets = array("Q", [0])
        self._heads = open(self.folder / "pages.heads.jsonl", "wb", buffering=1 << 20)
        self._head_offsets = array("Q", [0])
        self._spans = open(self.folder / "passages.spans.npy.partial", "wb", buffering=1 << 20)
        self._patches = open(self.folder / "passages.patches.jsonl", "wb", buffering=1 << 20)
        self._patch_offsets = array("Q", [0])
        self.num_passages = 0
        self.odd_ids = array("q")  # rows whose id is not their page's id (+ "-k"): id table
        self.counts = {"raw": 0, "lines": 0, "words": 0, "patched": 0}
        self._page: tuple | None = None  # (row, id, title, url, text, bytes, first passage)
        self._cursor = (0, 0)  # (start, end) of the page's previous passage, bytes in the page

    @property
    def num_pages(self) -> int:
        return len(self._page_offsets) - 1

    def add_page(self, pid: str, title: str, url: str, text: str) -> int:
        row = self.num_pages
        data = text.encode("utf-8")
        self._page = (row, pid, title, url, text, data, self.num_passages, self._text.pos)
        self._cursor = (0, 0)
        self._text.cut_at(self._text.pos)
        self._text.write(data)
        self._page_offsets.append(self._text.pos)
        head = {"id": pid, "title": title, "p": self.num_passages}
        if url != title_to_url(title):
            head["url"] = url
        line = orjson.dumps(head) + b"\n"
        self._heads.write(line)
        self._head_offsets.append(self._head_offsets[-1] + len(line))
        return row

    def add_passage(self, pid: str, title: str, text: str, url: str) -> int:
        row = self.num_passages
        self.num_passages += 1
        page = self._page
        if page is None or pid not in (page[1], f"{page[1]}-{row - page[6]}"):
            self.odd_ids.append(row)
        record = self._span_of(row, pid, title, text, url)
        if record is None:
            line = orjson.dumps({"id": pid, "title": title, "text": text, "url": url}) + b"\n"
            self._patches.write(line)
            self._patch_offsets.append(self._patch_offsets[-1] + len(line))
            record = (len(self._patch_offsets) - 2, 0, 0, PATCH)
            self.counts["patched"] += 1
        else:  # blocks end here where they can: the passage is read from one block
            self._text.cut_at(record[0])
            self._text.cut_at(record[0] + record[1])
        self._spans.write(_SPAN.pack(*record))
        return row

    def _span_of(self, row: int, pid: str, title: str, text: str, url: str) -> tuple | None:
        """``(start, length, page, flags)`` reproducing the passage exactly, or None."""
        if self._page is None:
            return None
        prow, page_id, page_title, page_url, page_text, data, first, base = self._page
        if title != page_title or url != page_url:
            return None
        if pid == page_id:
            id_flag = ID_PAGE
        elif pid == f"{page_id}-{row - first}":
            id_flag = ID_SUFFIX
        else:
            return None
        if text == page_text:
            self.counts["raw"] += 1
            return (base, len(data), prow, RAW | id_flag)
        found = self._locate(text, data)
        if found is None:
            return None
        start, end, mode = found
        self._cursor = (start, end)
        self.counts[_MODES[mode]] += 1
        return (base + start, end - start, prow, mode | id_flag)

    def _locate(self, text: str, data: bytes) -> tuple[int, int, int] | None:
        """Bytes ``[start, end)`` of the page whose text, as is or with whitespace made single
        spaces, is ``text``: searched after the previous passage's end, then its start."""
        tokens = text.split()
        if not tokens:
            return None
        first, last = tokens[0].encode("utf-8"), tokens[-1].encode("utf-8")
        need = len(text.encode("utf-8"))
        prev_start, prev_end = self._cursor
        tries = 0
        for lo in (prev_end, prev_start + 1 if prev_end else 0):
            start = data.find(first, lo)
            while start >= 0 and tries < _MAX_TRIES:
                tries += 1
                end = data.find(last, start + need - len(last))
                while end >= 0 and tries < _MAX_TRIES:
                    end += len(last)
                    piece = data[start:end].decode("utf-8", errors="replace")
                    if piece == text:
                        return start, end, RAW
                    if _lines(piece) == text:
                        return start, end, LINES
                    if _words(piece) == text:
                        return start, end, WORDS
                    if len(piece) > 2 * len(text) + 64:
                        break
                    tries += 1
                    end = data.find(last, end)
                start = data.find(first, start + 1)
        return None

    def finish(self) -> dict:
        """Close the files, write the tables; the manifest entries of the layout."""
        self._text.close()
        self._heads.close()
        self._patches.close()
        self._spans.close()
        folder = self.folder
        partial = folder / "passages.spans.npy.partial"
        spans = np.fromfile(partial, dtype=SPAN) if partial.stat().st_size else np.zeros(0, SPAN)
        np.save(folder / "passages.spans.npy", spans)
        partial.unlink()
        np.save(folder / "pages.offsets.npy", np.frombuffer(self._page_offsets, np.uint64))
        np.save(folder / "pages.heads.offsets.npy", np.frombuffer(self._head_offsets, np.uint64))
        np.save(
            folder / "passages.patches.offsets.npy", np.frombuffer(self._patch_offsets, np.uint64)
        )
        text = self._text
        return {
            "store": {
                "layout": LAYOUT,
                **text.entry(),
                "text_bytes": text.pos,
                "passages": dict(self.counts),
            },
            "passages": {
                "path": "passages.spans.npy",
                "format": LAYOUT,
                "bytes": (folder / "passages.spans.npy").stat().st_size,
            },
            "pages": {"path": text.path.name, "format": LAYOUT, "bytes": text.path.stat().st_size},
        }

    def abort(self) -> None:
        for f in (self._text._f, self._heads, self._patches, self._spans):
            f.close()


class SpansReader:
    """Rows of a ``spans`` store as ``(id, title, text, url)``, like ``rows.parse_row``."""

    def __init__(self, folder: Path, manifest: dict):
        store = manifest["store"]
        self.folder = folder
        self.text = PageText(folder, manifest["pages"], store)
        self._spans, self._spans_at, self.num_passages = map_table(
            folder / "passages.spans.npy", SPAN
        )
        self._pages, self._pages_at, n = map_table(folder / "pages.offsets.npy", "<u8")
        self.num_pages = max(0, n - 1)
        self._heads = map_file(folder / "pages.heads.jsonl")  # small: ~40 bytes a page
        self._head_offsets, self._head_at, _ = map_table(folder / "pages.heads.offsets.npy", "<u8")
        self._patch_fd = os.open(folder / "passages.patches.jsonl", os.O_RDONLY)
        self._patch_offsets, self._patch_at, self._num_patches = map_table(
            folder / "passages.patches.offsets.npy", "<u8"
        )
        self._last_head: tuple[int, tuple[str, str, str, int]] | None = None

    @staticmethod
    def _line(fd: int, table, at: int, row: int, what: str) -> bytes:
        try:
            start, end = _PAIR.unpack_from(table, at + 8 * row)
        except struct.error as exc:
            raise CorruptStoreError(f"{what} {row} is past the end of its offsets table") from exc
        return os.pread(fd, max(0, end - start), start)

    def head(self, page: int) -> tuple[str, str, str, int]:
        """(id, title, url, first passage row) of a page (the last one read is kept: passages
        come in runs of one page)."""
        last = self._last_head
        if last is not None and last[0] == page:
            return last[1]
        self._check_open()
        try:
            start, end = _PAIR.unpack_from(self._head_offsets, self._head_at + 8 * page)
        except struct.error as exc:
            raise CorruptStoreError(f"page head {page} is past the end of its table") from exc
        raw = self._heads[start:end]
        try:
            obj = orjson.loads(raw)
            title = obj["title"]
            head = (obj["id"], title, obj.get("url") or title_to_url(title), int(obj["p"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise _damaged("a page head", exc) from exc
        self._last_head = (page, head)
        return head

    def page(self, row: int) -> tuple[str, str, str, str]:
        """(id, title, text, url) of page ``row``."""
        self._check_open()
        pid, title, url, _ = self.head(row)
        start, end = _PAIR.unpack_from(self._pages, self._pages_at + 8 * row)
        return pid, title, _decode(self.text.read(start, end)), url

    def passage(self, row: int) -> tuple[str, str, str, str]:
        """(id, title, text, url) of passage ``row``."""
        if self._spans is None:
            self._check_open()
        start, length, page, flags = _SPAN.unpack_from(self._spans, self._spans_at + 17 * row)
        mode = flags & 3
        if mode == PATCH:
            if start >= self._num_patches:
                raise CorruptStoreError(f"passage {row} names patch {start}, past the patches")
            raw = self._line(self._patch_fd, self._patch_offsets, self._patch_at, start, "patch")
            try:
                obj = orjson.loads(raw)
                return obj["id"], obj["title"], obj["text"], obj["url"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise _damaged("a patched passage row", exc) from exc
        if page >= self.num_pages:
            raise CorruptStoreError(f"passage {row} names page {page}, past the last page")
        pid, title, url, first = self.head(page)
        if not flags & ID_PAGE:
            pid = f"{pid}-{row - first}"
        try:
            text = self.text.read(start, start + length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _damaged("page text", exc) from exc
        if mode == LINES:
            text = text.replace("\n", " ")
        elif mode == WORDS:
            text = _words(text)
        return pid, title, text, url

    def close(self) -> None:
        """Unmap every table and close the patch file now (each mapping holds a descriptor).
        Safe twice; a read afterwards raises ClosedError."""
        self.text.close()
        for name in ("_spans", "_pages", "_heads", "_head_offsets", "_patch_offsets"):
            unmap(getattr(self, name, None))
            setattr(self, name, None)
        self._last_head = None
        if self._patch_fd >= 0:
            os.close(self._patch_fd)
            self._patch_fd = -1

    def _check_open(self) -> None:
        if self._spans is None:
            raise ClosedError(f"passage store {self.folder}")

    def __del__(self):
        if getattr(self, "_patch_fd", -1) >= 0:
            self.close()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _damaged("page text", exc) from exc


def _damaged(what: str, exc: Exception) -> CorruptStoreError:
    return CorruptStoreError(
        f"{what} does not parse ({exc}): the index files are damaged or were changed; "
        "run `python -m index_build verify --index ROOT` and rebuild what it names"
    )
