"""The cost model against an independent peer: HF transformers' own models.

FLOPs: HF's eager attention (and eager experts for MoE) counted by FlopCounterMode on tiny
random configs, converted with `Config.from_hf`. Parameters: `sum(p.numel())` of HF models
built on the meta device, tiny and full size (no weights are allocated).
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from glassformer.config import Config
from glassformer.explorer import analyze
from glassformer.presets import get_preset
from tests.families import TINY_HF_CONFIGS as FAMILIES
from tests.families import hf_config

B, T = 2, 12
TOL = 0.005
# HF runs every expert on every token here (Llama 4's Llama4TextExperts: one bmm over all E
# experts, the unchosen ones fed zeros); the cost model counts the routed top-k, as glassformer
# computes it, so the peer is held to the dense-expert figure the report also gives.
HF_DENSE_EXPERTS = {"llama4_text"}


def hf_model(config: Any, meta: bool = False) -> Any:
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if meta:
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config).float().eval()
    model.set_attn_implementation("eager")
    if hasattr(model, "set_experts_implementation") and any(
        "experts" in name for name, _ in model.named_modules()
    ):
        model.set_experts_implementation("eager")
    return model


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_flops_match_hf_eager(name: str) -> None:
    config = hf_config(name)
    cfg = Config.from_hf(config.to_dict())
    model = hf_model(config)
    ids = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(ids)
    measured = counter.get_total_flops()
    a = analyze(cfg, "prefill", B, T, attention="eager")
    expected = a["flops_matmul"]
    if name in HF_DENSE_EXPERTS:
        expected += a["moe"]["expert_flops_if_dense"] - a["moe"]["expert_flops_topk"]
    assert abs(expected - measured) / measured <= TOL, (expected, measured)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_params_match_hf_meta(name: str) -> None:
    config = hf_config(name)
    model = hf_model(config, meta=True)
    a = analyze(Config.from_hf(config.to_dict()))
    assert a["params_total"] == sum(p.numel() for p in model.parameters())


# Full-size presets against HF's meta-device count (DeepSeek-V3 without its MTP module).
FULL_SIZE = ["gpt2", "gpt2-xl", "llama-3-8b", "mixtral-8x7b", "qwen3-30b-a3b", "gemma-3-1b"]


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_params_match_hf_meta(name: str) -> None:
    from transformers import AutoConfig

    cfg = get_preset(name)
    spec = cfg.to_hf()
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    model = hf_model(config, meta=True)
    assert analyze(cfg)["params_without_mtp"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_deepseek_v3_params_match_hf_meta() -> None:
    from transformers import AutoConfig

    cfg = get_preset("deepseek-v3")
    spec = cfg.to_hf()
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    model = hf_model(config, meta=True)
    n = sum(p.numel() for p in model.parameters())
    assert n == 671_026_404_352
    assert analyze(cfg)["params_without_mtp"] == n
