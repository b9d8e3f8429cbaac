"""Answer and format rewards as pure named functions, and a registry by name.

Normalisation is SQuAD's (lower case, punctuation and articles removed, whitespace collapsed);
every answer score is the best over the accepted answers (aliases).

>>> exact_match("The Eiffel Tower!", ["eiffel tower"])
1.0
>>> cover_exact_match("It is the Eiffel Tower in Paris", ["Eiffel Tower"])
1.0
>>> round(f1_score("Eiffel Tower Paris", ["the Eiffel Tower"]), 3)
0.8
>>> score_all(Outcome(prediction="Paris", answers=("paris",), format_ok=True))["asearcher"]
1.0

The retrieval-aware rewards (``evidence_recall``, ``answer_in_evidence``, ``info_gain``,
``redundancy``, ``search_cost``; see ``env.evidence``) read ``Outcome.evidence``, what the episode
showed the policy. ``redundancy`` and ``search_cost`` are counts: weight them negatively in a
reward spec (``env.reward_spec``), e.g. ``"f1:1,evidence_recall:0.5,search_cost:-0.05"``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import evidence as ev
from .evidence import Evidence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
# ASearcher's training reward: an answer that calls the question invalid scores this
INVALID_QUESTION_WORDS = ("question", "invalid", "appropriate", "valid")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation.

    >>> normalize_answer("  The  Beatles' \\"Abbey Road\\". ")
    'beatles abbey road'
    """
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _bool_mapping(text: str) -> str:
    return {"True": "yes", "False": "no"}.get(text, text)


def _aliases(answers: Sequence[str] | str) -> list[str]:
    return [answers] if isinstance(answers, str) else [str(a) for a in answers]


def exact_match(prediction: str | None, answers: Sequence[str] | str) -> float:
    """1.0 when the normalised prediction equals a normalised answer.

    >>> exact_match("yes", ["Yes"]), exact_match(None, ["x"]), exact_match("x b", ["b"])
    (1.0, 0.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(_bool_mapping(prediction))
    return float(any(pred == normalize_answer(_bool_mapping(a)) for a in _aliases(answers)))


def cover_exact_match(prediction: str | None, answers: Sequence[str] | str) -> float:
    """1.0 when a normalised answer occurs in the normalised prediction, on word boundaries.

    (Search-R1's "subem"; word boundaries so that "art" is not found in "cart".)

    >>> cover_exact_match("born in 1990 in Ohio", ["1990"]), cover_exact_match("cart", ["art"])
    (1.0, 0.0)
    """
    if prediction is None:
        return 0.0
    pred = f" {normalize_answer(_bool_mapping(prediction))} "
    for answer in _aliases(answers):
        gold = normalize_answer(_bool_mapping(answer))
        if gold and f" {gold} " in pred:
            return 1.0
    return 0.0


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, answers: Sequence[str] | str) -> float:
    """SQuAD token F1, best over the answers; yes/no/noanswer must match exactly (HotpotQA rule).

    >>> f1_score("no", ["yes"]), f1_score("", ["x"]), round(f1_score("x b c", ["b c d"]), 3)
    (0.0, 0.0, 0.667)
    """
    if prediction is None:
        return 0.0
    pred = normalize_answer(_bool_mapping(prediction))
    best = 0.0
    for answer in _aliases(answers):
        gold = normalize_answer(_bool_mapping(answer))
        if (
            pred in ("yes", "no", "noanswer") or gold in ("yes", "no", "noanswer")
        ) and pred != gold:
            continue
        pred_tokens, gold_tokens = pred.split(), gold.split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        best = max(best, _f1(pred_tokens, gold_tokens))
    return best


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the reward functions see of an episode: the final answer, the gold answers, and
    whether every turn was well formed (``format_ok``) and an answer was given; ``evidence``:
    what its tool calls showed and the task's gold evidence (None: not recorded)."""

    prediction: str | None
    answers: tuple[str, ...]
    format_ok: bool = True
    invalid_question_ok: bool = True
    evidence: Evidence | None = None

    @property
    def answered(self) -> bool:
        return self.prediction is not None


def format_reward(outcome: Outcome) -> float:
    """1.0 when the episode ended with an answer and every turn was well formed."""
    return float(outcome.answered and outcome.format_ok)


def asearcher_reward(outcome: Outcome) -> float:
    """ASearcher's composite: answer F1 times the format reward; -0.5 when the answer calls the
    question invalid (unless ``invalid_question_ok``)."""
    if outcome.prediction is None:
        return 0.0
    if not outcome.invalid_question_ok and any(
        w in outcome.prediction for w in INVALID_QUESTION_WORDS
    ):
        return -0.5
    return f1_score(outcome.prediction, outcome.answers) * float(outcome.format_ok)


def answer_in_evidence(outcome: Outcome) -> float:
    """1.0 when a gold answer occurs (cover-EM's rule: normalised, on word boundaries) in any
    observation a tool call showed the policy, whatever it answered.

    >>> shown = Evidence((ev.Shown("search", "q", text="Paris is the capital of France."),))
    >>> answer_in_evidence(Outcome(None, ("paris",), evidence=shown))
    1.0
    """
    if outcome.evidence is None:
        return 0.0
    return float(any(cover_exact_match(s.text, outcome.answers) for s in outcome.evidence.turns))


def _on_evidence(fn: Callable[[Evidence], float]) -> Callable[[Outcome], float]:
    return lambda o: 0.0 if o.evidence is None else float(fn(o.evidence))


# name -> function of an Outcome; every one is computed into info["rewards"]
REWARDS: dict[str, Callable[[Outcome], float]] = {
    "em": lambda o: exact_match(o.prediction, o.answers),
    "cover_em": lambda o: cover_exact_match(o.prediction, o.answers),
    "f1": lambda o: f1_score(o.prediction, o.answers),
    "format": format_reward,
    "asearcher": asearcher_reward,
    "evidence_recall": _on_evidence(ev.evidence_recall),
    "answer_in_evidence": answer_in_evidence,
    "info_gain": _on_evidence(ev.information_gain),
    "redundancy": _on_evidence(ev.redundancy),
    "search_cost": _on_evidence(ev.search_cost),
}


def score_all(outcome: Outcome) -> dict[str, float]:
    """Every registered reward of one outcome, by name."""
    return {name: float(fn(outcome)) for name, fn in REWARDS.items()}
