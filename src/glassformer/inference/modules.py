"""Drop-in replacements for the core modules, used by `optimize()`.

Each one computes the same function as the module it replaces; only the layout of the weights
or the number of kernel launches differs:

- `QuantLinear`: y = x W^T + b with W int8/int4 (see `quant.py`). Up to `SMALL_M` rows
  (decoding) the native kernels dequantise in registers; more rows (prefill) dequantise blocks
  of W to float32 and run a GEMM, which is compute-bound and as fast as fp32.
- `QuantEmbedding`: a quantised embedding table; lookups dequantise only the rows asked for, and
  a tied LM head uses the same quantised table as a `QuantLinear`.
- `FusedAttention`: one projection [W_q; W_k; W_v] instead of three (one pass over x, one kernel
  launch), RoPE applied to q and k in one call, and a direct path for the common cases
  (full-attention layer, static cache, no padding): decoding writes k, v into the cache slot and
  attends to the filled prefix without a mask; a prefill into an empty cache runs the core's
  causal kernel (`kernels.autograd.causal_attention`: only the visible half of the scores;
  `benchmarks/prefill_attention.py` measures it against SDPA) up to its limit of 2048 positions,
  SDPA's causal kernel beyond. Anything else (padding, sliding-window rings, soft-capping,
  impl="eager") takes the general path, which is the core `Attention.forward` line for line
  on the fused projection.
- `FusedMLP`: [W_gate; W_up] as one projection, act(g) * u computed in place.
- `FastRMSNorm`: `F.rms_norm` (one kernel) for float32 inputs; same formula as `RMSNorm`.
- `DecodeLinear`: a float32 nn.Linear whose few-row products (decoding) run the native
  matrix-vector kernel, which streams the weights about twice as fast as PyTorch's GEMM does
  for a single row on this class of CPU (docs/inference.md); more rows use `F.linear`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.attention import Attention
from glassformer.components.kv_cache import LayerCache, visibility_mask
from glassformer.components.mlp import MLP
from glassformer.components.norms import RMSNorm
from glassformer.components.rope import apply_rotary
from glassformer.inference import native
from glassformer.inference.quant import (
    Int4Weight,
    Int8Weight,
    dequantize,
)
from glassformer.kernels.autograd import causal_attention, causal_attention_supported
from glassformer.kernels.autograd import native_ok as kernels_native_ok

SMALL_M = 8  # rows handled by the matrix-vector kernels; more rows go to dequantise + GEMM
CHUNK_ELEMS = 4 * 1024 * 1024  # float32 elements dequantised at a time for a GEMM (16 MB)


class QuantLinear(nn.Module):
    """A linear layer with int8 or int4 weights and float32 activations."""

    def __init__(self, weight: Int8Weight | Int4Weight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.group = weight.group
        if isinstance(weight, Int8Weight):
            self.quant = "int8"
            self.register_buffer("qweight", weight.q)
            self.register_buffer("scales", weight.scales)
            self.d = self.mn = None
        else:
            self.quant = "int4"
            self.register_buffer("qweight", weight.q)
            self.register_buffer("d", weight.d)
            self.register_buffer("mn", weight.mn)
            self.scales = None
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"quant={self.quant}, group={self.group}, bias={self.bias is not None}"
        )

    def weight_data(self, start: int = 0, stop: int | None = None) -> Int8Weight | Int4Weight:
        """The quantised rows [start, stop) (views, no copy)."""
        rows = slice(start, stop)
        if self.quant == "int8":
            assert self.scales is not None
            return Int8Weight(self.qweight[rows], self.scales[rows], self.group)
        assert self.d is not None and self.mn is not None
        return Int4Weight(self.qweight[rows], self.d[rows], self.mn[rows], self.group)

    def nbytes(self) -> int:
        return self.weight_data().nbytes()

    def dequantize(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """float32 W[start:stop] (the native kernel when available, else the reference)."""
        w = self.weight_data(start, stop)
        if native.library() is None:
            return dequantize(w)
        if isinstance(w, Int8Weight):
            return native.q8_dequant(w.q, w.scales, w.group)
        return native.q4_dequant(w.q, w.d, w.mn, w.group)

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        """The kernels as custom ops, for a torch.compile graph."""
        ops = native.custom_ops()
        if self.quant == "int8":
            return ops.q8_mm(x, self.qweight, self.scales, self.group)  # type: ignore[attr-defined]
        return ops.q4_mm(x, self.qweight, self.d, self.mn, self.group)  # type: ignore[attr-defined]

    def _gemm(self, x: torch.Tensor) -> torch.Tensor:
        n, k = self.out_features, self.in_features
        rows = max(1, CHUNK_ELEMS // k)
        if n <= rows:
            return F.linear(x, self.dequantize())
        y = torch.empty(x.shape[0], n, dtype=torch.float32, device=x.device)
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            y[:, start:stop] = F.linear(x, self.dequantize(start, stop))
        return y

    def _kernel(self) -> tuple | None:
        """(kernel, weight arguments) for the native call, built once: reading five buffers
        through nn.Module.__getattr__ and taking their addresses costs more per call than
        the kernel itself does for the small layers. Dropped whenever the buffers may move."""
        cached = self.__dict__.get("_kernel_args")
        if cached is None:
            lib = native.library()
            n, group = self.out_features, self.group
            if lib is None or self.qweight.device.type != "cpu":
                cached = ()
            elif self.quant == "int4":
                assert self.d is not None and self.mn is not None
                ptrs = (self.qweight.data_ptr(), self.d.data_ptr(), self.mn.data_ptr())
                cached = (lib.q4_mm, (*ptrs, n, group))
            else:
                assert self.scales is not None
                ptrs = (self.qweight.data_ptr(), self.scales.data_ptr())
                cached = (lib.q8_mm, (*ptrs, n, group))
            self.__dict__["_kernel_args"] = cached
        return cached or None

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # nn.Module's signature
        self.__dict__.pop("_kernel_args", None)
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self.__dict__.pop("_kernel_args", None)
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        k = self.in_features
        x2 = x.reshape(-1, k)
        if x2.dtype != torch.float32:
            x2 = x2.float()
        m = x2.shape[0]
        kernel = self._kernel() if m <= SMALL_M else None
        if kernel is not None and not torch.compiler.is_compiling():
            x2 = x2.contiguous()
            y = torch.empty(m, self.out_features, dtype=torch.float32)
            fn, weight_args = kernel
            fn(x2.data_ptr(), m, k, *weight_args, y.data_ptr(), torch.get_num_threads())
        elif kernel is not None:
            y = self._small(x2.contiguous())
        else:
            y = self._gemm(x2)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*lead, self.out_features).to(x.dtype)


class QuantEmbedding(nn.Module):
    """Embedding rows stored quantised; also serves as the tied LM head (`self.table`).

    `weight` is an empty float32 tensor that only carries the device and dtype that code such
    as `Transformer.new_cache` reads from `model.embed.weight`; the values live in `table`.
    """

    def __init__(self, weight: Int8Weight | Int4Weight) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight.shape
        self.table = QuantLinear(weight)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self._anchor

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = dequantize(self.table.weight_data(), ids.reshape(-1).to(torch.long))
        return rows.view(*ids.shape, self.embedding_dim)


def native_ok(x: torch.Tensor) -> bool:
    """Whether the inference kernels (which have no backward) may run on x: the kernels' own
    rule (`kernels.autograd.native_ok`) and no autograd."""
    return not x.requires_grad and kernels_native_ok(x)


class DecodeLinear(nn.Linear):
    """nn.Linear (float32) with the native matrix-vector kernel for up to `SMALL_M` rows."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> DecodeLinear:
        new = cls.__new__(cls)
        new.__dict__.update(linear.__dict__)  # same parameters, same hooks: only the class differs
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        w = self.weight
        if rows > SMALL_M or w.dtype != torch.float32 or not native_ok(x) or w.requires_grad:
            return F.linear(x, w, self.bias)
        y = native.f32_mm(x.reshape(rows, self.in_features).contiguous(), w.contiguous())
        if self.bias is not None:
            y += self.bias
        return y.view(*x.shape[:-1], self.out_features)


