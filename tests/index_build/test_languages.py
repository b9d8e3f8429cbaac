"""Wikipedia in other languages: namespaces from <siteinfo>, URLs from <base>, passages by
characters for scripts without spaces, Chinese variants and script conversion, per-language
BM25 analyzers, multilingual dense presets, and a bad byte costing one page only.

The dumps in tests/data (``{zh,ja,th,de}wiki-sample``) are built by
``scripts/make_lang_samples.py`` from MediaWiki's own language files and messages and from
spaCy's example sentences (see tests/data/README.md).
"""

from __future__ import annotations

import bz2
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from corpus_support import multistream_dump

from index_build.__main__ import main as build
from index_build.chunking import Chunker, script_of, split_chars
from index_build.corpus import CorpusConfig, build_corpus
from index_build.readers import Counts, Progress
from index_build.siteinfo import SiteInfo, language_namespaces
from index_build.wikitext import wikitext_to_text
from index_build.wikixml import _iter_pages, read_wiki_xml
from retriever.bm25.analyzer import Analyzer
from retriever.errors import CorpusInputError
from retriever.inspect import main as inspect_main
from retriever.store.docstore import DocStore

LANGS = ("zh", "ja", "th", "de")
ENGLISH = DATA / "enwiki-sample-pages-articles.xml.bz2"
# what an unclean passage shows: image-link residue, links, templates, variant markup
RESIDUE = re.compile(
    r"thumb|\d+px|upright|Sample|----|\[\[|\]\]|\{\{|\}\}|-\{|\}-|<ref|'''|Infobox|"
    r"(?:File|Image|Category|Kategorie|Datei|Bild|分类|文件|图像|ファイル|画像|カテゴリ|ไฟล์|ภาพ|หมวดหมู่)\s*:",
    re.I,
)
# headings of the localized references sections, which must be dropped
REF_SECTIONS = ("参考资料", "脚注", "อ้างอิง", "Einzelnachweise")


def dump(lang: str) -> Path:
    return DATA / f"{lang}wiki-sample-pages-articles.xml.bz2"


def siteinfo(path: Path) -> SiteInfo:
    with bz2.open(path) as f:
        first = next(_iter_pages(f, path))
    assert isinstance(first, SiteInfo)
    return first


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for lang in LANGS:
        root = tmp_path_factory.mktemp(f"{lang}wiki")
        build_corpus([dump(lang)], root, CorpusConfig(workers=1))
        out[lang] = root
    return out


# ---- siteinfo and namespaces ------------------------------------------------------------------
@pytest.mark.parametrize("lang", LANGS)
def test_siteinfo_states_language_namespaces_and_base(lang):
    site = siteinfo(dump(lang))
    assert site.language == lang and site.dbname == f"{lang}wiki"
    assert site.article_base == f"https://{lang}.wikipedia.org/wiki/"
    names = site.names()
    localized = {k: n for k, n, _ in site.namespaces}
    # the dump's own names, the canonical English ones, and MediaWiki's aliases all count
    assert names[localized[6].lower()] == 6 and names[localized[14].lower()] == 14
    assert names["file"] == names["image"] == 6 and names["category"] == 14
    assert site.namespace_of(f"{localized[14]}:X") == 14 and site.namespace_of("A: B") == 0


def test_aliases_come_from_mediawiki_language_files():
    zh = language_namespaces("zh")
    assert zh["图像"] == zh["档案"] == zh["文件"] == 6 and zh["分类"] == zh["分類"] == 14
    assert language_namespaces("de")["bild"] == 6
    assert language_namespaces("ja")["画像"] == 6


@pytest.mark.parametrize("lang", LANGS)
def test_non_english_dump_gives_clean_prose(roots, lang):
    store = DocStore.open(roots[lang])
    manifest = store.manifest
    assert manifest["language"] == lang
    assert manifest["sites"][0]["base"].startswith(f"https://{lang}.wikipedia.org/wiki/")
    assert manifest["sites"][0]["namespaces"]["14"]["name"]
    # the category and template pages are other namespaces, decided by <ns>
    assert manifest["skipped"] == {"other_namespace": 2}
    passages = list(store.iter_passages())
    assert len(passages) >= 10
    for p in passages:
        m = RESIDUE.search(p.text)
        assert m is None, f"{m.group()!r} in {p.title!r}: {p.text}"
        assert p.text.strip() and not any(h in p.text for h in REF_SECTIONS)
        assert p.url.startswith(f"https://{lang}.wikipedia.org/wiki/")


