"""`config.json` files as published, not as `save_pretrained` writes them.

Published files predate keys HF now writes (Gemma's `layer_types`), carry legacy duplicates
(Gemma 2 9B's `sliding_window_size`) and legacy flags (GPT-2's `output_past`), and leave keys
to HF's defaults (Gemma 3 4B's `text_config`). Each test writes such a file by hand, with the
keys of the published one, and holds `from_hf` to what HF transformers builds from the same
directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import glassformer as gf
from glassformer.explorer import analyze
from glassformer.presets import get_preset
from tests.families import SEQ, VOCAB, perturb

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4

# The keys and values of the published files (google/gemma-2-2b, google/gemma-2-9b,
# google/gemma-3-1b-it, openai-community/gpt2 with distilgpt2's legacy flags,
# microsoft/Phi-3-mini-4k-instruct).
GEMMA2_2B: dict[str, Any] = {
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": 1, "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2304, "initializer_range": 0.02, "intermediate_size": 9216,
    "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
    "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0,
    "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.4",
    "use_cache": True, "vocab_size": 256000,
}  # fmt: skip
GEMMA2_9B = {
    **GEMMA2_2B, "hidden_size": 3584, "intermediate_size": 14336, "num_attention_heads": 16,
    "num_hidden_layers": 42, "num_key_value_heads": 8, "sliding_window_size": 4096,
}  # fmt: skip
GEMMA3_1B: dict[str, Any] = {
    "architectures": ["Gemma3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "attn_logit_softcapping": None, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 106], "final_logit_softcapping": None, "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1152, "initializer_range": 0.02,
    "intermediate_size": 6912, "max_position_embeddings": 32768, "model_type": "gemma3_text",
    "num_attention_heads": 4, "num_hidden_layers": 26, "num_key_value_heads": 1,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": 512, "sliding_window_pattern": 6, "torch_dtype": "bfloat16",
    "transformers_version": "4.50.0.dev0", "use_cache": True, "vocab_size": 262144,
}  # fmt: skip
# The multimodal Gemma 3 4B: its text_config names only what differs from HF's defaults.
GEMMA3_4B: dict[str, Any] = {
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {
        "hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
        "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "sliding_window": 1024,
    },
    "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
}  # fmt: skip
GPT2: dict[str, Any] = {
    "_num_labels": 1, "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
    "id2label": {"0": "LABEL_0"}, "initializer_range": 0.02, "label2id": {"LABEL_0": 0},
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768,
    "n_head": 12, "n_layer": 12, "n_positions": 1024, "output_past": True, "resid_pdrop": 0.1,
    "summary_activation": None, "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
    "summary_type": "cls_index", "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}  # fmt: skip


PHI3_MINI_4K: dict[str, Any] = {
    "_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"],
    "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                 "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
    "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu",
    "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
    "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": True,
    "attention_bias": False, "vocab_size": 32064,
}  # fmt: skip


# microsoft/Phi-3-mini-128k-instruct: the 4k file's keys with LongRoPE (the preset's factors)
PHI3_MINI_128K: dict[str, Any] = {
    **PHI3_MINI_4K, "_name_or_path": "Phi-3-mini-128k-instruct",
    "max_position_embeddings": 131072, "sliding_window": 262144,
    "rope_scaling": {"long_factor": list(get_preset("phi-3-mini-128k").rope_scaling.long_factor),
                     "short_factor": list(get_preset("phi-3-mini-128k").rope_scaling.short_factor),
                     "type": "longrope"},
}  # fmt: skip


# Qwen/Qwen3-Next-80B-A3B-Instruct (keys as transcribed from the release in public code; the
# layer list is HF's default for full_attention_interval 4, which this file leaves it to).
QWEN3_NEXT_80B: dict[str, Any] = {
    "architectures": ["Qwen3NextForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645,
    "full_attention_interval": 4, "head_dim": 256, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 5120, "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
    "linear_value_head_dim": 128, "max_position_embeddings": 262144, "mlp_only_layers": [],
    "model_type": "qwen3_next", "moe_intermediate_size": 512, "norm_topk_prob": True,
    "num_attention_heads": 16, "num_experts": 512, "num_experts_per_tok": 10,
    "num_hidden_layers": 48, "num_key_value_heads": 2, "output_router_logits": False,
    "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 5000000, "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.57.0.dev0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}  # fmt: skip
# Qwen/Qwen3.5-35B-A3B: the multimodal wrapper; the text model under text_config with its
# multimodal RoPE sections (no effect on text), the MTP layer count and the output-gate flag.
QWEN3_5_35B: dict[str, Any] = {
    "architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
    "image_token_id": 248056, "video_token_id": 248057, "vision_start_token_id": 248053,
    "vision_end_token_id": 248054, "tie_word_embeddings": False,
    "transformers_version": "4.57.0.dev0",
    "text_config": {
        "attention_bias": False, "attention_dropout": 0.0, "attn_output_gate": True,
        "dtype": "bfloat16", "eos_token_id": 248044, "full_attention_interval": 4,
        "head_dim": 256, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_num_key_heads": 16,
        "linear_num_value_heads": 32, "linear_value_head_dim": 128,
        "max_position_embeddings": 262144, "model_type": "qwen3_5_moe_text",
        "moe_intermediate_size": 512, "mtp_num_hidden_layers": 1,
        "mtp_use_dedicated_embeddings": False, "num_attention_heads": 16, "num_experts": 256,
        "num_experts_per_tok": 8, "num_hidden_layers": 40, "num_key_value_heads": 2,
        "output_router_logits": False, "partial_rotary_factor": 0.25, "rms_norm_eps": 1e-06,
        "rope_parameters": {"mrope_interleaved": True, "mrope_section": [11, 11, 10],
                            "rope_type": "default", "rope_theta": 10000000,
                            "partial_rotary_factor": 0.25},
        "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 512,
        "use_cache": True, "vocab_size": 248320,
    },
    "vision_config": {"depth": 27, "hidden_size": 1152, "model_type": "qwen3_5_moe",
                      "out_hidden_size": 2048, "patch_size": 16},
}  # fmt: skip
QWEN3_5_35B["text_config"]["layer_types"] *= 10


# allenai/OLMo-2-1124-7B, allenai/Olmo-3-1025-7B (legacy rope keys: YaRN reaches the full
# layers only), zai-org/GLM-4.5 (top-level partial_rotary_factor), typed from the files.
OLMO2_7B: dict[str, Any] = {
    "architectures": ["Olmo2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "olmo2", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 32, "pad_token_id": 100277, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 500000, "tie_word_embeddings": False,
    "torch_dtype": "float32", "transformers_version": "4.47.0.dev0", "use_cache": True,
    "vocab_size": 100352,
}  # fmt: skip
OLMO3_7B: dict[str, Any] = {
    "architectures": ["Olmo3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 11008,
    "layer_types": (["sliding_attention"] * 3 + ["full_attention"]) * 8,
    "max_position_embeddings": 65536, "model_type": "olmo3", "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 32, "pad_token_id": 100277,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"attention_factor": 1.2079441541679836, "beta_fast": 32, "beta_slow": 1,
                     "factor": 8.0, "original_max_position_embeddings": 8192,
                     "rope_type": "yarn"},
    "rope_theta": 500000, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": False, "vocab_size": 100278,
}  # fmt: skip
GLM45: dict[str, Any] = {
    "architectures": ["Glm4MoeForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "pad_token_id": 151329, "eos_token_id": [151329, 151336, 151338], "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 5120, "partial_rotary_factor": 0.5,
    "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 131072,
    "model_type": "glm4_moe", "moe_intermediate_size": 1536, "norm_topk_prob": True,
    "num_attention_heads": 96, "n_group": 1, "topk_group": 1, "n_routed_experts": 160,
    "n_shared_experts": 1, "routed_scaling_factor": 2.5, "num_experts_per_tok": 8,
    "first_k_dense_replace": 3, "num_hidden_layers": 92, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 1000000,
    "num_nextn_predict_layers": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.54.0", "use_cache": True, "use_qk_norm": True,
    "vocab_size": 151552,
}  # fmt: skip


# google/gemma-4-E2B-it, -E4B-it, -26B-A4B-it, -31B-it: the text_configs of the multimodal files
# (vision/audio towers left out). No single public copy of the files was at hand; each value is
# one that two or more independent public sources agree on: Ollama's library GGUF metadata
# (gemma4:e2b, gemma4:26b-a4b; community GGUFs of the e4b and 31b files), google/gemma.cpp PR
# #919 (E2B/E4B), NVIDIA Megatron-Bridge's Gemma 4 docs (E4B; 26B-A4B's experts, KV heads and
# keys-equal-values) and config.json transcriptions in public test code (vllm-metal, ModelTC/
# lightllm, MLX Go/Swift/Rust loaders), the 31B's 4 global KV heads and keys-equal-values
# among them.
_GEMMA4_ROPE = {
    "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0,
                       "rope_type": "proportional"},
    "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
}  # fmt: skip


def _gemma4_layers(n_layers: int, period: int) -> list[str]:
    return (["sliding_attention"] * (period - 1) + ["full_attention"]) * (n_layers // period)


GEMMA4_E2B: dict[str, Any] = {
    "architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
    "eos_token_id": [1, 106], "tie_word_embeddings": True,
    "text_config": {
        "model_type": "gemma4_text", "attention_bias": False, "attention_k_eq_v": False,
        "enable_moe_block": False, "final_logit_softcapping": 30.0, "global_head_dim": 512,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 1536,
        "hidden_size_per_layer_input": 256, "intermediate_size": 6144,
        "layer_types": _gemma4_layers(35, 5), "max_position_embeddings": 131072,
        "num_attention_heads": 8, "num_global_key_value_heads": None, "num_hidden_layers": 35,
        "num_key_value_heads": 1, "num_kv_shared_layers": 20, "rms_norm_eps": 1e-06,
        "rope_parameters": _GEMMA4_ROPE, "sliding_window": 512, "tie_word_embeddings": True,
        "use_double_wide_mlp": True, "vocab_size": 262144, "vocab_size_per_layer_input": 262144,
    },
}  # fmt: skip
GEMMA4_E4B: dict[str, Any] = {
    **GEMMA4_E2B, "text_config": {
        **GEMMA4_E2B["text_config"], "hidden_size": 2560, "intermediate_size": 10240,
        "layer_types": _gemma4_layers(42, 6), "num_hidden_layers": 42, "num_key_value_heads": 2,
        "num_kv_shared_layers": 18, "use_double_wide_mlp": False},
}  # fmt: skip
GEMMA4_26B_A4B: dict[str, Any] = {
    **GEMMA4_E2B, "text_config": {
        "model_type": "gemma4_text", "attention_bias": False, "attention_k_eq_v": True,
        "enable_moe_block": True, "final_logit_softcapping": 30.0, "global_head_dim": 512,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2816,
        "hidden_size_per_layer_input": 0, "intermediate_size": 2112,
        "layer_types": _gemma4_layers(30, 6), "max_position_embeddings": 262144,
        "moe_intermediate_size": 704, "num_attention_heads": 16, "num_experts": 128,
        "num_global_key_value_heads": 2, "num_hidden_layers": 30, "num_key_value_heads": 8,
        "num_kv_shared_layers": 0, "rms_norm_eps": 1e-06, "rope_parameters": _GEMMA4_ROPE,
        "sliding_window": 1024, "tie_word_embeddings": True, "top_k_experts": 8,
        "use_double_wide_mlp": False, "vocab_size": 262144,
    },
}  # fmt: skip
GEMMA4_31B: dict[str, Any] = {
    **GEMMA4_E2B, "text_config": {
        **{k: v for k, v in GEMMA4_26B_A4B["text_config"].items()
           if k not in ("num_experts", "top_k_experts", "moe_intermediate_size")},
        "enable_moe_block": False, "hidden_size": 5376, "intermediate_size": 21504,
        "layer_types": _gemma4_layers(60, 6), "num_attention_heads": 32,
        "num_global_key_value_heads": 4, "num_hidden_layers": 60, "num_key_value_heads": 16},
}  # fmt: skip


# meta-llama/Llama-4-Scout-17B-16E(-Instruct) and -Maverick-17B-128E(-Instruct): the text_configs
# (keys as in NVIDIA/TensorRT-LLM's Maverick test config; Scout's context and llama3 scaling as
# in several public test fixtures, aws-neuron's neuronx-distributed-inference among them).
LLAMA4_SCOUT: dict[str, Any] = {
    "architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4",
    "boi_token_index": 200080, "eoi_token_index": 200081, "image_token_index": 200092,
    "tie_word_embeddings": False, "transformers_version": "4.51.0.dev0",
    "text_config": {
        "model_type": "llama4_text", "attention_bias": False, "attention_chunk_size": 8192,
        "attention_dropout": 0.0, "attn_scale": 0.1, "attn_temperature_tuning": True,
        "bos_token_id": 200000, "eos_token_id": [200001, 200007, 200008], "floor_scale": 8192,
        "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
        "interleave_moe_layer_step": 1, "intermediate_size": 8192,
        "intermediate_size_mlp": 16384, "max_position_embeddings": 10485760,
        "num_attention_heads": 40, "num_experts_per_tok": 1, "num_hidden_layers": 48,
        "num_key_value_heads": 8, "num_local_experts": 16, "output_router_logits": False,
        "pad_token_id": 200018, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 16.0, "high_freq_factor": 1.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "router_aux_loss_coef": 0.001, "router_jitter_noise": 0.0,
        "torch_dtype": "bfloat16", "use_cache": True, "use_qk_norm": True, "vocab_size": 202048,
    },
}  # fmt: skip
LLAMA4_MAVERICK: dict[str, Any] = {
    **LLAMA4_SCOUT, "text_config": {
        **LLAMA4_SCOUT["text_config"], "interleave_moe_layer_step": 2,
        "max_position_embeddings": 1048576, "num_local_experts": 128, "rope_scaling": None,
        "use_qk_norm": False},
}  # fmt: skip


# openai/gpt-oss-20b and -120b (as copied into fine-tunes' files on the Hub and Ascend's slime
# recipe), HuggingFaceTB/SmolLM3-3B (as its fine-tunes' files and public transcriptions carry
# it: 64k context, RoPE base 5M, Qwen2's max_window_layers left over), zai-org/GLM-4.5-Air (as
# PrimeIntellect's INTELLECT-3 files, built on it, and the preset's sources carry it) and
# moonshotai/Kimi-K2-Instruct (as tiny-random Kimi K2 files and the Kimi K2.5/K2.6 text configs
# transcribed in public code agree). quantization_config (gpt-oss's mxfp4) is left out.
def _sliding_full(n_layers: int) -> list[str]:
    return ["sliding_attention", "full_attention"] * (n_layers // 2)


GPT_OSS_20B: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02,
    "intermediate_size": 2880, "layer_types": _sliding_full(24), "max_position_embeddings": 131072,
    "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4,
    "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32,
    "output_router_logits": False, "pad_token_id": 199999, "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "use_cache": True,
    "vocab_size": 201088,
}  # fmt: skip
GPT_OSS_120B: dict[str, Any] = {
    **GPT_OSS_20B, "layer_types": _sliding_full(36), "num_hidden_layers": 36,
    "num_local_experts": 128,
}  # fmt: skip
SMOLLM3: dict[str, Any] = {
    "architectures": ["SmolLM3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": None, "eos_token_id": 128012, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 11008, "layer_types": ["full_attention"] * 36,
    "max_position_embeddings": 65536, "max_window_layers": 28, "mlp_bias": False,
    "model_type": "smollm3", "no_rope_layer_interval": 4, "no_rope_layers": [1, 1, 1, 0] * 9,
    "num_attention_heads": 16, "num_hidden_layers": 36, "num_key_value_heads": 4,
    "pad_token_id": 128004, "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": None,
    "rope_theta": 5000000.0, "sliding_window": None, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_sliding_window": False, "vocab_size": 128256,
}  # fmt: skip
GLM45_AIR: dict[str, Any] = {  # GLM-4.5's file but for the sizes, the routing scale, QK-norm
    **GLM45, "hidden_size": 4096, "intermediate_size": 10944, "moe_intermediate_size": 1408,
    "n_routed_experts": 128, "routed_scaling_factor": 1.0, "first_k_dense_replace": 1,
    "num_hidden_layers": 46, "use_qk_norm": False,
}  # fmt: skip
KIMI_K2: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
        "AutoModel": "modeling_deepseek.DeepseekV3Model",
        "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "aux_loss_alpha": 0.001, "bos_token_id": 163584, "eos_token_id": 163585,
    "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 7168,
    "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
    "max_position_embeddings": 131072, "model_type": "kimi_k2", "moe_intermediate_size": 2048,
    "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 384, "n_shared_experts": 1,
    "norm_topk_prob": True, "num_attention_heads": 64, "num_experts_per_tok": 8,
    "num_hidden_layers": 61, "num_key_value_heads": 64, "num_nextn_predict_layers": 0,
    "pretraining_tp": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 1.0, "beta_slow": 1.0, "factor": 32.0, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                     "type": "yarn"},
    "rope_theta": 50000.0, "routed_scaling_factor": 2.827, "scoring_func": "sigmoid",
    "seq_aux": True, "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16", "use_cache": True,
    "v_head_dim": 128, "vocab_size": 163840,
}  # fmt: skip


# microsoft/phi-4 (the Hub file and its copies in GGUF repos agree), Phi-3-medium-4k-instruct
# (the 4k mini file's keys at the medium sizes, as public transcriptions of it carry them),
# allenai/OLMo-2-1124-13B (the 7B file's keys at the 13B sizes) and Qwen/Qwen3.5-397B-A17B
# (the 35B-A3B wrapper at the 397B sizes; NVIDIA Megatron-Bridge's and other public test
# fixtures agree on them, 1024-wide shared expert by two of three).
PHI4: dict[str, Any] = {
    "_name_or_path": "microsoft/phi-4", "architectures": ["Phi3ForCausalLM"],
    "attention_bias": False, "attention_dropout": 0.0, "auto_map": {}, "bos_token_id": 100257,
    "embd_pdrop": 0.0, "eos_token_id": 100257, "hidden_act": "silu", "hidden_size": 5120,
    "initializer_range": 0.02, "intermediate_size": 17920, "max_position_embeddings": 16384,
    "model_type": "phi3", "num_attention_heads": 40, "num_hidden_layers": 40,
    "num_key_value_heads": 10, "original_max_position_embeddings": 16384,
    "pad_token_id": 100257, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 250000, "sliding_window": None, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.47.0", "use_cache": True,
    "vocab_size": 100352,
}  # fmt: skip
PHI3_MEDIUM_4K: dict[str, Any] = {
    **PHI3_MINI_4K, "_name_or_path": "Phi-3-medium-4k-instruct", "hidden_size": 5120,
    "intermediate_size": 17920, "num_attention_heads": 40, "num_hidden_layers": 40,
    "num_key_value_heads": 10,
}  # fmt: skip
OLMO2_13B: dict[str, Any] = {
    **OLMO2_7B, "hidden_size": 5120, "intermediate_size": 13824, "num_attention_heads": 40,
    "num_hidden_layers": 40, "num_key_value_heads": 40, "transformers_version": "4.47.0",
}  # fmt: skip
QWEN3_5_397B: dict[str, Any] = {
    **QWEN3_5_35B, "text_config": {
        **QWEN3_5_35B["text_config"], "hidden_size": 4096, "num_hidden_layers": 60,
        "layer_types": (["linear_attention"] * 3 + ["full_attention"]) * 15,
        "num_attention_heads": 32, "linear_num_value_heads": 64, "num_experts": 512,
        "num_experts_per_tok": 10, "moe_intermediate_size": 1024,
        "shared_expert_intermediate_size": 1024},
}  # fmt: skip

def _architecture(cfg: gf.Config) -> gf.Config:
    """The config without its labels and token ids (published files differ there)."""
    return cfg.replace(name="x", eos_token_id=None, bos_token_id=None)


@pytest.mark.parametrize(
    "published, preset",
    [(GEMMA2_2B, "gemma-2-2b"), (GEMMA2_9B, "gemma-2-9b"), (GEMMA3_1B, "gemma-3-1b"),
     (GEMMA3_4B, "gemma-3-4b"), (GPT2, "gpt2"), (PHI3_MINI_4K, "phi-3-mini-4k"),
     (QWEN3_NEXT_80B, "qwen3-next-80b-a3b"), (QWEN3_5_35B, "qwen3.5-35b-a3b"),
     (OLMO2_7B, "olmo-2-7b"), (OLMO3_7B, "olmo-3-7b"), (GLM45, "glm-4.5"),
     (GEMMA4_E2B, "gemma-4-e2b"), (GEMMA4_E4B, "gemma-4-e4b"),
     (GEMMA4_26B_A4B, "gemma-4-26b-a4b"), (GEMMA4_31B, "gemma-4-31b"),
     (LLAMA4_SCOUT, "llama-4-scout-17b-16e"), (LLAMA4_MAVERICK, "llama-4-maverick-17b-128e"),
     (GPT_OSS_20B, "gpt-oss-20b"), (GPT_OSS_120B, "gpt-oss-120b"), (SMOLLM3, "smollm3-3b"),
     (GLM45_AIR, "glm-4.5-air"),
     # HF transformers has no kimi_k2 type; the file's auto_map reads it as DeepseekV3Config
     ({**{k: v for k, v in KIMI_K2.items() if k != "auto_map"}, "model_type": "deepseek_v3"},
      "kimi-k2"),
     (PHI4, "phi-4"), (PHI3_MEDIUM_4K, "phi-3-medium-4k"), (OLMO2_13B, "olmo-2-13b"),
     (QWEN3_5_397B, "qwen3.5-397b-a17b")],
)  # fmt: skip
def test_published_config_is_the_preset(tmp_path: Path, published: dict, preset: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(published))
    assert _architecture(gf.Config.from_hf(tmp_path)) == _architecture(get_preset(preset))


def test_gemma3_1b_kv_cache_from_the_published_file(tmp_path: Path) -> None:
    """22 of the 26 layers keep only their 512-key window; the other 4 keep all 32k keys."""
    (tmp_path / "config.json").write_text(json.dumps(GEMMA3_1B))
    a = analyze(gf.Config.from_hf(tmp_path), "decode", 1, 32768)
    assert a["sliding"]["sliding_layers"] == 22 and a["sliding"]["full_layers"] == 4
    per_key = 2 * 1 * 256 * 2  # K and V, one kv head of 256, bf16
    assert a["kv_cache_bytes"] == per_key * (22 * 512 + 4 * 32768)


def test_olmo3_legacy_rope_keys_reach_the_full_layers_only() -> None:
    """From rope_theta + rope_scaling, HF's Olmo3Config gives YaRN and rope_theta to the full
    layers and its default theta (500000) to the sliding ones, whatever rope_theta says."""
    published = {**OLMO3_7B, "rope_theta": 10000}
    cfg = gf.Config.from_hf(published)
    assert cfg.rope_theta == 10000 and cfg.rope_theta_local == 500000.0
    assert cfg.rope_scaling is not None and cfg.rope_scaling.type == "yarn"
    hf = transformers.AutoConfig.for_model(
        "olmo3", **{k: v for k, v in published.items() if k != "model_type"}
    )
    assert hf.rope_parameters["sliding_attention"]["rope_theta"] == cfg.rope_theta_local
    assert hf.rope_parameters["full_attention"]["rope_theta"] == cfg.rope_theta


def test_duplicate_keys_must_agree() -> None:
    with pytest.raises(ValueError, match=r"sliding_window_size.*disagrees.*sliding_window"):
        gf.Config.from_hf({**GEMMA2_9B, "sliding_window_size": 2048})
    with pytest.raises(ValueError, match=r"layer_types.*sliding_window_pattern"):
        gf.Config.from_hf(
            {**GEMMA3_1B, "layer_types": ["full_attention"] * 26, "sliding_window_pattern": 6}
        )


@pytest.mark.parametrize("spelling", ["longrope", "su", "yarn"])
def test_phi3_longrope_frequencies_are_hfs(spelling: str) -> None:
    """Phi-3's 128k files: LongRoPE, also spelled 'su' or 'yarn' (HF reads both as
    'longrope' for Phi-3). Both factor sets and the cos/sin scale equal HF's own."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from glassformer.components.rope import RotaryEmbedding

    config = {**PHI3_MINI_128K, "rope_scaling": {**PHI3_MINI_128K["rope_scaling"],
                                                 "type": spelling}}  # fmt: skip
    cfg = gf.Config.from_hf(config)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.type == "longrope"
    assert _architecture(cfg) == _architecture(get_preset("phi-3-mini-128k"))
    hf_config = transformers.AutoConfig.for_model(
        "phi3", **{k: v for k, v in config.items() if k != "model_type"}
    )
    ours = RotaryEmbedding(cfg.rope_dim, cfg.rope_theta, cfg.rope_scaling)
    short, scale = ROPE_INIT_FUNCTIONS["longrope"](hf_config, None)
    long, _ = ROPE_INIT_FUNCTIONS["longrope"](hf_config, None, seq_len=4097)
    assert torch.equal(ours.inv_freq, short) and torch.equal(ours.long_inv_freq, long)
    assert ours.attention_factor == scale == pytest.approx(1.1902380714238083)
    assert ours.switch_at == 4096


