"""Run a policy behind an OpenAI-compatible endpoint through the env over QA files; score it.

    python -m env.evaluate --server http://127.0.0.1:8000 --policy-url http://127.0.0.1:8001 \\
        --model Qwen/Qwen2.5-7B-Instruct --data nq.jsonl hotpotqa.jsonl --style asearcher \\
        --concurrency 64 --out eval-out [--completions] [--samples 4] [--judge-url URL --judge-model M]

Prints per-dataset EM / cover-EM / F1 (Avg@N and Pass@N with ``--samples N``), the judge score
(with its parse failures) and tool statistics; writes ``trajectories.jsonl`` and
``summary.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from retriever.cli import add_config_arguments, fail
from retriever.cli import config_from_args as build_config
from retriever.errors import RetrieverError

from .batched import BatchedSearchEnv
from .errors import ConfigError, PolicyError
from .policy import OpenAIClient, SamplingConfig, judge
from .styles import get_style
from .tasks import load_tasks
from .types import BROWSE_KINDS, EnvConfig, Task
from .visit_config import VisitConfig

log = logging.getLogger(__name__)
METRICS = ("em", "cover_em", "f1", "format")
# the extractor's limits that are flags (--visit-max-input-tokens, ...)
VISIT_FLAGS = ("max_input_tokens", "max_output_tokens", "retries", "timeout", "concurrency")


# env settings an evaluation does not take as flags (it records trajectories itself; token
# budgets need a tokenizer object)
# (the visit extractor has its own --visit-* flags)
ENV_FLAGS_SKIPPED = ("tokenizer", "obs_max_tokens", "max_context_tokens", "record_path", "visit")


def stop_strings(style: str) -> list[str]:
    """The stop strings the policy server is sent: each closing tag of the style's tools."""
    return list(get_style(style).stops)


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class EvalConfig:
    data: tuple[str, ...]
    model: str = field(metadata=_help("model name the policy server knows"))
    policy_url: str = field(
        metadata=_help("OpenAI-compatible base URL of the policy (vLLM, SGLang)")
    )
    env: EnvConfig
    completions: bool = field(default=False, metadata=_help("plain /v1/completions (base models)"))
    concurrency: int = field(default=32, metadata=_help("episodes in flight"))
    samples: int = field(default=1, metadata=_help("runs per question: Avg@N and Pass@N"))
    limit: int | None = field(
        default=None, metadata=_help("first N questions of each file (after shuffling)")
    )
    shuffle_seed: int | None = None
    sampling: SamplingConfig = SamplingConfig()
    judge_url: str | None = field(
        default=None, metadata=_help("OpenAI-compatible URL of an LLM judge")
    )
    judge_model: str | None = field(default=None, metadata=_help("judge model name"))
    policy_timeout: float = field(
        default=600.0,
        metadata=_help(
            "seconds one policy or judge request may take in all (also a reply that trickles in)"
        ),
    )
    policy_retries: int = field(
        default=3, metadata=_help("times a lost, timed-out or 429/5xx policy request is resent")
    )
    api_key: str | None = None
    out: str | None = field(
        default=None, metadata=_help("folder for trajectories.jsonl and summary.json")
    )


