"""The lean decode step (`DecodePlan`) against the module path it replaces.

Both run the same native kernels for the quantised projections, so int8/int4 steps agree to
float rounding (1e-6 relative); in float32 the plan's matrix-vector kernel sums in another
order than PyTorch's GEMM (1e-5). The cache the plan writes must be the one the modules write,
so that a step through either path can follow the other.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import glassformer as gf
from glassformer.inference import native, optimize
from glassformer.inference.plan import DecodePlan, why_not

needs_native = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def configs() -> list[gf.Config]:
    tiny = gf.Config.preset("tiny")  # Llama: GQA, SwiGLU, tied embeddings
    return [
        tiny,
        # Qwen2-style: biases on q, k, v; untied head; MHA
        dataclasses.replace(tiny, qkv_bias=True, tie_embeddings=False, n_kv_heads=4),
    ]


@needs_native
@pytest.mark.parametrize("config", configs(), ids=["llama", "qwen2-bias"])
@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_plan_steps_equal_the_module_steps(config: gf.Config, quant: str) -> None:
    torch.manual_seed(0)
    model = gf.Transformer(config).eval()
    for p in model.parameters():  # random-init biases are 0 and norms 1: perturb everything
        p.data.add_(torch.randn_like(p) * 0.05)
    fast = optimize(model, quant)
    ids = torch.randint(0, config.vocab_size, (2, 30))
    results = {}
    with torch.inference_mode():
        for use_plan in (False, True):
            fast.use_plan = use_plan
            cache = fast.new_cache(2, 64)
            fast(ids[:, :20], cache)
            steps = [fast(ids[:, t : t + 1], cache)[:, 0] for t in range(20, 30)]
            assert (fast.decode_plan(cache) is not None) == use_plan
            results[use_plan] = (torch.stack(steps), cache)
    (plain, cache_a), (planned, cache_b) = results[False], results[True]
    assert rel(planned, plain) < (1e-5 if quant == "none" else 1e-6)
    assert cache_b.length == cache_a.length == 30
    for a, b in zip(cache_a.layers, cache_b.layers, strict=True):
        assert torch.equal(a.positions, b.positions)
        assert rel(b.keys[:, :, :30], a.keys[:, :, :30]) < 1e-5
        assert rel(b.values[:, :, :30], a.values[:, :, :30]) < 1e-5


@needs_native
def test_plan_and_modules_interleave_on_one_cache() -> None:
    torch.manual_seed(1)
    fast = optimize(gf.Transformer(gf.Config.preset("tiny")).eval(), "int4")
    ids = torch.randint(0, 2048, (1, 24))
    with torch.inference_mode():
        full = fast(ids)[0]
        cache = fast.new_cache(1, 32)
        fast(ids[:, :16], cache)
        for t in range(16, 24):
            fast.use_plan = t % 2 == 0
            step = fast(ids[:, t : t + 1], cache)[0, 0]
            # steps use the 16-bit activation kernels, the full forward a float GEMM
            assert rel(step, full[t]) < 1e-3
    fast.use_plan = True


@needs_native
def test_plan_buffer_is_reused_but_forward_returns_a_copy() -> None:
    fast = optimize(gf.Transformer(gf.Config.preset("tiny")).eval())
    with torch.inference_mode():
        cache = fast.new_cache(1, 16)
        fast(torch.tensor([[1, 2, 3]]), cache)
        a = fast(torch.tensor([[4]]), cache)
        b = fast(torch.tensor([[5]]), cache)
        plan = fast.decode_plan(cache)
        assert plan is not None
        assert not torch.equal(a, b) and a.data_ptr() != plan.logits.data_ptr()


def test_unsupported_models_fall_back_with_a_reason() -> None:
    torch.manual_seed(0)
    gemma = optimize(gf.Transformer(gf.Config.preset("tiny-gemma3")).eval())
    qwen3 = optimize(gf.Transformer(gf.Config.preset("tiny-qwen3")).eval())
    llama = optimize(gf.Transformer(gf.Config.preset("tiny")).eval())
    if native.available():
        assert "pre-norm" in (why_not(gemma, gemma.new_cache(1, 8)) or "")
        assert "QK-norm" in (why_not(qwen3, qwen3.new_cache(1, 8)) or "")
        padded = llama.new_cache(2, 8)
        padded.record_padding(torch.tensor([[0, 1], [1, 1]]))
        assert why_not(llama, padded) == "padded batch"
        with pytest.raises(ValueError, match="padded batch"):
            DecodePlan(llama, padded)
    with torch.inference_mode():
        assert gemma.decode_plan(gemma.new_cache(1, 8)) is None
    with torch.no_grad(), torch.enable_grad():
        assert llama.decode_plan(llama.new_cache(1, 8)) is None  # autograd: modules only


@needs_native
def test_plan_refuses_a_full_cache() -> None:
    fast = optimize(gf.Transformer(gf.Config.preset("tiny")).eval())
    with torch.inference_mode():
        cache = fast.new_cache(1, 4)
        fast(torch.tensor([[1, 2, 3, 4]]), cache)
        with pytest.raises(ValueError, match="KV cache full"):
            fast(torch.tensor([[5]]), cache)


@needs_native
def test_moving_the_model_drops_its_plans() -> None:
    fast = optimize(gf.Transformer(gf.Config.preset("tiny")).eval())
    with torch.inference_mode():
        cache = fast.new_cache(1, 8)
        fast(torch.tensor([[1, 2]]), cache)
        fast(torch.tensor([[3]]), cache)
    assert len(fast.__dict__["_plans"]) == 1
    fast.float()  # any _apply may replace the tensors whose pointers a plan holds
    assert "_plans" not in fast.__dict__


@needs_native
@pytest.mark.parametrize(("n", "k", "m"), [(7, 13, 1), (9, 64, 3), (4, 8, 2), (130, 576, 1)])
def test_f32_matrix_vector_kernel_any_shape(n: int, k: int, m: int) -> None:
    torch.manual_seed(n)
    w, x = torch.randn(n, k), torch.randn(m, k)
    assert rel(native.f32_mm(x, w), x @ w.T) < 1e-6


@needs_native
def test_add_kernel_residual_and_bias() -> None:
    from glassformer.inference.native import library

    lib = library()
    assert lib is not None
    y, x, b = torch.randn(3, 21), torch.randn(3, 21), torch.randn(21)
    expect = y + x + b
    lib.add(y.data_ptr(), x.data_ptr(), 3, 21, 21)
    lib.add(y.data_ptr(), b.data_ptr(), 3, 21, 0)
    assert torch.allclose(y, expect)


def test_decode_linear_is_the_same_linear_layer() -> None:
    from torch import nn

    from glassformer.inference.modules import DecodeLinear

    torch.manual_seed(0)
    linear = nn.Linear(50, 37)
    fast = DecodeLinear.from_linear(linear)
    assert fast.weight is linear.weight and fast.bias is linear.bias
    x = torch.randn(2, 3, 50)
    with torch.inference_mode():
        assert rel(fast(x[:, :1]), linear(x[:, :1])) < 1e-6  # 2 rows: the native kernel
        assert rel(fast(x.repeat(1, 4, 1)), linear(x.repeat(1, 4, 1))) < 1e-6  # 24 rows: GEMM
    fast(x).sum().backward()  # with autograd it is nn.Linear
    assert linear.weight.grad is not None
