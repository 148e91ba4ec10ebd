"""Published architectures by name, plus tiny variants of each family for tests.

The full-size presets are the shapes of the published checkpoints (from their `config.json`);
tests hold each one to HF transformers' parameter count on the meta device. `tiny` is the
project-wide smoke-test model: a Llama-style network of about one million parameters.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glassformer.config import Config, RopeScaling

LLAMA3_ROPE = dict(type="llama3", low_freq_factor=1.0, high_freq_factor=4.0)


def _gpt2(name: str, d: int, layers: int, heads: int) -> Config:
    return Config(
        name=name,
        hf_model_type="gpt2",
        vocab_size=50257,
        d_model=d,
        n_layers=layers,
        n_heads=heads,
        d_ff=4 * d,
        max_seq_len=1024,
        position="learned",
        norm="layernorm",
        norm_bias=True,
        norm_eps=1e-5,
        qkv_bias=True,
        attn_out_bias=True,
        mlp="mlp",
        mlp_bias=True,
        activation="gelu_tanh",
        tie_embeddings=True,
        bos_token_id=50256,
        eos_token_id=50256,
    )


def _llama(name: str, **kw: Any) -> Config:
    base: dict[str, Any] = dict(
        name=name, hf_model_type="llama", norm_eps=1e-5, mlp="glu", activation="silu"
    )
    base.update(kw)
    return Config(**base)


def _llama3(name: str, scale: float | None = None, **kw: Any) -> Config:
    rope = None
    if scale is not None:
        rope = RopeScaling(factor=scale, original_max_seq_len=8192, **LLAMA3_ROPE)
    return _llama(
        name,
        vocab_size=128256,
        rope_theta=500000.0,
        rope_scaling=rope,
        max_seq_len=131072 if scale else 8192,
        bos_token_id=128000,
        eos_token_id=128001,
        **kw,
    )


def _qwen3(name: str, **kw: Any) -> Config:
    base: dict[str, Any] = dict(
        name=name,
        hf_model_type="qwen3",
        vocab_size=151936,
        head_dim=128,
        qk_norm=True,
        rope_theta=1000000.0,
        norm_eps=1e-6,
        max_seq_len=40960,
        eos_token_id=151645,
    )
    base.update(kw)
    return Config(**base)


def _gemma(name: str, version: int, n_layers: int, sliding_every: int, **kw: Any) -> Config:
    """Gemma 2 alternates local/global layers; Gemma 3 has five local layers per global one."""
    layer_types = tuple(
        "full" if (i + 1) % sliding_every == 0 else "sliding" for i in range(n_layers)
    )
    base: dict[str, Any] = dict(
        name=name,
        hf_model_type="gemma2" if version == 2 else "gemma3_text",
        n_layers=n_layers,
        head_dim=256,
        query_pre_attn_scalar=256,
        norm_eps=1e-6,
        norm_unit_offset=True,
        norm_placement="sandwich",
        embed_scale=True,
        activation="gelu_tanh",
        tie_embeddings=True,
        layer_types=layer_types,
        qk_norm=version == 3,
        bos_token_id=2,
        eos_token_id=1,
    )
    if version == 2:
        base.update(
            vocab_size=256000,
            attn_logit_softcap=50.0,
            final_logit_softcap=30.0,
            sliding_window=4096,
            max_seq_len=8192,
        )
    else:
        base.update(
            vocab_size=262144,
            rope_theta=1000000.0,
            rope_theta_local=10000.0,
            sliding_window=512,
            max_seq_len=32768,
        )
    base.update(kw)
    return Config(**base)


def _tiny(name: str, **kw: Any) -> Config:
    base: dict[str, Any] = dict(
        name=name,
        vocab_size=2048,
        d_model=128,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        d_ff=384,
        max_seq_len=512,
        tie_embeddings=True,
        hf_model_type="llama",
    )
    base.update(kw)
    return Config(**base)


# fmt: off
PRESETS: dict[str, Callable[[], Config]] = {
    # --- GPT-2 (Radford et al. 2019) ----------------------------------------------------------
    "gpt2": lambda: _gpt2("gpt2", 768, 12, 12),
    "gpt2-medium": lambda: _gpt2("gpt2-medium", 1024, 24, 16),
    "gpt2-large": lambda: _gpt2("gpt2-large", 1280, 36, 20),
    "gpt2-xl": lambda: _gpt2("gpt2-xl", 1600, 48, 25),
    # --- Llama ----------------------------------------------------------------------------------
    "llama-2-7b": lambda: _llama(
        "llama-2-7b", vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, d_ff=11008,
        max_seq_len=4096, bos_token_id=1, eos_token_id=2,
    ),
    "llama-3-8b": lambda: _llama3(
        "llama-3-8b", d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336
    ),
    "llama-3.1-8b": lambda: _llama3(
        "llama-3.1-8b", 8.0, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336
    ),
    "llama-3.1-70b": lambda: _llama3(
        "llama-3.1-70b", 8.0, d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8, d_ff=28672
    ),
    "llama-3.2-1b": lambda: _llama3(
        "llama-3.2-1b", 32.0, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, d_ff=8192,
        head_dim=64, tie_embeddings=True,
    ),
    "smollm2-135m": lambda: _llama(
        "smollm2-135m", vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
        d_ff=1536, rope_theta=100000.0, max_seq_len=8192, tie_embeddings=True,
        bos_token_id=1, eos_token_id=2,
    ),
    # --- Mistral / Mixtral ------------------------------------------------------------------------
    "mistral-7b": lambda: Config(
        name="mistral-7b", hf_model_type="mistral", vocab_size=32000, d_model=4096,
        n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, max_seq_len=32768,
        sliding_window=4096, norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
    ),
    "mixtral-8x7b": lambda: Config(
        name="mixtral-8x7b", hf_model_type="mixtral", vocab_size=32000, d_model=4096,
        n_layers=32, n_heads=32, n_kv_heads=8, d_ff=14336, max_seq_len=32768,
        rope_theta=1000000.0, norm_eps=1e-5, n_experts=8, n_experts_per_token=2,
        moe_d_ff=14336, bos_token_id=1, eos_token_id=2,
    ),
    # --- Qwen -------------------------------------------------------------------------------------
    "qwen2.5-0.5b": lambda: Config(
        name="qwen2.5-0.5b", hf_model_type="qwen2", vocab_size=151936, d_model=896,
        n_layers=24, n_heads=14, n_kv_heads=2, d_ff=4864, max_seq_len=32768,
        rope_theta=1000000.0, norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
        bos_token_id=151643, eos_token_id=151643,
    ),
    "qwen2.5-7b": lambda: Config(
        name="qwen2.5-7b", hf_model_type="qwen2", vocab_size=152064, d_model=3584,
        n_layers=28, n_heads=28, n_kv_heads=4, d_ff=18944, max_seq_len=131072,
        rope_theta=1000000.0, norm_eps=1e-6, qkv_bias=True, bos_token_id=151643,
        eos_token_id=151643,
    ),
    "qwen3-0.6b": lambda: _qwen3(
        "qwen3-0.6b", d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8, d_ff=3072,
        tie_embeddings=True,
    ),
    "qwen3-8b": lambda: _qwen3(
        "qwen3-8b", d_model=4096, n_layers=36, n_heads=32, n_kv_heads=8, d_ff=12288
    ),
    "qwen3-30b-a3b": lambda: _qwen3(
        "qwen3-30b-a3b", hf_model_type="qwen3_moe", d_model=2048, n_layers=48, n_heads=32,
        n_kv_heads=4, d_ff=6144, n_experts=128, n_experts_per_token=8, moe_d_ff=768,
        router_norm_topk=True,
    ),
    # --- Gemma ------------------------------------------------------------------------------------
    "gemma-2-2b": lambda: _gemma(
        "gemma-2-2b", 2, 26, 2, d_model=2304, n_heads=8, n_kv_heads=4, d_ff=9216
    ),
    "gemma-2-9b": lambda: _gemma(
        "gemma-2-9b", 2, 42, 2, d_model=3584, n_heads=16, n_kv_heads=8, d_ff=14336
    ),
    "gemma-3-270m": lambda: _gemma(
        "gemma-3-270m", 3, 18, 6, d_model=640, n_heads=4, n_kv_heads=1, d_ff=2048
    ),
    "gemma-3-1b": lambda: _gemma(
        "gemma-3-1b", 3, 26, 6, d_model=1152, n_heads=4, n_kv_heads=1, d_ff=6912
    ),
    "gemma-3-4b": lambda: _gemma(
        "gemma-3-4b", 3, 34, 6, vocab_size=262208, d_model=2560, n_heads=8, n_kv_heads=4,
        d_ff=10240, sliding_window=1024, max_seq_len=131072,
        rope_scaling=RopeScaling(type="linear", factor=8.0),
    ),
    # --- DeepSeek-V3 (MLA + DeepSeekMoE + MTP) ------------------------------------------------
    "deepseek-v3": lambda: Config(
        name="deepseek-v3", hf_model_type="deepseek_v3", vocab_size=129280, d_model=7168,
        n_layers=61, n_heads=128, n_kv_heads=128, d_ff=18432, max_seq_len=163840,
        norm_eps=1e-6, attention="mla", q_lora_rank=1536, kv_lora_rank=512,
        qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, rope_interleaved=True,
        rope_scaling=RopeScaling(
            type="yarn", factor=40.0, original_max_seq_len=4096, beta_fast=32.0, beta_slow=1.0,
            mscale=1.0, mscale_all_dim=1.0,
        ),
        n_experts=256, n_experts_per_token=8, n_shared_experts=1, moe_d_ff=2048,
        router_score="sigmoid", router_norm_topk=True, router_n_groups=8, router_topk_groups=4,
        routed_scaling=2.5, router_bias=True, first_k_dense=3, n_mtp_modules=1,
        bos_token_id=0, eos_token_id=1,
    ),
    # --- tiny variants (tests, smoke runs) ------------------------------------------------------
    "tiny": lambda: _tiny("tiny"),
    "tiny-gpt2": lambda: _gpt2("tiny-gpt2", 128, 4, 4).replace(
        vocab_size=2048, max_seq_len=512, name="tiny-gpt2"
    ),
    "tiny-qwen3": lambda: _tiny("tiny-qwen3", hf_model_type="qwen3", qk_norm=True, head_dim=48),
    "tiny-gemma3": lambda: _tiny(
        "tiny-gemma3", hf_model_type="gemma3_text", n_layers=6, head_dim=64,
        query_pre_attn_scalar=64, norm_unit_offset=True, norm_placement="sandwich",
        embed_scale=True, activation="gelu_tanh", qk_norm=True, sliding_window=32,
        rope_theta=1000000.0, rope_theta_local=10000.0,
        layer_types=("sliding",) * 5 + ("full",),
    ),
    "tiny-mixtral": lambda: _tiny(
        "tiny-mixtral", hf_model_type="mixtral", tie_embeddings=False, n_experts=4,
        n_experts_per_token=2, d_ff=192, moe_d_ff=192,
    ),
    "tiny-deepseek-v3": lambda: _tiny(
        "tiny-deepseek-v3", hf_model_type="deepseek_v3", tie_embeddings=False,
        n_kv_heads=4, attention="mla", q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32,
        qk_rope_head_dim=16, v_head_dim=32, rope_interleaved=True, n_experts=8,
        n_experts_per_token=2, n_shared_experts=1, moe_d_ff=96, router_score="sigmoid",
        router_n_groups=4, router_topk_groups=2, routed_scaling=2.5, router_bias=True,
        first_k_dense=1, n_mtp_modules=1,
    ),
}
# fmt: on


def get_preset(name: str, **overrides: Any) -> Config:
    key = name.lower()
    if key not in PRESETS:
        close = difflib.get_close_matches(key, PRESETS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint} (see `glassformer presets`)")
    cfg = PRESETS[key]()
    return cfg.replace(**overrides) if overrides else cfg


def resolve_config(name_or_path: str | Path) -> Config:
    """A preset name, a packaged model name (`smollm2-135m-instruct`), an HF config.json, an HF
    model directory or a GGUF file (header only) -> Config."""
    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.exists():
        from glassformer.loaders.gguf import config_from_gguf

        return config_from_gguf(path)
    if path.is_dir() or (path.suffix == ".json" and path.exists()):
        return Config.from_hf(path)
    if str(name_or_path).lower() in PRESETS:
        return get_preset(str(name_or_path))
    if path.suffix in (".json", ".gguf") or "/" in str(name_or_path):
        raise ValueError(f"{name_or_path}: no such file or directory")
    from glassformer.loaders.resolve import KNOWN_MODELS, resolve

    try:
        return resolve_config(resolve(str(name_or_path)))
    except ValueError:
        pass  # not a packaged model either: suggest presets and models alike
    names = [*PRESETS, *KNOWN_MODELS]
    close = difflib.get_close_matches(str(name_or_path).lower(), names, n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {str(name_or_path)!r}{hint} (see `glassformer presets`; packaged "
        f"models: {', '.join(KNOWN_MODELS)})"
    )
