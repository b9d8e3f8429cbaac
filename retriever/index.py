"""Open an index root and get its retrievers by name (dispatching on each part's manifest kind).

>>> # idx = Index.open("demo-index"); idx.search(["who wrote hamlet"], k=3, retriever="bm25")
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from .errors import BadRequestError, IndexFormatError
from .manifest import MANIFEST, check_corpus, read_manifest
from .protocol import Retriever
from .store.docstore import CORPUS_DIR, DocStore
from .types import Hit, ScoredPassage

log = logging.getLogger(__name__)

# manifest kind -> "module:function"; the function is load(folder, store, **options) -> Retriever
LOADERS = {
    "bm25": "retriever.bm25.retriever:load",
    "dense": "retriever.dense.retriever:load",
}


class Index:
    """An index root: the corpus store plus every BM25 / dense part found beside it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise IndexFormatError(f"index root {self.root} does not exist")
        self.store = DocStore.open(self.root / CORPUS_DIR)
        self._retrievers: dict[str, Retriever] = {}
        self._lock = threading.Lock()

    @classmethod
    def open(cls, root: str | os.PathLike) -> Index:
        return cls(root)

    def parts(self) -> dict[str, dict]:
        """Retriever name -> manifest for every finished index part under the root."""
        found = {}
        for sub in sorted(self.root.iterdir()):
            if sub.name == CORPUS_DIR or not (sub / MANIFEST).is_file():
                continue
            manifest = read_manifest(sub)
            if manifest.get("kind") in LOADERS:
                found[sub.name] = manifest
        return found

    def names(self) -> list[str]:
        """Names ``retriever(name)`` accepts: every part, plus ``hybrid`` when BM25 and dense exist."""
        names = list(self.parts())
        if "bm25" in names and any(n.startswith("dense-") for n in names):
            names.append("hybrid")
        return names

    def default_dense(self) -> str | None:
        dense = [n for n in self.parts() if n.startswith("dense-")]
        return dense[0] if dense else None

    def retriever(self, name: str = "bm25", **options) -> Retriever:
        """Load (once) and return the retriever called ``name``."""
        with self._lock:
            if name in self._retrievers:
                return self._retrievers[name]
            if name == "hybrid":
                retriever = self._load_hybrid(**options)
            else:
                folder = self.root / name
                if not (folder / MANIFEST).is_file():
                    raise BadRequestError(
                        f"unknown retriever {name!r}; this index has {self.names() or 'none'}"
                    )
                manifest = read_manifest(folder)
                kind = manifest.get("kind")
                if kind not in LOADERS:
                    raise IndexFormatError(f"{folder} has kind {kind!r}, which is not a retriever")
                check_corpus(manifest, folder, self.store.manifest)
                module, func = LOADERS[kind].split(":")
                loader = getattr(importlib.import_module(module), func)
                retriever = loader(folder, self.store, **options)
            self._retrievers[name] = retriever
            return retriever

    def _load_hybrid(self, **options) -> Retriever:
        from .hybrid import HybridRetriever

        dense_name = options.pop("dense", None) or self.default_dense()
        if "bm25" not in self.parts() or dense_name is None:
            raise BadRequestError("hybrid needs a bm25 part and a dense-NAME part in the index")
        self._lock.release()
        try:
            bm25 = self.retriever("bm25")
            dense = self.retriever(dense_name)
        finally:
            self._lock.acquire()
        return HybridRetriever(bm25, dense, **options)

    def search(
        self, queries: Sequence[str], k: int = 10, retriever: str = "bm25"
    ) -> list[list[ScoredPassage]]:
        """Search and fetch the passages of the hits (only those) from the store."""
        return self.passages(self.retriever(retriever).search(queries, k))

    def passages(self, results: Sequence[Sequence[Hit]]) -> list[list[ScoredPassage]]:
        """Hit lists (rows and scores) to scored passages read from the store."""
        get = self.store.get
        return [[ScoredPassage(get(h.row), h.score) for h in hits] for hits in results]
