"""Curves of a preference run (DPO, IPO, SimPO, ORPO) from OUT/metrics.jsonl.

Four panels share the step axis: the loss; the reward margin r_w - r_l (the implicit rewards
of `preference_losses.py`); the reward accuracy (share of pairs with r_w > r_l); and the
chosen and rejected answers' log-probabilities per token under the policy. Training values
per step are drawn light with their bias-corrected EMA; validation values as dots. In a
healthy DPO run the margin and accuracy rise while the chosen log-probability falls less
than the rejected one (or rises).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from glassformer.training.plot import _ema, read_metrics

__all__ = ["render_preference_curves"]

PANELS = (
    ("loss", "loss"),
    ("reward_margin", "reward margin r_w - r_l"),
    ("reward_accuracy", "reward accuracy"),
)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in records if isinstance(r.get(key), int | float)]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]


def render_preference_curves(
    run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, dpi: int = 80
) -> Path:
    """Write RUN/preference_curves.png (or `out`); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run)
    if not any("reward_margin" in r for r in records):
        raise ValueError(f"{run}: metrics.jsonl has no preference records")
    run_dir = Path(run) if Path(run).is_dir() else Path(run).parent
    target = Path(out) if out is not None else run_dir / "preference_curves.png"
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4), dpi=dpi)
    for ax, (key, title) in zip(axes, PANELS, strict=False):
        steps, values = _series(records, key)
        if values:
            ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=0.8)
            ax.plot(steps, _ema(values), color="tab:blue", lw=1.5, label="train (EMA)")
        vsteps, vvalues = _series(records, f"val_{key}")
        if vvalues:
            ax.plot(vsteps, vvalues, "o-", color="tab:orange", ms=3, label="validation")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[3]
    for key, color in (("chosen", "tab:green"), ("rejected", "tab:red")):
        steps, values = _series(records, f"{key}_logps_per_token")
        if values:
            ax.plot(steps, values, color=color, alpha=0.3, lw=0.8)
            ax.plot(steps, _ema(values), color=color, lw=1.5, label=f"{key} (train EMA)")
        vsteps, vvalues = _series(records, f"val_{key}_logps_per_token")
        if vvalues:
            ax.plot(vsteps, vvalues, "o--", color=color, ms=3, label=f"{key} (validation)")
    ax.set_title("log-prob per answer token")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    plt.close(fig)
    return target
