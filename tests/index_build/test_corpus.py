"""The corpus pipeline on real samples: markup-free text, redirects, lookups, every format."""

from __future__ import annotations

import bz2
import gzip
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import DATA
from corpus_support import multistream_dump

from index_build.__main__ import main as build
from index_build.corpus import CorpusConfig, build_corpus
from retriever.errors import CorpusInputError, IndexFormatError
from retriever.inspect import main as inspect_main
from retriever.store.docstore import DocStore

XML = DATA / "enwiki-sample-pages-articles.xml.bz2"
SLICE = DATA / "wikiextractor-slice.txt.gz"
MARKUP = re.compile(
    r"\{\{|\}\}|\[\[|\]\]|<ref|</?[a-z]+[ >/]|\{\||\|\}|<!--|&[a-z]+;|thumb\||\|px|'''|__[A-Z]+__"
)


def _xml_pages() -> list[tuple[str, str | None]]:
    """(title, redirect target) of every main-namespace page of the XML sample."""
    import xml.etree.ElementTree as ET

    out = []
    with bz2.open(XML) as f:
        for _, elem in ET.iterparse(f):
            if elem.tag.endswith("}page"):
                ns = elem.find("{*}ns").text
                if ns == "0":
                    red = elem.find("{*}redirect")
                    out.append(
                        (elem.find("{*}title").text, None if red is None else red.get("title"))
                    )
                elem.clear()
    return out


def test_xml_passages_carry_no_markup(xml_root):
    store = DocStore.open(xml_root)
    assert len(store) > 3000
    for p in store.iter_passages():
        m = MARKUP.search(p.text)
        assert m is None, (
            f"markup {m.group()!r} in {p.title!r}: ...{p.text[max(0, m.start() - 60) : m.end() + 60]}"
        )
        assert p.text.strip() and p.title


def test_xml_redirects_are_not_passages_but_resolve(xml_root):
    store = DocStore.open(xml_root)
    pages = _xml_pages()
    redirects = {t: target for t, target in pages if target}
    articles = {t for t, target in pages if not target}
    titles = {store.get(r).title for r in range(len(store))}
    assert redirects and not (set(redirects) & titles)
    assert titles <= articles
    resolved = 0
    for source, target in redirects.items():
        if target in articles:
            page = store.page(source)
            assert page is not None and page.title == target, source
            resolved += 1
    assert resolved >= 5
    assert store.manifest["num_redirects"] == resolved


def test_xml_other_namespaces_skipped(xml_root):
    store = DocStore.open(xml_root)
    assert store.manifest["skipped"].get("other_namespace") == 1
    assert not any(store.get(r).title.startswith("Wikipedia:") for r in range(len(store)))


def test_passage_word_counts(xml_root):
    store = DocStore.open(xml_root)
    by_page: dict[str, list[int]] = {}
    for p in store.iter_passages():
        by_page.setdefault(p.title, []).append(len(p.text.split()))
    for title, counts in by_page.items():
        assert all(c == 100 for c in counts[:-1]), title
        assert 0 < counts[-1] <= 100, title
    # the passages of a page are exactly its words, in order
    page = store.page("Anarchism")
    words = " ".join(store.get(r).text for r in store.find_title("Anarchism")).split()
    assert words == page.text.split()


@pytest.mark.parametrize(
    "name",
    [
        "Albert Einstein",
        "albert einstein",
        "Albert_Einstein",
        "/wiki/Albert_Einstein",
        "https://en.wikipedia.org/wiki/Albert_Einstein",
        "https://en.wikipedia.org/w/index.php?title=Albert%20Einstein",
        "index.php?title=Albert_Einstein&oldid=5",
        "en.wikipedia.org/wiki/Albert_Einstein#Life",
    ],
)
def test_lookup_by_every_title_and_url_form(xml_root, name):
    store = DocStore.open(xml_root)
    page = store.page(name)
    assert page is not None and page.title == "Albert Einstein"
    rows = store.find_title(name)
    assert rows and all(store.get(r).title == "Albert Einstein" for r in rows)
    assert store.find_id(store.get(rows[1]).id) == rows[1]
    assert store.page_by_id(page.id).title == "Albert Einstein"


def test_unknown_lookups_are_none(xml_root):
    store = DocStore.open(xml_root)
    assert store.page("No such page at all") is None
    assert store.find_title("") == []
    assert store.find_id("nope") is None
    with pytest.raises(IndexError):
        store.get(len(store))


