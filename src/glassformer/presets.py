"""Published architectures by name, plus tiny variants of each family for tests.

A preset is plain data: the HF family (`family`, a key of `glassformer.families.FAMILIES`,
whose fixed traits it gets) and the Config fields of one published checkpoint, as in its
`config.json`. Tests hold each full-size preset to HF transformers' parameter count on the meta
device. `tiny` is the project-wide smoke-test model: a Llama-style network of about one million
parameters.
"""

from __future__ import annotations

import difflib
from typing import Any

from glassformer.config import Config
from glassformer.families import get_family

# fmt: off
_GPT2 = dict(
    family="gpt2", vocab_size=50257, max_seq_len=1024, norm_eps=1e-5, activation="gelu_tanh",
    tie_embeddings=True, bos_token_id=50256, eos_token_id=50256,
)
_LLAMA3 = dict(
    family="llama", vocab_size=128256, rope_theta=500000.0, max_seq_len=8192, norm_eps=1e-5,
    bos_token_id=128000, eos_token_id=128001,
)
_LLAMA31 = dict(
    _LLAMA3, max_seq_len=131072,
    rope_scaling=dict(type="llama3", factor=8.0, original_max_seq_len=8192, low_freq_factor=1.0,
                      high_freq_factor=4.0),
)
# Mistral 7B's shape, which Mixtral 8x7B keeps for its attention and each expert
_MISTRAL = dict(
    vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336,
    max_seq_len=32768, norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
)
_QWEN25 = dict(
    family="qwen2", rope_theta=1000000.0, norm_eps=1e-6, bos_token_id=151643,
    eos_token_id=151643,
)
_QWEN3 = dict(
    family="qwen3", vocab_size=151936, head_dim=128, rope_theta=1000000.0, norm_eps=1e-6,
    max_seq_len=40960, eos_token_id=151645,
)
_GEMMA = dict(
    head_dim=256, query_pre_attn_scalar=256, norm_eps=1e-6, activation="gelu_tanh",
    tie_embeddings=True, bos_token_id=2, eos_token_id=1,
)
_GEMMA2 = dict(
    _GEMMA, family="gemma2", vocab_size=256000, attn_logit_softcap=50.0,
    final_logit_softcap=30.0, sliding_window=4096, max_seq_len=8192,
)
_GEMMA3 = dict(
    _GEMMA, family="gemma3_text", vocab_size=262144, rope_theta=1000000.0,
    rope_theta_local=10000.0, sliding_window=512, max_seq_len=32768,
)
_OLMO2 = dict(
    family="olmo2", vocab_size=100352, rope_theta=500000.0, max_seq_len=4096, norm_eps=1e-6,
    eos_token_id=100257,
)
# YaRN on the full-attention layers only; the sliding ones keep plain RoPE at the same base
_OLMO3 = dict(
    family="olmo3", vocab_size=100278, rope_theta=500000.0, rope_theta_local=500000.0,
    max_seq_len=65536, norm_eps=1e-6, sliding_window=4096, eos_token_id=100257,
    rope_scaling=dict(type="yarn", factor=8.0, original_max_seq_len=8192, beta_fast=32.0,
                      beta_slow=1.0, attention_factor=1.2079441541679836),
)
_GLM45 = dict(
    family="glm4_moe", vocab_size=151552, n_heads=96, n_kv_heads=8, head_dim=128,
    max_seq_len=131072, rope_theta=1000000.0, rope_fraction=0.5, qkv_bias=True,
    n_experts_per_token=8, n_shared_experts=1, router_norm_topk=True, n_mtp_modules=1,
    eos_token_id=(151329, 151336, 151338),
)
# openai/gpt-oss-20b and -120b: the same layer, 24 layers of 32 experts or 36 of 128
_GPT_OSS = dict(
    family="gpt_oss", vocab_size=201088, d_model=2880, n_heads=64, n_kv_heads=8, head_dim=64,
    d_ff=2880, moe_d_ff=2880, max_seq_len=131072, norm_eps=1e-5, rope_theta=150000.0,
    rope_scaling=dict(type="yarn", factor=32.0, original_max_seq_len=4096, beta_fast=32.0,
                      beta_slow=1.0, truncate=False),
    sliding_window=128, n_experts_per_token=4, qkv_bias=True, attn_out_bias=True,
    glu_alpha=1.702, glu_limit=7.0, eos_token_id=200002,
)
# Llama 4 text models (Meta 2025), as published (meta-llama/Llama-4-Scout-17B-16E and
# -Maverick-17B-128E text_configs, agreed by NVIDIA/TensorRT-LLM's Maverick test config, the
# Scout configs in aws-neuron's neuronx-distributed-inference tests and in public MLX/Rust and
# vLLM-plugin test fixtures): every 4th layer NoPE and global, the others chunked (8192
# positions) with RoPE. Scout: 10M context, llama3 RoPE scaling with equal band factors (a
# step: wavelengths past 8192 divided by 16), q/k L2 norm; Maverick: 1M context, no scaling, no
# q/k norm, 128 experts on every second layer.
_LLAMA4 = dict(
    family="llama4_text", vocab_size=202048, d_model=5120, n_layers=48, n_heads=40,
    n_kv_heads=8, head_dim=128, d_ff=16384, moe_d_ff=8192, n_experts_per_token=1,
    rope_theta=500000.0, norm_eps=1e-5, attention_chunk_size=8192,
    nope_layers=tuple(range(3, 48, 4)),
    layer_types=tuple("full" if (i + 1) % 4 == 0 else "chunked" for i in range(48)),
    attn_temperature_floor=8192, attn_temperature_scale=0.1, bos_token_id=200000,
    eos_token_id=(200001, 200007, 200008),
)
# Gemma 4 (Gemma Team 2026), text models. Values from the published text_configs, each agreed
# by two or more independent public sources: Ollama's library GGUF metadata (gemma4:e2b,
# gemma4:26b-a4b; the e4b and 31b sizes from community GGUFs of the same files), google/gemma.cpp
# PR #919 (E2B/E4B layer counts, widths, SWA patterns, E2B's 6144/12288 FFN), NVIDIA
# Megatron-Bridge's Gemma 4 recipe and provider docs (E4B's 42 x 2560, 2 KV heads, 18 shared
# KV layers, PLE 262144 x 256; 26B-A4B's 128 experts top-8, 8 / 2 KV heads, keys-equal-values),
# and config.json transcriptions in public test code (vllm-metal's 26B/31B KV geometry: 8 and
# 2, 16 and 4 global KV heads; ModelTC/lightllm's 31B and E4B layouts; mlx Go/Swift/Rust
# loaders' E2B/E4B/26B/31B text_configs). Sliding layers: 256-wide heads, RoPE base 10k; full
# layers: 512-wide heads, proportional RoPE over a quarter of each head at base 1M.
_GEMMA4 = dict(
    family="gemma4_text", vocab_size=262144, head_dim=256, global_head_dim=512,
    rope_theta=1000000.0, rope_theta_local=10000.0,
    rope_scaling=dict(type="proportional", factor=1.0, proportion=0.25), norm_eps=1e-6,
    activation="gelu_tanh", final_logit_softcap=30.0, tie_embeddings=True, bos_token_id=2,
    eos_token_id=1,
)
# E2B / E4B: per-layer input embeddings (256 per layer) and KV sharing over the last layers
_GEMMA4_E = dict(
    _GEMMA4, max_seq_len=131072, sliding_window=512, per_layer_dim=256,
    per_layer_vocab_size=262144,
)
# 26B-A4B / 31B: 1024-token windows, keys-equal-values on the full layers, no per-layer inputs
_GEMMA4_L = dict(
    _GEMMA4, max_seq_len=262144, sliding_window=1024, global_k_eq_v=True, per_layer_dim=0,
    per_layer_vocab_size=262144,
)


