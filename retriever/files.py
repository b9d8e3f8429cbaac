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
OLD = ".old"
LOCK = ".lock"
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
    removed first: stages restart from scratch, they never continue half a folder). A publish
    of ``final`` that a kill cut between its two renames is finished first (``recover_publish``)."""
    recover_publish(final)
    partial = partial_path(final)
    if partial.exists():
        log.info("removing unfinished build %s", partial)
        _remove(partial)
    partial.mkdir(parents=True)
    return partial


def old_path(final: str | os.PathLike) -> Path:
    """``X.old``: where ``publish_dir`` moves the previous ``X`` during the swap."""
    final = Path(final)
    return final.with_name(final.name + OLD)


def publish_dir(partial: str | os.PathLike, final: str | os.PathLike) -> None:
    """Swap a finished ``partial`` folder in as ``final``; a previous ``final`` is moved aside
    to ``final.old`` first and deleted only after the swap. A kill between the two renames
    leaves ``final.old`` and a finished ``final.partial`` with no ``final``: ``interrupted``
    names that state, ``recover_publish`` (run by the next build) finishes the swap."""
    partial, final = Path(partial), Path(final)
    if final.exists():
        old = old_path(final)
        _remove(old)
        os.replace(final, old)
        _between_renames(partial, final)
        os.replace(partial, final)
        _remove(old)
    else:
        os.replace(partial, final)


def _between_renames(partial: Path, final: Path) -> None:
    """Nothing; tests replace it to stop a publish between its renames, as a kill would."""


def interrupted(final: str | os.PathLike) -> str | None:
    """What an interrupted ``publish_dir`` of ``final`` left, in words, or None: read-only,
    for loaders and ``verify`` (they report it; a build resolves it)."""
    final = Path(final)
    old, partial = old_path(final), partial_path(final)
    if final.exists() or not old.exists():
        return None
    kept = f"{old.name} and {partial.name} are" if partial.exists() else f"{old.name} is"
    return (
        f"{final} is missing and {kept} left beside it: a publish of {final.name} was "
        f"interrupted between its renames; `python -m index_build verify --index "
        f"{final.parent} --repair` (or rerunning the build) finishes it"
    )


def recover_publish(final: str | os.PathLike) -> str | None:
    """Resolve what an interrupted ``publish_dir`` of ``final`` left; returns what was done.

    ``X.old`` beside ``X``: the swap happened, the old copy is deleted. ``X.old`` and
    ``X.partial`` (with its manifest, a build's last write) without ``X``: the swap is
    finished. ``X.old`` alone (or beside a partial folder without a manifest): it is put back. Callers hold the
    root's build lock (``root_lock``), so no build is publishing at the same time.
    """
    final = Path(final)
    old, partial = old_path(final), partial_path(final)
    if not old.exists():
        return None
    if final.exists():
        done = f"removed {old.name}, left by an interrupted publish of {final.name}"
        _remove(old)
    elif (partial / "manifest.json").is_file():  # the manifest is a build's last write
        os.replace(partial, final)
        _remove(old)
        done = f"finished the interrupted publish of {final.name} ({partial.name} -> {final.name})"
    else:
        os.replace(old, final)
        done = f"restored {final.name} from {old.name}, left by an interrupted publish"
    log.warning("%s: %s", final.parent, done)
    return done


def is_leftover(name: str) -> bool:
    """True for the name of a build's work folder (``X.partial``, ``X.partial-PID``, ``X.old``):
    never an index part, whatever it holds."""
    return name.endswith(OLD) or PARTIAL in name


def leftover_parts(root: str | os.PathLike) -> list[Path]:
    """The folders under ``root`` that build work folders (``X.old``, ``X.partial``) are for."""
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and is_leftover(p.name))
    return list(dict.fromkeys(root / n.removesuffix(OLD).split(PARTIAL)[0] for n in names))


def recover_publishes(root: str | os.PathLike) -> list[str]:
    """``recover_publish`` every part of ``root``; what was done (the caller holds its lock)."""
    done = [recover_publish(final) for final in leftover_parts(root)]
    return [d for d in done if d]


@contextlib.contextmanager
def root_lock(root: str | os.PathLike, verb: str) -> Iterator[Path]:
    """Hold ``ROOT/.lock`` (``fcntl.flock``, released by the kernel if the process dies) for a
    build: a second build on the same root fails at once, naming the holder, instead of both
    racing to publish the same parts."""
    import fcntl
    import time

    from .errors import BuildError

    path = Path(root) / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "pid unknown"
            raise BuildError(
                f"another build ({holder}) holds {path}: wait for it to finish, or stop it "
                "and rerun (the lock goes with its process)"
            ) from None
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, verb {verb}, since {since}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock (its content is left: harmless, rewritten by the next)


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
