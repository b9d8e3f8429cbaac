"""MediaWiki XML dumps (``pages-articles``, plain, ``.bz2``, or multistream with its index).

The dump's ``<siteinfo>`` comes first as a ``SiteInfo`` record: its namespaces drive the
cleaner's link rules and its ``<base>`` the page URLs, in any language. Pages of the main
namespace (``<ns>0</ns>``) become ``Doc`` records with clean text; pages with ``<redirect>``
become ``Redirect`` records. Wikitext cleaning runs in worker processes. A multistream ``.bz2``
with its ``-index.txt.bz2`` beside it is read stream by stream, in parallel. With
``on_error="skip"`` a page holding bytes that are not UTF-8 (``invalid_utf8``) or characters
XML does not allow (``invalid_xml_char``: NUL, control bytes, ``&#0;``) is skipped and counted;
the pages after it are read as usual.

The worker pool is never killed mid-task: a worker killed while it writes a result holds the
result queue's lock, and ``multiprocessing.Pool.terminate`` then waits on it forever
(CPython gh-96995). Workers finish what they hold and exit; a worker that dies is an error.
"""

from __future__ import annotations

import bz2
import logging
import multiprocessing as mp
import os
import signal
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from retriever.errors import BuildError, CorpusInputError

from .readers import Counts, Doc, Progress, Redirect, _magic_open
from .siteinfo import XML_LANG, SiteInfo, parse_siteinfo, siteinfo_from_header
from .utf8 import CharRepair, repair_bytes
from .wikitext import MarkupRules, wikitext_to_page

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


@dataclass(frozen=True)
class XmlOptions:
    """How pages are cleaned: the dump's site (namespaces, URLs) and an optional Chinese script."""

    site: SiteInfo = SiteInfo()
    chinese_script: str | None = None

    def rules(self) -> MarkupRules:
        if self.chinese_script is None:
            return self.site.markup_rules()
        from .chinese import variants_for

        return self.site.markup_rules(variants_for(self.chinese_script))


# A page as read: (id, title, redirect target or None, wikitext, damage or None), the damage
# as ``CharRepair.take`` tells it: (count kind, reason)
Page = tuple[str, str, "str | None", str, "tuple[str, str] | None"]


def _clean_task(item: tuple[XmlOptions, list[Page]] | SiteInfo) -> list:
    """Worker: wikitext of a batch of main-namespace pages to records (order kept)."""
    if isinstance(item, SiteInfo):
        return [item]
    options, batch = item
    rules = options.rules()
    convert = None
    if options.chinese_script is not None:
        from .chinese import converter

        convert = converter(options.chinese_script)
    out: list = []
    for pid, title, redirect, wikitext, damage in batch:
        if damage is not None:
            out.append((damage[0], pid, title, damage[1]))
            continue
        shown = convert(title) if convert else title
        if redirect is not None:
            out.append(Redirect(title=shown, target=convert(redirect) if convert else redirect))
            continue
        if wikitext.lstrip().lower().startswith("#redirect"):
            continue  # a redirect without the <redirect/> element: nothing to index
        try:
            text, meta = wikitext_to_page(wikitext, rules=rules)
        except Exception as exc:  # mwparserfromhell can fail on pathological markup
            out.append(("error", pid, title, repr(exc)))
            continue
        if convert and text:
            text = convert(text)
            meta = None  # offsets of the unconverted text: no sections or links for it
        url = options.site.page_url(title) if options.site.base else None
        out.append(
            Doc(id=pid, title=shown, text=text, url=url, keep_title=True, meta=meta)
            if text
            else ("empty", pid, title, "")
        )
    return out


