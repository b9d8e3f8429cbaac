"""Regenerate the non-English test dumps in ``tests/data/`` (``{zh,ja,th,de,frr}wiki-sample``).

Nothing here is invented text: namespace tables come from MediaWiki's own language files and
the prose from MediaWiki's translated interface messages (Debian's ``mediawiki`` package,
GPL-2.0+) and spaCy's example sentences (``spacy/lang/*/examples.py``, MIT; the Chinese ones are
from Chinese Wikipedia's article on the language). Around the prose each article carries the
markup real articles carry in that language: file links under localized names and aliases with
``thumb|250px`` captions, localized and canonical category links, language links, templates,
references, ``-{...}-`` variant rules (Chinese), and a localized references section.

North Frisian (``frr``) names no namespace itself: its Messages file falls back to German, so
its wiki's names (``Datei``) and aliases (``Bild``) are German's, resolved as MediaWiki's
localisation cache resolves them; its references section is German's heading.

    apt-get download mediawiki && dpkg-deb -x mediawiki_*.deb /tmp/mw
    python scripts/make_lang_samples.py /tmp/mw/usr/share/mediawiki tests/data
"""

from __future__ import annotations

import bz2
import importlib
import re
import sys
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_namespace_table import language_table  # noqa: E402

# language -> (Messages file, i18n file, letters that count, min letters, spaCy module, site)
LANGS = {
    "zh": ("Zh_hans", "zh-hans", r"[\u4e00-\u9fff]", 30, "zh", "中文维基百科"),
    "ja": ("Ja", "ja", r"[\u3040-\u30ff\u4e00-\u9fff]", 60, "ja", "ウィキペディア"),
    "th": ("Th", "th", r"[\u0e00-\u0e7f]", 80, None, "วิกิพีเดีย"),
    "de": ("De", "de", r"[A-Za-zäöüß]", 100, "de", "Wikipedia"),
    "frr": ("Frr", "frr", r"[A-Za-zäöüßåÅÄÖÜ]", 100, None, "Wikipedia"),
}
# localized references-section heading and category name of each sample
SECTION = {
    "zh": "参考资料",
    "ja": "脚注",
    "th": "อ้างอิง",
    "de": "Einzelnachweise",
    "frr": "Einzelnachweise",
}
MAIN_PAGE = {
    "zh": "Wikipedia:首页",
    "ja": "メインページ",
    "th": "หน้าหลัก",
    "de": "Wikipedia:Hauptseite",
    "frr": "Hoodsidj",  # the "mainpage" message of languages/i18n/frr.json
}
LEAD_TITLE = {"zh": "汉语", "ja": "ロンドン", "de": "Startup"}
ARTICLES = 6
MESSAGES_PER_ARTICLE = 8
_PLACEHOLDER = re.compile(r"\s*\$\d+\s*")
_PLACEHOLDER_LINK = re.compile(r"\[\$\d+ ([^\]]*)\]")  # [$1 text]: a link to a URL given later


def _messages(i18n: Path, lang: str) -> list[tuple[str, str]]:
    _, code, letters, least, _, _ = LANGS[lang]
    data = orjson.loads((i18n / f"{code}.json").read_bytes())
    out = []
    for key, value in sorted(data.items()):
        if not isinstance(value, str) or "<" in value or "{{" in value or "#" in value[:1]:
            continue
        if len(re.findall(letters, value)) >= least:
            if not any(w in key for w in ("thumb", "sample", "px")):
                value = _PLACEHOLDER_LINK.sub(r"\1", value)
                out.append((key, _PLACEHOLDER.sub(" ", value).strip()))
    return out


def _messages_file(code: str) -> str:
    return code[0].upper() + code[1:].replace("-", "_")


def _resolved_table(mediawiki: Path, messages_file: str) -> dict:
    """A language's namespace table merged with its ``$fallback`` languages' as MediaWiki does:
    own names first, a fallback's only for namespaces left unnamed; all aliases."""
    folder = mediawiki / "languages" / "messages"
    table = language_table((folder / f"Messages{messages_file}.php").read_text())
    names, aliases = dict(table["names"]), dict(table["aliases"])
    for code in table["fallback"]:
        fallback = language_table((folder / f"Messages{_messages_file(code)}.php").read_text())
        for key, name in fallback["names"].items():
            names.setdefault(key, name)
        for name, key in fallback["aliases"].items():
            aliases.setdefault(name, key)
    return {"names": names, "aliases": aliases}


def _names(table: dict, key: int) -> str:
    return table["names"][str(key)]


def _alias(table: dict, key: int) -> str | None:
    names = [n for n, k in table["aliases"].items() if k == key and n != _names(table, key)]
    names.sort(key=lambda n: n.isascii())  # a localized alias before "Image"
    return names[0] if names else None


