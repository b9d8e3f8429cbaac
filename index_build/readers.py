"""Streaming readers for every input format, and detection of the format from content.

Each reader yields ``Doc`` (an article to split into passages, or a ready passage) and
``Redirect`` records, and raises ``CorpusInputError`` naming the file and the position. With
``on_error="skip"`` malformed records are skipped and counted in ``Counts`` instead.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import html
import io
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from retriever.errors import CorpusInputError
from retriever.store.rows import row_fields

FORMATS = ("auto", "wiki-xml", "wikiextractor", "jsonl", "dpr-tsv", "parquet", "hotpotqa")


@dataclass(slots=True)
class Doc:
    """An input record. ``split``: cut into word windows; ``page``: keep whole for access."""

    id: str | None
    title: str
    text: str
    url: str | None = None
    split: bool = True
    page: bool = True
    keep_title: bool = False  # True: the title as written (passage files), not MediaWiki-cleaned
    meta: dict | None = None  # sections and links of the page text (wiki-xml), for the browser


@dataclass(slots=True)
class Redirect:
    title: str
    target: str


class Counts(Counter):
    """Skipped-record counts by reason, reported in the summary and the manifest."""


class Progress:
    """Bytes of input consumed so far (compressed bytes for compressed files)."""

    def __init__(self, callback=None):
        self.callback = callback
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        if self.callback is not None and n:
            self.callback(n)


def _magic_open(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(decompressed stream, raw file) by magic bytes: gzip, bzip2 or plain."""
    raw = open(path, "rb")
    head = raw.read(3)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw), raw
    if head == b"BZh":
        return bz2.BZ2File(raw), raw
    return raw, raw


class TrackedLines:
    """Iterate the lines of a (possibly compressed) file, reporting raw bytes consumed.

    Decompression errors (truncated gzip/bz2) become ``CorpusInputError`` with the line number.
    """

    def __init__(self, path: Path, progress: Progress | None = None):
        self.path = path
        self.progress = progress or Progress()
        self.lineno = 0

    def __iter__(self) -> Iterator[bytes]:
        stream, raw = _magic_open(self.path)
        last = 0
        try:
            while True:
                try:
                    line = stream.readline()
                except (EOFError, OSError, gzip.BadGzipFile, ValueError) as exc:
                    raise CorpusInputError(
                        str(self.path), f"after line {self.lineno}", f"cannot decompress: {exc}"
                    ) from exc
                if not line:
                    break
                self.lineno += 1
                if self.lineno % 4096 == 0:
                    pos = raw.tell()
                    self.progress.update(pos - last)
                    last = pos
                yield line
        finally:
            try:
                self.progress.update(os.path.getsize(self.path) - last)
            finally:
                stream.close()
                raw.close()


def read_head(path: Path, n: int = 4096) -> bytes:
    stream, raw = _magic_open(path)
    try:
        return stream.read(n)
    except (EOFError, OSError) as exc:
        raise CorpusInputError(str(path), "byte 0", f"cannot decompress: {exc}") from exc
    finally:
        stream.close()
        raw.close()


def detect_format(path: Path) -> str:
    """Guess the input format from the file's first bytes (or a folder's first shard)."""
    if path.is_dir():
        return "wikiextractor"
    if not path.is_file():
        raise CorpusInputError(str(path), "open", "no such file")
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet"
    head = read_head(path).lstrip(b"\xef\xbb\xbf").lstrip()
    if not head:
        raise CorpusInputError(str(path), "byte 0", "the file is empty")
    if head.startswith(b"<?xml") or head.startswith(b"<mediawiki"):
        return "wiki-xml"
    if head.startswith(b"<doc"):
        return "wikiextractor"
    if head.startswith(b"["):
        return "hotpotqa"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0]
        if b'"context"' in first and b'"question"' in first:
            return "hotpotqa"
        return "jsonl"
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").lower().split("\t")
    if len(first) >= 2 and "text" in first:
        return "dpr-tsv"
    raise CorpusInputError(
        str(path),
        "byte 0",
        "unknown format: pass --format wiki-xml|wikiextractor|jsonl|dpr-tsv|parquet|hotpotqa",
    )