def _iter_pages(stream, path: Path, progress_cb=None) -> Iterator:
    """Stream a dump: its ``SiteInfo`` first, then ``(ns, id, title, redirect, text, bad)`` per
    ``<page>``, freeing each element after use."""
    repair = CharRepair(stream)
    context = ET.iterparse(repair, events=("start", "end"))
    root = None
    n = 0
    last_id = "-"
    site_seen = False
    try:
        for event, elem in context:
            if root is None and event == "start":
                root = elem
            if event != "end":
                continue
            tag = _local(elem.tag)
            if tag == "siteinfo" and not site_seen:
                site_seen = True
                damage = repair.take(elem)  # not a page's: say so, and match no page with it
                if damage is not None:
                    log.warning("%s: <siteinfo> %s", path, damage[1])
                yield parse_siteinfo(elem, root.get(XML_LANG, "") if root is not None else "")
                continue
            if tag != "page":
                continue
            if not site_seen:
                site_seen = True
                yield SiteInfo(language=root.get(XML_LANG, "") if root is not None else "")
            ns, pid, title, redirect, text = _page_fields(elem)
            n += 1
            last_id = pid
            yield ns, pid, title, redirect, text, repair.take(elem)
            elem.clear()
            if root is not None:
                root.clear()
            if progress_cb is not None and n % 64 == 0:
                progress_cb()
        if repair.pending or repair.not_xml:
            log.warning(
                "%s: %d damaged characters outside pages",
                path,
                repair.pending + len(repair.not_xml),
            )
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
            if head.isascii() and head.isdigit():
                offsets.add(int(head))
    return sorted(o for o in offsets if o < size) + [size]


def _read_streams(args: tuple[str, list[tuple[int, int]], XmlOptions]) -> list:
    """Worker: decompress a few streams of a multistream dump, parse and clean their pages."""
    path, spans, options = args
    out: list = []
    with open(path, "rb") as f:
        for start, end in spans:  # a damaged stream costs that stream, not the task's others
            f.seek(start)
            try:
                xml = bz2.decompress(f.read(end - start))
            except (OSError, EOFError, ValueError) as exc:
                out.append(("fatal", "", "", f"stream at byte {start}: cannot decompress: {exc}"))
                continue
            xml = xml.rstrip()
            if xml.endswith(b"</mediawiki>"):  # the dump's last stream closes the document
                xml = xml[: -len(b"</mediawiki>")]
            doc, repair = repair_bytes(b"<mediawiki>" + xml + b"</mediawiki>")
            try:
                root = ET.fromstring(doc)
            except ET.ParseError as exc:
                out.append(("fatal", "", "", f"stream at byte {start}: malformed XML: {exc}"))
                continue
            pages: list[Page] = []
            for elem in root.iter():
                if _local(elem.tag) == "page":
                    ns, pid, title, redirect, text = _page_fields(elem)
                    if ns == "" and title:
                        ns = str(options.site.namespace_of(title))
                    damage = repair.take(elem)
                    if ns == "0":
                        pages.append((pid, title, redirect, text, damage))
            out.extend(_clean_task((options, pages)))
    return out


def _bounded_imap(pool: ProcessPoolExecutor, fn, items, window: int, path: Path) -> Iterator:
    """Ordered ``pool.map`` with at most ``window`` tasks in flight: memory stays bounded
    when the writer is slower than the workers. Tasks not yet started when the caller stops
    early (an error, a closed generator) are cancelled; a worker that died is a ``BuildError``,
    not a wait for its result."""
    pending: deque[Future] = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise BuildError(
            f"{path}: a wikitext worker process died (killed, out of memory?): "
            f"rerun with fewer --workers ({exc})"
        ) from exc
    finally:
        for future in pending:
            future.cancel()


