"""What an import pulls in: a trainer that wants the env or the HTTP client pays nothing for
torch, faiss, the server side or Ray (the dependency rule of docs/design.md, checked in a fresh
interpreter)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

ROOT = REPO


def heavy_after(code: str, heavy: tuple[str, ...]) -> str:
    """Run ``code`` in a fresh interpreter; the comma-joined names of ``heavy`` it imported."""
    probe = (
        f"{code}\nimport sys\nprint(','.join(sorted(m for m in {heavy!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_env_is_light():
    code = (
        "import env, env.search_env, env.batched, env.tasks, env.rewards, env.evaluate, env.policy\n"
        "import gymnasium as gym\n"
        "gym.make(env.ENV_ID)"
    )
    heavy = ("torch", "faiss", "transformers", "index_build", "bm25s", "sentence_transformers")
    assert heavy_after(code, heavy) == ""


def test_import_client_is_light():
    code = "import retriever.client\nretriever.client.HTTPClient('http://127.0.0.1:1')"
    heavy = ("numpy", "pydantic", "fastapi", "retriever.server", "retriever.store")
    heavy += ("retriever.server.batching", "retriever.wire")
    assert heavy_after(code, heavy) == ""


def test_importing_the_package_does_not_import_ray():
    code = (
        "import retriever, retriever.server.app, retriever.client, retriever.server.service\n"
        "import retriever.client.balancer, index_build.__main__\n"
        "index_build.__main__.build_parser()"
    )
    assert heavy_after(code, ("ray",)) == ""


def test_entry_points_make_openmp_threads_sleep_before_torch_loads():
    """``OMP_WAIT_POLICY`` is read once, when torch's (or faiss's) OpenMP runtime loads: the
    server's ``configure_process`` sets PASSIVE before anything imports them, and a user's own
    choice wins (spinning threads cost 10x CPU per query on a busy machine: cli.py)."""
    code = (
        "import os\nos.environ.pop('OMP_WAIT_POLICY', None)\n"
        "from retriever.server.app import build_parser\nfrom retriever.cli import configure_process\n"
        "configure_process()\nprint(os.environ['OMP_WAIT_POLICY'])"
    )
    out = heavy_after(code, ("torch", "faiss"))
    assert out == "PASSIVE", out  # and neither torch nor faiss loaded yet
    code = "import os\nos.environ['OMP_WAIT_POLICY'] = 'ACTIVE'\n" + code.split("\n", 2)[2]
    assert heavy_after(code, ("torch",)).splitlines()[0] == "ACTIVE"
