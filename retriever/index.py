"""Open an index root and get its retrievers by name (dispatching on each part's manifest kind).

Usage, over the root ``make demo`` builds::

    idx = Index.open("demo-index")
    idx.search(["who wrote hamlet"], k=3, retriever="bm25")
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from .errors import BadRequestError, ClosedError, IndexFormatError
from .files import interrupted, is_leftover
from .manifest import MANIFEST, check_corpus, read_manifest
from .protocol import Retriever, resolve_k
from .rerank import DEFAULT_DEPTH as DEFAULT_RERANK_DEPTH
from .rerank import Reranker, RerankRetriever, check_depth, parse_spec, split_name
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
        self._rerankers: dict[tuple, Reranker] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, root: str | os.PathLike) -> Index:
        return cls(root)

    def close(self) -> None:
        """Close every retriever this index loaded and its store: their mapped files close now,
        not when the garbage collector runs. Safe twice; loading or searching afterwards raises
        ClosedError (no silent reopen)."""
        with self._lock:
            self._closed = True
            loaded = list({id(r): r for r in self._retrievers.values()}.values())
            self._retrievers.clear()
            self._rerankers.clear()
        for retriever in loaded:  # a hybrid or reranked one has none: its parts are here too
            close = getattr(retriever, "close", None)
            if close is not None:
                close()
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def parts(self) -> dict[str, dict]:
        """Retriever name -> manifest for every finished index part under the root."""
        found = {}
        for sub in sorted(self.root.iterdir()):
            if sub.name == CORPUS_DIR or not (sub / MANIFEST).is_file():
                continue
            if is_leftover(sub.name):  # a build's work folder (X.partial, X.old): never served
                continue
            manifest = read_manifest(sub)
            if manifest.get("kind") in LOADERS:
                found[sub.name] = manifest
        return found

    def names(self) -> list[str]:
        """Names ``retriever(name)`` accepts: every part, plus ``hybrid`` when BM25 and dense exist
        (and ``NAME+rerank`` for each of them, not listed)."""
        names = list(self.parts())
        if self.default_bm25() and self.default_dense():
            names.append("hybrid")
        return names

    def names_of_kind(self, kind: str) -> list[str]:
        """The parts whose manifest says ``kind`` (whatever their folder is called), sorted."""
        return [name for name, m in self.parts().items() if m.get("kind") == kind]

    def default_bm25(self) -> str | None:
        """The BM25 part that ``sparse`` and ``hybrid`` mean: ``bm25`` when that folder is a BM25
        part, else the first BM25 part by name (e.g. a Lucene part in ``bm25-lucene``)."""
        names = self.names_of_kind("bm25")
        return "bm25" if "bm25" in names else (names[0] if names else None)

    def default_dense(self) -> str | None:
        """The dense part that ``dense`` and ``hybrid`` mean: the first by name."""
        names = self.names_of_kind("dense")
        return names[0] if names else None

    def resolve_alias(self, name: str) -> str:
        """rLLM's ``sparse``/``dense`` to the default part of that kind; other names unchanged.

        A part actually called ``dense`` or ``sparse`` keeps its own name.
        """
        if name in ("sparse", "dense") and name not in self.parts():
            part = self.default_bm25() if name == "sparse" else self.default_dense()
            return part or name
        return name

    def retriever(self, name: str = "bm25", **options) -> Retriever:
        """Load (once) and return the retriever called ``name``."""
        with self._lock:
            if self._closed:
                raise ClosedError(f"index {self.root}")
            if name in self._retrievers:
                return self._retrievers[name]
            if split_name(name)[1]:
                retriever = self._load_reranked(name, **options)
            elif name == "hybrid":
                retriever = self._load_hybrid(**options)
            else:
                folder = self.root / name
                if (what := interrupted(folder)) is not None:
                    raise IndexFormatError(what)
                if is_leftover(name) or not (folder / MANIFEST).is_file():
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
        bm25_name = options.pop("bm25", None) or self.default_bm25()
        if bm25_name is None or dense_name is None:
            raise BadRequestError("hybrid needs a bm25 part and a dense part in the index")
        self._lock.release()
        try:
            bm25 = self.retriever(bm25_name)
            dense = self.retriever(dense_name)
        finally:
            self._lock.acquire()
        return HybridRetriever(bm25, dense, **options)

    def _load_reranked(
        self,
        name: str,
        reranker: str | Reranker | None = None,
        rerank_depth: int = DEFAULT_RERANK_DEPTH,
        rerank_device: str | None = None,
        **options,
    ) -> Retriever:
        base_name = split_name(name)[0]
        check_depth(rerank_depth)
        self._lock.release()
        try:
            base = self.retriever(base_name, **options)
            if not isinstance(reranker, Reranker):
                reranker = self.reranker(reranker, device=rerank_device)
        finally:
            self._lock.acquire()
        get = self.store.get
        return RerankRetriever(
            base, reranker, lambda row: get(row).contents, rerank_depth, name=name
        )

    def reranker(
        self, spec: str | None = None, device: str | None = None, batch_size: int = 64
    ) -> Reranker:
        """Load (once per spec) the reranker ``spec`` names (``[KIND:]MODEL``, see
        ``retriever.rerank``); None: the default dense part's encoder as a bi-encoder.

        A dense part's encoder is built from its manifest alone (its vectors are not needed),
        or taken from that part's retriever when it is loaded already."""
        if spec is None:
            spec = self.default_dense()
            if spec is None:
                raise BadRequestError(
                    "rerank without a reranker needs a dense part in the index: pass "
                    "--rerank [KIND:]MODEL (a dense part or a model folder)"
                )
        key = (spec, device)
        with self._lock:
            if key in self._rerankers:
                return self._rerankers[key]
        parsed = parse_spec(spec)
        found: Reranker
        if parsed.model in self.names_of_kind("dense"):
            if parsed.kind == "cross-encoder":
                raise BadRequestError(
                    f"reranker {spec!r}: {parsed.model} is a dense part, which reranks as a "
                    "bi-encoder: drop 'cross-encoder:'"
                )
            found = self._part_reranker(parsed.model, device, batch_size)
        else:
            from .dense.rerankers import load_model_reranker

            if not Path(parsed.model).exists() and parsed.model.startswith("dense-"):
                raise BadRequestError(
                    f"unknown reranker {spec!r}: no dense part {parsed.model!r} in this index "
                    f"(it has {self.names_of_kind('dense') or 'none'}) and no such folder"
                )
            found = load_model_reranker(parsed.kind, parsed.model, device or "cpu", batch_size)
        with self._lock:
            return self._rerankers.setdefault(key, found)

    def _part_reranker(self, part: str, device: str | None, batch_size: int) -> Reranker:
        from .dense.encoders import EncoderConfig, load_encoder
        from .dense.rerankers import BiEncoderReranker

        with self._lock:
            loaded = self._retrievers.get(part)
        encoder = getattr(loaded, "encoder", None)
        if encoder is None:
            manifest = read_manifest(self.root / part, kind="dense")
            config = EncoderConfig.from_dict(manifest["encoder"])
            encoder = load_encoder(config, device or "cpu", "auto", batch_size)
        return BiEncoderReranker(encoder, name=f"bi-encoder:{part}")

    def search(
        self, queries: Sequence[str], k: int | None = None, retriever: str = "bm25"
    ) -> list[list[ScoredPassage]]:
        """Search and fetch the passages of the hits (only those) from the store; ``k`` None
        or 0 is ``DEFAULT_K``, as on the server."""
        k = resolve_k(k)
        return list(self.passages(self.retriever(retriever).search(queries, k)))

    def passages(self, results: Iterable[Sequence[Hit]]) -> Iterator[list[ScoredPassage]]:
        """Hit lists (rows and scores) to scored passages read from the store, one query at a
        time: a server answer of thousands of queries never holds every passage at once."""
        get = self.store.get
        for hits in results:
            yield [ScoredPassage(get(h.row), h.score) for h in hits]
