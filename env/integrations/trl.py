"""TRL's ``GRPOTrainer`` (1.x) with the search environment.

Two ways in, both scored by our rewards:

- ``environment_factory=SearchToolEnvironment.factory(client)``: TRL's own multi-turn tool loop.
  The model calls ``search``, ``access`` and ``answer`` as JSON tool calls, so it needs a chat
  template that renders tools (Qwen2.5/3, Llama 3.1, ...). ``get_reward`` gives TRL the
  episode's reward. Noise (``noise="hard-negative,p_end=0.5,steps=1000"``) learns the step from
  a shared ``TrainStep``: ``factory(client, noise=..., train_step=steps)`` and
  ``GRPOTrainer(..., callbacks=[steps.callback()])``.
- ``rollout_func=SearchRollout(client, tasks)`` (``env.integrations.trl_rollout``): tag-style
  episodes (``<search>``, ``<access>``, ``<answer>``) of any chat model, all searches of a turn
  sent as one batched call.

``reward_functions(["f1", "format"])`` returns functions with TRL's reward signature; they read
the episode scores when there are any (rollout ``env_rewards``, or the ``environments``) and
otherwise score the completion text against the row's answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import TaskFormatError
from ..reward_spec import RewardSpec, parse_reward_spec
from ..rewards import REWARDS
from ..tasks import row_to_task
from ..types import EnvConfig, Task
from .scoring import check_reward_name, num_tool_calls, score_text_all

log = logging.getLogger(__name__)

# row columns that hold the gold answers, in the order they are looked for
ANSWER_COLUMNS = ("answers", "golden_answers", "answer", "reward_model", "ground_truth")


def task_rows(tasks: Sequence[Task], style: str = "asearcher") -> list[dict]:
    """Dataset rows for ``GRPOTrainer``: ``prompt`` (the env's first observation as chat
    messages), ``question``, ``answers`` and ``id``. ``datasets.Dataset.from_list(rows)``."""
    from ..search_env import SearchEnv

    probe = SearchEnv(None, style=style)
    rows = []
    for task in tasks:
        _, info = probe.reset(options=task.options())
        rows.append(
            {
                "prompt": info["messages"],
                "question": task.question,
                "answers": list(task.answers),
                "id": task.id,
                "supporting_titles": list(task.meta.get("supporting_titles", [])),
            }
        )
    return rows


def task_of_row(row: dict, position: str) -> Task:
    """The task of one trainer row (any layout ``env.tasks`` reads); the error names the row."""
    try:
        return row_to_task(row, position)
    except TaskFormatError:
        raise
    except Exception as exc:  # a row of an unexpected shape must still say which row
        raise TaskFormatError(f"{position}: unreadable row ({exc})") from exc


def _row_answers(kwargs: dict, i: int) -> tuple[str, ...]:
    from .scoring import answers_of

    for column in ANSWER_COLUMNS:
        values = kwargs.get(column)
        if values is not None:
            return answers_of(values[i], f"row {i} of the batch, column {column!r}")
    raise TaskFormatError(
        f"row {i} of the batch has no gold answers: the dataset needs one of the columns "
        f"{', '.join(ANSWER_COLUMNS)} (got {sorted(k for k in kwargs if k != 'trainer_state')})"
    )


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):  # conversational: a list of messages
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    raise TypeError(f"a completion must be text or a list of messages, got {type(completion)}")


def episode_scores(completions: Sequence[Any], **kwargs) -> list[dict[str, float]]:
    """Every reward of each completion: from the rollout's ``env_rewards``, from TRL's
    ``environments``, or from the completion text and the row's answers."""
    if kwargs.get("env_rewards") is not None:
        return [dict(r) for r in kwargs["env_rewards"]]
    environments = kwargs.get("environments")
    if environments is not None and all(isinstance(e, SearchToolEnvironment) for e in environments):
        return [e._scores() for e in environments]
    titles = kwargs.get("supporting_titles")
    return [
        score_text_all(
            _completion_text(c), _row_answers(kwargs, i), titles[i] if titles is not None else ()
        )
        for i, c in enumerate(completions)
    ]


def reward_function(name: str | dict | RewardSpec) -> Callable[..., list[float]]:
    """A TRL reward function (``f(prompts, completions, **columns) -> list[float]``) for the
    reward spec ``name`` (a name of ``env.rewards.REWARDS``, ``"f1:1,evidence_recall:0.5"`` or
    a dict; ``env.reward_spec``); TRL logs it under the spec's text."""
    spec = check_reward_name(name)

    def reward(prompts=None, completions=None, **kwargs) -> list[float]:
        return [spec.score(s) for s in episode_scores(completions or [], **kwargs)]

    reward.__name__ = reward.__qualname__ = name if isinstance(name, str) else str(spec)
    return reward


def reward_functions(names: Sequence[str | dict]) -> list[Callable[..., list[float]]]:
    return [reward_function(n) for n in names]


