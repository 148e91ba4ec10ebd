"""Unit checks of the cost model: formulas, modes, MoE, MLA, sliding windows, hardware, page."""

from __future__ import annotations

import json
from typing import Any

import pytest

from glassformer.explorer import analyze, get_hardware
from glassformer.explorer.costs import DTYPES
from glassformer.explorer.expr import B, S, T, causal_pairs, evaluate, to_json, to_text
from glassformer.explorer.hardware import PRESETS, probe_cpu
from glassformer.explorer.html import page_data
from glassformer.presets import get_preset


# --- expressions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [None, 1, 3, 7, 50])
def test_causal_pairs_brute_force(window: int | None) -> None:
    for n in range(1, 40):
        brute = sum(min(i + 1, window or n) for i in range(n))
        assert evaluate(causal_pairs(T, window), {"T": n}) == brute


def json_eval(e: Any, env: dict[str, float]) -> float:
    """An independent reader of the serialised form (what page.html's evalExpr does)."""
    if isinstance(e, int | float):
        return e
    op, *args = e
    if op == "v":
        return env[args[0]]
    if op == "if<":
        a, b, x, y = args
        return json_eval(x if json_eval(a, env) < json_eval(b, env) else y, env)
    x, y = (json_eval(a, env) for a in args)
    return {
        "+": lambda: x + y,
        "-": lambda: x - y,
        "*": lambda: x * y,
        "//": lambda: x // y,
        "/": lambda: x / y,
        "min": lambda: min(x, y),
        "max": lambda: max(x, y),
        "pow": lambda: x**y,
    }[op]()


def test_serialised_formulas_evaluate_the_same() -> None:
    data = page_data(get_preset("tiny-deepseek-v3"), mode="decode", seq=100)
    env = {"B": 3, "T": 1, "S": 77, "eager": 0, "master": 1}
    from glassformer.explorer.ops import build_sections

    for mode, sections in data["modes"].items():
        ours = build_sections(get_preset("tiny-deepseek-v3"), mode)
        env["T"] = 1 if mode == "decode" else 77
        for sec_json, sec in zip(sections, ours, strict=True):
            for op_json, op in zip(sec_json["ops"], sec.ops, strict=True):
                for key, formula in op_json["f"].items():
                    assert json_eval(formula, env) == pytest.approx(evaluate(getattr(op, key), env))
    json.dumps(data)  # serialisable as is


def test_to_text_is_readable() -> None:
    assert to_text(2 * B * T) == "((2 * B) * T)"
    assert (
        to_text(causal_pairs(T, 4)) == "((10 + (4 * (T - 4))) if 4 < T else ((T * (T + 1)) // 2))"
    )
    assert to_json(S) == ["v", "S"]


# --- whole-pass figures ---------------------------------------------------------------------------
def test_full_attention_masked_pairs_are_the_difference() -> None:
    cfg = get_preset("llama-3-8b")
    b, t = 2, 512
    a = analyze(cfg, "prefill", b, t)
    assert cfg.head_dim is not None
    masked = t * t - t * (t + 1) // 2
    per_layer = 2 * b * cfg.n_heads * masked * (cfg.head_dim + cfg.head_dim)
    assert a["flops_matmul"] - a["flops_matmul_causal"] == per_layer * cfg.n_layers


def test_dense_forward_is_about_2n_flops_per_token() -> None:
    """The textbook check: forward FLOPs ~ 2 x non-embedding params per token (+ attention)."""
    cfg = get_preset("llama-3-8b")
    a = analyze(cfg, "prefill", 1, 128)
    per_token = a["flops_matmul"] / 128
    assert per_token == pytest.approx(2 * (a["params_total"] - a["params_embedding"]), rel=0.02)


def test_decode_kv_cache_and_memory_bound() -> None:
    cfg = get_preset("llama-3-8b")
    a = analyze(cfg, "decode", 1, 32768)
    assert a["kv_cache_bytes"] == 32768 * 32 * 2 * 8 * 128 * 2
    assert a["roofline"]["bound"] == "memory"
    # reading the weights once dominates a batch-1 decode step
    assert a["traffic_bytes"] > a["weights_bytes"]
    r = a["roofline"]
    assert r["time_s"] >= r["time_overlapped_s"] > 0
    assert r["tokens_per_s"] == pytest.approx(1 / r["time_s"])


def test_sliding_window_limits_cache_and_attention() -> None:
    mistral = get_preset("mistral-7b")  # every layer slides over 4096 keys
    a = analyze(mistral, "decode", 1, 32768)
    assert a["kv_cache_bytes"] == 4096 * 32 * 2 * 8 * 128 * 2
    assert a["sliding"]["kv_cache_bytes_if_all_full"] == 8 * a["kv_cache_bytes"]
    short = analyze(mistral, "decode", 1, 4096)
    longer = analyze(mistral, "decode", 1, 32768)
    # attention work stops growing once the context passes the window (ring: window + 1 keys)
    grow = longer["flops_matmul_causal"] - short["flops_matmul_causal"]
    assert grow == 0
    gemma = analyze(get_preset("gemma-3-1b"), "decode", 1, 32768)
    assert gemma["sliding"]["sliding_layers"] == 22 and gemma["sliding"]["full_layers"] == 4
    assert gemma["kv_cache_bytes"] < gemma["sliding"]["kv_cache_bytes_if_all_full"] / 5


