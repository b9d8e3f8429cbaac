"""Wikitext to clean plain text, with mwparserfromhell doing the parsing.

Templates, references, tables, files and images, categories, interlanguage links, HTML
comments and tags are removed; links become their visible text; section headings become
paragraph breaks (their text kept as a line), and reference-only sections are dropped.

>>> wikitext_to_text("'''Paris''' is the capital of [[France|the French Republic]].{{cn}}<ref>x</ref>")
'Paris is the capital of the French Republic.'
>>> wikitext_to_text("A [[File:X.jpg|thumb|caption]] b [[Category:Cities]] [[fr:Paris]]")
'A b'
>>> wikitext_to_text("It is {{convert|10|km|mi}} long, from {{lang|fr|Paris}}.")
'It is 10 km long, from Paris.'
>>> wikitext_to_text("== History ==\\nOld.\\n== References ==\\n* ref")
'History\\n\\nOld.'
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from functools import cached_property, partial

import mwparserfromhell
from mwparserfromhell.nodes import (
    Argument,
    Comment,
    ExternalLink,
    Heading,
    HTMLEntity,
    Tag,
    Template,
    Text,
    Wikilink,
)

from .chinese import DEFAULT_VARIANTS, render_variants

DROP_NAMESPACES = {
    "file",
    "image",
    "media",
    "category",
    "wikipedia",
    "wp",
    "template",
    "help",
    "portal",
    "user",
    "talk",
    "special",
    "module",
    "draft",
    "mediawiki",
    "book",
    "timedtext",
}
DROP_TAGS = {
    "ref",
    "references",
    "table",
    "gallery",
    "timeline",
    "imagemap",
    "math",
    "chem",
    "score",
    "graph",
    "templatedata",
    "includeonly",
    "noinclude",
    "mapframe",
    "maplink",
    "hiero",
    "inputbox",
    "categorytree",
    "syntaxhighlight",
    "source",
    "ce",
    "style",
    "script",
    "img",
}
MEDIA_NAMESPACES = ("file", "image", "media", "category")


@dataclass(frozen=True)
class MarkupRules:
    """What a wiki's markup means: link prefixes that hide a link (``drop``: namespaces other
    than articles) and, among them, those removed with their nested captions (``media``: files,
    categories), lower-case with spaces; and which language variant ``-{...}-`` markup shows
    (``variants``, most preferred first). A dump's ``<siteinfo>`` supplies its own
    (``index_build.siteinfo``); the default is English Wikipedia's.
    """

    drop: frozenset[str] = frozenset(DROP_NAMESPACES)
    media: frozenset[str] = frozenset(MEDIA_NAMESPACES)
    variants: tuple[str, ...] = DEFAULT_VARIANTS

    @cached_property
    def media_link(self) -> re.Pattern:
        names = sorted(self.media, key=len, reverse=True)
        alts = "|".join(r"[ _]+".join(map(re.escape, n.split())) for n in names)
        return re.compile(rf"\[\[\s*:?\s*(?:{alts})\s*:", re.I)


ENGLISH_RULES = MarkupRules()
BREAK_TAGS = {"br", "hr", "p", "li", "dd", "dt", "tr", "div"}
DROP_SECTIONS = {
    "references",
    "external links",
    "see also",
    "further reading",
    "notes",
    "footnotes",
    "bibliography",
    "sources",
    "citations",
    "notes and references",
    "references and notes",
    "external link",
    "works cited",
    "gallery",
    # the same sections in other Wikipedias (compared lower-cased)
    "参考资料", "参考資料", "参考文献", "参考来源", "參考來源", "外部链接", "外部連結", "参见",
    "參見", "注释", "註釋", "脚注", "腳註", "出典", "関連項目", "外部リンク", "注釈",
    "einzelnachweise", "weblinks", "literatur", "siehe auch", "anmerkungen",
    "références", "notes et références", "liens externes", "voir aussi", "bibliographie",
    "referencias", "enlaces externos", "véase también", "bibliografía", "notas",
    "referências", "ligações externas", "ver também", "collegamenti esterni", "voci correlate",
    "примечания", "ссылки", "литература", "см. также", "przypisy", "bibliografia",
    "linki zewnętrzne", "zobacz też", "referenties", "externe links", "zie ook",
    "อ้างอิง", "แหล่งข้อมูลอื่น", "ดูเพิ่ม", "각주", "외부 링크", "같이 보기", "참고 문헌",
}  # fmt: skip
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z]+)*$")
_MAGIC = re.compile(r"__[A-Z]+__")
_QUOTES = re.compile(r"'{2,}")
_EMPTY_PARENS = re.compile(r"\(\s*(?:[,;:.]\s*)*\)")
_PAREN_LEAD = re.compile(r"\(\s*(?:[,;:]\s*)+")
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPACE_PUNCT = re.compile(r" +([,.;:!?)])")
_OPEN_PAREN_SPACE = re.compile(r"\( +")
_LEFTOVER = re.compile(r"\{\{|\}\}|\[\[|\]\]")


def _link_target(title: str, rules: MarkupRules = ENGLISH_RULES) -> str:
    """The article an internal link points to, as a clean title ("" for in-page anchors and
    for links into other namespaces or wikis: those are no articles of the store)."""
    target = title.strip().lstrip(":").split("#", 1)[0]
    target = " ".join(target.replace("_", " ").split())
    if not target:
        return ""
    if ":" in target:
        prefix = target.split(":", 1)[0].strip().lower()
        if prefix in rules.drop or _LANG_PREFIX.match(prefix):
            return ""
    return target[:1].upper() + target[1:]


def _plain(rules: MarkupRules):
    """The link replacement of plain rendering (no link list kept)."""
    return lambda m: _visible_link(m.group(1), m.group(2), rules)


def _visible_link(title: str, text: str | None, rules: MarkupRules = ENGLISH_RULES) -> str:
    """What an internal link shows: its text, else its target; nothing for files, categories,
    other namespaces and interlanguage links."""
    title = title.strip()
    target = title.lstrip(":")
    if ":" in target and not title.startswith(":"):
        prefix = " ".join(target.split(":", 1)[0].replace("_", " ").split()).lower()
        if prefix in rules.drop or (_LANG_PREFIX.match(prefix) and text is None):
            return ""
    if text is not None:
        return text
    return target[1:] if target.startswith("#") else target.split("#", 1)[0]


_KEEP_FIRST = {
    "nihongo",
    "nowrap",
    "nobr",
    "nobreak",
    "small",
    "big",
    "nowrap begin",
    "smallcaps",
    "sic",
    "lang-en",
}
_RENDERED = _KEEP_FIRST | {"convert", "cvt", "lang"}
_UNIT_WORDS = {"to", "and", "or", "-", "–", "x", "by", "+/-", "±"}


def _template_text(name: str, values: list[str]) -> str:
    """Visible text of the few templates that carry article words (units, foreign terms)."""
    if name in ("convert", "cvt") and values:
        out = [values[0]]
        i = 1
        while i < len(values) and values[i] in _UNIT_WORDS and i + 1 < len(values):
            out += [values[i], values[i + 1]]
            i += 2
        if i < len(values):
            out.append(values[i])
        return " ".join(v for v in out if v)
    if name == "lang" and len(values) >= 2:
        return values[1]
    if name.startswith("lang-") and values:
        return values[0]
    if name in _KEEP_FIRST and values:
        return values[0]
    return ""


def _render(code, parts: list[str] | None = None, rules: MarkupRules = ENGLISH_RULES) -> str:
    own = parts is None
    parts = [] if own else parts
    skip_level = 0
    for node in code.nodes:
        kind = type(node)
        if kind is Heading:
            title = _render(node.title, None, rules).strip()
            if skip_level and node.level > skip_level:
                continue
            skip_level = node.level if title.lower() in DROP_SECTIONS else 0
            if not skip_level:
                parts.append(f"\n\n{title}\n\n")
            continue
        if skip_level:
            continue
        if kind is Text:
            parts.append(node.value)
        elif kind is Wikilink:
            text = None if node.text is None else _render(node.text, None, rules)
            parts.append(_visible_link(str(node.title), text, rules))
        elif kind is Tag:
            name = str(node.tag).strip().lower()
            if name in DROP_TAGS or node.wiki_markup == "{|":
                continue
            if name in BREAK_TAGS:
                parts.append("\n")
            if node.contents is not None and not node.self_closing:
                _render(node.contents, parts, rules)
        elif kind is ExternalLink:
            if node.title is not None:
                parts.append(_render(node.title, None, rules))
        elif kind is HTMLEntity:
            parts.append(node.normalize())
        elif kind in (Template, Comment, Argument):
            continue
        else:
            parts.append(str(node))
    return "".join(parts) if own else ""


_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_REF_EMPTY = re.compile(r"<ref\b[^>]*/\s*>", re.I)
_REF = re.compile(r"<ref\b[^>]*>.*?(?:</ref\s*>|\Z)", re.I | re.S)
_BRACES = re.compile(r"\{\{|\}\}")
_BRACKETS = re.compile(r"\[\[|\]\]")
_TABLE = re.compile(r"^[ \t:]*(\{\||\|\})", re.M)
_TEMPLATE_NAME = re.compile(r"\{\{\s*([^|}]*)")


def _drop_nested(text: str, tokens: re.Pattern, keep) -> str:
    """Remove balanced spans opened/closed by ``tokens``; ``keep(span)`` may return a replacement."""
    out, depth, start, last = [], 0, 0, 0
    for m in tokens.finditer(text):
        if m.group() in ("{{", "[["):
            if depth == 0:
                start = m.start()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                span = text[start : m.end()]
                replacement = keep(span)
                if replacement is not None:
                    out.append(text[last:start])
                    out.append(replacement)
                    last = m.end()
    out.append(text[last:])
    return "".join(out)


def _template_span(span: str, rules: MarkupRules = ENGLISH_RULES) -> str:
    name = _TEMPLATE_NAME.match(span)
    name = name.group(1).strip().lower().replace("_", " ") if name else ""
    if not (name in _RENDERED or name.startswith("lang-")):
        return ""
    inner = span[2:-2]
    if "{{" in inner:  # nested templates: resolve the inner ones first
        inner = _drop_nested(inner, _BRACES, partial(_template_span, rules=rules))
    if "[[" in inner:  # links inside: let the parser split the parameters
        node = mwparserfromhell.parse("{{" + inner + "}}").nodes[0]
        values = [_render(p.value, None, rules).strip() for p in node.params if not p.showkey]
    else:
        values = [p.strip() for p in inner.split("|")[1:] if "=" not in p]
    return _template_text(name, values)


def _media_span(span: str, rules: MarkupRules = ENGLISH_RULES) -> str | None:
    return "" if rules.media_link.match(span) else None


def _drop_tables(text: str) -> str:
    out, depth, last = [], 0, 0
    for m in _TABLE.finditer(text):
        if m.group(1) == "{|":
            if depth == 0:
                out.append(text[last : m.start()])
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                last = m.end()
    if depth == 0:
        out.append(text[last:])
    return "".join(out)


def pre_strip(wikitext: str, rules: MarkupRules = ENGLISH_RULES) -> str:
    """Cheap removal of comments, references, templates, tables and media links before parsing.

    These are most of an article's markup; cutting them first keeps the parser's work small.
    """
    text = _COMMENT.sub("", wikitext)
    if "-{" in text:
        text = render_variants(text, rules.variants)
    text = _REF_EMPTY.sub("", text)
    text = _REF.sub("", text)
    text = _drop_nested(text, _BRACES, partial(_template_span, rules=rules))
    text = _drop_tables(text)
    return _drop_nested(text, _BRACKETS, partial(_media_span, rules=rules))


_TAG_NAMES = "|".join(sorted(DROP_TAGS))
_DROP_BLOCK = re.compile(rf"<({_TAG_NAMES})\b[^>]*?(?<!/)>.*?(?:</\1\s*>|\Z)", re.I | re.S)
_BREAK_TAG = re.compile(r"</?(?:br|hr|p|li|dd|dt|tr|div)\b[^>]*>", re.I)
_ANY_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^>]*>")
_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_EXT_LINK = re.compile(r"\[(?:https?:|ftp:|mailto:)?//[^\s\]]*(?:\s+([^\]]*))?\]")
_HEADING = re.compile(r"^(={1,6})[ \t]*(.+?)[ \t]*\1[ \t]*$", re.M)


def _inline(
    text: str, rules: MarkupRules = ENGLISH_RULES, links: list[tuple[str, str]] | None = None
) -> str:
    """Tags, links and external links of text that ``pre_strip`` already cleaned; with
    ``links``, the (target, shown text) of each article link is appended to it in order."""
    text = _DROP_BLOCK.sub("", text)
    text = _BREAK_TAG.sub("\n", text)
    text = _ANY_TAG.sub("", text)

    def visible(m: re.Match) -> str:
        shown = _visible_link(m.group(1), m.group(2), rules)
        if links is not None and shown:
            target = _link_target(m.group(1), rules)
            if target:
                links.append((target, shown))
        return shown

    for _ in range(3):  # links inside link text
        text, n = _LINK.subn(visible if links is not None else _plain(rules), text)
        if not n:
            break
    return _EXT_LINK.sub(lambda m: m.group(1) or "", text)


def _render_fast(text: str, rules: MarkupRules = ENGLISH_RULES, marks: list | None = None) -> str:
    """The regex renderer: same output as ``_render`` on pre-stripped text, several times faster.

    With ``marks``, the kept headings (``("h", level, title)``) and article links (``("a",
    target, text)``) are appended to it in reading order, for ``wikitext_to_page``."""
    parts: list[str] = []
    links: list | None = None if marks is None else []
    last = 0
    skip_level = 0

    def inline(chunk: str) -> str:
        out = _inline(chunk, rules, links)
        if marks is not None:
            marks.extend(("a", target, shown) for target, shown in links)
            links.clear()
        return out

    for m in _HEADING.finditer(text):
        if not skip_level:
            parts.append(inline(text[last : m.start()]))
        level = len(m.group(1))
        title = _inline(m.group(2), rules).strip()
        last = m.end()
        if skip_level and level > skip_level:
            continue
        skip_level = level if _QUOTES.sub("", title).strip().lower() in DROP_SECTIONS else 0
        if not skip_level:
            parts.append(f"\n\n{title}\n\n")
            if marks is not None:
                marks.append(("h", level, title))
    if not skip_level:
        parts.append(inline(text[last:]))
    return "".join(parts)


_LIST_MARK_M = re.compile(r"^[ \t]*[*#:;]+[ \t]*", re.M)
_RULE_M = re.compile(r"^[ \t]*-{4,}[ \t]*", re.M)  # "----": a horizontal rule
_TABLE_LINE_M = re.compile(r"^[ \t]*(?:\{\||\|\}|\|-|\||!).*$", re.M)


def _tidy(raw: str) -> str:
    text = html.unescape(_MAGIC.sub("", raw))
    text = _TABLE_LINE_M.sub("", text)
    text = _RULE_M.sub("", text)
    text = _LIST_MARK_M.sub("", text)
    text = _QUOTES.sub("", text)
    text = _LEFTOVER.sub("", text)
    text = _EMPTY_PARENS.sub("", text)
    text = _PAREN_LEAD.sub("(", text)
    text = _SPACES.sub(" ", text)
    text = _SPACE_PUNCT.sub(r"\1", text)
    text = _OPEN_PAREN_SPACE.sub("(", text)
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [x.strip() for x in block.split("\n") if x.strip()]
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def wikitext_to_text(
    wikitext: str, parser: str = "fast", rules: MarkupRules = ENGLISH_RULES
) -> str:
    """Plain text of an article's wikitext: paragraphs separated by blank lines.

    ``parser="mwparserfromhell"`` renders the pre-stripped text through mwparserfromhell's tree
    instead of the regex renderer: the reference the fast path is tested against. ``rules``
    name the wiki's namespaces (its dump's ``<siteinfo>``) and the variant to show.
    """
    text = pre_strip(wikitext, rules)
    if parser == "fast":
        return _tidy(_render_fast(text, rules))
    if parser == "mwparserfromhell":
        return _tidy(_render(mwparserfromhell.parse(text, skip_style_tags=True), None, rules))
    raise ValueError(f"parser must be 'fast' or 'mwparserfromhell', got {parser!r}")


def wikitext_to_page(
    wikitext: str, rules: MarkupRules = ENGLISH_RULES
) -> tuple[str, dict[str, list]]:
    """``wikitext_to_text``'s text (the same string) and where its parts are in it: ``sections``
    ``[level, heading, offset]`` and ``links`` ``[target title, anchor text, offset]``, offsets
    in characters of the text. The anchors are found in the text in reading order; a link
    whose anchor the clean-up changed beyond finding keeps offset -1 (listed, not placed).

    >>> text, meta = wikitext_to_page("'''Paris''' is in [[France|the Republic]].\\n== Past ==\\nOld [[rome]].")
    >>> text
    'Paris is in the Republic.\\n\\nPast\\n\\nOld rome.'
    >>> meta
    {'sections': [[2, 'Past', 27]], 'links': [['France', 'the Republic', 12], ['Rome', 'rome', 37]]}
    """
    marks: list = []
    text = _tidy(_render_fast(pre_strip(wikitext, rules), rules, marks))
    sections: list[list] = []
    links: list[list] = []
    pos = 0
    for kind, a, b in marks:
        shown = _tidy(b)
        if kind == "h":
            at = text.find(shown, pos) if shown else -1
            while at > 0 and text[at - 1] != "\n":  # a heading is a line of its own
                at = text.find(shown, at + 1)
            if at >= 0:
                sections.append([a, shown, at])
                pos = at + len(shown)
            continue
        at = text.find(shown, pos) if shown else -1
        if at >= 0:
            pos = at + len(shown)
        links.append([a, shown, at])
    return text, {"sections": sections, "links": links}
