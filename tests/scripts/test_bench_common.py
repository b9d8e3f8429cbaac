"""scripts/bench/common.py: the measuring helpers the benchmark rows rest on."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
sys.path.insert(0, str(BENCH))

import common as c  # noqa: E402

HOLD = "import sys, time; b = bytearray({mb} << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"


def test_run_sampled_gives_each_step_its_own_peak():
    """A small step run after a large one reports its own peak, not the large one's
    (``ru_maxrss`` of the children is the largest child so far, not this step's)."""
    big = c.run_sampled([sys.executable, "-c", HOLD.format(mb=600)])
    small = c.run_sampled([sys.executable, "-c", HOLD.format(mb=50)])
    assert big["peak_rss_mb"] > 550
    assert 50 < small["peak_rss_mb"] < 300, small["peak_rss_mb"]
    assert small["peak_rss_mb"] <= small["peak_tree_rss_mb"] + 5
