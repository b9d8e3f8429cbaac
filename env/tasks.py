"""QA tasks from the files users have, read by the one QA reader (``retriever.queries``), with
deterministic shuffling.

The row and file rules (which key is the question, which are answers, how TSV columns split)
live in ``retriever.queries`` so that ``retriever.search --queries`` searches exactly the
questions the env asks.

>>> row_to_task({"question": "q?", "golden_answers": ["a", "b"]}).answers
('a', 'b')
>>> row_to_task({"question": "A?", "extra_info": {"question": "B?"}, "answer": "x"}).question
'A?'
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

from retriever.errors import CorpusInputError
from retriever.queries import (
    ANSWER_KEYS,
    QUESTION_KEYS,
    answers_of,
    gold_evidence_of,
    id_of,
    iter_qa_rows,
    parse_dpr_line,
    question_of,
)

from .errors import TaskFormatError
from .types import Task

__all__ = ["iter_rows", "load_tasks", "parse_dpr_line", "row_to_task"]


def row_to_task(row: dict, position: str = "", source: str = "") -> Task:
    """One QA row of any supported layout as a Task; ``TaskFormatError`` when it has no question
    or no answer."""
    if not isinstance(row, dict):
        raise TaskFormatError(f"{position}: expected a JSON object, got {type(row).__name__}")
    question = question_of(row)
    if question is None:
        raise TaskFormatError(f"{position}: no question (looked for {QUESTION_KEYS})")
    answers = answers_of(row)
    if not answers:
        raise TaskFormatError(f"{position}: no answer (looked for {ANSWER_KEYS})")
    meta = {k: row[k] for k in ("type", "level", "supporting_facts") if k in row}
    titles, ids = gold_evidence_of(row)  # gold evidence, for the evidence rewards
    if titles:
        meta["supporting_titles"] = titles
    if ids:
        meta["supporting_ids"] = ids
    return Task(
        question=question,
        answers=tuple(answers),
        id=id_of(row),
        source=str(row.get("data_source") or source),
        meta=meta,
    )


def iter_rows(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(position, row) of every record of a QA file; ``TaskFormatError`` names what is wrong."""
    try:
        for position, row in iter_qa_rows(path):
            yield f"{path}: {position}", row
    except CorpusInputError as exc:
        if exc.position == "open":
            raise TaskFormatError(f"{path}: no such QA file") from exc
        raise TaskFormatError(str(exc)) from exc


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