# ---- WikiExtractor --------------------------------------------------------------------------
_DOC_OPEN = re.compile(rb'<doc id="([^"]*)"(?: url="([^"]*)")?(?: title="([^"]*)")?[^>]*>')


def wikiextractor_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.startswith("wiki_"))
        if not files:
            raise CorpusInputError(str(path), "folder", "no wiki_NN shards inside")
        return files
    return [path]


def _unescape(s: str) -> str:
    """HTML entities in titles (WikiExtractor attributes, HotpotQA's ``Muscle &amp; Fitness``)."""
    return html.unescape(s)


def read_wikiextractor(
    path: Path, on_error: str, counts: Counts, progress: Progress
) -> Iterator[Doc]:
    """WikiExtractor output: ``<doc ...>`` blocks (plain) or ``--json`` lines, in shards or one file."""
    for file in wikiextractor_files(path):
        head = read_head(file, 64).lstrip()
        if head.startswith(b"{"):
            yield from read_jsonl(file, on_error, counts, progress)
            continue
        lines = TrackedLines(file, progress)
        current = None
        body: list[str] = []
        start = 0
        for line in lines:
            if current is None:
                m = _DOC_OPEN.match(line)
                if m:
                    current, start, body = m, lines.lineno, []
                elif line.strip():
                    err = CorpusInputError(str(file), f"line {lines.lineno}", "text outside <doc>")
                    if on_error == "raise":
                        raise err
                    counts["malformed"] += 1
                continue
            if line.startswith(b"</doc>"):
                pid = current.group(1).decode()
                url = current.group(2).decode() if current.group(2) else None
                title = _unescape(current.group(3).decode()) if current.group(3) else ""
                if body and body[0].strip() == title:
                    body = body[1:]
                text = "".join(body).strip()
                current = None
                if not text:
                    counts["empty"] += 1
                    continue
                yield Doc(id=pid, title=title, text=text, url=url)
                continue
            body.append(line.decode("utf-8", "replace"))
        if current is not None:
            err = CorpusInputError(
                str(file), f"line {start}", "<doc> not closed before end of file"
            )
            if on_error == "raise":
                raise err
            counts["truncated"] += 1


# ---- JSONL ----------------------------------------------------------------------------------
def reject(
    on_error: str,
    counts: Counts,
    kind: str,
    path: Path,
    where: str,
    what: str,
    cause: BaseException | None = None,
) -> None:
    """A row a reader cannot use: ``CorpusInputError`` (``on_error="raise"``), else counted
    under ``kind`` for the summary and the caller skips it."""
    if on_error == "raise":
        raise CorpusInputError(str(path), where, what) from cause
    counts[kind] += 1


def jsonl_row_to_doc(obj: dict) -> Doc:
    """One JSONL row of any supported layout to a ``Doc`` (KeyError/TypeError when unusable).

    The fields come from the store's own row parser (``retriever.store.rows``), so a passage
    file reads the same copied as indexed in place. ``contents`` rows are ready passages whose
    titles are kept as written; ``title`` + ``text`` rows are articles to split.
    """
    pid, title, text, url = row_fields(obj)
    if "contents" in obj:
        return Doc(
            id=pid, title=title, text=text, url=url, split=False, page=False, keep_title=True
        )
    return Doc(id=pid, title=title, text=text, url=url)


def read_jsonl(path: Path, on_error: str, counts: Counts, progress: Progress) -> Iterator[Doc]:
    lines = TrackedLines(path, progress)
    for line in lines:
        if not line.strip():
            continue
        try:
            doc = jsonl_row_to_doc(orjson.loads(line))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            where = f"line {lines.lineno}"
            reject(on_error, counts, "malformed", path, where, f"bad JSON row: {exc!r}", exc)
            continue
        if not doc.text:
            reject(on_error, counts, "empty", path, f"line {lines.lineno}", "row has no text")
            continue
        yield doc


