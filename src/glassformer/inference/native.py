"""Python wrappers of the inference kernels: weight-only quantised products and the decode step.

Why not PyTorch's own kernels: on a CPU without AVX-512 (AVX2 + FMA only), torch 2.13's
`_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu` fall back to scalar loops for float32
activations (many times slower than an fp32 GEMV of the same shape); with bfloat16 activations
they are vectorised but no faster than fp32 (`benchmarks/quant_kernels.py` runs every kernel
that could serve a decode-sized product). Decoding one token is a matrix-vector product per
layer, bound by how many weight bytes are streamed from memory, so the win of 8- or 4-bit
weights only shows with a kernel that dequantises in registers. These are such kernels
(`glassformer/kernels/quant.c`); the decode step's other helpers and the decode program are
wrapped here as well (the prefill's causal attention is the core's:
`glassformer.kernels.autograd.causal_attention`). The C prototypes' named argument lists are
`glassformer.kernels.SIGNATURES`.

What each kernel computes, for activations x [M, K] (float32, row-major) and N output rows.
Columns are cut into blocks of 32. Each block of a row of x is first put in 16-bit fixed point,
dx_b = max_{k in b} |x_k| / 32767 and xq_k = round(x_k / dx_b), so the inner loop can multiply
small integers with `_mm256_madd_epi16` (16 products and 8 pair sums per instruction, exact in
int32) instead of converting every weight to float: per 64 int4 weights about 20 instructions
instead of 36. The rounding error is at most dx_b / 2 = max|x_b| / 65534 per activation, ~2^-16
of the block's largest value, far below the 8- or 4-bit weight error (llama.cpp rounds
activations to 8 bits).

    int8:  y[m, n] = sum_b s[n, g(b)] dx_b * sum_{k in b} q[n, k] xq[m, k]
           q int8 [N, K]; s float32 [N, K / group] (group = K: per channel; 32: GGUF Q8_0).
    int4:  y[m, n] = sum_b d[n, g(b)] dx_b * sum_{k in b} q[n, k] xq[m, k]
                   + sum_b mn[n, g(b)] * sum_{k in b} x[m, k]
           i.e. w = d q + mn with q in 0..15; d, mn float16 [N, K / group]. The second sum
           uses the float block sums of x, computed once per call. GGUF's Q4_1 is this with
           group 32; Q4_0 is d (q - 8), so mn = -8 d.

int4 packing: each row is cut into chunks of 64 columns stored as 16 uint16 lanes; nibble s
of lane j holds column 16 s + j of the chunk. One 256-bit load yields all 64 codes, and
(v >> 4 s) & 15 puts columns 16 s .. 16 s + 15 in the 16 lanes in order, ready for madd
against 16 consecutive activations, with no shuffles. (GGUF's nibble order, low nibbles =
values 0-15 of a block and high = 16-31, is repacked at load time.)

Every kernel parallelises over output rows with OpenMP. Block sums are exact integers; across
blocks the accumulation is float32. Results differ from a dequantise-then-matmul reference by
the activation rounding (relative error ~1e-5).

The C lives in `glassformer/kernels/` (quant.c, decode.c, program.c, attention.c), which builds
and loads it; this module holds the inference wrappers. `available()` is False when the CPU
lacks AVX2/FMA/F16C, the compiler is missing or `GLASSFORMER_KERNELS=reference`; callers then
use the PyTorch reference path.
"""

from __future__ import annotations

import ctypes

import torch

from glassformer.kernels import available, library, threads

__all__ = ["available", "library", "threads"]  # re-exported: the inference modules' one import

# The torch custom ops, registered once per process (see `custom_ops`).
_OPS: dict[str, object] = {}

MAX_K = 131072  # MAX_BLOCKS * 32 in quant.c


class Op(ctypes.Structure):
    """One kernel call of a decode program (`gf_run_program`): kind, int64 arguments (pointers,
    sizes) and one float argument."""

    _fields_ = [("kind", ctypes.c_int64), ("a", ctypes.c_int64 * 15), ("f", ctypes.c_double)]


# Op kinds, in the order of the C enum.
(OP_RMSNORM, OP_F32_MM, OP_Q4_MM, OP_Q8_MM, OP_SILU_MUL, OP_ADD, OP_ROPE_STORE, OP_ATTEND,
 OP_ROPE_STORE_ROWS, OP_ATTEND_ROWS) = range(10)  # fmt: skip


def q4_mm(
    x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int
) -> torch.Tensor:
    """x [M, K] float32 contiguous -> [M, N]; q [N, K / 4] int16; d, mn [N, K / group] f16."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = q.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.q4_mm(
        x.data_ptr(),
        m,
        k,
        q.data_ptr(),
        d.data_ptr(),
        mn.data_ptr(),
        n,
        group,
        y.data_ptr(),
        threads(),
    )
    return y


def q8_mm(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    """x [M, K] float32 contiguous -> [M, N]; q [N, K] int8; s [N, K / group] float32."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = q.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.q8_mm(x.data_ptr(), m, k, q.data_ptr(), s.data_ptr(), n, group, y.data_ptr(), threads())
    return y


