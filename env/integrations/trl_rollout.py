"""``SearchRollout``: multi-turn search episodes as TRL ``GRPOTrainer``'s ``rollout_func``.

Any chat model, tag-style tools (``asearcher``: ``<search>``, ``<access>``, ``<answer>``;
``search-r1``: ``<search>``, ``<answer>``). Per turn, every unfinished episode of the batch
generates until it closes a tool tag (or ends its message); the env parses the turns and sends
all their searches as ONE backend call; each observation is appended to that episode's
completion as tokens the policy did not write (``env_mask`` 0, so GRPO does not train on them).
The episode scores go to the reward functions as ``env_rewards``. With ``noise=`` (``env.noise``)
each episode is reset at ``trainer.state.global_step``, the step of its curriculum.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, TaskFormatError
from ..rewards import REWARDS
from ..types import EnvConfig, Task
from .trl import task_rows

log = logging.getLogger(__name__)

STOP_STRINGS = ("</search>", "</access>", "</answer>")


def _prompt_key(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        return str(prompt[-1].get("content", ""))
    raise TaskFormatError(f"a prompt must be text or chat messages, got {type(prompt).__name__}")


class SearchRollout:
    """``rollout_func(prompts, trainer)`` for ``GRPOTrainer``, over ``tasks`` (the rows of the
    training set, built with ``rows()``) and a search ``client``.

    ``max_turns`` bounds the turns of an episode, ``turn_tokens`` the tokens of one turn; the
    whole completion (turns and observations) stays within the trainer's
    ``max_completion_length``. ``last_stats`` holds the scores of the latest batch.
    """

    def __init__(
        self,
        client,
        tasks: Sequence[Task],
        config: EnvConfig | None = None,
        *,
        turn_tokens: int = 96,
        **settings,
    ):
        from ..config import make_config

        settings.setdefault("style", "asearcher")
        settings.setdefault("max_turns", 4)
        self.config = make_config(config, **settings)
        if self.config.style == "tool-call":
            raise ConfigError(
                "SearchRollout runs tag-style episodes (asearcher, search-r1); for JSON tool calls "
                "use SearchToolEnvironment as environment_factory"
            )
        if turn_tokens < 1:
            raise ConfigError(f"turn_tokens must be >= 1, got {turn_tokens}")
        self.client = client
        self.turn_tokens = turn_tokens
        self.tasks = list(tasks)
        self._rows = task_rows(self.tasks, self.config.style)
        self._by_prompt = {_prompt_key(r["prompt"]): t for r, t in zip(self._rows, self.tasks)}
        self.last_stats: dict[str, float] = {}

    def rows(self) -> list[dict]:
        """The training rows (``prompt``, ``question``, ``answers``, ``id``) of the tasks."""
        return [dict(r) for r in self._rows]

    def _tasks_of(self, prompts: Sequence[Any]) -> list[Task]:
        tasks = []
        for i, prompt in enumerate(prompts):
            task = self._by_prompt.get(_prompt_key(prompt))
            if task is None:
                raise TaskFormatError(
                    f"prompt {i} of the batch ({_prompt_key(prompt)[-80:]!r}) is not one of the "
                    f"{len(self.tasks)} rows this rollout was built with; build the training set "
                    "from SearchRollout.rows()"
                )
            tasks.append(task)
        return tasks

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        from ..batched import BatchedSearchEnv

        t0 = time.perf_counter()
        tasks = self._tasks_of(prompts)
        tok = trainer.processing_class
        tok = getattr(tok, "tokenizer", tok)
        n = len(prompts)
        benv = BatchedSearchEnv(self.client, num_envs=n, config=self.config)
        step = int(getattr(getattr(trainer, "state", None), "global_step", 0) or 0)
        _, infos = benv.reset(options=[{**t.options(), "train_step": step} for t in tasks])
        prompt_ids = [self._encode_prompt(tok, info["messages"]) for info in infos]
        completion = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        env_mask: list[list[int]] = [[] for _ in range(n)]
        final: list[dict | None] = [None] * n
        limit = trainer.max_completion_length
        active = list(range(n))
        while active:
            room = {i: limit - len(completion[i]) for i in active}
            active = [i for i in active if room[i] > 0]
            if not active:
                break
            turns = self._generate(
                trainer, tok, [prompt_ids[i] + completion[i] for i in active], room, active
            )
            actions: list[str | None] = [None] * n
            for i, (ids, _, _) in zip(active, turns):
                actions[i] = tok.decode(ids, skip_special_tokens=True)
            obs, _, terminated, truncated, step_infos = benv.step(actions)
            still = []
            for i, (ids, lps, ended) in zip(active, turns):
                completion[i] += ids
                logprobs[i] += lps
                env_mask[i] += [1] * len(ids)
                if terminated[i] or truncated[i]:
                    final[i] = step_infos[i]
                    continue
                if ended:  # the model closed its message without answering: the episode stops
                    final[i] = step_infos[i]
                    continue
                obs_ids = tok.encode(obs[i], add_special_tokens=False)
                obs_ids = obs_ids[: max(0, limit - len(completion[i]))]
                completion[i] += obs_ids
                logprobs[i] += [0.0] * len(obs_ids)
                env_mask[i] += [0] * len(obs_ids)
                final[i] = step_infos[i]
                still.append(i)
            active = still
        return self._output(prompt_ids, completion, logprobs, env_mask, final, t0)

    @staticmethod
    def _encode_prompt(tok, messages: list[dict]) -> list[int]:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def _generate(
        self, trainer, tok, seqs, room, active
    ) -> list[tuple[list[int], list[float], bool]]:
        """One turn of each sequence: (new token ids, their sampling logprobs, ended with EOS)."""
        import torch

        eos = trainer.eos_token_ids if hasattr(trainer, "eos_token_ids") else [tok.eos_token_id]
        eos = [eos] if isinstance(eos, int) else list(eos)
        # pad with a token that is not EOS, so a finished row's padding is told from its EOS
        pad = next(
            (
                p
                for p in (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id)
                if p is not None and p not in eos
            ),
            eos[0],
        )
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for j, s in enumerate(seqs):
            input_ids[j, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            attention[j, width - len(s) :] = 1
        model = trainer.accelerator.unwrap_model(trainer.model)
        device = next(model.parameters()).device
        max_new = min(self.turn_tokens, max(room[i] for i in active))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=max_new,
                    do_sample=True,
                    temperature=trainer.temperature,
                    top_p=trainer.top_p,
                    top_k=trainer.top_k,  # TRL's 0: no top-k cut (not the model's default 50)
                    min_p=trainer.min_p,
                    repetition_penalty=trainer.repetition_penalty,
                    pad_token_id=pad,
                    eos_token_id=eos,
                    stop_strings=list(STOP_STRINGS),
                    tokenizer=tok,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
        finally:
            model.train(was_training)
        new = out.sequences[:, width:].cpu()
        scores = (
            torch.stack(out.scores, dim=1).float().log_softmax(-1).cpu() if out.scores else None
        )
        turns = []
        for j, i in enumerate(active):
            ids = new[j].tolist()
            while ids and ids[-1] == pad:
                ids.pop()
            ended = False
            for k, t in enumerate(ids):
                if t in eos:
                    ids, ended = ids[: k + 1], True
                    break
            ids = ids[: room[i]] or [eos[0]]  # an empty turn still ends the message
            lps = [float(scores[j, k, t]) for k, t in enumerate(ids)] if scores is not None else []
            turns.append((ids, lps, ended))
        return turns

    def _output(self, prompt_ids, completion, logprobs, env_mask, final, t0) -> dict[str, list]:
        zero = dict.fromkeys(REWARDS, 0.0)
        env_rewards, searches, answered, fmt = [], [], [], []
        for info in final:
            info = info or {}
            done = info.get("prediction") is not None
            env_rewards.append(dict(info.get("rewards") or zero) if done else dict(zero))
            counts = info.get("counts") or {}
            searches.append(int(counts.get("search", 0) + counts.get("access", 0)))
            answered.append(done)
            fmt.append(env_rewards[-1]["format"])
        n = max(len(final), 1)
        self.last_stats = {
            **{k: sum(r[k] for r in env_rewards) / n for k in REWARDS},
            "searches": sum(searches) / n,
            "answered": sum(answered) / n,
            "format_rate": sum(fmt) / n,
            "completion_tokens": sum(len(c) for c in completion) / n,
            "rollout_seconds": time.perf_counter() - t0,
        }
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": completion,
            "logprobs": logprobs,
            "env_mask": env_mask,
            "env_rewards": env_rewards,
            "num_searches": searches,
        }
