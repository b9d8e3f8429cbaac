"""One Chinese script for a whole corpus: OpenCC conversion and the matching variant choice.

Chinese Wikipedia stores each article in whichever script its editors wrote, and shows readers
their variant through ``-{...}-`` rules and a converter. A corpus in one script (so queries in
that script match every page) takes the variant text of ``-{...}-`` blocks for that script and
runs OpenCC over the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

# script -> (OpenCC configuration, variant codes of ``-{...}-`` rules, most preferred first)
SCRIPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "simplified": ("t2s", ("zh-hans", "zh-cn", "zh-sg", "zh-my", "zh", "zh-hant", "zh-tw")),
    "traditional": ("s2t", ("zh-hant", "zh-tw", "zh-hk", "zh-mo", "zh", "zh-hans", "zh-cn")),
}


def _check(script: str) -> None:
    if script not in SCRIPTS:
        raise ValueError(f"unknown Chinese script {script!r}: use {' or '.join(SCRIPTS)}")


def variants_for(script: str) -> tuple[str, ...]:
    _check(script)
    return SCRIPTS[script][1]


@functools.lru_cache(maxsize=2)
def converter(script: str) -> Callable[[str], str]:
    """``str -> str`` converting to ``script`` (OpenCC, loaded once per process)."""
    _check(script)
    try:
        import opencc
    except ImportError as exc:
        raise ImportError(
            "converting Chinese script needs OpenCC: pip install -c constraints.txt '.[lang]'"
        ) from exc
    return opencc.OpenCC(SCRIPTS[script][0]).convert


def manifest_fields(script: str) -> dict:
    """What the corpus manifest records about the conversion."""
    import opencc

    _check(script)
    return {
        "to": script,
        "converter": "opencc",
        "config": SCRIPTS[script][0],
        "version": getattr(opencc, "__version__", "unknown"),
    }
