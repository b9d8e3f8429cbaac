"""Reward functions, table-driven."""

from __future__ import annotations

import pytest

from env.parsing import turn_format_ok
from env.rewards import (
    REWARDS,
    Outcome,
    cover_exact_match,
    exact_match,
    f1_score,
    normalize_answer,
    score_all,
)

NORMALIZE = [
    ("The Beatles", "beatles"),
    ("  A   tale of Two  Cities!! ", "tale of two cities"),
    ("U.S.A.", "usa"),
    ("an apple, the pear", "apple pear"),
    ("Théâtre", "théâtre"),
    ("", ""),
]

EM = [
    ("Paris", ["paris"], 1.0),
    ("paris, france", ["Paris"], 0.0),
    ("The Paris", ["Paris"], 1.0),
    ("London", ["Paris", "London"], 1.0),
    ("London", "London", 1.0),
    (None, ["x"], 0.0),
    ("", [""], 1.0),
    ("yes", ["Yes"], 1.0),
    ("True", ["yes"], 1.0),
    ("1990", ["1991"], 0.0),
]

COVER = [
    ("It was Paris, France.", ["Paris"], 1.0),
    ("It was Lyon.", ["Paris"], 0.0),
    ("cart", ["art"], 0.0),
    ("the art of war", ["Art"], 1.0),
    ("New York City", ["New York", "NYC"], 1.0),
    ("York", ["New York"], 0.0),
    (None, ["Paris"], 0.0),
    ("anything", [""], 0.0),
]

F1 = [
    ("Paris", ["Paris"], 1.0),
    ("Paris France", ["Paris"], 2 / 3),
    ("the city of Paris", ["Paris"], 0.5),
    ("Lyon", ["Paris"], 0.0),
    ("Lyon", ["Paris", "Lyon"], 1.0),
    ("no", ["yes"], 0.0),
    ("yes", ["yes"], 1.0),
    ("yes sir", ["yes"], 0.0),  # HotpotQA: a yes/no gold must match exactly
    ("", ["Paris"], 0.0),
    (None, ["Paris"], 0.0),
    ("x b b", ["b b c"], 2 / 3),
]


@pytest.mark.parametrize("text,expected", NORMALIZE)
def test_normalize(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("pred,answers,expected", EM)
def test_exact_match(pred, answers, expected):
    assert exact_match(pred, answers) == expected


@pytest.mark.parametrize("pred,answers,expected", COVER)
def test_cover_exact_match(pred, answers, expected):
    assert cover_exact_match(pred, answers) == expected


@pytest.mark.parametrize("pred,answers,expected", F1)
def test_f1(pred, answers, expected):
    assert f1_score(pred, answers) == pytest.approx(expected)


FORMAT = [
    ("<search>q</search>", True),
    ("<think>a</think><answer>x</answer>", True),
    ("<think>a</think></think><answer>x</answer>", False),
    ("<search>q</search><access>u</access>", False),
    ("<search>q", False),
    ("no tags", True),
]


@pytest.mark.parametrize("text,ok", FORMAT)
def test_turn_format(text, ok):
    assert turn_format_ok(text) is ok


COMPOSITE = [
    # (outcome, expected rewards)
    (
        Outcome("Paris", ("Paris",), True),
        {"em": 1, "cover_em": 1, "f1": 1, "format": 1, "asearcher": 1},
    ),
    (
        Outcome("Paris", ("Paris",), False),
        {"em": 1, "cover_em": 1, "f1": 1, "format": 0, "asearcher": 0},
    ),
    (
        Outcome(None, ("Paris",), True),
        {"em": 0, "cover_em": 0, "f1": 0, "format": 0, "asearcher": 0},
    ),
    (
        Outcome("Paris France", ("Paris",), True),
        {"em": 0, "cover_em": 1, "f1": 2 / 3, "format": 1, "asearcher": 2 / 3},
    ),
    (
        Outcome("the question is invalid", ("Paris",), True, invalid_question_ok=False),
        {"em": 0, "cover_em": 0, "f1": 0, "format": 1, "asearcher": -0.5},
    ),
]


@pytest.mark.parametrize("outcome,expected", COMPOSITE)
def test_score_all(outcome, expected):
    scores = score_all(outcome)
    assert set(scores) == set(REWARDS)
    answer = {k: scores[k] for k in expected}
    assert answer == pytest.approx({k: float(v) for k, v in expected.items()})
    assert all(v == 0.0 for k, v in scores.items() if k not in expected)  # no evidence recorded
