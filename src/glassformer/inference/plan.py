"""The lean decode step: one token per row as a fixed list of native kernel calls.

A decode step of a small model is not limited by arithmetic but by what surrounds it: SmolLM2
runs ~400 PyTorch ops and ~150 module calls per token, and in eager PyTorch each costs a few
microseconds of dispatch and allocation, about as long as the int4 matrix-vector products
themselves. A `DecodePlan` removes all of it for the common architecture (pre-norm RMSNorm,
RoPE, MHA/GQA attention over a static cache, SwiGLU MLP: Llama, Mistral, Qwen2, SmolLM2):

    h   = embed(token)
    per layer:
        x   = rmsnorm(h) * w_attn_norm
        qkv = W_qkv x (+ b_qkv)              q, k, v heads of the new token, one kernel
        q, k = rope(q, k, pos);  K[pos], V[pos] = k, v
        a   = softmax(q K[:pos+1]^T * scale) V[:pos+1]
        h  += W_o a
        x   = rmsnorm(h) * w_mlp_norm
        g|u = W_gu x;  m = silu(g) * u
        h  += W_down m
    logits = W_head (rmsnorm(h) * w_final_norm)

Every buffer (h, x, qkv, a, g|u, m, logits) is allocated once when the plan is built, and
every kernel's argument list (pointers, shapes, thread count) is fixed then too: the plan is a
program of ~11 kernel calls per layer (`native.Op` records), and a step is one ctypes call that
runs it (`gf_run_program`) with no tensor created (faster than issuing the calls from
Python: docs/inference.md, `benchmarks/ab_decode.py`). The functions are the same native kernels
the modules use (`native.py`), so the plan computes exactly what the fused modules compute;
`InferenceTransformer.forward` uses it automatically for single-token steps it supports and
falls back to the modules for everything else (padding, sliding-window rings, QK-norm,
soft-capping, MLA, MoE, other norms and activations: `why_not` says which).

The plan keeps references to the weights and to the cache's tensors, and a weak one to the
cache itself: `InferenceTransformer` keeps plans in a dictionary weakly keyed by cache, so a
plan goes when its cache does. It is rebuilt when the weights or the cache are replaced
(`InferenceTransformer._apply` drops plans when the model is moved or cast).
"""

from __future__ import annotations

import ctypes
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.kv_cache import KVCache
from glassformer.inference import native
from glassformer.inference.modules import (
    FastRMSNorm,
    FusedAttention,
    FusedMLP,
    QuantEmbedding,
    QuantLinear,
)
from glassformer.inference.quant import dequantize


def why_not(model: nn.Module, cache: KVCache) -> str | None:
    """None when `DecodePlan(model, cache)` can run this model; else the reason it cannot."""
    if native.library() is None:
        return "native kernels unavailable"
    cfg = model.config  # type: ignore[attr-defined]
    if cfg.norm_placement != "pre" or getattr(model, "pos_embed", None) is not None:
        return "only pre-norm models with rotary positions"
    if cfg.embed_scale or cfg.final_logit_softcap is not None:
        return "embedding scaling or final soft-capping"
    if cfg.per_layer_dim or cfg.moe_beside_mlp or cfg.layer_scalar:
        return "per-layer inputs, experts beside the MLP or layer scalars (Gemma 4)"
    if cache.key_valid is not None:
        return "padded batch"
    if getattr(model, "rope_switch_at", None) is not None:
        return "LongRoPE switches its frequencies with the sequence length"
    if model.embed.weight.dtype != torch.float32 or model.embed.weight.device.type != "cpu":  # type: ignore[union-attr]
        return "float32 CPU models only"
    for i, block in enumerate(model.layers):  # type: ignore[attr-defined]
        attn, mlp, layer_cache = block.attn, block.mlp, cache.layers[i]
        if layer_cache is None:
            return f"layer {i}: shares another layer's keys and values"
        if not isinstance(attn, FusedAttention) or not isinstance(mlp, FusedMLP):
            return f"layer {i}: attention or MLP not fused"
        if attn.q_norm is not None or attn.softcap is not None or attn.head_dim % 8:
            return f"layer {i}: QK-norm, soft-capping or head_dim not a multiple of 8"
        if attn.l2_eps is not None or attn.temperature is not None:
            return f"layer {i}: Llama 4's unweighted q/k norm or query temperature"
        if layer_cache.ring or layer_cache.keys.dtype not in native.CACHE_DTYPES:
            return f"layer {i}: sliding-window ring cache, or a cache neither float32 nor float16"
        if mlp.act is not F.silu:
            return f"layer {i}: MLP activation is not SiLU"
        if not isinstance(block.attn_norm, FastRMSNorm) or not isinstance(
            block.mlp_norm, FastRMSNorm
        ):
            return f"layer {i}: norms are not RMSNorm"
        for linear in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
            if _linear_kind(linear) is None:
                return f"layer {i}: a projection is neither float32 nor int8/int4"
    if not isinstance(model.final_norm, FastRMSNorm):  # type: ignore[attr-defined]
        return "final norm is not RMSNorm"
    return None


