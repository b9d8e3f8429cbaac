"""Chinese variants: ``-{...}-`` markup rendered, and one script for a whole corpus (OpenCC).

Chinese Wikipedia stores each article in whichever script its editors wrote, and shows readers
their variant through ``-{...}-`` rules and a converter. The cleaner shows the text of a block
for the preferred variant; a corpus in one script (so queries in that script match every page)
prefers that script's variants and runs OpenCC over the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from retriever.script import OPENCC_CONFIGS, script_converter

# what a block shows when no script is asked for: its plain "zh" text, else simplified, else traditional
DEFAULT_VARIANTS = ("zh", "zh-hans", "zh-hant", "zh-cn", "zh-tw", "zh-hk", "zh-sg")

# script -> (OpenCC configuration, variant codes of ``-{...}-`` rules, most preferred first)
SCRIPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "simplified": (
        OPENCC_CONFIGS["simplified"],
        ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw"),
    ),
    "traditional": (
        OPENCC_CONFIGS["traditional"],
        ("zh-hant", "zh-tw", "zh-hk", "zh-mo", "zh", "zh-hans", "zh-cn"),
    ),
}


_VARIANT_BLOCK = re.compile(r"-\{((?:(?!-\{).)*?)\}-", re.S)  # innermost first
_VARIANT_FLAGS = re.compile(r"\s*[A-Za-z\-]{1,2}\s*(?:;\s*[A-Za-z\-]{1,2}\s*)*;?\s*")
_VARIANT_RULE = re.compile(r"(?:^|;)\s*(?:[^;]*?=>\s*)?(zh|[a-z]{2,3}-[a-z]{2,4})\s*:")


def variant_text(body: str, variants: tuple[str, ...] = DEFAULT_VARIANTS) -> str:
    """What ``-{body}-`` language-variant markup shows: the text for the first of ``variants``
    that it has (else its first), its plain text when it has no rules, nothing for hidden
    rules (flags ``H``, ``T``, ``-``).

    >>> variant_text("zh-hans:计算机; zh-hant:電腦;")
    '计算机'
    >>> variant_text("zh-hans:计算机; zh-hant:電腦;", ("zh-tw", "zh-hant"))
    '電腦'
    >>> variant_text("H|zh-cn:优盘; zh-tw:隨身碟;"), variant_text("R|C++"), variant_text("Linux")
    ('', 'C++', 'Linux')
    """
    head, sep, rest = body.partition("|")
    if sep and _VARIANT_FLAGS.fullmatch(head):
        flags = {f.strip() for f in head.split(";")}
        if flags & {"H", "T", "-"}:
            return ""
        if "R" in flags:
            return rest
        body = rest
    marks = list(_VARIANT_RULE.finditer(body))
    if not marks:
        return body
    texts: dict[str, str] = {}
    for m, nxt in zip(marks, marks[1:] + [None]):
        end = nxt.start() if nxt is not None else len(body)
        texts.setdefault(m.group(1), body[m.end() : end].strip().rstrip(";").strip())
    for code in variants:
        if code in texts:
            return texts[code]
    return next(iter(texts.values()))


def render_variants(text: str, variants: tuple[str, ...] = DEFAULT_VARIANTS) -> str:
    """Replace every ``-{...}-`` block of ``text`` by what it shows (nested blocks too)."""
    for _ in range(4):
        if "-{" not in text:
            break
        text, n = _VARIANT_BLOCK.subn(lambda m: variant_text(m.group(1), variants), text)
        if not n:
            break
    return text


def _check(script: str) -> None:
    if script not in SCRIPTS:
        raise ValueError(f"unknown Chinese script {script!r}: use {' or '.join(SCRIPTS)}")


def variants_for(script: str) -> tuple[str, ...]:
    _check(script)
    return SCRIPTS[script][1]


def converter(script: str) -> Callable[[str], str]:
    """``str -> str`` converting to ``script`` (OpenCC, loaded once per process); the same
    converter the retriever applies to queries (``retriever.script``)."""
    _check(script)
    return script_converter(script)


def manifest_fields(script: str) -> dict:
    """What the corpus manifest records about the conversion."""
    import opencc

    _check(script)
    return {
        "to": script,
        "converter": "opencc",
        "config": SCRIPTS[script][0],
        "version": getattr(opencc, "__version__", "unknown"),
    }
