"""Regenerate ``index_build/data/namespaces.json`` from MediaWiki's own language files.

Source: Debian's ``mediawiki`` package (``apt-get download mediawiki && dpkg-deb -x *.deb mw``),
``usr/share/mediawiki/languages/messages/Messages*.php``: each language's localized namespace
names (``$namespaceNames``) and aliases (``$namespaceAliases``), and its fallback languages
(``$fallback``). Dumps state their own names in ``<siteinfo>``, but not the aliases a wiki also
accepts (``图像:`` for ``文件:``, ``Bild:`` for ``Datei:``); the corpus reader takes those from
this table, following each language's fallbacks as MediaWiki does (``index_build.siteinfo``).

    python scripts/make_namespace_table.py /tmp/mw/usr/share/mediawiki > index_build/data/namespaces.json
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import orjson

NS = {
    "NS_MEDIA": -2, "NS_SPECIAL": -1, "NS_MAIN": 0, "NS_TALK": 1, "NS_USER": 2,
    "NS_USER_TALK": 3, "NS_PROJECT": 4, "NS_PROJECT_TALK": 5, "NS_FILE": 6, "NS_IMAGE": 6,
    "NS_FILE_TALK": 7, "NS_IMAGE_TALK": 7, "NS_MEDIAWIKI": 8, "NS_MEDIAWIKI_TALK": 9,
    "NS_TEMPLATE": 10, "NS_TEMPLATE_TALK": 11, "NS_HELP": 12, "NS_HELP_TALK": 13,
    "NS_CATEGORY": 14, "NS_CATEGORY_TALK": 15,
}  # fmt: skip
# a PHP string literal, backslash escapes included ('Ta\'ãnga')
_STR = r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")"""
_ENTRY = re.compile(rf"^\s*(?:(NS_[A-Z_]+)\s*=>\s*{_STR}|{_STR}\s*=>\s*(NS_[A-Z_]+))", re.M)
_FALLBACK = re.compile(rf"^\$fallback\s*=\s*{_STR}\s*;", re.M)


def _unquote(text: str) -> str:
    r"""The value of a PHP string literal's body.

    >>> _unquote(r"Ta\'ãnga")
    "Ta'ãnga"
    """
    return re.sub(r"\\(.)", r"\1", text)


def _array(php: str, name: str) -> str:
    m = re.search(rf"\${name}\s*=\s*(?:\[|array\s*\()(.*?)(?:\]|\));", php, re.S)
    return m.group(1) if m else ""


def language_table(php: str) -> dict:
    """``{"names": {key: name}, "aliases": {name: key}, "fallback": [code, ...]}`` of one
    Messages file (``fallback``: its ``$fallback`` languages, in order; English, MediaWiki's
    last fallback of every language, is not listed)."""
    names, aliases = {}, {}
    for m in _ENTRY.finditer(_array(php, "namespaceNames")):
        name = _unquote(m.group(2) or m.group(3) or "")
        if m.group(1) in NS and "$1" not in name:
            names[str(NS[m.group(1)])] = name.replace("_", " ")
    for m in _ENTRY.finditer(_array(php, "namespaceAliases")):
        name = _unquote(m.group(4) or m.group(5) or "")
        if m.group(6) in NS and "$1" not in name:
            aliases[name.replace("_", " ")] = NS[m.group(6)]
    fb = _FALLBACK.search(php)
    codes = _unquote(fb.group(1) or fb.group(2) or "").split(",") if fb else []
    fallback = [c.strip().lower() for c in codes if c.strip() and c.strip().lower() != "en"]
    return {"names": names, "aliases": aliases, "fallback": fallback}


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) / "languages" / "messages"
    out = {}
    for path in sorted(folder.glob("Messages*.php")):
        code = path.stem[len("Messages") :].lower().replace("_", "-")
        table = language_table(path.read_text(encoding="utf-8"))
        if table["names"] or table["aliases"] or table["fallback"]:
            out[code] = table
    sys.stdout.write(orjson.dumps(out, option=orjson.OPT_SORT_KEYS).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
