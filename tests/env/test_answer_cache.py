"""The append-only JSONL answer cache the judge and the visit tool share."""

from __future__ import annotations

import logging

from env.answer_cache import append_answer, load_answers


def test_answers_round_trip_and_a_torn_line_is_skipped(tmp_path, caplog):
    path = tmp_path / "cache.jsonl"
    append_answer(path, "k1", "result", {"summary": "Zürich"})
    append_answer(path, "k2", "result", {"summary": "s"})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "k3", "res')  # a run killed mid-write
    assert "Zürich" in path.read_text(encoding="utf-8")  # kept as text, not \u escapes
    with caplog.at_level(logging.WARNING, logger="env.answer_cache"):
        answers = load_answers(path, "result", dict, "a visit result")
    assert answers == {"k1": {"summary": "Zürich"}, "k2": {"summary": "s"}}
    assert "line 3 is not a visit result" in caplog.text


def test_rows_of_another_field_are_not_answers(tmp_path):
    path = tmp_path / "judge.jsonl"
    append_answer(path, "a", "verdict", True)
    append_answer(path, "b", "result", {"x": 1})
    assert load_answers(path, "verdict", bool, "a judge verdict") == {"a": True}