def test_multistream_equals_plain(tmp_path, xml_root):
    path = multistream_dump(bz2.decompress(XML.read_bytes()), tmp_path, 7, "enwiki-test")
    build_corpus([path], tmp_path / "ms", CorpusConfig(workers=2))
    a, b = DocStore.open(xml_root), DocStore.open(tmp_path / "ms")
    assert len(a) == len(b)
    assert a.checksum == b.checksum
    assert b.page("Anarchy theory") == a.page("Anarchy theory")


def test_wikiextractor_slice_reads_right(tmp_path):
    build_corpus([SLICE], tmp_path / "wx")
    store = DocStore.open(tmp_path / "wx")
    with gzip.open(SLICE, "rt") as f:
        raw = f.read()
    titles = re.findall(r'<doc id="\d+" url="[^"]*" title="([^"]*)">', raw)
    assert store.num_pages + store.manifest["skipped"].get("empty", 0) == len(titles) == 40
    page = store.page("Anarchism")
    assert page.text.startswith("Anarchism is a political philosophy")
    assert "</doc>" not in page.text and not page.text.startswith("Anarchism\n")
    assert store.page("http://en.wikipedia.org/wiki?curid=12").title == "Anarchism"
    assert store.get(0).url == "http://en.wikipedia.org/wiki?curid=12"
    assert store.get(0).id == "12-0"


