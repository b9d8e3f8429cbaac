"""``python -m index_build corpus``: input files to the memory-mapped passage store.

The store is written into ``ROOT/corpus.partial`` and renamed to ``ROOT/corpus`` only when
complete, so an interrupted build never looks finished; a rerun starts that folder afresh.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from retriever.cli import add_config_arguments, config_from_args
from retriever.errors import BadRequestError, CorpusInputError
from retriever.files import building_dir, file_table
from retriever.manifest import write_manifest
from retriever.store.docstore import CORPUS_DIR
from retriever.store.titles import clean_title, title_to_url
from retriever.store.writer import STORES, StoreWriter, index_in_place

from .chinese import SCRIPTS
from .chunking import UNITS, Chunker
from .readers import FORMATS, READERS, Counts, Doc, Progress, Redirect, detect_format, read_head
from .siteinfo import SiteInfo

log = logging.getLogger(__name__)
PASSAGE_ONLY = {"dpr-tsv", "parquet"}  # formats whose records are passages, never pages


@dataclass(frozen=True)
class CorpusConfig:
    """How input files become the passage store; ``--kebab-case`` flags are generated from it."""

    format: str = field(
        default="auto", metadata={"help": "input format (auto: detect)", "choices": FORMATS}
    )
    passage_words: int = field(default=100, metadata={"help": "words per passage"})
    passage_stride: int | None = field(
        default=None,
        metadata={"help": "words between word-passage starts (default: no overlap)"},
    )
    passage_unit: str = field(
        default="auto",
        metadata={
            "help": "auto: characters for articles mostly in scripts without spaces "
            "(Chinese, Japanese, Thai), words otherwise",
            "choices": UNITS,
        },
    )
    passage_chars: int | None = field(
        default=None,
        metadata={
            "help": "characters per passage for those scripts (default: 2 per word for CJK, "
            "5 for Thai)"
        },
    )
    chinese_script: str | None = field(
        default=None,
        metadata={
            "help": "convert Chinese text of an XML dump to one script (OpenCC; the lang extra)",
            "choices": SCRIPTS,
        },
    )
    on_error: str = field(
        default="raise",
        metadata={
            "help": "stop at the first bad record, or skip and count it",
            "choices": ("raise", "skip"),
        },
    )
    in_place: str = field(
        default="auto",
        metadata={
            "help": "index a single passage JSONL where it lies instead of copying it "
            "(auto: for Search-R1/FlashRAG/ASearcher passage files)",
            "choices": ("auto", "yes", "no"),
        },
    )
    workers: int = field(
        default=0, metadata={"help": "processes for wikitext parsing (0: one per core)"}
    )
    keep_pages: bool = field(
        default=True,
        metadata={"help": "do not keep full articles for the access tool", "flag": "--no-pages"},
    )
    store: str = field(
        default="jsonl",
        metadata={
            "help": "store layout: jsonl rows, or passages as spans of their pages (each word "
            "once; ',zstd': page text compressed in blocks); inputs without pages keep jsonl",
            "choices": STORES,
        },
    )
    pages: str | None = field(
        default=None,
        metadata={
            "help": "full pages for the access tool from a page JSONL indexed where it lies "
            "(ASearcher's wiki_webpages.jsonl: url, contents), beside a passage file"
        },
    )

    def __post_init__(self):
        if self.passage_words <= 0:
            raise BadRequestError(f"--passage-words must be positive, got {self.passage_words}")
        if self.passage_stride is not None and self.passage_stride <= 0:
            raise BadRequestError(f"--passage-stride must be positive, got {self.passage_stride}")
        if self.passage_chars is not None and self.passage_chars <= 0:
            raise BadRequestError(f"--passage-chars must be positive, got {self.passage_chars}")
        if self.pages and not self.keep_pages:
            raise BadRequestError("--pages and --no-pages contradict each other: give one")
        if self.workers < 0:
            raise BadRequestError(f"--workers must be 0 (one per core) or more, got {self.workers}")
        for name, value, allowed in (
            ("--format", self.format, FORMATS),
            ("--on-error", self.on_error, ("raise", "skip")),
            ("--in-place", self.in_place, ("auto", "yes", "no")),
            ("--store", self.store, STORES),
            ("--passage-unit", self.passage_unit, UNITS),
            ("--chinese-script", self.chinese_script or "simplified", SCRIPTS),
        ):
            if value not in allowed:
                raise BadRequestError(f"{name} {value!r} is not one of {', '.join(allowed)}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input", nargs="+", required=True, metavar="PATH", help="input files or folders"
    )
    p.add_argument(
        "--out", required=True, metavar="ROOT", help="index root to write ROOT/corpus into"
    )
    add_config_arguments(p, CorpusConfig)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(CorpusConfig, args)
    manifest = build_corpus(args.input, args.out, config, show_progress=not args.no_progress)
    print(summary_line(manifest))
    return 0


def summary_line(manifest: dict) -> str:
    """The one line a person reads at the end of the stage."""
    s = manifest["summary"]
    skipped = (
        ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("skipped", {}).items())) or "none"
    )
    return (
        f"corpus: {manifest['num_docs']} passages, {manifest['num_pages']} pages, "
        f"{manifest.get('num_redirects', 0)} redirects from {s['input_mb']:.1f} MB in {s['seconds']:.1f} s "
        f"({s['mb_per_s']:.1f} MB/s, {s['passages_per_s']:.0f} passages/s); skipped: {skipped} -> {s['folder']}"
    )


def _progress_bar(total_bytes: int, enabled: bool):
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="corpus", smoothing=0.1)
    return bar.update, bar.close


def _input_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _can_index_in_place(paths: list[Path], formats: list[str]) -> bool:
    if len(paths) != 1 or formats[0] != "jsonl" or paths[0].suffix in (".gz", ".bz2"):
        return False
    head = read_head(paths[0], 1 << 16).split(b"\n", 1)[0]
    return b'"contents"' in head


def build_corpus(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    config: CorpusConfig = CorpusConfig(),
    show_progress: bool = False,
) -> dict:
    """Build ``out/corpus`` from ``inputs``; returns its manifest (with a ``summary``)."""
    start = time.perf_counter()
    paths = [Path(p) for p in inputs]
    pages = Path(config.pages) if config.pages else None
    for p in paths + ([pages] if pages else []):
        if not p.exists():
            raise CorpusInputError(str(p), "open", "no such file or folder")
    formats = [config.format if config.format != "auto" else detect_format(p) for p in paths]
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / CORPUS_DIR
    total = sum(_input_size(p) for p in paths) + (_input_size(pages) if pages else 0)
    update, close = _progress_bar(total, show_progress)
    progress = Progress(update)
    counts = Counts()
    sources = [{"path": str(p.resolve()), "format": f} for p, f in zip(paths, formats)]
    in_place = config.in_place == "yes" or (
        config.in_place == "auto" and _can_index_in_place(paths, formats)
    )
    if in_place and (len(paths) != 1 or formats[0] != "jsonl"):
        raise CorpusInputError(
            str(paths[0]), "options", "--in-place yes needs exactly one JSONL passage file"
        )
    if in_place and config.store != "jsonl":
        log.warning("--store %s: a passage file indexed in place keeps its JSONL", config.store)
    try:
        with building_dir(final) as partial:
            if in_place:
                manifest = index_in_place(
                    paths[0], partial, "passages", config.on_error, counts, progress.update
                )
                manifest.update(sources=sources, chunking=None, num_pages=0)
                if manifest["num_docs"] == 0:
                    raise CorpusInputError(str(paths[0]), "end", "no passages were read")
            else:
                manifest = _write_store(paths, formats, partial, config, counts, progress)
            if pages is not None:
                manifest.update(
                    index_in_place(
                        pages, partial, "pages", config.on_error, counts, progress.update
                    )
                )
                manifest["sources"].append({"path": str(pages.resolve()), "format": "pages"})
            manifest["skipped"] = dict(counts)
            manifest["files"] = file_table(partial)
            write_manifest(partial, manifest)
    finally:
        close()
    seconds = time.perf_counter() - start
    mb = total / 1e6
    manifest["summary"] = {
        "folder": str(final),
        "seconds": seconds,
        "input_mb": mb,
        "mb_per_s": mb / max(seconds, 1e-9),
        "passages_per_s": manifest["num_docs"] / max(seconds, 1e-9),
    }
    log.info("corpus built in %.1f s: %s", seconds, final)
    return manifest


def _records(path: Path, fmt: str, config: CorpusConfig, counts: Counts, progress: Progress):
    if fmt == "wiki-xml":
        from .wikixml import read_wiki_xml

        return read_wiki_xml(
            path,
            config.on_error,
            counts,
            progress,
            workers=config.workers,
            chinese_script=config.chinese_script,
        )
    if config.chinese_script is not None:
        raise CorpusInputError(str(path), "options", "--chinese-script applies to XML dumps only")
    return READERS[fmt](path, config.on_error, counts, progress)


def _write_store(
    paths, formats, folder: Path, config: CorpusConfig, counts: Counts, progress: Progress
) -> dict:
    with_pages = config.keep_pages and not config.pages
    store = config.store
    if store != "jsonl" and (not with_pages or set(formats) & PASSAGE_ONLY):
        log.warning(
            "--store %s needs full pages; these inputs (%s%s) have none: the store is jsonl",
            store,
            ", ".join(formats),
            "" if with_pages else ", pages not kept",
        )
        store = "jsonl"
    writer = StoreWriter(
        folder,
        with_pages=with_pages,
        with_meta="wiki-xml" in formats,  # sections and links: the XML dump has them
        store=store,
    )
    seq = 0
    chunker = Chunker(
        config.passage_words, config.passage_stride, config.passage_unit, config.passage_chars
    )
    units: Counter = Counter()
    sites: list[dict] = []
    try:
        for path, fmt in zip(paths, formats):
            for rec in _records(path, fmt, config, counts, progress):
                if isinstance(rec, SiteInfo):
                    sites.append(rec.to_manifest())
                    continue
                if isinstance(rec, Redirect):
                    writer.add_redirect(rec.title, rec.target)
                    continue
                doc: Doc = rec
                title = doc.title if doc.keep_title else clean_title(doc.title)
                url = doc.url or title_to_url(title)
                base_id = doc.id if doc.id is not None else str(seq)
                seq += 1
                if writer.with_pages and doc.page:
                    writer.add_page(base_id, title, url, doc.text, doc.meta)
                if doc.split:
                    unit, windows = chunker.split(doc.text)
                    units[unit] += 1
                    for i, window in enumerate(windows):
                        writer.add_passage(f"{base_id}-{i}", title, window, url)
                else:
                    writer.add_passage(base_id, title, doc.text, url)
        if writer.num_passages == 0:
            raise CorpusInputError(", ".join(map(str, paths)), "end", "no passages were read")
        return writer.finish(
            {
                "sources": [
                    {"path": str(p.resolve()), "format": f} for p, f in zip(paths, formats)
                ],
                "chunking": {**chunker.manifest_fields(), "articles": dict(units)},
                "skipped": dict(counts),
                **_language_fields(sites, config),
            }
        )
    except BaseException:
        writer.abort()
        raise


def _language_fields(sites: list[dict], config: CorpusConfig) -> dict:
    """Manifest fields of the dumps' sites: ``language`` (the BM25 default), ``sites``, and
    ``script_conversion`` when Chinese text was converted."""
    out: dict = {}
    if sites:
        out["sites"] = sites
        languages = {s["language"] for s in sites if s["language"]}
        if len(languages) == 1:
            out["language"] = languages.pop()
    if config.chinese_script is not None:
        from .chinese import manifest_fields

        out["script_conversion"] = manifest_fields(config.chinese_script)
    return out
