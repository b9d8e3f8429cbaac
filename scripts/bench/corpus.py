"""Corpus pipeline throughput and store memory.

1. The 30k-article WikiExtractor corpus (../shared/data) to a store: MB/s, passages/s, peak RSS.
2. The XML sample repeated to a useful size (ids and titles made unique per copy): our reader
   (1 and 2 worker processes) against `wikiextractor` from PyPI on the same file, in the same
   run; CPU seconds are counted over all processes, so "per core" compares fairly.
3. Opening the store: time and RSS of a fresh process that opens it and reads rows.

With ``--store LAYOUT...`` (``spans``, ``spans,zstd``) it measures store layouts instead, against
the ``jsonl`` store on the same corpus: bytes on disk per byte of page text, build time, random
passage reads/s, page reads/s and title lookups/s, each layout built and read in turn
(alternating order, fresh reader processes), medians of ``--repeat`` rounds.

    python scripts/bench/corpus.py [--repeat 3] [--xml-copies 8]
    python scripts/bench/corpus.py --store spans spans,zstd [--repeat 3]
    python scripts/bench/corpus.py --smoke  # the bundled 40-article slice, XML once, one run

With ``--block-sweep`` it sweeps the ``spans,zstd`` text stream's knobs on one corpus instead:
zstd block size x trained dictionary (none or ``DICT_BYTES``) x blocks cut at fixed offsets or
at passage starts and ends (as the store writes them), each stream written and read
through the store's own ``TextSink`` / ``PageText`` (the same random passage spans and pages,
fresh reader processes), against the uncompressed stream read the same way, in the same run.

    python scripts/bench/corpus.py --block-sweep [--from-store ROOT] [--block-sizes 4096 65536]
"""

from __future__ import annotations

import argparse
import bz2
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import common as c
import numpy as np

STORES = ("jsonl", "spans", "spans,zstd")  # retriever.store.writer.STORES

MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024}))
"""
OPEN = r"""
import json, resource, sys, time, random
import psutil
proc = psutil.Process()
base = proc.memory_info().rss
t = time.perf_counter()
from retriever.store.docstore import DocStore
s = DocStore.open(sys.argv[1])
opened = time.perf_counter() - t
rng = random.Random(0)
t = time.perf_counter()
for _ in range(2000):
    p = s.get(rng.randrange(len(s)))
    assert s.find_title(p.title)
reads = (time.perf_counter() - t) / 2000
print(json.dumps({"n": len(s), "open_s": opened, "rss_mb": proc.memory_info().rss / 2**20,
                  "rss_python_mb": base / 2**20, "us_per_row_and_lookup": reads * 1e6}))
