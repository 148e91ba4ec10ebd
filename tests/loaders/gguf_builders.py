"""Write small GGUF files the way llama.cpp's converter does, for the loader tests.

`hf_to_gguf` turns an HF transformers model's weights into GGUF tensors (names, llama's Q/K row
permutation, Gemma's +1 on norm weights) and `write_gguf` writes them with `gguf.GGUFWriter`
(optionally quantised with `gguf.quants.quantize`), so the tests exercise our reader against
files produced by the reference writer.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",  # pre-norm models: the norm before the MLP
    "pre_feedforward_layernorm": "ffn_norm",  # Gemma: pre-MLP norm
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    # Llama 4's feed-forward: dense layers, the router and the shared expert
    "feed_forward.gate_proj": "ffn_gate",
    "feed_forward.up_proj": "ffn_up",
    "feed_forward.down_proj": "ffn_down",
    "feed_forward.router": "ffn_gate_inp",
    "feed_forward.shared_expert.gate_proj": "ffn_gate_shexp",
    "feed_forward.shared_expert.up_proj": "ffn_up_shexp",
    "feed_forward.shared_expert.down_proj": "ffn_down_shexp",
}
PERMUTED = ("llama", "smollm3")  # converters that permute Q/K rows (llama4's does not)
# Gemma 4 (names from gguf.constants' MODEL_TENSORS[GEMMA4])
GEMMA4_TOP = {
    "model.embed_tokens_per_layer.weight": "per_layer_token_embd.weight",
    "model.per_layer_model_projection.weight": "per_layer_model_proj.weight",
    "model.per_layer_projection_norm.weight": "per_layer_proj_norm.weight",
}
GEMMA4_LAYER = {
    "per_layer_input_gate": "inp_gate",
    "per_layer_projection": "proj",
    "post_per_layer_input_norm": "post_norm",
}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: half-split RoPE rows -> interleaved."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gpt_oss_tensors(name: str, w: np.ndarray) -> dict[str, np.ndarray] | None:
    """convert_hf_to_gguf.py's GptOssModel for the tensors it renames or splits: sinks get a
    `.weight`, the interleaved [E, d, 2f] gate_up_proj becomes [E, f, d] gate and up, down_proj
    is transposed, `*_proj_bias` become `.bias`, the router is ffn_gate_inp, and the pre-MLP
    norm keeps HF's name (post_attention_norm). None: a tensor named as for llama."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m is None:
        return None
    blk, part = f"blk.{m.group(1)}", m.group(2)
    if part == "self_attn.sinks":
        return {f"{blk}.attn_sinks.weight": w}
    if part.startswith("mlp.router."):
        return {f"{blk}.ffn_gate_inp.{part.rsplit('.', 1)[1]}": w}
    if part == "post_attention_layernorm.weight":
        return {f"{blk}.post_attention_norm.weight": w}
    if part == "mlp.experts.gate_up_proj":
        w = w.swapaxes(-1, -2)
        return {
            f"{blk}.ffn_gate_exps.weight": w[:, ::2].copy(),
            f"{blk}.ffn_up_exps.weight": w[:, 1::2].copy(),
        }
    if part == "mlp.experts.gate_up_proj_bias":
        return {
            f"{blk}.ffn_gate_exps.bias": w[:, ::2].copy(),
            f"{blk}.ffn_up_exps.bias": w[:, 1::2].copy(),
        }
    if part == "mlp.experts.down_proj":
        return {f"{blk}.ffn_down_exps.weight": w.swapaxes(-1, -2).copy()}
    if part == "mlp.experts.down_proj_bias":
        return {f"{blk}.ffn_down_exps.bias": w}
    return None