def f32_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [M, K] @ w[N, K]^T for small M, both float32 contiguous."""
    lib = library()
    assert lib is not None
    m, k = x.shape
    n = w.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    lib.f32_mm(x.data_ptr(), m, k, w.data_ptr(), n, y.data_ptr(), threads())
    return y


def q4_dequant(q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int) -> torch.Tensor:
    lib = library()
    assert lib is not None
    n, k = q.shape[0], q.shape[1] * 4
    out = torch.empty(n, k, dtype=torch.float32)
    lib.q4_dequant(
        q.data_ptr(), d.data_ptr(), mn.data_ptr(), n, k, group, out.data_ptr(), threads()
    )
    return out


def q8_dequant(q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
    lib = library()
    assert lib is not None
    n, k = q.shape
    out = torch.empty(n, k, dtype=torch.float32)
    lib.q8_dequant(q.data_ptr(), s.data_ptr(), n, k, group, out.data_ptr(), threads())
    return out


def custom_ops() -> object:
    """The kernels as torch custom ops (`torch.ops.glassformer.*`), so that a `torch.compile`d
    decode step keeps them inside one graph instead of breaking the graph at each ctypes call.
    Eager code calls the plain functions above: the dispatcher adds microseconds per call."""
    if "ops" not in _OPS:
        _register_ops()
        _OPS["ops"] = torch.ops.glassformer
    return _OPS["ops"]


def _register_ops() -> None:
    @torch.library.custom_op("glassformer::q4_mm", mutates_args=())
    def q4_mm_op(
        x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int
    ) -> torch.Tensor:
        return q4_mm(x.contiguous(), q, d, mn, group)

    @q4_mm_op.register_fake
    def _(x: torch.Tensor, q: torch.Tensor, d: torch.Tensor, mn: torch.Tensor, group: int):
        return x.new_empty(x.shape[0], q.shape[0])

    @torch.library.custom_op("glassformer::q8_mm", mutates_args=())
    def q8_mm_op(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int) -> torch.Tensor:
        return q8_mm(x.contiguous(), q, s, group)

    @q8_mm_op.register_fake
    def _(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, group: int):
        return x.new_empty(x.shape[0], q.shape[0])


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] float32 contiguous; weight [D] float32 contiguous."""
    lib = library()
    assert lib is not None
    d = x.shape[-1]
    y = torch.empty_like(x)
    lib.rmsnorm(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.numel() // d, d, eps)
    return y


def rope_store(
    qkv: torch.Tensor,
    n_heads: int,
    n_kv_heads: int,
    cos: torch.Tensor,
    sin: torch.Tensor,
    interleaved: bool,
    keys: torch.Tensor,
    values: torch.Tensor,
    key_positions: torch.Tensor,
    pos: int,
) -> None:
    """qkv [B, heads * D] contiguous (one token per row), rotated in place; its key and value
    heads written to cache slot `pos` of keys, values [B, HK, cap, D] (contiguous)."""
    lib = library()
    assert lib is not None
    b, _, cap, d = keys.shape
    if cos.numel() and (cos.shape[-1] * 2 > d or cos.dim() != 2 or cos.shape[0] != 1):
        raise ValueError(f"rope_store: cos/sin must be [1, <= head_dim / 2], got {cos.shape}")
    lib.rope_store(
        qkv.data_ptr(), b, n_heads, n_kv_heads, d, 2 * cos.shape[-1], int(interleaved),
        cos.data_ptr(), sin.data_ptr(), keys.data_ptr(), values.data_ptr(),
        key_positions.data_ptr(), cap, pos, cache_f16(keys),
    )  # fmt: skip


def attn_decode(
    qkv: torch.Tensor,
    n_heads: int,
    keys: torch.Tensor,
    values: torch.Tensor,
    length: int,
    scale: float,
) -> torch.Tensor:
    """Queries = the first n_heads heads of each row of qkv [B, row]; -> [B, n_heads * D]."""
    lib = library()
    assert lib is not None
    b, hk, cap, d = keys.shape
    out = torch.empty(b, n_heads * d, dtype=torch.float32)
    lib.attn_decode(
        qkv.data_ptr(), qkv.shape[-1], keys.data_ptr(), values.data_ptr(), b, n_heads, hk, d,
        cap, length, scale, out.data_ptr(), threads(), cache_f16(keys),
    )  # fmt: skip
    return out


# The KV cache layouts the decode kernels read (and `gf_rope_store` writes).
CACHE_DTYPES = (torch.float32, torch.float16)


def cache_f16(cache: torch.Tensor) -> int:
    """The kernels' `f16` flag for a cache tensor: 1 for float16, 0 for float32."""
    if cache.dtype not in CACHE_DTYPES:
        raise ValueError(f"KV cache dtype must be float16 or float32, got {cache.dtype}")
    return int(cache.dtype == torch.float16)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2F] contiguous -> silu(gate) * up [..., F]."""
    lib = library()
    assert lib is not None
    f = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], f)
    lib.silu_mul(gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // (2 * f), f)
    return out
