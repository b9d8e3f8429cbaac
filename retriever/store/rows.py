"""The one JSONL row parser: a passage or page row of any supported layout to its fields.

Both ways of opening a user's passage file use it, so they cannot disagree: copying it into a
store (``index_build corpus --in-place no``) and indexing it where it lies (read at query
time). Layouts: Search-R1 / FlashRAG (``id``, ``contents`` = ``"Title"\\ntext``), ASearcher
(``contents``, ``wikipedia_title``, ``url``; its ``wiki_webpages.jsonl`` pages have the same
shape), WikiExtractor ``--json`` and others (``title``, ``text``), and this package's own
store rows.

>>> row_fields({"id": 7, "contents": '"T"\\n  body  '})
('7', 'T', 'body', None)
>>> row_fields({"contents": "Body", "wikipedia_title": "T", "url": "u"})
(None, 'T', 'Body', 'u')
>>> row_fields({"title": "T", "text": "T\\nFirst line."})
(None, 'T', 'First line.', None)
>>> row_fields({"url": "https://en.wikipedia.org/w/index.php?title=A_B", "contents": "A B\\nAll of it."})
(None, 'A B', 'All of it.', 'https://en.wikipedia.org/w/index.php?title=A_B')
"""

from __future__ import annotations

import orjson

from ..errors import CorruptStoreError

STORE_FORMAT = "store"  # rows written by ``StoreWriter``: id, title, text, url


def _str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{key!r} must be a string, not {type(value).__name__}")


def split_contents(contents: str, title: str | None) -> tuple[str, str]:
    """(title, text) of a ``contents`` field: its first line is the title (quoted or not)
    when no title is given or when it repeats the given one; the text is stripped."""
    head, sep, rest = contents.partition("\n")
    head_title = head.strip().strip('"').strip()
    if title is None:
        return head_title, (rest if sep else head).strip()
    if sep and head_title == title.strip():
        return title, rest.strip()
    return title, contents.strip()


def row_fields(obj: dict) -> tuple[str | None, str, str, str | None]:
    """(id, title, text, url) of one passage row; KeyError/TypeError when unusable."""
    if not isinstance(obj, dict):
        raise TypeError(f"a row must be a JSON object, not {type(obj).__name__}")
    pid = obj.get("id", obj.get("docid"))
    pid = None if pid is None else str(pid)
    url = _str(obj, "url")
    title = _str(obj, "title") or _str(obj, "wikipedia_title")
    if "contents" in obj:
        contents = _str(obj, "contents")
        if contents is None:
            raise TypeError("'contents' is null")
        title, text = split_contents(contents, title)
        return pid, title, text, url
    text = _str(obj, "text")
    if title is None or text is None:
        raise KeyError("a row needs 'contents', or 'title' and 'text'")
    return pid, title, split_contents(text.lstrip(), title)[1], url


def parse_row(raw: bytes, row_format: str) -> tuple[str | None, str, str, str | None]:
    """(id, title, text, url) of one stored row; ``CorruptStoreError`` when it does not parse
    (a damaged file: the message says how to find out what else is damaged)."""
    try:
        obj = orjson.loads(raw)
        if row_format == STORE_FORMAT:
            return obj["id"], obj["title"], obj["text"], obj["url"]
        return row_fields(obj)
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptStoreError(
            f"a stored row does not parse ({exc}): the index files are damaged or were changed; "
            "run `python -m index_build verify --index ROOT` and rebuild what it names"
        ) from exc
