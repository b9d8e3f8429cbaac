"""Store and build hardening: one row parser for copied and in-place stores, ASearcher's page
file, damaged files found by ``verify`` and refused at query time, resumes that would mix
settings, full disks and bad flags ending in one ``error:`` line with nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO

from index_build.__main__ import main
from index_build.corpus import CorpusConfig, build_corpus
from index_build.encode import EncodeOptions, encode_corpus
from index_build.verify import verify_root
from retriever.dense.encoders import packaged_model_path, resolve_config
from retriever.errors import CorpusInputError, CorruptStoreError, ManifestMismatchError
from retriever.files import atomic_write, building_dir, sha256_file
from retriever.store.access import access_pages
from retriever.store.docstore import DocStore


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _passages(store: DocStore) -> list[tuple]:
    return [(p.id, p.title, p.text, p.url) for p in store.iter_passages()]


ROWS = [
    {"id": "0", "contents": '"T"\n  body  '},
    {"id": "1", "contents": '"T"\nsecond part of T'},
    {"id": "2", "contents": '"iPhone"\nA phone.'},
    {"id": "3", "contents": "No title line at all"},
    {"id": "4", "contents": "Body only", "wikipedia_title": "Given", "url": "https://x.org/Given"},
    {"id": "5", "contents": '"Ernst &amp; Young"\nAn audit firm.'},
]


# ---- one row parser, one table builder ------------------------------------------------------
def test_same_passages_copied_and_in_place(tmp_path):
    src = _jsonl(tmp_path / "wiki.jsonl", ROWS)
    build_corpus([src], tmp_path / "inplace", CorpusConfig(in_place="yes"))
    build_corpus([src], tmp_path / "copied", CorpusConfig(in_place="no"))
    a, b = DocStore.open(tmp_path / "inplace"), DocStore.open(tmp_path / "copied")
    assert a.manifest["passages"]["path"] == str(src.resolve())  # really read where it lies
    assert b.manifest["passages"]["path"] == "passages.jsonl"
    assert _passages(a) == _passages(b)
    assert a.get(0).text == "body" and a.get(0).title == "T"
    assert a.get(2).title == "iPhone"  # passage files keep their titles as written
    for name in ("T", "/wiki/T", "iPhone", "Given", "https://x.org/Given", "Ernst & Young"):
        assert a.find_title(name) == b.find_title(name) != [], name
    assert [a.find_id(str(i)) for i in range(6)] == [b.find_id(str(i)) for i in range(6)]


def test_in_place_honours_on_error_skip(tmp_path):
    rows = [ROWS[0], ROWS[1], '{"id": "x", "contents": ', "", ROWS[2], {"id": "9"}, ROWS[4]]
    src = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(CorpusInputError, match=r"bad.jsonl: line 3"):
        build_corpus([src], tmp_path / "r", CorpusConfig(in_place="yes"))
    assert not (tmp_path / "r" / "corpus").exists()
    m = build_corpus([src], tmp_path / "s", CorpusConfig(in_place="yes", on_error="skip"))
    assert m["skipped"] == {"malformed": 2}
    store = DocStore.open(tmp_path / "s")
    assert [p.id for p in store.iter_passages()] == ["0", "1", "2", "4"]
    assert store.get(1).text == "second part of T"  # its slice runs over skipped lines
    copied = build_corpus([src], tmp_path / "c", CorpusConfig(in_place="no", on_error="skip"))
    assert copied["skipped"] == m["skipped"]
    assert _passages(DocStore.open(tmp_path / "c")) == _passages(store)
    assert verify_root(tmp_path / "s")["ok"]


# ---- ASearcher's local-knowledge files ---------------------------------------------------------
ASEARCHER_URL = "https://en.wikipedia.org/w/index.php?title="


def _asearcher_files(tmp_path: Path) -> tuple[Path, Path]:
    """Small files shaped like ASearcher-Local-Knowledge's wiki_corpus.jsonl and
    wiki_webpages.jsonl (passages with contents and url; whole pages keyed by url)."""
    titles = ["Albert Einstein", "Muscle & Fitness", "AC/DC"]
    corpus, pages = [], []
    for t in titles:
        url = ASEARCHER_URL + t.replace(" ", "_")
        body = [f"{t} sentence {j} of the article." for j in range(30)]
        for j in range(0, 30, 10):
            corpus.append(
                {"id": str(len(corpus)), "contents": f'"{t}"\n' + " ".join(body[j : j + 10]),
                 "url": url}
            )  # fmt: skip
        pages.append({"url": url, "wikipedia_title": t, "contents": t + "\n" + "\n".join(body)})
    return _jsonl(tmp_path / "wiki_corpus.jsonl", corpus), _jsonl(
        tmp_path / "wiki_webpages.jsonl", pages
    )


def test_asearcher_corpus_with_pages_file(tmp_path, capsys):
    corpus, pages = _asearcher_files(tmp_path)
    root = tmp_path / "idx"
    rc = main(["corpus", "--input", str(corpus), "--pages", str(pages), "--out", str(root)])
    assert rc == 0, capsys.readouterr().err
    assert "9 passages, 3 pages" in capsys.readouterr().out
    store = DocStore.open(root)
    assert not (root / "corpus" / "pages.jsonl").exists()  # the 26 GB page file is not copied
    assert store.data_path("pages") == pages.resolve()
    want = "\n".join(f"AC/DC sentence {j} of the article." for j in range(30))
    for name in (
        ASEARCHER_URL + "AC/DC",
        "https://en.wikipedia.org/w/index.php/AC/DC",  # ASearcher's own server rewrites this
        "https://en.wikipedia.org/wiki/AC/DC",
        "AC/DC",
        "ac/dc",
    ):
        page = store.page(name)
        assert page is not None and page.text == want and page.title == "AC/DC", name
    (got,) = access_pages(store, urls=[ASEARCHER_URL + "Muscle_&_Fitness"], max_chars=40)
    assert got["title"] == "Muscle & Fitness" and got["contents"].startswith("Muscle & Fitness")
    assert got["total_chars"] > 40 and len(got["contents"]) == 40
    assert store.get(3).url == ASEARCHER_URL + "Muscle_&_Fitness"
    report = verify_root(root)
    assert report["ok"], report["problems"]
    assert report["corpus"]["bad_pages"]["count"] == 0


def test_a_bad_page_row_is_named_or_skipped(tmp_path):
    corpus, pages = _asearcher_files(tmp_path)
    lines = pages.read_text().splitlines()
    pages.write_text("\n".join([lines[0], '{"contents": "no url"}', lines[1], lines[2]]) + "\n")
    with pytest.raises(CorpusInputError, match=r"wiki_webpages.jsonl: line 2: not a pages row"):
        build_corpus([corpus], tmp_path / "r", CorpusConfig(pages=str(pages)))
    skip = CorpusConfig(pages=str(pages), on_error="skip")
    m = build_corpus([corpus], tmp_path / "s", skip)
    assert m["skipped"] == {"malformed pages": 1} and m["num_pages"] == 3
    store = DocStore.open(tmp_path / "s")
    assert [store.get_page(i).title for i in range(3)] == [
        "Albert Einstein",
        "Muscle & Fitness",
        "AC/DC",
    ]
    assert store.page("AC/DC").text.endswith("AC/DC sentence 29 of the article.")


def test_hotpotqa_titles_are_unescaped(hotpot_root):
    store = DocStore.open(hotpot_root)
    titles = {p.title for p in store.iter_passages()}
    assert "Ernst & Young" in titles and not any("&amp;" in t for t in titles)
    assert store.find_title("Ernst & Young") == store.find_title("Ernst &amp; Young") != []


# ---- damaged files -----------------------------------------------------------------------------
def _damage(path: Path, at: int) -> None:
    """Overwrite one byte in place (same size, so only a checksum or a parse can tell)."""
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(b"}" if old != b"}" else b"{")


def test_verify_finds_a_damaged_passage_file_and_queries_fail_clearly(tmp_path, capsys):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(50)])
    root = tmp_path / "idx"
    build_corpus([src], root)
    assert verify_root(root)["ok"]
    store = DocStore.open(root)
    data = root / "corpus" / "passages.jsonl"
    start = int(np.load(root / "corpus" / "passages.offsets.npy")[7])
    _damage(data, start + 3)
    report = verify_root(root)
    assert not report["ok"]
    assert report["corpus"]["bad_passages"]["rows"] == [7]
    assert any("passages.jsonl has sha256" in p for p in report["problems"])
    assert main(["verify", "--index", str(root)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["ok"] is False
    assert err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    with pytest.raises(CorruptStoreError, match="index_build verify"):
        store.get(7)
    assert store.get(6).text == "text 6" and store.get(8).text == "text 8"
    with pytest.raises(CorruptStoreError):
        store.find_id("7-0")  # a lookup that reads the row


def test_verify_finds_a_damaged_key_table(tmp_path):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(50)])
    build_corpus([src], tmp_path / "idx")
    table = tmp_path / "idx" / "corpus" / "titles.rows.npy"
    _damage(table, table.stat().st_size - 5)
    problems = verify_root(tmp_path / "idx")["problems"]
    assert problems == [
        "corpus: titles.rows.npy does not match its sha256 (damaged or changed): rebuild corpus"
    ]


# ---- resumes that would mix settings -----------------------------------------------------------
class _Fake:
    def encode_passages(self, texts):
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"dtype": "bf16"}, ("'fp32'", "'bf16'", "--dtype")),
        ({"max_length": 64}, ("256", "64")),
        ({"passage_prefix": "passage: "}, ("''", "'passage: '")),
    ],
)
def test_resume_with_other_settings_is_refused_naming_both(tmp_path, change, named):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(9)])
    build_corpus([src], tmp_path)
    model = str(packaged_model_path(verify=False))
    config = resolve_config(model, preset="minilm")
    stopped = {"n": 0}

    def stop_after_first(i, path):
        stopped["n"] += 1
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encode_corpus(tmp_path, "m", config, 4, encoder=_Fake(), on_shard=stop_after_first)
    assert (tmp_path / "dense-m" / "emb-00000.npy").is_file()
    options = EncodeOptions(dtype=change.get("dtype", "auto"))
    other = resolve_config(
        model, preset="minilm", **{k: v for k, v in change.items() if k != "dtype"}
    )
    with pytest.raises(ManifestMismatchError) as info:
        encode_corpus(tmp_path, "m", other, 4, options=options, encoder=_Fake())
    for text in named:
        assert text in str(info.value)
    assert not (tmp_path / "dense-m" / "emb-00001.npy").exists()
    encode_corpus(tmp_path, "m", config, 4, encoder=_Fake())  # the same settings resume
    assert (tmp_path / "dense-m" / "manifest.json").is_file()


def test_resume_with_other_dtype_refused_by_the_cli(tmp_path, capsys):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(9)])
    build_corpus([src], tmp_path)
    model = str(packaged_model_path(verify=False))
    config = resolve_config(model, preset="minilm")
    encode_corpus(tmp_path, "m", config, 4, options=EncodeOptions(dtype="fp32"), encoder=_Fake())
    argv = ["encode", "--index", str(tmp_path), "--model", model, "--preset", "minilm"]
    argv += ["--name", "m", "--shard-size", "4", "--dtype", "bf16"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "'fp32'" in err and "'bf16'" in err
    assert len(err.splitlines()) == 1


# ---- full disks and bad flags: one line, nothing half-written ----------------------------------
def test_full_disk_in_corpus_leaves_the_old_store_and_no_partial(tmp_path, monkeypatch, capsys):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(50)])
    root = tmp_path / "idx"
    build_corpus([src], root)
    before = DocStore.open(root).checksum
    import retriever.store.writer as writer

    real = writer.StoreWriter.add_passage

    def full(self, *a, **k):
        if self.num_passages == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.folder))
        return real(self, *a, **k)

    monkeypatch.setattr(writer.StoreWriter, "add_passage", full)
    src.write_text(src.read_text() + json.dumps({"title": "New", "text": "more"}) + "\n")
    assert main(["corpus", "--input", str(src), "--out", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "No space left on device" in err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in root.iterdir()) == ["corpus"]
    assert DocStore.open(root).checksum == before


def test_full_disk_while_writing_a_shard(tmp_path, monkeypatch, capsys):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(9)])
    build_corpus([src], tmp_path)
    import index_build.encode as encode_mod

    def full(f, *a, **k):
        f.write(b"\x93NUMPY")  # a few bytes land, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(encode_mod.np, "save", full)
    config = resolve_config(str(packaged_model_path(verify=False)), preset="minilm")
    with pytest.raises(OSError):
        encode_corpus(tmp_path, "m", config, 4, encoder=_Fake())
    assert sorted(p.name for p in (tmp_path / "dense-m").iterdir()) == ["encode.json"]


def test_file_size_limit_through_the_real_cli(tmp_path):
    """A real write failure (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) in a subprocess."""
    src = _jsonl(
        tmp_path / "a.jsonl", [{"title": f"T{i}", "text": "word " * 400} for i in range(200)]
    )

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "idx"
    proc = subprocess.run(
        [sys.executable, "-m", "index_build", "corpus", "--input", str(src), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "File too large" in lines[0]
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["corpus", "--input", "x.jsonl", "--out", "o", "--passage-words", "0"],
        ["corpus", "--input", "x.jsonl", "--out", "o", "--format", "docx"],
        ["corpus", "--input", "x.jsonl", "--out", "o", "--workers", "-1"],
        ["corpus", "--input", "missing.jsonl", "--out", "o"],
        ["corpus", "--input", "x.jsonl", "--out", "o", "--pages", "p.jsonl", "--no-pages"],
        ["encode", "--index", "o", "--model", "m", "--batch-size", "0"],
        ["encode", "--index", "o", "--model", "m", "--shard-id", "2", "--num-shards", "2"],
        ["encode", "--index", "o", "--model", "m", "--shard-size", "0"],
        ["encode", "--index", "o", "--model", "m", "--batch-size", "lots"],
        ["encode", "--index", "o"],
        ["encode-ray", "--index", "o", "--model", "m", "--shard-id", "1", "--num-shards", "2"],
        ["encode-ray", "--index", "o", "--model", "m", "--workers", "-1"],
        ["encode-ray", "--index", "o", "--model", "m", "--device", "cuda"],
        ["faiss", "--index", "o", "--name", "x"],
        ["bm25", "--index", "o"],
        ["verify", "--index", "o"],
        ["no-such-verb"],
    ],
)
def test_bad_cli_values_end_in_one_error_line(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) != 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    assert not any(p.name.endswith(".partial") for p in tmp_path.rglob("*"))


def test_encode_flags_come_from_the_config_dataclasses():
    from index_build.__main__ import build_parser
    from index_build.encode import EncoderChoice
    from retriever.cli import config_from_args

    parser, _ = build_parser()
    base = ["encode", "--index", "r", "--model", "m"]
    args = parser.parse_args(base)
    assert config_from_args(EncoderChoice, args) == EncoderChoice(model="m")
    assert config_from_args(EncodeOptions, args) == EncodeOptions()
    assert (
        config_from_args(EncoderChoice, parser.parse_args(base + ["--no-normalize"])).normalize
        is False
    )
    assert (
        config_from_args(EncoderChoice, parser.parse_args(base + ["--normalize"])).normalize is True
    )
    args = parser.parse_args(
        base + ["--dtype", "bf16", "--batch-size", "8", "--shard-id", "1", "--num-shards", "3"]
    )
    assert config_from_args(EncodeOptions, args) == EncodeOptions(
        dtype="bf16", batch_size=8, shard_id=1, num_shards=3
    )
    ray_args = parser.parse_args(
        ["encode-ray", "--index", "r", "--model", "m", "--no-ship-code", "--workers", "2"]
    )
    from index_build.encode_ray import RayEncodeOptions

    assert config_from_args(RayEncodeOptions, ray_args) == RayEncodeOptions(
        workers=2, ship_code=False
    )


# ---- the publish helpers -----------------------------------------------------------------------
def test_failed_writes_leave_the_old_output(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_write(target) as f:
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["x.bin"]
    final = tmp_path / "part"
    final.mkdir()
    (final / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), building_dir(final) as partial:
        (partial / "a").write_text("new")
        raise KeyboardInterrupt
    assert (final / "a").read_text() == "old" and sorted(os.listdir(tmp_path)) == ["part", "x.bin"]
    with building_dir(final) as partial:
        (partial / "a").write_text("new")
    assert (final / "a").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["part", "x.bin"]


def test_all_runs_the_stages_as_the_verbs_do(tmp_path, capsys):
    src = _jsonl(
        tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i} w"} for i in range(30)]
    )
    assert main(["all", "--input", str(src), "--out", str(tmp_path / "a")]) == 0
    assert main(["corpus", "--input", str(src), "--out", str(tmp_path / "v")]) == 0
    assert main(["bm25", "--index", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out
    assert out.count("corpus: 30 passages") == 2 and out.count("bm25 (bm25s): 30 passages") == 2
    for part in ("corpus", "bm25"):
        files = sorted(p.name for p in (tmp_path / "a" / part).iterdir())
        assert files == sorted(p.name for p in (tmp_path / "v" / part).iterdir())
        for name in files:
            if name != "manifest.json":  # it records paths and times
                a, v = (sha256_file(tmp_path / r / part / name) for r in ("a", "v"))
                assert a == v, (part, name)


def test_full_disk_while_writing_a_faiss_index(tmp_path, monkeypatch, capsys):
    import faiss

    src = _jsonl(tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"text {i}"} for i in range(9)])
    build_corpus([src], tmp_path)
    config = resolve_config(str(packaged_model_path(verify=False)), preset="minilm")
    encode_corpus(tmp_path, "m", config, 4, encoder=_Fake())
    before = sorted(p.name for p in (tmp_path / "dense-m").iterdir())

    def full(index, path):
        Path(path).write_bytes(b"IxF")  # a few bytes land, then the disk is full
        raise RuntimeError("Error in faiss::FileIOWriter: No space left on device")

    monkeypatch.setattr(faiss, "write_index", full)
    assert main(["faiss", "--index", str(tmp_path), "--name", "m"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "No space left" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "dense-m").iterdir()) == before


def test_an_unforeseen_failure_is_one_line_too(tmp_path, monkeypatch, capsys):
    import index_build.corpus as corpus_mod

    def broken(*a, **k):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(corpus_mod, "build_corpus", broken)
    assert main(["corpus", "--input", "x", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: RuntimeError: something nobody planned for (rerun with -vv for the traceback)"
    )
    with pytest.raises(RuntimeError):
        main(["corpus", "--input", "x", "--out", str(tmp_path), "-vv"])


def test_verify_checks_the_files_of_a_bm25_part(tmp_path):
    src = _jsonl(
        tmp_path / "a.jsonl", [{"title": f"T{i}", "text": f"word{i} x"} for i in range(40)]
    )
    build_corpus([src], tmp_path)
    assert main(["bm25", "--index", str(tmp_path)]) == 0
    files = json.loads((tmp_path / "bm25" / "manifest.json").read_text())["files"]
    assert files and all(len(e["sha256"]) == 64 for e in files.values())
    assert verify_root(tmp_path)["ok"]
    name = max(files, key=lambda n: files[n]["bytes"])
    _damage(tmp_path / "bm25" / name, files[name]["bytes"] - 1)
    problems = verify_root(tmp_path)["problems"]
    assert problems == [
        f"bm25: {name} does not match its sha256 (damaged or changed): rebuild bm25"
    ]


def test_all_names_the_stage_that_failed(tmp_path, capsys):
    src = _jsonl(tmp_path / "a.jsonl", [{"title": "A", "text": "x"}, "{bad"])
    assert main(["all", "--input", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: stage corpus: ") and "a.jsonl: line 2" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o" / "corpus").exists()


def test_asearcher_data_served_as_asearcher_reads_it(tmp_path):
    """Search, then open the first hit's url, with the request and response shapes of
    ASearcher's own tool (``queries``/``topk``; ``urls`` -> ``result[i]["contents"]``)."""
    import requests
    from retriever_fakes import LiveServer

    from retriever.server.service import RetrievalService, ServiceConfig

    corpus, pages = _asearcher_files(tmp_path)
    root = tmp_path / "idx"
    assert main(["corpus", "--input", str(corpus), "--pages", str(pages), "--out", str(root)]) == 0
    assert main(["bm25", "--index", str(root)]) == 0
    service = RetrievalService(ServiceConfig(index=root, max_wait_ms=1, default_topk=3))
    with LiveServer(service) as live:
        r = requests.post(
            f"{live.url}/retrieve",
            json={"queries": ["AC/DC sentence 25"], "topk": 3, "return_scores": False},
            timeout=60,
        )
        r.raise_for_status()
        docs = r.json()["result"][0]
        assert docs[0]["url"] == ASEARCHER_URL + "AC/DC"
        assert "AC/DC sentence 25" in docs[0]["contents"]
        r = requests.post(
            f"{live.url}/access",
            json={"urls": [docs[0]["url"], ASEARCHER_URL + "Nope"]},
            timeout=60,
        )
        r.raise_for_status()
        page, missing = r.json()["result"]
    assert missing is None
    assert page["contents"] == "\n".join(f"AC/DC sentence {j} of the article." for j in range(30))
    assert page["url"] == ASEARCHER_URL + "AC/DC" and page["title"] == "AC/DC"


