"""Every benchmark script runs: ``python scripts/bench/X.py --smoke`` on bundled data, exit 0.

The scripts are found by glob, so a new script without a smoke mode fails here. The rule for
what is a script: a file in ``scripts/bench/`` with an ``if __name__ == "__main__":`` block;
the others (``common.py``, ``gpu_common.py``, ...) are helper modules the scripts import.
A smoke run records only to ``$BENCH_RECORD`` (here a file under ``tmp_path``): BENCHMARKS.md and
the history file must come out unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "scripts" / "bench"
RECORDS = [REPO / "BENCHMARKS.md", REPO / "docs" / "benchmarks-history.md"]
PACKAGES = {"retriever", "env", "index_build"}


def is_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")


SCRIPTS = sorted(p for p in BENCH.glob("*.py") if is_script(p))


def test_scripts_and_helpers_are_told_apart():
    helpers = {p.name for p in BENCH.glob("*.py") if not is_script(p)}
    assert "common.py" in helpers and len(SCRIPTS) >= 15, (helpers, SCRIPTS)


def test_no_script_shadows_a_package_or_edits_sys_path():
    """``python scripts/bench/X.py`` puts scripts/bench first on sys.path: a file named like a
    package there (the old ``env.py``) hides the installed one. The packages come from the
    editable install; the one path set-up, for tests/ helpers, lives in common.py."""
    assert not {p.stem for p in BENCH.glob("*.py")} & PACKAGES
    editing = [
        p.name
        for p in BENCH.glob("*.py")
        if p.name != "common.py" and "sys.path.insert" in p.read_text(encoding="utf-8")
    ]
    assert editing == []


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_smoke_mode_runs(script: Path, tmp_path: Path):
    record = tmp_path / "record.md"
    before = {p: p.read_bytes() if p.exists() else None for p in RECORDS}
    env = {
        **os.environ,
        "BENCH_RECORD": str(record),
        "TMPDIR": str(tmp_path),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OPENAI_API_KEY": "unused",
    }
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - t
    assert proc.returncode == 0, proc.stdout[-3000:] + "\n" + proc.stderr[-4000:]
    assert {p: p.read_bytes() if p.exists() else None for p in RECORDS} == before
    objects = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            try:
                objects.append(json.loads(line))
            except ValueError:
                pass
    assert objects, f"no JSON line in the output of {script.name}:\n{proc.stdout[-2000:]}"
    if "append_section(" in script.read_text(encoding="utf-8"):
        assert "\n## " in record.read_text(encoding="utf-8"), "smoke run recorded no section"
    print(f"{script.name}: {seconds:.1f} s")
