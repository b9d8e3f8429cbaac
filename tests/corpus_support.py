"""Helpers for the corpus tests: a multistream dump (with its index) made from a plain one."""

from __future__ import annotations

import bz2
import re
from pathlib import Path


def multistream_dump(raw: bytes, folder: Path, per_stream: int, wiki: str = "xxwiki") -> Path:
    """``{wiki}-pages-articles-multistream.xml.bz2`` and its ``-index.txt.bz2`` in ``folder``
    from a plain dump's bytes (kept byte for byte, invalid UTF-8 included): the header stream,
    then ``per_stream`` pages a stream, then the tail, as Wikimedia cuts them."""
    text = raw.decode("utf-8", "surrogateescape")
    head, rest = text.split("<page>", 1)
    body, tail = ("<page>" + rest).rsplit("</page>", 1)
    pages = [p + "</page>" for p in body.split("</page>") if p.strip()]
    out = folder / f"{wiki}-pages-articles-multistream.xml.bz2"
    index = []
    with open(out, "wb") as f:
        f.write(bz2.compress(head.encode("utf-8", "surrogateescape")))
        for i in range(0, len(pages), per_stream):
            offset = f.tell()
            group = pages[i : i + per_stream]
            for p in group:
                title = re.search(r"<title>(.*?)</title>", p).group(1)
                pid = re.search(r"<id>(\d+)</id>", p).group(1)
                index.append(f"{offset}:{pid}:{title}\n")
            f.write(bz2.compress("\n".join(group).encode("utf-8", "surrogateescape")))
        f.write(bz2.compress(tail.encode("utf-8", "surrogateescape")))
    index_path = folder / f"{wiki}-pages-articles-multistream-index.txt.bz2"
    with bz2.open(index_path, "wt", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(index)
    return out
