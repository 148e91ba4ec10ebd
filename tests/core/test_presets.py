"""Full-size presets: exact parameter counts against HF transformers, built on the meta device."""

from __future__ import annotations

import time

import pytest
import torch

import glassformer as gf
from glassformer.presets import PRESETS

transformers = pytest.importorskip("transformers")

# Published counts, as HF transformers reports them (DeepSeek-V3 without its MTP module).
PUBLISHED = {
    "gpt2": 124_439_808,
    "llama-3-8b": 8_030_261_248,
    "mixtral-8x7b": 46_702_792_704,
    "qwen3-30b-a3b": 30_532_122_624,
    "gemma-3-270m": 268_098_176,
    "deepseek-v3": 671_026_404_352,
    "phi-3-mini-4k": 3_821_079_552,
    "gpt-oss-20b": 20_914_757_184,
    "gpt-oss-120b": 116_829_156_672,
    "llama-4-scout-17b-16e": 107_769_861_120,  # the text model
    "llama-4-maverick-17b-128e": 400_711_848_960,  # the text model
    "smollm3-3b": 3_075_098_624,
    # Gemma 4 text models; the model cards' totals also count the vision (and E2B/E4B audio)
    # encoders: E2B 5.1B, E4B 8B with embeddings, 26B-A4B 25.2B, 31B 30.7B
    "gemma-4-e2b": 4_628_569_344,
    "gemma-4-e4b": 7_463_013_376,
    "gemma-4-26b-a4b": 25_233_141_760,
    "gemma-4-31b": 30_697_345_280,
}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_count_equals_hf(name: str) -> None:
    cfg = gf.Config.preset(name)
    with torch.device("meta"):
        ours = gf.Transformer(cfg)
    hf_dict = cfg.to_hf()
    model_type = hf_dict.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **hf_dict)
    auto = (  # a model with image / audio embedders: HF's multimodal class
        transformers.AutoModelForImageTextToText
        if cfg.multimodal
        else transformers.AutoModelForCausalLM
    )
    with torch.device("meta"):
        hf = auto.from_config(hf_config)
    assert _count(ours) == _count(hf)
    if name in PUBLISHED:
        assert _count(ours) == PUBLISHED[name]
    assert gf.Config.from_hf(cfg.to_hf()) == cfg


def test_meta_device_allocates_nothing_and_is_fast() -> None:
    start = time.perf_counter()
    with torch.device("meta"):
        model = gf.Transformer(gf.Config.preset("deepseek-v3"))
    elapsed = time.perf_counter() - start
    assert all(p.is_meta for p in model.parameters())
    assert _count(model) == PUBLISHED["deepseek-v3"]
    assert elapsed < 20  # generous: it takes about a second here


def test_mtp_modules_are_built_only_when_asked() -> None:
    cfg = gf.Config.preset("deepseek-v3")
    with torch.device("meta"):
        with_mtp = gf.Transformer(cfg.replace(build_mtp=True))
    extra = _count(with_mtp) - PUBLISHED["deepseek-v3"]
    d = cfg.d_model
    with torch.device("meta"):
        block = gf.Transformer(cfg.replace(n_layers=cfg.n_layers)).layers[-1]
    # embed_norm + hidden_norm + proj (2d -> d) + one MoE block + final_norm; embedding and head
    # are shared with the main model.
    assert extra == 3 * d + 2 * d * d + _count(block)


def test_tiny_is_about_a_million_parameters() -> None:
    model = gf.Transformer(gf.Config.preset("tiny"))
    assert 0.8e6 <= _count(model) <= 1.2e6


def test_unknown_preset_suggests_close_names() -> None:
    with pytest.raises(ValueError, match=r"did you mean.*llama-3-8b"):
        gf.Config.preset("llama3-8b")
