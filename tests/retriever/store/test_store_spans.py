"""The ``spans`` store layout (``index_build corpus --store spans[,zstd]``): each word stored once,
and every read the same as from the ``jsonl`` layout built from the same input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, HOTPOT, REPO, XML_SAMPLE

from index_build.__main__ import main
from index_build.corpus import CorpusConfig, build_corpus
from index_build.verify import verify_root
from retriever.errors import CorruptStoreError, IndexFormatError
from retriever.index import Index
from retriever.manifest import read_manifest
from retriever.store import browse as B
from retriever.store import pagetext, spans
from retriever.store.access import access_pages
from retriever.store.docstore import DocStore
from retriever.store.keyindex import KeyIndex
from retriever.store.writer import StoreWriter

SLICE = DATA / "wikiextractor-slice.txt.gz"
LAYOUTS = ("jsonl", "spans", "spans,zstd")
_BUILT: dict[str, Path] = {}


def _roots(tmp_path_factory, name: str, source: Path) -> dict[str, Path]:
    """The three layouts of one input, built once per session."""
    out = {}
    for store in LAYOUTS:
        key = f"{name}:{store}"
        if key not in _BUILT:
            root = tmp_path_factory.mktemp(f"{name}-{store.replace(',', '-')}")
            build_corpus([source], root, CorpusConfig(store=store, workers=1))
            _BUILT[key] = root
        out[store] = _BUILT[key]
    return out


@pytest.fixture(scope="session", params=["enwiki-xml", "wikiextractor", "hotpotqa"])
def roots(request, tmp_path_factory) -> dict[str, Path]:
    source = {"enwiki-xml": XML_SAMPLE, "wikiextractor": SLICE, "hotpotqa": HOTPOT}[request.param]
    return _roots(tmp_path_factory, request.param, source)


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "corpus").iterdir())


def test_every_row_reads_the_same_in_every_layout(roots):
    want = DocStore.open(roots["jsonl"])
    assert want.layout == "jsonl"
    for layout in ("spans", "spans,zstd"):
        got = DocStore.open(roots[layout])
        assert got.layout == "spans"
        assert got.manifest["store"]["compression"] == ("zstd" if "zstd" in layout else None)
        if "zstd" in layout:  # the defaults: small blocks, with a dictionary trained on them
            assert got.manifest["store"]["block_bytes"] == pagetext.BLOCK_BYTES == 1024
            assert got.manifest["store"]["dictionary"] == pagetext.DICT_FILE
            assert got.manifest["store"]["block_starts"] == pagetext.STARTS_FILE
            assert (roots[layout] / "corpus" / pagetext.DICT_FILE).is_file()
        assert got.manifest["store"]["passages"]["patched"] == 0  # every passage is a span
        assert (len(got), got.num_pages) == (len(want), want.num_pages) and len(got) > 1000
        assert got.checksum == want.checksum  # same rows: parts built on one fit the other
        for row in range(len(want)):
            a, b = want.get(row), got.get(row)
            assert a == b and a.to_dict() == b.to_dict(), row
            assert got.raw(row) == want.raw(row)
        for row in range(want.num_pages):
            assert got.get_page(row) == want.get_page(row), row
            assert got.page_meta(row) == want.page_meta(row)
        every = list(range(len(want)))
        assert got.get_many(every) == want.get_many(every)  # a batch: each block once
        assert got.get_many(every[::-3]) == want.get_many(every[::-3])
        for row in range(0, len(want), 97):  # lookups by id, title and url
            p = want.get(row)
            assert got.find_id(p.id) == row
            assert got.find_title(p.title) == want.find_title(p.title)
            assert got.page(p.url) == want.page(p.url) is not None
            assert got.page_by_id(p.id) == want.page_by_id(p.id)
        ids = roots[layout] / "corpus"
        titles, plain = KeyIndex(ids, "titles"), KeyIndex(roots["jsonl"] / "corpus", "titles")
        assert titles.counts is not None and plain.counts is None  # runs: an entry per page
        assert len(titles) <= 2 * got.num_pages and titles.counts.sum() == len(plain)
        assert not KeyIndex.exists(ids, "ids") or len(KeyIndex(ids, "ids")) == 0  # all derived
        assert not (roots[layout] / "corpus" / "passages.jsonl").exists()
        assert not (roots[layout] / "corpus" / "pages.jsonl").exists()
    sizes = {layout: _size(roots[layout]) for layout in LAYOUTS}
    assert sizes["spans,zstd"] < sizes["spans"] < sizes["jsonl"]


def test_access_windows_and_browse_views_are_the_same(roots):
    want, got = DocStore.open(roots["jsonl"]), DocStore.open(roots["spans,zstd"])
    names = [want.get_page(r).url for r in range(0, want.num_pages, 7)] + ["No such page"]
    titles = [want.get_page(r).title for r in range(1, want.num_pages, 11)]
    for offset, max_chars in ((0, None), (0, 500), (1234, 3000)):
        assert access_pages(got, names, titles, offset=offset, max_chars=max_chars) == (
            access_pages(want, names, titles, offset=offset, max_chars=max_chars)
        )
    requests = [{"action": "open", "id": n, "loc": 3, "num_lines": 20} for n in names[:5]]
    requests += [{"action": "find", "id": titles[0], "pattern": "the"}]
    requests += [{"action": "sections", "id": names[0]}]
    assert B.browse(got, requests) == B.browse(want, requests)


def test_search_through_index_is_the_same(tmp_path_factory):
    roots = _roots(tmp_path_factory, "wikiextractor", SLICE)
    queries = ["history of the city", "football club league", "river valley population"]
    results = {}
    for layout in ("jsonl", "spans,zstd"):
        root = roots[layout]
        if not (root / "bm25").exists():
            assert main(["bm25", "--index", str(root), "--no-progress"]) == 0
        results[layout] = Index.open(root).search(queries, k=8)
    assert all(len(hits) == 8 for hits in results["jsonl"])
    assert results["spans,zstd"] == results["jsonl"]
    # the BM25 part built on one layout opens on the other (one corpus checksum)
    other = tmp_path_factory.mktemp("crossed")
    shutil.copytree(roots["spans"] / "corpus", other / "corpus")
    shutil.copytree(roots["jsonl"] / "bm25", other / "bm25")
    assert Index.open(other).search(queries, k=8) == results["jsonl"]


def _flip(path: Path, at: int) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(bytes([old[0] ^ 0x01]))


@pytest.mark.parametrize("layout", ["spans", "spans,zstd"])
def test_verify_passes_and_finds_a_flipped_byte_in_every_new_file(tmp_path, layout):
    src = _BUILT.get(f"wikiextractor:{layout}")
    if src is None:
        src = tmp_path / "src"
        build_corpus([SLICE], src, CorpusConfig(store=layout))
    report = verify_root(src)
    assert report["ok"], report["problems"]
    assert report["corpus"]["bad_passages"]["count"] == 0
    text = "pages.text.zst" if "zstd" in layout else "pages.text"
    names = [text, "passages.spans.npy", "pages.heads.jsonl", "pages.offsets.npy"]
    names += [pagetext.DICT_FILE, "titles.count.npy"] if "zstd" in layout else ["titles.count.npy"]
    for name in names:
        root = tmp_path / name
        shutil.copytree(src / "corpus", root / "corpus")
        path = root / "corpus" / name
        _flip(path, path.stat().st_size // 2)
        report = verify_root(root)
        assert not report["ok"]
        assert any(name in p and "sha256" in p for p in report["problems"]), report["problems"]


def test_a_damaged_zstd_block_is_a_clear_error(tmp_path):
    build_corpus([SLICE], tmp_path, CorpusConfig(store="spans,zstd"))
    path = tmp_path / "corpus" / "pages.text.zst"
    blocks = np.load(tmp_path / "corpus" / "pages.blocks.npy")
    _flip(path, int(blocks[1]) + 100)  # inside block 1
    store = DocStore.open(tmp_path)
    with pytest.raises(CorruptStoreError, match="block 1 does not decompress.*index_build verify"):
        for row in range(len(store)):
            store.get(row)
    store = DocStore.open(tmp_path)  # a page's blocks are decompressed in one call: named too
    with pytest.raises(CorruptStoreError, match="block 1 does not decompress.*index_build verify"):
        for row in range(store.num_pages):
            store.get_page(row)
    report = verify_root(tmp_path, checksums=False)  # reading the rows finds it too
    assert report["corpus"]["bad_passages"]["count"] > 0 and not report["ok"]


def test_a_damaged_dictionary_is_a_clear_error(tmp_path):
    build_corpus([SLICE], tmp_path, CorpusConfig(store="spans,zstd"))
    _flip(tmp_path / "corpus" / pagetext.DICT_FILE, 0)  # its magic: read as another dictionary
    store = DocStore.open(tmp_path)
    with pytest.raises(
        CorruptStoreError, match="block \\d+ does not decompress.*index_build verify"
    ):
        for row in range(len(store)):
            store.get(row)


@pytest.mark.parametrize(
    ("block_bytes", "dict_bytes", "hints"),
    [(4096, 0, False), (4096, 8192, False), (1000, 4096, False), (1000, 4096, True)],
)
def test_text_stream_reads_every_range_like_the_plain_stream(
    tmp_path, block_bytes, dict_bytes, hints
):
    import random

    rng = random.Random(block_bytes + dict_bytes)
    words = [bytes(rng.choices(b"abcdefgh\xc3\xa9", k=rng.randint(1, 9))) for _ in range(2000)]
    data = b" ".join(rng.choice(words) for _ in range(60_000))  # ~300 KB, with a tail block
    sink = pagetext.TextSink(tmp_path, "zstd", block_bytes, dict_bytes=dict_bytes)
    cuts_at = sorted(rng.sample(range(1, len(data)), 600)) if hints else []
    for at in range(0, len(data), 7777):  # writes that do not line up with the blocks
        sink.write(data[at : at + 7777])
        for cut in cuts_at:  # a passage's end: given after the text it ends in
            if at < cut <= at + 7777:
                sink.cut_at(cut)
    sink.close()
    assert (sink.dictionary is not None) == (dict_bytes > 0)
    starts = np.load(tmp_path / pagetext.STARTS_FILE)
    assert len(np.load(tmp_path / "pages.blocks.npy")) == len(starts)
    assert starts[0] == 0 and starts[-1] == len(data) and (np.diff(starts) <= block_bytes).all()
    if not hints:  # no passage ends to cut at: fixed blocks
        assert len(starts) == -(-len(data) // block_bytes) + 1
    else:  # each block ends at a hint where one falls in its second half
        for a, b in zip(starts[:-2], starts[1:-1]):
            window = [c for c in cuts_at if a + block_bytes // 2 < c <= a + block_bytes]
            assert b == (max(window) if window else a + block_bytes), (a, b)
    text = pagetext.PageText(tmp_path, {"path": sink.path.name}, {**sink.entry()})
    cuts = [(0, len(data)), (len(data) - 5, len(data)), (block_bytes - 3, block_bytes + 3)]
    cuts += [sorted(rng.sample(range(len(data) + 1), 2)) for _ in range(300)]
    for start, end in cuts:
        assert text.read(start, end) == data[start:end], (start, end)
    with pytest.raises(CorruptStoreError, match="past the block index"):
        text.read(len(data) + block_bytes, len(data) + block_bytes + 1)
    (tmp_path / "s").mkdir()  # a text too small to train on is written without a dictionary
    small = pagetext.TextSink(tmp_path / "s", "zstd", block_bytes, dict_bytes=dict_bytes)
    small.write(data[:5000])
    small.close()
    assert small.dictionary is None and small.entry()["dictionary"] is None
    text = pagetext.PageText(tmp_path / "s", {"path": small.path.name}, small.entry())
    assert text.read(10, 4990) == data[10:4990]


def test_a_store_from_before_dictionaries_still_opens(tmp_path, monkeypatch):
    """Format 2 (64 KB blocks, no dictionary, no ``store.dictionary`` key) reads as before."""
    import orjson

    monkeypatch.setattr(spans, "BLOCK_BYTES", 1 << 16)
    monkeypatch.setattr(spans, "DICT_BYTES", 0)
    build_corpus([SLICE], tmp_path / "old", CorpusConfig(store="spans,zstd"))
    path = tmp_path / "old" / "corpus" / "manifest.json"
    m = orjson.loads(path.read_bytes())
    assert m["store"].pop("dictionary") is None and m["store"]["block_bytes"] == 1 << 16
    path.write_bytes(orjson.dumps({**m, "format_version": 2}))
    want = DocStore.open(_roots_of_slice(tmp_path)["jsonl"])
    got = DocStore.open(tmp_path / "old")
    assert got.manifest["format_version"] == 2 and len(got) == len(want)
    for row in range(len(want)):
        assert got.get(row) == want.get(row), row


def test_a_store_with_fixed_blocks_still_opens(tmp_path, monkeypatch):
    """Format 3 (2 KB blocks at fixed stream offsets, no ``store.block_starts``) reads as before."""
    import orjson

    monkeypatch.setattr(spans, "BLOCK_BYTES", 2048)
    monkeypatch.setattr(pagetext.TextSink, "cut_at", lambda self, pos: None)  # no passage ends
    build_corpus([SLICE], tmp_path / "old", CorpusConfig(store="spans,zstd"))
    folder = tmp_path / "old" / "corpus"
    starts = np.load(folder / pagetext.STARTS_FILE)
    assert (np.diff(starts)[:-1] == 2048).all()
    (folder / pagetext.STARTS_FILE).unlink()
    m = orjson.loads((folder / "manifest.json").read_bytes())
    assert m["store"].pop("block_starts") == pagetext.STARTS_FILE
    m["files"].pop(pagetext.STARTS_FILE, None)
    (folder / "manifest.json").write_bytes(orjson.dumps({**m, "format_version": 3}))
    want = DocStore.open(_roots_of_slice(tmp_path)["jsonl"])
    got = DocStore.open(tmp_path / "old")
    assert got.manifest["format_version"] == 3 and len(got) == len(want)
    for row in range(len(want)):
        assert got.get(row) == want.get(row), row
    every = list(range(len(want)))
    assert got.get_many(every[::-1]) == want.get_many(every[::-1])
    for row in range(want.num_pages):
        assert got.get_page(row) == want.get_page(row), row
    assert verify_root(tmp_path / "old")["ok"]


def test_a_random_passage_is_one_block(tmp_path):
    """Blocks end at passage starts and ends: a passage of at most half a block is read from one
    block (one decompression of about a block, not two)."""
    import bisect

    root = _BUILT.get("wikiextractor:spans,zstd")
    if root is None:
        root = tmp_path / "z"
        build_corpus([SLICE], root, CorpusConfig(store="spans,zstd"))
    folder = root / "corpus"
    starts = np.load(folder / pagetext.STARTS_FILE).tolist()
    table = np.load(folder / "passages.spans.npy")
    table = table[(table["flags"] & 3) != spans.PATCH]
    assert len(table) > 1000 and (np.diff(starts) <= pagetext.BLOCK_BYTES).all()
    split = 0
    for start, length in zip(table["start"].tolist(), table["length"].tolist()):
        first = bisect.bisect_right(starts, start)
        last = bisect.bisect_right(starts, start + length - 1)
        split += first != last and length <= pagetext.BLOCK_BYTES // 2
    assert split == 0
    # a read finds its block by the stream offset alone: every row still reads right
    assert spans.SpansReader(folder, read_manifest(folder)).passage(len(table) // 2)


def _roots_of_slice(tmp_path) -> dict[str, Path]:
    root = _BUILT.get("wikiextractor:jsonl")
    if root is None:
        root = tmp_path / "jsonl"
        build_corpus([SLICE], root, CorpusConfig(store="jsonl"))
    return {"jsonl": root}


def test_passages_that_are_no_span_of_their_page_are_kept_whole(tmp_path):
    w = StoreWriter(tmp_path, store="spans")
    w.add_passage("lone", "No page", "a passage before any page", "u0")
    w.add_page("7", "T", "https://en.wikipedia.org/wiki/T", "One  two\nthree four. Five six")
    url = "https://en.wikipedia.org/wiki/T"
    w.add_passage("7-0", "T", "One two three", url)  # words: whitespace made single
    w.add_passage("7-1", "T", "four. Five six", url)  # raw slice
    w.add_passage("7-2", "T", "seven eight", url)  # not in the page
    w.add_passage("x", "T", "two three", url)  # an id that is not the page's
    w.add_passage("7-4", "Other", "One two three", url)  # another title
    w.add_page("8", "U", "https://x.org/U", "")  # empty page, own url
    w.add_page("9", "V", "https://en.wikipedia.org/wiki/V", "Whole")
    w.add_passage("9", "V", "Whole", "https://en.wikipedia.org/wiki/V")
    m = w.finish({})
    assert m["store"]["passages"] == {"raw": 2, "lines": 0, "words": 1, "patched": 4}
    assert m["format_version"] == 4
    store = DocStore(tmp_path)
    got = [(p.id, p.title, p.text, p.url) for p in store.iter_passages()]
    assert got == [
        ("lone", "No page", "a passage before any page", "u0"),
        ("7-0", "T", "One two three", url),
        ("7-1", "T", "four. Five six", url),
        ("7-2", "T", "seven eight", url),
        ("x", "T", "two three", url),
        ("7-4", "Other", "One two three", url),
        ("9", "V", "Whole", "https://en.wikipedia.org/wiki/V"),
    ]
    # ids: "PAGE" and "PAGE-k" come from the pages; the id table holds only the others
    assert m["ids"] == "pages" and len(KeyIndex(tmp_path, "ids")) == 2  # "lone" and "x"
    assert [store.find_id(p[0]) for p in got] == list(range(7))
    for missing in ("7-99", "7-01", "nope", "8-0", "9-0", "-1"):
        assert store.find_id(missing) is None, missing
    assert store.get_page(1).url == "https://x.org/U" and store.get_page(1).text == ""
    assert store.page("T").text == "One  two\nthree four. Five six"


def test_cli_option_and_inputs_without_pages(tmp_path, capsys, caplog):
    root = tmp_path / "idx"
    argv = ["corpus", "--input", str(SLICE), "--out", str(root), "--store", "spans,zstd"]
    assert main([*argv, "--no-progress"]) == 0
    m = read_manifest(root / "corpus")
    assert m["store"]["layout"] == "spans" and m["format_version"] == 4
    assert "pages.text.zst" in m["files"] and "passages.spans.npy" in m["files"]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tfirst passage\tA\n2\tsecond passage\tB\n")
    build_corpus([tsv], tmp_path / "t", CorpusConfig(store="spans"))
    assert "the store is jsonl" in caplog.text
    store = DocStore.open(tmp_path / "t")
    assert store.layout == "jsonl" and store.get(1).text == "second passage"
    rows = tmp_path / "wiki-18.jsonl"  # a Search-R1 file: indexed in place, its JSONL kept
    rows.write_text('{"id": "0", "contents": "\\"A\\"\\nfirst passage"}\n')
    build_corpus([rows], tmp_path / "r", CorpusConfig(store="spans,zstd"))
    assert "indexed in place keeps its JSONL" in caplog.text
    assert DocStore.open(tmp_path / "r").get(0).text == "first passage"
    with pytest.raises(IndexFormatError, match="has no passages JSONL"):
        DocStore.open(root).data_path("passages")
    capsys.readouterr()
    assert main(["corpus", "--input", str(SLICE), "--out", str(root), "--store", "zip"]) == 2
    assert "--store: invalid choice: 'zip'" in capsys.readouterr().err


def test_bench_store_option_smoke(tmp_path):
    """``scripts/bench/corpus.py --store`` runs on the bundled slice and records its section."""
    import json
    import os
    import subprocess
    import sys

    repo = REPO
    env = {**os.environ, "BENCH_RECORD": str(tmp_path / "record.md")}
    script = repo / "scripts" / "bench" / "corpus.py"
    cmd = [sys.executable, str(script), "--smoke", "--store", "spans", "spans,zstd"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert [row[0] for row in summary["rows"]] == ["jsonl", "spans", "spans,zstd"]
    per_text_byte = [float(row[2]) for row in summary["rows"]]
    assert per_text_byte[2] < per_text_byte[1] < per_text_byte[0]
    assert "## Corpus store layouts (" in (tmp_path / "record.md").read_text()
    cmd = [sys.executable, str(script), "--smoke", "--block-sweep", "--block-sizes", "2048"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert [row[0] for row in summary["rows"]] == [
        "plain",
        "2 KB, no dict",
        "2 KB, dict 64 KB",
        "2 KB, dict 64 KB, passage ends",
    ]
    assert "## Corpus store: zstd block size x dictionary (" in (tmp_path / "record.md").read_text()


def test_a_dropped_spans_store_closes_its_files(tmp_path):
    import gc
    import os

    build_corpus([SLICE], tmp_path, CorpusConfig(store="spans,zstd"))
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        store = DocStore.open(tmp_path)
        store.get(5)
        del store
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 1
