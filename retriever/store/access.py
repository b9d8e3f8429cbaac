"""Page access for the ``/access`` tool: resolve urls, titles or ids to pages, read a window.

>>> page_window("abcdef", offset=2, max_chars=3)
('cde', 6)
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import BadRequestError
from ..types import Page
from .docstore import DocStore


def page_window(text: str, offset: int = 0, max_chars: int | None = None) -> tuple[str, int]:
    """The slice ``[offset, offset + max_chars)`` of a page's text and the page's total length."""
    end = None if max_chars is None else offset + max_chars
    return text[offset:end], len(text)


def page_dict(page: Page, offset: int = 0, max_chars: int | None = None) -> dict:
    contents, total = page_window(page.text, offset, max_chars)
    return {
        "id": page.id,
        "url": page.url,
        "title": page.title,
        "contents": contents,
        "offset": offset,
        "total_chars": total,
    }


def access_pages(
    store: DocStore,
    urls: Sequence[str] = (),
    titles: Sequence[str] = (),
    ids: Sequence[str] = (),
    offset: int = 0,
    max_chars: int | None = None,
    max_total_chars: int | None = None,
) -> list[dict | None]:
    """One page dict (or None when unknown) per requested url, then title, then id, in order;
    ``BadRequestError`` as soon as the windows together pass ``max_total_chars`` (a server's
    bound: memory and time stay small however many large pages one request names)."""
    if isinstance(urls, str) or isinstance(titles, str) or isinstance(ids, str):
        raise BadRequestError("urls, titles and ids must be lists of strings")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise BadRequestError(f"offset must be an integer >= 0, got {offset!r}")
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0
    ):
        raise BadRequestError(f"max_chars must be a positive integer, got {max_chars!r}")
    out: list[dict | None] = []
    total = 0

    def add(page: Page | None) -> None:
        nonlocal total
        if page is None:
            out.append(None)
            return
        d = page_dict(page, offset, max_chars)
        total += len(d["contents"])
        if max_total_chars is not None and total > max_total_chars:
            raise BadRequestError(
                f"this request asks for more than {max_total_chars} characters of page text "
                f"(the limit, --max-access-chars; {len(out) + 1} pages read so far): "
                "ask for fewer pages or a smaller max_chars"
            )
        out.append(d)

    for name in [*urls, *titles]:
        if not isinstance(name, str):
            raise BadRequestError(f"page names must be strings, got {name!r}")
        add(store.page(name) if name.strip() else None)
    for pid in ids:
        if not isinstance(pid, str):
            raise BadRequestError(f"ids must be strings, got {pid!r}")
        add(store.page_by_id(pid))
    return out
