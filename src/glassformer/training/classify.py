"""Sequence classification with a decoder-only model: a linear head on the last token.

A causal model's last position is the only one that has seen the whole input, so its final
hidden state summarises the sequence (GPT-1, Radford et al. 2018; HF's
`*ForSequenceClassification`):

    h = FinalNorm(Transformer(x))[n - 1]       (n: the real length; rows are right-padded)
    logits = W_c h                             W_c: n_classes x d_model
    L = -1/B sum_b log softmax(logits_b)[y_b]

The head starts at zero (every class equally likely, loss log C at step 0); the backbone is
trained fully or through LoRA adapters (see `lora.py`). Data: JSONL rows `{"text": ...,
"label": ...}` with string or integer labels; string labels are numbered in sorted order.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.model import Transformer
from glassformer.training.data import EpochOrder, ExampleBatches

__all__ = ["ClassificationTask", "SequenceClassifier", "load_classification_jsonl"]


class SequenceClassifier(nn.Module):
    """A Transformer backbone and a linear classification head on the last real token."""

    def __init__(self, backbone: Transformer, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        p = backbone.embed.weight
        self.score = nn.Linear(
            backbone.config.d_model, n_classes, bias=False, device=p.device, dtype=p.dtype
        )
        nn.init.zeros_(self.score.weight)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden, _, _ = self.backbone.hidden_states(input_ids)
        hidden = self.backbone.final_norm(hidden)
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return self.score(last)


def load_classification_jsonl(
    path: str | os.PathLike[str], text_field: str = "text", label_field: str = "label"
) -> list[tuple[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if text_field not in row or label_field not in row:
                raise ValueError(f"{path}:{lineno}: needs {text_field!r} and {label_field!r}")
            rows.append((str(row[text_field]), row[label_field]))
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


class ClassificationTask(ExampleBatches):
    """Batches of (right-padded ids, lengths, label ids); loss = mean cross-entropy."""

    def __init__(
        self,
        tokenizer: Any,
        rows: Sequence[tuple[str, Any]],
        max_len: int = 256,
        val_fraction: float = 0.2,
        seed: int = 0,
        labels: Sequence[Any] | None = None,
    ) -> None:
        self.labels = list(labels) if labels is not None else sorted({y for _, y in rows}, key=str)
        index = {y: i for i, y in enumerate(self.labels)}
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        examples = []
        for text, y in rows:
            ids = tokenizer.encode(text, add_special_tokens=True)[:max_len]
            if y not in index:
                raise ValueError(f"label {y!r} is not one of {self.labels}")
            examples.append((ids or [self.pad_id], index[y]))
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_val = max(1, int(len(examples) * val_fraction)) if val_fraction > 0 else 0
        n_val = min(n_val, len(examples) - 1)
        self.val = [examples[i] for i in order[:n_val]]
        self.train = [examples[i] for i in order[n_val:]]
        self.seed = seed
        self.order = EpochOrder(len(self.train), seed)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def _collate(self, rows: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows)
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            inputs[r, : len(ids)] = torch.tensor(ids)
        return {
            "input_ids": inputs,
            "lengths": torch.tensor([len(ids) for ids, _ in rows]),
            "labels": torch.tensor([y for _, y in rows]),
        }

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["input_ids"], batch["lengths"]).float()
        loss = F.cross_entropy(logits, batch["labels"], reduction="sum")
        correct = (logits.argmax(-1) == batch["labels"]).sum()
        return loss, {"accuracy": correct}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())
