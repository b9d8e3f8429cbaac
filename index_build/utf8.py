"""Reading on past damaged characters, and telling which page held them.

One damaged character in a dump must cost one page, not every page after it. The XML parser
stops at the first byte that is not UTF-8 and at the first character XML 1.0 does not allow (a
NUL from a zeroed disk block, a stray control byte, U+FFFE, a reference such as ``&#0;``), so
the stream it reads replaces those first with a mark: U+FFFD for bytes that are not UTF-8,
U+FDD0 (a noncharacter, never in real text) for characters XML does not allow. The page whose
text holds a mark is then told apart and skipped.
"""

from __future__ import annotations

import codecs
import io
import re
import threading
import xml.etree.ElementTree as ET
from collections import deque

_counts = threading.local()

NOT_UTF8 = "\ufffd"
NOT_XML = "\ufdd0"

# the control bytes XML does not allow, each mapped to NUL, every other byte to itself
_TO_NUL = bytes(0 if b < 0x20 and b not in (0x9, 0xA, 0xD) else b for b in range(256))
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]+|&#(x[0-9a-fA-F]+|[0-9]+);")


def _replace_and_count(exc: UnicodeDecodeError) -> tuple[str, int]:
    _counts.n = getattr(_counts, "n", 0) + 1
    return NOT_UTF8, exc.end


ERRORS = "index_build.utf8-replace-count"
codecs.register_error(ERRORS, _replace_and_count)


def xml_allows(code: int) -> bool:
    """Whether XML 1.0 allows the character (its ``Char`` production).

    >>> [xml_allows(c) for c in (0, 9, 0x1F, 0x20, 0xFFFE, 0x10FFFF, 0x110000)]
    [False, True, False, True, False, True, False]
    """
    return (
        code in (0x9, 0xA, 0xD)
        or 0x20 <= code <= 0xD7FF
        or 0xE000 <= code <= 0xFFFD
        or 0x10000 <= code <= 0x10FFFF
    )


class CharRepair:
    """A binary stream for the XML parser in which damaged characters become marks.

    Bytes that are not UTF-8 become U+FFFD, runs of characters XML does not allow and
    references to them become U+FDD0; ``take(page)`` then says whether a page held one and
    which. Valid input passes through unchanged (one strict decode and one scan per block).
    """

    def __init__(self, stream):
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(ERRORS)
        self.carry = ""  # a character reference cut at the end of a block
        self.pending = 0  # bytes that were not UTF-8, not yet matched to a page
        self.not_xml: deque[str] = deque()  # what each U+FDD0 not yet matched replaced
        self.replaced = 0

    def read(self, n: int = -1) -> bytes:
        while True:
            data = self.stream.read(n)
            final = not data
            if not final and not self.carry and self.decoder.getstate()[0] == b"":
                if _complete_prefix(data) == len(data):
                    try:
                        text = data.decode("utf-8")
                    except UnicodeDecodeError:
                        text = None
                    if text is not None and not _suspect(data, text):
                        return data  # the common case: valid, whole characters XML allows
            before = getattr(_counts, "n", 0)
            text = self.carry + self.decoder.decode(data, final=final)
            bad = getattr(_counts, "n", 0) - before
            self.pending += bad
            self.replaced += bad
            self.carry = ""
            if not final:
                cut = text.rfind("&", max(0, len(text) - 16))
                if cut >= 0 and ";" not in text[cut:]:
                    text, self.carry = text[:cut], text[cut:]
            out = text.encode("utf-8")
            if _suspect(out, text):
                out = _NOT_XML.sub(self._mark, text).encode("utf-8")
            if out or final:  # never an empty read before the end: expat takes it for EOF
                return out

    def _mark(self, m: re.Match) -> str:
        ref = m.group(1)
        if ref is not None:
            code = int(ref[1:], 16) if ref[0] == "x" else int(ref)
            if xml_allows(code):
                return m.group(0)
            what = m.group(0)
        else:
            run = m.group(0)
            what = f"U+{ord(run[0]):04X}" + (f" (a run of {len(run)})" if len(run) > 1 else "")
        self.not_xml.append(what)
        self.replaced += 1
        return NOT_XML

    def take(self, elem: ET.Element) -> tuple[str, str] | None:
        """``(count kind, reason)`` when the element (a page) holds marks, which are then
        matched to it; ``None`` for an undamaged one."""
        if not self.pending and not self.not_xml:
            return None
        texts = [
            s
            for e in elem.iter()
            for s in (e.text or "", e.tail or "", *e.attrib.values())
            if s and (NOT_UTF8 in s or NOT_XML in s)
        ]
        if not texts:
            return None
        found = []
        n_xml = sum(s.count(NOT_XML) for s in texts)
        if n_xml and self.not_xml:
            found = [self.not_xml.popleft() for _ in range(min(n_xml, len(self.not_xml)))]
        n_utf8 = sum(s.count(NOT_UTF8) for s in texts) if self.pending else 0
        self.pending = max(0, self.pending - n_utf8)
        if found:
            return "invalid_xml_char", f"holds a character XML does not allow: {found[0]}"
        if n_utf8:
            return "invalid_utf8", "holds bytes that are not UTF-8"
        return None


def repair_bytes(data: bytes) -> tuple[bytes, CharRepair]:
    """A whole document (one stream of a multistream dump) with its damaged characters
    marked, and the ``CharRepair`` that tells its pages apart."""
    repair = CharRepair(io.BytesIO(data))
    return b"".join(iter(lambda: repair.read(1 << 20), b"")), repair


def _suspect(data: bytes, text: str) -> bool:
    """Whether a block (and its decoded ``text``) may hold something expat refuses: a control
    byte, U+FFFE or U+FFFF, a character reference (also one cut at the block's end). Byte and
    character searches, no regex: this runs on every block of a clean dump."""
    return (
        b"\x00" in data.translate(_TO_NUL)
        or b"&#" in data
        or data.endswith(b"&")
        or "\ufffe" in text
        or "\uffff" in text
    )


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


Utf8Repair = CharRepair  # the name it had when it repaired bytes that are not UTF-8 only
