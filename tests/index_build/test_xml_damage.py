"""Issue 21, items 4 and 17: a damaged MediaWiki dump costs its damaged pages, never the pages
after them, and a build on one always finishes or fails, whatever the load.

Characters XML does not allow (a run of NULs from a zeroed disk block, a stray control byte,
``&#0;``) stop the XML parser as bytes that are not UTF-8 do; the reader marks them and skips
the one page that holds them. The wikitext workers are stopped in order after an error: a
worker killed while it writes a result used to leave ``multiprocessing.Pool.terminate``
waiting forever, and a worker that died left the build waiting for its result.
"""

from __future__ import annotations

import bz2
import io
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO
from corpus_support import multistream_dump

from index_build.corpus import CorpusConfig, build_corpus
from index_build.readers import Counts, Doc, Progress
from index_build.utf8 import CharRepair
from index_build.wikixml import read_wiki_xml
from retriever.errors import BuildError, CorpusInputError
from retriever.store.docstore import DocStore

ENGLISH = REPO / "tests" / "data" / "enwiki-sample-pages-articles.xml.bz2"
RAW = bz2.decompress(ENGLISH.read_bytes())


def _damaged(title: str, damage: bytes) -> bytes:
    """The sample with ``damage`` put 400 bytes into the text of the page ``title``."""
    i = RAW.index(b"<title>" + title.encode() + b"</title>")
    j = RAW.index(b'xml:space="preserve">', i) + 400
    return RAW[:j] + damage + RAW[j:]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    manifest = build_corpus([ENGLISH], out, CorpusConfig(workers=1))
    return manifest, DocStore.open(out)


# ---- item 4: one damaged page costs one page, counted ----------------------------------------
@pytest.mark.parametrize(
    "title, damage, kind",
    [
        ("Abacus", b"\x00" * 4096, "invalid_xml_char"),  # a zeroed disk block
        ("Abacus", b"\x01", "invalid_xml_char"),
        ("Alabama", b"\x0b", "invalid_xml_char"),
        ("Abacus", b"&#0;", "invalid_xml_char"),
        ("Autism", b"&#1; and &#x1F;", "invalid_xml_char"),
        ("Abacus", "\ufffe".encode(), "invalid_xml_char"),
        # early in the dump: read ahead with <siteinfo>, still this page's, not the site's
        ("Anarchism", b"\xff\xfe", "invalid_utf8"),
        ("Anarchism", b"\x00\x00", "invalid_xml_char"),
    ],
)
def test_a_damaged_page_costs_that_page_only(tmp_path, good, title, damage, kind):
    ref_manifest, ref = good
    path = tmp_path / "damaged.xml"
    path.write_bytes(_damaged(title, damage))
    m = build_corpus([path], tmp_path / "o", CorpusConfig(workers=1, on_error="skip"))
    assert m["skipped"] == {kind: 1, "other_namespace": 1}
    store = DocStore.open(tmp_path / "o")
    assert store.page(title) is None and ref.page(title) is not None
    lost = len(ref.find_title(title))
    assert lost > 0 and m["num_docs"] == ref_manifest["num_docs"] - lost
    assert m["num_pages"] == ref_manifest["num_pages"] - 1
    assert [p.text for p in store.iter_passages()] == [
        p.text for p in ref.iter_passages() if p.title != title
    ]


def test_raise_names_the_file_the_page_and_the_character(tmp_path):
    path = tmp_path / "zeroed.xml"
    path.write_bytes(_damaged("Abacus", b"\x00" * 512))
    with pytest.raises(CorpusInputError) as info:
        build_corpus([path], tmp_path / "r", CorpusConfig(workers=1))
    message = str(info.value)
    assert str(path) in message and "page id 655 ('Abacus')" in message
    assert "U+0000 (a run of 512)" in message
    path.write_bytes(_damaged("Abacus", b"&#0;"))
    with pytest.raises(CorpusInputError, match=r"page id 655 .*&#0;"):
        build_corpus([path], tmp_path / "r", CorpusConfig(workers=1))


@pytest.mark.parametrize("workers", [1, 2])
def test_damaged_pages_in_a_multistream_dump(tmp_path, workers):
    raw = _damaged("Abacus", b"\x00" * 300)
    i = raw.index(b"<title>Alabama</title>")
    j = raw.index(b'xml:space="preserve">', i) + 100
    raw = raw[:j] + b"&#1;" + raw[j:]
    out = multistream_dump(raw, tmp_path, 10)
    counts = Counts()
    recs = list(read_wiki_xml(out, "skip", counts, Progress(), workers=workers))
    titles = [r.title for r in recs if isinstance(r, Doc)]
    assert counts == {"invalid_xml_char": 2}
    assert "Abacus" not in titles and "Alabama" not in titles and len(titles) == 104
    with pytest.raises(CorpusInputError, match=r"page id 303 .*&#1;"):
        list(read_wiki_xml(out, "raise", Counts(), Progress(), workers=workers))


