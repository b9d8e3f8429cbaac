"""QA task loaders for the row layouts users have, with deterministic shuffling.

Layouts (detected per row): verl / Search-R1 (``reward_model.ground_truth``, a string, a list or
``{"target": [...]}``; question from ``extra_info.question`` or the prompt), FlashRAG
(``golden_answers``), ASearcher (``question``, ``answer``, ``aug_answer``), HotpotQA
(``question``, ``answer``), and DPR TSV lines ``question<TAB>['a', 'b']``. Files: ``.jsonl``,
``.json`` (a list or one object per line), ``.parquet``, ``.tsv`` / ``.txt`` / ``.csv`` (DPR),
each optionally ``.gz``.

>>> row_to_task({"question": "q?", "golden_answers": ["a", "b"]}).answers
('a', 'b')
>>> parse_dpr_line('who?\\t"[\\'x\\', ""y \\'s""]"')
('who?', ['x', "y 's"])
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path

from .errors import TaskFormatError
from .types import Task

log = logging.getLogger(__name__)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _kind(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1].lower() if suffixes else ""
    if ext == ".parquet":
        return "parquet"
    if ext in (".tsv", ".txt", ".csv"):
        return "dpr-tsv"
    if ext in (".jsonl", ".json"):
        return "json"
    raise TaskFormatError(
        f"{path}: unknown QA file type {ext!r}; use .jsonl, .json, .parquet or .tsv"
    )


def parse_dpr_line(line: str) -> tuple[str, list[str]]:
    """``question<TAB>answer-list`` with the answer list as a Python literal, possibly wrapped in
    one extra layer of CSV quoting (``"['a', ""b""]"``)."""
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
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(value, str):
            return question.strip(), [value]
        if isinstance(value, list | tuple):
            return question.strip(), [str(v) for v in value]
    raise ValueError(f"answer field {field[:80]!r} is not a Python list literal")


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return _as_list(value.get("target", value.get("answers", value.get("ground_truth"))))
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list | tuple):
        out = []
        for v in value:
            out.extend(_as_list(v))
        return out
    return [str(value)]


def _question_from_prompt(prompt) -> str | None:
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, list | tuple) and prompt:
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        text = (
            (users or list(prompt))[-1].get("content", "")
            if isinstance((users or list(prompt))[-1], dict)
            else ""
        )
    else:
        return None
    if "Question:" in text:
        text = text.rsplit("Question:", 1)[1]
    return text.strip() or None


def row_to_task(row: dict, position: str = "", source: str = "") -> Task:
    """One QA row of any supported layout as a Task; ``TaskFormatError`` when it has no question
    or no answer."""
    if not isinstance(row, dict):
        raise TaskFormatError(f"{position}: expected a JSON object, got {type(row).__name__}")
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    question = row.get("question") or extra.get("question") or row.get("query")
    if not question:
        question = _question_from_prompt(row.get("prompt"))
    answers: list[str] = []
    reward_model = row.get("reward_model") if isinstance(row.get("reward_model"), dict) else {}
    for value in (
        row.get("golden_answers"),
        reward_model.get("ground_truth"),
        row.get("answer"),
        row.get("answers"),
        row.get("aug_answer"),
        extra.get("answer"),
    ):
        answers.extend(_as_list(value))
    answers = list(dict.fromkeys(a.strip() for a in answers if a is not None and str(a).strip()))
    if not question or not isinstance(question, str):
        raise TaskFormatError(
            f"{position}: no question (looked for question, extra_info.question, prompt)"
        )
    if not answers:
        raise TaskFormatError(
            f"{position}: no answer (looked for golden_answers, reward_model.ground_truth, answer, "
            "answers, aug_answer, extra_info.answer)"
        )
    rid = row.get("id", row.get("_id", row.get("qid", extra.get("index", ""))))
    meta = {k: row[k] for k in ("type", "level", "supporting_facts") if k in row}
    return Task(
        question=question.strip(),
        answers=tuple(answers),
        id=str(rid),
        source=str(row.get("data_source") or source),
        meta=meta,
    )


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(position, row) of every record of a QA file."""
    path = Path(path)
    if not path.is_file():
        raise TaskFormatError(f"{path}: no such QA file")
    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}: row {i}", row
        return
    with _open_text(path) as f:
        if kind == "dpr-tsv":
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    question, answers = parse_dpr_line(line)
                except ValueError as exc:
                    log.warning("%s: line %d skipped: %s", path, n, exc)
                    continue
                yield (
                    f"{path}: line {n}",
                    {"question": question, "golden_answers": answers, "id": str(n - 1)},
                )
            return
        head = f.read(1 << 16).lstrip()
        f.seek(0)
        if head.startswith("["):
            try:
                rows = json.load(f)
            except ValueError as exc:
                raise TaskFormatError(f"{path}: not valid JSON ({exc})") from exc
            for i, row in enumerate(rows):
                yield f"{path}: item {i}", row
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise TaskFormatError(f"{path}: line {n}: not valid JSON ({exc})") from exc
            yield f"{path}: line {n}", row


def load_tasks(
    path: str | os.PathLike, *, shuffle_seed: int | None = None, limit: int | None = None
) -> list[Task]:
    """All tasks of a QA file, shuffled by ``shuffle_seed`` (same seed, same order), then cut to
    ``limit``."""
    source = Path(path).name.split(".")[0]
    tasks = [row_to_task(row, pos, source) for pos, row in iter_rows(path)]
    for i, task in enumerate(tasks):
        if not task.id:
            tasks[i] = Task(task.question, task.answers, str(i), task.source, task.meta)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(tasks)
    if limit is not None:
        tasks = tasks[: max(limit, 0)]
    return tasks