def test_redirects_from_the_redirect_element_and_urls_from_base(roots):
    store = DocStore.open(roots["zh"])
    page = store.page("汉语 (1)")  # a <redirect> page, in no way marked by its title
    assert page is not None and page.title == "汉语"
    assert page.url == "https://zh.wikipedia.org/wiki/%E6%B1%89%E8%AF%AD"
    assert store.page(page.url).title == "汉语"
    assert "通称为“华语”" in page.text


def test_english_sample_is_unchanged_by_its_site_rules():
    """Reference equivalence: the English dump read with the rules its <siteinfo> gives
    renders every page exactly as the built-in English rules do."""
    site = siteinfo(ENGLISH)
    rules = site.markup_rules()
    n = 0
    with bz2.open(ENGLISH) as f:
        for item in _iter_pages(f, ENGLISH):
            if isinstance(item, SiteInfo) or item[0] != "0" or item[3] is not None:
                continue
            assert wikitext_to_text(item[4], rules=rules) == wikitext_to_text(item[4]), item[2]
            n += 1
    assert n > 90


def test_english_sample_keeps_word_passages_and_its_urls(tmp_path):
    m = build_corpus([ENGLISH], tmp_path, CorpusConfig(workers=1))
    assert m["num_docs"] == 4479 and m["chunking"]["articles"] == {"words": 106}
    store = DocStore.open(tmp_path)
    assert store.get(0).url == "https://en.wikipedia.org/wiki/" + store.get(0).title.replace(
        " ", "_"
    )


# ---- passages by characters -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lang", "unit", "size"),
    [("zh", "cjk", 200), ("ja", "cjk", 200), ("th", "sea", 500), ("de", None, 0)],
)
def test_passages_by_characters_for_scripts_without_spaces(roots, lang, unit, size):
    store = DocStore.open(roots[lang])
    chunking = store.manifest["chunking"]
    assert chunking["chars"] == {"cjk": 200, "sea": 500}
    if unit is None:
        assert set(chunking["articles"]) == {"words"}
        assert all(len(p.text.split()) <= 100 for p in store.iter_passages())
        return
    assert set(chunking["articles"]) == {f"chars-{unit}"}
    passages = list(store.iter_passages())
    assert all(len(p.text) <= size for p in passages)
    if lang == "zh":  # cut at sentence ends: every passage but an article's last ends one
        last = {p.id.rsplit("-", 1)[0]: p.id for p in passages}
        inner = [p for p in passages if p.id != last[p.id.rsplit("-", 1)[0]]]
        ends = sum(p.text.endswith(("。", "！", "？", "」", "”")) for p in inner)
        assert inner and ends >= 0.8 * len(inner), [p.text[-10:] for p in inner]


def test_split_chars_respects_sentences_and_latin_words():
    text = "Python是一种广泛使用的解释型高级编程语言。" * 3 + "它由Guido van Rossum创造。"
    windows = split_chars(text, 30)
    assert windows[0] == "Python是一种广泛使用的解释型高级编程语言。"
    assert "".join(windows) == text
    long = "汉字" * 20 + "international" + "汉字" * 20
    pieces = split_chars(long, 45)
    assert "".join(pieces) == long and all(len(p) <= 45 for p in pieces)
    assert any("international" in p for p in pieces)  # the Latin word is never cut
    thai = "ภาษาไทยเป็นภาษาราชการ " * 10
    assert all(len(p) <= 50 for p in split_chars(thai, 50, "sea"))
    assert split_chars("", 10) == [] and split_chars("。。", 10) == ["。。"]
    with pytest.raises(ValueError):
        split_chars("x", 0)


def test_chunker_units_and_mixed_script():
    mixed = "东京（Tokyo）是日本的首都，人口约一千四百万。" * 20
    assert script_of(mixed) == "cjk"
    assert script_of("The Tokyo (東京) metropolitan area is large. " * 10) == "latin"
    unit, windows = Chunker().split(mixed)
    assert unit == "chars-cjk" and all(len(w) <= 200 for w in windows)
    assert Chunker(unit="words").split(mixed)[0] == "words"
    forced = Chunker(unit="chars", chars=50).split("ab cd " * 30)[1]
    assert all(len(w) <= 50 and set(w.split()) == {"ab", "cd"} for w in forced)
    assert Chunker(words=50).chars_for("cjk") == 100 and Chunker(chars=80).chars_for("sea") == 80
    with pytest.raises(ValueError):
        Chunker(unit="bytes")


