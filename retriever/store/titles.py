"""Title and URL normalisation: every way of naming a page maps to one lookup key.

``/wiki/A_B``, ``https://en.wikipedia.org/wiki/A_B``, ``index.php?title=A%20B`` and ``A B``
all name the same page.

>>> lookup_key("https://en.wikipedia.org/wiki/Albert_Einstein")
'albert einstein'
>>> lookup_key("/w/index.php?title=Albert%20Einstein&oldid=1")
'albert einstein'
>>> lookup_key("https://en.wikipedia.org/w/index.php/Albert_Einstein")
'albert einstein'
>>> lookup_key("http://en.wikipedia.org/wiki?curid=12")
'url:en.wikipedia.org/wiki?curid=12'
>>> lookup_key("http://[")
'url:http://['
>>> lookup_key("  albert   einstein ")
'albert einstein'
>>> lookup_key("Muscle &amp; Fitness") == lookup_key("Muscle & Fitness")
True
>>> lookup_key("https://en.wikipedia.org/w/index.php?title=Muscle_&_Fitness")
'muscle & fitness'
>>> title_to_url("AC/DC (band)")
'https://en.wikipedia.org/wiki/AC/DC_(band)'
"""

from __future__ import annotations

import hashlib
import html
import re
from urllib.parse import parse_qs, quote, unquote, unquote_plus, urlsplit

import numpy as np

WIKI_BASE = "https://en.wikipedia.org/wiki/"
_SPACES = re.compile(r"[\s_]+")


def clean_title(title: str) -> str:
    """Underscores to spaces, whitespace collapsed, first letter upper-cased (MediaWiki rule)."""
    t = _SPACES.sub(" ", title).strip()
    return t[:1].upper() + t[1:]


_URL_SAFE = "/:(),'!;@$*+=-._~"
_NEEDS_NO_QUOTING = re.compile(r"[A-Za-z0-9_/:(),'!;@$*+=.~-]*")


def title_to_url(title: str, base: str = WIKI_BASE) -> str:
    """The Wikipedia URL of a title, as the site writes it (read on every passage of a store
    without urls: titles that need no quoting skip ``quote``, 4x faster, same string)."""
    path = clean_title(title).replace(" ", "_")
    if _NEEDS_NO_QUOTING.fullmatch(path):
        return base + path
    return base + quote(path, safe=_URL_SAFE)


def _title_param(query: str) -> str | None:
    """The ``title=`` value of a query string; an ``&`` inside a title (``Muscle_&_Fitness``,
    as ASearcher's page urls write it) stays in the title unless a ``name=`` follows it."""
    params = query.split("&")
    for i, param in enumerate(params):
        if param.startswith("title="):
            value = [param[len("title=") :]]
            for more in params[i + 1 :]:
                if "=" in more:
                    break
                value.append(more)
            return unquote_plus("&".join(value))
    return None


def _title_from_url(text: str) -> str | None:
    """The page title a URL names, or None when it is not a wiki-style URL."""
    parts = urlsplit(text)
    if parts.query:
        title = _title_param(parts.query)
        if title is not None:
            return title
        if "curid" in parse_qs(parts.query):
            return None
    path = unquote(parts.path)
    for marker in ("/wiki/", "/index.php/"):  # ASearcher rewrites index.php/T to ?title=T
        if marker in path:
            return path.split(marker, 1)[1]
    return None


def lookup_key(text: str) -> str:
    """The key under which a title or URL is looked up (case-folded, spaces normalised)."""
    text = text.strip()
    looks_like_url = (
        "://" in text
        or "/wiki/" in text
        or "index.php?" in text
        or text.startswith(("/w/", "wiki/"))
    )
    if looks_like_url:
        if text.startswith("wiki/"):
            text = "/" + text
        try:
            title = _title_from_url(text)
        except ValueError:  # not a parseable URL (``http://[``): look it up as written
            return "url:" + text.casefold()
        if title is None:
            parts = urlsplit(text)
            query = "?" + parts.query if parts.query else ""
            return "url:" + (parts.netloc.lower() + parts.path).rstrip("/") + query
        text = title
    text = unquote(text).split("#", 1)[0]
    if "&" in text:  # HotpotQA and WikiExtractor titles may carry HTML entities
        text = html.unescape(text)
    return _SPACES.sub(" ", text).strip().casefold()


def key_hash(key: str) -> int:
    """A 63-bit hash of a lookup key, stable across runs and machines (sorted-array indexes)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def key_hashes(keys: list[str]) -> np.ndarray:
    return np.fromiter((key_hash(k) for k in keys), dtype=np.int64, count=len(keys))
