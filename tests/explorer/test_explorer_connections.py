"""The cost model of cross-layer connections against our modules: parameter counts exact,
matrix FLOPs equal to FlopCounterMode in prefill, decode and a training step, for every
topology on dense, MoE, MLA and hybrid families."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.config import Config
from glassformer.explorer import analyze
from glassformer.model import Transformer
from tests.explorer.flop_counting import counted
from tests.families import our_config

B, T = 2, 12
TOL = 0.005
VARIANTS = ("denseformer", "mudd", "hyper", "mhc")
FAMILIES = ("llama", "qwen3_moe", "deepseek_v3", "qwen3_next", "llama4_text")


def build(cfg: Config) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(cfg)
    model.set_attention_impl("eager")  # the CPU SDPA kernel is invisible to FlopCounterMode
    return model


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", VARIANTS)
def test_params_and_prefill_decode_flops(family: str, kind: str) -> None:
    cfg = our_config(family).replace(connections=kind, hyper_streams=3, dense_dilation=2)
    model = build(cfg).eval()
    a = analyze(cfg, "prefill", B, T, attention="eager")
    assert a["params_total"] == sum(p.numel() for p in model.parameters())
    conn = model.connections
    assert conn is not None
    assert a["connections"]["params"] == sum(p.numel() for p in conn.parameters())
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        assert rel(a["flops_matmul"], counted(lambda: model(ids))) <= TOL
        cache = model.new_cache(B, T, torch.float32)
        model(ids[:, :-1], cache=cache)
        measured = counted(lambda: model(ids[:, -1:], cache=cache))
    d = analyze(cfg, "decode", B, T, dtype="fp32", attention="eager", mla_order="plain")
    assert rel(d["flops_matmul"], measured) <= TOL


@pytest.mark.parametrize("kind", VARIANTS)
def test_train_flops(kind: str) -> None:
    cfg = our_config("llama").replace(connections=kind, hyper_streams=3)
    model = build(cfg).train()
    ids = torch.randint(0, cfg.vocab_size, (B, T))

    def step() -> None:
        logits = model(ids)
        F.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()

    a = analyze(cfg, "train", B, T, attention="eager", mtp=False)
    assert rel(a["flops_matmul"], counted(step)) <= TOL


@pytest.mark.parametrize("static", [False, True])
def test_hyper_extra_costs_scale_with_streams(static: bool) -> None:
    """The connection's own FLOPs and memory: the width mix is 2 (1+n) n D per token and
    sublayer, the dynamic weights 2 n D (n+2); the n streams hold (n-1) D more per token."""
    base = our_config("llama")
    n, d, L = 4, base.d_model, base.n_layers
    cfg = base.replace(connections="hyper", hyper_streams=n, hyper_dynamic=not static)
    a = analyze(cfg, "prefill", B, T, dtype="fp32")
    per_token = 2 * (1 + n) * n * d + (0 if static else 2 * n * d * (n + 2))
    assert a["connections"]["flops_matmul"] == 2 * L * B * T * per_token
    assert a["connections"]["resident_bytes"] == (n - 1) * d * B * T * 4
    plain = analyze(base, "prefill", B, T, dtype="fp32")
    assert a["flops_matmul"] - plain["flops_matmul"] == a["connections"]["flops_matmul"]


def test_denseformer_keeps_block_outputs_alive() -> None:
    base = our_config("llama").replace(n_layers=6)
    d = base.d_model
    full = analyze(base.replace(connections="denseformer"), "decode", 1, 8, dtype="fp32")
    # the last DWA reads X_0 .. X_6: six more d-vectors than the plain stream
    assert full["connections"]["resident_bytes"] == 6 * d * 4
    dil = analyze(base.replace(connections="denseformer", dense_dilation=2, dense_period=2),
                  "decode", 1, 8, dtype="fp32")  # fmt: skip
    assert dil["connections"]["resident_bytes"] < full["connections"]["resident_bytes"]
    plain = analyze(base, "decode", 1, 8, dtype="fp32")
    extra = full["memory"]["total_bytes"] - plain["memory"]["total_bytes"]
    assert extra == full["connections"]["resident_bytes"] + full["connections"]["params"] * 4
