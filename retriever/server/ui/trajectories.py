"""Browse ``env.evaluate``'s ``trajectories.jsonl`` without loading it: a byte-offset index.

A file of 100k episodes is a few GB of JSON; the viewer must page it. One pass records, per
line, its byte offset and the few columns a table sorts and filters on (``rows.summarize``); a
page of rows, or one episode, is then a handful of ``pread`` calls. The index grows with the
file (an evaluation still writing is picked up on the next request) and a file that was
rewritten is indexed again. Lines that are not JSON objects are counted and named, never
dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from array import array
from collections.abc import Sequence

import numpy as np
import orjson

from ...errors import BadRequestError, ServiceUnavailableError
from .rows import NUMERIC, Query, summarize

log = logging.getLogger(__name__)

_CHUNK = 8 << 20
_PROBE = 4096  # bytes at each end of the indexed part compared on every request


def digest(line: bytes) -> str:
    """A short name for a line's bytes: a deep link carries it so that a line which now holds
    another episode (the file was rewritten) is told apart from the one linked.

    >>> digest(b'{"question": "q?"}')
    '69804b928649c5c0'
    """
    return hashlib.blake2b(line, digest_size=8).hexdigest()


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class TrajectoryFile:
    """An append-only JSONL file of episodes, indexed by byte offset (built on first use).

    The index is trusted only while the file looks as it did when indexed: the same inode, not
    shorter, the same mtime unless it grew, and the same bytes at both ends of the indexed part
    (two small reads per request). Otherwise the file was rewritten in place (``env.evaluate``
    rerun into the same ``--out``) and is indexed again from the start."""

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = os.fspath(path)
        self.name = name or os.path.basename(self.path)
        self._lock = threading.Lock()
        self._indexer: threading.Thread | None = None
        self._indexer_lock = threading.Lock()  # not _lock: a scan holds that one throughout
        self.error: Exception | None = None  # what the last background refresh raised
        self.scanning = (0, 0)  # (bytes read, bytes to read) of the scan under way
        self._reset()

    def _reset(self) -> None:
        self._seen: tuple[int, int, int, int] | None = None  # the file at the last refresh
        self._probe: tuple[bytes, bytes] = (b"", b"")  # both ends of the indexed part
        self._stale = False  # a read found other bytes than the index says
        self._indexed = 0  # bytes of complete lines read so far
        self._lines = 0  # lines seen (1-based numbers of the rows are kept)
        self.offsets, self.lengths, self.line_numbers = array("q"), array("q"), array("q")
        self._columns = {key: array("d") for key in NUMERIC}
        self._failed = array("b")
        self._dataset_codes = array("i")
        self.datasets: list[str] = []
        self._codes: dict[str, int] = {}
        self.questions: list[str] = []
        self.bad_lines: list[int] = []
        self.bad_count = 0
        self._orders: dict[tuple[str, bool], np.ndarray] = {}

    # ---- indexing ---------------------------------------------------------------------------
    def refresh(self) -> int:
        """Index what was appended since the last call (all of it again when the file was
        rewritten); returns the number of episodes."""
        with self._lock:
            try:
                st = os.stat(self.path)
                if self._seen is not None and self._rewritten(st):
                    log.info("%s was rewritten: indexing it again", self.path)
                    self._reset()
                if st.st_size > self._indexed:
                    self._scan(st.st_size)
                self._probe = self._read_probe()
            except OSError as exc:
                raise BadRequestError(
                    f"trajectory file {self.path} cannot be read: {exc}"
                ) from None
            self._seen = _signature(st)
            return len(self.offsets)

    def _rewritten(self, st: os.stat_result) -> bool:
        dev, ino, size, mtime = self._seen or (None, None, -1, None)
        if (st.st_dev, st.st_ino) != (dev, ino) or st.st_size < size or self._stale:
            return True
        if st.st_size == size and st.st_mtime_ns != mtime:  # written to without growing
            return True
        return self._read_probe() != self._probe

    def _read_probe(self) -> tuple[bytes, bytes]:
        """The first and the last ``_PROBE`` bytes of the indexed part, as the file has them
        now: a rewrite that grew the file, or kept its size and mtime, shows up here."""
        n = min(_PROBE, self._indexed)
        if not n:
            return b"", b""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, n, 0), os.pread(fd, n, self._indexed - n)
        finally:
            os.close(fd)

    def refresh_in_background(self, wait: float = 0.0) -> bool:
        """Start indexing in a thread (unless one runs); wait up to ``wait`` seconds for it.
        True when the index is current. Lets a page say "indexing 40%" instead of hanging on
        a first request for a GB-sized file."""
        if not self.indexing and self._current():
            return True
        with self._indexer_lock:
            if self._indexer is None or not self._indexer.is_alive():
                self._indexer = threading.Thread(
                    target=self._refresh_logged, name=f"index {self.name}", daemon=True
                )
                self._indexer.start()
            indexer = self._indexer
        indexer.join(wait)
        return not indexer.is_alive()

    def _current(self) -> bool:
        """Whether the index covers the file as it is now (one ``stat``, two small reads)."""
        try:
            st = os.stat(self.path)
            return (
                _signature(st) == self._seen
                and not self._stale
                and self._read_probe() == self._probe
            )
        except OSError:
            return False  # the refresh says why

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
            self.error = None
        except Exception as exc:  # reported by the request that waits for it
            self.error = exc
            log.warning("indexing %s failed: %s", self.path, exc)

    @property
    def indexing(self) -> bool:
        """True while a background scan runs (requests should not wait on its lock)."""
        return self._indexer is not None and self._indexer.is_alive()

    def _scan(self, size: int) -> None:
        """Index the lines in ``[_indexed, size)``; all or nothing: whatever raises, the index
        is left as it was, so the next refresh does not add the same lines twice."""
        before = len(self.offsets)
        mark = (before, len(self.datasets), len(self.bad_lines), self.bad_count, self._lines)
        self.scanning = (self._indexed, size)
        try:
            self._read_lines(size)
        except BaseException:
            self._roll_back(*mark)
            raise
        finally:
            self._orders.clear()
        if len(self.offsets) > before or self.bad_count:
            log.info(
                "%s: %d episodes indexed (%d lines not JSON objects)",
                self.path,
                len(self.offsets),
                self.bad_count,
            )

    def _read_lines(self, size: int) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._indexed)
            pos, rest = self._indexed, b""
            while pos + len(rest) < size:
                chunk = f.read(min(_CHUNK, size - pos - len(rest)))
                if not chunk:
                    break
                data = rest + chunk
                end = data.rfind(b"\n")
                if end < 0:
                    rest = data
                    continue
                start = 0
                while start <= end:
                    stop = data.index(b"\n", start)
                    self._add(data[start:stop], pos + start)
                    start = stop + 1
                pos += end + 1
                self.scanning = (pos, size)
                rest = data[end + 1 :]
        self._indexed = pos  # a trailing line without newline waits for the next refresh

    def _roll_back(self, rows: int, datasets: int, named: int, bad: int, lines: int) -> None:
        for column in (self.offsets, self.lengths, self.line_numbers, self._failed,
                       self._dataset_codes, self.questions, *self._columns.values()):  # fmt: skip
            del column[rows:]
        for name in self.datasets[datasets:]:
            del self._codes[name]
        del self.datasets[datasets:]
        del self.bad_lines[named:]
        self.bad_count, self._lines = bad, lines

    def _add(self, line: bytes, offset: int) -> None:
        self._lines += 1
        if not line.strip():
            return
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            rec = None
        row = None
        if isinstance(rec, dict):
            try:
                row = summarize(rec)
            except Exception as exc:  # summarize takes any JSON; if not, name the line
                log.warning("%s line %d: cannot summarize: %r", self.path, self._lines, exc)
        if row is None:
            self.bad_count += 1
            if len(self.bad_lines) < 20:
                self.bad_lines.append(self._lines)
            return
        self.offsets.append(offset)
        self.lengths.append(len(line))
        self.line_numbers.append(self._lines)
        for key in NUMERIC:
            self._columns[key].append(float(row[key]))
        self._failed.append(row["failed"])
        code = self._codes.get(row["dataset"])
        if code is None:
            code = self._codes[row["dataset"]] = len(self.datasets)
            self.datasets.append(row["dataset"])
        self._dataset_codes.append(code)
        self.questions.append(row["question"])

    # ---- reading ----------------------------------------------------------------------------
    def _order(self, key: str, descending: bool) -> np.ndarray:
        """Row order for a sort key (ties in file order, NaN last, either direction), cached
        until the file grows."""
        cached = self._orders.get((key, descending))
        if cached is not None:
            return cached
        n = len(self.offsets)
        if key == "line":
            order = np.arange(n)[::-1] if descending else np.arange(n)
        elif key == "question":  # sorted(reverse=True) keeps ties in file order too
            folded = [q.casefold() for q in self.questions]
            order = np.array(
                sorted(range(n), key=folded.__getitem__, reverse=descending), dtype=np.int64
            )
        elif key == "dataset":
            names = sorted(range(len(self.datasets)), key=self.datasets.__getitem__)
            rank = np.empty(len(names), dtype=np.int64)
            rank[names] = np.arange(len(names))
            codes = np.frombuffer(self._dataset_codes, dtype=np.int32, count=n)
            ranks = rank[codes] if n else codes.astype(np.int64)
            order = np.argsort(-ranks if descending else ranks, kind="stable")
        else:  # numbers: NaN (a reward the record lacks) sorts last in both directions
            values = np.frombuffer(self._columns[key], dtype=np.float64, count=n)
            values = -values if descending else values
            order = np.argsort(np.where(np.isnan(values), np.inf, values), kind="stable")
        self._orders[(key, descending)] = order
        return order

    def select(self, query: Query) -> tuple[np.ndarray, int]:
        """(row numbers of the requested page, total rows matching the filters)."""
        with self._lock:
            return self._select(query)

    def _select(self, query: Query) -> tuple[np.ndarray, int]:
        n = len(self.offsets)
        order = self._order(query.sort, query.descending)
        mask = None
        if query.failed_only:
            mask = np.frombuffer(self._failed, dtype=np.int8, count=n).astype(bool)
        if query.dataset is not None:
            if query.dataset not in self.datasets:
                return np.empty(0, dtype=np.int64), 0
            codes = np.frombuffer(self._dataset_codes, dtype=np.int32, count=n)
            same = codes == self._codes[query.dataset]
            mask = same if mask is None else mask & same
        if query.text:
            needle = query.text.casefold()
            has = np.fromiter((needle in q.casefold() for q in self.questions), dtype=bool, count=n)
            mask = has if mask is None else mask & has
        chosen = order if mask is None else order[mask[order]]
        return chosen[query.offset : query.offset + query.limit], len(chosen)

    def _read(self, offset: int, length: int) -> tuple[bytes, dict]:
        """The line at ``offset`` and its record, read with one ``pread`` and checked to be
        what the index says: a whole line (newlines on both sides) holding a JSON object.
        Otherwise the file changed since it was indexed: the next refresh indexes it again,
        and this request answers 503 (the page asks again)."""
        start = max(offset - 1, 0)
        want = offset - start + length + 1
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                data = os.pread(fd, want, start)
            finally:
                os.close(fd)
        except OSError as exc:
            raise BadRequestError(f"trajectory file {self.path} cannot be read: {exc}") from None
        line, rec = data[offset - start : -1], None
        if len(data) == want and data[-1:] == b"\n" and (offset == 0 or data[:1] == b"\n"):
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                pass
        if not isinstance(rec, dict):
            self._stale = True
            raise ServiceUnavailableError(
                f"{self.name} changed while it was read (rewritten in place?); it is indexed "
                "again on the next request: retry",
                retry_after=1.0,
            )
        return line, rec

    def read(self, row: int) -> dict:
        """The full record of row ``row`` (0-based, in file order)."""
        with self._lock:
            offset, length = self.offsets[row], self.lengths[row]
        return self._read(offset, length)[1]

    def row_of_line(self, line: int) -> int:
        """The row holding 1-based line ``line``."""
        with self._lock:
            return self._row_of_line(line)

    def _row_of_line(self, line: int) -> int:
        if 1 <= line < 2**63:  # beyond int64, no line (and numpy would overflow)
            lines = np.frombuffer(self.line_numbers, dtype=np.int64, count=len(self.line_numbers))
            i = int(np.searchsorted(lines, line))
            if i < len(lines) and lines[i] == line:
                return i
        raise BadRequestError(f"{self.name} has no episode on line {line}")

    def episode(self, line: int, version: str | None = None) -> tuple[bytes, str]:
        """The bytes of the episode on 1-based line ``line`` (as written: any JSON object the
        file holds, however deep) and its ``digest``. Deep links name a line and the digest of
        what it held: a rewritten file whose line now holds another episode is refused."""
        with self._lock:
            row = self._row_of_line(line)
            offset, length = self.offsets[row], self.lengths[row]
        data, _ = self._read(offset, length)
        found = digest(data)
        if version is not None and version != found:
            raise BadRequestError(
                f"line {line} of {self.name} now holds another episode than the link was made "
                f"for (v={version}, now v={found}): the file was rewritten since; find the "
                "episode in the table again"
            )
        return data, found

    def page(self, query: Query) -> dict:
        """One page of table rows (with their line numbers and digests), the total, and the
        file's facts."""
        with self._lock:  # rows and offsets from one state of the index
            rows, total = self._select(query)
            spots = [(self.offsets[r], self.lengths[r], self.line_numbers[r]) for r in rows]
        items = []
        for offset, length, line in spots:
            data, rec = self._read(offset, length)
            items.append({**summarize(rec), "line": line, "v": digest(data)})
        return {"total": total, "offset": query.offset, "rows": items, **self.describe()}

    def describe(self) -> dict:
        done, size = self.scanning
        return {
            "name": self.name,
            "indexing": self.indexing,
            "indexed_fraction": 1.0 if not self.indexing or not size else round(done / size, 3),
            "episodes": len(self.offsets),
            "datasets": sorted(self.datasets),
            "bad_lines": self.bad_count,
            "first_bad_lines": list(self.bad_lines),
        }


