"""Rewards of a finished response given as text (what verl and text-only trainers hand over).

The episode-based envs score answers themselves; trainers that only keep the decoded response
(verl's reward managers, TRL reward functions without our rollout) need the same rewards from
the text: the last ``<answer>...</answer>`` of the response is the prediction.

Every pass over the response is linear in its length (``env.parsing.find_blocks``; a lazy
``.*?`` regex took 356 s over 800 KB of unclosed ``<answer>``). The response is not cut: the
trainer's response length bounds it, and a cut could drop the final answer.

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

from retriever.queries import ANSWER_DICT_KEYS, decode_answers

from ..errors import TaskFormatError
from ..evidence import evidence_from_text
from ..parsing import find_blocks, turn_format_ok
from ..reward_spec import RewardSpec, parse_reward_spec
from ..rewards import Outcome, score_all

# the example answer inside Search-R1's / ASearcher's prompt template, when a trainer scores
# prompt + response together
_TEMPLATE_EXAMPLE = "For example, <answer> Beijing </answer>."
_TOOL_TAGS = re.compile(r"<(search|access|tool_call)>")


def extract_answer(text: str) -> str | None:
    """The last ``<answer>`` of ``text`` (None when there is none); the prompt template's
    example answer is not one."""
    text = text.replace(_TEMPLATE_EXAMPLE, "")
    blocks = find_blocks(text, "<answer>", "</answer>")
    if not blocks:
        return None
    start, end = blocks[-1]
    return text[start + len("<answer>") : end - len("</answer>")].strip()


def answers_of(ground_truth: object, where: str = "ground_truth") -> tuple[str, ...]:
    """Gold answers from the shapes trainers store them in (``retriever.queries.decode_answers``,
    the decoder the QA reader uses: strings, numbers, lists and numpy arrays of them, dicts with
    ``target`` / ``answers`` / ``text`` ...); ``TaskFormatError`` naming ``where`` when none.

    >>> answers_of({"target": ["Paris", "paris, france"]})
    ('Paris', 'paris, france')
    """
    answers = decode_answers(ground_truth)
    if answers:
        return tuple(answers)
    if isinstance(ground_truth, dict) and not any(k in ground_truth for k in ANSWER_DICT_KEYS):
        raise TaskFormatError(
            f"{where}: no answer in {sorted(map(str, ground_truth))!r}; expected one of "
            f"{', '.join(ANSWER_DICT_KEYS)}"
        )
    shown = repr(ground_truth)
    shown = shown if len(shown) <= 200 else shown[:200] + "…"
    raise TaskFormatError(
        f"{where}: no gold answer (got {shown}); give a string or a list of strings"
    )


def format_ok_of(text: str) -> bool:
    """ASearcher's format rule over a whole response: each turn (the text between tool results)
    well formed; tool results (``<information>`` blocks) are not the policy's and are skipped."""
    pos = 0
    for start, end in find_blocks(text, "<information>", "</information>"):
        if not turn_format_ok(text[pos:start]):
            return False
        pos = end
    return turn_format_ok(text[pos:])


def outcome_of(text: str, answers: Sequence[str], gold_titles: Sequence[str] = ()) -> Outcome:
    """The ``Outcome`` of a response text; its evidence (what the ``<information>`` blocks
    showed) is read back from the text, ``gold_titles`` are the task's supporting titles."""
    prediction = extract_answer(text)
    evidence = evidence_from_text(text, gold_titles)
    return Outcome(prediction, tuple(answers), format_ok=format_ok_of(text), evidence=evidence)


def check_reward_name(name: str | dict | RewardSpec) -> RewardSpec:
    """The parsed reward spec (a name, ``"f1:1,search_cost:-0.05"`` or a dict); ConfigError
    naming an unknown reward."""
    return parse_reward_spec(name)


def score_text(
    name: str | dict, text: str, answers: Sequence[str], gold_titles: Sequence[str] = ()
) -> float:
    """Reward ``name`` (a reward spec, see ``env.reward_spec``) of a response text."""
    spec = check_reward_name(name)
    return spec.score(score_all(outcome_of(text, answers, gold_titles)))


def score_text_all(
    text: str, answers: Sequence[str], gold_titles: Sequence[str] = ()
) -> dict[str, float]:
    """Every registered reward of a response text, by name."""
    return score_all(outcome_of(text, answers, gold_titles))


def num_tool_calls(text: str) -> int:
    """How many tool calls (search, access, tool_call tags) a response text makes."""
    return len(_TOOL_TAGS.findall(text.replace(_TEMPLATE_EXAMPLE, "")))