def test_wikiextractor_folder_of_shards_plain_json_and_compressed(tmp_path):
    docs = [
        {
            "id": str(i),
            "url": f"https://x/{i}",
            "title": f"Page {i}",
            "text": f"Page {i}\n\n" + " ".join(["w"] * (50 * i + 10)),
        }
        for i in range(1, 7)
    ]
    folder = tmp_path / "text" / "AA"
    folder.mkdir(parents=True)
    plain = "".join(
        f'<doc id="{d["id"]}" url="{d["url"]}" title="{d["title"]}">\n{d["text"]}\n</doc>\n'
        for d in docs[:3]
    )
    (folder / "wiki_00").write_text(plain)
    with bz2.open(folder / "wiki_01.bz2", "wt") as f:
        f.write("".join(json.dumps(d) + "\n" for d in docs[3:]))
    build_corpus([tmp_path / "text"], tmp_path / "out")
    store = DocStore.open(tmp_path / "out")
    assert store.num_pages == 6
    assert [store.page(f"Page {i}").text.split() for i in (1, 4)] == [["w"] * 60, ["w"] * 210]
    assert len(store) == sum(-(-(50 * i + 10) // 100) for i in range(1, 7))


def _search_r1_rows(n: int = 5) -> list[dict]:
    return [
        {"id": str(i), "contents": f'"Title {i // 2}"\nText number {i} about things.'}
        for i in range(n)
    ]


def test_search_r1_jsonl_opens_in_place(tmp_path):
    src = tmp_path / "wiki-18.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _search_r1_rows()))
    build_corpus([src], tmp_path / "idx")
    store = DocStore.open(tmp_path / "idx")
    assert store.manifest["passages"]["path"] == str(src.resolve())
    assert not (tmp_path / "idx" / "corpus" / "passages.jsonl").exists()
    p = store.get(3)
    assert (p.id, p.title, p.text) == ("3", "Title 1", "Text number 3 about things.")
    assert p.contents == '"Title 1"\nText number 3 about things.'
    assert store.find_title("/wiki/Title_1") == [2, 3]
    assert (
        "Text number 2" in store.page("Title 1").text
        and "Text number 3" in store.page("Title 1").text
    )
    src.write_text(src.read_text() + '{"id": "5", "contents": "\\"X\\"\\ny"}\n')
    with pytest.raises(IndexFormatError, match="changed"):
        DocStore.open(tmp_path / "idx")


def test_asearcher_and_title_text_jsonl_round_trip(tmp_path):
    src = tmp_path / "asearcher.jsonl"
    rows = [
        {
            "contents": f"Body {i}",
            "url": f"https://en.wikipedia.org/wiki/T{i}",
            "wikipedia_title": f"T{i}",
        }
        for i in range(3)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_corpus([src], tmp_path / "a", CorpusConfig(in_place="no"))
    store = DocStore.open(tmp_path / "a")
    assert [(p.title, p.text, p.url) for p in store.iter_passages()] == [
        (f"T{i}", f"Body {i}", f"https://en.wikipedia.org/wiki/T{i}") for i in range(3)
    ]
    src2 = tmp_path / "tt.jsonl.gz"
    with gzip.open(src2, "wt") as f:
        f.write(
            json.dumps({"title": "Long one", "text": " ".join(str(i) for i in range(250))}) + "\n"
        )
    build_corpus([src2], tmp_path / "b")
    store = DocStore.open(tmp_path / "b")
    assert [len(p.text.split()) for p in store.iter_passages()] == [100, 100, 50]
    assert store.get(0).url == "https://en.wikipedia.org/wiki/Long_one"
    assert store.page("Long one").text.split()[-1] == "249"


def test_dpr_tsv_and_parquet_round_trip(tmp_path):
    rows = [
        ("1", 'He said "hi" there', "Alpha"),
        ("2", "Second\tpassage? no: tab in text", "Beta"),
        ("3", "Third", "Gamma"),
    ]
    tsv = tmp_path / "psgs.tsv"
    with open(tsv, "w", newline="") as f:
        import csv

        w = csv.writer(f, delimiter="\t")
        w.writerow(["id", "text", "title"])
        w.writerows(rows)
    build_corpus([tsv], tmp_path / "t")
    got = [(p.id, p.text, p.title) for p in DocStore.open(tmp_path / "t").iter_passages()]
    assert got == rows
    pq.write_table(
        pa.table(
            {
                "id": [r[0] for r in rows],
                "text": [r[1] for r in rows],
                "title": [r[2] for r in rows],
            }
        ),
        tmp_path / "p.parquet",
    )
    build_corpus([tmp_path / "p.parquet"], tmp_path / "pq")
    got = [(p.id, p.text, p.title) for p in DocStore.open(tmp_path / "pq").iter_passages()]
    assert got == rows


def test_hotpotqa_one_passage_per_paragraph(hotpot_root, tmp_path):
    store = DocStore.open(hotpot_root)
    assert len(store) == store.num_pages == 4920
    rows = [json.loads(line) for line in (DATA / "hotpotqa-distractor-500.jsonl").open()]
    title, sents = rows[0]["context"][0]
    p = store.get(store.find_title(title)[0])
    assert p.text == "".join(sents).strip()
    as_array = tmp_path / "hotpot.json"
    as_array.write_text(json.dumps(rows[:3]))
    build_corpus([as_array], tmp_path / "arr")
    assert len(DocStore.open(tmp_path / "arr")) == len(
        {t for r in rows[:3] for t, _ in r["context"]}
    )


# ---- bad input ----------------------------------------------------------------------------
def test_unknown_and_missing_files(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CorpusInputError, match="junk.bin.*unknown format"):
        build_corpus([junk], tmp_path / "o")
    with pytest.raises(CorpusInputError, match="missing.xml"):
        build_corpus([tmp_path / "missing.xml"], tmp_path / "o")
    assert build(["corpus", "--input", str(junk), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o" / "corpus").exists()


def test_truncated_bz2_is_an_error_or_skipped(tmp_path):
    data = XML.read_bytes()
    cut = tmp_path / "cut.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusInputError, match=r"cut\.xml\.bz2.*(page|line)"):
        build_corpus([cut], tmp_path / "o", CorpusConfig(workers=1))
    assert (
        not (tmp_path / "o" / "corpus").exists()
        and not (tmp_path / "o" / "corpus.partial").exists()
    )
    m = build_corpus([cut], tmp_path / "o", CorpusConfig(on_error="skip", workers=1))
    assert m["skipped"]["truncated"] == 1 and m["num_docs"] > 100


def test_malformed_json_names_the_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(
        '{"title": "A", "text": "fine"}\n{"title": "B", "text": \n{"title": "C", "text": ""}\n{"title": "D", "text": "ok"}\n'
    )
    with pytest.raises(CorpusInputError, match=r"bad.jsonl: line 2"):
        build_corpus([src], tmp_path / "o")
    m = build_corpus([src], tmp_path / "o", CorpusConfig(on_error="skip"))
    assert m["num_docs"] == 2 and m["skipped"] == {"malformed": 1, "empty": 1}


def test_bad_rows_of_tsv_parquet_and_hotpotqa_name_their_place_or_are_counted(tmp_path):
    """Each reader's bad rows: ``CorpusInputError`` naming the place by default, counted under
    ``on_error="skip"`` (one rule, ``readers.reject``, for every reader)."""
    tsv = tmp_path / "psgs.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tfine\tA\n2\n3\t  \tC\n4\tok\tD\n")
    table = pa.table({"id": ["1", "2", "3"], "text": ["fine", "", "ok"], "title": list("ABC")})
    pq.write_table(table, tmp_path / "p.parquet")
    hotpot = tmp_path / "hotpot.jsonl"
    good = {"question": "q?", "context": [["T", ["A sentence."]]]}
    hotpot.write_text(f'{json.dumps(good)}\n{{"question": \n{{"question": "q", "context": 5}}\n')
    cases = [
        (tsv, r"psgs\.tsv: line 3: expected 3 columns", {"malformed": 1, "empty": 1}, 2),
        (tmp_path / "p.parquet", r"p\.parquet: row 2: row has no text", {"empty": 1}, 2),
        (hotpot, r"hotpot\.jsonl: line 2: bad JSON", {"malformed": 2}, 1),
    ]
    for i, (src, message, skipped, kept) in enumerate(cases):
        with pytest.raises(CorpusInputError, match=message):
            build_corpus([src], tmp_path / f"o{i}", CorpusConfig(workers=1))
        m = build_corpus([src], tmp_path / f"o{i}", CorpusConfig(workers=1, on_error="skip"))
        assert (m["skipped"], m["num_docs"]) == (skipped, kept), src.name


def test_malformed_xml_names_the_position(tmp_path):
    src = tmp_path / "bad.xml"
    src.write_text(
        "<mediawiki><page><title>A</title><ns>0</ns><id>1</id><revision><text>Hello world</text></revision></page><page><title>B</oops></mediawiki>"
    )
    with pytest.raises(CorpusInputError, match=r"bad.xml: line 1, column \d+"):
        build_corpus([src], tmp_path / "o", CorpusConfig(workers=1))


def test_failed_build_keeps_previous_store_and_rerun_works(tmp_path, monkeypatch):
    src = tmp_path / "ok.jsonl"
    src.write_text(
        "".join(json.dumps({"title": f"T{i}", "text": f"text {i}"}) + "\n" for i in range(20))
    )
    build_corpus([src], tmp_path / "o")
    before = DocStore.open(tmp_path / "o").checksum
    import index_build.chunking as corpus_mod  # passages are cut there

    real = corpus_mod.split_words
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(corpus_mod, "split_words", dying)
    src.write_text(src.read_text() + json.dumps({"title": "New", "text": "more"}) + "\n")
    with pytest.raises(KeyboardInterrupt):
        build_corpus([src], tmp_path / "o")
    assert DocStore.open(tmp_path / "o").checksum == before  # the old complete store is untouched
    monkeypatch.setattr(corpus_mod, "split_words", real)
    (tmp_path / "o" / "corpus.partial").mkdir()  # as if a killed process left it behind
    m = build_corpus([src], tmp_path / "o")
    assert m["num_docs"] == 21 and not (tmp_path / "o" / "corpus.partial").exists()


def test_inspect_cli(xml_root, capsys):
    assert (
        inspect_main(
            [
                str(xml_root),
                "--stats",
                "--title",
                "/wiki/Albert_Einstein",
                "--id",
                "12-0",
                "--sample",
                "2",
                "--max-chars",
                "50",
            ]
        )
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["stats"]["num_docs"] == len(DocStore.open(xml_root))
    assert lines[1]["passage"]["title"] == "Anarchism"
    assert lines[2]["page"]["title"] == "Albert Einstein" and len(lines[2]["page"]["text"]) == 50
    assert len([x for x in lines if "sample" in x]) == 2
    assert inspect_main([str(xml_root), "--url", "https://en.wikipedia.org/wiki/Nope"]) == 1


def test_fast_wikitext_renderer_matches_mwparserfromhell():
    """The regex renderer must say what mwparserfromhell's tree says, page by page."""
    import xml.etree.ElementTree as ET
    from collections import Counter

    from index_build.wikitext import wikitext_to_text

    checked = 0
    with bz2.open(XML) as f:
        for _, elem in ET.iterparse(f):
            if not elem.tag.endswith("}page"):
                continue
            if elem.find("{*}ns").text == "0" and elem.find("{*}redirect") is None:
                wikitext = elem.find("{*}revision/{*}text").text or ""
                fast = Counter(wikitext_to_text(wikitext).split())
                ref = Counter(wikitext_to_text(wikitext, parser="mwparserfromhell").split())
                same = sum((fast & ref).values()) / max(1, sum(fast.values()), sum(ref.values()))
                assert same >= 0.99, elem.find("{*}title").text
                checked += 1
            elem.clear()
    assert checked > 100
