"""Reading on past bytes that are not UTF-8, and telling which page held them.

One bad byte in a dump must cost one page, not every page after it: the XML parser stops at the
first invalid byte, so the stream it reads replaces such bytes with U+FFFD first.
"""

from __future__ import annotations

import codecs
import threading
import xml.etree.ElementTree as ET

_counts = threading.local()


def _replace_and_count(exc: UnicodeDecodeError) -> tuple[str, int]:
    _counts.n = getattr(_counts, "n", 0) + 1
    return "\ufffd", exc.end


ERRORS = "index_build.utf8-replace-count"
codecs.register_error(ERRORS, _replace_and_count)


class Utf8Repair:
    """A binary stream whose bytes that are not UTF-8 become U+FFFD, for the XML parser.

    expat stops at the first invalid byte; with this in between it reads on, and the page that
    held the byte is told apart by its U+FFFD while ``pending`` says bytes were replaced.
    Valid input passes through unchanged (one strict decode per block to check it).
    """

    def __init__(self, stream):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(ERRORS)
        self.pending = 0  # replacements not yet matched to a page
        self.replaced = 0

    def read(self, n: int = -1) -> bytes:
        while True:
            data = self.stream.read(n)
            final = not data
            if not final and self.decoder.getstate()[0] == b"":
                cut = _complete_prefix(data)
                if cut == len(data):
                    try:
                        data.decode("utf-8")
                        return data  # the common case: valid, whole characters
                    except UnicodeDecodeError:
                        pass
            before = getattr(_counts, "n", 0)
            out = self.decoder.decode(data, final=final).encode("utf-8")
            bad = getattr(_counts, "n", 0) - before
            self.pending += bad
            self.replaced += bad
            if out or final:  # never an empty read before the end: expat takes it for EOF
                return out

    def take(self, elem: ET.Element) -> bool:
        """True when the element (a page) holds replaced bytes, which are then marked matched."""
        if not self.pending:
            return False
        n = sum(
            (e.text or "").count("\ufffd")
            + (e.tail or "").count("\ufffd")
            + sum(v.count("\ufffd") for v in e.attrib.values())
            for e in elem.iter()
        )
        self.pending = max(0, self.pending - n)
        return n > 0


def _complete_prefix(data: bytes) -> int:
    """Length of ``data`` without a multi-byte character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
    return len(data)
