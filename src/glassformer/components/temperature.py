"""Query temperature and unweighted q/k normalisation of Llama 4's interleaved layers.

Llama 4 (Meta 2025, the Llama 4 model card; "iRoPE") interleaves RoPE layers, which attend
within chunks, with NoPE layers (no positional rotation, Kazemnejad et al. 2023, "The Impact of
Positional Encoding on Length Generalization in Transformers"), which attend to the whole
context. Two extras keep them stable at long context:

- Attention temperature tuning on the NoPE layers: the query at position p is multiplied by
      tau(p) = 1 + s * log(1 + floor((p + 1) / F))
  (F = floor scale, s = scale), sharpening the softmax as the number of keys grows, in steps of
  F positions. It is 1 for the first F - 1 positions.
- On the RoPE layers, q and k are RMS-normalised per head with no learned scale,
      x / sqrt(mean(x^2) + eps)
  (HF calls it an L2 norm; it is the RMS norm of Zhang & Sennrich 2019 without its weight:
  `norms.unit_rms_norm`).
"""

from __future__ import annotations

import torch


def attention_temperature(positions: torch.Tensor, floor_scale: int, scale: float) -> torch.Tensor:
    """tau(p) for positions [T] -> [T] float32."""
    return torch.log1p(torch.floor((positions.float() + 1.0) / floor_scale)) * scale + 1.0
