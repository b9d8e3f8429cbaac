"""``python -m index_build verify --index ROOT``: is every part of an index root sound?

Checks the corpus store (file sizes, offsets), every part's corpus checksum and passage count,
every dense part's shard files (rows, sha256) and faiss index (vector count), and the recall@k of
an approximate faiss index against exact search over the shards on sample queries. Prints one
JSON report; exits 1 when anything is wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np
import orjson

from retriever.errors import RetrieverError
from retriever.manifest import MANIFEST, check_corpus, read_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

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
    p.add_argument("--no-checksums", action="store_true", help="skip hashing the shard files")


def run(args: argparse.Namespace) -> int:
    report = verify_root(args.index, args.queries, args.k, args.min_recall, not args.no_checksums)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    return 0 if report["ok"] else 1


def verify_root(
    root: str | os.PathLike,
    queries: int = 200,
    k: int = 10,
    min_recall: float = 0.8,
    checksums: bool = True,
) -> dict:
    """The report: ``{"ok": bool, "corpus": {...}, "parts": {name: {...}}, "problems": [...]}``."""
    root = Path(root)
    problems: list[str] = []
    report: dict = {"root": str(root), "corpus": {}, "parts": {}, "problems": problems}
    try:
        store = DocStore.open(root / CORPUS_DIR)
    except RetrieverError as exc:
        problems.append(f"corpus: {exc}")
        report["ok"] = False
        return report
    report["corpus"] = {"num_docs": len(store), "checksum": store.checksum}
    if len(store) != store.manifest.get("num_docs", len(store)):
        problems.append(
            f"corpus: {len(store)} offsets but the manifest says {store.manifest['num_docs']}"
        )
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != CORPUS_DIR):
        if not (sub / MANIFEST).is_file():
            if sub.name.startswith("dense-") or sub.name == "bm25":
                problems.append(f"{sub.name}: no manifest (unfinished build? rerun it)")
            continue
        part: dict = {}
        report["parts"][sub.name] = part
        try:
            manifest = read_manifest(sub)
            part["kind"] = manifest.get("kind")
            check_corpus(manifest, sub, store.manifest)
            part["num_docs"] = manifest.get("num_docs")
            if manifest.get("kind") == "dense":
                problems.extend(
                    _verify_dense(sub, manifest, part, queries, k, min_recall, checksums)
                )
        except RetrieverError as exc:
            problems.append(f"{sub.name}: {exc}")
    report["ok"] = not problems
    return report


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


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
            if checksums and shard.get("sha256") and _sha256(path) != shard["sha256"]:
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
