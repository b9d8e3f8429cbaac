"""The ``spans`` corpus layout: each word stored once, passages as spans of their pages.

The ``jsonl`` layout keeps every passage's text beside its page's text, so a corpus with pages
holds every word twice. Here the pages' text is one stream (``pages.text``: UTF-8, optionally
zstd-compressed in blocks of ``block_bytes`` with a block index, so a random row costs one small
decompression), and a passage is a record ``(start, length, page, flags)`` into that stream:

- ``pages.text`` (or ``pages.text.zst`` + ``pages.blocks.npy``, the compressed offset of each
  block, + ``pages.block_starts.npy``, the stream offset of each block: blocks of at most
  ``block_bytes`` that end where a passage ends, so a random passage is one decompression of
  about its own size; and ``pages.text.dict``, a zstd dictionary trained on the first blocks, so
  small blocks still compress well. Stores before format 4 have no ``block_starts``: their
  block ``k`` holds stream bytes ``[k * block_bytes, (k + 1) * block_bytes)``)
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

import logging
import mmap
import os
import struct
import threading
from array import array
from bisect import bisect_right as _bisect
from bisect import insort
from collections import OrderedDict
from pathlib import Path

import numpy as np
import orjson

from ..errors import ClosedError, CorruptStoreError, IndexFormatError
from .keyindex import random_access
from .titles import title_to_url

log = logging.getLogger(__name__)

LAYOUT = "spans"
COMPRESSIONS = (None, "zstd")
BLOCK_BYTES = 1 << 10  # most a zstd block holds: blocks end at passage ends, so a random
# passage read decompresses one block of about its size (zstd's cost grows with the output)
DICT_BYTES = 1 << 16  # a trained dictionary: 2 KB blocks compress about as well as 64 KB without
DICT_SAMPLE_BYTES = 8 << 20  # the text the dictionary is trained on (the first blocks)
ZSTD_LEVEL = 3
CACHE_BYTES = 4 << 20  # decompressed blocks kept (first in, first out: repeated reads hit it)
DICT_FILE = "pages.text.dict"
STARTS_FILE = "pages.block_starts.npy"
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


class TextSink:
    """The page text stream, written plain or zstd-compressed in blocks of at most
    ``block_bytes``.

    A block ends at the last passage start or end (``cut_at``) in the second half of its room,
    else when it is full: zstd's cost grows with what it decompresses, so a passage read costs
    one block of about its size. Cuts must be given before the text after them is written (the
    writer gives a page's passages' before the next page), so blocks are only cut up to the
    last write. With a dictionary (``dict_bytes`` > 0) the first ``DICT_SAMPLE_BYTES`` of text
    are held back, a dictionary is trained on them in blocks, and only then is anything
    compressed; a text too small to train on is written without one.
    """

    def __init__(
        self,
        folder: Path,
        compression: str | None,
        block_bytes: int = BLOCK_BYTES,
        level: int = ZSTD_LEVEL,
        dict_bytes: int = DICT_BYTES,
    ):
        self.compression = compression
        self.block_bytes = block_bytes
        self.level = level
        self.dict_bytes = dict_bytes if compression else 0
        self.dictionary: bytes | None = None
        self.pos = 0
        name = "pages.text" + (".zst" if compression else "")
        self.path = folder / name
        self._f = open(self.path, "wb", buffering=1 << 22)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]: the start of the next block
        self._cuts: list[int] = []  # sorted stream offsets a block may end at, past _base
        self._blocks = array("Q", [0])  # compressed offset of each block
        self._starts = array("Q", [0])  # stream offset of each block
        self._zstd = None
        if compression and not self.dict_bytes:
            self._start()

    def _start(self) -> None:
        """Make the compressor: with a dictionary trained on the text held back, if one can be."""
        import zstandard

        dict_data = None
        if self.dict_bytes:
            dict_data = _train(bytes(self._buf), self.block_bytes, self.dict_bytes, self.level)
        if dict_data is not None:
            self.dictionary = dict_data.as_bytes()
            dict_data.precompute_compress(level=self.level)  # not reloaded for every block
        self._zstd = zstandard.ZstdCompressor(
            level=self.level, dict_data=dict_data, write_checksum=True, write_dict_id=False
        )

    def cut_at(self, pos: int) -> None:
        """Stream offset ``pos`` is a good block end (a passage starts or ends there)."""
        cuts = self._cuts
        if not self.compression or pos <= self._base or (cuts and pos == cuts[-1]):
            return
        if not cuts or pos > cuts[-1]:
            cuts.append(pos)
        elif pos not in cuts:
            insort(cuts, pos)

    def write(self, data: bytes) -> None:
        if not self.compression:
            self.pos += len(data)
            self._f.write(data)
            return
        self._cut(self.pos)  # every cut before the text written so far is known
        self._buf += data
        self.pos += len(data)
        if self._zstd is None and len(self._buf) >= DICT_SAMPLE_BYTES:
            self._start()

    def _cut(self, known: int, final: bool = False) -> None:
        """Compress the blocks that end at or before ``known`` (``final``: all the rest)."""
        if self._zstd is None:
            return
        room, cuts = self.block_bytes, self._cuts
        while self._buf and (final or self._base + room <= known):
            base = self._base
            end = min(base + room, self.pos)
            i = _bisect(cuts, end)
            if end == base + room and i and cuts[i - 1] > base + room // 2:
                end = cuts[i - 1]
            del cuts[:i]
            self._flush(end - base)

    def _flush(self, n: int) -> None:
        frame = self._zstd.compress(bytes(self._buf[:n]))
        del self._buf[:n]
        self._base += n
        self._f.write(frame)
        self._blocks.append(self._blocks[-1] + len(frame))
        self._starts.append(self._base)

    def close(self) -> None:
        if self.compression and self._zstd is None:
            self._start()
        if self.compression:
            self._cut(self.pos, final=True)
        self._f.close()
        if self.compression:
            folder = self.path.parent
            np.save(folder / "pages.blocks.npy", np.frombuffer(self._blocks, np.uint64))
            np.save(folder / STARTS_FILE, np.frombuffer(self._starts, np.uint64))
            if self.dictionary is not None:
                (folder / DICT_FILE).write_bytes(self.dictionary)

    def entry(self) -> dict:
        """The manifest's ``store`` keys that say how to read the stream back."""
        return {
            "compression": self.compression,
            "block_bytes": self.block_bytes if self.compression else None,
            "dictionary": DICT_FILE if self.dictionary is not None else None,
            **({"block_starts": STARTS_FILE} if self.compression else {}),
        }


