"""``python -m index_build bm25``: the BM25 index of a corpus store.

Backends: ``bm25s`` (default; no Java) writes ``ROOT/bm25``; ``pyserini`` builds a Lucene index
into ``ROOT/bm25-lucene`` (or registers an existing pyserini index directory with
``--lucene-index``). Both are kind ``bm25``; ``--name`` picks the folder (= retriever name).
The part is written into ``NAME.partial`` and renamed when complete: an interrupted build never
looks finished, and a rerun starts it afresh.

Passages are indexed as title + text. The bm25s backend tokenizes in worker processes, spills
sorted postings to disk and merges them (``bm25_postings``: memory does not grow with the
corpus), scoring with ``retriever.bm25.formula`` exactly as bm25s does, so ``bm25s.BM25.load``
opens the folder as its own; term and row-range maxima for pruned search are written beside
it. The Lucene build is ``index_build.lucene``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from retriever.bm25.analyzer import LANGUAGES, SEGMENTERS, STEMMERS, STOPWORD_LISTS, Analyzer
from retriever.bm25.formula import METHODS
from retriever.files import file_table, publish_dir, start_partial_dir
from retriever.manifest import read_manifest, write_manifest
from retriever.store.docstore import CORPUS_DIR, DocStore

log = logging.getLogger(__name__)

FORMATS = ("float", "compact")


@dataclass(frozen=True)
class BM25Config:
    backend: str = "bm25s"
    name: str | None = None  # default: bm25 (bm25s) or bm25-lucene (pyserini)
    analyzer: Analyzer | None = None  # None: the corpus language's (Analyzer.for_language)
    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    workers: int = 0  # 0: one per core
    lucene_index: str | None = None  # register this existing pyserini index instead of building
    threads: int = 0  # Lucene indexing threads (0: one per core)
    format: str = "float"  # bm25s: "float" (bm25s's own files) or "compact" (compact-v3)

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
        "--language",
        default="auto",
        help="analyzer language: auto (default: the corpus's, from the dump's <siteinfo>; "
        f"else English), or one of {', '.join(sorted(LANGUAGES))}",
    )
    p.add_argument(
        "--stemmer",
        choices=STEMMERS,
        default=None,
        help="override the language's stemmer: porter (English default, as Lucene), "
        "a Snowball stemmer (english, german, ...) or none",
    )
    p.add_argument(
        "--stopwords",
        type=_stopwords_arg,
        default=None,
        metavar="LIST",
        help="override the language's stopwords: lucene (English default, 33 words), english "
        "(bm25s's 179 words), none, a language's list ("
        + ", ".join(STOPWORD_LISTS[3:])
        + "), or @FILE (one word a line)",
    )
    p.add_argument(
        "--segmenter",
        choices=SEGMENTERS,
        default=None,
        help="override how CJK/Thai text is cut: bigram (default for zh/ja/ko/th), jieba "
        "(Chinese words; the lang extra), standard (one term per CJK character)",
    )
    p.add_argument("--no-lowercase", action="store_true", help="keep case")
    p.add_argument("--k1", type=float, default=0.9, help="BM25 k1 (default 0.9, as pyserini)")
    p.add_argument("--b", type=float, default=0.4, help="BM25 b (default 0.4, as pyserini)")
    p.add_argument("--method", choices=METHODS, default="lucene", help="bm25s scoring variant")
    p.add_argument("--workers", type=int, default=0, help="tokenizing processes (0: one per core)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="float",
        help="bm25s posting format: float (default; bm25s's score matrix, opens in bm25s) or "
        "compact (compact-v3: bit-packed row gaps and term frequencies, scores computed at "
        "search time, the same hits and scores; retriever.bm25.compact)",
    )
    p.add_argument(
        "--threads", type=int, default=0, help="Lucene indexing threads (0: one per core)"
    )


def _stopwords_arg(value: str) -> str | list[str]:
    """A list name of ``STOPWORD_LISTS`` or the words of ``@FILE``, checked when parsed."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read stopword file {path}: {exc}") from exc
        return [w.strip() for w in text.splitlines() if w.strip()]
    if value not in STOPWORD_LISTS:
        raise argparse.ArgumentTypeError(
            f"unknown stopword list {value!r}: use one of {', '.join(STOPWORD_LISTS)}, "
            "or @FILE (one word a line)"
        )
    return value


def analyzer_from_args(args: argparse.Namespace) -> Analyzer:
    """The analyzer of ``--language`` (auto: the corpus manifest's ``language``) and overrides."""
    language = args.language
    if language == "auto":
        language = read_manifest(Path(args.index) / CORPUS_DIR).get("language")
    analyzer = Analyzer.for_language(
        language,
        stemmer=args.stemmer,
        stopwords=args.stopwords,
        segmenter=args.segmenter,
        lowercase=not args.no_lowercase,
    )
    code = (language or "en").lower().replace("_", "-")
    if code not in LANGUAGES and code.split("-")[0] not in LANGUAGES:
        log.warning(
            "no stemmer or stopwords for language %r: terms are lower-cased words", language
        )
    log.info("bm25 analyzer for language %s: %s", language or "en", analyzer.to_dict())
    return analyzer


def run(args: argparse.Namespace) -> int:
    backend = "pyserini" if args.lucene_index else args.backend
    config = BM25Config(
        backend=backend,
        name=args.name,
        analyzer=analyzer_from_args(args),
        k1=args.k1,
        b=args.b,
        method=args.method,
        workers=args.workers,
        lucene_index=args.lucene_index,
        threads=args.threads,
        format=args.format,
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
    if config.format not in FORMATS:
        raise ValueError(f"unknown bm25 format {config.format!r}: use one of {', '.join(FORMATS)}")
    if config.analyzer is None:
        config = replace(config, analyzer=Analyzer.for_language(store.manifest.get("language")))
    script = (store.manifest.get("script_conversion") or {}).get("to")
    if script and config.analyzer.script is None:
        # the passages are in one script: queries get converted to it (analyzer.terms)
        config = replace(config, analyzer=replace(config.analyzer, script=script))
    final = root / config.folder_name
    partial = start_partial_dir(final)
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
            from retriever.bm25 import compact, rowmax, termmax

            from .bm25_postings import build_postings

            extra = build_postings(
                store,
                partial,
                config.analyzer,
                base["params"],
                config.workers or os.cpu_count() or 1,
                show_progress,
                compact.LAYOUT if config.format == "compact" else termmax.LAYOUT,
            )
            if config.format != "compact":  # the compact build writes them as it merges
                # range maxima for the default pruned search (``retriever.bm25.bmp``)
                extra["postings"]["row_ranges"] = rowmax.write(partial, len(store))
            manifest = {**base, **extra}
        else:
            from .lucene import build_lucene, register_lucene

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
        manifest["files"] = file_table(partial)  # checked by index_build verify
        write_manifest(partial, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish_dir(partial, final)
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
