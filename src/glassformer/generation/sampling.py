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

Truncation works on a short candidate list rather than a sort of the whole vocabulary (a
49k-entry sort costs milliseconds, a draw's budget many times over): top-k is the k largest
logits; top-p takes the m largest (torch.topk), normalised over the whole vocabulary, and
grows m until their mass reaches p, which proves every token past them is removed (the mass
before each of them is already >= p). The draw is then among the candidates only: the same
distribution as softmax over the full vector with -inf everywhere else.
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


# First candidate-list size for top-p; multiplied by GROWTH until it holds mass p. A
# sharpened (T < 1) language model's nucleus is usually a few dozen tokens.
TOP_P_START = 64
TOP_P_GROWTH = 8


def _top_p_in_sorted(values: torch.Tensor, log_z: torch.Tensor, p: float) -> torch.Tensor:
    """values [B, m] descending logits, log_z [B, 1] the log normaliser over every token
    still in play: values with the tokens top-p removes set to -inf. A token is kept while
    the mass strictly before it is below p; the most likely token always stays."""
    probs = (values - log_z).exp()
    mass_before = probs.cumsum(-1) - probs
    remove = mass_before >= p
    remove[..., 0] = False
    return values.masked_fill(remove, float("-inf"))


def _top_p_candidates(logits: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-p over the whole vocabulary from the m most likely tokens, m grown until their
    mass reaches p in every row (or m is the vocabulary): then the first token past them has
    mass before it >= p, so it and every later one are removed, as a full sort would find."""
    vocab = logits.shape[-1]
    log_z = torch.logsumexp(logits, -1, keepdim=True)
    m = min(TOP_P_START, vocab)
    while True:
        values, ids = torch.topk(logits, m, dim=-1)
        if m == vocab or bool(((values - log_z).exp().sum(-1) >= p).all()):
            return _top_p_in_sorted(values, log_z, p), ids
        m = min(m * TOP_P_GROWTH, vocab)


def _apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    if min_p <= 0:
        return logits
    probs = logits.softmax(-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, float("-inf"))


def candidates(
    logits: torch.Tensor, context: torch.Tensor, config: SamplingConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every logit transformation before the draw, on logits [B, V]: the surviving
    candidates' logits [B, n] (removed ones -inf) and their token ids [B, n], or the whole
    transformed vector [B, V] and None when neither top-k nor top-p shortens the list."""
    logits = apply_repetition_penalty(logits.float(), context, config.repetition_penalty)
    if config.greedy:
        return logits, None
    logits = logits / config.temperature
    vocab = logits.shape[-1]
    ids = None
    if 0 < config.top_k < vocab:
        values, ids = torch.topk(logits, config.top_k, dim=-1)  # descending
        # every token tied with the k-th is kept too (as HF's top-k warper does)
        n = int((logits >= values[..., -1:]).sum(-1).max())
        if n > config.top_k:
            values, ids = torch.topk(logits, n, dim=-1)
            kth = values[..., config.top_k - 1 : config.top_k]
            values = values.masked_fill(values < kth, float("-inf"))
        logits = values
        if config.top_p < 1.0:  # top-p's probabilities are over the tokens top-k kept
            log_z = torch.logsumexp(logits, -1, keepdim=True)
            logits = _top_p_in_sorted(logits, log_z, config.top_p)
    elif config.top_p < 1.0:
        logits, ids = _top_p_candidates(logits, config.top_p)
    return _apply_min_p(logits, config.min_p), ids


def process_logits(
    logits: torch.Tensor, context: torch.Tensor, config: SamplingConfig
) -> torch.Tensor:
    """All logit transformations before the draw, in order; logits [B, V] in float32, the
    removed tokens -inf."""
    values, ids = candidates(logits, context, config)
    if ids is None:
        return values
    out = torch.full(logits.shape, float("-inf"), dtype=values.dtype)
    return out.scatter(-1, ids, values)


def sample(
    logits: torch.Tensor,
    context: torch.Tensor,
    config: SamplingConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids [B] from logits [B, V]."""
    values, ids = candidates(logits, context, config)
    if config.greedy:
        return values.argmax(-1)
    drawn = torch.multinomial(values.softmax(-1), 1, generator=generator)
    return (drawn if ids is None else ids.gather(-1, drawn)).squeeze(-1)