_PHI3_MINI = dict(
    family="phi3", vocab_size=32064, d_model=3072, n_layers=32, n_heads=32, d_ff=8192,
    max_seq_len=4096, sliding_window=2047, norm_eps=1e-5, bos_token_id=1, eos_token_id=32000,
)
# LongRoPE factors of the Phi-3 128k files (one per rotated frequency, head_dim 96 -> 48)
_PHI3_128K_SHORT = (
    1.05, 1.05, 1.05, 1.1, 1.1, 1.1, 1.2500000000000002, 1.2500000000000002, 1.4000000000000004,
    1.4500000000000004, 1.5500000000000005, 1.8500000000000008, 1.9000000000000008,
    *[2.000000000000001] * 19, 2.1000000000000005, 2.1000000000000005, 2.2,
    *[2.3499999999999996] * 4, 2.3999999999999995, 2.3999999999999995, 2.6499999999999986,
    2.6999999999999984, 2.8999999999999977, 2.9499999999999975, *[3.049999999999997] * 3,
)
_PHI3_128K_LONG = (
    1.0299999713897705, 1.0499999523162842, 1.0499999523162842, 1.0799999237060547,
    1.2299998998641968, 1.2299998998641968, 1.2999999523162842, 1.4499999284744263,
    1.5999999046325684, 1.6499998569488525, 1.8999998569488525, 2.859999895095825,
    3.68999981880188, 5.419999599456787, 5.489999771118164, 5.489999771118164,
    9.09000015258789, 11.579999923706055, 15.65999984741211, 15.769999504089355,
    15.789999961853027, 18.360000610351562, 21.989999771118164, 23.079999923706055,
    30.009998321533203, 32.35000228881836, 32.590003967285156, 35.56000518798828,
    39.95000457763672, 53.840003967285156, 56.20000457763672, 57.95000457763672,
    59.29000473022461, 59.77000427246094, 59.920005798339844, 61.190006256103516,
    61.96000671386719, 62.50000762939453, 63.3700065612793, 63.48000717163086,
    63.48000717163086, 63.66000747680664, 63.850006103515625, 64.08000946044922,
    64.760009765625, 64.80001068115234, 64.81001281738281, 64.81001281738281,
)


