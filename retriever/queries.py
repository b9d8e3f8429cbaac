"""The one reader of QA rows and QA files, for ``retriever.search --queries`` and the env's tasks.

Both used to read files their own way and disagreed; now a row's question and answers, and a
file's rows, have one rule each:

- question: ``question``, else ``query``, else ``extra_info.question`` (verl keeps a copy there),
  else the last user message of ``prompt`` (the text after its last ``Question:``);
- answers: ``golden_answers`` (FlashRAG), ``reward_model.ground_truth`` (verl / Search-R1: a
  string, a list or ``{"target": [...]}``), ``answer``, ``answers``, ``aug_answer`` (ASearcher),
  ``extra_info.answer``; duplicates dropped, order kept. Each value is decoded by
  ``decode_answers``, the one ground-truth decoder (the trainer glue in ``env`` uses it too);
- files: JSONL, a JSON array (HotpotQA) or object with ``data``, Parquet, DPR / NQ / TriviaQA TSV
  (``question<TAB>answers``: the answers are the LAST column, a Python list literal; the question
  is every column before it; a ``question`` header line is skipped), plain text (one question a
  line); ``.gz`` / ``.bz2`` compressed; ``-`` reads plain lines from stdin.

>>> question_of({"question": "A?", "extra_info": {"question": "B?"}})
'A?'
>>> question_of({"prompt": [{"role": "user", "content": "Answer it.\\nQuestion: why?\\n"}]})
'why?'
>>> answers_of({"reward_model": {"ground_truth": {"target": ["x", "y"]}}, "answer": "x"})
['x', 'y']
>>> parse_dpr_line('who?\\t"[\\'x\\', ""y \\'s""]"')
('who?', ['x', "y 's"])
"""

from __future__ import annotations

import ast
import bz2
import gzip
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from .errors import CorpusInputError

log = logging.getLogger(__name__)

QUESTION_KEYS = "question, query, extra_info.question or a user message in prompt"
ANSWER_KEYS = (
    "golden_answers, reward_model.ground_truth, answer, answers, aug_answer, extra_info.answer"
)


def _extra(row: dict) -> dict:
    extra = row.get("extra_info")
    return extra if isinstance(extra, dict) else {}


def _strip_template(text: str) -> str:
    if "Question:" in text:
        text = text.rsplit("Question:", 1)[1]
    return text.strip()


def question_of(row: dict) -> str | None:
    """The question of one QA row in any supported layout, or None."""
    for value in (row.get("question"), row.get("query"), _extra(row).get("question")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return _strip_template(prompt) or None
    if isinstance(prompt, list | tuple):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        if users and isinstance(users[-1].get("content"), str):
            return _strip_template(users[-1]["content"]) or None
    return None


# keys of a ground-truth dict, first present wins: Search-R1's target, SQuAD's {"text": [...],
# "answer_start": [...]}, TriviaQA's {"aliases": [...], "value": ...}, and the row keys
ANSWER_DICT_KEYS = (
    "target",
    "answers",
    "answer",
    "golden_answers",
    "ground_truth",
    "text",
    "aliases",
    "value",
)


def decode_answers(value: object) -> list[str]:
    """The answers in one ground-truth value, of every shape QA files and trainers store: a
    string, a number, a list / tuple / numpy array (parquet rows; nested lists and object
    arrays of lists are flattened), or a dict (``ANSWER_DICT_KEYS``). Stripped, empty ones and
    NaN dropped, duplicates dropped in order; [] when there is none (the caller names the row).

    >>> decode_answers({"target": ["a", ["b"]]}), decode_answers({"text": ["x"], "answer_start": [0]})
    (['a', 'b'], ['x'])
    """
    out: list[str] = []
    stack = [value]  # a stack, not recursion: JSON nests deeper than Python's recursion limit
    while stack:
        value = stack.pop()
        if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays, scalars
            value = value.tolist()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, bytes):
            out.append(value.decode("utf-8", "replace"))
        elif isinstance(value, bool | int) or (isinstance(value, float) and value == value):
            out.append(str(value))
        elif isinstance(value, dict):
            key = next((k for k in ANSWER_DICT_KEYS if value.get(k) is not None), None)
            if key is not None:
                stack.append(value[key])
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
    return list(dict.fromkeys(a for a in (a.strip() for a in out) if a))


def answers_of(row: dict) -> list[str]:
    """The accepted answers (aliases) of one QA row, from every answer key, deduplicated in
    order; [] when none."""
    reward_model = row.get("reward_model") if isinstance(row.get("reward_model"), dict) else {}
    answers: list[str] = []
    for value in (
        row.get("golden_answers"),
        reward_model.get("ground_truth"),
        row.get("answer"),
        row.get("answers"),
        row.get("aug_answer"),
        _extra(row).get("answer"),
    ):
        answers.extend(decode_answers(value))
    return list(dict.fromkeys(answers))


def _titles(value: object) -> list[str]:
    """Titles of HotpotQA / 2Wiki ``supporting_facts`` (``[[title, sentence], ...]`` or the HF
    ``{"title": [...], "sent_id": [...]}``), MuSiQue ``paragraphs`` (``is_supporting``) or a
    plain list of titles."""
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays (parquet rows)
        value = value.tolist()
    if isinstance(value, dict):
        value = value.get("title", [])
        value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list | tuple):
        return []
    out = []
    for item in value:
        item = item.tolist() if hasattr(item, "tolist") else item
        if isinstance(item, list | tuple) and item:
            item = item[0]
        elif isinstance(item, dict):
            item = item.get("title") if item.get("is_supporting", True) else None
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
    return out


