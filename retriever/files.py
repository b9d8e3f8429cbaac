"""File plumbing every build stage shares: hashing, and "write ``X.partial``, then swap".

A reader never sees half a file or half a folder: outputs are written under a ``.partial``
name and renamed into place (``os.replace``, atomic on one file system) only when complete.
A failed write removes its ``.partial`` (a full disk gets its space back); the finished
output it would have replaced is untouched.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_write(d / "a.txt") as f:
...     _ = f.write(b"hello")
>>> sorted(p.name for p in d.iterdir()), sha256_file(d / "a.txt")[:12]
(['a.txt'], '2cf24dba5fb0')
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

PARTIAL = ".partial"
_BLOCK = 1 << 22


def sha256_file(path: str | os.PathLike, progress: Callable[[int], None] | None = None) -> str:
    """The hex sha256 of a file, read in 4 MB blocks (``progress(n)`` after each block)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            if progress is not None:
                progress(len(block))
    return h.hexdigest()


def file_table(
    folder: str | os.PathLike,
    skip: tuple[str, ...] = ("manifest.json",),
    only: tuple[str, ...] | None = None,
) -> dict:
    """``{name: {"bytes", "sha256"}}`` of every file under ``folder`` (relative names), or of
    the names in ``only``, for a manifest to record and ``index_build verify`` to check."""
    folder = Path(folder)
    paths = sorted(folder.rglob("*")) if only is None else [folder / name for name in only]
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in paths
        if p.is_file() and p.name not in skip
    }


def partial_path(path: str | os.PathLike, unique: bool = False) -> Path:
    """``X.partial`` (``X.partial-PID`` when several processes may write ``X`` at once)."""
    path = Path(path)
    suffix = PARTIAL + (f"-{os.getpid()}" if unique else "")
    return path.with_name(path.name + suffix)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, unique: bool = False) -> Iterator[Path]:
    """Yield ``X.partial`` for the caller (or a library such as faiss) to write; on success
    it becomes ``X``, on any error (or interrupt) it is removed and ``X`` stays as it was."""
    path = Path(path)
    tmp = partial_path(path, unique)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, unique: bool = False) -> Iterator[BinaryIO]:
    """A binary file opened on ``X.partial``, renamed to ``X`` when the block ends cleanly."""
    with atomic_path(path, unique) as tmp, open(tmp, "wb") as f:
        yield f


def write_bytes_atomic(path: str | os.PathLike, data: bytes, unique: bool = False) -> None:
    with atomic_write(path, unique) as f:
        f.write(data)


def start_partial_dir(final: str | os.PathLike) -> Path:
    """A fresh, empty ``FINAL.partial`` folder (an unfinished one left by a killed run is
    removed first: stages restart from scratch, they never continue half a folder)."""
    partial = partial_path(final)
    if partial.exists():
        log.info("removing unfinished build %s", partial)
        _remove(partial)
    partial.mkdir(parents=True)
    return partial


def publish_dir(partial: str | os.PathLike, final: str | os.PathLike) -> None:
    """Swap a finished ``partial`` folder in as ``final``; a previous ``final`` is moved aside
    first and deleted only after the swap, so a crash leaves either the old or the new one."""
    partial, final = Path(partial), Path(final)
    if final.exists():
        old = final.with_name(final.name + ".old")
        _remove(old)
        os.replace(final, old)
        os.replace(partial, final)
        _remove(old)
    else:
        os.replace(partial, final)


@contextlib.contextmanager
def building_dir(final: str | os.PathLike) -> Iterator[Path]:
    """``start_partial_dir`` + ``publish_dir`` around a block; on error the partial folder is
    removed and ``final`` stays as it was."""
    partial = start_partial_dir(final)
    try:
        yield partial
    except BaseException:
        _remove(partial)
        raise
    publish_dir(partial, final)