def _hybrid(n_layers: int, period: int = 4) -> tuple[str, ...]:
    """Qwen3-Next / Qwen3.5 layout: every `period`-th layer full attention, the rest linear."""
    return tuple("full" if (i + 1) % period == 0 else "linear" for i in range(n_layers))


# Qwen3-Next and Qwen3.5: Gated DeltaNet layers with 128-wide heads and a 4-tap convolution,
# gated attention with 256-wide heads (a quarter of them rotated), 256k context.
_QWEN_HYBRID = dict(
    head_dim=256, rope_fraction=0.25, norm_eps=1e-6, max_seq_len=262144, linear_n_k_heads=16,
    linear_k_head_dim=128, linear_v_head_dim=128, linear_conv_kernel=4,
)
_QWEN35 = dict(_QWEN_HYBRID, vocab_size=248320, rope_theta=10000000.0)
_TINY = dict(
    family="llama", vocab_size=2048, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=384,
    max_seq_len=512, tie_embeddings=True,
)

PRESETS: dict[str, dict[str, Any]] = {
    # --- GPT-2 (Radford et al. 2019) ----------------------------------------------------------
    "gpt2": dict(_GPT2, d_model=768, n_layers=12, n_heads=12),
    "gpt2-medium": dict(_GPT2, d_model=1024, n_layers=24, n_heads=16),
    "gpt2-large": dict(_GPT2, d_model=1280, n_layers=36, n_heads=20),
    "gpt2-xl": dict(_GPT2, d_model=1600, n_layers=48, n_heads=25),
    # --- Llama ----------------------------------------------------------------------------------
    "llama-2-7b": dict(
        family="llama", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
        max_seq_len=4096, norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
    ),
    "llama-3-8b": dict(_LLAMA3, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336),
    "llama-3.1-8b": dict(
        _LLAMA31, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336
    ),
    "llama-3.1-70b": dict(
        _LLAMA31, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672
    ),
    "llama-3.2-1b": dict(
        _LLAMA31, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192, head_dim=64,
        tie_embeddings=True, rope_scaling=dict(_LLAMA31["rope_scaling"], factor=32.0),
    ),
    "smollm2-135m": dict(
        family="llama", vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
        d_ff=1536, rope_theta=100000.0, max_seq_len=8192, norm_eps=1e-5, tie_embeddings=True,
        bos_token_id=1, eos_token_id=2,
    ),
    # --- Mistral / Mixtral ------------------------------------------------------------------------
    "mistral-7b": dict(_MISTRAL, family="mistral", sliding_window=4096),
    "mixtral-8x7b": dict(
        _MISTRAL, family="mixtral", rope_theta=1000000.0, n_experts=8, n_experts_per_token=2,
        moe_d_ff=14336,
    ),
    # --- Qwen -------------------------------------------------------------------------------------
    "qwen2.5-0.5b": dict(
        _QWEN25, vocab_size=151936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2,
        d_ff=4864, max_seq_len=32768, tie_embeddings=True,
    ),
    "qwen2.5-7b": dict(
        _QWEN25, vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
        d_ff=18944, max_seq_len=131072,
    ),
    "qwen3-0.6b": dict(
        _QWEN3, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8, d_ff=3072,
        tie_embeddings=True,
    ),
    "qwen3-8b": dict(_QWEN3, d_model=4096, n_layers=36, n_heads=32, n_kv_heads=8, d_ff=12288),
    "qwen3-30b-a3b": dict(
        _QWEN3, family="qwen3_moe", d_model=2048, n_layers=48, n_heads=32, n_kv_heads=4,
        d_ff=6144, n_experts=128, n_experts_per_token=8, moe_d_ff=768, router_norm_topk=True,
    ),
    "qwen3-next-80b-a3b": dict(
        _QWEN_HYBRID, family="qwen3_next", vocab_size=151936, d_model=2048, n_layers=48,
        layer_types=_hybrid(48), n_heads=16, n_kv_heads=2, d_ff=5120, rope_theta=5000000.0,
        linear_n_v_heads=32, n_experts=512, n_experts_per_token=10, moe_d_ff=512,
        shared_expert_d_ff=512, router_norm_topk=True, bos_token_id=151643,
        eos_token_id=151645,
    ),
    "qwen3.5-27b": dict(
        _QWEN35, family="qwen3_5_text", d_model=5120, n_layers=64, layer_types=_hybrid(64),
        n_heads=24, n_kv_heads=4, d_ff=17408, linear_n_v_heads=48,
    ),
    "qwen3.5-35b-a3b": dict(
        _QWEN35, family="qwen3_5_moe_text", d_model=2048, n_layers=40, layer_types=_hybrid(40),
        n_heads=16, n_kv_heads=2, linear_n_v_heads=32, n_experts=256, n_experts_per_token=8,
        moe_d_ff=512, shared_expert_d_ff=512,
    ),
    "qwen3.5-397b-a17b": dict(
        _QWEN35, family="qwen3_5_moe_text", d_model=4096, n_layers=60, layer_types=_hybrid(60),
        n_heads=32, n_kv_heads=2, linear_n_v_heads=64, n_experts=512, n_experts_per_token=10,
        moe_d_ff=1024, shared_expert_d_ff=1024,
    ),
    # --- Gemma (layer_types: the family's pattern, Gemma 2 alternating, Gemma 3 5 local : 1) ----
    "gemma-2-2b": dict(_GEMMA2, d_model=2304, n_layers=26, n_heads=8, n_kv_heads=4, d_ff=9216),
    "gemma-2-9b": dict(_GEMMA2, d_model=3584, n_layers=42, n_heads=16, n_kv_heads=8, d_ff=14336),
    "gemma-3-270m": dict(_GEMMA3, d_model=640, n_layers=18, n_heads=4, n_kv_heads=1, d_ff=2048),
    "gemma-3-1b": dict(_GEMMA3, d_model=1152, n_layers=26, n_heads=4, n_kv_heads=1, d_ff=6912),
    "gemma-3-4b": dict(
        _GEMMA3, vocab_size=262208, d_model=2560, n_layers=34, n_heads=8, n_kv_heads=4,
        d_ff=10240, sliding_window=1024, max_seq_len=131072,
        rope_scaling=dict(type="linear", factor=8.0),
    ),
    # Gemma 3 12B's text model (its image path is a SigLIP tower: the explorer's `compare
    # --image` costs it beside Gemma 4 12B's encoder-free one)
    "gemma-3-12b": dict(
        _GEMMA3, vocab_size=262208, d_model=3840, n_layers=48, n_heads=16, n_kv_heads=8,
        d_ff=15360, sliding_window=1024, max_seq_len=131072,
        rope_scaling=dict(type="linear", factor=8.0),
    ),
    # --- Gemma 4 (text models; E2B's layers 4 sliding : 1 full, the others the family's 5 : 1) -
    "gemma-4-e2b": dict(
        _GEMMA4_E, d_model=1536, n_layers=35,
        layer_types=get_family("gemma4_text").layer_types(35, period=5), n_heads=8,
        n_kv_heads=1, d_ff=6144, n_kv_shared_layers=20, double_wide_mlp=True,
    ),
    "gemma-4-e4b": dict(
        _GEMMA4_E, d_model=2560, n_layers=42, n_heads=8,
        n_kv_heads=2, d_ff=10240, n_kv_shared_layers=18,
    ),
    "gemma-4-26b-a4b": dict(
        _GEMMA4_L, d_model=2816, n_layers=30, n_heads=16,
        n_kv_heads=8, global_n_kv_heads=2, d_ff=2112, moe_beside_mlp=True, n_experts=128,
        n_experts_per_token=8, moe_d_ff=704,
    ),
    "gemma-4-31b": dict(
        _GEMMA4_L, d_model=5376, n_layers=60, n_heads=32,
        n_kv_heads=16, global_n_kv_heads=4, d_ff=21504,
    ),
    # Gemma 4 12B unified: the encoder-free multimodal model (48 x 3840, 16 heads, 8 / 1 KV
    # heads, keys-equal-values on the full layers; raw 48-pixel patches and 640-sample audio
    # frames projected into the decoder). Text and vision values from a config.json
    # transcription in public test code (an MLX Swift port's gemma4Unified12BConfigDecode), its
    # layer count, width, window and vocabulary agreeing with the model card; the 11.95B total
    # of the card is what HF counts for this config (tests/core/test_presets.py).
    "gemma-4-12b": dict(
        _GEMMA4_L, family="gemma4_unified_text", d_model=3840, n_layers=48, n_heads=16,
        n_kv_heads=8, global_n_kv_heads=1, d_ff=15360, per_layer_vocab_size=0,
        vision_patch_size=16, vision_pool=3, vision_embed_dim=3840, vision_posemb_size=1120,
        audio_frame_size=640, image_token_id=258880, audio_token_id=258881,
        video_token_id=258884, boi_token_id=255999, eoi_token_id=258882, boa_token_id=256000,
        eoa_token_id=258883, image_bidirectional="sliding",
    ),
    # --- DeepSeek-V3 (MLA + DeepSeekMoE + MTP) ------------------------------------------------
    "deepseek-v3": dict(
        family="deepseek_v3", vocab_size=129280, d_model=7168, n_layers=61, n_heads=128,
        n_kv_heads=128, d_ff=18432, max_seq_len=163840, norm_eps=1e-6, q_lora_rank=1536,
        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        rope_interleaved=True,
        rope_scaling=dict(
            type="yarn", factor=40.0, original_max_seq_len=4096, beta_fast=32.0, beta_slow=1.0,
            mscale=1.0, mscale_all_dim=1.0,
        ),
        n_experts=256, n_experts_per_token=8, n_shared_experts=1, moe_d_ff=2048,
        router_norm_topk=True, router_n_groups=8, router_topk_groups=4, routed_scaling=2.5,
        first_k_dense=3, n_mtp_modules=1, bos_token_id=0, eos_token_id=1,
    ),
    # Kimi K2 (Moonshot AI 2025): DeepSeek-V3's architecture (HF model_type kimi_k2 runs
    # DeepseekV3ForCausalLM) with 384 experts, 64 heads, one dense layer, no MTP layer
    "kimi-k2": dict(
        family="deepseek_v3", vocab_size=163840, d_model=7168, n_layers=61, n_heads=64,
        n_kv_heads=64, d_ff=18432, max_seq_len=131072, norm_eps=1e-6, rope_theta=50000.0,
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, rope_interleaved=True,
        rope_scaling=dict(
            type="yarn", factor=32.0, original_max_seq_len=4096, beta_fast=1.0, beta_slow=1.0,
            mscale=1.0, mscale_all_dim=1.0,
        ),
        n_experts=384, n_experts_per_token=8, n_shared_experts=1, moe_d_ff=2048,
        router_norm_topk=True, router_n_groups=1, router_topk_groups=1, routed_scaling=2.827,
        first_k_dense=1, n_mtp_modules=0, bos_token_id=163584, eos_token_id=163585,
    ),
    # --- gpt-oss (OpenAI 2025) -------------------------------------------------------------------
    "gpt-oss-20b": dict(_GPT_OSS, n_layers=24, n_experts=32),
    "gpt-oss-120b": dict(_GPT_OSS, n_layers=36, n_experts=128),
    # --- Phi-3 ------------------------------------------------------------------------------------
    "phi-3-mini-4k": dict(_PHI3_MINI),
    "phi-3-mini-128k": dict(
        _PHI3_MINI, max_seq_len=131072, sliding_window=262144,
        rope_scaling=dict(type="longrope", factor=32.0, original_max_seq_len=4096,
                          short_factor=_PHI3_128K_SHORT, long_factor=_PHI3_128K_LONG),
    ),
    "phi-3-medium-4k": dict(
        family="phi3", vocab_size=32064, d_model=5120, n_layers=40, n_heads=40, n_kv_heads=10,
        d_ff=17920, max_seq_len=4096, sliding_window=2047, norm_eps=1e-5, bos_token_id=1,
        eos_token_id=32000,
    ),
    "phi-4": dict(
        family="phi3", vocab_size=100352, d_model=5120, n_layers=40, n_heads=40, n_kv_heads=10,
        d_ff=17920, max_seq_len=16384, rope_theta=250000.0, norm_eps=1e-5,
        bos_token_id=100257, eos_token_id=100257,
    ),
    # --- OLMo 2 / OLMo 3 (Ai2; output norms, whole-projection QK-norm) --------------------------
    "olmo-2-7b": dict(_OLMO2, d_model=4096, n_layers=32, n_heads=32, d_ff=11008),
    "olmo-2-13b": dict(_OLMO2, d_model=5120, n_layers=40, n_heads=40, d_ff=13824),
    "olmo-3-7b": dict(_OLMO3, d_model=4096, n_layers=32, n_heads=32, d_ff=11008),
    "olmo-3-32b": dict(_OLMO3, d_model=5120, n_layers=64, n_heads=40, n_kv_heads=8, d_ff=27648),
    # --- GLM-4.5 (Zhipu AI; partial rotary, DeepSeek-style MoE) --------------------------------
    "glm-4.5": dict(
        _GLM45, d_model=5120, n_layers=92, d_ff=12288, moe_d_ff=1536, n_experts=160,
        first_k_dense=3, routed_scaling=2.5, qk_norm=True,
    ),
    "glm-4.5-air": dict(
        _GLM45, d_model=4096, n_layers=46, d_ff=10944, moe_d_ff=1408, n_experts=128,
        first_k_dense=1, routed_scaling=1.0,
    ),
    # --- Llama 4 (Meta 2025; text model) and SmolLM3 (Hugging Face 2025) ----------------------
    "llama-4-scout-17b-16e": dict(
        _LLAMA4, n_experts=16, qk_l2_norm=True, max_seq_len=10485760,
        rope_scaling=dict(type="llama3", factor=16.0, original_max_seq_len=8192,
                          low_freq_factor=1.0, high_freq_factor=1.0),
    ),
    "llama-4-maverick-17b-128e": dict(
        _LLAMA4, n_experts=128, moe_layer_step=2, max_seq_len=1048576
    ),
    # HuggingFaceTB/SmolLM3-3B as published (64k context, RoPE base 5M, eos 128012; agreed by
    # configs of its fine-tunes on the Hub and public config transcriptions): every 4th layer NoPE
    "smollm3-3b": dict(
        family="smollm3", vocab_size=128256, d_model=2048, n_layers=36, n_heads=16, n_kv_heads=4,
        d_ff=11008, max_seq_len=65536, rope_theta=5000000.0, norm_eps=1e-6, tie_embeddings=True,
        nope_layers=tuple(range(3, 36, 4)), bos_token_id=128000, eos_token_id=128012,
    ),
    # --- tiny variants (tests, smoke runs) ------------------------------------------------------
    "tiny": dict(_TINY),
    "tiny-gpt2": dict(_GPT2, d_model=128, n_layers=4, n_heads=4, vocab_size=2048, max_seq_len=512),
    "tiny-qwen3": dict(_TINY, family="qwen3", head_dim=48),
    "tiny-gemma3": dict(
        _TINY, family="gemma3_text", n_layers=6, head_dim=64, query_pre_attn_scalar=64,
        activation="gelu_tanh", sliding_window=32, rope_theta=1000000.0, rope_theta_local=10000.0,
    ),
    "tiny-mixtral": dict(
        _TINY, family="mixtral", tie_embeddings=False, n_experts=4, n_experts_per_token=2,
        d_ff=192, moe_d_ff=192,
    ),
    # A small encoder-free vision-language model (Gemma 4 unified layout) for training from
    # scratch on synthetic picture questions (`train --task vlm`, training/vlm.py): 64 x 64
    # pictures in 16 x 16-pixel patches, one soft token each; the vocabulary is the task's.
    "tiny-vlm": dict(
        _GEMMA4, family="gemma4_unified_text", vocab_size=64, d_model=128, n_layers=4,
        n_heads=4, n_kv_heads=2, head_dim=16, global_head_dim=16, d_ff=512, max_seq_len=128,
        sliding_window=64, bos_token_id=1, eos_token_id=2,
        layer_types=("sliding", "sliding", "sliding", "full"), vision_patch_size=16,
        vision_pool=1, vision_embed_dim=64, vision_posemb_size=16, image_token_id=3,
        mm_pad_token_id=0, image_bidirectional="sliding",
        # Trained from scratch, weights at about 1/sqrt(d_model): at 0.02 the sandwich norms'
        # unit-RMS branches dwarf the embeddings and the picture questions learn far slower
        init_std=0.125,
    ),
    "tiny-deepseek-v3": dict(
        _TINY, family="deepseek_v3", tie_embeddings=False, n_kv_heads=4, q_lora_rank=64,
        kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        rope_interleaved=True, n_experts=8, n_experts_per_token=2, n_shared_experts=1,
        moe_d_ff=96, router_n_groups=4, router_topk_groups=2, routed_scaling=2.5,
        first_k_dense=1, n_mtp_modules=1,
    ),
}
# fmt: on


def preset_config(name: str, spec: dict[str, Any]) -> Config:
    """A Config from preset data: the family's traits, then the preset's own fields; a family
    whose layers follow a pattern (Gemma) gets HF's pattern unless the preset gives one."""
    fields = dict(spec)
    family = get_family(fields.pop("family"), f"preset {name!r}: family")
    fields = {**family.traits, "name": name, "hf_model_type": family.model_type, **fields}
    if family.sliding == "pattern" and "layer_types" not in fields:
        fields["layer_types"] = family.layer_types(fields["n_layers"])
    return Config(**fields)


def get_preset(name: str, **overrides: Any) -> Config:
    key = name.lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, PRESETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint} (see `glassformer presets`)")
    cfg = preset_config(key, PRESETS[key])
    return cfg.replace(**overrides) if overrides else cfg