def _ignore_interrupt() -> None:
    """Workers leave Ctrl-C to the parent, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool(workers: int) -> ProcessPoolExecutor | None:
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        return None
    # not "fork": forking a process that runs other threads (a library caller, a test run with
    # servers and torch threads) can copy a lock some thread holds and leave a worker stuck for
    # ever; the fork server is a fresh single-threaded process the workers are forked from
    methods = mp.get_all_start_methods()
    context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupt)


def _close(pool: ProcessPoolExecutor | None) -> None:
    """Stop the workers without killing one mid-task: queued tasks are cancelled, running
    ones finish (a batch each), then every worker exits and is joined."""
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


_ERROR_COUNT = {
    "error": "malformed",
    "invalid_utf8": "invalid_utf8",
    "invalid_xml_char": "invalid_xml_char",
}


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
            counts[_ERROR_COUNT.get(kind, "truncated")] += 1
            if kind in ("invalid_utf8", "invalid_xml_char"):
                log.warning("%s: skipped page id %s (%r): %s", path, pid, title, reason)
            continue
        yield rec


def read_wiki_xml(
    path: Path,
    on_error: str,
    counts: Counts,
    progress: Progress,
    workers: int = 0,
    chinese_script: str | None = None,
) -> Iterator:
    """Yield the dump's ``SiteInfo``, then ``Doc`` and ``Redirect`` records of its
    main-namespace pages, in dump order. ``chinese_script``: convert Chinese text to
    ``simplified`` or ``traditional`` (OpenCC)."""
    index = multistream_index(path)
    if index is not None:
        yield from _read_multistream(
            path, index, on_error, counts, progress, workers, chinese_script
        )
        return
    stream, raw = _magic_open(path)
    last = [0]

    def report() -> None:
        pos = raw.tell()
        progress.update(pos - last[0])
        last[0] = pos

    def batches() -> Iterator:
        options = XmlOptions(chinese_script=chinese_script)
        batch: list[Page] = []
        try:
            for item in _iter_pages(stream, path, report):
                if isinstance(item, SiteInfo):
                    options = XmlOptions(site=item, chinese_script=chinese_script)
                    yield item
                    continue
                ns, pid, title, redirect, text, damage = item
                if ns == "" and title:  # very old dumps: no <ns>, the title's prefix decides
                    ns = str(options.site.namespace_of(title))
                if ns != "0":
                    counts["other_namespace"] += 1
                    continue
                batch.append((pid, title, redirect, text, damage))
                if len(batch) >= BATCH:
                    yield options, batch
                    batch = []
        except CorpusInputError:
            if on_error == "raise":
                raise
            counts["truncated"] += 1
            log.warning("%s: stopped at a damaged part; pages read so far are kept", path)
        if batch:
            yield options, batch

    pool = _pool(workers)
    try:
        results = (
            _bounded_imap(pool, _clean_task, batches(), 4 * (workers or os.cpu_count() or 1), path)
            if pool
            else map(_clean_task, batches())
        )
        for recs in results:
            yield from _emit(recs, path, on_error, counts)
    finally:
        _close(pool)
        stream.close()
        raw.close()
        progress.update(os.path.getsize(path) - last[0])


def _read_multistream(
    path: Path,
    index: Path,
    on_error: str,
    counts: Counts,
    progress: Progress,
    workers: int,
    chinese_script: str | None = None,
) -> Iterator:
    size = path.stat().st_size
    offsets = _stream_offsets(index, size)
    if not offsets or offsets[0] == 0:
        raise CorpusInputError(str(index), "line 1", "index does not list page streams")
    with open(path, "rb") as f:
        try:  # the first stream holds <mediawiki> and <siteinfo>
            header = bz2.decompress(f.read(offsets[0]))
        except (OSError, EOFError, ValueError) as exc:
            raise CorpusInputError(str(path), "byte 0", f"cannot decompress: {exc}") from exc
    try:
        site = siteinfo_from_header(header)
    except ET.ParseError as exc:
        raise CorpusInputError(str(path), "first stream", f"malformed <siteinfo>: {exc}") from exc
    yield site
    options = XmlOptions(site=site, chinese_script=chinese_script)
    spans = list(zip(offsets[:-1], offsets[1:]))
    tasks = [
        (str(path), spans[i : i + STREAMS_PER_TASK], options)
        for i in range(0, len(spans), STREAMS_PER_TASK)
    ]
    log.info("%s: %d streams in %d tasks (index %s)", path, len(spans), len(tasks), index)
    pool = _pool(workers)
    try:
        results = (
            _bounded_imap(pool, _read_streams, tasks, 2 * (workers or os.cpu_count() or 1), path)
            if pool
            else map(_read_streams, tasks)
        )
        for task, recs in zip(tasks, results):
            yield from _emit(recs, path, on_error, counts)
            progress.update(task[1][-1][1] - task[1][0][0])
    finally:
        _close(pool)
