"""Kinds of training as the loop sees them: batches by global sample index and a summed loss.

A `Task` hands out batches of samples [first, first + count) of an epoch-less, seeded order,
so sample k of a run depends only on (seed, k): resuming needs the number of samples consumed,
and N ranks reading disjoint slices see exactly the global batches of one process. Its
`loss` returns the *sum* of per-item losses; the loop divides by the items counted over the
whole global batch, which makes accumulation and data parallelism exact.

`LMTask` is pretraining on prepared token shards; `sft.SFTTask` and
`classify.ClassificationTask` are the fine-tuning tasks. `pretraining_task` builds an LMTask
for a `TrainConfig`, preparing (once, cached) the default corpus when no data is given.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from glassformer.cache import cache_dir
from glassformer.components.head_loss import IGNORE
from glassformer.config import Config
from glassformer.training.config import TrainConfig

__all__ = [
    "IGNORE",
    "LMTask",
    "NextTokenLoss",
    "Pretraining",
    "Task",
    "default_data_dir",
    "pretraining_task",
]


class Task(Protocol):
    """What the loop needs from a kind of training: batches by sample index and a loss."""

    def train_samples(self) -> int: ...  # samples per epoch (for reporting)

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]: ...

    def eval_samples(self) -> int: ...

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]: ...

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of per-item losses, sums of extra metrics such as 'correct')."""
        ...

    def count(self, batch: dict[str, torch.Tensor]) -> int: ...  # items counted in the loss


class NextTokenLoss:
    """The loss of a task whose batches are {input_ids, labels}: summed next-token
    cross-entropy over the labels that are not IGNORE (pretraining, SFT), in float32. The
    model fuses its head with the loss (`Transformer.forward(..., labels=)`), so a batch's
    logits are never held in memory at once."""

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(batch["input_ids"], labels=batch["labels"]), {}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())


class LMTask(NextTokenLoss):
    """Pretraining on prepared token shards: windows of seq_len + 1 ids, every token counted."""

    def __init__(self, data_dir: str | os.PathLike[str], seq_len: int, seed: int) -> None:
        from glassformer.training.data import TokenSplit, WindowSampler

        self.train = WindowSampler(TokenSplit(data_dir, "train"), seq_len, seed)
        val = TokenSplit(data_dir, "val")
        self.val = None
        if len(val) > 1:
            # A short validation split still gets evaluated, at a shorter length.
            self.val = WindowSampler(val, min(seq_len, len(val) - 1), seed, shuffle=False)

    def train_samples(self) -> int:
        return self.train.n_windows

    def eval_samples(self) -> int:
        return self.val.n_windows if self.val is not None else 0

    @staticmethod
    def _split(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._split(self.train.batch(first, count))

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        assert self.val is not None
        return self._split(self.val.batch(first % self.val.n_windows, count))


# --- pretraining data -----------------------------------------------------------------------------
def default_data_dir(vocab_size: int, tokenizer: str | None = None) -> Path:
    """The default corpus prepared with a `vocab_size` BPE (trained once, then cached)."""
    from glassformer.training.data import MANIFEST, default_corpus_id, prepare_data

    tag = f"bpe{vocab_size}" if tokenizer is None else "tok" + _short_hash(tokenizer)
    path = cache_dir() / "data" / f"{default_corpus_id()}-{tag}"
    if not (path / MANIFEST).is_file():
        # Train the tokenizer on a 4 MB sample: merges of a small vocabulary are settled by then.
        prepare_data(["default"], path, tokenizer, vocab_size=vocab_size,
                     tokenizer_train_bytes=4_000_000)  # fmt: skip
    return path


def _short_hash(path: str) -> str:
    p = Path(path)
    p = p / "tokenizer.json" if p.is_dir() else p
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12]


@dataclass
class Pretraining:
    """An LMTask with what it was made from: the model config fitted to the tokenizer."""

    task: LMTask
    model_config: Config
    tokenizer: Any
    data_dir: Path
    tokenizer_sha256: str


def pretraining_task(
    tc: TrainConfig,
    model_config: Config | None,
    is_main: bool = True,
    sync: Callable[[], None] = lambda: None,
) -> Pretraining:
    """The LM task of `tc`: its data (the default corpus when `tc.data` is None), the
    tokenizer the data was prepared with, and the model config with that tokenizer's
    vocabulary, EOS id and at least `tc.seq_len` positions.

    The default corpus is prepared once, by the main rank; `sync` (a barrier) makes the other
    ranks wait for it and then find the cached result."""
    from glassformer.tokenizer import Tokenizer
    from glassformer.training.data import load_manifest, tokenizer_sha256

    if model_config is None:
        model_config = Config.load(tc.config) if tc.config else Config.preset(tc.preset or "tiny")
    data = tc.data
    if data is None:
        vocab = tc.vocab_size or (
            model_config.vocab_size if model_config.vocab_size <= 16384 else 8192
        )
        if is_main:
            default_data_dir(vocab, tc.tokenizer)
        sync()
        data = str(default_data_dir(vocab, tc.tokenizer))
    data_dir = Path(data)
    manifest = load_manifest(data_dir)
    tok_json = data_dir / manifest["tokenizer"]
    tok_cfg = data_dir / "tokenizer_config.json"
    tokenizer = Tokenizer.from_tokenizer_json(tok_json, tok_cfg if tok_cfg.exists() else None)
    sha = manifest["tokenizer_sha256"]
    if tc.data is not None and tc.tokenizer is not None:
        # The ids on disk only mean something under the tokenizer that wrote them.
        given = Path(tc.tokenizer)
        given = given / "tokenizer.json" if given.is_dir() else given
        if tokenizer_sha256(given) != sha:
            raise ValueError(
                f"--tokenizer {tc.tokenizer} is not the tokenizer {data_dir} was "
                "prepared with (SHA-256 differs from its manifest)"
            )
    changes: dict[str, Any] = {"vocab_size": tokenizer.vocab_size}
    if model_config.max_seq_len < tc.seq_len:
        changes["max_seq_len"] = tc.seq_len
    if tc.init_std is not None:
        changes["init_std"] = tc.init_std
    eos = tokenizer.eos_id
    if eos is not None:
        changes.update(eos_token_id=eos, bos_token_id=None)
    model_config = model_config.replace(**changes)
    task = LMTask(data_dir, tc.seq_len, tc.seed)
    return Pretraining(task, model_config, tokenizer, data_dir, sha)
