"""Tiny HF transformers configs, one or more per family glassformer reproduces, for the parity
tests (tests/core) and the explorer's cost-model tests (tests/explorer).

Windows are shorter than the test sequences, so that sliding layers take their ring-cache and
masked paths; MoE configs route to several experts per token; the RoPE variants (llama3, linear,
yarn) are spread over the families. Random-initialised HF models leave norms at 1 and biases at
0, which would hide a swapped or missing weight; `perturb` moves every parameter and buffer that
holds weights.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 97
SEQ = 40  # longer than every sliding window below

# fmt: off
TINY_HF_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": dict(
        model_type="gpt2", vocab_size=VOCAB, n_embd=48, n_layer=2, n_head=4, n_positions=64,
        activation_function="gelu_new",
    ),
    "llama": dict(
        model_type="llama", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=16,
        ),
    ),
    "llama-bias-mqa-linear": dict(
        model_type="llama", vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=24,
        attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    ),
    "mistral": dict(
        model_type="mistral", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        sliding_window=7, max_position_embeddings=128,
    ),
    "qwen2": dict(
        model_type="qwen2", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0),
    ),
    "qwen2-window": dict(
        model_type="qwen2", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
        sliding_window=7, max_window_layers=1,
    ),
    "qwen3": dict(
        model_type="qwen3", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        rope_parameters=dict(
            rope_type="yarn", rope_theta=1000000.0, factor=4.0,
            original_max_position_embeddings=32,
        ),
        tie_word_embeddings=True,
    ),
    "qwen3_moe": dict(
        model_type="qwen3_moe", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=6, num_experts_per_tok=2, moe_intermediate_size=40, norm_topk_prob=False,
    ),
    "gemma2": dict(
        model_type="gemma2", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        sliding_window=9, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    ),
    "gemma3_text": dict(
        model_type="gemma3_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
        sliding_window=6, query_pre_attn_scalar=32,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters=dict(
            sliding_attention=dict(rope_type="default", rope_theta=10000.0),
            full_attention=dict(rope_type="linear", rope_theta=1000000.0, factor=8.0),
        ),
    ),
    "mixtral": dict(
        model_type="mixtral", vocab_size=VOCAB, hidden_size=64, intermediate_size=48,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
    ),
    "deepseek_v3": dict(
        model_type="deepseek_v3", vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
        moe_intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8, num_experts_per_tok=3,
        n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5,
        kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=12,
        v_head_dim=10, max_position_embeddings=256,
        rope_parameters=dict(
            rope_type="yarn", rope_theta=10000.0, factor=4.0,
            original_max_position_embeddings=64, beta_fast=32, beta_slow=1, mscale=1.0,
            mscale_all_dim=1.0,
        ),
    ),
    "phi3": dict(
        model_type="phi3", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=7,
        max_position_embeddings=128, original_max_position_embeddings=128, eos_token_id=2,
        pad_token_id=None,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5),
    ),
    "deepseek_v3-no-qlora": dict(
        model_type="deepseek_v3", vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
        moe_intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, n_shared_experts=2, n_routed_experts=4, num_experts_per_tok=2,
        n_group=1, topk_group=1, first_k_dense_replace=0, kv_lora_rank=16, q_lora_rank=None,
        qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, rope_interleave=False,
    ),
    "olmo2": dict(
        model_type="olmo2", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, attention_bias=True,
        max_position_embeddings=128, pad_token_id=None, eos_token_id=2,
        rope_parameters=dict(rope_type="default", rope_theta=500000.0),
    ),
    "olmo3": dict(
        model_type="olmo3", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, sliding_window=7,
        max_position_embeddings=256, pad_token_id=None, eos_token_id=2,
        rope_parameters=dict(
            sliding_attention=dict(rope_type="default", rope_theta=500000.0),
            full_attention=dict(
                rope_type="yarn", rope_theta=500000.0, factor=8.0, beta_fast=32, beta_slow=1,
                original_max_position_embeddings=32, attention_factor=1.2079441541679836,
            ),
        ),
    ),
    "glm4_moe": dict(
        model_type="glm4_moe", vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
        moe_intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, attention_bias=True, use_qk_norm=True,
        n_routed_experts=8, num_experts_per_tok=3, n_shared_experts=1, n_group=4, topk_group=2,
        first_k_dense_replace=1, routed_scaling_factor=2.5, norm_topk_prob=True,
        max_position_embeddings=128, num_nextn_predict_layers=1,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, partial_rotary_factor=0.5),
    ),
    "gpt_oss": dict(
        model_type="gpt_oss", vocab_size=VOCAB, hidden_size=64, intermediate_size=40,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_local_experts=6, num_experts_per_tok=3, sliding_window=7,
        max_position_embeddings=256, swiglu_limit=0.5,  # low enough that the clamps bite
        rope_parameters=dict(
            rope_type="yarn", rope_theta=150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0,
            truncate=False, original_max_position_embeddings=64,
        ),
    ),
    "gpt_oss-mqa-nobias": dict(  # HF's default (YaRN) rope, its layer pattern spelled out
        model_type="gpt_oss", vocab_size=VOCAB, hidden_size=48, intermediate_size=24,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=12,
        num_local_experts=4, num_experts_per_tok=2, sliding_window=5, attention_bias=False,
        swiglu_alpha=1.3, swiglu_limit=0.3,
        layer_types=["full_attention", "sliding_attention"],
    ),
    "smollm3": dict(
        model_type="smollm3", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        no_rope_layers=[1, 0, 1], use_sliding_window=True, sliding_window=7, pad_token_id=None,
        tie_word_embeddings=False,
    ),
    "llama4_text": dict(
        model_type="llama4_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=32,
        intermediate_size_mlp=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=1,
        interleave_moe_layer_step=2, no_rope_layer_interval=4, attention_chunk_size=8,
        floor_scale=4, attn_scale=0.3, max_position_embeddings=128,
        rope_parameters=dict(
            rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
            high_freq_factor=4.0, original_max_position_embeddings=16,
        ),
    ),
    # LongRoPE: the sequences cross the original context (16), so the long factors apply
    "phi3-longrope": dict(
        model_type="phi3", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, sliding_window=9,
        max_position_embeddings=64, original_max_position_embeddings=16, eos_token_id=2,
        pad_token_id=None,
        rope_parameters=dict(
            rope_type="longrope", rope_theta=10000.0,
            short_factor=[1.0, 1.1, 1.3, 1.7, 2.3, 3.0, 3.9, 5.0],
            long_factor=[1.0, 1.4, 2.2, 3.5, 5.6, 8.0, 11.0, 16.0],
        ),
    ),
    # Hybrids: Gated DeltaNet ("linear_attention") and gated full attention, more value than
    # key heads in the linear layers, (1 + w) norms, partial rotary.
    "qwen3_next": dict(
        model_type="qwen3_next", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
        linear_value_head_dim=12, linear_conv_kernel_dim=3, num_experts=6, num_experts_per_tok=3,
        moe_intermediate_size=24, shared_expert_intermediate_size=40, mlp_only_layers=[0],
        norm_topk_prob=False, max_position_embeddings=64,
        rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                             original_max_position_embeddings=16, partial_rotary_factor=0.25),
    ),
    "qwen3_5_text": dict(
        model_type="qwen3_5_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=112,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        full_attention_interval=2, linear_num_key_heads=2, linear_num_value_heads=6,
        linear_key_head_dim=16, linear_value_head_dim=8, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=100000.0, partial_rotary_factor=0.5,
                             mrope_section=[1, 1, 2], mrope_interleaved=True),
    ),
    "qwen3_5_moe_text": dict(
        model_type="qwen3_5_moe_text", vocab_size=VOCAB, hidden_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        layer_types=["linear_attention", "linear_attention", "full_attention",
                     "linear_attention"],
        linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=12,
        linear_value_head_dim=16, num_experts=5, num_experts_per_tok=2,
        moe_intermediate_size=24, shared_expert_intermediate_size=32,
    ),
    # Gemma 4: per-layer embeddings, keys-equal-values and their own head_dim / KV heads on
    # the full layers (proportional RoPE), the last 3 layers sharing KV, double-wide MLPs there
    "gemma4_text": dict(
        model_type="gemma4_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=48,
        num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
        sliding_window=6, hidden_size_per_layer_input=8, vocab_size_per_layer_input=VOCAB,
        num_kv_shared_layers=3, use_double_wide_mlp=True, final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "full_attention", "sliding_attention",
                     "sliding_attention", "full_attention", "full_attention"],
        rope_parameters=dict(
            sliding_attention=dict(rope_type="default", rope_theta=10000.0),
            full_attention=dict(rope_type="proportional", partial_rotary_factor=0.25,
                                rope_theta=1000000.0),
        ),
    ),
    # Gemma 4 unified's text stack (12B's layout; text only here, its images and audio in
    # tests/core/test_gemma4_unified.py): keys-equal-values full layers with one KV head and
    # their own head_dim, no per-layer inputs, final soft-capping
    "gemma4_unified_text": dict(
        model_type="gemma4_unified_text", vocab_size=VOCAB, hidden_size=64,
        intermediate_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
        sliding_window=6, final_logit_softcapping=3.0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention",
                     "full_attention"],
    ),
    # Gemma 4 MoE (26B-A4B's layout): experts beside every dense MLP, no per-layer
    # embeddings or KV sharing, separate v on full layers with their own head_dim
    "gemma4_text-moe": dict(
        model_type="gemma4_text", vocab_size=VOCAB, hidden_size=64, intermediate_size=48,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        global_head_dim=24, sliding_window=5, hidden_size_per_layer_input=0,
        enable_moe_block=True, num_experts=6, top_k_experts=2, moe_intermediate_size=20,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters=dict(
            sliding_attention=dict(rope_type="default", rope_theta=10000.0),
            full_attention=dict(rope_type="proportional", partial_rotary_factor=0.5,
                                rope_theta=1000000.0, factor=2.0),
        ),
    ),
}
# fmt: on

# Configs whose HF model counts some positions from the start of the padded batch rather than of
# the row (Llama 4's query temperature on NoPE layers: `arange` plus the cache length, not
# `position_ids`), so in HF a left-padded row is not the row alone; the padding test holds the
# padded rows to HF's instead.
ABSOLUTE_POSITION_CONFIGS = frozenset({"llama4_text"})


def hf_config(name: str) -> Any:
    """The transformers config object of a tiny config."""
    from transformers import AutoConfig

    spec = dict(TINY_HF_CONFIGS[name])
    model_type = spec.pop("model_type")
    return AutoConfig.for_model(model_type, **spec)


def our_config(name: str) -> Any:
    from glassformer.config import Config

    return Config.from_hf(hf_config(name).to_dict())


def build_hf(name: str, seed: int = 0) -> Any:
    """A tiny HF model in float32, eval mode, eager attention, with perturbed weights."""
    from transformers import AutoModelForCausalLM

    config = hf_config(name)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float().eval()
    perturb(model, seed)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    return model


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        scale = 0.1 if p.dim() == 1 else 0.05
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    for name, b in model.named_buffers():
        if name.endswith(("e_score_correction_bias", "layer_scalar")):
            b.add_(torch.randn(b.shape, generator=gen) * 0.1)
