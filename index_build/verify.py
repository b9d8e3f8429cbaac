"""``python -m index_build verify --index ROOT``: is every part of an index root sound?

Checks the corpus store: the sha256 of every file it wrote and of the passage (and page) data it
reads, the offsets, and that every passage and page row parses (with a progress bar); every
part's corpus checksum, passage count and recorded file checksums; every dense part's shard
files (rows, sha256) and faiss index (vector count); and the recall@k of an approximate faiss
index against exact search over the shards on sample queries; and that no publish was cut
short by a kill (a part missing with its ``.old`` and ``.partial`` folders left: ``--repair``
finishes it). Prints one JSON report; exits 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

from retriever.errors import CorruptStoreError, RetrieverError
from retriever.files import interrupted, is_leftover, leftover_parts, sha256_file
from retriever.manifest import MANIFEST, check_corpus, read_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

MAX_LISTED = 5  # damaged rows named one by one in the report; the rest are counted

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root")
    p.add_argument(
        "--queries", type=int, default=200, help="sample queries for the recall check (default 200)"
    )
    p.add_argument("-k", type=int, default=10, help="recall@k (default 10)")
    p.add_argument(
        "--min-recall", type=float, default=0.8, help="fail below this recall@k (default 0.8)"
    )
    p.add_argument("--no-checksums", action="store_true", help="skip hashing the files")
    p.add_argument("--no-rows", action="store_true", help="skip parsing every passage and page")
    p.add_argument(
        "--repair",
        action="store_true",
        help="first finish publishes that a kill interrupted (X.old + X.partial left, no X), "
        "under the root's build lock",
    )


def run(args: argparse.Namespace) -> int:
    # --repair: ``python -m index_build`` took the root's build lock and finished interrupted
    # publishes (``recover_publishes``) before calling this
    report = verify_root(
        args.index,
        args.queries,
        args.k,
        args.min_recall,
        checksums=not args.no_checksums,
        rows=not args.no_rows,
        show_progress=not args.no_progress,
    )
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    if not report["ok"]:
        problems = report["problems"]
        print(
            f"error: {len(problems)} problems in {args.index}, first: {problems[0]}",
            file=sys.stderr,
        )
    return 0 if report["ok"] else 1


class _Bars:
    """A progress bar per long check (bytes hashed, rows parsed); nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, total: int, unit: str, desc: str):
        if not self.enabled:
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, unit=unit, unit_scale=unit == "B", desc=desc)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def verify_root(
    root: str | os.PathLike,
    queries: int = 200,
    k: int = 10,
    min_recall: float = 0.8,
    checksums: bool = True,
    rows: bool = True,
    show_progress: bool = False,
) -> dict:
    """The report: ``{"ok": bool, "corpus": {...}, "parts": {name: {...}}, "problems": [...]}``."""
    root = Path(root)
    bars = _Bars(show_progress)
    problems: list[str] = []
    report: dict = {"root": str(root), "corpus": {}, "parts": {}, "problems": problems}
    try:
        store = DocStore.open(root / CORPUS_DIR)
    except RetrieverError as exc:
        problems.append(f"corpus: {exc}")
        report["ok"] = False
        return report
    report["corpus"] = {"num_docs": len(store), "num_pages": store.num_pages}
    report["corpus"]["checksum"] = store.checksum
    problems.extend(verify_store(store, report["corpus"], checksums, rows, bars))
    problems.extend(_leftovers(root, report))
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != CORPUS_DIR):
        if is_leftover(sub.name):
            continue
        if not (sub / MANIFEST).is_file():  # no kind to go by: any folder with files counts
            if any(sub.iterdir()):
                problems.append(
                    f"{sub.name}: no {MANIFEST} (an unfinished build? rerun it; not an index "
                    "part? move it out of the index root)"
                )
            continue
        part: dict = {}
        report["parts"][sub.name] = part
        try:
            manifest = read_manifest(sub)
            part["kind"] = manifest.get("kind")
            check_corpus(manifest, sub, store.manifest)
            part["num_docs"] = manifest.get("num_docs")
            if checksums and manifest.get("files"):
                problems.extend(_check_files(sub, manifest["files"], f"{sub.name}: ", bars))
            if manifest.get("kind") == "dense":
                problems.extend(
                    _verify_dense(sub, manifest, part, queries, k, min_recall, checksums)
                )
        except RetrieverError as exc:
            problems.append(f"{sub.name}: {exc}")
    report["ok"] = not problems
    return report


