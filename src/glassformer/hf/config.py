"""HF transformers `config.json` <-> `Config`, for the families glassformer reproduces.

Supported model types: gpt2, llama, mistral, qwen2, qwen3, qwen3_moe, gemma2, gemma3_text,
mixtral, deepseek_v3. Every key of the HF config is either mapped, checked to hold the one value
we support, or listed in `NO_MATH_KEYS` (keys that do not change what the network computes at
inference: dropout, cache flags, token ids for padding, training-only loss coefficients). Any
other key raises `ValueError` naming it, so nothing that changes the math is dropped silently.

`config_to_hf` writes the HF dict and then reads it back: if the round trip does not reproduce
the config exactly, the first field that differs is reported, so a config that the target HF
family cannot express is refused rather than exported wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glassformer.config import Config, RopeScaling

SUPPORTED_MODEL_TYPES = (
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "qwen3_moe",
    "gemma2",
    "gemma3_text",
    "mixtral",
    "deepseek_v3",
)

# Keys that never change the forward pass at inference time (dropout, cache and output flags,
# padding ids, training-only loss coefficients, bookkeeping). Any other key must be read by the
# family's mapping below, or hold None, or the conversion stops and names it.
NO_MATH_KEYS = frozenset(
    {
        "architectures",
        "transformers_version",
        "dtype",
        "torch_dtype",
        "use_cache",
        "attention_dropout",
        "resid_pdrop",
        "embd_pdrop",
        "attn_pdrop",
        "pad_token_id",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "problem_type",
        "id2label",
        "label2id",
        "_name_or_path",
        "model_type",
        "tie_encoder_decoder",
        "output_router_logits",
        "router_aux_loss_coef",
        "router_jitter_noise",
        "aux_loss_alpha",
        "seq_aux",
        "summary_type",
        "summary_use_proj",
        "summary_activation",
        "summary_proj_to_labels",
        "summary_first_dropout",
        "reorder_and_upcast_attn",
        "task_specific_params",
        "ep_size",
        "_attn_implementation",
        "attn_implementation",
        "cache_implementation",
        "generation_config",
        "auto_map",
        "tokenizer_class",
        "prefix",
        "n_ctx",
        "max_window_layers",
        "_sliding_window_pattern",
        "sliding_window_pattern",
        "num_experts_per_tok_for_aux",
    }
)

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}
_ACTIVATION_TO_HF = {
    "gelu": "gelu",
    "gelu_tanh": "gelu_pytorch_tanh",
    "silu": "silu",
    "relu": "relu",
}


def _load(config: dict[str, Any] | str | Path | Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ValueError(f"{path}: no such config file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


class _Reader:
    """Reads keys from an HF config dict, remembering which were used."""

    def __init__(self, data: dict[str, Any], model_type: str) -> None:
        self.data, self.model_type, self.used = data, model_type, {"model_type"}

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        value = self.data.get(key, default)
        return default if value is None else value

    def require(self, key: str) -> Any:
        self.used.add(key)
        if self.data.get(key) is None:
            raise ValueError(f"{self.model_type} config: required field {key!r} is missing")
        return self.data[key]

    def expect(self, key: str, allowed: tuple[Any, ...], why: str) -> None:
        self.used.add(key)
        if key in self.data and self.data[key] not in allowed:
            raise ValueError(
                f"{self.model_type} config: field {key!r}={self.data[key]!r} is not supported "
                f"({why}); expected one of {allowed}"
            )

    def check_unknown(self) -> None:
        unknown = sorted(
            key for key in set(self.data) - self.used - NO_MATH_KEYS if self.data[key] is not None
        )
        if unknown:
            raise ValueError(
                f"{self.model_type} config: unknown field(s) {unknown}; glassformer does not "
                "know whether they change the model, so it refuses to guess"
            )


def _activation(r: _Reader, key: str) -> str:
    name = r.get(key, "silu")
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"{r.model_type} config: field {key!r}={name!r} is not a supported activation "
            f"({', '.join(_ACTIVATIONS)})"
        )
    return _ACTIVATIONS[name]


def _rope_dict(r: _Reader, layer_kind: str | None = None) -> dict[str, Any]:
    """The rope parameters in the HF 5 form, also from legacy rope_theta + rope_scaling."""
    params = r.get("rope_parameters")
    legacy_scaling, legacy_theta = r.get("rope_scaling"), r.get("rope_theta", 10000.0)
    local_theta = r.get("rope_local_base_freq")
    if isinstance(params, dict) and layer_kind is not None and layer_kind in params:
        params = params[layer_kind]
    if isinstance(params, dict) and "rope_theta" in params:
        return dict(params)
    legacy = dict(legacy_scaling or {})
    theta = legacy_theta
    if layer_kind == "sliding_attention" and local_theta is not None:
        return {"rope_type": "default", "rope_theta": local_theta}
    legacy.setdefault("rope_type", legacy.pop("type", "default"))
    legacy["rope_theta"] = theta
    return legacy


def _rope_scaling(r: _Reader, params: dict[str, Any]) -> RopeScaling | None:
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return None
    if kind not in ("linear", "llama3", "yarn"):
        raise ValueError(
            f"{r.model_type} config: field 'rope_parameters.rope_type'={kind!r} is not "
            "supported (default, linear, llama3, yarn)"
        )
    factor = params.get("factor")
    original = params.get("original_max_position_embeddings")
    if factor is None and kind == "yarn" and original:
        factor = r.require("max_position_embeddings") / original
    if factor is None:
        raise ValueError(f"{r.model_type} config: field 'rope_parameters.factor' is missing")
    return RopeScaling(
        type=kind,
        factor=float(factor),
        original_max_seq_len=original,
        low_freq_factor=params.get("low_freq_factor"),
        high_freq_factor=params.get("high_freq_factor"),
        beta_fast=params.get("beta_fast"),
        beta_slow=params.get("beta_slow"),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        attention_factor=params.get("attention_factor"),
        truncate=params.get("truncate", True),
    )


def _layer_types(r: _Reader, n_layers: int) -> tuple[str, ...] | None:
    kinds = r.get("layer_types")
    if kinds is None:
        return None
    names = {"full_attention": "full", "sliding_attention": "sliding"}
    bad = sorted({k for k in kinds if k not in names})
    if bad:
        raise ValueError(f"{r.model_type} config: field 'layer_types' has unsupported {bad}")
    if len(kinds) != n_layers:
        raise ValueError(
            f"{r.model_type} config: field 'layer_types' has {len(kinds)} entries for "
            f"num_hidden_layers={n_layers}"
        )
    return tuple(names[k] for k in kinds)


def _eos(value: Any) -> int | tuple[int, ...] | None:
    return tuple(value) if isinstance(value, list) else value


def config_from_hf(config: dict[str, Any] | str | Path | Any) -> Config:
    data = _load(config)
    model_type = data.get("model_type")
    if model_type == "gemma3":  # multimodal wrapper: the text model is what we build
        data = dict(data.get("text_config") or {})
        data.setdefault("model_type", "gemma3_text")
        model_type = "gemma3_text"
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"config: field 'model_type'={model_type!r} is not supported; "
            f"expected one of {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    r = _Reader(data, model_type)
    fields = _gpt2(r) if model_type == "gpt2" else _llama_like(r, model_type)
    fields.update(
        name=model_type,
        hf_model_type=model_type,
        init_std=float(r.get("initializer_range", 0.02)),
        bos_token_id=r.get("bos_token_id"),
        eos_token_id=_eos(r.get("eos_token_id")),
    )
    r.check_unknown()
    return Config(**fields)


def _gpt2(r: _Reader) -> dict[str, Any]:
    r.expect("scale_attn_weights", (True,), "GPT-2 without attention scaling")
    r.expect("scale_attn_by_inverse_layer_idx", (False,), "per-layer attention scaling")
    r.expect("add_cross_attention", (False,), "cross-attention is encoder-decoder only")
    d = r.require("n_embd")
    return dict(
        vocab_size=r.require("vocab_size"),
        d_model=d,
        n_layers=r.require("n_layer"),
        n_heads=r.require("n_head"),
        d_ff=r.get("n_inner") or 4 * d,
        max_seq_len=r.get("n_positions", 1024),
        position="learned",
        norm="layernorm",
        norm_bias=True,
        norm_eps=float(r.get("layer_norm_epsilon", 1e-5)),
        qkv_bias=True,
        attn_out_bias=True,
        mlp="mlp",
        mlp_bias=True,
        activation=_activation(r, "activation_function"),
        tie_embeddings=bool(r.get("tie_word_embeddings", True)),
    )


def _llama_like(r: _Reader, model_type: str) -> dict[str, Any]:
    d = r.require("hidden_size")
    n_heads = r.require("num_attention_heads")
    n_layers = r.require("num_hidden_layers")
    r.expect("pretraining_tp", (1,), "tensor-parallel slicing of the forward pass")
    gemma = model_type in ("gemma2", "gemma3_text")
    fields: dict[str, Any] = dict(
        vocab_size=r.require("vocab_size"),
        d_model=d,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=r.get("num_key_value_heads", n_heads),
        d_ff=r.require("intermediate_size"),
        max_seq_len=r.get("max_position_embeddings", 2048),
        norm="rmsnorm",
        norm_eps=float(r.get("rms_norm_eps", 1e-6)),
        mlp="glu",
        activation=_activation(
            r, "hidden_activation" if gemma and "hidden_activation" in r.data else "hidden_act"
        ),
        tie_embeddings=bool(r.get("tie_word_embeddings", gemma)),
    )
    if model_type != "deepseek_v3":
        fields["head_dim"] = r.get("head_dim") or d // n_heads
    r.used.add("hidden_act")  # Gemma configs carry both; hidden_activation is the one used

    # attention biases
    if model_type == "qwen2":
        fields.update(qkv_bias=True, attn_out_bias=False)
    elif model_type in ("llama", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "deepseek_v3"):
        bias = bool(r.get("attention_bias", False))
        fields.update(qkv_bias=bias, attn_out_bias=bias)
    if model_type == "llama":
        fields["mlp_bias"] = bool(r.get("mlp_bias", False))

    # positions
    layer_kinds = _layer_types(r, n_layers)
    if model_type == "gemma3_text":
        global_rope = _rope_dict(r, "full_attention")
        local_rope = _rope_dict(r, "sliding_attention")
        if local_rope.get("rope_type", "default") != "default":
            raise ValueError(
                "gemma3_text config: field 'rope_parameters.sliding_attention' must use the "
                "default rope type"
            )
        fields["rope_theta_local"] = float(local_rope["rope_theta"])
    else:
        global_rope = _rope_dict(r)
    fields["rope_theta"] = float(global_rope["rope_theta"])
    fields["rope_scaling"] = _rope_scaling(r, global_rope)
    fraction = global_rope.get("partial_rotary_factor", r.get("partial_rotary_factor", 1.0))
    fields["rope_fraction"] = float(fraction)

    # sliding windows
    window = r.get("sliding_window")
    if model_type == "mistral" or model_type == "mixtral":
        fields["sliding_window"] = window
    elif model_type in ("qwen2", "qwen3", "qwen3_moe"):
        if r.get("use_sliding_window", False) and window is not None:
            fields["sliding_window"] = window
            fields["layer_types"] = layer_kinds
            if layer_kinds is None:
                raise ValueError(f"{model_type} config: use_sliding_window needs 'layer_types'")
            if "sliding" not in layer_kinds:
                fields["sliding_window"] = None
                fields["layer_types"] = None
    elif gemma:
        fields["sliding_window"] = window
        fields["layer_types"] = layer_kinds
        r.expect("use_bidirectional_attention", (False, None), "bidirectional attention")
    if fields.get("layer_types") and "sliding" not in fields["layer_types"]:
        fields["layer_types"] = None
        fields["sliding_window"] = None

    # family specifics
    if model_type in ("qwen3", "qwen3_moe"):
        fields["qk_norm"] = True
    if gemma:
        fields.update(
            norm_unit_offset=True,
            norm_placement="sandwich",
            embed_scale=True,
            qk_norm=model_type == "gemma3_text",
            query_pre_attn_scalar=r.get("query_pre_attn_scalar"),
            attn_logit_softcap=r.get("attn_logit_softcapping"),
            final_logit_softcap=r.get("final_logit_softcapping"),
        )
    if model_type == "mixtral":
        fields.update(
            n_experts=r.require("num_local_experts"),
            n_experts_per_token=r.require("num_experts_per_tok"),
            moe_d_ff=fields["d_ff"],
            router_score="softmax",
            router_norm_topk=True,
        )
    if model_type == "qwen3_moe":
        r.expect("decoder_sparse_step", (1,), "MoE only every n-th layer")
        dense = list(r.get("mlp_only_layers", []))
        if dense != list(range(len(dense))):
            raise ValueError(
                "qwen3_moe config: field 'mlp_only_layers' must be a prefix 0..k-1 of the layers, "
                f"got {dense}"
            )
        fields.update(
            n_experts=r.get("num_experts") or r.require("num_local_experts"),
            n_experts_per_token=r.require("num_experts_per_tok"),
            moe_d_ff=r.require("moe_intermediate_size"),
            router_score="softmax",
            router_norm_topk=bool(r.get("norm_topk_prob", False)),
            first_k_dense=len(dense),
        )
    if model_type == "deepseek_v3":
        fields.update(_deepseek(r, fields))
    return fields


def _deepseek(r: _Reader, fields: dict[str, Any]) -> dict[str, Any]:
    r.expect("moe_layer_freq", (1,), "MoE only every n-th layer")
    r.expect("topk_method", ("noaux_tc",), "routing method")
    r.expect("scoring_func", ("sigmoid",), "router score")
    r.used.update({"qk_head_dim", "head_dim"})  # derived from the MLA dims
    return dict(
        attention="mla",
        q_lora_rank=r.get("q_lora_rank"),
        kv_lora_rank=r.require("kv_lora_rank"),
        qk_nope_head_dim=r.require("qk_nope_head_dim"),
        qk_rope_head_dim=r.require("qk_rope_head_dim"),
        v_head_dim=r.require("v_head_dim"),
        rope_interleaved=bool(r.get("rope_interleave", True)),
        n_experts=r.require("n_routed_experts"),
        n_experts_per_token=r.require("num_experts_per_tok"),
        n_shared_experts=r.get("n_shared_experts", 0),
        moe_d_ff=r.require("moe_intermediate_size"),
        router_score="sigmoid",
        router_norm_topk=bool(r.get("norm_topk_prob", True)),
        router_n_groups=r.get("n_group", 1),
        router_topk_groups=r.get("topk_group", 1),
        routed_scaling=float(r.get("routed_scaling_factor", 1.0)),
        router_bias=True,
        first_k_dense=r.get("first_k_dense_replace", 0),
        n_mtp_modules=r.get("num_nextn_predict_layers", 0),
        head_dim=r.require("qk_nope_head_dim") + r.require("qk_rope_head_dim"),
    )


# ------------------------------------------------------------------------------------------------
def infer_model_type(cfg: Config) -> str:
    """The HF family that can express this config."""
    if cfg.hf_model_type is not None:
        return cfg.hf_model_type
    if cfg.position == "learned":
        return "gpt2"
    if cfg.attention == "mla":
        return "deepseek_v3"
    if cfg.norm_placement == "sandwich":
        return "gemma3_text" if cfg.qk_norm else "gemma2"
    if cfg.n_experts:
        return "qwen3_moe" if cfg.qk_norm or not cfg.router_norm_topk else "mixtral"
    if cfg.qk_norm:
        return "qwen3"
    if cfg.qkv_bias and not cfg.attn_out_bias:
        return "qwen2"
    if cfg.sliding_window is not None and cfg.layer_types is None:
        return "mistral"
    return "llama"


def _rope_to_hf(theta: float, s: RopeScaling | None, fraction: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": "default" if s is None else s.type, "rope_theta": theta}
    if fraction != 1.0:
        out["partial_rotary_factor"] = fraction
    if s is not None:
        out["factor"] = s.factor
        for key, value in (
            ("original_max_position_embeddings", s.original_max_seq_len),
            ("low_freq_factor", s.low_freq_factor),
            ("high_freq_factor", s.high_freq_factor),
            ("beta_fast", s.beta_fast),
            ("beta_slow", s.beta_slow),
            ("mscale", s.mscale),
            ("mscale_all_dim", s.mscale_all_dim),
            ("attention_factor", s.attention_factor),
        ):
            if value is not None:
                out[key] = value
        if s.type == "yarn" and not s.truncate:
            out["truncate"] = False
    return out


def config_to_hf(cfg: Config) -> dict[str, Any]:
    model_type = infer_model_type(cfg)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"hf_model_type: {model_type!r} is not a supported HF model type")
    out: dict[str, Any] = {"model_type": model_type, "vocab_size": cfg.vocab_size}
    if cfg.bos_token_id is not None:
        out["bos_token_id"] = cfg.bos_token_id
    if cfg.eos_token_id is not None:
        eos = cfg.eos_token_id
        out["eos_token_id"] = list(eos) if isinstance(eos, tuple) else eos
    out["initializer_range"] = cfg.init_std
    out["tie_word_embeddings"] = cfg.tie_embeddings
    if model_type == "gpt2":
        out.update(
            n_embd=cfg.d_model,
            n_layer=cfg.n_layers,
            n_head=cfg.n_heads,
            n_inner=cfg.d_ff,
            n_positions=cfg.max_seq_len,
            layer_norm_epsilon=cfg.norm_eps,
            activation_function={"gelu_tanh": "gelu_new"}.get(cfg.activation, cfg.activation),
        )
    else:
        _llama_like_to_hf(cfg, model_type, out)
    # Refuse what the family cannot express: read it back and compare every field.
    back = config_from_hf(out)
    for name in Config.__dataclass_fields__:
        if name in ("name", "extra", "build_mtp"):  # build choices, not architecture
            continue
        if getattr(back, name) != getattr(cfg, name):
            raise ValueError(
                f"config_to_hf: HF {model_type!r} cannot express {name}={getattr(cfg, name)!r} "
                f"(it would become {getattr(back, name)!r}); choose an hf_model_type that has it"
            )
    return out


def _llama_like_to_hf(cfg: Config, model_type: str, out: dict[str, Any]) -> None:
    gemma = model_type in ("gemma2", "gemma3_text")
    out.update(
        hidden_size=cfg.d_model,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        intermediate_size=cfg.d_ff,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
    )
    out["hidden_activation" if gemma else "hidden_act"] = _ACTIVATION_TO_HF[cfg.activation]
    if model_type != "deepseek_v3":
        out["head_dim"] = cfg.head_dim
    if model_type in ("llama", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "deepseek_v3"):
        out["attention_bias"] = cfg.qkv_bias
    if model_type == "llama":
        out["mlp_bias"] = cfg.mlp_bias
    global_rope = _rope_to_hf(cfg.rope_theta, cfg.rope_scaling, cfg.rope_fraction)
    if model_type == "gemma3_text":
        local = {"rope_type": "default", "rope_theta": cfg.rope_theta_local or cfg.rope_theta}
        out["rope_parameters"] = {"full_attention": global_rope, "sliding_attention": local}
    else:
        out["rope_parameters"] = global_rope
    layer_types = None
    if cfg.sliding_window is not None:
        layer_types = [
            "sliding_attention" if cfg.layer_type(i) == "sliding" else "full_attention"
            for i in range(cfg.n_layers)
        ]
    if model_type in ("mistral", "mixtral"):
        out["sliding_window"] = cfg.sliding_window
    elif model_type in ("qwen2", "qwen3", "qwen3_moe"):
        out["use_sliding_window"] = cfg.sliding_window is not None
        out["sliding_window"] = cfg.sliding_window
        if layer_types is not None:
            out["layer_types"] = layer_types
    elif gemma:
        out["sliding_window"] = cfg.sliding_window
        out["layer_types"] = layer_types or ["full_attention"] * cfg.n_layers
        out["query_pre_attn_scalar"] = cfg.query_pre_attn_scalar
        out["attn_logit_softcapping"] = cfg.attn_logit_softcap
        out["final_logit_softcapping"] = cfg.final_logit_softcap
    if model_type == "mixtral":
        out.update(num_local_experts=cfg.n_experts, num_experts_per_tok=cfg.n_experts_per_token)
    if model_type == "qwen3_moe":
        out.update(
            num_local_experts=cfg.n_experts,
            num_experts_per_tok=cfg.n_experts_per_token,
            moe_intermediate_size=cfg.moe_d_ff,
            norm_topk_prob=cfg.router_norm_topk,
            decoder_sparse_step=1,
            mlp_only_layers=list(range(cfg.first_k_dense)),
        )
    if model_type == "deepseek_v3":
        out.update(
            q_lora_rank=cfg.q_lora_rank,
            kv_lora_rank=cfg.kv_lora_rank,
            qk_nope_head_dim=cfg.qk_nope_head_dim,
            qk_rope_head_dim=cfg.qk_rope_head_dim,
            v_head_dim=cfg.v_head_dim,
            rope_interleave=cfg.rope_interleaved,
            n_routed_experts=cfg.n_experts,
            num_experts_per_tok=cfg.n_experts_per_token,
            n_shared_experts=cfg.n_shared_experts,
            moe_intermediate_size=cfg.moe_d_ff,
            norm_topk_prob=cfg.router_norm_topk,
            n_group=cfg.router_n_groups,
            topk_group=cfg.router_topk_groups,
            routed_scaling_factor=cfg.routed_scaling,
            first_k_dense_replace=cfg.first_k_dense,
            num_nextn_predict_layers=cfg.n_mtp_modules,
        )
