"""Browse ``env.evaluate``'s ``trajectories.jsonl`` without loading it: a byte-offset index.

A file of 100k episodes is a few GB of JSON; the viewer must page it. One pass records, per
line, its byte offset and the few columns a table sorts and filters on (rewards, counts, the
dataset); a page of rows, or one episode, is then a handful of ``pread`` calls. The index
grows with the file (an evaluation still writing is picked up on the next request) and a file
that was rewritten is indexed again. Lines that are not JSON objects are counted and named,
never dropped silently.

>>> row = summarize({"dataset": "nq", "question": "q?", "answers": ["a"], "prediction": "b",
...                  "rewards": {"em": 0.0, "f1": 0.5}, "counts": {"search": 2}, "num_turns": 3})
>>> row["failed"], row["searches"], row["accesses"], row["f1"]
(True, 2, 0, 0.5)
"""

from __future__ import annotations

import logging
import os
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from ..errors import BadRequestError

log = logging.getLogger(__name__)

NUMERIC = ("em", "cover_em", "f1", "format", "turns", "searches", "accesses", "invalid")
SORT_KEYS = ("line", "dataset", "question", *NUMERIC)
_CHUNK = 8 << 20
MAX_PAGE = 500


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return float("nan")


def summarize(rec: dict) -> dict:
    """The table row of one episode record (what ``env.evaluate`` writes per line).

    ``failed`` means not an exact match: no answer, a wrong one, or a policy error."""
    rewards = rec.get("rewards") if isinstance(rec.get("rewards"), dict) else {}
    counts = rec.get("counts") if isinstance(rec.get("counts"), dict) else {}
    turns = rec.get("num_turns")
    if not isinstance(turns, int):
        turns = len(rec["turns"]) if isinstance(rec.get("turns"), list) else 0
    em = _number(rewards.get("em"))
    answers = rec.get("answers")
    return {
        "dataset": str(rec.get("dataset") or ""),
        "question": str(rec.get("question") or ""),
        "answers": [str(a) for a in answers] if isinstance(answers, list) else [],
        "prediction": None if rec.get("prediction") is None else str(rec["prediction"]),
        "em": em,
        "cover_em": _number(rewards.get("cover_em")),
        "f1": _number(rewards.get("f1")),
        "format": _number(rewards.get("format")),
        "turns": turns,
        "searches": int(_number(counts.get("search", 0)) or 0),
        "accesses": int(_number(counts.get("access", 0)) or 0),
        "invalid": int(_number(counts.get("invalid", 0)) or 0),
        "truncated": bool(rec.get("truncated")),
        "policy_error": rec.get("policy_error"),
        "task_id": rec.get("task_id"),
        "sample": rec.get("sample"),
        "failed": not em >= 1.0 or rec.get("policy_error") is not None,
    }


@dataclass(frozen=True)
class Query:
    """One table request: sort key and direction, filters, and the page window."""

    sort: str = "line"
    descending: bool = False
    failed_only: bool = False
    dataset: str | None = None
    text: str | None = None
    offset: int = 0
    limit: int = 50

    def __post_init__(self):
        if self.sort not in SORT_KEYS:
            raise BadRequestError(f"sort must be one of {', '.join(SORT_KEYS)}; got {self.sort!r}")
        if self.offset < 0:
            raise BadRequestError(f"offset must be >= 0, got {self.offset}")
        if not 1 <= self.limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE}, got {self.limit}")


class TrajectoryFile:
    """An append-only JSONL file of episodes, indexed by byte offset (built on first use)."""

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
        self._identity: tuple | None = None
        self._size_seen = -1  # file size at the last refresh (a partial last line included)
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
        """Index what was appended since the last call; returns the number of episodes."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                raise BadRequestError(
                    f"trajectory file {self.path} cannot be read: {exc}"
                ) from None
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self._indexed:
                if self._identity is not None:
                    log.info("%s was rewritten: indexing it again", self.path)
                self._reset()
                self._identity = identity
            if st.st_size > self._indexed:
                self._scan(st.st_size)
            self._size_seen = st.st_size
            return len(self.offsets)

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
        """Whether the index covers the file as it is now (one ``stat``)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # the refresh says why
        return (st.st_dev, st.st_ino) == self._identity and st.st_size == self._size_seen

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
        before = len(self.offsets)
        self.scanning = (self._indexed, size)
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
        self._orders.clear()
        if len(self.offsets) > before or self.bad_count:
            log.info(
                "%s: %d episodes indexed (%d lines not JSON objects)",
                self.path,
                len(self.offsets),
                self.bad_count,
            )

    def _add(self, line: bytes, offset: int) -> None:
        self._lines += 1
        if not line.strip():
            return
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            self.bad_count += 1
            if len(self.bad_lines) < 20:
                self.bad_lines.append(self._lines)
            return
        row = summarize(rec)
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
                has = np.fromiter(
                    (needle in q.casefold() for q in self.questions), dtype=bool, count=n
                )
                mask = has if mask is None else mask & has
            chosen = order if mask is None else order[mask[order]]
            return chosen[query.offset : query.offset + query.limit], len(chosen)

    def read(self, row: int) -> dict:
        """The full record of row ``row`` (0-based, in file order), read with one ``pread``."""
        with self._lock:
            offset, length = self.offsets[row], self.lengths[row]
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        return orjson.loads(data)

    def row_of_line(self, line: int) -> int:
        """The row holding 1-based line ``line`` (deep links name lines, which never move)."""
        with self._lock:
            lines = np.frombuffer(self.line_numbers, dtype=np.int64, count=len(self.line_numbers))
            i = int(np.searchsorted(lines, line))
            if i < len(lines) and lines[i] == line:
                return i
        raise BadRequestError(f"{self.name} has no episode on line {line}")

    def page(self, query: Query) -> dict:
        """One page of table rows (with their line numbers), the total, and the file's facts."""
        rows, total = self.select(query)
        items = []
        for row in rows.tolist():
            item = summarize(self.read(row))
            item["line"] = self.line_numbers[row]
            items.append(item)
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
