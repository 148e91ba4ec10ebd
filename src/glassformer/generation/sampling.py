"""Turning next-token logits into a choice: penalties, temperature and truncation, then a draw.

Applied in this order (the order HF transformers and llama.cpp use):
1. repetition penalty (Keskar et al. 2019, CTRL): for every token already in the context,
   l -> l / r if l > 0 else l * r;
2. temperature: l -> l / T (T = 0 means greedy: take the argmax, no randomness);
3. top-k: keep the k largest logits;
4. top-p, nucleus (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
   probability mass reaches p (the token that crosses p is kept);
5. min-p (Nguyen et al. 2024): keep tokens whose probability is at least min_p times the
   largest probability;
then sample from softmax of what is left. Removed tokens get -inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Below this, l / T overflows float32 for ordinary logits (and T itself rounds to 0 or a
# subnormal), while the distribution is already the argmax's: ask for 0 (greedy) instead.
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off
    seed: int | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if not (math.isfinite(t) and (t == 0 or t >= MIN_TEMPERATURE)):
            raise ValueError(
                f"temperature: must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE}, got {t}"
            )
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p: must be in [0, 1], got {self.min_p}")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ValueError(
                f"repetition_penalty: must be a finite number > 0, got {self.repetition_penalty}"
            )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(
    logits: torch.Tensor, context: torch.Tensor, penalty: float
) -> torch.Tensor:
    """logits [B, V]; context [B, N] token ids already seen (each counted once)."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    seen = torch.gather(logits, 1, context)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # mass strictly before each token: a token is kept while that mass is still below p
    mass_before = probs.cumsum(-1) - probs
    remove_sorted = mass_before >= p
    remove_sorted[..., 0] = False  # always keep the most likely token
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    if min_p <= 0:
        return logits
    probs = logits.softmax(-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def process_logits(
    logits: torch.Tensor, context: torch.Tensor, config: SamplingConfig
) -> torch.Tensor:
    """All logit transformations before the draw, in order; logits [B, V] in float32."""
    logits = apply_repetition_penalty(logits.float(), context, config.repetition_penalty)
    if config.greedy:
        return logits
    logits = logits / config.temperature
    logits = apply_top_k(logits, config.top_k)
    logits = apply_top_p(logits, config.top_p)
    return apply_min_p(logits, config.min_p)


def sample(
    logits: torch.Tensor,
    context: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids [B] from logits [B, V]."""
    logits = process_logits(logits, context, config)
    if config.greedy:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