def open_files(paths: Sequence[str | os.PathLike]) -> list[TrajectoryFile]:
    """One ``TrajectoryFile`` per path, refusing missing files up front (a typo should not
    surface later as an empty table). A folder means its ``trajectories.jsonl`` (what
    ``env.evaluate --out DIR`` writes). Names are base names, with the folder when two clash.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for run in ("run-a", "run-b"):
    ...     (d / run).mkdir(); _ = (d / run / "trajectories.jsonl").write_text("")
    >>> [f.name for f in open_files([d / "run-a", d / "run-b" / "trajectories.jsonl"])]
    ['run-a/trajectories.jsonl', 'run-b/trajectories.jsonl']
    >>> [f.name for f in open_files(str(d / "run-a"))]
    ['trajectories.jsonl']
    """
    if isinstance(paths, str | os.PathLike):  # one path given bare
        paths = [paths]
    resolved = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, "trajectories.jsonl")):
            path = os.path.join(path, "trajectories.jsonl")
        if not os.path.isfile(path):
            raise BadRequestError(
                f"--trajectories {path}: no such file (give env.evaluate's trajectories.jsonl "
                "or its --out folder)"
            )
        resolved.append(path)
    base = [os.path.basename(p) for p in resolved]
    files = []
    for path, name in zip(resolved, base):
        if base.count(name) > 1:
            name = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(path))), name)
        files.append(TrajectoryFile(path, name))
    return files