def test_mla_cache_and_orders() -> None:
    cfg = get_preset("deepseek-v3")
    a = analyze(cfg, "decode", 1, 32768)
    m = a["mla"]
    assert m["cache_elems_per_token_per_layer"] == 512 + 64
    assert m["mha_equivalent_elems_per_token_per_layer"] == 128 * (192 + 128)
    assert m["compression"] == pytest.approx(40960 / 576)
    assert a["kv_cache_bytes"] == 32768 * 61 * 576 * 2
    plain, absorbed = m["orders"]["plain"], m["orders"]["absorbed"]
    # decode: re-expanding 32k latents per step costs ~100x the absorbed order
    assert plain["flops_matmul_per_layer"] > 50 * absorbed["flops_matmul_per_layer"]
    assert plain["bytes_per_layer"] > absorbed["bytes_per_layer"]
    assert a["mla_order"] == "absorbed"
    assert analyze(cfg, "prefill", 1, 4096)["mla_order"] == "plain"


def test_moe_active_flops() -> None:
    cfg = get_preset("mixtral-8x7b")
    a = analyze(cfg, "prefill", 1, 1000)
    moe = a["moe"]
    assert moe["expert_flops_topk"] == 32 * 1000 * 2 * 2 * 3 * 4096 * 14336
    assert moe["expert_flops_if_dense"] == 4 * moe["expert_flops_topk"]
    assert moe["params_routed_active"] == 32 * 2 * 3 * 4096 * 14336
    # decode at batch 1 reads only the chosen experts' weights
    d = analyze(cfg, "decode", 1, 1000)
    assert d["moe"]["expected_experts_hit_per_layer"] == pytest.approx(2)
    assert d["traffic_bytes"] < 0.4 * d["weights_bytes"]


def test_train_memory_and_checkpointing() -> None:
    cfg = get_preset("llama-3-8b")
    a = analyze(cfg, "train", 4, 4096)
    mem = a["memory"]
    p = a["params_total"]
    assert mem["gradients_bytes"] == 2 * p
    assert mem["optimizer_bytes"] == 12 * p  # m, v and master weights in fp32
    assert mem["activations_checkpointed_bytes"] < mem["activations_bytes"] / 5
    assert mem["total_checkpointed_bytes"] < mem["total_bytes"]
    t = a["train"]
    assert t["flops_matmul_with_checkpointing"] > a["flops_matmul"]
    fp32 = analyze(cfg, "train", 4, 4096, dtype="fp32")["memory"]
    assert fp32["optimizer_bytes"] == 8 * p  # no master copy


def test_epilogue_fusion_saves_traffic_in_every_block() -> None:
    for name in ("gpt2", "llama-3-8b", "gemma-3-1b", "deepseek-v3", "qwen3-30b-a3b"):
        a = analyze(get_preset(name), "prefill", 4, 2048)
        for sec in a["epilogue"]["sections"]:
            if sec["section"].startswith("block"):
                assert sec["bytes_saved"] > 0, (name, sec)
                assert 0 < sec["time_saved_s"] < sec["time_unfused_s"]
                assert sec["bytes_fused"] == sec["bytes_unfused"] - sec["bytes_saved"]


def test_lm_head_cross_entropy_fusion_in_train() -> None:
    cfg = get_preset("llama-3-8b")
    a = analyze(cfg, "train", 1, 1024)
    head = next(s for s in a["epilogue"]["sections"] if s["section"] == "head")
    # fused linear cross-entropy: the [tokens, vocab] logits never reach memory
    assert head["bytes_saved"] >= 2 * 1024 * cfg.vocab_size * 2


def test_eager_attention_materialises_scores() -> None:
    cfg = get_preset("llama-3-8b")
    flash = analyze(cfg, "prefill", 1, 4096)
    eager = analyze(cfg, "prefill", 1, 4096, attention="eager")
    assert eager["traffic_bytes"] > flash["traffic_bytes"] + 32 * 32 * 4096 * 4096 * 2
    assert eager["flops_matmul"] == flash["flops_matmul"]


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_dtypes_scale_bytes(dtype: str) -> None:
    cfg = get_preset("llama-3-8b")
    a = analyze(cfg, "decode", 1, 1024, dtype=dtype)
    assert a["weights_bytes"] == a["params_total"] * DTYPES[dtype].weight_bytes
    assert a["kv_cache_bytes"] == 1024 * 32 * 2 * 8 * 128 * DTYPES[dtype].kv_bytes


def test_bad_settings_are_named() -> None:
    cfg = get_preset("gpt2")
    with pytest.raises(ValueError, match="mode"):
        analyze(cfg, "generate")
    with pytest.raises(ValueError, match="dtype"):
        analyze(cfg, dtype="fp4")
    with pytest.raises(ValueError, match="attention"):
        analyze(cfg, attention="paged")
    with pytest.raises(ValueError, match="batch"):
        analyze(cfg, batch=0)


# --- hardware -----------------------------------------------------------------------------------
def test_hardware_presets() -> None:
    for name in ("h100-sxm", "h200", "a100-80gb", "b200", "rtx-4090", "mi300x", "apple-m2-ultra"):
        hw = get_hardware(name)
        assert hw.bandwidth > 0 and hw.vector_flops > 0
        for dtype in DTYPES.values():
            assert hw.compute_peak(dtype.compute)[0] > 0
    assert get_hardware("h100").name == "h100-sxm"
    assert get_hardware("H200").peak["bf16"] == PRESETS["h100-sxm"].peak["bf16"]
    assert get_hardware("a100-80gb").compute_peak("fp8") == (312e12, "bf16")  # no FP8 units
    with pytest.raises(ValueError, match="h100-sxm"):
        get_hardware("h100sxm")


def test_this_cpu_is_measured() -> None:
    hw = probe_cpu(seconds=0.05)
    assert hw.measured and hw.peak["fp32"] > 1e8 and hw.bandwidth > 1e8
    a = analyze(get_preset("tiny"), "decode", 1, 128, dtype="fp32", hardware=hw)
    assert a["hardware"]["name"] == "this-cpu"
