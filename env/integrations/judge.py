"""The LLM judge (``env.judge.JudgeReward``) as a reward of the trainer integrations.

- TRL: ``trl_judge_reward(judge)`` is an async reward function (TRL 1.x awaits it alongside
  the others). A flagged sample gets ``None``: TRL turns it into NaN, leaves it out of the group
  baseline (and zeroes its advantage when every reward function flagged it). The flagged count
  goes to ``log_metric("judge_flagged", n)``.
- verl: ``compute_score_judge`` has the signature of verl's ``BatchRewardManager``
  (``reward_manager: batch``) and returns one dict per sample. verl's reward tensor takes only
  numbers, so a flagged sample scores 0.0 with ``judge_valid`` 0.0 (its mask: verl logs the key
  as a reward metric; drop or down-weight those samples with it) and ``judge_flagged`` 1.0.
- SkyRL: none. skyrl-gym 0.4.0's ``BaseTextEnv.step`` is synchronous, per episode, and returns a
  float: no batched or async hook to judge many episodes at once, no way to leave one out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from retriever.queries import question_of

from ..judge import JudgeItem, JudgeReward
from .scoring import answers_of, extract_answer

log = logging.getLogger(__name__)


def _prediction(completion: Any, environment: Any = None) -> str | None:
    if environment is not None and hasattr(environment, "_last_info"):
        return (environment._last_info or {}).get("prediction")
    from .trl import _completion_text

    return extract_answer(_completion_text(completion))


def trl_judge_reward(judge: JudgeReward, name: str = "judge") -> Callable[..., Any]:
    """An async TRL reward function scoring each completion's answer with ``judge``; None for
    a flagged sample. Questions come from the ``question`` column (else the prompt)."""
    from .trl import _row_answers

    async def reward(prompts=None, completions=None, **kwargs) -> list[float | None]:
        completions = completions or []
        questions = kwargs.get("question")
        environments = kwargs.get("environments")
        items = []
        for i, completion in enumerate(completions):
            question = questions[i] if questions is not None else None
            if question is None and prompts is not None:
                question = question_of({"prompt": prompts[i]})
            env = environments[i] if environments is not None else None
            items.append(
                JudgeItem(
                    str(question or ""), _row_answers(kwargs, i), _prediction(completion, env)
                )
            )
        before = judge.stats.flagged
        scores = await judge.ascore(items)
        if callable(kwargs.get("log_metric")):
            kwargs["log_metric"](f"{name}_flagged", float(judge.stats.flagged - before))
        return scores

    reward.__name__ = reward.__qualname__ = name
    return reward


_judges: dict[tuple, JudgeReward] = {}
_judges_lock = threading.Lock()


def shared_judge(url: str, model: str, **settings) -> JudgeReward:
    """One ``JudgeReward`` per (url, model, settings) in this process, so its cache lasts the run."""
    key = (url, model, tuple(sorted((k, str(v)) for k, v in settings.items())))
    with _judges_lock:
        if key not in _judges:
            _judges[key] = JudgeReward(url, model, **settings)
        return _judges[key]


def compute_score_judge(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[dict | None],
    *,
    judge_url: str,
    judge_model: str,
    **settings,
) -> list[dict[str, float]]:
    """verl ``BatchRewardManager`` signature: the judge's verdict on each response's last
    ``<answer>`` (questions from ``extra_info.question``). ``settings``: ``JudgeReward``'s
    (``concurrency``, ``timeout``, ``cache_path``, ``api_key``)."""
    judge = shared_judge(judge_url, judge_model, **settings)
    items = []
    for source, text, truth, extra in zip(data_sources, solution_strs, ground_truths, extra_infos):
        extra = extra if isinstance(extra, dict) else {}
        where = f"{source} index {extra.get('index', '?')}: ground_truth"
        question = question_of({"extra_info": extra}) or ""
        items.append(JudgeItem(question, answers_of(truth, where), extract_answer(text)))
    scores = judge.score(items)
    return [
        {
            "score": 0.0 if s is None else s,
            "judge_valid": float(s is not None),
            "judge_flagged": float(s is None),
        }
        for s in scores
    ]
