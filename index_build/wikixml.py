"""MediaWiki XML dumps (``pages-articles``, plain, ``.bz2``, or multistream with its index).

Pages of the main namespace become ``Doc`` records with clean text; redirects become
``Redirect`` records. Wikitext cleaning runs in worker processes. A multistream ``.bz2`` with
its ``-index.txt.bz2`` beside it is read stream by stream, in parallel.
"""

from __future__ import annotations

import bz2
import logging
import multiprocessing as mp
import os
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from retriever.errors import CorpusInputError

from .readers import Counts, Doc, Progress, Redirect, _magic_open
from .wikitext import wikitext_to_text

log = logging.getLogger(__name__)
BATCH = 32
STREAMS_PER_TASK = 4


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _page_fields(elem: ET.Element) -> tuple[str, str, str, str | None, str]:
    """(ns, id, title, redirect target or None, wikitext) of a ``<page>`` element."""
    ns = pid = title = text = ""
    redirect = None
    for child in elem:
        tag = _local(child.tag)
        if tag == "ns":
            ns = (child.text or "").strip()
        elif tag == "id":
            pid = (child.text or "").strip()
        elif tag == "title":
            title = child.text or ""
        elif tag == "redirect":
            redirect = child.get("title")
        elif tag == "revision":
            for sub in child:
                if _local(sub.tag) == "text":
                    text = sub.text or ""
    return ns, pid, title, redirect, text


def _clean_batch(batch: list[tuple[str, str, str | None, str]]) -> list:
    """Worker: wikitext of a batch of main-namespace pages to records (order kept)."""
    out: list = []
    for pid, title, redirect, wikitext in batch:
        if redirect is not None:
            out.append(Redirect(title=title, target=redirect))
            continue
        if wikitext.lstrip().lower().startswith("#redirect"):
            continue  # a redirect without the <redirect/> element: nothing to index
        try:
            text = wikitext_to_text(wikitext)
        except Exception as exc:  # mwparserfromhell can fail on pathological markup
            out.append(("error", pid, title, repr(exc)))
            continue
        out.append(Doc(id=pid, title=title, text=text) if text else ("empty", pid, title, ""))
    return out


def _iter_pages(
    stream, path: Path, progress_cb=None
) -> Iterator[tuple[str, str, str, str | None, str]]:
    """Stream ``<page>`` elements of one XML document, freeing each after use."""
    context = ET.iterparse(stream, events=("start", "end"))
    root = None
    n = 0
    last_id = "-"
    try:
        for event, elem in context:
            if root is None and event == "start":
                root = elem
            if event != "end" or _local(elem.tag) != "page":
                continue
            fields = _page_fields(elem)
            n += 1
            last_id = fields[1]
            yield fields
            elem.clear()
            if root is not None:
                root.clear()
            if progress_cb is not None and n % 64 == 0:
                progress_cb()
    except ET.ParseError as exc:
        line, col = exc.position
        raise CorpusInputError(
            str(path),
            f"line {line}, column {col} (after page id {last_id})",
            f"malformed XML: {exc}",
        ) from exc
    except (EOFError, OSError) as exc:
        raise CorpusInputError(
            str(path), f"after page {n} (id {last_id})", f"cannot decompress, file truncated? {exc}"
        ) from exc


def multistream_index(path: Path) -> Path | None:
    """The ``-index.txt.bz2`` beside a ``*-multistream.xml.bz2``, when there is one."""
    name = path.name
    for suffix in (".xml.bz2", ".bz2"):
        if name.endswith(suffix):
            for candidate in (
                name[: -len(suffix)] + "-index.txt.bz2",
                name[: -len(suffix)] + "-index.txt",
            ):
                if (path.parent / candidate).is_file():
                    return path.parent / candidate
    return None


def _stream_offsets(index: Path, size: int) -> list[int]:
    opener = bz2.open if index.suffix == ".bz2" else open
    offsets = set()
    with opener(index, "rt", encoding="utf-8") as f:
        for line in f:
            head = line.split(":", 1)[0]
            if head.isdigit():
                offsets.add(int(head))
    return sorted(o for o in offsets if o < size) + [size]