def test_title_to_url_fast_path_equals_quote():
    from urllib.parse import quote

    from retriever.store.titles import WIKI_BASE, clean_title, title_to_url

    titles = {"AC/DC", "Café", "C++", "100%", "x?y", "x#y", "a&b", "tab\there", " sp  aced "}
    for line in (DATA / "hotpotqa-distractor-500.jsonl").open():
        titles.update(t for t, _ in json.loads(line)["context"])
    for t in titles:
        path = clean_title(t).replace(" ", "_")
        assert title_to_url(t) == WIKI_BASE + quote(path, safe="/:(),'!;@$*+=-._~"), t


def test_a_damaged_row_at_query_time_is_a_json_error_naming_verify(tmp_path):
    """Over HTTP: the hit on a damaged row is a 503 JSON ``index_damaged`` (not a 500), other
    queries are still answered."""
    from fastapi.testclient import TestClient
    from retriever_fakes import build_root

    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    root = build_root(tmp_path, bm25=True)
    service = RetrievalService(ServiceConfig(index=root, cache_size=0, warmup=False)).start()
    with TestClient(create_app(service)) as client:
        body = {"queries": ["Which magazine was started first?"], "topk": 1}
        hit = client.post("/retrieve", json=body).json()["result"][0][0]
        row = DocStore.open(root).find_id(hit["id"])
        start = int(np.load(root / "corpus" / "passages.offsets.npy")[row])
        _damage(root / "corpus" / "passages.jsonl", start + 3)
        response = client.post("/retrieve", json=body)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "index_damaged"
        assert "index_build verify" in response.json()["detail"]
        other = client.post("/retrieve", json={"queries": ["a different question"], "topk": 1})
        assert other.status_code in (200, 503) and other.headers["content-type"].startswith(
            "application/json"
        )
