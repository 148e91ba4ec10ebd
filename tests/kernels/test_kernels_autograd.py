"""The differentiable native kernels (causal attention, GELU-tanh) against float64 references.

Bounds, and why: the kernels compute in float32 with a polynomial exp (relative error ~2e-7) and
their own summation order, so outputs and gradients agree with a float64 evaluation of the same
formula to ~1e-6 relative (norm-wise); we allow 1e-5. GELU is held element-wise, including the
tails where PyTorch's own float32 `1 + tanh u` form loses its digits.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.kernels import available
from glassformer.kernels.autograd import (
    causal_attention,
    causal_attention_supported,
    gelu_tanh,
    gelu_tanh_supported,
)

pytestmark = pytest.mark.skipif(not available(), reason="native kernels unavailable")


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """Norm-wise relative error, against at least `floor` (for a part of a gradient that is
    zero in exact arithmetic, like dq at one position, where the softmax is constant)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / max(float(b.norm()), floor, 1e-30))


def heads_of(x: torch.Tensor, h: int, hk: int, d: int) -> list[torch.Tensor]:
    """q, k, v as strided views of one fused projection [B, T, (H + 2 HK) D], as in a model."""
    b, t, _ = x.shape
    q, k, v = x.split([h * d, hk * d, hk * d], dim=-1)
    return [y.view(b, t, -1, d).transpose(1, 2) for y in (q, k, v)]


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    t = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) * scale
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    return out.transpose(1, 2).reshape(q.shape[0], t, -1)


@pytest.mark.parametrize(
    ("b", "h", "hk", "t", "d"),
    [
        (2, 4, 4, 37, 16),  # MHA, T not a multiple of the 24-query block nor the 16-key panel
        (1, 6, 2, 100, 64),  # GQA
        (2, 3, 1, 257, 32),  # MQA
        (1, 2, 2, 1, 16),  # one position
        (2, 4, 2, 300, 128),
        (1, 1, 1, 24, 80),
    ],
)
def test_causal_attention_matches_float64(b: int, h: int, hk: int, t: int, d: int) -> None:
    torch.manual_seed(b * 1000 + t + d)
    x = torch.randn(b, t, (h + 2 * hk) * d)
    grad = torch.randn(b, t, h * d)
    scale = d**-0.5 * 1.7  # larger than usual: sharper softmax rows
    ours_x = x.clone().requires_grad_()
    out = causal_attention(*heads_of(ours_x, h, hk, d), scale)
    out.backward(grad)
    ref_x = x.double().requires_grad_()
    ref = reference_attention(*heads_of(ref_x, h, hk, d), scale)
    ref.backward(grad.double())
    assert out.shape == (b, t, h * d)
    assert rel(out, ref) <= 1e-5
    assert ours_x.grad is not None and ref_x.grad is not None
    for name, part in zip("qkv", range(3), strict=True):
        sl = slice(0, h * d) if part == 0 else slice((h + (part - 1) * hk) * d, (h + part * hk) * d)
        err = rel(ours_x.grad[..., sl], ref_x.grad[..., sl], floor=0.01 * ref_x.grad.norm())
        assert err <= 1e-5, f"d{name}: relative error {err:.2e}"


def test_causal_attention_never_looks_ahead() -> None:
    """Changing keys and values at positions >= 40 leaves outputs before 40 bit-identical, and
    the gradient of those outputs reaches no later key or value."""
    torch.manual_seed(0)
    b, h, t, d = 1, 2, 90, 32
    x = torch.randn(b, t, 3 * h * d)
    y = x.clone()
    y[:, 40:, h * d :] = torch.randn(b, t - 40, 2 * h * d)
    out_x = causal_attention(*heads_of(x, h, h, d), 0.2)
    out_y = causal_attention(*heads_of(y, h, h, d), 0.2)
    assert torch.equal(out_x[:, :40], out_y[:, :40])
    x.requires_grad_()
    causal_attention(*heads_of(x, h, h, d), 0.2)[:, :40].sum().backward()
    assert x.grad is not None
    assert torch.count_nonzero(x.grad[:, 40:]) == 0


def test_causal_attention_is_the_same_on_any_number_of_threads() -> None:
    """Each thread owns whole (row, head) tasks, so the sums do not depend on the split: the
    distributed and resume tests rely on runs being reproducible."""
    torch.manual_seed(1)
    x = torch.randn(3, 70, 3 * 4 * 32)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            xi = x.clone().requires_grad_()
            out = causal_attention(*heads_of(xi, 4, 4, 32), 0.3)
            out.square().sum().backward()
            results.append((out, xi.grad))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_causal_attention_routes() -> None:
    x = torch.randn(1, 8, 3 * 2 * 16)
    q, k, v = heads_of(x, 2, 2, 16)
    assert causal_attention_supported(q, k, v)
    assert not causal_attention_supported(q[..., :8], k[..., :8], v[..., :8])  # D % 16
    assert not causal_attention_supported(q.double(), k.double(), v.double())
    assert not causal_attention_supported(q, k[:, :, :4], v[:, :, :4])  # T != S (a cache)


