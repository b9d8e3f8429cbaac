"""Namespace names and aliases follow MediaWiki's language fallbacks (``$fallback``).

``frrwiki-sample`` is a North Frisian dump (``scripts/make_lang_samples.py``): North Frisian names
no namespace itself and falls back to German, so its file links are written ``[[Datei:...]]``
and ``[[Bild:...]]`` (German's name and German's alias), which must not reach a passage.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import DATA

from index_build.corpus import CorpusConfig, build_corpus
from index_build.siteinfo import SiteInfo, language_namespaces
from index_build.wikitext import wikitext_to_text
from retriever.store.docstore import DocStore

FRR = DATA / "frrwiki-sample-pages-articles.xml.bz2"
RESIDUE = re.compile(
    r"thumb|\d+px|upright|Sample|\[\[|\]\]|\{\{|\}\}|<ref|'''|Infobox|"
    r"(?:File|Image|Category|Kategorie|Datei|Bild)\s*:",
    re.I,
)


@pytest.fixture(scope="module")
def frr_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("frrwiki")
    build_corpus([FRR], root, CorpusConfig(workers=1))
    return root


def test_fallback_language_dump_gives_clean_prose(frr_root):
    store = DocStore.open(frr_root)
    assert store.manifest["language"] == "frr"
    assert store.manifest["skipped"] == {"other_namespace": 2}
    passages = list(store.iter_passages())
    assert len(passages) >= 10
    for p in passages:
        m = RESIDUE.search(p.text)
        assert m is None, f"{m.group()!r} in {p.title!r}: {p.text}"
        assert p.text.strip() and "Einzelnachweise" not in p.text
    # the caption of a file link goes with it; the prose around it stays
    assert any("Allmessagestext Det as en list mä MediaWiki" in p.text for p in passages)


@pytest.mark.parametrize(
    ("language", "link"),
    [
        ("frr", "Datei"),  # no name of its own: German's name, even without a <siteinfo> list
        ("frr", "Bild"),  # German's alias
        ("bar", "Bild"),  # own name Datei, German's alias inherited
        ("hsb", "Bild"),  # fallbacks dsb, then de
        ("cv", "Изображение"),  # Chuvash falls back to Russian
        ("an", "Imagen"),  # Aragonese falls back to Spanish
    ],
)
def test_file_links_under_fallback_names_are_removed(language, link):
    site = SiteInfo(language=language)  # a dump whose <siteinfo> lists no namespaces
    assert site.namespace_of(f"{link}:X.jpg") == 6
    text = f"Vor.\n\n[[{link}:X.jpg|thumb|250px|Caption [[Y]]]]\n\nNach."
    assert wikitext_to_text(text, rules=site.markup_rules()) == "Vor.\n\nNach."


def test_own_names_win_over_a_fallbacks_names():
    """MediaWiki takes a fallback's name only for a namespace the language leaves unnamed:
    Upper Sorbian names files Dataja, so German's Datei is no file prefix there."""
    hsb = language_namespaces("hsb")
    assert hsb["dataja"] == 6 and "datei" not in hsb and hsb["bild"] == 6
    assert language_namespaces("de")["bild"] == 6 and "dataja" not in language_namespaces("de")
