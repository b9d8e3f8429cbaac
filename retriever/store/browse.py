"""Browser views of stored pages, in gpt-oss's browser conventions: why a policy can read a long
article a screen at a time, jump to a section, find text and follow the article's own links.

A page is shown as lines of at most 80 characters, numbered ``L{n}: ``, under a header
``[{cursor}] {title} ({url})`` and ``**viewing lines [a - b] of N**``; the article's links are
written into the text as ``【{i}†{anchor}】`` and numbered in reading order, so ``open`` of link
``i`` follows it. ``find`` is literal (case-insensitive) unless asked for a regex, which runs
with a time bound; its results are a page of ``# 【{i}†match at L{n}】`` entries. Views are pure
functions of the store: the cursor (which opened page is meant) is the caller's state.

>>> meta = {"sections": [[2, "History", 12]], "links": [["Text", "text", 6]]}
>>> page = make_page("T", "u", "Intro text.\\nHistory\\nOld.", meta)
>>> print(view(page, cursor=0)["text"])
[0] T (u)
**viewing lines [0 - 2] of 2**
<BLANKLINE>
L0: Intro 【0†text】.
L1: History
L2: Old.
>>> page.sections, page.links
(((2, 'History', 1),), (('Text', 0),))
>>> print(find(page, "OLD", cursor=1)["text"])
[1] Find results for text: `OLD` in `T` (u/find?pattern=OLD)
**viewing lines [0 - 1] of 1**
<BLANKLINE>
L0: # 【0†match at L2】
L1: Old.
"""

from __future__ import annotations

import bisect
import re
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from ..errors import BadRequestError, PageNotFoundError
from .docstore import DocStore

WIDTH = 80  # characters per line, as gpt-oss wraps pages
VIEW_LINES = 40  # lines shown by default
MAX_VIEW_LINES = 500
MAX_FIND_RESULTS = 50
FIND_SHOW_LINES = 4
MAX_PATTERN_CHARS = 200
REGEX_SECONDS = 0.2  # the whole regex find of one page; past it the find is refused
NO_LINKS = "no links for this corpus (its store keeps no link table; rebuild it from an XML dump)"
NO_SECTIONS = (
    "no sections for this corpus (its store keeps no section table; rebuild it from an XML dump)"
)
_LINK_MARK = re.compile(r"【\d+†([^†】]*)】")
ACTIONS = ("open", "find", "sections")


@dataclass(frozen=True)
class BrowsePage:
    """A page ready to show: its wrapped lines, link targets by number ``(title, line to open
    at)``, sections ``(level, heading, line)``, and whether the store has link tables."""

    title: str
    url: str
    lines: tuple[str, ...]
    links: tuple[tuple[str, int], ...] = ()
    sections: tuple[tuple[int, str, int], ...] = ()
    has_meta: bool = False


def _wrap(text: str) -> tuple[list[str], list[int]]:
    """Lines of at most ``WIDTH`` characters (words kept whole) and each line's start offset."""
    lines, starts, pos = [], [], 0
    for raw in text.split("\n"):
        pieces = textwrap.wrap(
            raw, WIDTH, expand_tabs=False, replace_whitespace=False, drop_whitespace=False
        )
        for piece in pieces or [""]:  # every character kept: offsets stay countable
            lines.append(piece)
            starts.append(pos)
            pos += len(piece)
        pos += 1
    return lines, starts


def make_page(title: str, url: str, text: str, meta: dict | None) -> BrowsePage:
    """Place the numbered link marks and the sections of ``meta`` (offsets into ``text``)."""
    links: list[tuple[str, int]] = []
    parts: list[str] = []
    shifts: list[tuple[int, int]] = []  # (offset in text, characters inserted before it)
    last = added = 0
    for target, anchor, at in (meta or {}).get("links") or ():
        if not isinstance(at, int) or at < last or text[at : at + len(anchor)] != anchor:
            continue  # unplaced (offset -1) or overlapping: not shown in the text
        mark = f"【{len(links)}†{anchor}】"
        parts += [text[last:at], mark]
        added += len(mark) - len(anchor)
        last = at + len(anchor)
        shifts.append((last, added))
        links.append((target, 0))  # a followed link opens its target at the top
    parts.append(text[last:])
    shown = "".join(parts)
    lines, starts = _wrap(shown)
    keys = [s for s, _ in shifts]

    def line_of(offset: int) -> int:
        i = bisect.bisect_right(keys, offset) - 1
        moved = offset + (shifts[i][1] if i >= 0 else 0)
        return max(bisect.bisect_right(starts, moved) - 1, 0)

    sections = tuple(
        (int(level), str(head), line_of(int(at)))
        for level, head, at in (meta or {}).get("sections") or ()
    )
    return BrowsePage(
        title,
        url,
        tuple(lines),
        tuple(links),
        sections,
        meta is not None,
    )


