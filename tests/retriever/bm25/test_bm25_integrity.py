"""A BM25 part's integrity: damaged and truncated files are refused or fail the query with a
clear error (never a crash); ``ranges`` under a live retriever, on a full disk, killed between
the publish renames; two builders on one root."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO

from index_build.__main__ import main
from index_build.verify import verify_root
from retriever import files
from retriever.bm25.retriever import BM25Retriever
from retriever.errors import IndexFormatError
from retriever.index import Index
from retriever.manifest import read_manifest

HOTPOT = DATA / "hotpotqa-distractor-500.jsonl"


@pytest.fixture(scope="module")
def built(hotpot_root, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity") / "index"
    shutil.copytree(hotpot_root / "corpus", root / "corpus")
    assert main(["bm25", "--index", str(root), "--no-progress", "--workers", "1"]) == 0
    return root


@pytest.fixture
def root(built, tmp_path) -> Path:
    """A private copy of the built root."""
    shutil.copytree(built, tmp_path / "index")
    return tmp_path / "index"


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [json.loads(line)["question"] for line in HOTPOT.read_text().splitlines()[:300]]


def _payload(path: Path) -> tuple[int, np.dtype, tuple]:
    """(data offset, dtype, shape) of a .npy file."""
    arr = np.load(path, mmap_mode="r")
    return arr.offset, arr.dtype, arr.shape


def _flip(path: Path, positions: np.ndarray) -> None:
    """XOR 0xFF into the bytes at ``positions`` of the file's array data."""
    offset = _payload(path)[0]
    raw = bytearray(path.read_bytes())
    for p in positions.tolist():
        raw[offset + p] ^= 0xFF
    path.write_bytes(bytes(raw))


_QUERY_SCRIPT = textwrap.dedent(
    """
    import sys
    from retriever.bm25.retriever import BM25Retriever
    from retriever.errors import RetrieverError
    folder, pruning = sys.argv[1], sys.argv[2]
    queries = sys.stdin.read().splitlines()
    try:
        r = BM25Retriever(folder, threads=2, pruning=pruning)
        for k in (1, 10, 100):
            r.search(queries, k)  # a batch (parallel kernel)
            for q in queries[:40]:
                r.search([q], k)  # one by one (serial kernel)
    except RetrieverError as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
    print("answered")
    """
)