# ---- DPR TSV and Parquet --------------------------------------------------------------------
def read_dpr_tsv(path: Path, on_error: str, counts: Counts, progress: Progress) -> Iterator[Doc]:
    lines = TrackedLines(path, progress)
    text_lines = (line.decode("utf-8", "replace") for line in lines)
    reader = csv.reader(text_lines, delimiter="\t", quotechar='"')
    header = [h.strip().lower() for h in next(reader, [])]
    if "text" not in header:
        raise CorpusInputError(str(path), "line 1", f"no 'text' column in header {header}")
    col = {name: header.index(name) for name in ("id", "text", "title") if name in header}
    for row in reader:
        try:
            text = row[col["text"]].strip()
            title = row[col["title"]] if "title" in col else ""
            pid = row[col["id"]] if "id" in col else None
        except IndexError:
            where, what = f"line {lines.lineno}", f"expected {len(header)} columns"
            reject(on_error, counts, "malformed", path, where, what)
            continue
        if not text:
            reject(on_error, counts, "empty", path, f"line {lines.lineno}", "row has no text")
            continue
        yield Doc(id=pid, title=title, text=text, split=False, page=False)


def read_parquet(path: Path, on_error: str, counts: Counts, progress: Progress) -> Iterator[Doc]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise CorpusInputError(str(path), "footer", f"not a readable Parquet file: {exc}") from exc
    names = pf.schema_arrow.names
    if "text" not in names and "contents" not in names:
        raise CorpusInputError(str(path), "schema", f"no 'text' or 'contents' column in {names}")
    size = os.path.getsize(path)
    n = 0
    for batch in pf.iter_batches(batch_size=8192):
        for obj in batch.to_pylist():
            n += 1
            try:
                if "contents" in obj:
                    doc = jsonl_row_to_doc(obj)
                else:
                    doc = Doc(
                        id=None if obj.get("id") is None else str(obj["id"]),
                        title=obj.get("title") or "",
                        text=(obj["text"] or "").strip(),
                        url=obj.get("url"),
                        split=False,
                        page=False,
                    )
            except (KeyError, TypeError) as exc:
                reject(on_error, counts, "malformed", path, f"row {n}", f"bad row: {exc!r}", exc)
                continue
            if not doc.text:
                reject(on_error, counts, "empty", path, f"row {n}", "row has no text")
                continue
            yield doc
    progress.update(size)


# ---- HotpotQA -------------------------------------------------------------------------------
def read_hotpotqa(path: Path, on_error: str, counts: Counts, progress: Progress) -> Iterator[Doc]:
    """``context: [[title, [sentences]]]``: one passage (and page) per distinct paragraph title."""
    seen: set[str] = set()
    head = read_head(path, 16).lstrip()
    if head.startswith(b"["):
        stream, raw = _magic_open(path)
        with stream, raw:
            try:
                rows = orjson.loads(stream.read())
            except orjson.JSONDecodeError as exc:
                raise CorpusInputError(str(path), f"byte {exc.pos}", f"bad JSON: {exc}") from exc
        progress.update(os.path.getsize(path))
        numbered = ((i + 1, row) for i, row in enumerate(rows))
    else:
        lines = TrackedLines(path, progress)

        def numbered_lines():
            for line in lines:
                if line.strip():
                    try:
                        yield lines.lineno, orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        where = f"line {lines.lineno}"
                        reject(on_error, counts, "malformed", path, where, f"bad JSON: {exc}", exc)

        numbered = numbered_lines()
    for n, row in numbered:
        try:
            context = row["context"]
            pairs = [(_unescape(str(title)), "".join(sents).strip()) for title, sents in context]
        except (KeyError, TypeError, ValueError) as exc:
            what = f"no usable 'context': {exc!r}"
            reject(on_error, counts, "malformed", path, f"record {n}", what, exc)
            continue
        for title, text in pairs:
            if title in seen:
                continue
            seen.add(title)
            if not text:
                counts["empty"] += 1
                continue
            yield Doc(id=None, title=title, text=text, split=False, page=True)


READERS = {
    "wikiextractor": read_wikiextractor,
    "jsonl": read_jsonl,
    "dpr-tsv": read_dpr_tsv,
    "parquet": read_parquet,
    "hotpotqa": read_hotpotqa,
}
