"""Learning-rate schedules, as a multiplier m(step) of the peak rate (lr_t = lr * m(t)).

All start with a linear warmup, m(t) = (t + 1) / W for t < W (Goyal et al. 2017), which keeps
Adam's early, badly estimated second moments from taking huge steps. Then, over the remaining
S - W steps, with progress p in [0, 1] and floor r = min_lr / lr:

- cosine (Loshchilov & Hutter 2017, "SGDR"; the GPT-3/Llama recipe):
      m = r + (1 - r) * (1 + cos(pi p)) / 2
- wsd, warmup-stable-decay (Zhai et al. 2022; Hu et al. 2024, "MiniCPM"; Hägele et al. 2024):
      m = 1 during the stable phase, then over the last `decay_fraction` of the run
      m = r + (1 - r) * (1 - q)  (linear; q the progress through the decay)
  The stable phase has no end date, so a run can be extended and decayed later from any
  checkpoint of the plateau.
- linear: m = r + (1 - r) * (1 - p)
- constant: m = 1

The schedule is a pure function of the step, so resuming only needs the step count; the
`LambdaLR` state in checkpoints records it for PyTorch's benefit.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["SCHEDULES", "lr_multiplier", "make_scheduler"]

SCHEDULES = ("cosine", "wsd", "linear", "constant")


def lr_multiplier(
    step: int,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
) -> float:
    """m(step) for the update made at `step` (0-based)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    r = min_lr_ratio
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * total_steps))
        decay_start = max(warmup_steps, total_steps - decay_steps)
        if step < decay_start:
            return 1.0
        q = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
        return r + (1 - r) * (1 - q)
    span = max(1, total_steps - warmup_steps)
    p = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return r + (1 - r) * (1 - p)
    return r + (1 - r) * 0.5 * (1 + math.cos(math.pi * p))


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.1,
    decay_fraction: float = 0.2,
) -> torch.optim.lr_scheduler.LambdaLR:
    fn: Callable[[int], float] = lambda step: lr_multiplier(  # noqa: E731
        step, total_steps, warmup_steps, schedule, min_lr_ratio, decay_fraction
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
