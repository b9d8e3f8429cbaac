"""The trajectory table: one row per episode record (the few columns the viewer sorts, filters
and shows, taken from whatever JSON ``env.evaluate`` or a hand-edited file wrote), and the
``Query`` a page asks for rows with.

Any JSON object gives a row: a field of an unexpected type is shown as text or counted as
missing, so one odd record never takes a file's pages down.

>>> row = summarize({"dataset": "nq", "question": "q?", "answers": ["a"], "prediction": "b",
...                  "rewards": {"em": 0.0, "f1": 0.5}, "counts": {"search": 2}, "num_turns": 3})
>>> row["failed"], row["searches"], row["accesses"], row["f1"]
(True, 2, 0, 0.5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from ...errors import BadRequestError

NUMERIC = ("em", "cover_em", "f1", "format", "turns", "searches", "accesses", "invalid")
SORT_KEYS = ("line", "dataset", "question", *NUMERIC)
MAX_OFFSET = 2**53  # the largest integer JavaScript (the page) keeps exact
MAX_PAGE = 500
TEXT_CHARS = 1000  # a table cell (and the question filter) sees this much of a text field
MAX_ANSWERS = 20


def _number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return float("nan")


def _count(value: object) -> int:
    """A tool count as an int; null, a string or a number no count reaches (NaN, 1e300)
    counts 0."""
    number = _number(value)
    return int(number) if math.isfinite(number) and abs(number) < MAX_OFFSET else 0


def _text(value: object) -> str:
    """Any JSON value as a table cell: strings as they are, the rest as compact JSON, cut to
    ``TEXT_CHARS`` (a record may hold a megabyte or 300 nested lists where a string belongs)."""
    if value is None:
        text = ""
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # nested deeper than orjson writes
            text = f"<{type(value).__name__}>"
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "\u2026"


def summarize(rec: dict) -> dict:
    """The table row of one episode record (what ``env.evaluate`` writes per line).

    ``failed`` means not an exact match: no answer, a wrong one, or a policy error. Fields of
    an unexpected type are shown as text or counted as missing, never raised on: one odd record
    must not take the file's pages down."""
    rewards = rec.get("rewards") if isinstance(rec.get("rewards"), dict) else {}
    counts = rec.get("counts") if isinstance(rec.get("counts"), dict) else {}
    turns = rec.get("num_turns")
    if not isinstance(turns, int) or isinstance(turns, bool):
        turns = len(rec["turns"]) if isinstance(rec.get("turns"), list) else 0
    em = _number(rewards.get("em"))
    answers = rec.get("answers")
    answers = answers[:MAX_ANSWERS] if isinstance(answers, list) else []
    sample = rec.get("sample")
    return {
        "dataset": _text(rec.get("dataset")),
        "question": _text(rec.get("question")),
        "answers": [_text(a) for a in answers],
        "prediction": None if rec.get("prediction") is None else _text(rec["prediction"]),
        "em": em,
        "cover_em": _number(rewards.get("cover_em")),
        "f1": _number(rewards.get("f1")),
        "format": _number(rewards.get("format")),
        "turns": turns,
        "searches": _count(counts.get("search")),
        "accesses": _count(counts.get("access")),
        "invalid": _count(counts.get("invalid")),
        "truncated": bool(rec.get("truncated")),
        "policy_error": None if rec.get("policy_error") is None else _text(rec["policy_error"]),
        "task_id": None if rec.get("task_id") is None else _text(rec["task_id"]),
        "sample": sample if isinstance(sample, int) or sample is None else _text(sample),
        "failed": not em >= 1.0 or rec.get("policy_error") is not None,
    }


@dataclass(frozen=True)
class Query:
    """One table request: sort key and direction, filters, and the page window."""

    sort: str = "line"
    descending: bool = False
    failed_only: bool = False
    dataset: str | None = None
    text: str | None = None
    offset: int = 0
    limit: int = 50

    def __post_init__(self):
        if self.sort not in SORT_KEYS:
            raise BadRequestError(f"sort must be one of {', '.join(SORT_KEYS)}; got {self.sort!r}")
        if not 0 <= self.offset < MAX_OFFSET:
            raise BadRequestError(f"offset must be >= 0 and < 2**53, got {self.offset}")
        if not 1 <= self.limit <= MAX_PAGE:
            raise BadRequestError(f"limit must be between 1 and {MAX_PAGE}, got {self.limit}")
