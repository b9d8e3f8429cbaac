"""Glue between the search environment and RL trainers: TRL, verl, SkyRL-gym, AReaL.

Nothing here is imported by ``import env``, and no trainer is a dependency of this package:
each module imports its trainer lazily, inside the functions that need it.

- ``env.integrations.scoring``: the reward functions applied to a finished response's text.
- ``env.integrations.trl``: a ``GRPOTrainer`` ``environment_factory`` (tool-calling models),
  reward functions with TRL's signature, and dataset rows; ``trl_rollout`` is the multi-turn
  ``rollout_func`` for tag-style policies (any chat model).
- ``env.integrations.verl``: ``compute_score`` and search/access tools of verl's agent loop.
- ``env.integrations.skyrl``: the environment as a registered ``skyrl_gym`` environment.
- ``env.integrations.areal``: an AReaL 1.0 agent (``async run(data, **extra_kwargs)`` behind
  AReaL's OpenAI proxy) and ``RolloutWorkflow`` (token level), ASearcher's server discovery.
"""
