"""The cost model of a Gated DeltaNet layer against the module itself: FlopCounterMode counts
the matrix products (and the convolution) it really executes in prefill (the chunked form, one
or several chunks, a ragged last one), a decode step (the recurrent form) and a training step;
the explorer's `flops_mm` must match them exactly, and its state bytes must be the bytes
`LinearAttentionState` allocates, at every sequence length."""

from __future__ import annotations

import pytest
import torch

from glassformer.components.gated_deltanet import CHUNK, GatedDeltaNet
from glassformer.config import Config
from glassformer.explorer.costs import DTYPES, environment, evaluate_op
from glassformer.explorer.expr import evaluate
from glassformer.explorer.hardware import get_hardware
from glassformer.explorer.ops import (
    LINEAR_CHUNK,
    Section,
    _to_train,
    block_ops,
    geometry,
    linear_attention_ops,
)
from tests.explorer.flop_counting import counted

BATCH = 2


def config() -> Config:
    return Config(
        vocab_size=97, d_model=64, n_layers=2, n_heads=4, layer_types=("linear", "full"),
        linear_n_k_heads=2, linear_n_v_heads=4, linear_k_head_dim=16, linear_v_head_dim=24,
        linear_conv_kernel=4,
    )  # fmt: skip


def modelled(mode: str, seq: int, cache: bool = True) -> int:
    cfg = config()
    fwd = "prefill" if mode == "train" else mode
    g = geometry(fwd, None, 1 if mode == "decode" else environment(mode, BATCH, seq, "eager")["T"])
    ops = linear_attention_ops(cfg, "x", g, cache)
    if mode == "train":
        ops = _to_train(Section("linear", "", "block", ops=ops)).ops
    env = environment(mode, BATCH, seq, "eager")
    return sum(int(evaluate(op.flops_mm, env)) for op in ops)


@pytest.fixture(scope="module")
def layer() -> GatedDeltaNet:
    torch.manual_seed(0)
    return GatedDeltaNet(config(), 0)


def test_chunk_size_agrees() -> None:
    assert LINEAR_CHUNK == CHUNK


@pytest.mark.parametrize("seq", [12, 64, 150])
def test_prefill_flops(layer: GatedDeltaNet, seq: int) -> None:
    x = torch.randn(BATCH, seq, 64)
    with torch.no_grad():
        measured = counted(lambda: layer(x, layer.new_state(BATCH, torch.float32)))
    assert modelled("prefill", seq) == measured


@pytest.mark.parametrize("context", [5, 130])
def test_decode_flops(layer: GatedDeltaNet, context: int) -> None:
    x = torch.randn(BATCH, context, 64)
    state = layer.new_state(BATCH, torch.float32)
    layer.impl = "eager"  # PyTorch's step: the C kernel's products are invisible to the counter
    try:
        with torch.no_grad():
            layer(x[:, :-1], state)
            measured = counted(lambda: layer(x[:, -1:], state))
    finally:
        layer.impl = "native"
    assert modelled("decode", context) == measured


@pytest.mark.parametrize("seq", [12, 150])
def test_train_flops(layer: GatedDeltaNet, seq: int) -> None:
    x = torch.randn(BATCH, seq, 64, requires_grad=True)  # as inside a model

    def step() -> None:
        layer(x).square().sum().backward()

    assert modelled("train", seq, cache=False) == counted(step)


@pytest.mark.parametrize("mode", ["prefill", "decode"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_state_bytes_constant_and_exact(layer: GatedDeltaNet, mode: str, dtype: str) -> None:
    """The state replaces the KV cache: the bytes LinearAttentionState allocates (conv window
    in the cache dtype, M in float32), whatever the sequence length."""
    cfg, dt, hw = config(), DTYPES[dtype], get_hardware("h100")
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    want = layer.new_state(BATCH, torch_dtype).nbytes()
    for seq in (1, 100, 100_000):
        env = environment(mode, BATCH, seq, "flash")
        ops = block_ops(cfg, 0, mode, 1 if mode == "decode" else env["T"])
        assert sum(evaluate_op(op, env, dt, hw)["cache_bytes"] for op in ops) == want


def test_parameters_exact(layer: GatedDeltaNet) -> None:
    ops = linear_attention_ops(config(), "x", geometry("prefill", None, 12), True)
    assert sum(op.params for op in ops) == sum(p.numel() for p in layer.parameters())