async def run_episode(
    slot: int, benv: BatchedSearchEnv, policy: OpenAIClient, task: Task, cfg: EvalConfig
) -> dict:
    """One question through the env; returns its trajectory plus the policy's messages."""
    style = benv.episodes[slot].style  # the config's style with its tools (EnvConfig.tools)
    stops = list(style.stops)
    obs, infos = await benv.areset(options=[task.options()], indices=[slot])
    prompt, messages = obs[0], [dict(m) for m in infos[0]["messages"]]
    first = list(messages)
    text_so_far = prompt
    episode = benv.episodes[slot]
    history: list[tuple[str, list | None]] = []  # each turn's text and native tool calls
    error = None
    turn = 0
    while True:
        try:
            if cfg.completions:
                text, choice = await policy.complete(text_so_far, stops, cfg.sampling)
            else:
                text, choice = await policy.chat(messages, stops, cfg.sampling)
        except PolicyError as exc:
            error = str(exc)
            log.warning("policy failed on %s: %s", task.id, exc)
            break
        obs, _, terminated, truncated, _ = await benv.astep_one(slot, text)
        native = (choice.get("message") or {}).get("tool_calls")
        history.append((text, native))
        if cfg.env.context == "full":
            text_so_far += text + obs
            messages.extend(style.chat_messages(text, obs, native, turn))
        else:  # old observations may have become stubs: the history is built again
            shown = episode.shown_observations()
            text_so_far = prompt + "".join(t + o for (t, _), o in zip(history, shown))
            messages = list(first)
            for k, ((t, calls), o) in enumerate(zip(history, shown)):
                messages.extend(style.chat_messages(t, o, calls, k))
        turn += 1
        if terminated or truncated:
            break
    trajectory = benv.episodes[slot].trajectory()
    trajectory.update(policy_error=error, task_id=task.id, messages=messages)
    return trajectory


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def evidence_metrics(records: list[dict]) -> dict:
    """The retrieval-aware quantities (``env.evidence``) of episode records: evidence recall
    over the episodes whose task has gold evidence (None when none has), the others over all.

    >>> m = evidence_metrics([{"meta": {"supporting_titles": ["A"]}, "rewards": {"evidence_recall": 1.0}},
    ...                       {"meta": {}, "rewards": {"search_cost": 2.0, "redundancy": 1.0}}])
    >>> m["recall"], m["with_gold"], m["search_cost"], m["redundant"]
    (1.0, 1, 1.0, 0.5)
    """
    from .types import GOLD_KEYS

    def has_gold(r: dict) -> bool:
        meta = r.get("meta") or {}
        return any(meta.get(k) for k in GOLD_KEYS)

    def mean(name: str, recs: list[dict]) -> float:
        return _mean(float((r.get("rewards") or {}).get(name, 0.0)) for r in recs)

    gold = [r for r in records if has_gold(r)]
    return {
        "with_gold": len(gold),
        "recall": mean("evidence_recall", gold) if gold else None,
        "answer_in_evidence": mean("answer_in_evidence", records),
        "info_gain": mean("info_gain", records),
        "redundant": mean("redundancy", records),
        "search_cost": mean("search_cost", records),
    }


def visit_metrics(records: list[dict]) -> dict:
    """Totals of the visit tool over episode records: visits, tool errors, cache hits and the
    extractor's cost (each visit turn records it under ``visit``).

    >>> t = {"kind": "visit", "error": None, "visit": {"cached": False, "prompt_tokens": 90, "completion_tokens": 9, "seconds": 0.5}}
    >>> visit_metrics([{"turns": [t, dict(t, error="visit failed", visit={"cached": True})]}])
    {'visits': 2, 'errors': 1, 'cache_hits': 1, 'prompt_tokens': 90, 'completion_tokens': 9, 'seconds': 0.5}
    """
    out = dict.fromkeys(("visits", "errors", "cache_hits", "prompt_tokens", "completion_tokens"), 0)
    seconds = 0.0
    for r in records:
        for t in r.get("turns") or []:
            if t.get("kind") != "visit":
                continue
            cost = t.get("visit") or {}
            out["visits"] += 1
            out["errors"] += t.get("error") is not None
            out["cache_hits"] += bool(cost.get("cached"))
            out["prompt_tokens"] += int(cost.get("prompt_tokens") or 0)
            out["completion_tokens"] += int(cost.get("completion_tokens") or 0)
            seconds += float(cost.get("seconds") or 0.0)
    return out | {"seconds": round(seconds, 3)}