class TrainStep:
    """The trainer's global step, for the noise curriculum (``env.noise``) of environments that
    TRL builds and resets itself: ``reset(**row)`` gets only the dataset row, so the step comes
    from a ``TrainerCallback`` that updates this holder (``callbacks=[steps.callback()]``)."""

    def __init__(self, step: int = 0):
        self.step = step

    def callback(self):
        """A ``transformers.TrainerCallback`` that copies ``state.global_step`` here at the start
        of training (also after a resume) and of every step, before its rollouts."""
        from transformers import TrainerCallback

        holder = self

        class TrainStepCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                holder.step = int(state.global_step)

            on_step_begin = on_train_begin

        return TrainStepCallback()


def searches_of(completions: Sequence[Any], **kwargs) -> list[int]:
    """Tool calls per completion (from the rollout's counts when there are any)."""
    if kwargs.get("num_searches") is not None:
        return list(kwargs["num_searches"])
    return [num_tool_calls(_completion_text(c)) for c in completions]


class SearchToolEnvironment:
    """One episode per rollout, for ``GRPOTrainer(environment_factory=...)``.

    TRL exposes the public methods (``search``, ``access``, ``answer``) as tools, calls
    ``reset(**row)`` before each rollout and ``get_reward()`` after it (other methods are
    private: TRL would offer every public method as a tool). A search server that
    cannot be reached is not turned into a tool error the model sees: ``get_reward`` raises it.
    """

    def __init__(
        self,
        client,
        config: EnvConfig | None = None,
        *,
        train_step: TrainStep | None = None,
        **settings,
    ):
        from ..search_env import SearchEnv

        settings.setdefault("style", "tool-call")
        self._env = SearchEnv(client, config, **settings)
        self._train_step = train_step
        noise = self._env.config.noise
        if noise is not None and noise.steps and train_step is None:
            log.warning(
                "noise has a %d-step schedule but no train_step: every episode is at step 0 "
                "(pass train_step=TrainStep() and callbacks=[steps.callback()] to GRPOTrainer)",
                noise.steps,
            )
        self._reward = parse_reward_spec(self._env.config.reward)
        self._fatal: BaseException | None = None
        self._done = True
        self._last_info: dict = {}

    @classmethod
    def factory(
        cls,
        client,
        config: EnvConfig | None = None,
        *,
        train_step: TrainStep | None = None,
        **settings,
    ) -> Callable[[], Any]:
        """A zero-argument callable that TRL calls once per concurrent rollout; its
        environments share ``train_step`` (the noise curriculum's step)."""
        return lambda: cls(client, config, train_step=train_step, **settings)

    def reset(self, **row) -> str | None:
        """Start the episode of one dataset row (its answers are needed for the reward)."""
        where = f"row {row.get('id', '')!r}" if row.get("id") not in (None, "") else "row"
        question = row.get("question") or row.get("prompt")
        task = task_of_row(row, f"{where} ({str(question)[:60]!r})")
        options = task.options()
        if self._train_step is not None:
            options["train_step"] = int(self._train_step.step)
        self._env.reset(options=options)
        self._fatal, self._done, self._last_info = None, False, {}
        return None  # the dataset's prompt already carries the question

    def _call(self, name: str, arguments: dict) -> str:
        if self._done:
            return "Error: the episode has ended (an answer was given or the turn budget is spent)."
        text = "<tool_call>" + json.dumps({"name": name, "arguments": arguments}) + "</tool_call>"
        try:
            obs, _, terminated, truncated, info = self._env.step(text)
        except Exception as exc:  # dead server, bad auth: fatal for the run, not for the model
            self._fatal = exc
            raise
        self._done = terminated or truncated
        self._last_info = info
        return obs

    def search(self, query: str) -> str:
        """Search the local Wikipedia and return the top passages with their URLs.

        Args:
            query: What to search for.

        Returns:
            The top passages, each as [Doc k](url) and its text.
        """
        return self._call("search", {"query": query})

    def access(self, url: str, page: int | None = None) -> str:
        """Read a Wikipedia page by URL or title, one numbered chunk at a time.

        Args:
            url: A URL from the search results, or a page title.
            page: Which chunk to read (default: the next unread one).

        Returns:
            One chunk of the page, with its number and the number of chunks.
        """
        arguments: dict[str, Any] = {"url": url}
        if page:
            arguments["page"] = page
        return self._call("access", arguments)

    def answer(self, answer: str) -> str:
        """Give the final answer and end the episode.

        Args:
            answer: The short final answer.

        Returns:
            A confirmation.
        """
        self._call("answer", {"answer": answer})
        return "Answer recorded."

    def _scores(self) -> dict[str, float]:
        """Every reward of the episode (all zero until it ended)."""
        if self._fatal is not None:
            raise self._fatal
        return dict(self._last_info.get("rewards") or dict.fromkeys(REWARDS, 0.0))

    def get_reward(self) -> float:
        """The configured reward of the finished episode (TRL calls this once per rollout)."""
        return self._reward.score(self._scores())