def test_gelu_tanh_matches_float64_elementwise() -> None:
    x = torch.cat([torch.linspace(-30, 30, 100_003), torch.tensor([0.0, -0.0, 1e-30, -1e-30])])
    ours_x = x.clone().requires_grad_()
    grad = torch.rand_like(x) + 0.5
    y = gelu_tanh(ours_x)
    y.backward(grad)
    x64 = x.double().requires_grad_()
    u = 0.7978845608028654 * (x64 + 0.044715 * x64**3)
    # x sigmoid(2u) is 0.5 x (1 + tanh u) without the cancellation of 1 + tanh u for x << 0,
    # which even float64 suffers from x < -10 on (checked where both are accurate)
    ref = x64 * torch.sigmoid(2 * u)
    small = x64.abs() < 5
    assert torch.allclose(ref[small], (0.5 * x64 * (1 + torch.tanh(u)))[small], rtol=1e-12)
    ref.backward(grad.double())
    # float32 rounds 2u itself to ~6e-8 relative, an error of |2u| * 6e-8 in e^{-2u}; and exp8
    # clamps at -88.4, leaving x e^{-88.4} (~1e-37) where y underflows to 0
    cond = (2 * u).abs().detach()
    tol = 1e-6 * (2 + cond) * ref.abs() + 1e-35
    assert bool(((y.double() - ref).abs() <= tol).all())
    assert ours_x.grad is not None and x64.grad is not None
    gtol = 1e-6 * (4 + cond) * x64.grad.abs() + 1e-6
    assert bool(((ours_x.grad.double() - x64.grad).abs() <= gtol).all())
    # and PyTorch's own float32 kernel, where it is itself accurate
    assert torch.allclose(y, F.gelu(x, approximate="tanh"), rtol=1e-5, atol=1e-6)


def test_gelu_tanh_keeps_infinities_and_nan() -> None:
    y = gelu_tanh(torch.tensor([float("inf"), float("nan"), 1e4, -1e4]))
    assert y[0] == float("inf") and torch.isnan(y[1]) and y[2] == 1e4 and abs(float(y[3])) < 1e-30
    assert not gelu_tanh_supported(torch.randn(4, 6).t())  # not contiguous


@pytest.mark.parametrize(
    ("b", "h", "hk", "t", "d", "threads"),
    [
        (1, 9, 3, 512, 64, 2),  # SmolLM2's prefill
        (2, 4, 2, 37, 16, 2),  # T not a multiple of the 6-row groups, 16-key panels or blocks
        (1, 2, 1, 100, 256, 3),  # Gemma-sized heads, one KV head, 3 threads
        (1, 4, 4, 1, 32, 2),  # one position
        (1, 6, 2, 25, 64, 1),  # one query block plus one row
        (1, 9, 3, 700, 64, 2),
    ],
)
def test_prefill_attention_kernel_matches_sdpa(
    b: int, h: int, hk: int, t: int, d: int, threads: int
) -> None:
    """Causal GQA attention over the visible half only, against SDPA's causal kernel; inputs
    are strided views of one fused qkv projection, as FusedAttention passes them."""
    torch.manual_seed(t)
    qkv = torch.randn(b, t, (h + 2 * hk) * d).view(b, t, h + 2 * hk, d).transpose(1, 2)
    q, k, v = qkv[:, :h], qkv[:, h : h + hk], qkv[:, h + hk :]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = causal_attention(q, k, v, 0.2)
    finally:
        torch.set_num_threads(old)
    expect = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.2, enable_gqa=True)
    assert out.shape == (b, t, h * d) and out.is_contiguous()
    assert rel(out, expect.transpose(1, 2).reshape(b, t, h * d)) < 1e-5
    # causality: changing the last position's key and value leaves every earlier output alone
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 5.0
    v2[:, :, -1] -= 5.0
    again = causal_attention(q, k2, v2, 0.2)
    assert torch.equal(again[:, :-1], out[:, :-1])


def test_prefill_attention_kernel_rejects_unsupported_shapes() -> None:
    q = torch.randn(1, 2, 8, 24)
    with pytest.raises(ValueError, match="D % 16"):
        causal_attention(q, q, q, 0.1)


@pytest.mark.parametrize("width", [2, 16])  # the masked last vector; a whole vector
def test_softmax_exp2_is_accurate_to_a_few_ulp(width: int) -> None:
    """The kernels' softmax takes 2^t from a degree-5 polynomial (`exp2_8` in kernels.h, fitted
    to 1.6e-7 relative error, 2^0 = 1 exactly). Rows [0, t, -1000, ...] with label 0 give
    dL/dz_1 = e^t / (1 + e^t) and the loss log(1 + e^t) through the cross-entropy kernel,
    held to float64 for t in [-80, 0] within the polynomial's
    error, two roundings, and the rounding of the argument t log2(e) itself (6e-8 |t| relative
    in the result: the same as one ulp of the logit t, which float32 cannot resolve anyway)."""
    from glassformer.kernels.autograd import softmax_cross_entropy_

    t = torch.linspace(-80.0, 0.0, 4001)
    z = torch.full((1, t.numel(), width), -1000.0)
    z[0, :, 0] = 0.0
    z[0, :, 1] = t
    loss = softmax_cross_entropy_(z, torch.zeros(t.numel(), dtype=torch.int64), -100, True)
    t64 = t.double()
    expect = torch.exp(t64) / (1.0 + torch.exp(t64))
    rel = ((z[0, :, 1].double() - expect) / expect).abs()
    assert bool((rel <= 5e-7 + 7e-8 * t64.abs()).all())
    assert torch.allclose(loss.double(), torch.log1p(torch.exp(t64)), rtol=1e-6, atol=1e-7)