def load_page(store: DocStore, name: str) -> BrowsePage:
    """The page a title, URL or ``id:`` names, with its links and sections when the store
    kept them; ``PageNotFoundError`` when the corpus has no such page."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequestError(f"a page id must be a non-empty title or URL, got {name!r:.100}")
    row = store.page_row(name)
    page = store.get_page(row) if row is not None else store.page(name)
    if page is None:
        raise PageNotFoundError(
            f"no page {name[:200]!r} in this corpus: open a link number or a URL from a result"
        )
    meta = store.page_meta(row) if row is not None else None
    return make_page(page.title, page.url, page.text, meta)


def _header(title: str, url: str, cursor: int, loc: int, end: int, total: int) -> str:
    return f"[{cursor}] {title} ({url})\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n"


def _int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise BadRequestError(f"{name} must be a whole number >= {low}, got {value!r:.50}")
    return value if high is None else min(value, high)


def view(
    page: BrowsePage,
    cursor: int = 0,
    loc: int = 0,
    num_lines: int | None = None,
    section: str | None = None,
) -> dict:
    """Lines ``loc`` .. ``loc + num_lines`` (or from ``section``'s heading) with the header;
    ``{"title", "url", "text", "links", "loc", "total_lines"}``."""
    if section is not None:
        loc = section_line(page, section)
    loc = _int(loc, "loc", 0)
    num_lines = _int(VIEW_LINES if num_lines is None else num_lines, "num_lines", 1, MAX_VIEW_LINES)
    total = len(page.lines)
    if loc >= total:
        raise BadRequestError(
            f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {total - 1}."
        )
    end = min(loc + num_lines, total)
    body = "\n".join(f"L{i}: {page.lines[i]}" for i in range(loc, end))
    return {
        "title": page.title,
        "url": page.url,
        "text": _header(page.title, page.url, cursor, loc, end, total) + body,
        "links": [list(link) for link in page.links],
        "loc": loc,
        "total_lines": total,
        "has_links": page.has_meta,
    }


def section_line(page: BrowsePage, section: str) -> int:
    """Line of the first section whose heading matches ``section`` (case-insensitive)."""
    if not page.has_meta:
        raise BadRequestError(NO_SECTIONS)
    want = " ".join(str(section).split()).lower()
    for _, head, line in page.sections:
        if head.lower() == want:
            return line
    for _, head, line in page.sections:
        if want and want in head.lower():
            return line
    names = ", ".join(repr(h) for _, h, _ in page.sections[:20]) or "none"
    raise BadRequestError(f"no section {section!r:.100} in {page.title!r}; its sections: {names}")


def sections(page: BrowsePage, cursor: int = 0) -> dict:
    """The table of contents as a page: one entry per heading, indented by level, a numbered
    link ``【i†heading】`` (``open`` of link ``i`` opens the page at it) and its ``L{line}``."""
    if not page.has_meta:
        raise BadRequestError(NO_SECTIONS)
    entries = [
        f"{'  ' * max(level - 2, 0)}【{i}†{head.replace('】', ']')}】 (L{line})"
        for i, (level, head, line) in enumerate(page.sections)
    ]
    toc = BrowsePage(
        f"Sections of `{page.title}`",
        page.url + "#sections",
        tuple(entries or ["(this page has no sections)"]),
        tuple((page.title, line) for _, _, line in page.sections),
        (),
        True,
    )
    return view(toc, cursor, 0, MAX_VIEW_LINES)


def _matcher(pattern: str, regex: bool):
    if not isinstance(pattern, str) or not pattern.strip():
        raise BadRequestError(f"find needs a non-empty pattern, got {pattern!r:.50}")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise BadRequestError(
            f"the find pattern has {len(pattern)} characters; keep it under {MAX_PATTERN_CHARS}"
        )
    if not regex:
        needle = pattern.lower()
        return lambda line, _deadline: needle in line.lower()
    import regex as re2  # time-bounded matching (``re`` cannot be interrupted)

    try:
        compiled = re2.compile(pattern, re2.IGNORECASE)
    except re2.error as exc:
        raise BadRequestError(
            f"the find pattern is not a valid regex ({exc}): {pattern!r}; or set regex false"
        ) from None

    def match(line: str, deadline: float) -> bool:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return compiled.search(line, timeout=left) is not None

    return match


def find(page: BrowsePage, pattern: str, cursor: int = 0, regex: bool = False) -> dict:
    """Lines that contain ``pattern`` (literal, case-insensitive; a regex when ``regex``), as a
    page of ``# 【i†match at L{n}】`` entries whose links open the page at the match. A regex
    that runs past ``REGEX_SECONDS`` on the page is refused (``BadRequestError``)."""
    match = _matcher(pattern, regex)
    plain = [_LINK_MARK.sub(r"\1", line) for line in page.lines]
    deadline = time.monotonic() + REGEX_SECONDS
    chunks, links = [], []
    i = 0
    try:
        while i < len(plain) and len(chunks) < MAX_FIND_RESULTS:
            if not match(plain[i], deadline):
                i += 1
                continue
            snippet = "\n".join(plain[i : i + FIND_SHOW_LINES])
            chunks.append(f"# 【{len(chunks)}†match at L{i}】\n{snippet}")
            links.append((page.title, i))
            i += FIND_SHOW_LINES
    except TimeoutError:
        raise BadRequestError(
            f"the regex {pattern!r:.100} took over {REGEX_SECONDS} s on {page.title!r}: "
            "find it as literal text (regex false) or write a simpler pattern"
        ) from None
    text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
    result = BrowsePage(
        f"Find results for text: `{pattern}` in `{page.title}`",
        f"{page.url}/find?pattern={quote(pattern)}",
        tuple(text.split("\n")),
        tuple(links),
        (),
        True,
    )
    return view(result, cursor, 0, MAX_VIEW_LINES)


def browse_one(store: DocStore, request: dict) -> dict:
    """Run one browse request: ``{"action": "open"|"find"|"sections", "id": title or URL,
    "cursor", "loc", "num_lines", "section", "pattern", "regex"}``."""
    if not isinstance(request, dict):
        raise BadRequestError(f"a browse request is a JSON object, got {request!r:.100}")
    action = request.get("action", "open")
    if action not in ACTIONS:
        raise BadRequestError(f"browse action {action!r:.50} is unknown; use {', '.join(ACTIONS)}")
    cursor = _int(request.get("cursor", 0), "cursor", 0)
    page = load_page(store, request.get("id"))
    if action == "sections":
        return sections(page, cursor)
    if action == "find":
        regex = request.get("regex", False)
        if not isinstance(regex, bool):
            raise BadRequestError(f"regex must be true or false, got {regex!r:.50}")
        return find(page, request.get("pattern"), cursor, regex)
    section = request.get("section")
    if section is not None and not isinstance(section, str):
        raise BadRequestError(f"section must be a heading, got {section!r:.50}")
    return view(page, cursor, request.get("loc", 0), request.get("num_lines"), section)


def browse(store: DocStore, requests: Sequence[dict]) -> list[dict]:
    """Run many browse requests; a request that fails gets ``{"error", "status"}`` (404 for an
    unknown page, 422 for bad input) instead of failing the others."""
    if isinstance(requests, dict | str) or not isinstance(requests, Sequence):
        raise BadRequestError("requests must be a list of browse requests")
    out = []
    for request in requests:
        try:
            out.append(browse_one(store, request))
        except PageNotFoundError as exc:
            out.append({"error": str(exc), "status": 404})
        except BadRequestError as exc:
            out.append({"error": str(exc), "status": 422})
    return out
