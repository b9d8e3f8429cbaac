"""``env.integrations.areal`` with a REAL model (SmolLM2-135M-Instruct, as in
``test_evaluate_llm``): the agent against ``transformers serve`` playing the OpenAI-compatible
endpoint AReaL's proxy is, and the token-level ``ASearcherWorkflow`` through AReaL's own
``ArealOpenAI`` over an engine that generates with the model in this process (AReaL's engines
need SGLang or vLLM on a GPU), so the interactions carry the model's real tokens and logprobs."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from env_support import HOTPOT, hotpot_client

from env.integrations.areal import ASearcherAgent

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

SHORT = {"max_turns": 2, "topk": 2, "obs_max_chars": 1000, "reward": "f1:1,search_cost:-0.05"}


def _row() -> dict:
    with open(HOTPOT, encoding="utf-8") as f:
        return json.loads(next(f))


async def test_agent_against_real_endpoint(hotpot_root, llm_url, model_dir, tmp_path):  # noqa: F811
    record = tmp_path / "episodes.jsonl"
    agent = ASearcherAgent(
        env=SHORT | {"record_path": str(record)},
        sampling={"max_tokens": 32},
        model=str(model_dir),
        search_client=hotpot_client(hotpot_root),
    )
    async with httpx.AsyncClient(timeout=600) as http:
        reward = await agent.run(_row(), base_url=llm_url + "/v1", http_client=http, api_key="k")
    (episode,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert type(reward) is float
    assert episode["terminated"] or episode["truncated"]
    assert reward == pytest.approx(
        episode["rewards"]["f1"] - 0.05 * episode["rewards"]["search_cost"]
    )


class LocalEngine:
    """AReaL's ``InferenceEngine.agenerate`` over a transformers model in this process: the
    request's prompt tokens in, sampled tokens with their logprobs out (stop strings applied)."""

    def __init__(self, path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.calls = 0

    def _generate(self, req):
        from areal.api import ModelResponse

        g = req.gconfig
        ids = self.torch.tensor([req.input_ids])
        with self.torch.no_grad():
            out = self.model.generate(
                ids,
                max_new_tokens=g.max_new_tokens,
                do_sample=False,
                stop_strings=g.stop or None,
                tokenizer=self.tokenizer,
                output_scores=True,
                return_dict_in_generate=True,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        tokens = out.sequences[0, len(req.input_ids) :].tolist()
        logprobs = self.model.compute_transition_scores(
            out.sequences, out.scores, normalize_logits=True
        )[0].tolist()
        # AReaL's ModelResponse takes "stop" only for an EOS/pad end (output_tokens_without_stop
        # raises otherwise); a stop-string or budget end is reported as "length"
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        stop = "stop" if tokens and tokens[-1] in ends else "length"
        return ModelResponse(
            input_tokens=list(req.input_ids),
            output_tokens=tokens,
            output_logprobs=logprobs,
            output_versions=[0] * len(tokens),
            stop_reason=stop,
            tokenizer=req.tokenizer,
        )

    async def agenerate(self, req):
        self.calls += 1
        return await asyncio.to_thread(self._generate, req)

    def get_version(self) -> int:
        return 0


async def test_rollout_workflow_records_real_tokens(hotpot_root, model_dir):  # noqa: F811
    from areal.api.workflow_api import RolloutWorkflow

    from env.integrations.areal import ASearcherWorkflow

    engine = LocalEngine(model_dir)
    workflow = ASearcherWorkflow(
        engine.tokenizer,
        env=SHORT,
        sampling={"max_tokens": 24},
        search_client=hotpot_client(hotpot_root),
    )
    assert isinstance(workflow, RolloutWorkflow)
    interactions = await workflow.arun_episode(engine, _row())
    assert len(interactions) == engine.calls >= 1  # one recorded completion per policy turn
    last = list(interactions.values())[-1]
    assert last.reward is not None and isinstance(last.reward, float)
    for item in interactions.values():
        resp = item.model_response
        assert len(resp.output_tokens) == len(resp.output_logprobs) > 0
        assert all(lp <= 0.0 for lp in resp.output_logprobs)
        tensors = item.to_tensor_dict()
        assert float(tensors["rewards"].reshape(-1)[0]) == pytest.approx(item.reward)
