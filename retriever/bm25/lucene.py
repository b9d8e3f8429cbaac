"""The Lucene BM25 backend (pyserini 0.25 / Anserini, Java 17): the search side.

A part of kind ``bm25`` with ``backend: "pyserini"`` either holds its own Lucene index
(``NAME/lucene``, built from the corpus store with docid = store row) or points at a pyserini
index directory a user already has (Search-R1's wiki-18 BM25 index, docid = corpus passage id).
Hits are mapped onto store rows either way. Building and registering such a part is a build
stage: ``index_build.lucene``.

The JVM starts when a Lucene index is opened, never at import. Only pyserini's Java
bridge is imported (not ``pyserini.search``, which pulls in torch, faiss and transformers).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

from ..cores import default_threads
from ..errors import ClosedError, IndexFormatError, RetrieverError
from ..manifest import read_manifest
from ..protocol import check_search_args
from ..script import script_converter
from ..store.docstore import DocStore
from ..types import Hit
from .analyzer import LUCENE_STOPWORDS, Analyzer

log = logging.getLogger(__name__)

MAX_QUERY_TERMS = 1024  # Lucene's BooleanQuery clause limit
TIE_PAD = 16  # extra hits fetched so that ties at rank k are broken by row, not Lucene docid
_WORD = re.compile(r"\w+")


def java_available() -> str | None:
    """Path of the ``java`` the JVM bridge will use, or None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def require_java() -> None:
    if java_available() is None:
        raise RetrieverError(
            "the pyserini (Lucene) backend needs Java 17: install it (`make setup` does, or "
            "`apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME; the default bm25s "
            "backend needs no Java"
        )


def java_class(name: str):
    """A Java class through pyserini's classpath (starts the JVM on first use)."""
    require_java()
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # pyserini 0.25 reads it at import
    try:
        from pyserini.pyclass import autoclass
    except ImportError as exc:
        raise RetrieverError(
            f"the pyserini backend needs the `lucene` extra (pip install '.[lucene]'): {exc}"
        ) from exc
    return autoclass(name)


def lucene_analyzer_settings(analyzer: Analyzer) -> dict:
    """The pyserini analyzer matching ``analyzer``; refuses what Lucene cannot reproduce."""
    if analyzer.stemmer not in ("porter", None):
        raise RetrieverError(
            f"the pyserini backend stems with porter or not at all, not {analyzer.stemmer!r}: "
            "use --stemmer porter or --stemmer none"
        )
    if analyzer.stopwords not in (LUCENE_STOPWORDS, ()):
        raise RetrieverError(
            "the pyserini backend removes Lucene's stopwords or none: use --stopwords lucene or none"
        )
    if not analyzer.lowercase:
        raise RetrieverError("the pyserini backend always lowercases: drop --no-lowercase")
    if analyzer.segmenter != "standard":
        raise RetrieverError(
            f"the pyserini backend cannot segment with {analyzer.segmenter!r}: use the bm25s "
            "backend for Chinese, Japanese, Korean and Thai (or --segmenter standard)"
        )
    settings = {
        "lucene": "DefaultEnglishAnalyzer",
        "stemmer": analyzer.stemmer or "none",
        "stopwords": "lucene" if analyzer.stopwords else "none",
        "lowercase": True,
    }
    if analyzer.script is not None:  # queries are converted to the corpus's Chinese script
        settings["script"] = analyzer.script
    return settings


def _java_analyzer(settings: dict):
    jana = java_class("io.anserini.analysis.DefaultEnglishAnalyzer")
    empty = java_class("org.apache.lucene.analysis.CharArraySet").EMPTY_SET
    stem = settings.get("stemmer", "porter")
    stop = settings.get("stopwords", "lucene") != "none"
    if stem != "none":
        return jana.newStemmingInstance(stem) if stop else jana.newStemmingInstance(stem, empty)
    return jana.newNonStemmingInstance() if stop else jana.newNonStemmingInstance(empty)


# ---- search -----------------------------------------------------------------------------------
def clip_query(query: str, max_terms: int = MAX_QUERY_TERMS) -> str:
    """``query`` cut after its ``max_terms``-th distinct word, so Lucene never sees more clauses.

    >>> clip_query("a b a c d", 2)
    'a b a'
    """
    seen: set[str] = set()
    for m in _WORD.finditer(query):
        w = m.group().lower()
        if w not in seen:
            if len(seen) == max_terms:
                return query[: m.start()].rstrip()
            seen.add(w)
    return query


class LuceneRetriever:
    """Lucene BM25 over a pyserini index; hits mapped onto corpus store rows, ties by row."""

    def __init__(
        self,
        folder: str | os.PathLike,
        store: DocStore,
        manifest: dict | None = None,
        name: str | None = None,
        threads: int | None = None,
        **_ignored,
    ):
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_manifest(folder, kind="bm25")
        self.name = name or self.folder.name
        if store is None:
            raise IndexFormatError("a Lucene bm25 part needs the corpus store to map its docids")
        self.store = store
        path = Path(self.manifest["lucene_index"])
        self.path = path if path.is_absolute() else self.folder / path
        if not self.path.is_dir():
            raise IndexFormatError(
                f"{self.folder}: Lucene index {self.path} is missing; rebuild it"
            )
        self.by_row = self.manifest.get("docids") == "row"
        self.threads = max(1, int(threads or default_threads()))
        self._searcher = java_class("io.anserini.search.SimpleSearcher")(str(self.path))
        params = self.manifest.get("params", {})
        self._searcher.set_bm25(float(params.get("k1", 0.9)), float(params.get("b", 0.4)))
        settings = self.manifest.get("analyzer", {})
        if settings.get("stemmer", "porter") != "porter" or settings.get("stopwords") == "none":
            self._searcher.set_analyzer(_java_analyzer(settings))
        script = settings.get("script")
        self._convert = script_converter(script) if script else None
        self._arraylist = java_class("java.util.ArrayList")
        self.num_docs = int(self._searcher.get_total_num_docs())
        self._lock = threading.Lock()

    def _row(self, docid: str) -> int | None:
        if self.by_row:
            return int(docid)
        return self.store.find_id(docid)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        queries, k = check_search_args(queries, k, self.num_docs)
        if self._convert is not None:
            queries = [self._convert(q) for q in queries]
        results: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if k > 0 and _WORD.search(q)]
        if not todo:
            return results
        jq, jid = self._arraylist(), self._arraylist()
        for i in todo:
            jq.add(clip_query(queries[i]))
            jid.add(str(i))
        with self._lock:
            if self._searcher is None:
                raise ClosedError(f"Lucene retriever {self.name!r} ({self.path})")
            out = self._searcher.batch_search(jq, jid, k + TIE_PAD, min(self.threads, len(todo)))
            raw = {
                e.getKey(): [(h.docid, h.score) for h in e.getValue()]
                for e in out.entrySet().toArray()
            }
        for qid, hits in raw.items():
            mapped = []
            for docid, score in hits:
                row = self._row(docid)
                if row is None:
                    log.warning(
                        "%s: docid %r is not in the corpus store; skipped", self.name, docid
                    )
                    continue
                mapped.append(Hit(row, float(score)))
            mapped.sort(key=lambda h: (-h.score, h.row))
            results[int(qid)] = mapped[:k]
        return results

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None