class FastRMSNorm(RMSNorm):
    """RMSNorm as one kernel (native, else `F.rms_norm`) for float32 inputs."""

    @classmethod
    def from_norm(cls, norm: RMSNorm) -> FastRMSNorm:
        new = cls(norm.weight.shape[0], norm.eps, norm.unit_offset)
        new.weight = norm.weight
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or self.weight.dtype != torch.float32:
            return super().forward(x)
        weight = 1.0 + self.weight if self.unit_offset else self.weight
        if native_ok(x):
            return native.rmsnorm(x.contiguous(), weight.contiguous(), self.eps)
        return F.rms_norm(x, (x.shape[-1],), weight, self.eps)


def concat_weights(parts: list[Int8Weight | Int4Weight]) -> Int8Weight | Int4Weight:
    """Quantised matrices stacked by rows (same format and group): a row keeps its scales."""
    first = parts[0]
    if isinstance(first, Int8Weight):
        return Int8Weight(
            torch.cat([p.q for p in parts]),  # type: ignore[union-attr]
            torch.cat([p.scales for p in parts]),  # type: ignore[union-attr]
            first.group,
        )
    return Int4Weight(
        torch.cat([p.q for p in parts]),
        torch.cat([p.d for p in parts]),  # type: ignore[union-attr]
        torch.cat([p.mn for p in parts]),  # type: ignore[union-attr]
        first.group,
    )