def _leftovers(root: Path, report: dict) -> list[str]:
    """An interrupted publish is a problem (a part is missing); other work folders (an
    unfinished build's ``X.partial``, an ``X.old`` beside ``X``) are listed, not failed."""
    problems, left = [], []
    for final in leftover_parts(root):
        if (what := interrupted(final)) is not None:
            problems.append(f"{final.name}: {what}")
    for p in sorted(root.iterdir()):
        if p.is_dir() and is_leftover(p.name):
            left.append(p.name)
    if left:
        report["leftovers"] = left
    return problems


def verify_store(
    store: DocStore, out: dict, checksums: bool = True, rows: bool = True, bars=None
) -> list[str]:
    """Problems of a passage store: counts, offsets, file checksums, rows that do not parse."""
    bars = bars or _Bars(False)
    m = store.manifest
    problems = []
    if len(store) != m.get("num_docs", len(store)):
        problems.append(f"corpus: {len(store)} offsets but the manifest says {m['num_docs']}")
    spans = store.layout != "jsonl"  # no row files: every file is in the manifest's table
    if spans:
        text = {"path": m["pages"]["path"], "bytes": m["store"]["text_bytes"]}
        problems.extend(_check_offsets(store.folder / "pages.offsets.npy", text))
    else:
        problems.extend(_check_offsets(store.folder / "passages.offsets.npy", m["passages"]))
    if not spans and m.get("pages") and m["pages"].get("bytes") is not None:
        problems.extend(_check_offsets(store.folder / "pages.offsets.npy", m["pages"]))
    if checksums:
        data = []
        if not spans:
            data.append((store.data_path("passages"), m["checksum"].removeprefix("sha256:")))
        if not spans and m.get("pages") and m["pages"].get("sha256"):
            data.append((store.data_path("pages"), m["pages"]["sha256"]))
        hashed = set()
        for path, want in data:
            hashed.add(path.resolve())
            with bars(path.stat().st_size, "B", f"sha256 {path.name}") as bar:
                have = sha256_file(path, bar.update)
            if have != want:
                problems.append(
                    f"corpus: {path} has sha256 {have} but the store was built on {want}: the "
                    "file was changed or damaged; restore it or rebuild the corpus"
                )
        problems.extend(_check_files(store.folder, m.get("files", {}), "corpus: ", bars, hashed))
    if rows:
        out["bad_passages"] = _check_rows(len(store), store.get, "passages", bars)
        out["bad_pages"] = _check_rows(store.num_pages, store.get_page, "pages", bars)
        for what in ("passages", "pages"):
            bad = out[f"bad_{what}"]
            if bad["count"]:
                problems.append(
                    f"corpus: {bad['count']} {what} rows do not parse (first: rows "
                    f"{bad['rows']}: {bad['first_error']}): rebuild the corpus"
                )
    return problems


def _check_offsets(path: Path, entry: dict) -> list[str]:
    """Offsets must rise and end inside the data file (a damaged table reads wrong rows)."""
    try:
        offsets = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return [f"corpus: {path.name} does not load: {exc}"]
    if len(offsets) and (np.any(np.diff(offsets.astype(np.int64)) < 0)):
        return [f"corpus: {path.name} is not in ascending order: rebuild the corpus"]
    if len(offsets) and int(offsets[-1]) > entry["bytes"]:
        return [f"corpus: {path.name} points past the end of {entry['path']}: rebuild the corpus"]
    return []


def _check_files(folder: Path, files: dict, label: str, bars, hashed=frozenset()) -> list[str]:
    """Every file a manifest lists must exist with its recorded size and sha256 (files in
    ``hashed`` were just hashed against another record: only their size is checked)."""
    problems = []
    total = sum(e["bytes"] for n, e in files.items() if (folder / n).resolve() not in hashed)
    with bars(total, "B", f"sha256 {folder.name}") as bar:
        for name, entry in sorted(files.items()):
            path = folder / name
            if not path.is_file():
                problems.append(f"{label}{name} is missing")
            elif path.stat().st_size != entry["bytes"]:
                problems.append(
                    f"{label}{name} is {path.stat().st_size} bytes, the manifest says "
                    f"{entry['bytes']}: damaged or changed; rebuild {folder.name}"
                )
            elif path.resolve() in hashed:
                continue
            elif sha256_file(path, bar.update) != entry["sha256"]:
                problems.append(
                    f"{label}{name} does not match its sha256 (damaged or changed): "
                    f"rebuild {folder.name}"
                )
    return problems


