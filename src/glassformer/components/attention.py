"""Scaled dot-product attention with grouped KV heads (Vaswani et al. 2017; Ainslie et al. 2023).

    q = x W_q,  k = x W_k,  v = x W_v                   (n_heads, n_kv_heads heads of head_dim)
    s_ij = scale * q_i . k_j          (scale = head_dim^-1/2, or query_pre_attn_scalar^-1/2)
    s_ij = c * tanh(s_ij / c)         (optional logit soft-capping, Gemma 2)
    a_i  = softmax_j(s_ij + mask_ij) ;  o_i = sum_j a_ij v_j ;  y = o W_o
Each group of n_heads / n_kv_heads query heads shares one K/V head: MHA when they are equal,
MQA (Shazeer 2019) with one KV head, GQA in between. Optional extras, all set by the config:
biases, RMS-normalising q and k per head before RoPE (QK-norm: Dehghani et al. 2023, used by
Qwen3 and Gemma 3; or over the whole projection, all heads of a token together, as OLMo 2
does: Team OLMo 2024, "2 OLMo 2 Furious"), and a sliding window (Beltagy et al. 2020; Mistral,
Gemma) that hides keys more than `window - 1` positions back. Llama 4 adds chunked layers (a
query sees only the keys of its own chunk of positions), NoPE layers with a query temperature,
and unweighted q/k normalisation on its RoPE layers (`components/temperature.py`). Gated
attention (Qiu et al. 2025, "Gated Attention for Large Language Models"; Qwen3-Next, Qwen3.5):
q_proj also yields a gate g per head and dim, stored after each head's query ([q_h, g_h] per
head), and y = (o * sigmoid(g)) W_o.

Attention sinks (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks";
gpt-oss, OpenAI 2025) give each query head h a learned logit sink_h that joins every softmax row
and is then dropped:
    a_ij = exp(s_ij) / (exp(sink_h) + sum_j' exp(s_ij'))
so a row's weights sum to less than one and a head can attend to nothing in particular.

Gemma 4 (Gemma Team 2026) varies the shapes per layer, as the config says: its full-attention
layers have their own head_dim and KV heads and may project keys only, using them as values
too (v = x W_k, before the key's norm and RoPE); values may be RMS-normalised per head without
a learned scale; and its last `n_kv_shared_layers` layers project queries only and attend to
the keys and values of the last earlier layer of their type (KV sharing, from Gemma 3n), so
they hold no cache of their own.

The softmax(q k^T) v step is one call, `attention` (`glassformer.kernels.dispatch`, where the
choice between glassformer's causal kernel, PyTorch's SDPA and the spelled-out scores lives).
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.kv_cache import LayerCache, attention_mask
from glassformer.components.norms import RMSNorm, UnscaledRMSNorm, unit_rms_norm
from glassformer.components.rope import apply_rotary
from glassformer.components.temperature import attention_temperature
from glassformer.config import Config
from glassformer.kernels.dispatch import attention


class Attention(nn.Module):
    def __init__(self, config: Config, layer: int) -> None:
        super().__init__()
        self.n_heads = h = config.layer_n_heads(layer)
        self.n_kv_heads = hk = config.layer_n_kv_heads(layer)
        self.head_dim = hd = config.layer_head_dim(layer)
        d = config.d_model
        # KV sharing: the layer whose keys and values this one attends to (None: its own), and
        # whether a later layer attends to this one's
        self.layer, self.kv_source = layer, config.kv_source(layer)
        self.hands_on_kv = any(config.kv_source(j) == layer for j in range(config.n_layers))
        own_kv = self.kv_source is None
        self.gated = config.attn_output_gate
        q_width = h * hd * (2 if self.gated else 1)
        self.q_proj = nn.Linear(d, q_width, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, hk * hd, bias=config.qkv_bias) if own_kv else None
        separate_v = own_kv and not config.layer_k_eq_v(layer)
        self.v_proj = nn.Linear(d, hk * hd, bias=config.qkv_bias) if separate_v else None
        self.o_proj = nn.Linear(h * hd, d, bias=config.attn_out_bias)
        self.qk_norm_scope = config.qk_norm_scope
        self.q_norm = self.k_norm = None
        if config.qk_norm:
            # one statistic per head, or over the whole projection (all heads of a token)
            q_dim, k_dim = (
                (hd, hd) if config.qk_norm_scope == "head" else (h * hd, hk * hd)
            )
            self.q_norm = RMSNorm(q_dim, config.norm_eps, config.norm_unit_offset)
            if own_kv:
                self.k_norm = RMSNorm(k_dim, config.norm_eps, config.norm_unit_offset)
        self.v_norm = UnscaledRMSNorm(config.norm_eps) if config.v_norm and own_kv else None
        # one logit per query head (initialised by Transformer.reset_parameters)
        self.sinks = nn.Parameter(torch.empty(h)) if config.attn_sinks else None
        self.scale = config.layer_attention_scale(layer)
        self.softcap = config.attn_logit_softcap
        self.window = config.window(layer)
        self.chunk = config.chunk(layer)
        self.interleaved = config.rope_interleaved
        rope = config.uses_rope(layer)
        # Llama 4: unweighted q/k norm on RoPE layers, a query temperature on NoPE layers
        self.l2_eps = config.norm_eps if config.qk_l2_norm and rope else None
        tuned = config.attn_temperature_floor is not None and not rope
        self.temperature = (
            (config.attn_temperature_floor, config.attn_temperature_scale) if tuned else None
        )
        self.impl = "native"  # which attention implementation: `Transformer.set_attention_impl`

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        key_valid: torch.Tensor | None = None,
        shared_kv: dict[int, tuple] | None = None,
        blocks: torch.Tensor | None = None,
        kv_inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`shared_kv` (KV sharing only): layer -> the keys and values it attended to in this
        forward pass, filled by the layers that hand them on, read by the ones that share.
        `blocks` [B, positions]: image block ids whose tokens see each other both ways on this
        layer (`kv_cache.with_image_blocks`), or None.
        `kv_inputs`: what the keys and the values are projected from when it is not `x`
        (MUDDFormer's separate key and value streams, components/connections/mudd.py)."""
        b, t, _ = x.shape
        x_k, x_v = (x, x) if kv_inputs is None else kv_inputs
        q = self.q_proj(x)
        gate = None
        if self.gated:
            q, gate = q.view(b, t, self.n_heads, 2 * self.head_dim).chunk(2, dim=-1)
            gate = gate.reshape(b, t, -1)
        q = q.reshape(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        if self.k_proj is None:
            assert shared_kv is not None, "a KV-sharing layer needs its source layer's keys"
            source = shared_kv[self.kv_source]
            out = self._attend_shared(q, rope, positions, source, key_valid, blocks)
        else:
            k = self.k_proj(x_k)
            v = k if self.v_proj is None else self.v_proj(x_v)  # keys-equal-values: k before norm
            k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
            v = v.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
            if self.v_norm is not None:
                v = self.v_norm(v)
            out = self.mix_heads(q, k, v, rope, positions, cache, key_valid, shared_kv, blocks)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out)

    def mix_heads(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None,
        key_valid: torch.Tensor | None,
        shared_kv: dict[int, tuple] | None = None,
        blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Everything between the projections: projected heads q [b, h, t, d], k, v [b, hk, t, d]
        -> softmax(scale q k^T + mask) v as [b, t, h d], the output projection's input."""
        q, k = self._qk_norm(q, k)
        q, k = self._rotate(q, k, rope)
        if self.l2_eps is not None:
            q, k = unit_rms_norm(q, self.l2_eps), unit_rms_norm(k, self.l2_eps)
        k, v, key_positions = self._append_to_cache(k, v, positions, cache, q.dtype)
        if shared_kv is not None and self.hands_on_kv:
            shared_kv[self.layer] = (k, v, key_positions, cache is not None)
        return self._attend(
            q, k, v, positions, key_positions, key_valid, cache is not None, blocks
        )

    def _attend_shared(
        self,
        q: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        source: tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool],
        key_valid: torch.Tensor | None,
        blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KV sharing: the new queries attend to the keys and values (already normalised,
        rotated and cached) that the source layer attended to."""
        k, v, key_positions, cached = source
        if self.q_norm is not None:
            q = _norm_heads(self.q_norm, q, self.qk_norm_scope)
        if rope is not None:
            q = apply_rotary(q, *rope, interleaved=self.interleaved)
        if self.l2_eps is not None:
            q = unit_rms_norm(q, self.l2_eps)
        return self._attend(q, k, v, positions, key_positions, key_valid, cached, blocks)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        key_positions: torch.Tensor,
        key_valid: torch.Tensor | None,
        cached: bool,
        blocks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Normalised, rotated queries [b, h, t, d] and every key and value they may see
        -> softmax(scale q k^T + mask) v as [b, t, h d] (with Llama 4's query temperature)."""
        b, _, t, _ = q.shape
        if self.temperature is not None:
            tau = attention_temperature(positions, *self.temperature)
            q = (q * tau[:, None]).to(q.dtype)
        mask = attention_mask(
            positions, key_positions, self.window, key_valid, cached, self.chunk, blocks
        )
        out = attention(
            q, k, v, mask, scale=self.scale, softcap=self.softcap, sinks=self.sinks, impl=self.impl
        )
        return out.transpose(1, 2).reshape(b, t, -1)

    @property
    def fusable(self) -> bool:
        """Whether q, k and v are three plain projections of x (what `inference` fuses)."""
        return self.k_proj is not None and self.v_proj is not None and self.v_norm is None

    def _qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """QK-norm, if configured: each query and key head RMS-normalised (Qwen3), or each
        token's whole query and key projection, all heads together (OLMo 2)."""
        if self.q_norm is None or self.k_norm is None:
            return q, k
        scope = self.qk_norm_scope
        return _norm_heads(self.q_norm, q, scope), _norm_heads(self.k_norm, k, scope)

    def _rotate(
        self, q: torch.Tensor, k: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE on queries and keys by their positions' (cos, sin); None: no rotary positions."""
        if rope is None:
            return q, k
        return (
            apply_rotary(q, *rope, interleaved=self.interleaved),
            apply_rotary(k, *rope, interleaved=self.interleaved),
        )

    def _append_to_cache(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store the new keys and values; return every key and value the new queries may see
        (in `dtype`) with their positions. Without a cache: the new ones only."""
        if cache is None:
            return k, v, positions
        kv_dtype = cache.keys.dtype  # a cache may store fewer bits (float16); scores use q's dtype
        k, v, key_positions = cache.update(k.to(kv_dtype), v.to(kv_dtype), positions)
        return k.to(dtype), v.to(dtype), key_positions


def _norm_heads(norm: nn.Module, x: torch.Tensor, scope: str) -> torch.Tensor:
    """`norm` on heads x [b, h, t, d]: each head alone (scope "head") or all of a token's heads
    together ("all")."""
    if scope == "head":
        return norm(x)
    b, h, t, d = x.shape
    return norm(x.transpose(1, 2).reshape(b, t, h * d)).view(b, t, h, d).transpose(1, 2)
