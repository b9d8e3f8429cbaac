"""``/ui``: a search playground, a trajectory viewer and a live stats page on the server.

An app of its own inside the server, which only mounts it: plain HTML, CSS and JavaScript from
``static/`` (no build step, no network: the pages talk only to this server's API), the routes
(``routes``), the trajectory index (``trajectories``), its table rows (``rows``) and the metrics
as JSON (``stats``). The pages themselves hold no data and are served without the token; the
JSON they fetch (``/retrieve``, ``/access``, ``/info``, ``/ui/api/...``) needs it when the
server has one. Every piece of corpus and trajectory text is inserted as text, never as HTML,
and a strict Content-Security-Policy forbids inline script besides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI

from .routes import build_router
from .trajectories import open_files

log = logging.getLogger(__name__)

__all__ = ["build_router", "mount_ui"]


def mount_ui(app: FastAPI, service, trajectories: Sequence[str] = ()) -> None:
    """Add ``/ui`` to ``app``; ``trajectories`` are ``env.evaluate`` JSONL files to browse
    (missing files are refused now, not on the first page view)."""
    files = open_files(trajectories)
    app.include_router(build_router(service, files, service.config.token))
    if files:
        log.info("/ui/trajectories: %s", ", ".join(f.path for f in files))