def _train(sample: bytes, block_bytes: int, dict_bytes: int, level: int):
    """A zstd dictionary trained on ``sample`` cut in blocks, or None when the text is too
    small for one to pay (the dictionary would outweigh what it saves) or training fails."""
    import zstandard

    size = min(dict_bytes, len(sample) // 16)
    if size < 4096:
        return None
    blocks = [sample[i : i + block_bytes] for i in range(0, len(sample), block_bytes)]
    try:
        return zstandard.train_dictionary(size, blocks, level=level)
    except zstandard.ZstdError as exc:
        log.info("no zstd dictionary for the page text (%s): blocks compressed without", exc)
        return None


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


def _table(path: Path, dtype: str | np.dtype) -> tuple[mmap.mmap | None, int, int]:
    """(mapping, byte offset of the data, rows) of an ``.npy`` table, checked."""
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise IndexFormatError(f"{path} is not a {np.dtype(dtype)} table: rebuild the corpus")
    offset, n = arr.offset, len(arr)
    del arr
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return m, offset, n


def _mapped(path: Path) -> mmap.mmap | bytes:
    """A whole small file mapped read-only (an empty file cannot be mapped: its bytes)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return b""
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


class PageText:
    """Read side of the text stream: bytes ``[start, end)``, through a small cache of blocks."""

    def __init__(self, folder: Path, entry: dict, store: dict):
        self.compression = store.get("compression")
        self.path = folder / entry["path"]
        self._map = _mapped(self.path)  # slices: no system call a read (pread: 2-10 us more)
        if isinstance(self._map, mmap.mmap):
            random_access(self._map)
        if self.compression not in COMPRESSIONS:
            raise IndexFormatError(
                f"{folder}: store compression {self.compression!r} is unknown to this code: "
                "upgrade it or rebuild the corpus"
            )
        self._tables: list[mmap.mmap] = []
        self._starts: memoryview | None = None  # format 3: block k starts at k * block_bytes
        if self.compression:
            import zstandard

            self.block_bytes = int(store["block_bytes"])
            self._offsets = self._column(folder / "pages.blocks.npy")  # compressed, n + 1
            self.num_blocks = len(self._offsets) - 1
            if store.get("block_starts"):
                self._starts = self._column(folder / store["block_starts"])
                if len(self._starts) != len(self._offsets):
                    raise CorruptStoreError(
                        f"{folder}: {store['block_starts']} has {len(self._starts)} entries, "
                        f"pages.blocks.npy {len(self._offsets)}: the store is damaged; run "
                        "`python -m index_build verify --index ROOT` and rebuild the corpus"
                    )
            self._dict = None
            if store.get("dictionary"):
                data = (folder / store["dictionary"]).read_bytes()
                self._dict = zstandard.ZstdCompressionDict(data)
            self._cache: OrderedDict[int, bytes] = OrderedDict()
            self._cache_blocks = max(1, CACHE_BYTES // self.block_bytes)
            self._lock = threading.Lock()
            self._local = threading.local()

    def _column(self, path: Path) -> memoryview:
        """A uint64 ``.npy`` table as a mapped column: nothing loaded, bisect works on it."""
        m, at, n = _table(path, "<u8")
        self._tables.append(m)
        return memoryview(m)[at : at + 8 * n].cast("Q")

    def read(self, start: int, end: int) -> bytes:
        starts = self._starts
        if starts is not None and end > start:  # a passage of a format-4 store: one block
            k = _bisect(starts, start) - 1
            lo = starts[k]
            if k < self.num_blocks and end <= starts[k + 1]:
                block = self._cache.get(k)  # without the lock: a dict get
                if block is None:
                    block = self._load(k, starts[k + 1] - lo)
                return block[start - lo : end - lo]
        return self._read(start, end)

    def _read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if not self.compression:
            data = self._map[start:end]
            if len(data) != end - start:
                raise CorruptStoreError(
                    f"{self.path} ends before byte {end}: the file is damaged or cut short; "
                    "run `python -m index_build verify --index ROOT` and rebuild the corpus"
                )
            return data
        starts = self._starts
        if starts is None:
            k = start // self.block_bytes
            lo = k * self.block_bytes
            hi = lo + self.block_bytes
        else:
            k = _bisect(starts, start) - 1
            lo = starts[k]
            hi = starts[k + 1] if k < self.num_blocks else lo
        if end <= hi:  # one block
            block = self._cache.get(k)
            if block is None:
                block = self._load(k, hi - lo if starts is not None else self._size(k))
            return block[start - lo : end - lo]
        if starts is None:
            last = (end - 1) // self.block_bytes
        else:
            last = _bisect(starts, end - 1) - 1
        return self._blocks(k, last)[start - lo : end - lo]

    def _dctx(self):
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:  # one per thread: a decompression context is not thread-safe
            import zstandard

            dctx = self._local.dctx = zstandard.ZstdDecompressor(dict_data=self._dict)
        return dctx

    def _size(self, k: int) -> int:
        """Stream bytes block ``k`` holds."""
        if self._starts is not None:
            return self._starts[k + 1] - self._starts[k]
        return self.block_bytes if k != self.num_blocks - 1 else -1  # the last: any size

    def _blocks(self, first: int, last: int) -> bytes:
        """Blocks ``first..last`` (a page) in one call: one decompressor across their frames."""
        if last <= first or last >= self.num_blocks:
            return self._block(last if last >= self.num_blocks else first)  # raises past the end
        data = None
        if self._starts is not None:
            frames = self._map[self._offsets[first] : self._offsets[last + 1]]
            try:
                data = self._dctx().decompressobj(read_across_frames=True).decompress(frames)
            except Exception:  # zstandard.ZstdError: found and named block by block below
                data = None
            if data is not None and len(data) != self._starts[last + 1] - self._starts[first]:
                data = None
        if data is None:
            data = b"".join([self._block(k) for k in range(first, last + 1)])
        return data

    def _block(self, k: int) -> bytes:
        """Block ``k``, decompressed and checked; kept in the cache (first in, first out: a
        hit takes no lock and moves nothing)."""
        block = self._cache.get(k)
        if block is not None:
            return block
        if not 0 <= k < self.num_blocks:
            raise CorruptStoreError(f"{self.path}: block {k} is past the block index")
        return self._load(k, self._size(k))

    def _load(self, k: int, size: int) -> bytes:
        """Decompress block ``k`` of ``size`` bytes (-1: any), check and cache it."""
        if not 0 <= k < self.num_blocks:
            raise CorruptStoreError(f"{self.path}: block {k} is past the block index")
        frame = self._map[self._offsets[k] : self._offsets[k + 1]]
        dctx = getattr(self._local, "dctx", None) or self._dctx()
        try:
            block = dctx.decompress(frame)
        except Exception as exc:  # zstandard.ZstdError: a damaged frame
            raise CorruptStoreError(
                f"{self.path}: block {k} does not decompress ({exc}): the file is damaged; "
                "run `python -m index_build verify --index ROOT` and rebuild the corpus"
            ) from exc
        if len(block) != size and size >= 0:
            raise CorruptStoreError(
                f"{self.path}: block {k} holds {len(block)} bytes, not {size}: the "
                "file is damaged; run `python -m index_build verify --index ROOT` and rebuild "
                "the corpus"
            )
        with self._lock:
            self._cache[k] = block
            if len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        return block

    def close(self) -> None:
        for name in ("_offsets", "_starts"):
            view = getattr(self, name, None)
            if view is not None:
                view.release()  # a mapping cannot close while a view of it lives
        self._offsets = self._starts = None
        for m in self._tables:
            _unmap(m)
        self._tables = []
        _unmap(self._map)
        self._map = b""


def _unmap(m: mmap.mmap | bytes | None) -> None:
    """Close a mapping now; one still read from in another thread (an exported buffer) is only
    dropped: it closes when that read lets go of it."""
    if isinstance(m, mmap.mmap):
        try:
            m.close()
        except BufferError:
            pass


class SpansReader:
    """Rows of a ``spans`` store as ``(id, title, text, url)``, like ``rows.parse_row``."""

    def __init__(self, folder: Path, manifest: dict):
        store = manifest["store"]
        self.folder = folder
        self.text = PageText(folder, manifest["pages"], store)
        self._spans, self._spans_at, self.num_passages = _table(folder / "passages.spans.npy", SPAN)
        self._pages, self._pages_at, n = _table(folder / "pages.offsets.npy", "<u8")
        self.num_pages = max(0, n - 1)
        self._heads = _mapped(folder / "pages.heads.jsonl")  # small: ~40 bytes a page
        self._head_offsets, self._head_at, _ = _table(folder / "pages.heads.offsets.npy", "<u8")
        self._patch_fd = os.open(folder / "passages.patches.jsonl", os.O_RDONLY)
        self._patch_offsets, self._patch_at, self._num_patches = _table(
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
            _unmap(getattr(self, name, None))
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
