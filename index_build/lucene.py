"""Build stage of the Lucene BM25 backend: index a store with pyserini 0.25 (Java 17), or
register a pyserini index a user already has. The search side is ``retriever.bm25.lucene``.

The Lucene index is built in a subprocess (``python -m pyserini.index.lucene``) from JSONL
files of title + text with docid = store row; the JVM of this process only starts to count the
indexed documents.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson

from retriever.bm25.analyzer import Analyzer
from retriever.bm25.lucene import java_class, lucene_analyzer_settings, require_java
from retriever.errors import IndexFormatError, RetrieverError
from retriever.store.docstore import DocStore

log = logging.getLogger(__name__)


def build_lucene(
    store: DocStore, folder: Path, analyzer: Analyzer, threads: int, show_progress: bool = False
) -> dict:
    """Index the store (title + text, docid = row) into ``folder/lucene``; returns manifest keys."""
    settings = lucene_analyzer_settings(analyzer)
    require_java()
    collection = folder / "collection"
    collection.mkdir()
    n = len(store)
    files = max(1, min(threads, n))
    bar = None
    if show_progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="passage", desc="bm25 lucene collection", smoothing=0.1)
    for f in range(files):
        lo, hi = f * n // files, (f + 1) * n // files
        with open(collection / f"part{f:03d}.jsonl", "wb", buffering=1 << 22) as out:
            for row in range(lo, hi):
                p = store.get(row)
                out.write(orjson.dumps({"id": str(row), "contents": f"{p.title}\n{p.text}"}))
                out.write(b"\n")
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    cmd = [
        sys.executable, "-m", "pyserini.index.lucene",
        "-collection", "JsonCollection",
        "-generator", "DefaultLuceneDocumentGenerator",
        "-input", str(collection),
        "-index", str(folder / "lucene"),
        "-threads", str(files),
        "-stemmer", settings["stemmer"],
    ]  # fmt: skip
    if settings["stopwords"] == "none":
        cmd.append("-keepStopwords")
    if not show_progress:
        cmd.append("-quiet")
    env = {**os.environ, "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "unused")}
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env, capture_output=not show_progress, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:] if not show_progress else ""
        raise RetrieverError(f"Lucene indexing failed (exit {proc.returncode}): {tail}")
    shutil.rmtree(collection)
    got = _lucene_num_docs(folder / "lucene")
    if got != n:
        raise IndexFormatError(f"Lucene indexed {got} documents of {n}: see the log above, rebuild")
    return {
        "analyzer": settings,
        "lucene_index": "lucene",
        "docids": "row",
        "lucene_num_docs": got,
    }


def _lucene_num_docs(path: Path) -> int:
    searcher = java_class("io.anserini.search.SimpleSearcher")(str(path))
    try:
        return int(searcher.get_total_num_docs())
    finally:
        searcher.close()


def register_lucene(store: DocStore, path: Path, sample: int = 200) -> dict:
    """Manifest keys for an existing pyserini index whose docids are the store's passage ids.

    Checks the document count and that a spread sample of docids are ids of the store.
    """
    path = path.resolve()
    if not path.is_dir():
        raise IndexFormatError(f"--lucene-index {path} is not a directory")
    searcher = java_class("io.anserini.search.SimpleSearcher")(str(path))
    try:
        n = int(searcher.get_total_num_docs())
        if n != len(store):
            raise IndexFormatError(
                f"the Lucene index {path} has {n} documents but the corpus store has {len(store)}: "
                "build the corpus from the passage file that index was built from"
            )
        step = max(1, n // sample)
        for internal in list(range(0, n, step))[:sample] + [n - 1]:
            docid = searcher.doc(internal).get("id")
            if store.find_id(docid) is None:
                raise IndexFormatError(
                    f"docid {docid!r} of the Lucene index {path} is not a passage id of the corpus "
                    "store: build the corpus from the passage file that index was built from"
                )
    finally:
        searcher.close()
    return {
        "analyzer": {
            "lucene": "DefaultEnglishAnalyzer",
            "stemmer": "porter",
            "stopwords": "lucene",
            "lowercase": True,
        },
        "lucene_index": str(path),
        "docids": "id",
        "lucene_num_docs": n,
    }
