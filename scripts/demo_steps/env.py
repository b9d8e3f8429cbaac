"""Demo step: a few scripted search episodes through the env; prints one trajectory and scores.

The scripted policy searches the question, reads the first result's page (first chunk) and
answers with that page's title: on the demo corpus this is right for questions whose answer is
an article title.
"""

from __future__ import annotations

import re
from pathlib import Path

QUESTIONS = [
    (
        "Who was the 16th president of the United States, assassinated in 1865?",
        ["Abraham Lincoln", "Lincoln"],
    ),
    ("Which US state has Montgomery as its capital?", ["Alabama"]),
    ("What is the name for the fraction of sunlight a surface reflects?", ["Albedo"]),
    ("Which political philosophy rejects all involuntary, coercive hierarchy?", ["Anarchism"]),
]
_DOC = re.compile(r"\[Doc 1\]\((.*?)\):\n\"([^\n]*)\"")


def scripted_turn(observation: str, turn: int, state: dict) -> str:
    if turn == 0:
        return f"<think>I should search.</think>\n<search>{state['question']}</search>"
    if turn == 1:
        m = _DOC.search(observation)
        if not m:
            return "<answer>unknown</answer>"
        state["url"], state["title"] = m.groups()
        return f"<think>Read the top page.</think>\n<access>{state['url']}</access>"
    return f"<think>The page answers it.</think>\n<answer>{state.get('title', 'unknown')}</answer>"


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def run(root: Path, client=None) -> None:
    from env.search_env import SearchEnv

    owned = client is None
    if owned:
        from retriever.client import InProcessClient

        client = InProcessClient(root)
    try:
        env = SearchEnv(client, style="asearcher", topk=3, page_chars=1500, obs_max_chars=1500)
        rows = []
        for i, (question, answers) in enumerate(QUESTIONS):
            obs, _ = env.reset(seed=i, options={"question": question, "answers": answers})
            state = {"question": question}
            for turn in range(4):
                obs, reward, terminated, truncated, info = env.step(scripted_turn(obs, turn, state))
                if terminated or truncated:
                    break
            rows.append((question, info["prediction"], info["rewards"], info["counts"]))
            if i == 0:
                print("   trajectory of episode 1:")
                for t in env.trajectory()["turns"]:
                    print(f"     turn {t['turn']} [{t['kind']}] {_short(t['action'], 100)}")
                    if t["observation"]:
                        print(f"        -> {_short(t['observation'])}")
        print(f"   {'question':58} {'prediction':18} {'EM':>4} {'F1':>5} {'fmt':>4}  tools")
        for question, pred, r, counts in rows:
            tools = f"{counts.get('search', 0)}s/{counts.get('access', 0)}a"
            print(
                f"   {_short(question, 58):58} {_short(str(pred), 18):18} {r['em']:4.1f} {r['f1']:5.2f} {r['format']:4.1f}  {tools}"
            )
        mean_em = sum(r[2]["em"] for r in rows) / len(rows)
        print(f"   mean EM {mean_em:.2f} over {len(rows)} scripted episodes")
    finally:
        if owned:
            client.close()
