"""Perplexity, the quality guard of the quantised modes.

    PPL = exp( -1/N sum_i log p(t_i | t_<i) )

over a token stream cut into non-overlapping windows of `window` tokens; each window is a fresh
context, and its first token is only context (so N = tokens - windows). With `bos_id`, each
window starts with the BOS token instead, as the model saw every document in training, and all
its tokens are predicted (N = tokens): for models trained with a BOS (Gemma), leaving it out
scores them on inputs unlike any they were trained on (Gemma 3 270M: perplexity ~3x higher).

A quantised model's perplexity relative to float32 on the same windows measures what the
rounding cost: the same text, the same windows, only the weights differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glassformer.model import Transformer


@dataclass(frozen=True)
class Perplexity:
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens
    windows: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)


@torch.inference_mode()
def perplexity(
    model: Transformer,
    ids: Sequence[int] | torch.Tensor,
    window: int = 512,
    bos_id: int | None = None,
) -> Perplexity:
    """Perplexity of `model` on the token ids (see the module docstring)."""
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    total, count, windows = 0.0, 0, 0
    step = window - 1 if bos_id is not None else window  # the BOS takes a slot of the window
    for start in range(0, ids.numel() - (bos_id is None), step):
        chunk = ids[start : start + step]
        if bos_id is not None:
            inputs, targets = torch.cat((chunk.new_tensor([bos_id]), chunk)), chunk
        else:
            inputs, targets = chunk, chunk[1:]
        if targets.numel() == 0:
            break
        logits = model(inputs[None])[0, -targets.numel() - 1 : -1].float()
        total += F.cross_entropy(logits, targets, reduction="sum").item()
        count += targets.numel()
        windows += 1
    if count == 0:
        raise ValueError("perplexity: needs at least 2 tokens")
    return Perplexity(total / count, count, windows)
