"""The native kernels against the PyTorch reference math of `glassformer.inference.quant`.

Error bounds, and why:
- dequantisation kernels: bit-exact (the same multiply-then-add, rounded after each step);
- int8/int4 matrix products: relative error <= 1e-3 against x @ dequantize(W)^T, even with a
  40x outlier activation. The kernels round activations to 16-bit fixed point per block of 32
  (error <= max|x_block| / 65534 per value); with an outlier in the block that is a relative
  error of ~2^-16 * 40 / typical |x| ~ 1e-3 on the small values, averaged down in the dot
  product; without outliers it is ~1e-5;
- decode helpers (RMSNorm, RoPE + cache store, attention, SiLU * up): 1e-5 against PyTorch,
  the difference of a polynomial exp and of summation order.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.components.rope import apply_rotary
from glassformer.inference import native
from glassformer.inference.quant import (
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    pick_group,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

needs_native = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def test_pack_unpack_roundtrip_and_layout() -> None:
    codes = torch.randint(0, 16, (5, 192), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.int16 and packed.shape == (5, 48)
    assert torch.equal(unpack_int4(packed), codes)
    # lane j of chunk c holds column 64 c + 16 s + j in nibble s
    lane = int(packed[0, 16 + 3]) & 0xFFFF
    assert [(lane >> (4 * s)) & 15 for s in range(4)] == [
        int(codes[0, 64 + 16 * s + 3]) for s in range(4)
    ]


def test_quantisers_error_bounds() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 256) * 0.05
    w8 = quantize_int8(w)
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((dequantize_int8(w8) - w).abs() <= step / 2 + 1e-7).all()
    for search in (0, 16):
        w4 = quantize_int4(w, 32, search=search)
        err = (dequantize_int4(w4) - w).abs().reshape(64, 8, 32)
        span = w.reshape(64, 8, 32)
        span = span.amax(-1, keepdim=True) - span.amin(-1, keepdim=True)
        # min/max: half a step (+ float16 rounding); least squares may clip a few extremes
        bound = span / 30 * (1.01 if search == 0 else 2.0) + 1e-4
        assert (err <= bound).all()
    minmax = (dequantize_int4(quantize_int4(w, 32, search=0)) - w).pow(2).sum()
    fitted = (dequantize_int4(quantize_int4(w, 32, search=16)) - w).pow(2).sum()
    assert fitted < minmax


def test_constant_and_zero_groups() -> None:
    w = torch.zeros(4, 64)
    w[1] = 0.25
    assert torch.equal(dequantize_int4(quantize_int4(w)), w)
    assert torch.equal(dequantize_int8(quantize_int8(w)), w)


def test_pick_group() -> None:
    assert pick_group(576, "int4", 128) == 64  # 128 does not divide 576
    assert pick_group(576, "int4", None) == 32
    assert pick_group(96, "int4", 32) is None  # int4 rows need whole 64-column chunks
    assert pick_group(576, "int8", None) == 576  # per channel
    assert pick_group(100, "int8", None) is None


@needs_native
@pytest.mark.parametrize(("n", "k"), [(96, 128), (200, 576), (33, 1536)])
@pytest.mark.parametrize("m", [1, 3, 9])
def test_int4_and_int8_kernels_match_reference(n: int, k: int, m: int) -> None:
    torch.manual_seed(n + k + m)
    w = torch.randn(n, k) * 0.05
    x = torch.randn(m, k)
    x[:, 3] = 40.0  # an outlier channel, as RMSNorm outputs have
    for group in (32, 64):
        w4 = quantize_int4(w, group)
        ref = x @ dequantize_int4(w4).T
        assert rel(native.q4_mm(x, w4.q, w4.d, w4.mn, group), ref) < 1e-3
        assert torch.equal(native.q4_dequant(w4.q, w4.d, w4.mn, group), dequantize_int4(w4))
    for group in (None, 32):
        w8 = quantize_int8(w, group)
        ref = x @ dequantize_int8(w8).T
        assert rel(native.q8_mm(x, w8.q, w8.scales, w8.group), ref) < 1e-3
        assert torch.equal(native.q8_dequant(w8.q, w8.scales, w8.group), dequantize_int8(w8))
    assert rel(native.f32_mm(x, w), x @ w.T) < 1e-6


@needs_native
def test_zero_activations_give_zero() -> None:
    w4 = quantize_int4(torch.randn(8, 128))
    assert torch.equal(native.q4_mm(torch.zeros(2, 128), w4.q, w4.d, w4.mn, 32), torch.zeros(2, 8))


@needs_native
def test_decode_helpers_match_pytorch() -> None:
    torch.manual_seed(1)
    b, h, hk, d, cap, pos = 2, 6, 2, 64, 40, 17
    x = torch.randn(b, 1, 320)
    w = torch.rand(320) + 0.5
    ref = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    assert rel(native.rmsnorm(x, w, 1e-6), ref) < 1e-6

    qkv = torch.randn(b, (h + 2 * hk) * d)
    keys, values = torch.randn(b, hk, cap, d), torch.randn(b, hk, cap, d)
    kpos = torch.full((cap,), -1, dtype=torch.long)
    angles = torch.rand(1, d // 2) * 6
    cos, sin = angles.cos(), angles.sin()
    heads = qkv.view(b, h + 2 * hk, 1, d)
    rotated = apply_rotary(heads[:, : h + hk], cos, sin)
    new_v = heads[:, h + hk :].clone()
    work = qkv.clone()
    native.rope_store(work, h, hk, cos, sin, False, keys, values, kpos, pos)
    assert torch.equal(work.view(b, -1, 1, d)[:, : h + hk], rotated)
    assert torch.equal(keys[:, :, pos], rotated[:, h:, 0])
    assert torch.equal(values[:, :, pos], new_v[:, :, 0])
    assert int(kpos[pos]) == pos

    out = native.attn_decode(work, h, keys, values, pos + 1, 0.125)
    q = work.view(b, -1, 1, d)[:, :h]
    expect = F.scaled_dot_product_attention(
        q, keys[:, :, : pos + 1], values[:, :, : pos + 1], scale=0.125, enable_gqa=True
    )
    assert rel(out, expect.reshape(b, h * d)) < 1e-5

    gu = torch.randn(3, 2 * 100)
    assert rel(native.silu_mul(gu), F.silu(gu[:, :100]) * gu[:, 100:]) < 1e-5


@needs_native
@pytest.mark.parametrize("d", [8, 32, 96, 128, 256])
def test_attention_kernel_any_head_size(d: int) -> None:
    """The value pass keeps 64 dims in registers: narrower, wider and non-multiple-of-64 heads."""
    torch.manual_seed(d)
    b, h, hk, cap, length = 2, 6, 3, 40, 23
    qkv = torch.randn(b, (h + 2 * hk) * d)
    keys, values = torch.randn(b, hk, cap, d), torch.randn(b, hk, cap, d)
    out = native.attn_decode(qkv, h, keys, values, length, 0.1)
    q = qkv.view(b, -1, 1, d)[:, :h]
    expect = F.scaled_dot_product_attention(
        q, keys[:, :, :length], values[:, :, :length], scale=0.1, enable_gqa=True
    )
    assert rel(out, expect.reshape(b, h * d)) < 1e-5


@needs_native
@pytest.mark.parametrize(
    ("b", "h", "hk", "length", "threads"),
    [
        (1, 9, 3, 97, 2),
        (1, 9, 3, 640, 2),
        (1, 4, 1, 70, 2),
        (1, 8, 2, 200, 3),
        (1, 8, 2, 70, 3),
        (2, 4, 1, 31, 2),
    ],
)
def test_attention_kernel_key_splits(b: int, h: int, hk: int, length: int, threads: int) -> None:
    """Tasks of (row, KV head, key split) with the splits merged: SmolLM2's 9/3 heads on 2
    threads (2 splits), Gemma's single KV head, uneven splits of 3, splits capped at one per 32
    keys (70 keys: 2 splits, not 3), and too few keys to split."""
    torch.manual_seed(length)
    d, cap = 64, 700
    qkv = torch.randn(b, (h + 2 * hk) * d)
    keys, values = torch.randn(b, hk, cap, d), torch.randn(b, hk, cap, d)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.attn_decode(qkv, h, keys, values, length, 0.125)
    finally:
        torch.set_num_threads(old)
    q = qkv.view(b, -1, 1, d)[:, :h]
    expect = F.scaled_dot_product_attention(
        q, keys[:, :, :length], values[:, :, :length], scale=0.125, enable_gqa=True
    )
    assert rel(out, expect.reshape(b, h * d)) < 1e-5


@needs_native
def test_float16_cache_store_and_attention() -> None:
    """A float16 cache: the store rounds like PyTorch's conversion (nearest even), and attention
    over it equals the float32 kernel run on the same rounded values, and SDPA within 1e-5."""
    torch.manual_seed(5)
    b, h, hk, d, cap, pos = 2, 6, 2, 64, 90, 70
    qkv = torch.randn(b, (h + 2 * hk) * d)
    keys16 = torch.randn(b, hk, cap, d).half()
    values16 = torch.randn(b, hk, cap, d).half()
    keys32, values32 = keys16.float(), values16.float()
    angles = torch.rand(1, d // 2) * 6
    cos, sin = angles.cos(), angles.sin()
    work16, work32 = qkv.clone(), qkv.clone()
    kpos = torch.full((cap,), -1, dtype=torch.long)
    native.rope_store(work16, h, hk, cos, sin, False, keys16, values16, kpos, pos)
    native.rope_store(work32, h, hk, cos, sin, False, keys32, values32, kpos, pos)
    assert torch.equal(work16, work32)
    assert torch.equal(keys16[:, :, pos], keys32[:, :, pos].half())
    assert torch.equal(values16[:, :, pos], values32[:, :, pos].half())
    keys32[:, :, pos], values32[:, :, pos] = keys16[:, :, pos].float(), values16[:, :, pos].float()
    out16 = native.attn_decode(work16, h, keys16, values16, pos + 1, 0.125)
    assert torch.equal(out16, native.attn_decode(work16, h, keys32, values32, pos + 1, 0.125))
    q = work16.view(b, -1, 1, d)[:, :h]
    expect = F.scaled_dot_product_attention(
        q, keys32[:, :, : pos + 1], values32[:, :, : pos + 1], scale=0.125, enable_gqa=True
    )
    assert rel(out16, expect.reshape(b, h * d)) < 1e-5
    with pytest.raises(ValueError, match="float16 or float32"):
        native.attn_decode(work16, h, keys16.bfloat16(), values16.bfloat16(), pos, 0.125)
