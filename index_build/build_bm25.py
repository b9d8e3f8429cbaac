"""``python -m index_build bm25``: the BM25 index of a corpus store.

Backends: ``bm25s`` (default; no Java) writes ``ROOT/bm25``; ``pyserini`` builds a Lucene index
into ``ROOT/bm25-lucene`` (or registers an existing pyserini index directory with
``--lucene-index``). Both are kind ``bm25``; ``--name`` picks the folder (= retriever name).
The part is written into ``NAME.partial`` and renamed when complete: an interrupted build never
looks finished, and a rerun starts it afresh.

Passages are indexed as title + text. Tokenizing runs in worker processes over fixed row chunks;
the score matrix is then computed with numpy exactly as bm25s computes it (same formula, same
float32 results), so ``bm25s.BM25.load`` opens the folder as its own.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retriever.bm25.analyzer import STEMMERS, Analyzer
from retriever.manifest import write_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000
METHODS = ("lucene", "robertson", "atire")


@dataclass(frozen=True)
class BM25Config:
    backend: str = "bm25s"
    name: str | None = None  # default: bm25 (bm25s) or bm25-lucene (pyserini)
    analyzer: Analyzer = field(default_factory=Analyzer)
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    workers: int = 0  # 0: one per core
    lucene_index: str | None = None  # register this existing pyserini index instead of building
    threads: int = 0  # Lucene indexing threads (0: one per core)

    @property
    def folder_name(self) -> str:
        return self.name or ("bm25" if self.backend == "bm25s" else "bm25-lucene")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, metavar="ROOT", help="index root holding ROOT/corpus")
    p.add_argument(
        "--backend",
        choices=["bm25s", "pyserini"],
        default="bm25s",
        help="bm25s (default, no Java) or pyserini (Lucene; needs Java 17)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="part folder and retriever name (default: bm25, or bm25-lucene for pyserini)",
    )
    p.add_argument(
        "--lucene-index",
        default=None,
        metavar="DIR",
        help="register an existing pyserini index (e.g. Search-R1's wiki-18) whose docids "
        "are the corpus ids, instead of building one (implies --backend pyserini)",
    )
    p.add_argument(
        "--stemmer",
        choices=STEMMERS,
        default="porter",
        help="porter (default, as Lucene), english (Snowball) or none",
    )
    p.add_argument(
        "--stopwords",
        default="lucene",
        help="lucene (default, 33 words), english (179 words), none, or @FILE (one a line)",
    )
    p.add_argument("--no-lowercase", action="store_true", help="keep case")
    p.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, as pyserini)")
    p.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, as pyserini)")
    p.add_argument("--method", choices=METHODS, default="lucene", help="bm25s scoring variant")
    p.add_argument("--workers", type=int, default=0, help="tokenizing processes (0: one per core)")
    p.add_argument(
        "--threads", type=int, default=0, help="Lucene indexing threads (0: one per core)"
    )


def _stopwords_arg(value: str):
    if value.startswith("@"):
        path = Path(value[1:])
        return [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    return value


def run(args: argparse.Namespace) -> int:
    backend = "pyserini" if args.lucene_index else args.backend
    config = BM25Config(
        backend=backend,
        name=args.name,
        analyzer=Analyzer.create(
            stemmer=args.stemmer,
            stopwords=_stopwords_arg(args.stopwords),
            lowercase=not args.no_lowercase,
        ),
        k1=args.k1,
        b=args.b,
        method=args.method,
        workers=args.workers,
        lucene_index=args.lucene_index,
        threads=args.threads,
    )
    manifest = build_bm25(args.index, config, show_progress=not args.no_progress)
    s = manifest["summary"]
    terms = (
        f"{manifest['vocab_size']} terms, {manifest['num_postings']} postings, "
        if "vocab_size" in manifest
        else ""
    )
    print(
        f"bm25 ({manifest['backend']}): {manifest['num_docs']} passages, {terms}"
        f"{s['mb']:.1f} MB in {s['seconds']:.1f} s ({s['passages_per_s']:.0f} passages/s) -> {s['folder']}"
    )
    return 0


def build_bm25(
    root: str | os.PathLike, config: BM25Config = BM25Config(), show_progress: bool = False
) -> dict:
    """Build (or register) ``root/NAME``; returns its manifest with a ``summary``."""
    start = time.perf_counter()
    root = Path(root)
    store = DocStore.open(root / CORPUS_DIR)
    final = root / config.folder_name
    partial = root / (config.folder_name + ".partial")
    if partial.exists():
        log.info("removing unfinished build %s", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    base = {
        "kind": "bm25",
        "backend": config.backend,
        "num_docs": len(store),
        "corpus_checksum": store.checksum,
        "fields": "title+text",
        "params": {"k1": config.k1, "b": config.b, "method": config.method},
    }
    try:
        if config.backend == "bm25s":
            manifest = {**base, **_build_bm25s(store, partial, config, show_progress)}
        else:
            from retriever.bm25.lucene import build_lucene, register_lucene

            if config.lucene_index:
                extra = register_lucene(store, Path(config.lucene_index))
            else:
                extra = build_lucene(
                    store,
                    partial,
                    config.analyzer,
                    config.threads or os.cpu_count() or 1,
                    show_progress,
                )
            manifest = {**base, **extra}
        write_manifest(partial, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if final.exists():
        old = root / (config.folder_name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    manifest["summary"] = {
        "folder": str(final),
        "seconds": seconds,
        "mb": size / 1e6,
        "passages_per_s": len(store) / max(seconds, 1e-9),
    }
    log.info("bm25 built in %.1f s: %s", seconds, final)
    return manifest


# ---- bm25s backend ----------------------------------------------------------------------------
def _tokenize_chunk(task: tuple[str, int, int, dict]):
    """Worker: (chunk vocab in first-seen order, doc lengths, unique (doc, term, tf) triples).

    Each passage is only split into raw tokens here; possessive, stopword and stemming rules
    (``Analyzer.word_terms``) run once per distinct token of the chunk.
    """
    folder, lo, hi, analyzer_dict = task
    store = DocStore.open(folder)
    analyzer = Analyzer.from_dict(analyzer_dict)
    raw: dict[str, int] = {}
    raw_lengths = np.zeros(hi - lo, dtype=np.int64)
    ids: list[int] = []
    for i, row in enumerate(range(lo, hi)):
        p = store.get(row)
        words = analyzer.words(f"{p.title}\n{p.text}")
        raw_lengths[i] = len(words)
        ids.extend([raw.setdefault(w, len(raw)) for w in words])
    # raw token id -> term id (first-seen order of terms), -1 for stopwords
    vocab: dict[str, int] = {}
    to_term = np.array(
        [
            -1 if t is None else vocab.setdefault(t, len(vocab))
            for t in analyzer.word_terms(list(raw))
        ],
        dtype=np.int64,
    )
    raw_docs = np.repeat(np.arange(hi - lo, dtype=np.int64), raw_lengths)
    term_ids = to_term[np.asarray(ids, dtype=np.int64)] if ids else np.zeros(0, np.int64)
    keep = term_ids >= 0
    term_ids, docs = term_ids[keep], raw_docs[keep]
    lengths = np.bincount(docs, minlength=hi - lo).astype(np.int32)
    v = max(len(vocab), 1)
    keys, tf = np.unique(docs * v + term_ids, return_counts=True)
    return (
        list(vocab),
        lengths,
        (keys // v).astype(np.int32),
        (keys % v).astype(np.int32),
        tf.astype(np.int32),
    )


def _build_bm25s(store: DocStore, folder: Path, config: BM25Config, show_progress: bool) -> dict:
    from retriever.bm25.retriever import save_bm25s

    n = len(store)
    ad = config.analyzer.to_dict()
    tasks = [(str(store.folder), lo, min(lo + CHUNK_ROWS, n), ad) for lo in range(0, n, CHUNK_ROWS)]
    workers = config.workers or os.cpu_count() or 1
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="passage", desc="bm25 tokenize", smoothing=0.1)
    vocab: dict[str, int] = {}
    lengths, pdocs, pterms, ptf = [], [], [], []
    t0 = time.perf_counter()
    # spawn, not fork: the caller may hold threads (a JVM, a server) that fork would copy badly
    use_pool = workers > 1 and len(tasks) > 1
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) if use_pool else _Serial() as pool:
        for (lo, hi), (chunk_vocab, chunk_len, docs, terms, tf) in zip(
            ((t[1], t[2]) for t in tasks), pool.map(_tokenize_chunk, tasks)
        ):
            remap = np.fromiter(
                (vocab.setdefault(t, len(vocab)) for t in chunk_vocab),
                dtype=np.int32,
                count=len(chunk_vocab),
            )
            lengths.append(chunk_len)
            pdocs.append(docs + lo)
            pterms.append(remap[terms])
            ptf.append(tf)
            if bar is not None:
                bar.update(hi - lo)
    if bar is not None:
        bar.close()
    log.info("tokenized %d passages in %.1f s", n, time.perf_counter() - t0)
    t0 = time.perf_counter()

    def joined(parts: list, dtype) -> np.ndarray:
        out = np.concatenate(parts) if parts else np.zeros(0, dtype)
        parts.clear()  # free the pieces as soon as they are joined
        return out

    data, indices, indptr, avgdl = score_matrix(
        joined(lengths, np.int32),
        joined(pdocs, np.int32),
        joined(pterms, np.int32),
        joined(ptf, np.int32),
        len(vocab),
        config.k1,
        config.b,
        config.method,
    )
    params = {"k1": config.k1, "b": config.b, "method": config.method}
    save_bm25s(folder, data, indices, indptr, list(vocab), params, n)
    log.info("scored and saved %d postings in %.1f s", len(data), time.perf_counter() - t0)
    return {
        "analyzer": config.analyzer.to_dict(),
        "vocab_size": len(vocab),
        "num_postings": int(len(data)),
        "avg_doc_len": float(avgdl),
    }


class _Serial:
    """A stand-in for a process pool when one worker is enough."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, items):
        return map(fn, items)


