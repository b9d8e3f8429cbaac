"""``make demo``: the whole stack on the bundled real sample, offline.

Builds the passage store from the Wikipedia XML sample, then (as each part exists) the BM25 and
MiniLM dense indexes, serves them, queries the server with the client, and runs scripted search
episodes through the environment.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

STEPS = ["corpus", "bm25", "dense", "server", "env"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-index", help="index root to build (default demo-index)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated steps to run")
    args = ap.parse_args(argv)
    root = Path(args.out)
    steps = args.steps.split(",")
    for step in steps:
        if step == "env" and "server" in steps:
            continue  # ran inside the server step, against the live server
        try:
            module = importlib.import_module(f"demo_steps.{step}")
        except ModuleNotFoundError:
            print(f"== {step}: not available yet, skipped")
            continue
        print(f"\n== {step}")
        t = time.perf_counter()
        if step == "server" and "env" in steps:
            env_step = importlib.import_module("demo_steps.env")

            def episodes(client, env_step=env_step):
                print("\n== env (scripted episodes against the demo server)")
                env_step.run(root, client)

            module.run(root, then=episodes)
        else:
            module.run(root)
        print(f"   ({step} took {time.perf_counter() - t:.1f} s)")
    print(f"\ndemo done: index root {root.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
