"""Shared fixtures: a small prepared corpus (the embedded default corpus, cut short) and a
helper that runs the tiny preset on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a small, shared CPU, two threads contend and run far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~400 kB of the default corpus as token shards, with a 512-token BPE trained on it."""
    from glassformer.training.data import prepare_data

    out = tmp_path_factory.mktemp("tiny_data")
    prepare_data(
        ["default"],
        out,
        vocab_size=512,
        max_bytes=400_000,
        tokenizer_train_bytes=300_000,
        val_fraction=0.05,
    )
    return out


def small_config(out: Path, data: Path, **changes: Any):
    from glassformer.training.trainer import TrainConfig

    base: dict[str, Any] = dict(
        out=str(out),
        preset="tiny",
        data=str(data),
        seq_len=32,
        batch_size=4,
        max_steps=12,
        lr=3e-3,
        eval_every=0,
        eval_batches=2,
        sample_tokens=0,
        checkpoint_every=4,
        keep_checkpoints=0,
        progress=False,
        export=False,
    )
    base.update(changes)
    return TrainConfig(**base)


def read_losses(run: Path) -> dict[int, float]:
    out = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def logged_steps(run: Path) -> list[int]:
    """The steps of the training-loss lines of metrics.jsonl, in file order."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [rec["step"] for rec in map(json.loads, lines) if "loss" in rec]