def _decorate(lang: str, table: dict, title: str, paragraphs: list[str], n: int) -> str:
    file_ns, cat_ns = _names(table, 6), _names(table, 14)
    alias = _alias(table, 6) or "Image"
    parts = [
        "{{Infobox|name=" + title + "}}",
        f"[[{file_ns}:Sample {n}.jpg|thumb|250px|{title} [[{paragraphs[0][:4]}]]]]",
        f"'''{title}'''"
        + ("" if lang in ("zh", "ja") else " ")
        + paragraphs[0]
        + "<ref>{{cite web|url=https://example.org}}</ref>",
    ]
    for i, p in enumerate(paragraphs[1:], 1):
        if i == 2:
            parts.append(f"[[{alias}:Sample {n}b.png|thumb|left|upright=1.2|{p[:6]}]]")
        if lang == "zh" and "软件" in p and "-{" not in "".join(parts):
            p = "-{H|zh-cn:计算机;zh-tw:電腦;}-" + p.replace(
                "软件", "-{zh-hans:软件;zh-hant:軟體;}-", 1
            )
        if i == 4:
            parts.append("== " + p.lstrip("-*: ")[:8].strip() + " ==")
        parts.append(p)
    parts += [
        f"== {SECTION[lang]} ==",
        "{{reflist}}",
        f"[[{cat_ns}:{title}]]",
        f"[[{cat_ns.lower()}:Sample]]" if cat_ns.lower() != cat_ns else f"[[{cat_ns}: Sample]]",
        f"[[Category:{title}]]",
        f"[[en:{title}]]",
    ]
    return "\n\n".join(parts)


def _page(title: str, ns: int, pid: int, text: str, redirect: str | None = None) -> str:
    red = f"\n    <redirect title={quoteattr(redirect)} />" if redirect else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{pid}</id>{red}\n"
        f"    <revision>\n      <id>{pid * 10}</id>\n      <timestamp>2023-01-01T00:00:00Z</timestamp>\n"
        "      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
        "    </revision>\n  </page>\n"
    )


def build(mediawiki: Path, lang: str) -> str:
    messages_file, code, _, _, spacy_lang, sitename = LANGS[lang]
    table = _resolved_table(mediawiki, messages_file)
    base = f"https://{lang}.wikipedia.org/wiki/"
    namespaces = [(k, table["names"].get(str(k), "")) for k in range(-2, 16) if k != 4 and k != 5]
    namespaces += [(4, "Wikipedia"), (5, table["names"].get("1", "Talk") + " Wikipedia")]
    ns_xml = "\n".join(
        f'      <namespace key="{k}" case="first-letter">{escape(n)}</namespace>'
        if n
        else f'      <namespace key="{k}" case="first-letter" />'
        for k, n in sorted(namespaces)
    )
    head = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" '
        f'xml:lang="{lang}">\n  <siteinfo>\n    <sitename>{escape(sitename)}</sitename>\n'
        f"    <dbname>{lang}wiki</dbname>\n    <base>{base}{quote(MAIN_PAGE[lang])}</base>\n"
        "    <generator>MediaWiki 1.39.17</generator>\n    <case>first-letter</case>\n"
        f"    <namespaces>\n{ns_xml}\n    </namespaces>\n  </siteinfo>\n"
    )
    msgs = _messages(mediawiki / "languages" / "i18n", lang)
    pages = []
    pid = 1
    if spacy_lang:
        sentences = importlib.import_module(f"spacy.lang.{spacy_lang}.examples").sentences
        lead = LEAD_TITLE[lang]
        paragraphs = [" ".join(sentences[i : i + 2]) for i in range(0, len(sentences), 2)]
        paragraphs += [m for _, m in msgs[:2]]
        if lang == "zh":  # a paragraph for the -{...}- rules of _decorate
            paragraphs.append(next(m for _, m in msgs if "软件" in m))
        pages.append(_page(lead, 0, pid, _decorate(lang, table, lead, paragraphs, pid)))
        pid += 1
    for a in range(ARTICLES):
        group = msgs[a * MESSAGES_PER_ARTICLE + 2 : (a + 1) * MESSAGES_PER_ARTICLE + 2]
        if len(group) < 5:
            break
        title = group[0][0].replace("-", " ").replace("_", " ").capitalize()
        paragraphs = [m for _, m in group]
        pages.append(_page(title, 0, pid, _decorate(lang, table, title, paragraphs, pid)))
        pid += 1
    first = re.search(r"<title>(.*?)</title>", pages[0]).group(1)
    pages.append(_page(first + " (1)", 0, pid, f"#REDIRECT [[{first}]]", redirect=first))
    pages.append(
        _page(f"{_names(table, 14)}:{first}", 14, pid + 1, f"[[{_names(table, 14)}:Sample]]")
    )
    pages.append(_page(f"{_names(table, 10)}:Infobox", 10, pid + 2, "{{{name}}}"))
    if lang == "zh":  # an article written in traditional characters, for --chinese-script
        hant = _messages_hant(mediawiki)
        pages.append(
            _page("繁體範例", 0, pid + 3, _decorate(lang, table, "繁體範例", hant, pid + 3))
        )
    return head + "".join(pages) + "</mediawiki>\n"


def _messages_hant(mediawiki: Path) -> list[str]:
    data = orjson.loads((mediawiki / "languages" / "i18n" / "zh-hant.json").read_bytes())
    out = []
    for _, value in sorted(data.items()):
        if isinstance(value, str) and "<" not in value and "{{" not in value:
            if len(re.findall(r"[\u4e00-\u9fff]", value)) >= 40:
                out.append(_PLACEHOLDER.sub(" ", value).strip())
    return out[:8]


def main(argv: list[str]) -> int:
    mediawiki, out = Path(argv[0]), Path(argv[1])
    for lang in LANGS:
        path = out / f"{lang}wiki-sample-pages-articles.xml.bz2"
        path.write_bytes(bz2.compress(build(mediawiki, lang).encode("utf-8"), 9))
        print(f"{path}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
