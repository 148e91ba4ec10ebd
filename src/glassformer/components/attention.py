"""Scaled dot-product attention with grouped KV heads (Vaswani et al. 2017; Ainslie et al. 2023).

    q = x W_q,  k = x W_k,  v = x W_v                   (n_heads, n_kv_heads heads of head_dim)
    s_ij = scale * q_i . k_j          (scale = head_dim^-1/2, or query_pre_attn_scalar^-1/2)
    s_ij = c * tanh(s_ij / c)         (optional logit soft-capping, Gemma 2)
    a_i  = softmax_j(s_ij + mask_ij) ;  o_i = sum_j a_ij v_j ;  y = o W_o
Each group of n_heads / n_kv_heads query heads shares one K/V head: MHA when they are equal,
MQA (Shazeer 2019) with one KV head, GQA in between. Optional extras, all set by the config:
biases, RMS-normalising q and k per head before RoPE (QK-norm: Dehghani et al. 2023, used by
Qwen3 and Gemma 3), and a sliding window (Beltagy et al. 2020; Mistral, Gemma) that hides keys
more than `window - 1` positions back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.kv_cache import LayerCache, attention_mask
from glassformer.components.norms import RMSNorm
from glassformer.components.rope import apply_rotary
from glassformer.config import Config
from glassformer.kernels.autograd import causal_attention, causal_attention_supported


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None = None,
    impl: str = "native",
) -> torch.Tensor:
    """q [B,H,T,D], k [B,Hkv,S,D], v [B,Hkv,S,Dv]; mask [T,S] or [B,1,T,S] bool, or None for
    plain causal attention over S == T keys.

    Returns [B,H,T,Dv]. `impl="eager"` spells the math out (and is what FLOP counters see);
    "sdpa" calls PyTorch's fused kernel; "native" (the default) is "sdpa" except for plain
    causal attention of float32 on the CPU, which runs glassformer's own kernel
    (`kernels/attention.c`: the visible half of the scores only, forward and backward).
    Soft-capping needs the scores, so it forces eager.
    """
    if (
        impl == "native"
        and mask is None
        and softcap is None
        and causal_attention_supported(q, k, v)
    ):
        b, h, t, d = q.shape
        return causal_attention(q, k, v, scale).view(b, t, h, d).transpose(1, 2)
    groups = q.shape[1] // k.shape[1]
    # One query row (decoding): PyTorch's CPU flash kernel has a large fixed cost per call,
    # while the explicit product is a pair of tiny matmuls.
    fused = impl in ("native", "sdpa")
    if fused and softcap is None and (q.shape[-2] > 1 or q.device.type != "cpu"):
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=groups > 1,
        )
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is None:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v)


class Attention(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        assert config.head_dim is not None and config.n_kv_heads is not None
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
        )
        d, hd = config.d_model, config.head_dim
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=config.qkv_bias)
        self.o_proj = nn.Linear(config.n_heads * hd, d, bias=config.attn_out_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(hd, config.norm_eps, config.norm_unit_offset)
            self.k_norm = RMSNorm(hd, config.norm_eps, config.norm_unit_offset)
        else:
            self.q_norm = self.k_norm = None
        self.scale = config.attention_scale
        self.softcap = config.attn_logit_softcap
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
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return self.o_proj(self.mix_heads(q, k, v, rope, positions, cache, key_valid))

    def mix_heads(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """Projected heads q [b, h, t, d], k, v [b, hk, t, d] -> softmax(q k^T) v as [b, t, h d]:
        QK-norm, RoPE, the cache, the mask, the scores (everything between the projections)."""
        b, _, t, _ = q.shape
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q = apply_rotary(q, *rope, interleaved=self.interleaved)
            k = apply_rotary(k, *rope, interleaved=self.interleaved)
        key_positions = positions
        if cache is not None:  # a cache may store fewer bits (float16); scores use q's dtype
            kv_dtype = cache.keys.dtype
            k, v, key_positions = cache.update(k.to(kv_dtype), v.to(kv_dtype), positions)
            k, v = k.to(q.dtype), v.to(q.dtype)
        mask = attention_mask(positions, key_positions, self.window, key_valid, cache is not None)
        out = attend(q, k, v, mask, self.scale, self.softcap, self.impl)
        return out.transpose(1, 2).reshape(b, t, -1)