def test_a_malformed_stream_costs_that_stream_only(tmp_path, good):
    i = RAW.index(b"<title>Abacus</title>")
    raw = RAW[:i] + RAW[i:].replace(b"</text>", b"</txet>", 1)  # not XML: the stream is lost
    out = multistream_dump(raw, tmp_path, 10)
    pages = re.findall(rb"<title>(.*?)</title>", RAW)
    at = pages.index(b"Abacus") // 10 * 10
    stream = {t.decode() for t in pages[at : at + 10]}
    everything = list(dict.fromkeys(p.title for p in good[1].iter_passages()))
    counts = Counts()
    recs = list(read_wiki_xml(out, "skip", counts, Progress(), workers=2))
    titles = [r.title for r in recs if isinstance(r, Doc)]
    lost = set(everything) - set(titles)
    assert counts == {"truncated": 1} and "Abacus" in lost and lost <= stream
    assert titles == [t for t in everything if t not in lost]


class _Blocks(io.RawIOBase):
    """A stream that hands out at most ``size`` bytes a read, to cut references in two."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def read(self, n: int = -1) -> bytes:
        out, self.data = self.data[: self.size], self.data[self.size :]
        return out


def test_repair_catches_references_cut_between_blocks_and_keeps_valid_text():
    text = "<a>&#65;&#x9;é&amp;&#0;x&#x1;y\x00\x00z&#xD800;</a>".encode()
    for size in range(1, 12):
        repair = CharRepair(_Blocks(text, size))
        out = b"".join(iter(lambda r=repair, n=size: r.read(n), b"")).decode()
        # a run of NULs cut in two gives two marks, each matched to the page
        assert (
            re.sub("\ufdd0+", "\ufdd0", out) == "<a>&#65;&#x9;é&amp;\ufdd0x\ufdd0y\ufdd0z\ufdd0</a>"
        )
        marks = list(repair.not_xml)
        assert len(marks) == out.count("\ufdd0") and marks[:2] == ["&#0;", "&#x1;"], size
        assert marks[-1] == "&#xD800;" and all(m.startswith("U+0000") for m in marks[2:-1])
    repair = CharRepair(io.BytesIO(text))
    repair.read()
    assert list(repair.not_xml)[2] == "U+0000 (a run of 2)"
    clean = RAW[:200_000]
    assert b"".join(iter(lambda r=CharRepair(io.BytesIO(clean)): r.read(16384), b"")) == clean


# ---- item 17: a build on a damaged dump always finishes or fails -----------------------------
def _big_dump(path: Path, pages: int = 600, words: int = 3000) -> None:
    """Plain-text pages (quick to clean, large results) whose second page holds bad bytes,
    so a raising build stops while every worker is busy writing a large result."""
    head = RAW[: RAW.index(b"<page>")]
    vocab = [w for w in RAW[len(head) : len(head) + 200_000].decode().split() if w.isalpha()]
    parts = [head]
    for i in range(pages):
        start = (i * 7) % 1000
        text = " ".join(vocab[start : start + words]).encode()
        if i == 1:
            text = text[:100] + b"\xff\xfe" + text[100:]
        parts.append(
            b"<page><title>Page %d</title><ns>0</ns><id>%d</id><revision><text>%s</text>"
            b"</revision></page>\n" % (i, i + 1, text)
        )
    path.write_bytes(b"".join(parts) + b"</mediawiki>\n")


@pytest.mark.slow  # about 13 s on two busy cores
def test_damaged_builds_run_at_once_all_end_with_their_exit_code(tmp_path):
    """Before the fix about one build in eight hung forever in ``Pool.terminate``."""
    dump = tmp_path / "big.xml"
    _big_dump(dump)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    procs = []
    for k in range(8):
        argv = [sys.executable, "-m", "index_build", "corpus", "--input", str(dump)]
        argv += ["--out", str(tmp_path / f"o{k}"), "--workers", "8", "--no-progress"]
        with open(tmp_path / f"err{k}", "wb") as err:
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,  # its workers too can be killed if it hangs
                )
            )
    deadline = time.monotonic() + 60
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            codes.append("hung")
    assert codes == [2] * len(procs)
    for k in range(len(procs)):
        err = (tmp_path / f"err{k}").read_text()
        assert "page id 2 ('Page 1'): holds bytes that are not UTF-8" in err, err


def test_a_worker_that_dies_fails_the_build_instead_of_hanging(tmp_path):
    dump = tmp_path / "big.xml"
    _big_dump(dump, pages=640)
    outcome: list = []
    others = {p.pid for p in mp.active_children()}  # a full run may hold other tests' children
    records = read_wiki_xml(dump, "skip", Counts(), Progress(), workers=2)

    def consume() -> None:
        try:
            for rec in records:
                if isinstance(rec, Doc) and not outcome:
                    outcome.append("first")
                    for child in mp.active_children():  # the wikitext workers
                        if child.pid not in others:
                            os.kill(child.pid, signal.SIGKILL)
                            break
            outcome.append("finished")
        except BuildError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the build hung after a worker died"
    assert outcome[0] == "first" and isinstance(outcome[1], BuildError), outcome
    assert "worker process died" in str(outcome[1]) and "--workers" in str(outcome[1])
    assert not {p.pid for p in mp.active_children()} - others
