"""Full-size published configs: total and active parameter counts, analysis time, no weights.

Published figures: GPT-2 124M/355M/774M/1.5B (exact HF counts), Llama 3 8B (8.03B),
Mixtral 8x7B (46.7B total, 12.9B active), Qwen3-30B-A3B (30.5B, 3.3B), Qwen3-235B-A22B
(235B, 22B), DeepSeek-V3 (671B total = 671,026,404,352 in HF without MTP, 37B active; the
checkpoint's 685B adds the MTP module with its own copy of embedding and head), Gemma 3 270M
and 1B (text-only models).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import pytest

from glassformer.config import Config
from glassformer.explorer import analyze
from glassformer.explorer.ops import MODES
from glassformer.presets import get_preset

QWEN3_235B = {
    "model_type": "qwen3_moe",
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 12288,
    "moe_intermediate_size": 1536,
    "num_hidden_layers": 94,
    "num_attention_heads": 64,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "sliding_window": None,
    "use_sliding_window": False,
}


def within(value: int, published: float, rel: float) -> bool:
    return abs(value - published) / published <= rel


EXACT = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "llama-3-8b": 8_030_261_248,
    "gemma-3-270m": 268_098_176,
    "gemma-3-1b": 999_885_952,
    "deepseek-v3": 671_026_404_352,
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_published_totals(name: str) -> None:
    a = analyze(get_preset(name))
    assert a["params_total"] == EXACT[name]
    if not get_preset(name).n_experts:
        assert a["params_active"] == a["params_total"]


@pytest.mark.parametrize(
    ("cfg", "total", "active"),
    [
        (lambda: get_preset("mixtral-8x7b"), 46.7e9, 12.9e9),
        (lambda: get_preset("qwen3-30b-a3b"), 30.5e9, 3.3e9),
        (lambda: Config.from_hf(QWEN3_235B), 235e9, 22e9),
        (lambda: get_preset("deepseek-v3"), 671e9, 37e9),
    ],
    ids=["mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3"],
)
def test_moe_total_and_active(cfg: Callable[[], Config], total: float, active: float) -> None:
    a = analyze(cfg())
    # published figures are rounded to 3 significant digits (2 for the active ones)
    assert within(a["params_total"], total, 0.005)
    assert within(a["params_active"], active, 0.03)


def test_deepseek_v3_mtp_module() -> None:
    a = analyze(get_preset("deepseek-v3"))
    cfg = get_preset("deepseek-v3")
    # the published 685B checkpoint = model + MTP module + its own embedding and head copies
    checkpoint = a["params_total"] + a["params_mtp"] + 2 * cfg.vocab_size * cfg.d_model
    assert within(checkpoint, 685e9, 0.002)
    built = analyze(cfg.replace(build_mtp=True))
    assert built["params_total"] == a["params_total"] + a["params_mtp"]


FULL = ["gpt2-xl", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gemma-3-4b"]


@pytest.mark.parametrize("name", FULL)
def test_fast_and_allocates_no_weights(name: str) -> None:
    cfg = get_preset(name)
    tracemalloc.start()
    start = time.perf_counter()
    for mode in MODES:
        analyze(cfg, mode, batch=8, seq=32768)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 2.0 * len(MODES), elapsed  # under 2 s per analysis
    # a 671B-parameter model would need a terabyte; the analysis needs a few megabytes
    assert peak < 64 * 2**20, peak


@pytest.mark.parametrize(
    "name",
    [
        "gemma-3-1b",
        pytest.param("llama-3-8b", marks=pytest.mark.slow),
        pytest.param("gpt2-xl", marks=pytest.mark.slow),
    ],
)
def test_full_size_flops_on_meta_device(name: str) -> None:
    """Full-size FLOPs: our model on the meta device (no memory), counted by FlopCounterMode.
    (MoE models route by data, which the meta device cannot do; their tiny variants are
    checked in test_explorer_module_flops.)"""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from glassformer.model import Transformer

    cfg = get_preset(name)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.set_attention_impl("eager")
    ids = torch.zeros(2, 300, dtype=torch.long, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids)
    assert analyze(cfg, "prefill", 2, 300)["flops_matmul"] == counter.get_total_flops()
