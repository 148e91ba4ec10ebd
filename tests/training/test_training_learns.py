"""The tiny preset learns: the loss falls by a wide margin in a few dozen steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from glassformer.training.mfu import model_flops_per_token
from glassformer.training.trainer import Trainer

from .conftest import read_losses, small_config


def test_tiny_preset_learns(tmp_path: Path, tiny_data: Path) -> None:
    tc = small_config(
        tmp_path / "run", tiny_data, max_steps=40, batch_size=16, seq_len=64, lr=6e-3,
        eval_every=20, checkpoint_every=0, sample_tokens=8,
    )  # fmt: skip
    summary = Trainer(tc).train()
    losses = read_losses(tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps"] == 40
    first = losses[1]
    assert abs(first - math.log(512)) < 0.3  # starts at chance
    last5 = sum(losses[s] for s in range(36, 41)) / 5
    # Chance is ln 512 = 6.24 nats; a few dozen steps reach the unigram level and beyond.
    assert first - last5 > 0.8, (first, last5)
    assert summary["val_loss"] < first - 0.8
    assert summary["sample"].startswith("def ")
    assert summary["tokens_per_s"] > 0 and 0 < summary["mfu"] < 1


def test_flops_per_token_matches_the_6n_rule() -> None:
    """6 N (forward and backward of every weight matmul, the tied head included) plus the
    attention products over the pairs a causal layer sees: 12 H d_head x (T + 1) / 2 a token
    (query i sees i + 1 keys)."""
    from glassformer.config import Config

    cfg = Config.preset("tiny")
    n = 4 * (128 * 128 * 2 + 2 * 128 * 64 + 3 * 128 * 384) + 128 * 2048  # weights + tied head
    assert model_flops_per_token(cfg, 256) == 6 * n + 4 * 6 * 4 * 32 * 257


def test_flops_per_token_counts_the_window_of_sliding_layers() -> None:
    """A sliding layer's query i sees min(i + 1, W) keys, not i + 1."""
    from glassformer.config import Config

    w, t = 16, 256
    cfg = Config.preset("tiny").replace(
        sliding_window=w, layer_types=("sliding", "full", "sliding", "full")
    )
    n = 4 * (128 * 128 * 2 + 2 * 128 * 64 + 3 * 128 * 384) + 128 * 2048
    full = 12 * 4 * 32 * sum(i + 1 for i in range(t)) / t
    sliding = 12 * 4 * 32 * sum(min(i + 1, w) for i in range(t)) / t
    assert model_flops_per_token(cfg, t) == pytest.approx(6 * n + 2 * full + 2 * sliding, rel=1e-12)