def title_key(title: object) -> str:
    """A title as compared with gold titles (``gold_evidence_of``): case folded, underscores
    as spaces, runs of spaces as one. The one key for "is this passage gold" (the env's
    evidence rewards and its drop-gold noise both use it).

    >>> title_key(" University_of  Kansas ") == title_key("university of kansas")
    True
    """
    return " ".join(str(title or "").replace("_", " ").split()).casefold()


def gold_evidence_of(row: dict) -> tuple[list[str], list[str]]:
    """(supporting titles, supporting passage ids) of a QA row, deduplicated in order; empty
    when the row has none. Read from ``supporting_titles`` / ``supporting_ids``, HotpotQA's and
    2Wiki's ``supporting_facts``, MuSiQue's ``paragraphs``, on the row or in ``extra_info``.

    >>> gold_evidence_of({"supporting_facts": [["Paris", 0], ["France", 2], ["Paris", 1]]})
    (['Paris', 'France'], [])
    >>> gold_evidence_of({"extra_info": {"supporting_titles": ["A"], "supporting_ids": [7]}})
    (['A'], ['7'])
    """
    titles: list[str] = []
    ids: list[str] = []
    for source in (row, _extra(row)):
        for key in ("supporting_titles", "supporting_facts", "paragraphs"):
            if source.get(key) is not None:
                titles.extend(_titles(source[key]))
        ids.extend(decode_answers(source.get("supporting_ids")))
    return list(dict.fromkeys(titles)), list(dict.fromkeys(ids))


def id_of(row: dict) -> str:
    """The row's own id (``id``, ``_id``, ``qid``, ``extra_info.index``), or ''."""
    rid = row.get("id", row.get("_id", row.get("qid", _extra(row).get("index", ""))))
    return "" if rid is None else str(rid)


def parse_dpr_line(line: str) -> tuple[str, list[str]]:
    """``question<TAB>answer-list``: the answers are a Python literal, possibly wrapped in one
    extra layer of CSV quoting (``"['a', ""b""]"``). ValueError when the line is not that."""
    question, sep, field = line.rstrip("\r\n").rpartition("\t")
    if not sep:
        raise ValueError("no tab between question and answers")
    field = field.strip()
    candidates = [field]
    if len(field) >= 2 and field[0] == field[-1] == '"':
        # CSV quoting first: as a Python literal the quoted form reads as one concatenated string
        candidates.insert(0, field[1:-1].replace('""', '"'))
    for text in candidates:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            continue
        if isinstance(value, str):
            return question.strip(), [value]
        if isinstance(value, list | tuple):
            return question.strip(), [str(v) for v in value]
    raise ValueError(f"answer field {field[:80]!r} is not a Python list literal")


def _decode(path: Path) -> tuple[str, str]:
    """(text, name without the compression suffix) of a possibly compressed file."""
    raw = path.read_bytes()
    name = path.name.lower()
    if raw[:2] == b"\x1f\x8b":
        raw, name = gzip.decompress(raw), name.removesuffix(".gz")
    elif raw[:3] == b"BZh":
        raw, name = bz2.decompress(raw), name.removesuffix(".bz2")
    try:
        return raw.decode("utf-8-sig"), name
    except UnicodeDecodeError as exc:
        raise CorpusInputError(str(path), f"byte {exc.start}", "not UTF-8 text") from exc


def _tsv_rows(text: str, path: str) -> Iterator[tuple[str, dict]]:
    for n, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        if n == 1 and line.split("\t", 1)[0].strip().lower() == "question":
            continue  # a header line
        try:
            question, answers = parse_dpr_line(line)
        except ValueError as exc:
            if "\t" in line:
                log.warning("%s: line %d skipped: %s", path, n, exc)
                continue
            question, answers = line.strip(), []
        yield f"line {n}", {"question": question, "golden_answers": answers, "id": str(n - 1)}


def _json_rows(text: str, name: str, path: str) -> Iterator[tuple[str, dict]]:
    head = text.lstrip()[:1]
    if head == "[" or (name.endswith(".json") and head == "{" and _is_one_json(text)):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CorpusInputError(path, "json", f"not valid JSON: {exc}") from exc
        rows = data if isinstance(data, list) else data.get("data", [data])
        for i, row in enumerate(rows):
            yield f"record {i + 1}", row
        return
    for n, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        try:
            yield f"line {n}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CorpusInputError(path, f"line {n}", f"not valid JSON: {exc}") from exc


def iter_qa_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(position, row) of every record of a QA file, in file order. TSV and plain-text lines
    come as ``{"question", "golden_answers", "id"}`` rows."""
    if str(path) == "-":
        for n, line in enumerate(sys.stdin, 1):
            if line.strip():
                yield f"line {n}", {"question": line.strip()}
        return
    path = Path(path)
    if not path.is_file():
        raise CorpusInputError(str(path), "open", "no such file")
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"record {i + 1}", row
        return
    text, name = _decode(path)
    head = text.lstrip()[:1]
    if head in ("[", "{"):
        yield from _json_rows(text, name, str(path))
    elif name.endswith((".tsv", ".csv")) or "\t" in text.split("\n", 1)[0]:
        yield from _tsv_rows(text, str(path))
    else:
        for n, line in enumerate(io.StringIO(text), 1):
            if line.strip():
                yield f"line {n}", {"question": line.strip()}


def read_queries(path: str | os.PathLike) -> list[str]:
    """The questions of a QA file (any layout above), in file order."""
    out = []
    for position, row in iter_qa_rows(path):
        q = question_of(row) if isinstance(row, dict) else None
        if q is None:
            raise CorpusInputError(
                str(path), position, f"no question found (expected {QUESTION_KEYS})"
            )
        out.append(q)
    return out


def _is_one_json(text: str) -> bool:
    try:
        orjson.loads(text)
        return True
    except orjson.JSONDecodeError:
        return False