def glm4moe_tensors(name: str, w: np.ndarray) -> dict[str, np.ndarray] | None:
    """convert_hf_to_gguf.py's Glm4MoeModel for the MoE tensors: the router and its balancing
    bias, stacked experts (HF's in-memory [E, 2f, d] gate_up split into gate and up) and the
    shared expert. None: a tensor named as for llama."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.mlp\.(.+)", name)
    if m is None:
        return None
    blk, part = f"blk.{m.group(1)}", m.group(2)
    if part == "gate.weight":
        return {f"{blk}.ffn_gate_inp.weight": w}
    if part == "gate.e_score_correction_bias":
        return {f"{blk}.exp_probs_b.bias": w}
    if part == "experts.gate_up_proj":
        f = w.shape[1] // 2
        return {
            f"{blk}.ffn_gate_exps.weight": w[:, :f].copy(),
            f"{blk}.ffn_up_exps.weight": w[:, f:].copy(),
        }
    if part == "experts.down_proj":
        return {f"{blk}.ffn_down_exps.weight": w}
    if part.startswith("shared_experts."):
        proj = part.split(".")[1].removesuffix("_proj")
        return {f"{blk}.ffn_{proj}_shexp.weight": w}
    return None


# Per-architecture names that differ from HF_TO_GGUF: OLMo 2's and GLM-4.5's
# post_attention_layernorm keep HF's name (llama.cpp's post_attention_norm), Phi-3's fused
# projections are stored as they are.
ARCH_NAMES = {
    "olmo2": {"post_attention_layernorm": "post_attention_norm"},
    "glm4moe": {"post_attention_layernorm": "post_attention_norm"},
    "phi3": {"self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"},
}


def hf_to_gguf(
    arch: str, hf_config: Any, hf_state: dict[str, torch.Tensor]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    gemma = arch in ("gemma3", "gemma4")
    for name, t in hf_state.items():
        w = t.detach().float().numpy().copy()
        scalar = re.fullmatch(r"model\.layers\.(\d+)\.layer_scalar", name)
        if scalar:  # Gemma 4's stored per-layer scalar (a buffer)
            out[f"blk.{scalar.group(1)}.layer_output_scale.weight"] = w
            continue
        if name in GEMMA4_TOP:
            out[GEMMA4_TOP[name]] = w
            continue
        if arch == "gpt-oss" and (split := gpt_oss_tensors(name, w)) is not None:
            out.update(split)
            continue
        if arch == "glm4moe" and (split := glm4moe_tensors(name, w)) is not None:
            out.update(split)
            continue
        if name == "model.embed_tokens.weight":
            key = "token_embd.weight"
        elif name == "model.norm.weight":
            key = "output_norm.weight"
        elif name == "lm_head.weight":
            if hf_config.tie_word_embeddings:
                continue
            key = "output.weight"
        elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            # Llama 4's stacked experts [E, in, out]: the converter transposes to [E, out, in]
            # and splits gate | up
            blk = re.fullmatch(r"model\.layers\.(\d+)\..*", name).group(1)  # type: ignore[union-attr]
            w = np.ascontiguousarray(w.swapaxes(-1, -2))
            if name.endswith("down_proj"):
                out[f"blk.{blk}.ffn_down_exps.weight"] = w
            else:
                half = w.shape[1] // 2
                out[f"blk.{blk}.ffn_gate_exps.weight"] = np.ascontiguousarray(w[:, :half])
                out[f"blk.{blk}.ffn_up_exps.weight"] = np.ascontiguousarray(w[:, half:])
            continue
        else:
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
            assert m, name
            part = m.group(2)
            if gemma and part == "post_attention_layernorm":
                sub = "post_attention_norm"  # Gemma's post-attention (sandwich) norm
            elif part in GEMMA4_LAYER:
                sub = GEMMA4_LAYER[part]
            else:
                sub = ARCH_NAMES.get(arch, {}).get(part) or HF_TO_GGUF[part]
            key = f"blk.{m.group(1)}.{sub}.{m.group(3)}"
        if arch in PERMUTED and re.search(r"\.attn_q\.", key):
            w = llama_cpp_permute(w, hf_config.num_attention_heads)
        if arch in PERMUTED and re.search(r"\.attn_k\.", key):
            w = llama_cpp_permute(w, hf_config.num_key_value_heads)
        if arch == "gemma3" and key.endswith("norm.weight"):
            w = w + np.float32(1.0)
        out[key] = w
    rope = getattr(hf_config, "rope_parameters", None) or {}
    if arch == "phi3" and rope.get("rope_type") == "longrope":  # Phi3MiniModel: F32 tensors
        out["rope_factors_long.weight"] = np.asarray(rope["long_factor"], dtype=np.float32)
        out["rope_factors_short.weight"] = np.asarray(rope["short_factor"], dtype=np.float32)
    return out


def write_gguf(
    path: Path,
    arch: str,
    kv: dict[str, Any],
    tensors: dict[str, np.ndarray],
    qtypes: dict[str, GGMLQuantizationType] | None = None,
    default_qtype: GGMLQuantizationType | None = None,
) -> Path:
    """Write `tensors` (numpy [out, in] layout) with metadata `kv` ({arch}.-relative keys for
    ints/floats/strings, or full keys starting with 'general.'/'tokenizer.')."""
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny {arch}")
    for key, value in kv.items():
        full = key if key.startswith(("general.", "tokenizer.")) else f"{arch}.{key}"
        if isinstance(value, bool):
            w.add_bool(full, value)
        elif isinstance(value, int):
            w.add_uint32(full, value)
        elif isinstance(value, float):
            w.add_float32(full, value)
        elif isinstance(value, str):
            w.add_string(full, value)
        else:
            w.add_array(full, value)
    for name, arr in tensors.items():
        qtype = (qtypes or {}).get(name, default_qtype if arr.ndim == 2 else None)
        if qtype is None and arr.ndim == 3:  # stacked experts: as the 2-D weights
            qtype = default_qtype
        if qtype is None or qtype == GGMLQuantizationType.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif qtype == GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, quantize(arr.astype(np.float32), qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def base_kv(hf_config: Any, arch: str) -> dict[str, Any]:
    c = hf_config
    kv: dict[str, Any] = {
        "context_length": int(c.max_position_embeddings),
        "embedding_length": int(c.hidden_size),
        "block_count": int(c.num_hidden_layers),
        "feed_forward_length": int(c.intermediate_size),
        "attention.head_count": int(c.num_attention_heads),
        "attention.head_count_kv": int(c.num_key_value_heads),
        "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        "vocab_size": int(c.vocab_size),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope = c.rope_parameters
    if arch == "gemma3":
        kv["rope.freq_base"] = float(rope["full_attention"]["rope_theta"])
        kv["attention.sliding_window"] = int(c.sliding_window)
    else:  # (per-layer-type rope parameters: the full layers')
        kv["rope.freq_base"] = float((rope.get("full_attention") or rope)["rope_theta"])
    if arch == "gpt-oss":  # GptOssModel.set_gguf_parameters
        kv["expert_count"] = int(c.num_local_experts)
        kv["expert_used_count"] = int(c.num_experts_per_tok)
        kv["expert_feed_forward_length"] = int(c.intermediate_size)
        kv["attention.sliding_window"] = int(c.sliding_window)
        kv["rope.scaling.type"] = "yarn"
        kv["rope.scaling.factor"] = float(rope["factor"])
        kv["rope.scaling.original_context_length"] = int(rope["original_max_position_embeddings"])
    if arch == "llama4":  # as Llama4Model in convert_hf_to_gguf.py writes them
        kv["feed_forward_length"] = int(c.intermediate_size_mlp)
        kv["expert_feed_forward_length"] = int(c.intermediate_size)
        kv["expert_count"] = int(c.num_local_experts)
        kv["expert_used_count"] = int(c.num_experts_per_tok)
        kv["interleave_moe_layer_step"] = int(c.interleave_moe_layer_step)
    if arch == "olmo2" and getattr(c, "sliding_window", None):  # OLMo 3 (Olmo2Model)
        kv["attention.sliding_window"] = int(c.sliding_window)
        full = rope["full_attention"]
        if full.get("rope_type") == "yarn":
            kv["rope.scaling.type"] = "yarn"
            kv["rope.scaling.factor"] = float(full["factor"])
            kv["rope.scaling.original_context_length"] = int(
                full["original_max_position_embeddings"]
            )
            kv["rope.scaling.yarn_beta_fast"] = float(full.get("beta_fast", 32.0))
            kv["rope.scaling.yarn_beta_slow"] = float(full.get("beta_slow", 1.0))
    if arch == "phi3":  # Phi3MiniModel.set_gguf_parameters
        kv["attention.sliding_window"] = int(c.sliding_window or 0)
        kv["rope.dimension_count"] = int(head_dim * rope.get("partial_rotary_factor", 1.0))
        if rope.get("rope_type") == "longrope":
            orig = int(rope["original_max_position_embeddings"])
            scale = c.max_position_embeddings / orig
            kv["rope.scaling.original_context_length"] = orig
            kv["rope.scaling.attn_factor"] = (
                math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
            )
    if arch == "glm4moe":  # Glm4MoeModel.set_gguf_parameters
        kv["rope.dimension_count"] = int(head_dim * rope.get("partial_rotary_factor", 0.5))
        kv["expert_count"] = int(c.n_routed_experts)
        kv["expert_used_count"] = int(c.num_experts_per_tok)
        kv["expert_feed_forward_length"] = int(c.moe_intermediate_size)
        kv["expert_shared_count"] = int(c.n_shared_experts)
        kv["leading_dense_block_count"] = int(c.first_k_dense_replace)
        kv["expert_gating_func"] = 2  # sigmoid
        kv["expert_weights_scale"] = float(c.routed_scaling_factor)
        kv["expert_weights_norm"] = bool(c.norm_topk_prob)
    if arch in ("llama", "smollm3", "llama4"):
        kv["rope.dimension_count"] = int(head_dim)
    else:
        kv["attention.key_length"] = int(head_dim)
        kv["attention.value_length"] = int(head_dim)
    return kv


def gemma4_kv(c: Any) -> dict[str, Any]:
    """llama.cpp's gemma4 metadata for an HF Gemma4TextConfig (no MoE), per-layer arrays where
    layers differ."""
    full = [t == "full_attention" for t in c.layer_types]
    global_head_dim, _ = _full_layer_shape(c)
    head_dim = int(c.per_layer_config[full.index(False)].head_dim)
    first_shared = c.num_hidden_layers - c.num_kv_shared_layers
    ff = [
        c.intermediate_size * (2 if c.use_double_wide_mlp and i >= first_shared else 1)
        for i in range(c.num_hidden_layers)
    ]
    return {
        "context_length": int(c.max_position_embeddings),
        "embedding_length": int(c.hidden_size),
        "block_count": int(c.num_hidden_layers),
        "feed_forward_length": ff,
        "attention.head_count": int(c.num_attention_heads),
        "attention.head_count_kv": [
            int(c.per_layer_config[i].num_key_value_heads) for i in range(c.num_hidden_layers)
        ],
        "attention.key_length": global_head_dim,
        "attention.value_length": global_head_dim,
        "attention.key_length_swa": head_dim,
        "attention.value_length_swa": head_dim,
        "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        "attention.sliding_window": int(c.sliding_window),
        "attention.sliding_window_pattern": [not f for f in full],
        "attention.shared_kv_layers": int(c.num_kv_shared_layers),
        "embedding_length_per_layer_input": int(c.hidden_size_per_layer_input),
        "rope.dimension_count": global_head_dim,
        "rope.dimension_count_swa": head_dim,
        "rope.freq_base": float(c.rope_parameters["full_attention"]["rope_theta"]),
        "rope.freq_base_swa": float(c.rope_parameters["sliding_attention"]["rope_theta"]),
        "final_logit_softcapping": float(c.final_logit_softcapping),
        "vocab_size": int(c.vocab_size),
    }


def gemma4_rope_freqs(c: Any) -> np.ndarray:
    """Proportional RoPE as llama.cpp frequency divisors: 1 (or the factor) on the kept
    frequencies, a divisor no position can turn on the rest."""
    rope = c.rope_parameters["full_attention"]
    head_dim, _ = _full_layer_shape(c)
    half = head_dim // 2
    kept = int(rope.get("partial_rotary_factor", 1.0) * head_dim // 2)
    out = np.full(half, 1e30, dtype=np.float32)
    out[:kept] = rope.get("factor", 1.0)
    return out


def _full_layer_shape(c: Any) -> tuple[int, int]:
    """(head_dim, KV heads) of HF's full-attention layers (its per-layer config)."""
    layer = c.per_layer_config[c.layer_types.index("full_attention")]
    return int(layer.head_dim), int(layer.num_key_value_heads)


