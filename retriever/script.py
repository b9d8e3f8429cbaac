"""Chinese script conversion (OpenCC), shared by the corpus build and query analysis.

A corpus built with ``index_build corpus --chinese-script`` holds one script, so a query typed in
the other one must be converted to it before it is analyzed or encoded; the conversion is
recorded with the index (corpus manifest ``script_conversion``, BM25 analyzer ``script``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

# script -> OpenCC configuration that converts any Chinese text to it
OPENCC_CONFIGS = {"simplified": "t2s", "traditional": "s2t"}


def check_script(script: str) -> None:
    if script not in OPENCC_CONFIGS:
        raise ValueError(f"unknown Chinese script {script!r}: use {' or '.join(OPENCC_CONFIGS)}")


@functools.lru_cache(maxsize=2)
def script_converter(script: str) -> Callable[[str], str]:
    """``str -> str`` converting Chinese text to ``script`` (OpenCC, loaded once per process)."""
    check_script(script)
    try:
        import opencc
    except ImportError as exc:
        raise ImportError(
            "converting Chinese script needs OpenCC: pip install -c constraints.txt '.[lang]'"
        ) from exc
    return opencc.OpenCC(OPENCC_CONFIGS[script]).convert
