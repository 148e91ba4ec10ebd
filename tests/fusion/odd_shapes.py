"""Tiny HF configs at widths the kernels' tiles do not divide: d_model 48, d_ff 72, head_dim 12
(RoPE halves of 6 in 16-wide tiles), 4 query heads over 2 KV heads unless overridden."""

from __future__ import annotations

from typing import Any

from tests.families import TINY_HF_CONFIGS

ODD_SIZES = dict(
    hidden_size=48,
    intermediate_size=72,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=12,
)


def odd(family: str, **overrides: Any) -> dict[str, Any]:
    """`family`'s tiny HF config at the odd sizes, then `overrides`."""
    return {**TINY_HF_CONFIGS[family], **ODD_SIZES, **overrides}
