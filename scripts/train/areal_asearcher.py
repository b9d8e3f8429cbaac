"""Train a search agent with AReaL 1.0 (ASearcher's trainer) on a local retrieval server.

    python -m retriever.server --index INDEX --host 0.0.0.0 --save-address-to $RAG_SERVER_ADDR_DIR &
    python scripts/train/areal_asearcher.py --config scripts/train/areal_asearcher_local.yaml \\
        train_dataset.path=ASearcher-Base-35k.jsonl [actor.path=...] [search_env.style=tool-call]

AReaL's launcher config (``GRPOConfig``) plus three sections of ours: ``search_env`` (the
``EnvConfig`` fields: style, topk, budgets, reward spec), ``agent_sampling`` (the
``SamplingConfig`` of each turn) and ``search_server`` (a URL; null reads
``$RAG_SERVER_ADDR_DIR``). The agent is ``env.integrations.areal.ASearcherAgent``, run behind
AReaL's OpenAI proxy (``rollout.agent`` of the config).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from areal.api.cli_args import GRPOConfig, load_expr_config

AGENT = "env.integrations.areal.ASearcherAgent"


@dataclass
class ASearcherRLConfig(GRPOConfig):
    search_env: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "env.types.EnvConfig fields"}
    )
    agent_sampling: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "env.policy.SamplingConfig fields"}
    )
    search_server: str | None = field(
        default=None, metadata={"help": "retrieval server URL; null: $RAG_SERVER_ADDR_DIR"}
    )


def agent_kwargs(config: ASearcherRLConfig) -> dict[str, Any]:
    """The ``workflow_kwargs`` AReaL builds ``ASearcherAgent`` from."""
    return {
        "server": config.search_server,
        "env": dict(config.search_env),
        "sampling": dict(config.agent_sampling),
    }


def main(argv: list[str]) -> int:
    from areal import PPOTrainer
    from datasets import load_dataset

    config, _ = load_expr_config(argv, ASearcherRLConfig)
    if config.rollout.agent.agent_cls_path != AGENT:
        raise SystemExit(f"rollout.agent.agent_cls_path must be {AGENT}")
    train = load_dataset("json", data_files=config.train_dataset.path, split="train")
    with PPOTrainer(config, train_dataset=train) as trainer:
        trainer.train(workflow=AGENT, workflow_kwargs=agent_kwargs(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
