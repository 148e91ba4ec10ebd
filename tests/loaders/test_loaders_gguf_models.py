"""Tiny HF models written as GGUF the way llama.cpp converts them, loaded back by us.

Covers each supported architecture (llama's Q/K permutation, Gemma 3's norm offset, sandwich
norms, sliding window and QK-norm, Qwen2's biases, Qwen3's QK-norm, SmolLM3's NoPE layers,
Llama 4's interleaved MoE with stacked experts and unpermuted Q/K) in well under a second each,
without the big files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType

from glassformer.loaders.gguf import load_gguf
from glassformer.loaders.resolve import load_model
from tests.loaders.gguf_builders import base_kv, hf_to_gguf, write_gguf

transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=128, hidden_size=64, intermediate_size=96, max_position_embeddings=64)


# arch -> (HF config class, HF model class, the config's keys beside SMALL)
TINY = {
    "llama": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            tie_word_embeddings=False,
        ),
    ),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            num_hidden_layers=6, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            query_pre_attn_scalar=32, sliding_window=4,
        ),
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            tie_word_embeddings=False,
        ),
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            tie_word_embeddings=True,
        ),
    ),
    "smollm3": (  # llama.cpp: every 4th layer NoPE, Q/K rows permuted
        "SmolLM3Config",
        "SmolLM3ForCausalLM",
        dict(
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
            tie_word_embeddings=True, pad_token_id=None,
        ),
    ),
    "llama4": (  # llama.cpp's fixed chunk, NoPE step and temperature (HF's defaults)
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        dict(
            intermediate_size=48, intermediate_size_mlp=96, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
            num_experts_per_tok=1, interleave_moe_layer_step=2,
        ),
    ),
}  # fmt: skip


def tiny_hf(arch: str):
    torch.manual_seed(0)
    config_class, model_class, keys = TINY[arch]
    config = getattr(transformers, config_class)(**{**SMALL, **keys})
    model = getattr(transformers, model_class)(config)
    with torch.no_grad():  # norms and biases start at constants: make them informative
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "qwen3", "smollm3", "llama4"])
def test_f32_gguf_matches_the_hf_model(tmp_path: Path, arch: str) -> None:
    hf = tiny_hf(arch)
    path = write_gguf(
        tmp_path / f"{arch}.gguf",
        arch,
        base_kv(hf.config, arch),
        hf_to_gguf(arch, hf.config, hf.state_dict()),
    )
    cfg, _ = load_gguf(path)
    assert cfg.tie_embeddings == hf.config.tie_word_embeddings
    model = load_model(path)
    ids = torch.randint(0, 128, (2, 12))  # longer than Gemma's window of 4
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-5, diff


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_quantised_gguf_matches_hf_gguf_loader(tmp_path: Path, arch: str) -> None:
    pytest.importorskip("accelerate")  # HF's GGUF loading needs it
    hf = tiny_hf(arch)
    tensors = hf_to_gguf(arch, hf.config, hf.state_dict())
    qtypes = {
        name: (
            GGMLQuantizationType.Q4_0,
            GGMLQuantizationType.Q5_1,
            GGMLQuantizationType.Q8_0,
            GGMLQuantizationType.Q4_1,
        )[i % 4]
        for i, name in enumerate(n for n, t in tensors.items() if t.ndim == 2)
    }
    path = write_gguf(tmp_path / "q.gguf", arch, base_kv(hf.config, arch), tensors, qtypes)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="q.gguf", dtype=torch.float32
    ).eval()
    model = load_model(path)
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        diff = (model(ids) - ref(ids).logits).abs().max().item()
    assert diff <= 1e-5, diff


def llama3_rope_factors(theta: float, dim: int, factor: float, orig: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel rope_freqs for Llama 3.1 (low 1, high 4)."""
    low, high = 1.0, 4.0
    freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < orig / high:
            out.append(1.0)
        elif wavelen > orig / low:
            out.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def test_llama3_rope_scaling_from_rope_freqs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    config = transformers.LlamaConfig(
        **{**SMALL, "max_position_embeddings": 16384},
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        rope_parameters=rope,
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharpen attention, so that positions (and RoPE) matter
        hf.model.layers[0].self_attn.q_proj.weight.mul_(30)
        hf.model.layers[0].self_attn.k_proj.weight.mul_(30)
    tensors = hf_to_gguf("llama", hf.config, hf.state_dict())
    tensors["rope_freqs.weight"] = llama3_rope_factors(500000.0, 64, 8.0, 8192)
    path = write_gguf(tmp_path / "l3.gguf", "llama", base_kv(hf.config, "llama"), tensors)
    cfg, _ = load_gguf(path)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.type == "llama3"
    assert (cfg.rope_scaling.factor, cfg.rope_scaling.original_max_seq_len) == (8.0, 8192)
    # long enough for the rescaled frequencies to turn by a lot: without the scaling the
    # logits are far off
    model = load_model(path)
    ids = torch.randint(0, 128, (1, 1024))
    with torch.no_grad():
        expected = hf(ids).logits
        scaled_diff = (model(ids) - expected).abs().max().item()
        assert scaled_diff <= 1e-4
        unscaled = load_model(path)
        unscaled.config = cfg.replace(rope_scaling=None)
        unscaled.build_rotary()
        unscaled_diff = (unscaled(ids) - expected).abs().max().item()
        assert unscaled_diff > 1e-2
    # a factor that matches no published setting is refused rather than silently misread
    tensors["rope_freqs.weight"] = llama3_rope_factors(500000.0, 64, 5.0, 8192)
    bad = write_gguf(tmp_path / "bad.gguf", "llama", base_kv(hf.config, "llama"), tensors)
    with pytest.raises(ValueError, match="match no known setting"):
        load_gguf(bad)


@pytest.mark.parametrize(
    ("kv", "message"),
    [
        (dict(expert_count=0), "without experts"),
        ({"attention.sliding_window": 0}, "sliding_window = 0"),
        ({"attention.chunk_size": 4096}, "attention.chunk_size = 4096"),
    ],
)
def test_llama4_settings_llama_cpp_does_not_read_are_refused(
    tmp_path: Path, kv: dict, message: str
) -> None:
    hf = tiny_hf("llama4")
    tensors = hf_to_gguf("llama4", hf.config, hf.state_dict())
    path = write_gguf(
        tmp_path / "l4.gguf", "llama4", {**base_kv(hf.config, "llama4"), **kv}, tensors
    )
    with pytest.raises(ValueError, match=message):
        load_gguf(path)


def _gemma4_gguf(tmp_path: Path, **kv_changes: object) -> tuple[object, Path]:
    from tests.families import build_hf
    from tests.loaders.gguf_builders import gemma4_kv, gemma4_rope_freqs

    hf = build_hf("gemma4_text")  # per-layer inputs, k=v, shared KV, double-wide MLPs
    tensors = hf_to_gguf("gemma4", hf.config, hf.state_dict())
    tensors["rope_freqs.weight"] = gemma4_rope_freqs(hf.config)  # proportional RoPE
    kv = {**gemma4_kv(hf.config), **kv_changes}
    return hf, write_gguf(tmp_path / "gemma4.gguf", "gemma4", kv, tensors)


def test_gemma4_gguf_matches_the_hf_model(tmp_path: Path) -> None:
    from tests.families import SEQ, VOCAB

    hf, path = _gemma4_gguf(tmp_path)
    cfg, state = load_gguf(path)
    assert cfg.global_k_eq_v and cfg.n_kv_shared_layers == 3 and cfg.double_wide_mlp
    assert cfg.rope_scaling is not None and cfg.rope_scaling.proportion == 0.25
    assert "layers.5.attn.k_proj.weight" not in state  # a KV-sharing layer
    assert type(cfg).from_hf(cfg.to_hf()) == cfg  # HF can express what the file describes
    model = load_model(path)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()  # type: ignore[operator]
    assert diff <= 1e-4, diff


def test_gemma4_moe_gguf_is_refused(tmp_path: Path) -> None:
    # the router's scale and per-expert scale have no GGUF tensor names in gguf.constants
    _, path = _gemma4_gguf(tmp_path, expert_count=4, expert_used_count=2)
    with pytest.raises(ValueError, match="mixture-of-experts"):
        load_gguf(path)


def test_gemma4_gguf_with_differing_kv_heads_per_type_is_refused(tmp_path: Path) -> None:
    _, path = _gemma4_gguf(tmp_path, **{"attention.head_count_kv": [2, 1, 2, 4, 1, 1]})
    with pytest.raises(ValueError, match="head_count_kv differs between sliding layers"):
        load_gguf(path)