def _concat_bias(parts: list[nn.Module], rows: list[int]) -> torch.Tensor | None:
    biases = [getattr(p, "bias", None) for p in parts]
    if all(b is None for b in biases):
        return None
    return torch.cat(
        [b if b is not None else torch.zeros(n) for b, n in zip(biases, rows, strict=True)]
    )


def concat_linear(parts: list[nn.Module]) -> nn.Module:
    """One linear layer whose output rows are those of `parts`, in order: y = [y_1 | y_2 ..].

    Float parts give an nn.Linear, quantised parts of one format and group a QuantLinear
    (`can_concat` says whether the parts allow it)."""
    if all(type(p) is nn.Linear for p in parts):
        weights = [p.weight for p in parts]  # type: ignore[union-attr]
        rows = [w.shape[0] for w in weights]
        bias = _concat_bias(parts, rows)
        out = nn.Linear(weights[0].shape[1], sum(rows), bias=bias is not None)
        out = out.to(dtype=weights[0].dtype, device=weights[0].device)
        with torch.no_grad():
            out.weight.copy_(torch.cat(weights))
            if bias is not None:
                assert out.bias is not None
                out.bias.copy_(bias)
        return out.requires_grad_(False)
    if all(isinstance(p, QuantLinear) for p in parts):
        quants = {(p.quant, p.group) for p in parts}  # type: ignore[union-attr]
        if len(quants) == 1:
            rows = [p.out_features for p in parts]  # type: ignore[union-attr]
            weight = concat_weights([p.weight_data() for p in parts])  # type: ignore[union-attr]
            return QuantLinear(weight, _concat_bias(parts, rows))
    raise ValueError("concat_linear: parts of different formats")


def can_concat(parts: list[nn.Module]) -> bool:
    if all(type(p) is nn.Linear for p in parts):
        return len({(p.weight.dtype, p.weight.shape[1]) for p in parts}) == 1  # type: ignore[union-attr]
    return all(isinstance(p, QuantLinear) for p in parts) and (
        len({(p.quant, p.group, p.in_features) for p in parts}) == 1  # type: ignore[union-attr]
    )