"""


READS = r"""
import json, random, sys, time
from retriever.store.docstore import DocStore
s = DocStore.open(sys.argv[1])
n = int(sys.argv[2])
rng = random.Random(1)
rows = [rng.randrange(len(s)) for _ in range(n)]
titles = [s.get(r).title for r in rows[: n // 4]]  # read first: lookups alone are timed
pages = [rng.randrange(s.num_pages) for _ in range(n // 4)] if s.num_pages else []
s2 = DocStore.open(sys.argv[1])  # a fresh reader: no block of the reads below is cached
t = time.perf_counter()
for r in rows:
    s2.get(r)
reads = n / (time.perf_counter() - t)
t = time.perf_counter()
for title in titles:
    assert s2.find_title(title)
lookups = len(titles) / (time.perf_counter() - t)
t = time.perf_counter()
for r in pages:
    s2.get_page(r)
page_reads = len(pages) / max(time.perf_counter() - t, 1e-9)
print(json.dumps({"reads_per_s": reads, "lookups_per_s": lookups, "pages_per_s": page_reads}))
"""


SPAN_READS = r"""
import json, random, sys, time
import numpy as np
from pathlib import Path
from retriever.store.pagetext import PageText
from retriever.store.spans import SPAN, PATCH
folder, n, store = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
entry = {"path": "pages.text.zst" if store["compression"] else "pages.text"}
spans = np.load(folder / "passages.spans.npy", mmap_mode="r")
offsets = np.load(folder / "pages.offsets.npy")
rng = random.Random(1)
rows = [r for r in (rng.randrange(len(spans)) for _ in range(n)) if spans[r]["flags"] & 3 != PATCH]
cuts = [(int(spans[r]["start"]), int(spans[r]["start"] + spans[r]["length"])) for r in rows]
pages = [rng.randrange(len(offsets) - 1) for _ in range(n // 4)]
pages = [(int(offsets[p]), int(offsets[p + 1])) for p in pages]
text = PageText(Path(store.pop("folder")), entry, store)  # fresh: no block cached
t = time.perf_counter()
for a, b in cuts:
    text.read(a, b).decode("utf-8")
reads = len(cuts) / (time.perf_counter() - t)
t = time.perf_counter()
for a, b in pages:
    text.read(a, b).decode("utf-8")
print(json.dumps({"reads_per_s": reads, "pages_per_s": len(pages) / (time.perf_counter() - t)}))
"""


def block_sweep(args, argv) -> int:
    """``--block-sweep``: the zstd text stream's size and read rates by block size and dictionary,
    against the plain stream, on one ``spans`` store's text."""
    import time

    from retriever.store.pagetext import DICT_BYTES, TextSink

    work = Path(tempfile.mkdtemp(prefix="bench-blocks-"))
    reads = 2000 if args.smoke else 50_000
    try:
        root = Path(args.from_store) if args.from_store else work / "spans"
        if not args.from_store:
            measure(_build_cmd(Path(args.wx), root, "spans"))
        folder = root / "corpus"
        plain = folder / "pages.text"
        text_bytes = plain.stat().st_size
        configs = {"plain": {"compression": None, "folder": str(folder)}}
        sizes, writes = {"plain": text_bytes}, {"plain": 0.0}
        cuts = _passage_cuts(folder)
        for bb in args.block_sizes:
            for dict_bytes, aligned in ((0, False), (DICT_BYTES, False), (DICT_BYTES, True)):
                name = f"{bb // 1024} KB, " + (
                    f"dict {dict_bytes // 1024} KB" if dict_bytes else "no dict"
                )
                name += ", passage ends" if aligned else ""
                out = work / name.replace(" ", "").replace(",", "-")
                out.mkdir()
                t = time.perf_counter()
                sink = TextSink(out, "zstd", bb, dict_bytes=dict_bytes)
                with open(plain, "rb") as f:
                    at = 0
                    while chunk := f.read(1 << 20):
                        sink.write(chunk)
                        if aligned:  # what the store's writer gives: passage starts and ends
                            lo, hi = np.searchsorted(cuts, [at, at + len(chunk)], side="right")
                            for cut in cuts[lo:hi].tolist():
                                sink.cut_at(cut)
                        at += len(chunk)
                sink.close()
                writes[name] = time.perf_counter() - t
                sizes[name] = sum(p.stat().st_size for p in out.iterdir())
                for table in ("passages.spans.npy", "pages.offsets.npy"):
                    (out / table).symlink_to(folder / table)
                configs[name] = {**sink.entry(), "folder": str(out)}

        def read(name: str) -> dict:
            where = configs[name]["folder"]
            return c.python_json(SPAN_READS, where, str(reads), json.dumps(configs[name]))

        rates = c.alternate({name: lambda n=name: read(n) for name in configs}, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = {k: c.median(r[k] for r in rates["plain"]) for k in rates["plain"][0]}
    header = ["text stream", "MB", "bytes per text byte", "write s", "passage reads/s",
              "page reads/s", "vs plain (reads, pages)"]  # fmt: skip
    rows = []
    for name in configs:
        m = {k: c.median(r[k] for r in rates[name]) for k in rates[name][0]}
        rows.append([name, f"{sizes[name] / 1e6:.0f}", f"{sizes[name] / text_bytes:.3f}",
                     f"{writes[name]:.1f}", f"{m['reads_per_s']:,.0f}", f"{m['pages_per_s']:,.0f}",
                     f"{m['reads_per_s'] / base['reads_per_s']:.2f}x, "
                     f"{m['pages_per_s'] / base['pages_per_s']:.2f}x"])  # fmt: skip
    c.print_table(header, rows)
    print(json.dumps({"bench": "corpus-blocks", "text_bytes": text_bytes, "rows": rows}))
    c.record(
        args,
        argv,
        "Corpus store: zstd block size x dictionary",
        rows,
        header,
        f"{text_bytes / 1e6:.0f} MB of page text ({Path(args.wx).name}). MB: the compressed "
        f"stream with its block index and dictionary. Reads: {reads} random passage spans "
        f"and {reads // 4} random pages, read and decoded through `PageText` in a fresh "
        f"process (one thread, nothing cached), medians of {args.repeat} alternating rounds; "
        f"write s: training the dictionary and compressing, one thread.",
    )
    return 0


def _passage_cuts(folder: Path):
    """Sorted stream offsets where a passage of a ``spans`` store starts or ends."""
    from retriever.store.spans import PATCH

    table = np.load(folder / "passages.spans.npy")
    table = table[(table["flags"] & 3) != PATCH]
    return np.unique(np.concatenate([table["start"], table["start"] + table["length"]]))


def _build_cmd(wx: Path, out: Path, store: str) -> list[str]:
    return [c.PY, "-m", "index_build", "corpus", "--input", str(wx), "--out", str(out),
            "--no-progress", "--store", store]  # fmt: skip


def store_layouts(args, argv) -> int:
    """``--store``: sizes, build time and read rates of store layouts against ``jsonl``."""
    layouts = ["jsonl", *[s for s in args.store if s != "jsonl"]]
    wx = Path(args.wx)
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    reads = 2000 if args.smoke else 50_000
    try:

        def build(layout: str) -> dict:
            out = work / layout.replace(",", "-")
            shutil.rmtree(out, ignore_errors=True)
            return measure(_build_cmd(wx, out, layout))

        def read(layout: str) -> dict:
            root = str(work / layout.replace(",", "-"))
            return c.python_json(READS, root, str(reads))

        build_repeat = args.build_repeat or args.repeat
        builds = c.alternate({name: lambda n=name: build(n) for name in layouts}, build_repeat)
        rates = c.alternate({name: lambda n=name: read(n) for name in layouts}, args.repeat)
        sizes, keys, text_bytes, n = {}, {}, None, None
        for layout in layouts:
            folder = work / layout.replace(",", "-") / "corpus"
            manifest = json.loads((folder / "manifest.json").read_text())
            sizes[layout] = sum(p.stat().st_size for p in folder.iterdir())
            keys[layout] = sum(p.stat().st_size for p in folder.glob("*.npy")
                               if p.name.endswith((".hash.npy", ".rows.npy", ".count.npy")))  # fmt: skip
            n = manifest["num_docs"]
            if manifest.get("store"):
                text_bytes = manifest["store"]["text_bytes"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text_bytes = text_bytes or 1
    base = {k: c.median(r[k] for r in rates["jsonl"]) for k in rates["jsonl"][0]}
    base_build = c.median(r["wall"] for r in builds["jsonl"])
    header = ["store", "MB on disk", "bytes per text byte", "without key tables", "build s", "passage reads/s",
              "page reads/s", "title lookups/s", "vs jsonl (build, reads, pages, lookups)"]  # fmt: skip
    rows = []
    for layout in layouts:
        m = {k: c.median(r[k] for r in rates[layout]) for k in rates[layout][0]}
        wall = c.median(r["wall"] for r in builds[layout])
        rows.append(
            [
                layout,
                f"{sizes[layout] / 1e6:.0f}",
                f"{sizes[layout] / text_bytes:.2f}",
                f"{(sizes[layout] - keys[layout]) / text_bytes:.2f}",
                f"{wall:.1f}",
                f"{m['reads_per_s']:,.0f}",
                f"{m['pages_per_s']:,.0f}",
                f"{m['lookups_per_s']:,.0f}",
                f"{wall / base_build:.2f}x, {m['reads_per_s'] / base['reads_per_s']:.2f}x, "
                f"{m['pages_per_s'] / base['pages_per_s']:.2f}x, "
                f"{m['lookups_per_s'] / base['lookups_per_s']:.2f}x",
            ]
        )
    c.print_table(header, rows)
    print(json.dumps({"bench": "corpus-store", "passages": n, "text_bytes": text_bytes,
                      "rows": rows}))  # fmt: skip
    c.record(
        args,
        argv,
        "Corpus store layouts",
        rows,
        header,
        f"{wx.name}: {n} passages, {text_bytes / 1e6:.0f} MB of page text (UTF-8; the bytes per "
        f"text byte divide the whole corpus folder, key tables included, by it). Build: wall s "
        f"of `index_build corpus --store X`; reads: {reads} random passages, {reads // 4} random "
        f"pages and title lookups in a fresh process, one thread. Layouts built and read in "
        f"alternating order, medians of {build_repeat} builds and {args.repeat} read rounds; a "
        f"shared, noisy machine: compare the ratios (title lookups: one table entry per "
        f"passage in jsonl, one per run of a title's passages in spans).",
    )
    return 0


def measure(cmd: list[str]) -> dict:
    out = subprocess.run(
        [c.PY, "-c", MEASURE, *cmd], capture_output=True, text=True, check=True, cwd=c.REPO
    )
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return result


def repeated_xml(copies: int, out: Path) -> int:
    raw = bz2.decompress(
        (c.TEST_DATA / "enwiki-sample-pages-articles.xml.bz2").read_bytes()
    ).decode()
    head, rest = raw.split("<page>", 1)
    body, tail = ("<page>" + rest).rsplit("</page>", 1)
    body += "</page>"
    with open(out, "w") as f:
        f.write(head)
        for k in range(copies):
            copy = re.sub(
                r"<title>(.*?)</title>", lambda m, k=k: f"<title>{m.group(1)} {k}</title>", body
            )
            copy = re.sub(
                r"(<ns>\d+</ns>\s*<id>)(\d+)",
                lambda m, k=k: f"{m.group(1)}{int(m.group(2)) + k * 10**7}",
                copy,
            )
            f.write(copy)
        f.write(tail)
    return out.stat().st_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xml-copies", type=int, default=8)
    ap.add_argument("--wx", default=str(c.SHARED_DATA / "wikiextractor-enwiki-30k.txt.gz"))
    ap.add_argument(
        "--store",
        nargs="+",
        choices=STORES,
        help="compare these store layouts with jsonl (size, build, reads) instead",
    )
    ap.add_argument(
        "--build-repeat",
        type=int,
        default=None,
        help="with --store: builds per layout (default: --repeat; reads are --repeat rounds)",
    )
    ap.add_argument(
        "--block-sweep",
        action="store_true",
        help="sweep the spans,zstd text stream: block size x dictionary (size, read rates)",
    )
    ap.add_argument("--block-sizes", type=int, nargs="+", default=[4096, 8192, 16384, 65536])
    ap.add_argument("--from-store", help="with --block-sweep: a built spans store ROOT to use")
    c.add_common_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.repeat, args.xml_copies = 1, 1
        args.wx = str(c.TEST_DATA / "wikiextractor-slice.txt.gz")
    if args.block_sweep:
        return block_sweep(args, argv)
    if args.store:
        return store_layouts(args, argv)
    work = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    rows = []
    try:
        wx = Path(args.wx)
        raw_mb = 0.0
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(work / "wx", ignore_errors=True)
            runs.append(
                measure(
                    [
                        c.PY,
                        "-m",
                        "index_build",
                        "corpus",
                        "--input",
                        str(wx),
                        "--out",
                        str(work / "wx"),
                        "--no-progress",
                    ]
                )
            )
        manifest = json.loads((work / "wx/corpus/manifest.json").read_text())
        n = manifest["num_docs"]
        import gzip

        with gzip.open(wx, "rb") as f:
            while chunk := f.read(1 << 24):
                raw_mb += len(chunk) / 1e6
        wall = c.median([r["wall"] for r in runs])
        rows.append(
            [
                "WikiExtractor 30k -> store",
                f"{raw_mb:.0f} MB text ({wx.stat().st_size / 1e6:.0f} MB gz)",
                f"{n}",
                f"{wall:.1f}",
                f"{c.median([r['cpu'] for r in runs]):.1f}",
                f"{raw_mb / wall:.1f}",
                f"{n / wall:,.0f}",
                f"{max(r['maxrss_mb'] for r in runs):.0f}",
            ]
        )

        xml = work / "repeated.xml"
        size_mb = repeated_xml(args.xml_copies, xml) / 1e6
        ours = [c.PY, "-m", "index_build", "corpus", "--input", str(xml), "--no-progress"]
        theirs = [c.PY, "-m", "wikiextractor.WikiExtractor", str(xml), "-q"]
        variants = {}
        for n in (1, 2):  # the same commands at 1 and 2 processes
            variants[f"ours, {n} worker{'s' if n > 1 else ''}"] = [
                *ours,
                "--out",
                str(work / f"x{n}"),
                "--workers",
                str(n),
            ]
        for n in (1, 2):
            variants[f"wikiextractor, --processes {n}"] = [
                *theirs,
                "-o",
                str(work / f"we{n}"),
                "--processes",
                str(n),
            ]

        counted: dict[str, int] = {}

        def fresh(cmd: list[str]) -> dict:
            for d in ("x1", "x2", "we1", "we2"):
                shutil.rmtree(work / d, ignore_errors=True)
            result = measure(cmd)
            if (manifest := work / "x1/corpus/manifest.json").is_file():
                counted["n"] = json.loads(manifest.read_text())["num_docs"]
            return result

        variant = {name: lambda c=cmd: fresh(c) for name, cmd in variants.items()}
        results = c.alternate(variant, args.repeat)
        n_xml = counted["n"]
        for name, runs in results.items():
            wall = c.median([r["wall"] for r in runs])
            cpu = c.median([r["cpu"] for r in runs])
            rows.append(
                [
                    f"XML x{args.xml_copies}: {name}",
                    f"{size_mb:.0f} MB xml",
                    f"{n_xml}" if name.startswith("ours") else "-",
                    f"{wall:.1f}",
                    f"{cpu:.1f}",
                    f"{size_mb / wall:.1f}",
                    f"{n_xml / wall:,.0f}" if name.startswith("ours") else "-",
                    f"{max(r['maxrss_mb'] for r in runs):.0f}",
                ]
            )
        ours_cpu = c.median([r["cpu"] for r in results["ours, 1 worker"]])
        theirs_cpu = c.median([r["cpu"] for r in results["wikiextractor, --processes 1"]])

        out = subprocess.run(
            [c.PY, "-c", OPEN, str(work / "wx")],
            capture_output=True,
            text=True,
            check=True,
            cwd=c.REPO,
        )
        opened = json.loads(out.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    header = [
        "run",
        "input",
        "passages",
        "wall s (median)",
        "CPU s",
        "MB/s (wall)",
        "passages/s",
        "peak RSS MB",
    ]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(map(str, r)))
    ratio = theirs_cpu / ours_cpu
    print(
        f"XML MB per CPU-second: ours {size_mb / ours_cpu:.2f}, wikiextractor {size_mb / theirs_cpu:.2f} (ours {ratio:.2f}x)"
    )
    print(
        f"open {opened['n']}-passage store: {opened['open_s'] * 1000:.1f} ms, RSS {opened['rss_mb']:.0f} MB "
        f"(bare python+numpy {opened['rss_python_mb']:.0f} MB), {opened['us_per_row_and_lookup']:.0f} us per row read + title lookup"
    )
    summary = {
        "bench": "corpus",
        "rows": rows,
        "xml_cpu_ratio_vs_wikiextractor": ratio,
        "open": opened,
    }
    print(json.dumps(summary))
    if args.no_record:
        return 0
    c.record(
        args,
        argv,
        "Corpus pipeline",
        rows,
        header,
        f"XML per core (MB per CPU-second, all processes counted): ours {size_mb / ours_cpu:.2f}, "
        f"wikiextractor {size_mb / theirs_cpu:.2f}: ours is {ratio:.2f}x. Opening the {opened['n']}-passage store: "
        f"{opened['open_s'] * 1000:.1f} ms, process RSS {opened['rss_mb']:.0f} MB after 2,000 random row reads and "
        f"title lookups ({opened['us_per_row_and_lookup']:.0f} us each). Medians of {args.repeat} runs.",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