def test_phi3_longrope_refuses_what_hf_would_misread() -> None:
    scaling = PHI3_MINI_128K["rope_scaling"]
    with pytest.raises(ValueError, match=r"short_factor: has 47 factors.*rope_dim/2=48"):
        gf.Config.from_hf(
            {**PHI3_MINI_128K, "rope_scaling": {**scaling, "short_factor": [1.0] * 47}}
        )
    with pytest.raises(ValueError, match=r"'rope_parameters.long_factor' must be a list"):
        gf.Config.from_hf({**PHI3_MINI_128K, "rope_scaling": {**scaling, "long_factor": "x"}})
    with pytest.raises(ValueError, match=r"original_max_position_embeddings'=16.*disagrees"):
        gf.Config.from_hf(
            {**PHI3_MINI_128K, "rope_scaling": {**scaling, "original_max_position_embeddings": 16}}
        )


def test_phi3_longrope_decoding_is_hfs_generation() -> None:
    """Up to the original context (16 here) the short factors, past it the long ones: each
    cached step's logits equal HF's forward over the sequence so far, which is what HF's
    generate computes (it drops its cache where the factors switch)."""
    from tests.families import build_hf

    hf = build_hf("phi3-longrope")
    ours = gf.from_hf(hf).eval()
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cache = ours.new_cache(2, 24)
        got = [ours(ids[:, :10], cache)]
        got += [ours(ids[:, t : t + 1], cache) for t in range(10, 24)]
        for t in range(10, 24):
            want = hf(ids[:, : t + 1]).logits[:, -1]
            err = (got[t - 9][:, -1] - want).abs().max().item()
            assert err <= TOLERANCE, f"position {t}: {err:.3g}"
        assert (got[0] - hf(ids[:, :10]).logits).abs().max() <= TOLERANCE


