"""The core model on its native CPU kernels (causal attention, GELU-tanh) against the same model on
PyTorch's kernels: same loss and gradients, and the native kernels really are the ones used."""

from __future__ import annotations

import pytest
import torch

import glassformer.kernels
from glassformer.config import Config
from glassformer.kernels import autograd as native
from glassformer.kernels import dispatch
from glassformer.model import Transformer

pytestmark = pytest.mark.skipif(not glassformer.kernels.available(), reason="no native kernels")


def loss_and_grads(model: Transformer, ids: torch.Tensor) -> tuple[torch.Tensor, list]:
    model.zero_grad(set_to_none=True)
    loss = model(ids[:, :-1], labels=ids[:, 1:]) / ids[:, 1:].numel()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("preset", ["gpt2", "tiny"])
def test_native_kernels_give_pytorchs_loss_and_gradients(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = Config.preset(preset).replace(
        name="t", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128,
        vocab_size=97, max_seq_len=80,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).train()
    ids = torch.randint(0, 97, (3, 71))

    calls = {"attention": 0, "gelu": 0}

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(native, "causal_attention", counted("attention", native.causal_attention))
    monkeypatch.setattr(native, "gelu_tanh", counted("gelu", native.gelu_tanh))
    loss, grads = loss_and_grads(model, ids)
    assert calls["attention"] == cfg.n_layers
    assert calls["gelu"] == (cfg.n_layers if cfg.activation == "gelu_tanh" else 0)

    # The same weights on PyTorch's kernels only: SDPA, F.gelu.
    monkeypatch.setitem(glassformer.kernels._LOADED, "lib", None)
    before = dict(calls)
    ref_loss, ref_grads = loss_and_grads(model, ids)
    assert calls == before
    assert abs(float(loss - ref_loss)) <= 1e-5 * abs(float(ref_loss))
    for g, r in zip(grads, ref_grads, strict=True):
        assert float((g - r).norm()) <= 1e-5 * float(r.norm()) + 1e-9


def test_gelu_tanh_falls_back_off_float32() -> None:
    x = torch.randn(5, 7, dtype=torch.float64)
    assert torch.equal(dispatch.gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"))


@pytest.mark.parametrize(
    ("impl", "dtype", "t", "s", "masked", "softcap", "route"),
    [
        ("native", torch.float32, 9, 9, False, None, "native"),  # plain causal: the C kernel
        ("native", torch.float64, 9, 9, False, None, "sdpa"),  # not float32
        ("native", torch.float32, 9, 9, True, None, "sdpa"),  # a mask (window, padding)
        ("native", torch.float32, 2, 9, True, None, "sdpa"),  # a chunk after a cache
        ("native", torch.float32, 1, 9, True, None, "eager"),  # one query (decoding) on the CPU
        ("native", torch.float32, 9, 9, False, 5.0, "eager"),  # soft-capping needs the scores
        ("sdpa", torch.float32, 9, 9, False, None, "sdpa"),
        ("sdpa", torch.float32, 1, 9, True, None, "eager"),
        ("eager", torch.float32, 9, 9, False, None, "eager"),
    ],
)
def test_attention_routes(
    impl: str,
    dtype: torch.dtype,
    t: int,
    s: int,
    masked: bool,
    softcap: float | None,
    route: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dispatch.attention` takes the documented implementation for each case, and every route
    gives float64 attention's output (grouped KV heads: 4 query heads over 2)."""
    calls: list[str] = []

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(native, "causal_attention", counted("native", native.causal_attention))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted("sdpa", sdpa))
    gen = torch.Generator().manual_seed(t * 31 + s)
    q = torch.randn(2, 4, t, 16, generator=gen, dtype=dtype)
    k, v = (torch.randn(2, 2, s, 16, generator=gen, dtype=dtype) for _ in range(2))
    visible = torch.ones(t, s, dtype=torch.bool).tril(s - t)  # causal, the last t of s positions
    if masked:
        visible[-1, 0] = False  # one hidden key, so the mask is not plain causal
    out = dispatch.attention(
        q, k, v, visible if masked else None, scale=0.3, softcap=softcap, impl=impl
    )
    assert calls == ([] if route == "eager" else [route])

    scores = 0.3 * q.double() @ k.double().repeat_interleave(2, dim=1).transpose(-2, -1)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    expect = probs @ v.double().repeat_interleave(2, dim=1)
    assert torch.allclose(out.double(), expect, atol=1e-5)


@pytest.mark.parametrize(
    ("impl", "t", "s", "masked", "grad", "route"),
    [
        # the causal kernel has no sinks; without gradients the CPU flash kernel's output is
        # rescaled by its log-sum-exp, with them SDPA gets one more key carrying the sink
        ("native", 9, 9, False, False, "flash"),
        ("native", 9, 9, False, True, "sdpa"),
        ("native", 9, 9, True, False, "flash"),
        ("native", 9, 9, True, True, "sdpa"),
        ("native", 2, 9, True, False, "flash"),  # a chunk after a cache
        ("native", 1, 9, True, False, "eager"),  # one query (decoding) on the CPU
        ("sdpa", 9, 9, True, False, "flash"),
        ("sdpa", 9, 9, True, True, "sdpa"),
        ("eager", 9, 9, False, True, "eager"),
    ],
)
def test_attention_sinks_routes(
    impl: str,
    t: int,
    s: int,
    masked: bool,
    grad: bool,
    route: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With attention sinks every route gives float64 attention with a sink column
    a_ij = exp(s_ij) / (exp(sink_h) + sum_j exp(s_ij)), and the same gradients (sinks too)."""
    calls: list[str] = []

    def counted(name: str, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapper

    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted("sdpa", sdpa))
    flash = dispatch.cpu_flash_attention
    monkeypatch.setattr(dispatch, "cpu_flash_attention", counted("flash", flash))
    gen = torch.Generator().manual_seed(t * 7 + s)
    q = torch.randn(2, 4, t, 16, generator=gen, requires_grad=grad)
    k, v = (torch.randn(2, 2, s, 16, generator=gen, requires_grad=grad) for _ in range(2))
    sinks = torch.randn(4, generator=gen, requires_grad=grad)
    visible = torch.ones(t, s, dtype=torch.bool).tril(s - t)
    if masked:
        visible[-1, 0] = False
    out = dispatch.attention(
        q, k, v, visible if masked else None, scale=0.3, sinks=sinks, impl=impl
    )
    assert calls == ([] if route == "eager" else [route])

    def reference(q, k, v, sinks):
        scores = 0.3 * q @ k.repeat_interleave(2, dim=1).transpose(-2, -1)
        scores = scores.masked_fill(~visible, float("-inf"))
        column = sinks.view(1, 4, 1, 1).expand(2, 4, t, 1)
        probs = torch.cat((scores, column), dim=-1).softmax(-1)[..., :-1]
        return probs @ v.repeat_interleave(2, dim=1)

    leaves = (q, k, v, sinks)
    doubles = [x.detach().double().requires_grad_() for x in leaves]
    expect = reference(*doubles)
    assert torch.allclose(out.double(), expect, atol=1e-5)
    if not grad:
        return
    grad_out = torch.randn(expect.shape, generator=gen, dtype=torch.float64)
    got = torch.autograd.grad(out, leaves, grad_out.float())
    want = torch.autograd.grad(expect, doubles, grad_out)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a.double(), b, atol=1e-5)