class FusedAttention(nn.Module):
    """Attention with one [W_q; W_k; W_v] projection (see the module docstring)."""

    def __init__(self, attn: Attention, qkv_proj: nn.Module) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = attn.n_heads, attn.n_kv_heads, attn.head_dim
        self.qkv_proj = qkv_proj
        self.o_proj = attn.o_proj
        self.q_norm, self.k_norm = attn.q_norm, attn.k_norm
        self.qk_norm_scope = attn.qk_norm_scope
        self.scale, self.softcap, self.window = attn.scale, attn.softcap, attn.window
        self.interleaved = attn.interleaved
        # Llama 4's chunk, unweighted q/k norm and NoPE query temperature (mix_heads reads them)
        self.chunk, self.l2_eps, self.temperature = attn.chunk, attn.l2_eps, attn.temperature
        self.impl = attn.impl
        self.sinks = None  # only attention without sinks is fused (optimize.py); mix_heads reads it
        # Single-query attention over the cache: "eager" (two small matmuls, grouped so that KV
        # heads are never copied) or "sdpa". Chosen by measurement: see docs/inference.md.
        self.decode_impl = "eager"

    @classmethod
    def from_attention(cls, attn: Attention) -> FusedAttention:
        return cls(attn, concat_linear([attn.q_proj, attn.k_proj, attn.v_proj]))

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        key_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        h, hk, d = self.n_heads, self.n_kv_heads, self.head_dim
        raw = self.qkv_proj(x)  # [b, t, (h + 2 hk) d]
        if (
            t == 1
            and cache is not None
            and not cache.ring
            and key_valid is None
            and self.softcap is None
            and self.q_norm is None
            and self.l2_eps is None
            and self.temperature is None
            and self.impl != "eager"
            and self.head_dim % 8 == 0  # the attention kernel reads 8 floats at a time
            and cache.keys.dtype in native.CACHE_DTYPES
            and native_ok(raw)
        ):
            return self._native_decode(raw, rope, positions, cache)
        qkv = raw.view(b, t, h + 2 * hk, d).transpose(1, 2)  # [b, heads, t, d]
        direct = (
            cache is not None
            and not cache.ring  # not a ring: the window (if any) is at least the cache length
            and key_valid is None
            and self.softcap is None
            and self.l2_eps is None
            and self.temperature is None
            and self.impl != "eager"
        )
        if not direct:
            return self._general(qkv, rope, positions, cache, key_valid)
        assert cache is not None
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self._qk_norm(qkv[:, :h], qkv[:, h : h + hk])
            if rope is not None:
                q = apply_rotary(q, *rope, interleaved=self.interleaved)
                k = apply_rotary(k, *rope, interleaved=self.interleaved)
        elif rope is not None:
            qk = apply_rotary(qkv[:, : h + hk], *rope, interleaved=self.interleaved)
            q, k = qk[:, :h], qk[:, h:]
        else:
            q, k = qkv[:, :h], qkv[:, h : h + hk]
        v = qkv[:, h + hk :]
        start = int(positions[0])
        end = start + t
        if end > cache.capacity:
            raise ValueError(f"KV cache full: {end} positions exceed its capacity {cache.capacity}")
        cache.keys[:, :, start:end].copy_(k)
        cache.values[:, :, start:end].copy_(v)
        cache.positions[start:end] = positions
        if t == 1:
            keys, values = cache.keys[:, :, :end], cache.values[:, :, :end]
            out = self._decode(q, keys.to(q.dtype), values.to(q.dtype))
        elif start == 0 and causal_attention_supported(q, k, v):
            # the core's causal kernel: visible half only, in the layout o_proj reads
            return self.o_proj(causal_attention(q, k, v, self.scale))
        elif start == 0:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=self.scale, enable_gqa=hk != h
            )
        else:  # a chunk continuing a cached sequence: queries see the prefix and the causal part
            mask = visibility_mask(positions, cache.positions[:end], None)
            out = F.scaled_dot_product_attention(
                q,
                cache.keys[:, :, :end].to(q.dtype),
                cache.values[:, :, :end].to(q.dtype),
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=hk != h,
            )
        return self.o_proj(out.transpose(1, 2).reshape(b, t, h * d))

    def _native_decode(
        self,
        raw: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache,
    ) -> torch.Tensor:
        """One token per row: rotate q, k in place, store k, v, attend: three native calls."""
        b = raw.shape[0]
        pos = int(positions[0])
        if pos >= cache.capacity:
            raise ValueError(
                f"KV cache full: {pos + 1} positions exceed its capacity {cache.capacity}"
            )
        flat = raw.reshape(b, -1)
        # no rotary (learned or no positions): rotate nothing; the pointers are never read
        cos, sin = rope if rope is not None else (flat.new_zeros(1, 0), flat.new_zeros(1, 0))
        native.rope_store(
            flat, self.n_heads, self.n_kv_heads, cos.contiguous(), sin.contiguous(),
            self.interleaved, cache.keys, cache.values, cache.positions, pos,
        )  # fmt: skip
        out = native.attn_decode(flat, self.n_heads, cache.keys, cache.values, pos + 1, self.scale)
        return self.o_proj(out.view(b, 1, -1))

    def _decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One query per row against all cached keys (every one is visible: no mask)."""
        b, h, _, d = q.shape
        hk = k.shape[1]
        if self.decode_impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale, enable_gqa=hk != h)
        # The g = h / hk query heads of a group share one KV head: as a [g, d] x [d, S] matmul
        # per KV head, no repeat_interleave copy of the cache is needed.
        qg = q.reshape(b, hk, h // hk, d)
        scores = torch.matmul(qg, k.transpose(-2, -1)).mul_(self.scale)
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, v).reshape(b, h, 1, d)

    def _general(
        self,
        qkv: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: LayerCache | None,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """`Attention.forward` after its three projections: the core's own code."""
        h, hk = self.n_heads, self.n_kv_heads
        q, k, v = qkv[:, :h], qkv[:, h : h + hk], qkv[:, h + hk :]
        return self.o_proj(self.mix_heads(q, k, v, rope, positions, cache, key_valid))

    # Everything between the projections is the core's code, shared rather than copied (this
    # class has the attributes it reads: norms, rotary layout, window, scale, soft-cap, impl).
    mix_heads = Attention.mix_heads
    _qk_norm, _rotate, _attend = Attention._qk_norm, Attention._rotate, Attention._attend
    _append_to_cache = Attention._append_to_cache


class FusedMLP(nn.Module):
    """Gated MLP with one [W_gate; W_up] projection: y = W_down (act(g) * u)."""

    def __init__(self, mlp: MLP, gate_up_proj: nn.Module) -> None:
        super().__init__()
        assert mlp.gate_proj is not None
        self.d_ff = mlp.up_proj.out_features
        self.gate_up_proj = gate_up_proj
        self.down_proj = mlp.down_proj
        self.act = mlp.act

    @classmethod
    def from_mlp(cls, mlp: MLP) -> FusedMLP:
        assert mlp.gate_proj is not None
        return cls(mlp, concat_linear([mlp.gate_proj, mlp.up_proj]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gu = self.gate_up_proj(x)
        if self.act is F.silu and native_ok(gu):
            return self.down_proj(native.silu_mul(gu.contiguous()))
        gate, up = gu[..., : self.d_ff], gu[..., self.d_ff :]
        # act() returns a fresh tensor, so multiplying into it in place saves an allocation.
        return self.down_proj(self.act(gate).mul_(up))