def _check_rows(n: int, read: Callable[[int], object], what: str, bars) -> dict:
    """Read every row the way a query does; count (and name the first few) that fail."""
    bad: list[int] = []
    first_error = None
    with bars(n, "row", f"parse {what}") as bar:
        for row in range(n):
            try:
                read(row)
            except CorruptStoreError as exc:
                bad.append(row)
                first_error = first_error or str(exc.__cause__ or exc)
            if row % 4096 == 4095:
                bar.update(4096)
        bar.update(n % 4096)
    return {"count": len(bad), "rows": bad[:MAX_LISTED], "first_error": first_error}


def _verify_dense(
    folder: Path,
    manifest: dict,
    part: dict,
    queries: int,
    k: int,
    min_recall: float,
    checksums: bool,
) -> list[str]:
    from retriever.dense.retriever import faiss_path

    problems = []
    n = manifest["num_docs"]
    parts = []
    if manifest.get("shards"):
        expected = 0
        for shard in manifest["shards"]:
            path = folder / shard["file"]
            if not path.is_file():
                problems.append(f"{folder.name}: shard {shard['file']} is missing")
                continue
            arr = np.load(path, mmap_mode="r")
            start, stop = shard["rows"]
            if start != expected or arr.shape != (stop - start, manifest["dim"]):
                problems.append(
                    f"{folder.name}: {shard['file']} has shape {arr.shape}, expected rows {expected}.. of dim {manifest['dim']}"
                )
            expected = stop
            if checksums and shard.get("sha256") and sha256_file(path) != shard["sha256"]:
                problems.append(
                    f"{folder.name}: {shard['file']} does not match its sha256 (changed or corrupt): re-encode it"
                )
            parts.append((start, arr))
        if expected != n:
            problems.append(f"{folder.name}: shards cover {expected} rows, the corpus has {n}")
        part["shard_rows"] = expected
    entry = manifest.get("faiss")
    if entry:
        from retriever.dense.faiss_backend import FaissBackend, read_index, set_search_params

        index = read_index(faiss_path(folder, manifest))
        part["faiss"] = {"factory": entry.get("factory"), "ntotal": int(index.ntotal)}
        if index.ntotal != n:
            problems.append(
                f"{folder.name}: faiss index holds {index.ntotal} vectors, the corpus has {n}"
            )
        elif parts and not problems and entry.get("factory") != "Flat":
            set_search_params(index, entry.get("nprobe"), entry.get("ef_search"))
            recall = ann_recall(parts, FaissBackend(index, entry.get("metric", "ip")), queries, k)
            part["faiss"][f"recall@{k}"] = recall
            if recall < min_recall:
                problems.append(
                    f"{folder.name}: {entry['factory']} recall@{k} {recall:.3f} against exact search is "
                    f"below {min_recall}: raise nprobe/efSearch or use a finer factory"
                )
    return problems


def sample_queries(parts, n: int, seed: int = 0) -> np.ndarray:
    """Query-like vectors: the normalised sum of two random rows plus a little noise."""
    from .build_faiss import sample_rows

    a = sample_rows(parts, n, seed)
    b = sample_rows(parts, n, seed + 1)
    rng = np.random.default_rng(seed + 2)
    b = b[rng.permutation(len(b))]
    q = a + b + rng.normal(0, 0.01, a.shape).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-9)).astype(np.float32)


def ann_recall(parts, backend, queries: int, k: int) -> float:
    """Mean |approx top k ∩ exact top k| / k over sample queries (exact: torch on CPU, fp32)."""
    from retriever.dense.torch_backend import TorchBackend

    q = sample_queries(parts, queries)
    _, exact = TorchBackend(parts, ["cpu"], "fp32").search(q, k)
    _, approx = backend.search(q, k)
    hits = sum(len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact))
    return hits / (len(q) * min(k, exact.shape[1]))
