"""Plot a training run's ``steps.jsonl`` (from ``grpo_trl.py``): reward, F1 and format rate
against step, raw and as a moving average, into a PNG.

    python scripts/train/plot_steps.py OUT/steps.jsonl --png reward.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each point (fewer at the start).

    >>> moving_average([0, 2, 4, 6], 2)
    [0.0, 1.0, 3.0, 5.0]
    """
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def read_steps(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise SystemExit(f"{path}: line {n} is not JSON ({exc})") from exc
    if not rows:
        raise SystemExit(f"{path}: no steps")
    return rows


def plot(rows: list[dict], png: Path, title: str, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for key, color in (("reward", "tab:blue"), ("f1", "tab:green"), ("format_rate", "tab:orange")):
        values = [float(r[key]) for r in rows]
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
        ax.plot(
            steps,
            moving_average(values, window),
            color=color,
            linewidth=2,
            label=f"{key} ({window}-step mean)",
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean over the step's episodes")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("steps", help="steps.jsonl of a run")
    ap.add_argument("--png", required=True, help="output PNG")
    ap.add_argument("--title", default="GRPO, SmolLM2-135M-Instruct, CPU")
    ap.add_argument("--window", type=int, default=5, help="moving-average window (steps)")
    args = ap.parse_args(argv)
    rows = read_steps(Path(args.steps))
    plot(rows, Path(args.png), args.title, max(1, args.window))
    print(json.dumps({"steps": len(rows), "png": args.png}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
