"""LR schedules: warmup, cosine, warmup-stable-decay."""

import math
from itertools import pairwise

import pytest
import torch

from glassformer.training.schedule import lr_multiplier, make_scheduler


def test_warmup_is_linear_to_peak() -> None:
    assert [lr_multiplier(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_ends_at_floor_and_is_half_way_at_midpoint() -> None:
    total, warm, r = 110, 10, 0.1
    assert lr_multiplier(warm, total, warm, "cosine", r) == pytest.approx(1.0)
    assert lr_multiplier(60, total, warm, "cosine", r) == pytest.approx(r + (1 - r) * 0.5)
    assert lr_multiplier(total, total, warm, "cosine", r) == pytest.approx(r)
    values = [lr_multiplier(s, total, warm, "cosine", r) for s in range(warm, total)]
    assert all(a >= b for a, b in pairwise(values))


def test_wsd_is_flat_then_decays_linearly() -> None:
    total, warm, r = 100, 5, 0.0
    stable = [lr_multiplier(s, total, warm, "wsd", r, 0.2) for s in range(warm, 80)]
    assert stable == [1.0] * len(stable)
    assert lr_multiplier(89, total, warm, "wsd", r, 0.2) == pytest.approx(0.5)
    assert lr_multiplier(99, total, warm, "wsd", r, 0.2) == pytest.approx(0.0)


def test_scheduler_drives_optimizer_lr() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = make_scheduler(opt, 20, 2, "cosine", 0.0)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:2] == [0.5, 1.0]
    assert seen[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 17 / 18)))


def test_unknown_schedule_raises() -> None:
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier(0, 10, 0, "exp")