def _read_streams(args: tuple[str, list[tuple[int, int]]]) -> list:
    """Worker: decompress a few streams of a multistream dump, parse and clean their pages."""
    path, spans = args
    pages = []
    with open(path, "rb") as f:
        for start, end in spans:
            f.seek(start)
            try:
                xml = bz2.decompress(f.read(end - start))
            except (OSError, EOFError, ValueError) as exc:
                return [("fatal", "", "", f"stream at byte {start}: cannot decompress: {exc}")]
            xml = xml.rstrip()
            if xml.endswith(b"</mediawiki>"):  # the dump's last stream closes the document
                xml = xml[: -len(b"</mediawiki>")]
            doc = b"<mediawiki>" + xml + b"</mediawiki>"
            try:
                root = ET.fromstring(doc)
            except ET.ParseError as exc:
                return [("fatal", "", "", f"stream at byte {start}: malformed XML: {exc}")]
            for elem in root.iter():
                if _local(elem.tag) == "page":
                    ns, pid, title, redirect, text = _page_fields(elem)
                    if ns == "0":
                        pages.append((pid, title, redirect, text))
    return _clean_batch(pages)


def _bounded_imap(pool, fn, items, window: int) -> Iterator:
    """Ordered ``pool.imap`` with at most ``window`` tasks in flight: memory stays bounded
    when the writer is slower than the workers."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _pool(workers: int):
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        return None
    return mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers)


def _emit(results, path: Path, on_error: str, counts: Counts) -> Iterator:
    for rec in results:
        if isinstance(rec, tuple):
            kind, pid, title, reason = rec
            if kind == "empty":
                counts["empty"] += 1
                continue
            err = CorpusInputError(
                str(path), f"page id {pid} ({title!r})" if pid else "stream", reason or kind
            )
            if on_error == "raise":
                raise err
            counts["malformed" if kind == "error" else "truncated"] += 1
            continue
        yield rec


def read_wiki_xml(
    path: Path, on_error: str, counts: Counts, progress: Progress, workers: int = 0
) -> Iterator:
    """Yield ``Doc`` and ``Redirect`` records of a dump's main-namespace pages, in dump order."""
    index = multistream_index(path)
    if index is not None:
        yield from _read_multistream(path, index, on_error, counts, progress, workers)
        return
    stream, raw = _magic_open(path)
    last = [0]

    def report() -> None:
        pos = raw.tell()
        progress.update(pos - last[0])
        last[0] = pos

    def batches() -> Iterator[list]:
        batch = []
        try:
            for ns, pid, title, redirect, text in _iter_pages(stream, path, report):
                if ns != "0":
                    counts["other_namespace"] += 1
                    continue
                batch.append((pid, title, redirect, text))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
        except CorpusInputError:
            if on_error == "raise":
                raise
            counts["truncated"] += 1
            log.warning("%s: stopped at a damaged part; pages read so far are kept", path)
        if batch:
            yield batch

    pool = _pool(workers)
    try:
        results = (
            _bounded_imap(pool, _clean_batch, batches(), 4 * (workers or os.cpu_count() or 1))
            if pool
            else map(_clean_batch, batches())
        )
        for recs in results:
            yield from _emit(recs, path, on_error, counts)
    finally:
        if pool:
            pool.terminate()
        stream.close()
        raw.close()
        progress.update(os.path.getsize(path) - last[0])


def _read_multistream(
    path: Path, index: Path, on_error: str, counts: Counts, progress: Progress, workers: int
) -> Iterator:
    size = path.stat().st_size
    offsets = _stream_offsets(index, size)
    if not offsets or offsets[0] == 0:
        raise CorpusInputError(str(index), "line 1", "index does not list page streams")
    spans = list(zip(offsets[:-1], offsets[1:]))
    tasks = [
        (str(path), spans[i : i + STREAMS_PER_TASK]) for i in range(0, len(spans), STREAMS_PER_TASK)
    ]
    log.info("%s: %d streams in %d tasks (index %s)", path, len(spans), len(tasks), index)
    pool = _pool(workers)
    try:
        results = (
            _bounded_imap(pool, _read_streams, tasks, 2 * (workers or os.cpu_count() or 1))
            if pool
            else map(_read_streams, tasks)
        )
        for task, recs in zip(tasks, results):
            yield from _emit(recs, path, on_error, counts)
            progress.update(task[1][-1][1] - task[1][0][0])
    finally:
        if pool:
            pool.terminate()
