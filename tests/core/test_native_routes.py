"""The core model on its native CPU kernels (causal attention, GELU-tanh) against the same model on
PyTorch's kernels: same loss and gradients, and the native kernels really are the ones used."""

from __future__ import annotations

import pytest
import torch

import glassformer.components.attention as attention_module
import glassformer.kernels
from glassformer.components import mlp as mlp_module
from glassformer.config import Config
from glassformer.kernels import autograd as native
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

    monkeypatch.setattr(
        attention_module, "causal_attention", counted("attention", native.causal_attention)
    )
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
    assert torch.equal(mlp_module.gelu_tanh(x), torch.nn.functional.gelu(x, approximate="tanh"))
