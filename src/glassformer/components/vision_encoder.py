"""A ViT encoder over an image's patch embeddings: the tower the encoder-free path drops.

N pre-norm Transformer layers (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale") mix an image's patches with each other before
they reach the decoder:

    h = x + W_o Attn(LN_1(x))                    Attn(z) = softmax(Q K^T / sqrt(d_h) + M) V
    y = h + W_2 GELU(W_1 LN_2(h) + b_1) + b_2    Q, K, V = z W_qkv + b_qkv, per head

Attention is bidirectional within an image; M is -inf on the keys of padding patches (those
whose grid position is -1), so a padded image encodes as its real patches alone. With zero
layers the path is Gemma 4's encoder-free one: a patch reaches the decoder after its own
projection and position embedding, and every patch-to-patch interaction happens in the
decoder's layers. A ViT tower (SigLIP in Gemma 3, CLIP in LLaVA) spends its compute on
patches before the decoder sees them; this module lets the two be compared at equal cost.

The layer matches `torch.nn.TransformerEncoderLayer(norm_first=True, activation="gelu")`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.norms import LayerNorm

__all__ = ["VisionEncoder", "VisionEncoderLayer"]


class VisionEncoderLayer(nn.Module):
    def __init__(self, width: int, n_heads: int, d_ff: int, eps: float = 1e-5) -> None:
        super().__init__()
        if width % n_heads:
            raise ValueError(f"vision_encoder_heads: {n_heads} does not divide the width {width}")
        self.n_heads = n_heads
        self.norm1 = LayerNorm(width, eps)
        self.qkv_proj = nn.Linear(width, 3 * width)
        self.o_proj = nn.Linear(width, width)
        self.norm2 = LayerNorm(width, eps)
        self.up_proj = nn.Linear(width, d_ff)
        self.down_proj = nn.Linear(d_ff, width)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """x [images, patches, width]; key_bias [images, 1, 1, patches] (0 or -inf)."""
        n, p, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv_proj(self.norm1(x)).view(n, p, 3, h, d // h).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h) + key_bias
        mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, p, d)
        x = x + self.o_proj(mixed)
        return x + self.down_proj(F.gelu(self.up_proj(self.norm2(x))))


class VisionEncoder(nn.Module):
    """`n_layers` ViT layers of width `width` over [images, patches, width] embeddings."""

    def __init__(self, width: int, n_layers: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            VisionEncoderLayer(width, n_heads, d_ff) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """valid [images, patches] bool: False on padding patches (masked out as keys)."""
        bias = torch.zeros(valid.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(~valid, float("-inf"))[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x
