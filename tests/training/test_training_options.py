"""Trainer options: gradient accumulation, activation checkpointing and bf16 autocast change
how a step is computed, not what it computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from glassformer.training.trainer import Trainer

from .conftest import read_losses, small_config


def _losses(out: Path, data: Path, **kw: object) -> dict[int, float]:
    Trainer(small_config(out, data, max_steps=4, checkpoint_every=0, **kw)).train()
    return read_losses(out)


def test_accumulation_equals_one_big_batch(tmp_path: Path, tiny_data: Path) -> None:
    big = _losses(tmp_path / "big", tiny_data, batch_size=8)
    accum = _losses(tmp_path / "acc", tiny_data, batch_size=8, micro_batch_size=2)
    assert big.keys() == accum.keys()
    for step in big:
        assert abs(big[step] - accum[step]) < 1e-5


def test_activation_checkpointing_is_exact(tmp_path: Path, tiny_data: Path) -> None:
    plain = _losses(tmp_path / "plain", tiny_data)
    ckpt = _losses(tmp_path / "ckpt", tiny_data, activation_checkpointing=True)
    assert plain == ckpt  # recomputation on CPU is deterministic: bit-identical


def test_bf16_autocast_trains(tmp_path: Path, tiny_data: Path) -> None:
    fp32 = _losses(tmp_path / "fp32", tiny_data)
    bf16 = _losses(tmp_path / "bf16", tiny_data, dtype="bf16")
    for step in fp32:
        assert abs(fp32[step] - bf16[step]) < 0.1  # bf16 matmuls: close, not equal
    assert bf16[4] < bf16[1]


def test_bad_batch_split_is_refused(tmp_path: Path, tiny_data: Path) -> None:
    with pytest.raises(ValueError, match="micro_batch_size"):
        Trainer(small_config(tmp_path, tiny_data, batch_size=8, micro_batch_size=3))


def test_weight_decay_skips_vectors() -> None:
    from glassformer.config import Config
    from glassformer.model import Transformer
    from glassformer.training.optim import param_groups

    model = Transformer(Config.preset("tiny-gpt2"))
    decay, no_decay = param_groups(model, 0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