@pytest.mark.parametrize("target", ["indices.csc.index.npy", "rows.slot.npy", "vocab.ids.npy"])
def test_flipped_bytes_never_crash_the_process(root, questions, target):
    """64 flipped bytes: refused at load naming the file, or the query fails naming it; a
    segfault would show as rc -11."""
    folder = root / "bm25"
    path = folder / target
    rng = np.random.default_rng(5)
    queries = questions[:100] + ["film", "american film", "born album football"]
    clean = BM25Retriever(folder, threads=1, warmup=False)
    _, tids, _ = clean.query_terms(queries)
    terms = rng.choice(np.unique(tids), 64, replace=False)
    # the high byte of 64 int32 entries the queries read: out-of-range values
    if target == "indices.csc.index.npy":
        indptr = np.load(folder / "indptr.csc.index.npy")
        postings = np.concatenate([np.arange(indptr[t], indptr[t + 1]) for t in terms])
        entries = rng.choice(postings, 64, replace=False)
    elif target == "rows.slot.npy":
        entries = terms
    else:  # vocab.ids.npy: where the terms' hashes sit
        entries = np.flatnonzero(np.isin(np.load(folder / "vocab.ids.npy"), terms))
    del clean
    _flip(path, entries * 4 + 3)
    for pruning in ("bmp", "exhaustive"):
        proc = subprocess.run(
            [sys.executable, "-c", _QUERY_SCRIPT, str(folder), pruning],
            input="\n".join(queries),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 3, (pruning, proc.returncode, proc.stdout, proc.stderr[-2000:])
        assert "CorruptStoreError" in proc.stdout and target in proc.stdout, proc.stdout


def _part_files(built: Path) -> list[str]:
    return sorted(p.name for p in (built / "bm25").iterdir())


def test_every_truncated_file_is_refused_naming_it(root):
    folder = root / "bm25"
    names = _part_files(root)
    assert "manifest.json" in names and "indices.csc.index.npy" in names
    saved = {n: (folder / n).read_bytes() for n in names}
    for name in names:
        path = folder / name
        path.write_bytes(saved[name][: len(saved[name]) // 2])
        with pytest.raises(IndexFormatError) as err:
            BM25Retriever(folder, threads=1)
        assert name in str(err.value), (name, str(err.value))
        path.write_bytes(saved[name])
    BM25Retriever(folder, threads=1)  # whole again


def test_a_truncated_file_of_a_part_without_a_file_table_is_named(root):
    """Older parts record no sizes: the .npy headers give them."""
    from retriever.manifest import write_manifest

    folder = root / "bm25"
    manifest = read_manifest(folder)
    del manifest["files"]
    write_manifest(folder, manifest)
    for name in ("data.csc.index.npy", "rows.max.npy", "terms.max.npy"):
        path = folder / name
        whole = path.read_bytes()
        path.write_bytes(whole[:-7])
        with pytest.raises(IndexFormatError, match=name.replace(".", r"\.")):
            BM25Retriever(folder, threads=1)
        path.write_bytes(whole)


def test_ranges_rerun_under_an_open_retriever_keeps_its_answers(root, questions):
    """The open retriever keeps the files it mapped; a reload sees the new part, same hits."""
    folder = root / "bm25"
    live = BM25Retriever(folder, threads=2)
    index = Index.open(root)
    before = live.search(questions, 10)
    assert index.retriever("bm25", threads=1).search(questions, 10) == before
    old_min_df = read_manifest(folder)["postings"]["row_ranges"]["min_df"]
    assert main(["ranges", "--index", str(root), "--no-progress", "--min-df", "200"]) == 0
    assert read_manifest(folder)["postings"]["row_ranges"]["min_df"] == 200 != old_min_df
    assert live.search(questions, 10) == before
    assert index.retriever("bm25").search(questions, 10) == before
    assert BM25Retriever(folder, threads=2).search(questions, 10) == before
    assert Index.open(root).retriever("bm25").search(questions, 10) == before
    assert verify_root(root, checksums=True, rows=False)["ok"]
    assert sorted(p.name for p in root.iterdir()) == [".lock", "bm25", "corpus"]


def _fsize_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_ranges_on_a_full_disk_leaves_the_part_loadable(root, questions):
    """A real write failure (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) mid-``ranges``."""
    folder = root / "bm25"
    want = BM25Retriever(folder, threads=1).search(questions, 10)
    manifest = read_manifest(folder)
    assert (folder / "rows.slot.npy").stat().st_size > 20_000  # the maxima stay under it
    proc = subprocess.run(
        [sys.executable, "-m", "index_build", "ranges", "--index", str(root), "--min-df", "900"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_fsize_limit(20_000),
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "File too large" in lines[0]
    assert read_manifest(folder) == manifest
    assert BM25Retriever(folder, threads=1).search(questions, 10) == want
    assert verify_root(root, rows=False)["ok"]
    assert not [p for p in root.rglob("*") if files.is_leftover(p.name)]


def test_a_kill_between_the_publish_renames_is_reported_then_finished(root, questions, monkeypatch):
    def killed(partial, final):
        raise KeyboardInterrupt  # as a kill between the renames would leave it

    want = BM25Retriever(root / "bm25", threads=1).search(questions, 10)
    monkeypatch.setattr(files, "_between_renames", killed)
    assert main(["ranges", "--index", str(root), "--no-progress", "--min-df", "200"]) == 130
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == [".lock", "bm25.old", "bm25.partial", "corpus"]
    report = verify_root(root, rows=False)
    assert not report["ok"] and "bm25.old" not in report["parts"]
    assert "interrupted" in report["problems"][0] and "--repair" in report["problems"][0]
    assert "bm25.partial" not in report["parts"]
    index = Index.open(root)
    assert index.parts() == {}
    with pytest.raises(IndexFormatError, match="interrupted"):
        index.retriever("bm25")
    assert main(["verify", "--index", str(root), "--repair", "--no-rows", "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [".lock", "bm25", "corpus"]
    assert read_manifest(root / "bm25")["postings"]["row_ranges"]["min_df"] == 200  # the new one
    assert Index.open(root).retriever("bm25").search(questions, 10) == want


@pytest.mark.parametrize("left", [("bm25.old",), ("bm25.old", "bm25")])
def test_other_publish_leftovers_are_resolved_by_the_next_build(root, questions, left):
    """``X.old`` alone is put back; ``X.old`` beside ``X`` is deleted."""
    want = BM25Retriever(root / "bm25", threads=1).search(questions, 10)
    os.replace(root / "bm25", root / "bm25.old")
    if "bm25" in left:
        shutil.copytree(root / "bm25.old", root / "bm25")
    assert verify_root(root, rows=False)["ok"] == ("bm25" in left)
    assert main(["ranges", "--index", str(root), "--no-progress"]) == 0
    assert sorted(p.name for p in root.iterdir()) == [".lock", "bm25", "corpus"]
    assert BM25Retriever(root / "bm25", threads=1).search(questions, 10) == want


def test_a_second_builder_fails_at_once_naming_the_lock(root, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from retriever.files import root_lock\n"
            f"with root_lock({str(root)!r}, 'bm25'):\n"
            "    print('held', flush=True); sys.stdin.read()",
        ],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = read_manifest(root / "bm25")
        assert main(["ranges", "--index", str(root), "--no-progress", "--min-df", "200"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"another build (pid {holder.pid}, verb bm25, since " in err
        assert str(root / ".lock") in err
        assert read_manifest(root / "bm25") == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert main(["ranges", "--index", str(root), "--no-progress", "--min-df", "200"]) == 0