# --- Qwen3-Next (qwen3next) and Qwen3.5 (qwen35, qwen35moe): llama.cpp's Qwen3NextModel,
# Qwen2MoeModel and, for Qwen3.5, _LinearAttentionVReorderBase in convert_hf_to_gguf.py
QWEN_HYBRID_ARCHS = {"qwen3_next": "qwen3next", "qwen3_5_text": "qwen35",
                     "qwen3_5_moe_text": "qwen35moe"}  # fmt: skip


_GDN_NAMES = {
    "in_proj_qkv.weight": "attn_qkv.weight", "in_proj_z.weight": "attn_gate.weight",
    "in_proj_b.weight": "ssm_beta.weight", "in_proj_a.weight": "ssm_alpha.weight",
    "in_proj_ba.weight": "ssm_ba.weight", "conv1d.weight": "ssm_conv1d.weight",
    "A_log": "ssm_a", "dt_bias": "ssm_dt.bias", "norm.weight": "ssm_norm.weight",
    "out_proj.weight": "ssm_out.weight",
}  # fmt: skip


def _tile_v(w: np.ndarray, axis: int, n_k: int, r: int, head: int) -> np.ndarray:
    """The converter's _reorder_v_heads: value heads grouped by key head -> tiled."""
    shape = list(w.shape)
    w = w.reshape(*shape[:axis], n_k, r, head, *shape[axis + 1 :])
    return np.ascontiguousarray(np.swapaxes(w, axis, axis + 1)).reshape(shape)


