"""Run a peer's retrieval server file unmodified, on CPU, on a port we choose (``peers.py``).

Search-R1's ``retrieval_server.py`` sets its globals under ``__main__``, calls ``.cuda()`` and
``.half()`` on the model and binds ``0.0.0.0:8000``; rLLM's ``rag_server.py`` loads
``intfloat/e5-base-v2`` by name. Rather than edit their files, this module patches the few calls
that need a GPU, the network or a model hub, then executes the file as ``__main__``:

    PYTHONPATH=scripts/bench python -c "import peer_shim, sys; peer_shim.run(sys.argv[1:])" \\
        FILE ARGS...

What is patched (each only when its environment variable says so, so a test can check each):

- ``PEER_CPU=1``: ``Module.cuda`` / ``Tensor.cuda`` return the object unchanged, and
  ``Module.half`` too (fp16 matmuls on CPU are emulated and several times slower: a CPU user of
  Search-R1 would run fp32, the flag it hard-codes exists for its GPUs);
- ``PEER_PORT=N``: ``uvicorn.run`` serves on ``127.0.0.1:N`` with warnings-only logs;
- ``PEER_MODEL_ALIAS=NAME=PATH``: ``SentenceTransformer(NAME)`` loads ``PATH`` instead.

Not a script (no ``__main__`` block): the benchmark starts it as shown above.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence


def _same(self, *args, **kwargs):
    return self


def patch_cpu() -> None:
    """``.cuda()`` and ``.half()`` become no-ops: the peer's model stays fp32 on the CPU."""
    import torch

    torch.nn.Module.cuda = _same
    torch.Tensor.cuda = _same
    torch.nn.Module.half = _same


def patch_port(port: int) -> None:
    """``uvicorn.run(app, host=..., port=...)`` serves on ``127.0.0.1:port`` instead."""
    import uvicorn

    real = uvicorn.run

    def run(app, *args, **kwargs):
        kwargs.update(host="127.0.0.1", port=port, log_level="warning")
        return real(app, **kwargs)

    uvicorn.run = run


def patch_model_alias(alias: str) -> None:
    """``SentenceTransformer("NAME")`` loads the folder ``PATH`` (``alias`` is ``NAME=PATH``)."""
    import sentence_transformers

    name, _, path = alias.partition("=")
    base = sentence_transformers.SentenceTransformer

    class Aliased(base):
        def __init__(self, model_name_or_path=None, *args, **kwargs):
            if model_name_or_path == name:
                model_name_or_path = path
            super().__init__(model_name_or_path, *args, **kwargs)

    sentence_transformers.SentenceTransformer = Aliased


def run(argv: Sequence[str]) -> None:
    """Apply the patches the environment asks for, then run ``argv[0]`` as ``__main__``."""
    if os.environ.get("PEER_CPU") == "1":
        patch_cpu()
    if os.environ.get("PEER_PORT"):
        patch_port(int(os.environ["PEER_PORT"]))
    if os.environ.get("PEER_MODEL_ALIAS"):
        patch_model_alias(os.environ["PEER_MODEL_ALIAS"])
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")
