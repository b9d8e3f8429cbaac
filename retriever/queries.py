"""Read search queries from a file: plain text or any QA file layout users have.

- plain text: one query per line (blank lines skipped);
- verl / Search-R1 rows (parquet or JSONL): ``extra_info.question``, else ``question``, else the
  last user message of ``prompt`` (the text after its last ``Question:`` when it has one);
- FlashRAG / ASearcher / HotpotQA JSONL, or a JSON array (HotpotQA's own files): ``question``
  (also ``query``);
- DPR / NQ / TriviaQA TSV: ``question<TAB>answers``, the first column.

>>> question_of({"extra_info": {"question": "who?"}, "question": "x"})
'who?'
>>> question_of({"prompt": [{"role": "user", "content": "Answer it.\\nQuestion: why?\\n"}]})
'why?'
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import sys
from pathlib import Path

import orjson

from .errors import CorpusInputError


def question_of(row: dict) -> str | None:
    """The question of one QA row in any supported layout, or None."""
    extra = row.get("extra_info")
    if isinstance(extra, dict) and isinstance(extra.get("question"), str):
        return extra["question"]
    for key in ("question", "query"):
        if isinstance(row.get(key), str):
            return row[key]
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return _strip_template(prompt)
    if isinstance(prompt, list | tuple):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1].get("content"), str):
            return _strip_template(users[-1]["content"])
    return None


def _strip_template(text: str) -> str:
    if "Question:" in text:
        text = text.rsplit("Question:", 1)[1]
    return text.strip()


def _rows_questions(rows, path: str) -> list[str]:
    out = []
    for i, row in enumerate(rows):
        q = question_of(row) if isinstance(row, dict) else None
        if q is None:
            raise CorpusInputError(
                path,
                f"record {i + 1}",
                "no question found (expected extra_info.question, "
                "question, query or a user message in prompt)",
            )
        out.append(q)
    return out


def read_queries(path: str | os.PathLike) -> list[str]:
    """The queries of ``path`` (``-`` reads plain lines from stdin), in file order."""
    if str(path) == "-":
        return _plain(sys.stdin.read())
    path = Path(path)
    if not path.is_file():
        raise CorpusInputError(str(path), "open", "no such file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return _rows_questions(pq.read_table(path).to_pylist(), str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
        name = name.removesuffix(".gz")
    elif raw[:3] == b"BZh":
        raw = bz2.decompress(raw)
        name = name.removesuffix(".bz2")
    text = raw.decode("utf-8-sig")
    head = text.lstrip()[:1]
    if head == "[" or (name.endswith(".json") and head == "{" and _is_one_json(text)):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CorpusInputError(str(path), "json", str(exc)) from exc
        rows = data if isinstance(data, list) else data.get("data", [data])
        return _rows_questions(rows, str(path))
    if head == "{":
        rows = []
        for n, line in enumerate(io.StringIO(text), 1):
            if not line.strip():
                continue
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise CorpusInputError(str(path), f"line {n}", f"not JSON: {exc}") from exc
        return _rows_questions(rows, str(path))
    if name.endswith(".tsv") or "\t" in text.split("\n", 1)[0]:
        lines = [ln.split("\t", 1)[0].strip() for ln in text.splitlines() if ln.strip()]
        if lines and lines[0].lower() == "question":
            lines = lines[1:]
        return lines
    return _plain(text)


def _plain(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _is_one_json(text: str) -> bool:
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        return False
