"""Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434; used by DeepSeek-V3).

Keys and values are compressed into one low-rank latent per token, and only that latent (plus a
small shared rotary key) is cached:
    c_kv = RMSNorm(x W_dkv)                       [kv_lora_rank]       (cached)
    k_r  = RoPE(x W_kr)                           [qk_rope_head_dim]   (cached, shared by heads)
    k_h  = [c_kv W_uk,h ; k_r] ,  v_h = c_kv W_uv,h
    c_q  = RMSNorm(x W_dq) ;  q_h = [c_q W_uq,h ; RoPE(c_q W_qr,h)]   (or a plain x W_q)
    o    = sum_h softmax(scale q_h . k_h) v_h W_o,h
RoPE is kept out of the compressed part ("decoupled RoPE") because a position-dependent rotation
between W_uk and q would stop W_uk from being absorbed into the query at decode time. This module
computes the plain (expanded) order; the explorer also costs the absorbed order.
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.kv_cache import LayerCache, attention_mask
from glassformer.components.norms import RMSNorm
from glassformer.components.rope import apply_rotary
from glassformer.config import Config
from glassformer.kernels.dispatch import attention

# The reference implementation builds its latent norms with the RMSNorm default eps, not the
# model's norm_eps; keep it so loaded weights reproduce it.
LATENT_NORM_EPS = 1e-6


class MultiHeadLatentAttention(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        d, h = config.d_model, config.n_heads
        self.n_heads = h
        self.nope_dim, self.rope_dim = config.qk_nope_head_dim, config.qk_rope_head_dim
        self.v_dim, self.kv_rank = config.v_head_dim, config.kv_lora_rank
        qk_dim = self.nope_dim + self.rope_dim
        if config.q_lora_rank is None:
            self.q_proj: nn.Linear | None = nn.Linear(d, h * qk_dim, bias=False)
            self.q_a_proj = self.q_a_norm = self.q_b_proj = None
        else:
            self.q_proj = None
            self.q_a_proj = nn.Linear(d, config.q_lora_rank, bias=config.qkv_bias)
            self.q_a_norm = RMSNorm(config.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(config.q_lora_rank, h * qk_dim, bias=False)
        self.kv_a_proj = nn.Linear(d, self.kv_rank + self.rope_dim, bias=config.qkv_bias)
        self.kv_a_norm = RMSNorm(self.kv_rank, LATENT_NORM_EPS)
        self.kv_b_proj = nn.Linear(self.kv_rank, h * (self.nope_dim + self.v_dim), bias=False)
        self.o_proj = nn.Linear(h * self.v_dim, d, bias=config.attn_out_bias)
        self.scale = config.attention_scale
        self.window = config.window(layer)
        self.interleaved = config.rope_interleaved
        self.impl = "native"

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        if self.q_proj is not None:
            q = self.q_proj(x)
        else:
            assert self.q_a_proj is not None and self.q_a_norm is not None
            assert self.q_b_proj is not None
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        q = q.view(b, t, self.n_heads, -1).transpose(1, 2)
        q_nope, q_rope = q.split([self.nope_dim, self.rope_dim], dim=-1)

        c_kv, k_rope = self.kv_a_proj(x).split([self.kv_rank, self.rope_dim], dim=-1)
        c_kv = self.kv_a_norm(c_kv)
        if rope is not None:
            q_rope = apply_rotary(q_rope, *rope, interleaved=self.interleaved)
            k_rope = apply_rotary(k_rope, *rope, interleaved=self.interleaved)

        key_positions = positions
        if cache is not None:
            c_kv, k_rope, key_positions = cache.update(c_kv, k_rope, positions)
        s = c_kv.shape[1]
        kv = self.kv_b_proj(c_kv).view(b, s, self.n_heads, -1).transpose(1, 2)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        k = torch.cat((k_nope, k_rope[:, None].expand(b, self.n_heads, s, self.rope_dim)), -1)
        q = torch.cat((q_nope, q_rope), dim=-1)

        mask = attention_mask(positions, key_positions, self.window, key_valid, cache is not None)
        out = attention(q, k, v, mask, scale=self.scale, impl=self.impl)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