def _linear_kind(module: nn.Module) -> str | None:
    if isinstance(module, QuantLinear):
        return module.quant
    if type(module) is nn.Linear or isinstance(module, nn.Linear):
        w = module.weight
        if w.dtype == torch.float32 and w.is_contiguous() and w.device.type == "cpu":
            return "fp32"
    return None


class DecodePlan:
    """Single-token decode steps for `model` writing into `cache` (see the module docstring)."""

    def __init__(self, model: nn.Module, cache: KVCache) -> None:
        reason = why_not(model, cache)
        if reason is not None:
            raise ValueError(f"DecodePlan: unsupported model: {reason}")
        # Weakly: the model's plan dictionary is keyed by the cache, and a value that held
        # its key would keep every cache (and its plan) alive as long as the model.
        self._cache = weakref.ref(cache)
        self._build(model, cache.layers[0].keys.shape[0], [cache])

    def _build(self, model: nn.Module, batch: int, caches: list[KVCache]) -> None:
        """The program for `batch` rows; `_rope_store` and `_attend` place the rows in caches."""
        lib = native.library()
        assert lib is not None
        self.lib, self.model = lib, model
        cfg = model.config  # type: ignore[attr-defined]
        self.batch, self.threads = batch, torch.get_num_threads()
        self.capacity = min(layer.capacity for cache in caches for layer in cache.layers)
        d = cfg.d_model
        self._keep: list[torch.Tensor] = []  # tensors whose pointers the program holds
        self.h = self._buffer(batch, d)
        self.x = self._buffer(batch, d)
        self.tmp = self._buffer(batch, d)
        # Rotary tables for every position the cache can hold, per layer type.
        rope = model.rope_tables(torch.arange(self.capacity), torch.float32)  # type: ignore[operator]
        rope = {kind: (self._pin(cos), self._pin(sin)) for kind, (cos, sin) in rope.items()}
        ops: list[native.Op] = []
        for i, block in enumerate(model.layers):  # type: ignore[attr-defined]
            attn, mlp = block.attn, block.mlp
            h, hk, hd = attn.n_heads, attn.n_kv_heads, attn.head_dim
            qkv = self._buffer(batch, (h + 2 * hk) * hd)
            out = self._buffer(batch, h * hd)
            gu = self._buffer(batch, 2 * mlp.d_ff)
            act = self._buffer(batch, mlp.d_ff)
            kind = cfg.layer_type(i) if cfg.uses_rope(i) else None  # NoPE: no rotation
            cos, sin = rope.get(kind, (None, None))
            layers = [cache.layers[i] for cache in caches]
            ops += [
                self._norm(block.attn_norm, self.h, self.x),
                *self._linear(attn.qkv_proj, self.x, qkv),
                self._rope_store(attn, qkv, cos, sin, layers),
                self._attend(attn, qkv, out, layers),
                *self._linear(attn.o_proj, out, self.tmp),
                self._add(self.h, self.tmp, d),
                self._norm(block.mlp_norm, self.h, self.x),
                *self._linear(mlp.gate_up_proj, self.x, gu),
                _op(native.OP_SILU_MUL, gu.data_ptr(), act.data_ptr(), batch, mlp.d_ff),
                *self._linear(mlp.down_proj, act, self.tmp),
                self._add(self.h, self.tmp, d),
            ]
        ops.append(self._norm(model.final_norm, self.h, self.x))  # type: ignore[attr-defined]
        head = model.lm_head  # type: ignore[attr-defined]
        if head is None:
            embed = model.embed  # type: ignore[attr-defined]
            head = embed.table if isinstance(embed, QuantEmbedding) else embed
        vocab = head.out_features if isinstance(head, QuantLinear) else head.weight.shape[0]
        self.logits = self._buffer(batch, vocab)
        ops += self._linear(head, self.x, self.logits)
        self.program = (native.Op * len(ops))(*ops)

    def _rope_store(self, attn, qkv, cos, sin, layers: list) -> native.Op:
        """Rotate q, k of the new token with row `pos` of the tables; store k, v in slot pos."""
        (lc,) = layers
        half = cos.shape[-1] if cos is not None else 0
        keys, values = self._pin(lc.keys), self._pin(lc.values)
        return _op(native.OP_ROPE_STORE, qkv.data_ptr(), self.batch, attn.n_heads,
                   attn.n_kv_heads, attn.head_dim, 2 * half, int(attn.interleaved),
                   cos.data_ptr() if cos is not None else 0,
                   sin.data_ptr() if sin is not None else 0, keys.data_ptr(), values.data_ptr(),
                   self._pin(lc.positions).data_ptr(), lc.capacity, half,
                   native.cache_f16(lc.keys))  # fmt: skip

    def _attend(self, attn, qkv, out, layers: list) -> native.Op:
        """Attend over the pos + 1 cached keys."""
        (lc,) = layers
        keys, values = self._pin(lc.keys), self._pin(lc.values)
        return _op(native.OP_ATTEND, qkv.data_ptr(), qkv.shape[1], keys.data_ptr(),
                   values.data_ptr(), self.batch, attn.n_heads, attn.n_kv_heads, attn.head_dim,
                   lc.capacity, out.data_ptr(), self.threads, native.cache_f16(lc.keys),
                   f=attn.scale)  # fmt: skip

    # -- building blocks -------------------------------------------------------------------

    def _buffer(self, *shape: int) -> torch.Tensor:
        return self._pin(torch.zeros(*shape, dtype=torch.float32))

    def _pin(self, t: torch.Tensor) -> torch.Tensor:
        if not t.is_contiguous():
            raise ValueError("DecodePlan: expected contiguous tensors")
        self._keep.append(t)
        return t

    def _norm(self, norm: FastRMSNorm, src: torch.Tensor, dst: torch.Tensor) -> native.Op:
        w = norm.weight.detach()
        weight = self._pin((1.0 + w if norm.unit_offset else w).float().contiguous())
        return _op(native.OP_RMSNORM, src.data_ptr(), weight.data_ptr(), dst.data_ptr(),
                   self.batch, w.shape[0], f=norm.eps)  # fmt: skip

    def _add(self, dst: torch.Tensor, src: torch.Tensor, n: int) -> native.Op:
        return _op(native.OP_ADD, dst.data_ptr(), src.data_ptr(), self.batch, n, n)

    def _linear(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[native.Op]:
        """y = x W^T (+ b) for a float32 nn.Linear, a QuantLinear or an embedding table."""
        m, k = self.batch, x.shape[1]
        if isinstance(module, QuantLinear):
            n, g = module.out_features, module.group
            q = self._pin(module.qweight)
            if module.quant == "int4":
                d, mn = self._pin(module.d), self._pin(module.mn)  # type: ignore[arg-type]
                op = _op(native.OP_Q4_MM, x.data_ptr(), m, k, q.data_ptr(), d.data_ptr(),
                         mn.data_ptr(), n, g, y.data_ptr(), self.threads)  # fmt: skip
            else:
                s = self._pin(module.scales)  # type: ignore[arg-type]
                op = _op(native.OP_Q8_MM, x.data_ptr(), m, k, q.data_ptr(), s.data_ptr(), n, g,
                         y.data_ptr(), self.threads)  # fmt: skip
        else:
            w = self._pin(module.weight.detach())
            n = w.shape[0]
            op = _op(native.OP_F32_MM, x.data_ptr(), m, k, w.data_ptr(), n, y.data_ptr(),
                     self.threads)  # fmt: skip
        bias = getattr(module, "bias", None)
        if bias is None:
            return [op]
        b = self._pin(bias.detach().float().contiguous())
        return [op, _op(native.OP_ADD, y.data_ptr(), b.data_ptr(), m, n, 0)]

    # -- the step ----------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor) -> None:
        embed = self.model.embed  # type: ignore[attr-defined]
        h = self.h if ids.shape[0] == self.batch else self.h[: ids.shape[0]]
        if isinstance(embed, QuantEmbedding):
            h.copy_(dequantize(embed.table.weight_data(), ids))
        else:
            torch.index_select(embed.weight, 0, ids, out=h)

    @torch.inference_mode()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [batch] continuing the cached rows -> logits [batch, vocab].

        The logits tensor is the plan's own buffer: it is overwritten by the next step."""
        cache = self._cache()
        if cache is None:
            raise RuntimeError("DecodePlan: its cache no longer exists")
        pos = cache.length
        if pos >= self.capacity:
            raise ValueError(f"KV cache full: {pos + 1} positions exceed its capacity")
        if torch.get_num_threads() != self.threads:
            raise RuntimeError("DecodePlan: the thread count changed; build a new plan")
        self._embed(ids.reshape(-1))
        self.lib.run_program(self.program, len(self.program), pos)
        cache.length = pos + 1
        return self.logits


class BatchDecodePlan(DecodePlan):
    """One decode step for up to `len(caches)` sequences of their own lengths, each in its own
    single-row cache: continuous batching, where sequences start and end at different steps.

        logits = plan.step(ids, slots)     row b continues the sequence in caches[slots[b]]

    The program is `DecodePlan`'s with the batch set per step: every product reads each weight
    once for all the rows (the point of batching when a step is bound by memory bandwidth), and
    the RoPE/cache-store and attention calls take each row's position and cache from tables
    (`gf_rope_store_rows`, `gf_attn_decode_rows`). Each row computes exactly what a
    `DecodePlan` step of that sequence alone computes: the products and norms treat rows
    independently, and attention cuts each row's keys as it would for the row alone.
    """

    MAX_ROWS = 256  # gf_run_rows' bound

    def __init__(self, model: nn.Module, caches: list[KVCache]) -> None:
        if not 1 <= len(caches) <= self.MAX_ROWS:
            raise ValueError(f"caches: 1 to {self.MAX_ROWS} expected, got {len(caches)}")
        for cache in caches:
            reason = why_not(model, cache)
            if reason is not None:
                raise ValueError(f"BatchDecodePlan: unsupported model: {reason}")
            if cache.layers[0].keys.shape[0] != 1:
                raise ValueError("BatchDecodePlan: each cache must hold one sequence (batch 1)")
        self.caches = list(caches)
        self.pos = torch.zeros(len(caches), dtype=torch.long)
        self.slot = torch.zeros(len(caches), dtype=torch.long)
        self._build(model, len(caches), self.caches)

    def _tables(self, layers: list) -> tuple[int, int, int]:
        """Per-slot pointer tables of the layer's keys, values and positions."""
        if len({(lc.keys.shape, lc.keys.dtype) for lc in layers}) != 1:
            raise ValueError("BatchDecodePlan: the caches' layers differ in shape or dtype")
        tables = [
            self._pin(torch.tensor([self._pin(t).data_ptr() for t in ts], dtype=torch.long))
            for ts in (
                [lc.keys for lc in layers],
                [lc.values for lc in layers],
                [lc.positions for lc in layers],
            )
        ]
        return tables[0].data_ptr(), tables[1].data_ptr(), tables[2].data_ptr()

    def _rope_store(self, attn, qkv, cos, sin, layers: list) -> native.Op:
        kt, vt, pt = self._tables(layers)
        half = cos.shape[-1] if cos is not None else 0
        return _op(native.OP_ROPE_STORE_ROWS, qkv.data_ptr(), attn.n_heads, attn.n_kv_heads,
                   attn.head_dim, 2 * half, int(attn.interleaved),
                   cos.data_ptr() if cos is not None else 0,
                   sin.data_ptr() if sin is not None else 0, kt, vt, pt, layers[0].capacity, half,
                   native.cache_f16(layers[0].keys))  # fmt: skip

    def _attend(self, attn, qkv, out, layers: list) -> native.Op:
        kt, vt, _ = self._tables(layers)
        return _op(native.OP_ATTEND_ROWS, qkv.data_ptr(), qkv.shape[1], kt, vt, attn.n_heads,
                   attn.n_kv_heads, attn.head_dim, layers[0].capacity, out.data_ptr(), self.threads,
                   native.cache_f16(layers[0].keys), f=attn.scale)  # fmt: skip

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, slots: list[int]) -> torch.Tensor:  # type: ignore[override]
        """ids [rows] continuing the sequences in caches[slots[b]] -> logits [rows, vocab].

        The logits are a view of the plan's buffer: overwritten by the next step."""
        rows = len(slots)
        if not 1 <= rows <= self.batch or ids.numel() != rows or len(set(slots)) != rows:
            raise ValueError(f"step: {rows} distinct slots of {self.batch} with one id each")
        if torch.get_num_threads() != self.threads:
            raise RuntimeError("BatchDecodePlan: the thread count changed; build a new plan")
        caches = [self.caches[s] for s in slots]
        for cache in caches:
            if cache.length >= self.capacity:
                raise ValueError(
                    f"KV cache full: {cache.length + 1} positions exceed its capacity"
                )
        self.pos[:rows] = torch.tensor([cache.length for cache in caches])
        self.slot[:rows] = torch.tensor(slots)
        self._embed(ids.reshape(-1))
        self.lib.run_rows(
            self.program, len(self.program), rows, self.pos.data_ptr(), self.slot.data_ptr()
        )
        for cache in caches:
            cache.length += 1
        return self.logits[:rows]


def _op(kind: int, *args: int, f: float = 0.0) -> native.Op:
    return native.Op(kind, (ctypes.c_int64 * 15)(*args), f)
