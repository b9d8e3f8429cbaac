"""Screenshots of every /ui view for the README, taken in headless Chromium.

Builds the /ui test data (HotpotQA paragraphs plus hostile pages, BM25 and, unless
``--no-dense``, a MiniLM dense part, so BM25, dense and hybrid can be compared), writes real
env trajectories over it, serves it, sends some traffic, and saves one PNG per view:

    python scripts/ui_screenshots.py [--out docs/ui]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

log = logging.getLogger("ui_screenshots")
QUERY = "fight song of the university in Lawrence Kansas"


def add_dense(root: Path) -> None:
    from index_build.__main__ import main as build
    from retriever.dense.encoders import packaged_model_path

    model = str(packaged_model_path())
    assert build(["encode", "--index", str(root), "--model", model, "--name", "minilm"]) == 0
    assert build(["faiss", "--index", str(root), "--name", "minilm", "--no-progress"]) == 0


def traffic(base: str, names: list[str], stop: threading.Event) -> None:
    """A few clients' worth of searches (new queries, so they miss the cache) over every
    retriever, so the stats page has something to draw."""
    import httpx

    words = ["kansas", "airport", "apple remote", "song", "university", "river", "film", "band"]
    with httpx.Client(base_url=base, timeout=30) as client:
        i = 0
        while not stop.is_set():
            batch = [f"{words[(i + j) % len(words)]} {i}" for j in range(1 + i % 4)]
            body = {"queries": batch, "topk": 5, "retriever": names[i % len(names)]}
            try:
                client.post("/retrieve", json=body)
            except httpx.HTTPError:
                return  # the server is shutting down
            i += 1
            time.sleep(0.01)


def shrink(path: Path) -> None:
    """Fewer colours, same pixels to the eye: keeps the README's PNGs small."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "ui"), help="folder for the PNGs")
    ap.add_argument("--no-dense", action="store_true", help="BM25 only (no MiniLM encoding)")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=760)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from ui_browser import Browser, find_chromium
    from ui_support import LiveServer, build_index, write_trajectories

    from retriever.server.app import create_app
    from retriever.server.service import RetrievalService, ServiceConfig

    if find_chromium() is None:
        log.error("error: no chromium (apt-get install chromium, or set $CHROMIUM)")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-shots-") as tmp:
        root = build_index(Path(tmp) / "index")
        if not args.no_dense:
            add_dense(root)
        path = Path(tmp) / "trajectories.jsonl"
        records = write_trajectories(path, root)
        config = ServiceConfig(index=str(root), trajectories=(str(path),))
        service = RetrievalService(config).start()
        stop = threading.Event()
        try:
            with (
                LiveServer(create_app(service)) as base,
                Browser(None, args.width, args.height) as b,
            ):
                names = service.names
                other = next((n for n in names if n.startswith("dense-")), "bm25")
                b.open(
                    f"{base}/ui?q={QUERY.replace(' ', '+')}&retriever=bm25&k=5&compare={other}&chars=300"
                )
                b.screenshot(out / "search.png")
                b.click("#col-0 .hit .title")
                b.wait_for("!document.getElementById('reader').hidden")
                b.wait_idle()
                b.screenshot(out / "page.png")
                b.open(f"{base}/ui/trajectories")
                b.screenshot(out / "trajectories.png")
                line = next(i + 1 for i, r in enumerate(records) if r["counts"].get("access"))
                b.open(f"{base}/ui/trajectories?file=0&episode={line}")
                b.screenshot(out / "episode.png")
                threading.Thread(target=traffic, args=(base, names, stop), daemon=True).start()
                b.open(f"{base}/ui/stats?every=1", ready="+document.body.dataset.polls >= 12")
                b.screenshot(out / "stats.png")
                stop.set()
                if b.errors:
                    log.error("the pages reported errors: %s", b.errors)
                    return 1
        finally:
            stop.set()
            service.stop()
    for name in ("search.png", "page.png", "trajectories.png", "episode.png", "stats.png"):
        shrink(out / name)
        log.info("%s: %.0f KB", out / name, (out / name).stat().st_size / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