def summarize(records: list[dict], samples: int) -> dict:
    """Per-dataset metrics of episode records (``dataset``, ``task_id``, ``rewards``, ...)."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_dataset[r["dataset"]].append(r)
    out = {}
    for name, recs in by_dataset.items():
        by_question: dict[str, list[dict]] = defaultdict(list)
        for r in recs:
            by_question[r["task_id"]].append(r)
        row: dict = {"questions": len(by_question), "episodes": len(recs)}
        for m in METRICS:
            row[m] = _mean(r["rewards"][m] for r in recs)
        if samples > 1:
            row[f"avg@{samples}"] = {
                m: _mean(_mean(r["rewards"][m] for r in q) for q in by_question.values())
                for m in METRICS[:3]
            }
            row[f"pass@{samples}"] = {
                m: _mean(max(r["rewards"][m] for r in q) for q in by_question.values())
                for m in METRICS[:3]
            }
        row["tools"] = {
            "turns": _mean(r["num_turns"] for r in recs),
            "searches": _mean(r["counts"].get("search", 0) for r in recs),
            "accesses": _mean(r["counts"].get("access", 0) for r in recs),
            # the browser tools' calls (open, find, sections: env.browser)
            "browses": _mean(sum(r["counts"].get(k, 0) for k in BROWSE_KINDS) for r in recs),
            "invalid": _mean(r["counts"].get("invalid", 0) for r in recs),
            "max_turns": max((r["num_turns"] for r in recs), default=0),
        }
        visits = visit_metrics(recs)
        if visits["visits"]:
            row["tools"]["visits"] = visits["visits"] / len(recs)
            row["tools"]["visit_errors"] = visits["errors"] / len(recs)
            row["visit"] = visits
        row["evidence"] = evidence_metrics(recs)
        row["answered"] = sum(r["prediction"] is not None for r in recs)
        row["truncated"] = sum(bool(r["truncated"]) for r in recs)
        row["policy_errors"] = sum(r.get("policy_error") is not None for r in recs)
        judged = [r for r in recs if "judge" in r]
        if judged:
            verdicts = [r["judge"] for r in judged if r["judge"] is not None]
            row["judge"] = {
                "score": _mean(float(v) for v in verdicts),
                "judged": len(verdicts),
                "parse_failures": sum(
                    r["judge"] is None and r["prediction"] is not None for r in judged
                ),
            }
        out[name] = row
    return out


def format_table(summary: dict) -> str:
    header = f"{'dataset':24} {'n':>6} {'EM':>6} {'coverEM':>8} {'F1':>6} {'judge':>6} {'turns':>6} {'search':>7} {'access':>7} {'invalid':>8}"
    lines = [header, "-" * len(header)]
    for name, row in summary.items():
        j = row.get("judge", {}).get("score")
        t = row["tools"]
        lines.append(
            f"{name[:24]:24} {row['episodes']:>6} {row['em']:6.3f} {row['cover_em']:8.3f} {row['f1']:6.3f} "
            f"{'-' if j is None else f'{j:.3f}':>6} {t['turns']:6.2f} {t['searches']:7.2f} {t['accesses']:7.2f} {t['invalid']:8.2f}"
        )
        for key in row:
            if key.startswith(("avg@", "pass@")):
                vals = " ".join(f"{m}={v:.3f}" for m, v in row[key].items())
                lines.append(f"  {key}: {vals}")
        e = row.get("evidence") or {}
        v = row.get("visit")
        if v:
            lines.append(
                f"  visit: {v['visits']} visits, {v['errors']} errors, {v['cache_hits']} cached, "
                f"extractor {v['prompt_tokens']}+{v['completion_tokens']} tokens in {v['seconds']:.1f} s"
            )
        if e.get("recall") is not None or e.get("search_cost"):
            recall = "-" if e.get("recall") is None else f"{e['recall']:.3f}"
            lines.append(
                f"  evidence: recall={recall} (gold: {e['with_gold']}) "
                f"answer_in_evidence={e['answer_in_evidence']:.3f} info_gain={e['info_gain']:.2f} "
                f"redundant={e['redundant']:.2f} search_cost={e['search_cost']:.2f}"
            )
        if "judge" in row and row["judge"]["parse_failures"]:
            lines.append(f"  judge parse failures: {row['judge']['parse_failures']}")
    return "\n".join(lines)


async def evaluate(cfg: EvalConfig, client) -> dict:
    """Run every (dataset, question, sample) episode at ``cfg.concurrency``; return the summary."""
    jobs: list[tuple[str, Task, int]] = []
    for path in cfg.data:
        name = Path(path).name.split(".")[0]
        for task in load_tasks(path, shuffle_seed=cfg.shuffle_seed, limit=cfg.limit):
            jobs.extend((name, task, s) for s in range(cfg.samples))
    concurrency = max(1, min(cfg.concurrency, len(jobs) or 1))
    benv = BatchedSearchEnv(client, num_envs=concurrency, config=cfg.env)
    limits = {"timeout": cfg.policy_timeout, "retries": cfg.policy_retries}
    policy = OpenAIClient(cfg.policy_url, cfg.model, api_key=cfg.api_key, **limits)
    judge_client = (
        OpenAIClient(cfg.judge_url, cfg.judge_model, api_key=cfg.api_key, **limits)
        if cfg.judge_url
        else None
    )
    out_dir = Path(cfg.out) if cfg.out else None
    traj_file = None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        traj_file = open(out_dir / "trajectories.jsonl", "w", encoding="utf-8")
    records: list[dict] = []
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    t0 = time.perf_counter()

    async def worker(slot: int) -> None:
        while not queue.empty():
            name, task, sample = queue.get_nowait()
            rec = await run_episode(slot, benv, policy, task, cfg)
            rec.update(dataset=name, sample=sample)
            if judge_client is not None:
                if rec["prediction"] is None:
                    rec["judge"], rec["judge_reply"] = False, None
                else:
                    rec["judge"], rec["judge_reply"] = await judge(
                        judge_client, task.question, list(task.answers), rec["prediction"]
                    )
            records.append(rec)
            if traj_file is not None:
                traj_file.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        if traj_file is not None:
            traj_file.close()
        await policy.aclose()
        await benv.aclose()
        if judge_client is not None:
            await judge_client.aclose()
    summary = {
        "model": cfg.model,
        "style": cfg.env.style,
        "samples": cfg.samples,
        "completions": cfg.completions,
        "visit_model": None if cfg.env.visit is None else cfg.env.visit.model,
        "seconds": round(time.perf_counter() - t0, 3),
        "datasets": summarize(records, cfg.samples),
    }
    if out_dir:
        tmp = out_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.replace(tmp, out_dir / "summary.json")
    return summary


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from ``EvalConfig``, ``EnvConfig`` and ``SamplingConfig``: the defaults
    live in the dataclasses only."""
    p = argparse.ArgumentParser(prog="python -m env.evaluate", description=__doc__.split("\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="retrieval server URL (python -m retriever.server)")
    where.add_argument("--index", help="index root, searched in this process instead of a server")
    p.add_argument(
        "--data", nargs="+", required=True, help="QA files (jsonl, json, parquet, DPR tsv)"
    )
    add_config_arguments(
        p, EvalConfig, skip=("data", "env", "sampling", "api_key"), required=("model", "policy_url")
    )
    add_config_arguments(p.add_argument_group("environment"), EnvConfig, skip=ENV_FLAGS_SKIPPED)
    add_config_arguments(p.add_argument_group("sampling"), SamplingConfig)
    visit = p.add_argument_group("visit extractor (with --tools ...,visit)")
    visit.add_argument("--visit-url", help="OpenAI-compatible base URL of the extractor model")
    visit.add_argument("--visit-model", help="extractor model name")
    visit.add_argument("--visit-api-key", help="its API key (default: --api-key)")
    for name in VISIT_FLAGS:
        default = getattr(VisitConfig, name)
        visit.add_argument(
            "--visit-" + name.replace("_", "-"), dest="visit_" + name, type=type(default),
            default=default, help=f"{name.replace('_', ' ')} (default {default})",
        )  # fmt: skip
    visit.add_argument("--visit-cache", help="JSONL file of cached visit results")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    if (getattr(args, "judge_url", None) is None) != (getattr(args, "judge_model", None) is None):
        raise ConfigError("--judge-url and --judge-model go together")
    samples = getattr(args, "samples", EvalConfig.samples)
    if samples < 1 or getattr(args, "concurrency", 1) < 1:
        raise ConfigError("--samples and --concurrency must be >= 1")
    timeout = getattr(args, "policy_timeout", EvalConfig.policy_timeout)
    retries = getattr(args, "policy_retries", EvalConfig.policy_retries)
    if not timeout > 0 or retries < 0:
        raise ConfigError(
            f"--policy-timeout must be > 0 and --policy-retries >= 0, got {timeout} and {retries}"
        )
    env = build_config(EnvConfig, args, visit=visit_config_from_args(args, args.api_key))
    sampling = build_config(SamplingConfig, args)
    if not hasattr(args, "temperature") and samples > 1:
        sampling = dataclasses.replace(sampling, temperature=1.0)  # N samples must differ
    return build_config(
        EvalConfig,
        args,
        data=tuple(args.data),
        env=env,
        sampling=sampling,
        api_key=args.api_key,
    )


def visit_config_from_args(args: argparse.Namespace, api_key: str | None) -> VisitConfig | None:
    """The visit extractor of ``--visit-*`` flags (None without ``--visit-url``)."""
    url, model = getattr(args, "visit_url", None), getattr(args, "visit_model", None)
    if (url is None) != (model is None):
        raise ConfigError("--visit-url and --visit-model go together")
    if url is None:
        return None
    limits = {n: getattr(args, "visit_" + n) for n in VISIT_FLAGS if hasattr(args, "visit_" + n)}
    key = getattr(args, "visit_api_key", None) or api_key
    return VisitConfig(url, model, api_key=key, cache_path=args.visit_cache, **limits)


async def _evaluate_and_close(cfg: EvalConfig, client) -> dict:
    try:
        return await evaluate(cfg, client)
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    from retriever.cli import configure_process

    configure_process()
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = config_from_args(args)
        from retriever.client import HTTPClient, InProcessClient

        client = HTTPClient(args.server) if args.server else InProcessClient(args.index)
        summary = asyncio.run(_evaluate_and_close(cfg, client))
    except (ConfigError, PolicyError, OSError, ValueError, RetrieverError) as exc:
        return fail(str(exc))  # bad settings or files, or the search server is down: one line
    print(format_table(summary["datasets"]))
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k != "datasets"}
            | {"datasets": {n: {m: r[m] for m in METRICS} for n, r in summary["datasets"].items()}}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
