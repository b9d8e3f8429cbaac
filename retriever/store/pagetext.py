"""The page text stream of a ``spans`` store: the pages' UTF-8 text, one after another, written
plain (``pages.text``) or zstd-compressed in blocks (``pages.text.zst``), and read back by stream
offsets (``PageText``).

Compressed, the stream is cut in blocks of at most ``block_bytes`` that end where a passage ends
(``pages.block_starts.npy``: the stream offset of each block; ``pages.blocks.npy``: its offset in
the compressed file), each one zstd frame compressed with a dictionary trained on the first
blocks (``pages.text.dict``), so a random passage is one decompression of about its own size and
small blocks still compress well. Stores before format 4 have no block starts: their block ``k``
holds stream bytes ``[k * block_bytes, (k + 1) * block_bytes)``.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from array import array
from bisect import bisect_right as _bisect
from bisect import insort
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import CorruptStoreError, IndexFormatError
from .keyindex import random_access

log = logging.getLogger(__name__)

COMPRESSIONS = (None, "zstd")
BLOCK_BYTES = 1 << 10  # most a zstd block holds: blocks end at passage ends, so a random
# passage read decompresses one block of about its size (zstd's cost grows with the output)
DICT_BYTES = 1 << 16  # a trained dictionary: 2 KB blocks compress about as well as 64 KB without
DICT_SAMPLE_BYTES = 8 << 20  # the text the dictionary is trained on (the first blocks)
ZSTD_LEVEL = 3
CACHE_BYTES = 4 << 20  # decompressed blocks kept (first in, first out: repeated reads hit it)
DICT_FILE = "pages.text.dict"
STARTS_FILE = "pages.block_starts.npy"


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


def map_table(path: Path, dtype: str | np.dtype) -> tuple[mmap.mmap | None, int, int]:
    """(mapping, byte offset of the data, rows) of an ``.npy`` table, checked."""
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise IndexFormatError(f"{path} is not a {np.dtype(dtype)} table: rebuild the corpus")
    offset, n = arr.offset, len(arr)
    del arr
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return m, offset, n


def map_file(path: Path) -> mmap.mmap | bytes:
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
        self._map = map_file(self.path)  # slices: no system call a read (pread: 2-10 us more)
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
        m, at, n = map_table(path, "<u8")
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
            unmap(m)
        self._tables = []
        unmap(self._map)
        self._map = b""


def unmap(m: mmap.mmap | bytes | None) -> None:
    """Close a mapping now; one still read from in another thread (an exported buffer) is only
    dropped: it closes when that read lets go of it."""
    if isinstance(m, mmap.mmap):
        try:
            m.close()
        except BufferError:
            pass