def test_llama4_scout_equal_band_factors_are_hfs_step() -> None:
    """Scout's llama3 scaling has low_freq_factor == high_freq_factor: HF (which only warns)
    leaves no ramp, dividing the frequencies whose wavelength passes 8192 by 16 and keeping the
    rest. The frequencies equal HF's own, and they are a step, not NaN."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from glassformer.components.rope import RotaryEmbedding

    text = LLAMA4_SCOUT["text_config"]
    cfg = gf.Config.from_hf(LLAMA4_SCOUT)
    hf_config = transformers.AutoConfig.for_model(
        "llama4_text", **{k: v for k, v in text.items() if k != "model_type"}
    )
    ours = RotaryEmbedding(cfg.rope_dim, cfg.rope_theta, cfg.rope_scaling)
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_config, None)
    assert torch.equal(ours.inv_freq, want)
    plain = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.int64).float() / 128))
    long = 2 * torch.pi / plain > 8192
    assert 0 < int(long.sum()) < 64  # both sides of the step are present
    assert torch.equal(want[long], plain[long] / 16) and torch.equal(want[~long], plain[~long])


def test_llama3_rope_refuses_high_below_low() -> None:
    scaling = {**LLAMA4_SCOUT["text_config"]["rope_scaling"], "low_freq_factor": 2.0}
    with pytest.raises(ValueError, match=r"high_freq_factor: must be at least low_freq_factor"):
        gf.Config.from_hf({**LLAMA4_SCOUT["text_config"], "rope_scaling": scaling})


# Tiny versions of the published files: same keys, small sizes, windows shorter than SEQ.
_TINY_GEMMA = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=112, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
)  # fmt: skip
TINY_PUBLISHED = {
    "gemma2-9b-style": {**GEMMA2_9B, **_TINY_GEMMA, "num_hidden_layers": 4,
                        "sliding_window": 9, "sliding_window_size": 9,
                        "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0},
    "gemma3-1b-style": {**GEMMA3_1B, **_TINY_GEMMA, "num_hidden_layers": 7,
                        "sliding_window": 6},
    "gemma3-pattern-3": {**GEMMA3_1B, **_TINY_GEMMA, "num_hidden_layers": 5,
                         "sliding_window": 6, "sliding_window_pattern": 3},
    "phi3-mini-4k-style": {**PHI3_MINI_4K, "vocab_size": VOCAB, "hidden_size": 64,
                           "intermediate_size": 112, "num_hidden_layers": 2,
                           "num_attention_heads": 4, "num_key_value_heads": 4,
                           "sliding_window": 9, "pad_token_id": None, "eos_token_id": 2},
    "phi3-mini-128k-style": {**PHI3_MINI_128K, "vocab_size": VOCAB, "hidden_size": 64,
                             "intermediate_size": 112, "num_hidden_layers": 2,
                             "num_attention_heads": 4, "num_key_value_heads": 4,
                             "max_position_embeddings": 64,
                             "original_max_position_embeddings": 16, "sliding_window": 9,
                             "pad_token_id": None, "eos_token_id": 2,
                             "rope_scaling": {"type": "su", "short_factor": [1.1] * 8,
                                              "long_factor": [1.0, 2, 3, 4, 6, 8, 12, 16]}},
    "qwen3-next-80b-style": {**QWEN3_NEXT_80B, "vocab_size": VOCAB, "hidden_size": 64,
                             "intermediate_size": 112, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "head_dim": 16, "linear_key_head_dim": 8,
                             "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                             "linear_value_head_dim": 12, "num_experts": 6,
                             "num_experts_per_tok": 3, "moe_intermediate_size": 24,
                             "shared_expert_intermediate_size": 40, "bos_token_id": 1,
                             "eos_token_id": 2},
    "qwen3.5-35b-style": {**QWEN3_5_35B, "text_config": {
        **QWEN3_5_35B["text_config"], "vocab_size": VOCAB, "hidden_size": 64,
        "num_hidden_layers": 4, "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "num_attention_heads": 4, "head_dim": 16, "linear_key_head_dim": 8,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "linear_value_head_dim": 12,
        "num_experts": 6, "num_experts_per_tok": 3, "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 40, "eos_token_id": 2}},
    "olmo2-7b-style": {**OLMO2_7B, "vocab_size": VOCAB, "hidden_size": 64,
                       "intermediate_size": 112, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "num_key_value_heads": 2,
                       "pad_token_id": None, "eos_token_id": 2},
    "olmo3-7b-style": {**OLMO3_7B, "vocab_size": VOCAB, "hidden_size": 64,
                       "intermediate_size": 112, "num_hidden_layers": 4,
                       "num_attention_heads": 4, "num_key_value_heads": 4,
                       "layer_types": OLMO3_7B["layer_types"][:4], "sliding_window": 7,
                       "rope_theta": 10000, "max_position_embeddings": 256,
                       "rope_scaling": {**OLMO3_7B["rope_scaling"],
                                        "original_max_position_embeddings": 32},
                       "pad_token_id": None, "eos_token_id": 2},
    "glm45-style": {**GLM45, "vocab_size": VOCAB, "hidden_size": 64, "intermediate_size": 96,
                    "moe_intermediate_size": 24, "num_hidden_layers": 2, "head_dim": 16,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "n_routed_experts": 8,
                    "num_experts_per_tok": 3, "first_k_dense_replace": 1,
                    "pad_token_id": None, "eos_token_id": 2},
    "llama4-scout-style": {**LLAMA4_SCOUT["text_config"], "vocab_size": VOCAB,
                           "hidden_size": 64, "intermediate_size": 48,
                           "intermediate_size_mlp": 112, "num_hidden_layers": 4,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                           "num_local_experts": 4, "attention_chunk_size": 16,
                           "floor_scale": 8, "max_position_embeddings": 256,
                           "rope_scaling": {**LLAMA4_SCOUT["text_config"]["rope_scaling"],
                                            "original_max_position_embeddings": 16},
                           "rope_theta": 10000.0, "pad_token_id": None, "bos_token_id": 1,
                           "eos_token_id": 2},
    "smollm3-3b-style": {**SMOLLM3, "vocab_size": VOCAB, "hidden_size": 64,
                         "intermediate_size": 112, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 2,
                         "layer_types": ["full_attention"] * 4, "no_rope_layers": [1, 1, 1, 0],
                         "max_window_layers": 2, "pad_token_id": None, "eos_token_id": 2},
    "gpt2-legacy-flags": {**GPT2, "vocab_size": VOCAB, "n_embd": 48, "n_layer": 2,
                          "n_head": 4, "n_positions": 64, "n_ctx": 64},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY_PUBLISHED))
def test_from_hf_dir_with_published_config_matches_hf(tmp_path: Path, name: str) -> None:
    published = TINY_PUBLISHED[name]
    (tmp_path / "config.json").write_text(json.dumps(published))
    hf_config = transformers.AutoConfig.from_pretrained(tmp_path)  # HF reads the same file
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
    perturb(hf)
    hf.set_attn_implementation("eager")
    hf.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(published))  # not HF's rewrite of it
    ours = gf.from_hf(tmp_path).eval()
    if "layer_types" in hf_config.to_dict():
        kinds = tuple(k.split("_")[0] for k in hf_config.layer_types)
        assert tuple(ours.config.layer_type(i) for i in range(ours.config.n_layers)) == kinds
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    for impl in ("native", "sdpa", "eager"):
        ours.set_attention_impl(impl)
        with torch.no_grad():
            err = (ours(ids) - hf(ids).logits).abs().max().item()
        assert err <= TOLERANCE, f"{name} ({impl}): max abs logit error {err:.3g}"