# ---- Chinese variants and script conversion --------------------------------------------------
def test_variant_markup_and_opencc_conversion(tmp_path, roots):
    import opencc

    to_simplified = opencc.OpenCC("t2s").convert
    plain = DocStore.open(roots["zh"])
    text = "\n".join(p.text for p in plain.iter_passages())
    assert bz2.decompress(dump("zh").read_bytes()).count(b"-{") == 2
    assert "软件" in text and "軟體" not in text and "電腦" not in text  # -{H|...}- hides
    assert plain.page("繁體範例") is not None  # kept in its own script without conversion

    root = tmp_path / "hans"
    m = build_corpus([dump("zh")], root, CorpusConfig(workers=1, chinese_script="simplified"))
    assert m["script_conversion"]["to"] == "simplified"
    assert m["script_conversion"]["config"] == "t2s"
    store = DocStore.open(root)
    page = store.page("繁体范例")
    assert page is not None and page.title == "繁体范例"
    assert to_simplified(page.text) == page.text  # nothing left to convert
    assert page.url == "https://zh.wikipedia.org/wiki/%E7%B9%81%E9%AB%94%E7%AF%84%E4%BE%8B"

    root = tmp_path / "hant"
    build_corpus([dump("zh")], root, CorpusConfig(workers=1, chinese_script="traditional"))
    hant = "\n".join(p.text for p in DocStore.open(root).iter_passages())
    assert "軟體" in hant and "软件" not in hant and "電腦" not in hant and "漢語" in hant


def test_chinese_script_is_for_xml_only(tmp_path):
    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps({"title": "T", "text": "漢語"}) + "\n")
    with pytest.raises(CorpusInputError, match="XML dumps only"):
        build_corpus([src], tmp_path / "o", CorpusConfig(chinese_script="simplified"))


# ---- BM25 per language ------------------------------------------------------------------------
def test_analyzers_per_language():
    de = Analyzer.for_language("de")
    assert de.stemmer == "german" and "und" in de.stopwords
    assert de.terms("Häuser") == de.terms("Haus")
    assert Analyzer.for_language("en") == Analyzer() and Analyzer.for_language(None) == Analyzer()
    assert Analyzer.for_language("pt-BR").stemmer == "portuguese"
    unknown = Analyzer.for_language("xx")
    assert unknown.stemmer is None and unknown.stopwords == ()
    zh = Analyzer.for_language("zh")
    assert zh.segmenter == "bigram" and zh.terms("首都是北京") == ["首都", "都是", "是北", "北京"]
    words = Analyzer.for_language("zh", segmenter="jieba")
    assert words.terms("中华人民共和国的首都是北京") == [
        "中华人民共和国",
        "的",
        "首都",
        "是",
        "北京",
    ]
    # ideographs to jieba, kana between them to bigrams, Latin words as words
    assert words.terms("Python和ひらがな") == ["python", "和", "ひら", "らが", "がな"]
    assert Analyzer.from_dict(words.to_dict()) == words
    th = Analyzer.for_language("th").terms("ภาษาไทย")
    assert th == ["ภา", "าษ", "ษา", "าไ", "ไท", "ทย"]
    ja = Analyzer.for_language("ja")
    assert Analyzer.from_dict(ja.to_dict()) == ja and ja.terms("Tokyo東京") == ["tokyo", "東京"]


@pytest.mark.parametrize(
    ("lang", "query", "title"),
    [
        ("zh", "汉语在新加坡通称为什么", "汉语"),
        ("ja", "ロンドンはイギリスの都市", "ロンドン"),
        ("de", "Startups treiben Technologien voran", "Startup"),
    ],
)
def test_bm25_uses_the_corpus_language(roots, lang, query, title, tmp_path):
    from retriever.bm25.retriever import BM25Retriever

    root = tmp_path / lang
    import shutil

    shutil.copytree(roots[lang], root)
    assert build(["bm25", "--index", str(root), "--no-progress", "--workers", "1"]) == 0
    manifest = json.loads((root / "bm25" / "manifest.json").read_text())
    assert manifest["analyzer"]["language"] == lang
    hits = BM25Retriever(root / "bm25", threads=1).search([query], k=3)[0]
    assert hits and DocStore.open(root).get(hits[0].row).title == title
    # explicit flags win over the corpus language
    assert (
        build(
            [
                "bm25",
                "--index",
                str(root),
                "--name",
                "bm25-std",
                "--language",
                "en",
                "--no-progress",
            ]
        )
        == 0
    )
    std = json.loads((root / "bm25-std" / "manifest.json").read_text())["analyzer"]
    assert std["stemmer"] == "porter" and std["segmenter"] == "standard"


