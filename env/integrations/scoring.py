"""Rewards of a finished response given as text (what verl and text-only trainers hand over).

The episode-based envs score answers themselves; trainers that only keep the decoded response
(verl's reward managers, TRL reward functions without our rollout) need the same rewards from
the text: the last ``<answer>...</answer>`` of the response is the prediction.

>>> extract_answer("<search>x</search><information>..</information><answer> Paris </answer>")
'Paris'
>>> score_text("f1", "<answer>the Eiffel Tower</answer>", ["Eiffel Tower"])
1.0
>>> score_text("em", "no answer here", ["Paris"])
0.0
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import ConfigError, TaskFormatError
from ..parsing import turn_format_ok
from ..rewards import REWARDS, Outcome, score_all

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# the example answer inside Search-R1's / ASearcher's prompt template, when a trainer scores
# prompt + response together
_TEMPLATE_EXAMPLE = "For example, <answer> Beijing </answer>."
_TOOL_TAGS = re.compile(r"<(search|access|tool_call)>")


def extract_answer(text: str) -> str | None:
    """The last ``<answer>`` of ``text`` (None when there is none); the prompt template's
    example answer is not one."""
    text = text.replace(_TEMPLATE_EXAMPLE, "")
    matches = _ANSWER.findall(text)
    return matches[-1].strip() if matches else None


def answers_of(ground_truth: object, where: str = "ground_truth") -> tuple[str, ...]:
    """Gold answers from the shapes trainers store them in: a string, a list (or array) of
    strings, or a dict with ``target`` (Search-R1) / ``answers`` / ``answer`` / ``ground_truth``.

    >>> answers_of({"target": ["Paris", "paris, france"]})
    ('Paris', 'paris, france')
    """
    value = ground_truth
    if isinstance(value, dict):
        for key in ("target", "answers", "answer", "golden_answers", "ground_truth"):
            if key in value and value[key] is not None:
                value = value[key]
                break
        else:
            raise TaskFormatError(
                f"{where}: no answer in {sorted(value)!r}; expected one of target, answers, "
                "answer, golden_answers, ground_truth"
            )
    if isinstance(value, str):
        value = [value]
    elif hasattr(value, "tolist"):  # numpy arrays from parquet rows
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise TaskFormatError(
            f"{where}: answers must be a string or a list of strings, got {type(value).__name__}"
        )
    answers = tuple(str(a).strip() for a in value if a is not None and str(a).strip())
    if not answers:
        raise TaskFormatError(f"{where}: no gold answer (got {ground_truth!r})")
    return answers


def format_ok_of(text: str) -> bool:
    """ASearcher's format rule over a whole response: each turn (the text between tool results)
    well formed; tool results (``<information>`` blocks) are not the policy's and are skipped."""
    turns = re.split(r"<information>.*?</information>", text, flags=re.DOTALL)
    return all(turn_format_ok(turn) for turn in turns)


def outcome_of(text: str, answers: Sequence[str]) -> Outcome:
    prediction = extract_answer(text)
    return Outcome(prediction, tuple(answers), format_ok=format_ok_of(text))


def check_reward_name(name: str) -> str:
    if name not in REWARDS:
        raise ConfigError(f"reward {name!r} is unknown; use one of {', '.join(REWARDS)}")
    return name


def score_text(name: str, text: str, answers: Sequence[str]) -> float:
    """Reward ``name`` (see ``env.rewards.REWARDS``) of a response text against gold answers."""
    return float(REWARDS[check_reward_name(name)](outcome_of(text, answers)))


def score_text_all(text: str, answers: Sequence[str]) -> dict[str, float]:
    """Every registered reward of a response text, by name."""
    return score_all(outcome_of(text, answers))


def num_tool_calls(text: str) -> int:
    """How many tool calls (search, access, tool_call tags) a response text makes."""
    return len(_TOOL_TAGS.findall(text.replace(_TEMPLATE_EXAMPLE, "")))
