"""``import env`` (and every env module) must not import torch, faiss, transformers or index_build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_env_is_light():
    code = (
        "import sys, env, env.search_env, env.batched, env.tasks, env.rewards, env.evaluate, env.policy\n"
        "import gymnasium as gym\n"
        "gym.make(env.ENV_ID)\n"
        "heavy = sorted(m for m in ('torch', 'faiss', 'transformers', 'index_build', 'bm25s', 'sentence_transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"
