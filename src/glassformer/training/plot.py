"""Training curves from OUT/metrics.jsonl: loss, validation perplexity and learning rate.

Three panels share the step axis: the training loss per step (light) with its exponential
moving average (EMA_t = 0.9 EMA_{t-1} + 0.1 loss_t, bias-corrected as in Adam) and the
validation loss at each evaluation; the validation perplexity exp(val_loss); and the learning
rate. Rendered headless (matplotlib's Agg backend) to a PNG.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["read_metrics", "render_curves"]


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a run directory or the file); bad lines are skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no metrics.jsonl (is this a training run directory?)")
    out = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def _ema(values: list[float], beta: float = 0.9) -> list[float]:
    out, avg = [], 0.0
    for i, v in enumerate(values, 1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta**i))
    return out


def render_curves(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    title: str | None = None,
    dpi: int = 80,
) -> Path:
    """Write the curves of a run to `out` (default RUN/curves.png); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run)
    train = [r for r in records if "loss" in r and isinstance(r["loss"], int | float)]
    val = [r for r in records if "val_loss" in r]
    if not train and not val:
        raise ValueError(f"{run}: metrics.jsonl has no loss records yet")
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    target = Path(out) if out is not None else run_dir / "curves.png"

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), dpi=dpi)
    ax = axes[0]
    if train:
        steps = [r["step"] for r in train]
        losses = [r["loss"] for r in train]
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train")
        ax.plot(steps, _ema(losses), color="tab:blue", lw=1.5, label="train (EMA)")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-",
                color="tab:orange", ms=3, label="validation")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = axes[1]
    if val:
        ppl = [math.exp(min(r["val_loss"], 50)) for r in val]
        ax.plot([r["step"] for r in val], ppl, "o-", color="tab:orange", ms=3)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_title("validation perplexity")
    ax.grid(alpha=0.3)

    ax = axes[2]
    lr = [r for r in train if "lr" in r]
    if lr:
        ax.plot([r["step"] for r in lr], [r["lr"] for r in lr], color="tab:green")
    ax.set_xlabel("step")
    ax.set_title("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return target
