"""A hybrid's cache at long context: Gated DeltaNet layers keep a fixed-size state, attention
layers every position, so at 128k tokens Qwen3-Next's cache is about the attention layers'
share of an all-attention model's. Figures from the config, written out here independently of
the cost model, and the bytes the model itself allocates (on the meta device, no memory)."""

from __future__ import annotations

import torch

from glassformer.explorer import analyze
from glassformer.model import Transformer
from glassformer.presets import get_preset

S = 131072


def by_formula(name: str) -> tuple[int, int, int]:
    """(cache bytes, attention layers' K and V bytes, linear layers' state bytes), bf16."""
    cfg = get_preset(name)
    assert cfg.layer_types is not None and cfg.head_dim and cfg.n_kv_heads
    n_full = cfg.layer_types.count("full")
    n_linear = cfg.layer_types.count("linear")
    assert n_full + n_linear == cfg.n_layers
    kv = n_full * S * 2 * cfg.n_kv_heads * cfg.head_dim * 2  # K and V, bf16
    hk, hv = cfg.linear_n_k_heads, cfg.linear_n_v_heads
    dk, dv = cfg.linear_k_head_dim, cfg.linear_v_head_dim
    assert hk and hv and dk and dv
    conv = (2 * hk * dk + hv * dv) * (cfg.linear_conv_kernel - 1) * 2  # last K-1 inputs, bf16
    memory = hv * dk * dv * 4  # one float32 d_k x d_v memory per value head
    state = n_linear * (conv + memory)
    return kv + state, kv, state


def test_qwen3_next_cache_at_128k() -> None:
    name = "qwen3-next-80b-a3b"
    total, kv, state = by_formula(name)
    a = analyze(get_preset(name), "decode", 1, S, dtype="bf16")
    assert a["kv_cache_bytes"] == total
    lin = a["linear_attention"]
    assert (lin["attention_kv_bytes"], lin["state_bytes"]) == (kv, state)
    # the same width with every layer attention: 4x the attention layers' keys and values
    cfg = get_preset(name)
    dense = cfg.replace(layer_types=("full",) * cfg.n_layers)
    full = analyze(dense, "decode", 1, S, dtype="bf16")["kv_cache_bytes"]
    assert full == lin["kv_cache_bytes_if_all_attention"] == 4 * kv
    ratio = a["kv_cache_bytes"] / full
    assert ratio == 0.25 + state / full  # 1 layer in 4 attends; the states add 0.6%
    assert 0.25 < ratio < 0.26


def test_hybrid_cache_equals_allocated_bytes() -> None:
    """A full-size model's own cache at 128k, allocated on the meta device."""
    cfg = get_preset("qwen3.5-27b")
    with torch.device("meta"):
        model = Transformer(cfg)
    cache = model.new_cache(1, S, torch.bfloat16, device="meta")
    assert cache.nbytes() == by_formula("qwen3.5-27b")[0]
    assert analyze(cfg, "decode", 1, S, dtype="bf16")["kv_cache_bytes"] == cache.nbytes()
