"""Self-describing index folders: read, write (atomically) and check ``manifest.json``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .errors import IndexFormatError, ManifestMismatchError
from .files import write_bytes_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# a corpus in the ``spans`` layout: code that reads only version 1 refuses it (asks to rebuild);
# 3: zstd blocks may need the store's trained dictionary (``store.dictionary``); 4: zstd blocks
# end at passage ends (``store.block_starts``: code before it would read the wrong bytes); 2, 3
# still open
SPANS_FORMAT_VERSION = 4
READABLE_VERSIONS = (FORMAT_VERSION, 2, 3, SPANS_FORMAT_VERSION)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` through ``path.partial-PID`` and ``os.replace``: never half a
    file, also with several processes writing it."""
    data = orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    write_bytes_atomic(path, data, unique=True)


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    if "kind" not in manifest:
        raise IndexFormatError("a manifest needs a 'kind'")
    write_json_atomic(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike, kind: str | None = None) -> dict:
    """Read ``folder/manifest.json``; check its kind and format version."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise IndexFormatError(
            f"{folder} has no {MANIFEST}: it is not an index part, or its build did not finish "
            "(rerun the build command)"
        )
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise IndexFormatError(f"{path} is not valid JSON: {exc}") from exc
    if kind is not None and manifest.get("kind") != kind:
        raise IndexFormatError(f"{folder} holds kind {manifest.get('kind')!r}, expected {kind!r}")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(
            f"{path} has format_version {version!r}; this code reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}: rebuild it"
        )
    return manifest


def check_corpus(part: dict, part_folder: str | os.PathLike, corpus: dict) -> None:
    """Refuse an index part built against another corpus, naming both checksums."""
    want = corpus.get("checksum")
    have = part.get("corpus_checksum")
    if have != want:
        raise ManifestMismatchError(
            f"{part_folder} was built against corpus {have} but the corpus here is {want} "
            f"({corpus.get('num_docs')} passages): rebuild {Path(part_folder).name} for this corpus"
        )
    if part.get("num_docs") is not None and part["num_docs"] != corpus.get("num_docs"):
        raise ManifestMismatchError(
            f"{part_folder} indexes {part['num_docs']} passages but the corpus has "
            f"{corpus.get('num_docs')}: rebuild {Path(part_folder).name}"
        )
