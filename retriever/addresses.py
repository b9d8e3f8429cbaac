"""ASearcher's server discovery: a directory of ``Host{ip}_IP{port}.txt`` files, each holding
``ip:port``. ASearcher's trainers read ``$RAG_SERVER_ADDR_DIR`` this way; the server writes its
file with ``--save-address-to DIR`` and the HTTP client reads the directory too.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> path = write_address(d, "10.0.0.7", 8000)
>>> path.name, path.read_text()
('Host10.0.0.7_IP8000.txt', '10.0.0.7:8000')
>>> read_addresses(d)
['http://10.0.0.7:8000']

The folder is shared (many servers, many trainers, maybe many users): the file is written
through a fresh exclusive temporary name and renamed, so a link planted there is never
followed; a file that cannot be read as addresses (not UTF-8, a stray line, a FIFO, a folder)
is skipped with a warning instead of breaking discovery of every other server.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from .errors import BadRequestError

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 4096  # an address file holds one line; a larger one is not ours

__all__ = ["address_file", "advertised_host", "check_folder", "read_addresses", "write_address"]


def address_file(folder: str | os.PathLike, ip: str, port: int) -> Path:
    return Path(folder) / f"Host{ip}_IP{port}.txt"


def advertised_host(host: str) -> str:
    """The address other machines reach a server bound to ``host`` at: its own address, or
    this machine's when it binds every interface (as ASearcher's server reports itself)."""
    if host in ("0.0.0.0", "::", ""):
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"
    return host


def write_address(folder: str | os.PathLike, host: str, port: int) -> Path:
    """Write ``Host{ip}_IP{port}.txt`` (atomically) and return its path.

    The temporary file is created exclusively under a random name (``mkstemp``: never through
    an existing name or link) and renamed over the final name (a link there is replaced, not
    followed)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    ip = advertised_host(host)
    path = address_file(folder, ip, port)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)  # trainers of other users read it, as ASearcher's
            f.write(f"{ip}:{port}")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_folder(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and a file in it (removed at once): an ``OSError`` now,
    at the server's start, rather than once its index is loaded."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".probe.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(probe)


def _address(line: str) -> str | None:
    """``http://host:port`` for ``host:port`` or a URL, None when ``line`` is neither.

    >>> _address("10.0.0.7:8000"), _address("https://a.example/x"), _address("10.0.0.7:99999")
    ('http://10.0.0.7:8000', 'https://a.example/x', None)
    """
    url = line if "://" in line else f"http://{line}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in line:
        return None
    if "://" not in line and port is None:
        return None
    return url


def _read_small_file(path: Path) -> str:
    """The text of a regular file of at most ``MAX_FILE_BYTES``; opened without blocking (a
    FIFO would block an open for reading until a writer came) and checked after opening."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{info.st_size} bytes, more than an address file holds")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    return data.decode("utf-8")


def read_addresses(folder: str | os.PathLike) -> list[str]:
    """Base URLs of the servers listed in ``folder`` (sorted, without repeats); a
    ``BadRequestError`` when there are none, naming the folder."""
    found: set[str] = set()
    for path in sorted(Path(folder).glob("Host*_IP*.txt")):
        try:
            text = _read_small_file(path)
        except FileNotFoundError:
            continue  # removed while we listed it: that server is going away
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            log.warning("skipped server address file %s: %s", path, exc)
            continue
        for line in filter(None, (line.strip() for line in text.splitlines())):
            address = _address(line)
            if address is None:
                log.warning("skipped %r in server address file %s: not host:port", line, path)
            else:
                found.add(address)
    if not found:
        raise BadRequestError(
            f"no server address files (Host*_IP*.txt) in {folder}: start a server with "
            "--save-address-to DIR, or pass its URL"
        )
    return sorted(found)
