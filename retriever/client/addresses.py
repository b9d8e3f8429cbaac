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
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ..errors import BadRequestError

__all__ = ["address_file", "advertised_host", "read_addresses", "write_address"]


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
    """Write ``Host{ip}_IP{port}.txt`` (atomically) and return its path."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    ip = advertised_host(host)
    path = address_file(folder, ip, port)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{ip}:{port}", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_addresses(folder: str | os.PathLike) -> list[str]:
    """Base URLs of the servers listed in ``folder`` (sorted, without repeats); a
    ``BadRequestError`` when there are none, naming the folder."""
    found: set[str] = set()
    for path in sorted(Path(folder).glob("Host*_IP*.txt")):
        try:
            lines = path.read_text(encoding="utf-8").split()
        except OSError:
            continue  # removed while we listed it: that server is going away
        for line in lines:
            address = line.strip()
            if address:
                found.add(address if "://" in address else f"http://{address}")
    if not found:
        raise BadRequestError(
            f"no server address files (Host*_IP*.txt) in {folder}: start a server with "
            "--save-address-to DIR, or pass its URL"
        )
    return sorted(found)