# ---- dense presets from the model's own config -------------------------------------------------
def _tiny_xlmr(folder: Path, positions: int, pooling: str, normalize: bool) -> str:
    """A tiny XLM-RoBERTa model built from a config, with sentence-transformers module files."""
    import shutil

    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from retriever.dense.encoders import packaged_model_path

    torch.manual_seed(0)
    config = XLMRobertaConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
        pad_token_id=0,
    )
    XLMRobertaModel(config).save_pretrained(folder)
    src = packaged_model_path(verify=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).exists():
            shutil.copy(src / name, folder / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (folder / "2_Normalize").mkdir()
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    return str(folder)


def test_multilingual_presets_recognised_from_config(tmp_path):
    from sentence_transformers import SentenceTransformer

    from retriever.dense.encoders import load_encoder, resolve_config

    texts = ["汉语是世界上使用人数最多的语言。", "Berlin ist die Hauptstadt Deutschlands."]
    e5_dir = _tiny_xlmr(tmp_path / "any-name-at-all", 514, "mean", True)
    e5 = resolve_config(e5_dir)
    assert (e5.preset, e5.query_prefix, e5.passage_prefix) == (
        "multilingual-e5",
        "query: ",
        "passage: ",
    )
    assert (e5.pooling, e5.normalize, e5.max_length) == ("mean", True, 128)
    ours = load_encoder(e5).encode_queries(texts)
    ref = SentenceTransformer(e5_dir, device="cpu").encode(["query: " + t for t in texts])
    np.testing.assert_allclose(ours, ref, atol=2e-5)

    m3_dir = _tiny_xlmr(tmp_path / "e5-named-but-bge-m3", 8194, "cls", True)
    m3 = resolve_config(m3_dir)
    assert (m3.preset, m3.query_prefix, m3.pooling, m3.normalize) == ("bge-m3", "", "cls", True)
    ours = load_encoder(m3).encode_passages(texts)
    ref = SentenceTransformer(m3_dir, device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert abs(np.linalg.norm(ours[0]) - 1) < 1e-5

    # an XLM-R model that does not normalise (paraphrase-multilingual style) is not e5
    other = resolve_config(_tiny_xlmr(tmp_path / "multilingual-e5-base", 514, "mean", False))
    assert other.preset is None and other.query_prefix == ""
    # an explicit preset still wins
    assert resolve_config(m3_dir, preset="multilingual-e5").pooling == "mean"


# ---- one bad byte costs one page (issue 13, section 8) ----------------------------------------
def _with_bad_byte(tmp_path: Path) -> tuple[Path, str]:
    raw = bz2.decompress(ENGLISH.read_bytes())
    i = raw.index(b"<title>Abacus</title>")
    j = raw.index(b'xml:space="preserve">', i) + 400
    path = tmp_path / "bad.xml"
    path.write_bytes(raw[:j] + b"\xff\xfe" + raw[j:])
    return path, "Abacus"


def test_invalid_utf8_skips_only_its_page(tmp_path):
    path, title = _with_bad_byte(tmp_path)
    good = build_corpus([ENGLISH], tmp_path / "good", CorpusConfig(workers=1))
    m = build_corpus([path], tmp_path / "o", CorpusConfig(workers=1, on_error="skip"))
    assert m["skipped"] == {"invalid_utf8": 1, "other_namespace": 1}
    store, ref = DocStore.open(tmp_path / "o"), DocStore.open(tmp_path / "good")
    assert store.page(title) is None and ref.page(title) is not None
    lost = len(ref.find_title(title))
    assert m["num_docs"] == good["num_docs"] - lost and m["num_pages"] == good["num_pages"] - 1
    # every page after the bad byte is there, with the same text
    assert [p.text for p in store.iter_passages()] == [
        p.text for p in ref.iter_passages() if p.title != title
    ]
    with pytest.raises(CorpusInputError, match="page id 655 .*not UTF-8"):
        build_corpus([path], tmp_path / "r", CorpusConfig(workers=1))


def test_invalid_utf8_in_a_multistream_dump(tmp_path):
    path, title = _with_bad_byte(tmp_path)
    out = multistream_dump(path.read_bytes(), tmp_path, 10)
    counts = Counts()
    recs = list(read_wiki_xml(out, "skip", counts, Progress(), workers=1))
    assert isinstance(recs[0], SiteInfo) and recs[0].language == "en"
    titles = [r.title for r in recs[1:] if hasattr(r, "text")]
    assert counts == {"invalid_utf8": 1} and title not in titles and len(titles) == 105


# ---- what a person sees ----------------------------------------------------------------------
def test_inspect_sample_shows_clean_prose(roots, capsys):
    assert inspect_main([str(roots["zh"]), "--sample", "8"]) == 0
    rows = [json.loads(line)["sample"] for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert RESIDUE.search(row["text"]) is None and re.search("[\u4e00-\u9fff]", row["text"])


def test_dump_without_ns_elements_uses_its_namespace_names(tmp_path):
    """Very old dumps carry no <ns>: the title's prefix, read with the dump's own names."""
    src = tmp_path / "old.xml"
    pages = [("Berlin", "Berlin ist die Hauptstadt Deutschlands."), ("Kategorie:Stadt", "x y z")]
    pages.append(("Bild:Karte.png", "eine Karte"))
    body = "".join(
        f"<page><title>{t}</title><id>{i}</id><revision><text>{x}</text></revision></page>"
        for i, (t, x) in enumerate(pages, 1)
    )
    src.write_text(
        '<mediawiki xml:lang="de"><siteinfo><base>https://de.wikipedia.org/wiki/Hauptseite</base>'
        '<namespaces><namespace key="14">Kategorie</namespace></namespaces></siteinfo>'
        + body
        + "</mediawiki>",
        encoding="utf-8",
    )
    m = build_corpus([src], tmp_path / "o", CorpusConfig(workers=1))
    assert m["num_docs"] == 1 and m["skipped"] == {"other_namespace": 2}
    assert DocStore.open(tmp_path / "o").get(0).url == "https://de.wikipedia.org/wiki/Berlin"


def test_multistream_equals_plain_for_a_chinese_dump(tmp_path):
    """Reference equivalence: the stream-parallel reader gets the site, the variant rules and
    the conversion exactly as the plain reader does."""
    config = CorpusConfig(workers=2, chinese_script="traditional")
    multi = multistream_dump(bz2.decompress(dump("zh").read_bytes()), tmp_path, 3)
    a = build_corpus([dump("zh")], tmp_path / "plain", config)
    b = build_corpus([multi], tmp_path / "multi", config)
    assert a["sites"] == b["sites"] and a["language"] == b["language"] == "zh"
    assert a["checksum"] == b["checksum"] and a["num_redirects"] == b["num_redirects"]


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 16384])
def test_utf8_repair_equals_decoding_with_replacement(block):
    """Reference equivalence: the repairing stream, read in blocks of any size (characters cut
    at block ends), gives what ``bytes.decode(errors="replace")`` gives, and counts each
    replacement once."""
    import functools
    import io
    import random

    from index_build.utf8 import Utf8Repair

    rng = random.Random(block)
    base = ("abc é 汉字 \U0001f600 ภาษา " * 60).encode()
    for _ in range(40):
        data = bytearray(base)
        for _ in range(rng.randint(0, 3)):
            data.insert(rng.randrange(len(data)), rng.choice([0xFF, 0xC3, 0x80, 0xE6]))
        data = bytes(data)
        stream = Utf8Repair(io.BytesIO(data))
        out = b"".join(iter(functools.partial(stream.read, block), b""))
        want = data.decode("utf-8", "replace")
        assert out.decode("utf-8") == want
        assert stream.replaced == want.count("\ufffd")


def test_corpus_cli_language_flags(tmp_path, capsys):
    root = tmp_path / "zh"
    argv = ["corpus", "--input", str(dump("zh")), "--out", str(root), "--workers", "1"]
    argv += ["--chinese-script", "simplified", "--passage-chars", "120", "--no-progress"]
    assert build(argv) == 0
    assert "passages" in capsys.readouterr().out
    store = DocStore.open(root)
    assert store.manifest["chunking"]["chars"] == {"cjk": 120, "sea": 120}
    assert store.manifest["script_conversion"]["to"] == "simplified"
    assert all(len(p.text) <= 120 for p in store.iter_passages())
    words = tmp_path / "words"
    argv = ["corpus", "--input", str(dump("zh")), "--out", str(words), "--passage-unit", "words"]
    assert build([*argv, "--workers", "1", "--no-progress"]) == 0
    assert set(DocStore.open(words).manifest["chunking"]["articles"]) == {"words"}
    assert build([*argv, "--passage-chars", "0", "--no-progress"]) != 0
    assert "--passage-chars must be positive" in capsys.readouterr().err