def qwen_hybrid_tensors(arch: str, c: Any, hf_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """HF tensors -> GGUF tensors as the converter writes them: norms + 1 except the linear
    layers' gated norm, A_log as -exp(A_log), dt_bias as ssm_dt.bias, the convolution squeezed
    to [channels, K], Qwen3-Next's in_proj_qkvz split into attn_qkv (q, k, v each over all
    heads) and attn_gate, and for Qwen3.5 the value heads tiled."""
    n_k, n_v = c.linear_num_key_heads, c.linear_num_value_heads
    dk, dv, r = c.linear_key_head_dim, c.linear_value_head_dim, n_v // n_k
    qk = 2 * n_k * dk
    tiled = arch != "qwen3next" and r > 1
    out: dict[str, np.ndarray] = {}
    for name, t in hf_state.items():
        w = t.detach().float().numpy().copy()
        if name.endswith("norm.weight") and not name.endswith("linear_attn.norm.weight"):
            w = w + np.float32(1.0)
        top = {"model.embed_tokens.weight": "token_embd.weight",
               "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
        if name in top:
            if name != "lm_head.weight" or not c.tie_word_embeddings:
                out[top[name]] = w
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
        assert m, name
        blk, part = f"blk.{m.group(1)}", m.group(2)
        if part.startswith("linear_attn."):
            sub = part.removeprefix("linear_attn.")
            if sub == "in_proj_qkvz.weight":  # per key head [q, k, v, z] -> all q, k, v | z
                q, k, v, z = np.split(w.reshape(n_k, -1, w.shape[1]),
                                      np.cumsum([dk, dk, r * dv])[:3], axis=1)  # fmt: skip
                flat = [x.reshape(-1, w.shape[1]) for x in (q, k, v, z)]
                out[f"{blk}.attn_qkv.weight"] = np.concatenate(flat[:3])
                out[f"{blk}.attn_gate.weight"] = flat[3]
                continue
            if (tiled and sub == "in_proj_qkv.weight") or (tiled and sub == "conv1d.weight"):
                w = np.concatenate((w[:qk], _tile_v(w[qk:], 0, n_k, r, dv)))
            elif tiled and sub == "in_proj_z.weight":
                w = _tile_v(w, 0, n_k, r, dv)
            elif tiled and sub in ("in_proj_a.weight", "in_proj_b.weight", "A_log", "dt_bias"):
                w = _tile_v(w, 0, n_k, r, 1)
            elif tiled and sub == "out_proj.weight":
                w = _tile_v(w, 1, n_k, r, dv)
            if sub == "A_log":
                w = -np.exp(w)
            if sub == "conv1d.weight":
                w = np.ascontiguousarray(w.squeeze(1))
            out[f"{blk}.{_GDN_NAMES[sub]}"] = w
            continue
        if part == "mlp.experts.gate_up_proj":
            f = w.shape[1] // 2
            out[f"{blk}.ffn_gate_exps.weight"] = np.ascontiguousarray(w[:, :f])
            out[f"{blk}.ffn_up_exps.weight"] = np.ascontiguousarray(w[:, f:])
            continue
        layer = {"mlp.gate.weight": "ffn_gate_inp.weight",
                 "mlp.experts.down_proj": "ffn_down_exps.weight",
                 "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
                 "post_attention_layernorm.weight": "post_attention_norm.weight"}  # fmt: skip
        if part in layer:
            out[f"{blk}.{layer[part]}"] = w
        elif part.startswith("mlp.shared_expert."):
            proj = part.split(".")[2].removesuffix("_proj")
            out[f"{blk}.ffn_{proj}_shexp.weight"] = w
        else:
            sub, kind = part.rsplit(".", 1)
            out[f"{blk}.{HF_TO_GGUF[sub]}.{kind}"] = w
    return out


def qwen_hybrid_kv(c: Any, arch: str) -> dict[str, Any]:
    """Qwen3NextModel.set_gguf_parameters (+ Qwen2MoeModel's expert keys)."""
    kv: dict[str, Any] = {
        "context_length": int(c.max_position_embeddings),
        "embedding_length": int(c.hidden_size),
        "block_count": int(c.num_hidden_layers),
        "attention.head_count": int(c.num_attention_heads),
        "attention.head_count_kv": int(c.num_key_value_heads),
        "attention.key_length": int(c.head_dim),
        "attention.value_length": int(c.head_dim),
        "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        "rope.freq_base": float(c.rope_parameters["rope_theta"]),
        "rope.dimension_count": int(c.head_dim * c.rope_parameters["partial_rotary_factor"]),
        "vocab_size": int(c.vocab_size),
        "ssm.conv_kernel": int(c.linear_conv_kernel_dim),
        "ssm.state_size": int(c.linear_key_head_dim),
        "ssm.group_count": int(c.linear_num_key_heads),
        "ssm.time_step_rank": int(c.linear_num_value_heads),
        "ssm.inner_size": int(c.linear_value_head_dim * c.linear_num_value_heads),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    rope = c.rope_parameters
    if rope.get("rope_type") == "yarn":  # TextModel.set_gguf_parameters
        kv["rope.scaling.type"] = "yarn"
        kv["rope.scaling.factor"] = float(rope["factor"])
        kv["rope.scaling.original_context_length"] = int(rope["original_max_position_embeddings"])
    if hasattr(c, "intermediate_size"):  # Qwen3.5-MoE has no dense width
        kv["feed_forward_length"] = int(c.intermediate_size)
    layers = c.layer_types
    full = [i for i, t in enumerate(layers) if t == "full_attention"]
    if full and all((i + 1) % (full[0] + 1) == 0 for i in full) and len(full) == len(
        layers
    ) // (full[0] + 1):
        kv["full_attention_interval"] = full[0] + 1
    if getattr(c, "num_experts", 0):
        kv["expert_count"] = int(c.num_experts)
        kv["expert_used_count"] = int(c.num_experts_per_tok)
        kv["expert_feed_forward_length"] = int(c.moe_intermediate_size)
        kv["expert_shared_feed_forward_length"] = int(c.shared_expert_intermediate_size)
    return kv