def score_matrix(
    lengths, docs, terms, tf, vocab_size: int, k1: float, b: float, method: str = "lucene"
):
    """The bm25s score matrix (CSC: one column per term, rows ascending) from (doc, term, tf)
    triples sorted by doc; same arithmetic as bm25s's builder. Returns data, indices, indptr,
    average document length."""
    n_docs = len(lengths)
    avgdl = lengths.mean() if n_docs else np.float64(0.0)
    df = np.bincount(terms, minlength=vocab_size).astype(np.float64)
    if method == "lucene":
        idf = np.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    elif method == "robertson":
        idf = np.log(np.maximum((n_docs - df + 0.5) / (df + 0.5), 1.0))
    elif method == "atire":
        idf = np.log(n_docs / np.maximum(df, 1))
    else:
        raise ValueError(f"unknown BM25 method {method!r}: use one of {', '.join(METHODS)}")
    idf = np.where(df > 0, idf, 0).astype(np.float32)
    scores = np.empty(len(terms), dtype=np.float32)
    step = 1 << 22  # bounded float64 temporaries
    for lo in range(0, len(terms), step):
        sl = slice(lo, lo + step)
        tf64 = tf[sl].astype(np.float64)
        dl = lengths[docs[sl]].astype(np.float64)
        norm = k1 * ((1 - b) + b * dl / avgdl)
        if method == "atire":
            tfc = (tf64 * (k1 + 1)) / (tf64 + norm)
        else:
            tfc = tf64 / (norm + tf64)
        scores[sl] = (idf[terms[sl]].astype(np.float64) * tfc).astype(np.float32)
    order = np.argsort(terms, kind="stable")
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=vocab_size), out=indptr[1:])
    return scores[order], docs[order].astype(np.int32, copy=False), indptr, avgdl
