"""Model answers kept by key in an append-only JSONL file, so a rerun pays for none twice.

One row a answer, ``{"key": KEY, FIELD: VALUE}``; the judge keeps its verdicts and the visit
tool its extractions this way. A line that does not parse (a run killed mid-write) is skipped
with a warning, never an error: the answer is asked for again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def load_answers(
    path: str | os.PathLike, field: str, convert: Callable[[Any], Any], what: str
) -> dict[str, Any]:
    """The answers in ``path`` by key, each ``convert(row[field])``; ``what`` names a row in
    the warning about a line that is not one."""
    answers: dict[str, Any] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                answers[str(row["key"])] = convert(row[field])
            except (ValueError, KeyError, TypeError):
                log.warning("%s: line %d is not %s; skipped", os.fspath(path), n, what)
    return answers


def append_answer(path: str | os.PathLike, key: str, field: str, value: Any) -> None:
    """Add one answer to ``path`` (the caller holds its lock)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"key": key, field: value}, ensure_ascii=False) + "\n")
