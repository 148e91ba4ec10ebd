"""HF transformers `config.json` <-> `Config`, for the families in `glassformer.families`.

The family table says, per HF `model_type`, which keys map to which Config fields (with HF's
defaults for keys a file omits), which keys must hold the one value we support, which are legacy
duplicates of another, and how sliding windows and RoPE are spelled. Every key of the HF config
is either read that way, or listed in `NO_MATH_KEYS` / the family's `hf_no_math` (keys that do
not change what the network computes at inference: dropout, cache flags, token ids for padding,
training-only loss coefficients, keys the family's HF model ignores). Any other key raises
`ValueError` naming it, so nothing that changes the math is dropped silently.

`config_to_hf` writes the HF dict and then reads it back: if the round trip does not reproduce
the config exactly, the first field that differs is reported, so a config that the target HF
family cannot express is refused rather than exported wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glassformer.config import MULTIMODAL_FIELDS, Config, RopeScaling
from glassformer.families import (
    FAMILIES,
    HF_MULTIMODAL,
    HF_WRAPPERS,
    MAX_PATTERN_LAYERS,
    MULTIMODAL_TEXT_FAMILIES,
    Family,
    _read_kinds,
    get_family,
)

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)

# Keys that never change the forward pass at inference time (dropout, cache and output flags,
# padding ids, training-only loss coefficients, bookkeeping), whatever the family. Any other key
# must be read by the family's mapping, be in its hf_no_math, or hold None, or the conversion
# stops and names it.
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
        "num_experts_per_tok_for_aux",
        "output_past",
        "_num_labels",
        "num_labels",
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


def _config_path(config: Any) -> Path | None:
    if isinstance(config, dict) or hasattr(config, "to_dict"):
        return None
    path = Path(config)
    return path / "config.json" if path.is_dir() else path


def _load(config: dict[str, Any] | str | Path | Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):  # a transformers PretrainedConfig
        return config.to_dict()
    path = _config_path(config)
    assert path is not None
    if not path.exists():
        raise ValueError(f"{path}: no such config file")
    return read_json_object(path)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (a config.json); anything else is refused naming the file."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a {type(data).__name__}")
    return data


# The JSON type each HF key must have (checked wherever it is read, so "false" is not read as
# true by bool() and a zero head count never reaches a division).
_POSITIVE_INT_KEYS = frozenset(
    [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "max_position_embeddings",
        "head_dim",
        "n_embd",
        "n_layer",
        "n_head",
        "n_inner",
        "n_positions",
        "sliding_window",
        "num_local_experts",
        "num_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "n_routed_experts",
        "n_group",
        "topk_group",
        "q_lora_rank",
        "decoder_sparse_step",
        "moe_layer_freq",
        "pretraining_tp",
        "original_max_position_embeddings",
        "no_rope_layer_interval",
        "attention_chunk_size",
        "floor_scale",
        "interleave_moe_layer_step",
        "intermediate_size_mlp",
        "linear_num_key_heads",
        "linear_num_value_heads",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_conv_kernel_dim",
        "shared_expert_intermediate_size",
        "full_attention_interval",
        # Gemma 4
        "top_k_experts",
        "global_head_dim",
        "num_global_key_value_heads",
        "vocab_size_per_layer_input",
    ]
)
_COUNT_KEYS = frozenset(
    [
        "n_shared_experts",
        "first_k_dense_replace",
        "num_nextn_predict_layers",
        "hidden_size_per_layer_input",  # Gemma 4
        "num_kv_shared_layers",  # Gemma 4
    ]
)
_BOOL_KEYS = frozenset(
    [
        "tie_word_embeddings",
        "attention_bias",
        "mlp_bias",
        "use_sliding_window",
        "norm_topk_prob",
        "rope_interleave",
        "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx",
        "add_cross_attention",
        "use_bidirectional_attention",
        "truncate",
        "use_qk_norm",
        "attn_temperature_tuning",
        "attn_output_gate",
        "attention_k_eq_v",  # Gemma 4
        "enable_moe_block",  # Gemma 4
        "use_double_wide_mlp",  # Gemma 4
    ]
)
_NUMBER_KEYS = frozenset(
    [
        "rope_theta",
        "rms_norm_eps",
        "layer_norm_epsilon",
        "initializer_range",
        "partial_rotary_factor",
        "routed_scaling_factor",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "rope_local_base_freq",
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "attention_factor",
        "swiglu_alpha",
        "swiglu_limit",
        "attn_scale",
    ]
)
_STR_KEYS = frozenset(
    ["hidden_act", "hidden_activation", "activation_function", "rope_type", "type"]
)
_OBJECT_KEYS = frozenset({"rope_parameters", "rope_scaling", "per_layer_config"})
_LIST_KEYS = frozenset({"layer_types", "mlp_only_layers", "no_rope_layers", "moe_layers"})


def check_value_type(where: str, key: str, value: Any) -> None:
    """Raise ValueError when `value` (not None) has the wrong JSON type for HF key `key`."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if key in _POSITIVE_INT_KEYS:
        ok, want = is_int and value > 0, "a positive integer"
    elif key in _COUNT_KEYS:
        ok, want = is_int and value >= 0, "an integer >= 0"
    elif key in _BOOL_KEYS:
        ok, want = isinstance(value, bool), "true or false (a boolean)"
    elif key in _NUMBER_KEYS:
        ok = (is_int or isinstance(value, float)) and math.isfinite(value)
        want = "a finite number"
    elif key in _STR_KEYS:
        ok, want = isinstance(value, str), "a string"
    elif key in _OBJECT_KEYS:
        ok, want = isinstance(value, dict), "an object"
    elif key in _LIST_KEYS:
        ok, want = isinstance(value, list), "a list"
    else:
        return
    if not ok:
        shown = repr(value) + (" (a string)" if isinstance(value, str) else "")
        raise ValueError(f"{where}: field {key!r} must be {want}, got {shown}")


class _Reader:
    """Reads keys from an HF config dict, remembering which were used. A key the file omits
    takes the family's HF default (`Family.hf_defaults`); a legacy alias stands in for the key
    it duplicates and must agree with it."""

    def __init__(self, data: dict[str, Any], family: Family) -> None:
        self.data, self.family, self.model_type = dict(data), family, family.model_type
        self.used = {"model_type"}
        for alias, key in family.hf_aliases.items():
            if self.data.get(alias) is None:
                continue
            self.used.add(alias)
            if self.data.get(key) is None:
                self.data[key] = self.data[alias]
            elif self.data[key] != self.data[alias]:
                raise ValueError(
                    f"{self.model_type} config: field {alias!r}={self.data[alias]!r} disagrees "
                    f"with {key!r}={self.data[key]!r} (they name the same setting)"
                )

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        if key in self.data:
            value = self.data[key]
            if value is not None:
                check_value_type(f"{self.model_type} config", key, value)
        else:
            value = self.family.hf_defaults.get(key, default)
        return default if value is None else value

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ValueError(f"{self.model_type} config: required field {key!r} is missing")
        return value

    def expect(self, key: str, allowed: tuple[Any, ...], why: str) -> None:
        self.used.add(key)
        if key in self.data and self.data[key] not in allowed:
            raise ValueError(
                f"{self.model_type} config: field {key!r}={self.data[key]!r} is not supported "
                f"({why}); expected one of {allowed}"
            )

    def check_unknown(self) -> None:
        ignored = NO_MATH_KEYS | self.family.hf_no_math
        unknown = sorted(
            key for key in set(self.data) - self.used - ignored if self.data[key] is not None
        )
        if unknown:
            raise ValueError(
                f"{self.model_type} config: unknown field(s) {unknown}; glassformer does not "
                "know whether they change the model, so it refuses to guess"
            )


def _activation(r: _Reader, key: str, name: str) -> str:
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"{r.model_type} config: field {key!r}={name!r} is not a supported activation "
            f"({', '.join(_ACTIVATIONS)})"
        )
    return _ACTIVATIONS[name]


# How a plain key's JSON value becomes the Config field's value (identity when not listed).
_TO_OURS: dict[str, Callable[[Any], Any]] = {
    "norm_eps": float,
    "init_std": float,
    "routed_scaling": float,
    "glu_alpha": float,
    "glu_limit": float,
    "tie_embeddings": bool,
    "router_norm_topk": bool,
    "qk_l2_norm": bool,
    "rope_interleaved": bool,
    "qkv_bias": bool,
    "attn_out_bias": bool,
    "mlp_bias": bool,
    "eos_token_id": lambda v: tuple(v) if isinstance(v, list) else v,
}


def _rope_dict(r: _Reader, layer_kind: str | None = None) -> dict[str, Any]:
    """The rope parameters in the HF 5 form, also from legacy rope_theta + rope_scaling (and
    Gemma 3's rope_local_base_freq for its sliding layers), as HF's config classes fill them."""
    params = r.get("rope_parameters")
    if isinstance(params, dict) and layer_kind in params:
        params = params[layer_kind]
    if isinstance(params, dict) and "rope_theta" in params:
        _check_legacy_rope(r, params, layer_kind)
        return dict(params)
    if layer_kind == "sliding_attention":
        if "rope_local_base_freq" in r.family.hf_defaults:  # Gemma 3's key for it
            return {"rope_type": "default", "rope_theta": r.get("rope_local_base_freq", 10000.0)}
        # OLMo 3: from legacy keys HF gives the sliding layers its class default theta, not
        # the file's rope_theta (that one goes to the full layers only)
        theta = r.family.hf_defaults.get("rope_theta", 10000.0)
        return {"rope_type": "default", "rope_theta": theta}
    legacy = dict(r.get("rope_scaling") or r.family.hf_rope_default or {})
    legacy.setdefault("rope_type", legacy.pop("type", "default"))
    legacy["rope_theta"] = r.get("rope_theta", 10000.0)
    return legacy


def _check_legacy_rope(r: _Reader, params: dict[str, Any], layer_kind: str | None) -> None:
    """A file may carry both spellings (exports do, for transformers 4.x readers): the legacy
    keys must then say the same as `rope_parameters`, or the file means two models."""
    theta_key = "rope_local_base_freq" if layer_kind == "sliding_attention" else "rope_theta"
    # what the file holds, not a family default standing in for an absent key
    present = {k: r.data.get(k) for k in (theta_key, "rope_scaling")}
    theta = r.get(theta_key) if present[theta_key] is not None else None
    if theta is not None and theta != params["rope_theta"]:
        raise ValueError(
            f"{r.model_type} config: field {theta_key!r}={theta!r} disagrees with "
            f"rope_parameters' rope_theta={params['rope_theta']!r}"
        )
    if layer_kind == "sliding_attention":
        return
    legacy = r.get("rope_scaling") if present["rope_scaling"] is not None else None
    if legacy is None:
        return
    kind = legacy.get("rope_type", legacy.get("type", "default"))
    want = params.get("rope_type", "default")
    if kind != want or legacy.get("factor") != params.get("factor"):
        raise ValueError(
            f"{r.model_type} config: field 'rope_scaling' ({kind}, factor "
            f"{legacy.get('factor')}) disagrees with rope_parameters ({want}, factor "
            f"{params.get('factor')})"
        )


def _rope_scaling(r: _Reader, params: dict[str, Any]) -> RopeScaling | None:
    for key, value in params.items():  # float("2") would read a string factor as 2.0
        if value is not None:
            check_value_type(f"{r.model_type} config: rope_parameters", key, value)
    kind = params.get("rope_type", params.get("type", "default"))
    kind = r.family.hf_rope_aliases.get(kind, kind)
    if kind == "default":
        return None
    if kind not in r.family.hf_rope_types:
        raise ValueError(
            f"{r.model_type} config: field 'rope_parameters.rope_type'={kind!r} is not "
            f"supported for {r.model_type} ({', '.join(r.family.hf_rope_types)})"
        )
    factor = params.get("factor")
    if factor is None and kind == "proportional":
        factor = 1.0  # HF's default for this type
    original = params.get("original_max_position_embeddings")
    if kind == "longrope" and "original_max_position_embeddings" in r.family.hf_defaults:
        # Phi-3: HF takes the top-level key (its class default when absent) over the rope dict's
        top = r.get("original_max_position_embeddings")
        if original is not None and original != top:
            raise ValueError(
                f"{r.model_type} config: field 'rope_parameters.original_max_position_embeddings'"
                f"={original!r} disagrees with 'original_max_position_embeddings'={top!r}"
            )
        original = top
    if factor is None and kind in ("yarn", "longrope") and original:
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
        short_factor=_factors(r, params, "short_factor", kind),
        long_factor=_factors(r, params, "long_factor", kind),
        proportion=params.get("partial_rotary_factor", 1.0) if kind == "proportional" else None,
    )


def _factors(r: _Reader, params: dict[str, Any], key: str, kind: str) -> tuple[float, ...] | None:
    """LongRoPE's per-frequency factors: a list of positive numbers (only for that type)."""
    value = params.get(key)
    if value is None or kind != "longrope":
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise ValueError(
            f"{r.model_type} config: field 'rope_parameters.{key}' must be a list of numbers"
        )
    return tuple(float(v) for v in value)


def _read_rope(r: _Reader, family: Family) -> dict[str, Any]:
    global_rope = _rope_dict(r, "full_attention")
    fraction = global_rope.get("partial_rotary_factor", r.get("partial_rotary_factor", 1.0))
    if global_rope.get("rope_type") == "proportional":
        fraction = 1.0  # the rope scaling carries it (RopeScaling.proportion)
    fields: dict[str, Any] = dict(
        rope_theta=float(global_rope["rope_theta"]),
        rope_scaling=_rope_scaling(r, global_rope),
        rope_fraction=float(fraction),
    )
    if family.rope == "per_layer_type":
        local_rope = _rope_dict(r, "sliding_attention")
        if local_rope.get("rope_type", "default") != "default":
            raise ValueError(
                f"{r.model_type} config: field 'rope_parameters.sliding_attention' must use "
                "the default rope type"
            )
        fields["rope_theta_local"] = float(local_rope["rope_theta"])
    return fields


def _read_sliding(r: _Reader, family: Family, n_layers: int) -> dict[str, Any]:
    """sliding_window and layer_types, in the family's style (see `Family.sliding`)."""
    if family.sliding == "none":
        return {}
    window = r.get("sliding_window")
    if family.sliding == "all":
        return dict(sliding_window=window)
    kinds = _read_kinds(r, n_layers, ("full", "sliding")) if family.sliding != "gated" else None
    if family.sliding in ("gated", "optional"):
        start = r.get("max_window_layers") if family.sliding == "optional" else None
        if not (r.get("use_sliding_window", False) and window is not None):
            return {}  # HF drops the window (and so every layer's) without use_sliding_window
        if family.sliding == "gated":
            return dict(sliding_window=window)
    if family.sliding == "optional":
        if kinds is None:  # HF: the layers from max_window_layers on slide
            if n_layers > MAX_PATTERN_LAYERS:  # spelled out per layer: bound it first
                raise ValueError(
                    f"{r.model_type} config: field 'num_hidden_layers'={n_layers} exceeds the "
                    f"{MAX_PATTERN_LAYERS} layers glassformer spells a window pattern out for"
                )
            kinds = tuple("sliding" if i >= start else "full" for i in range(n_layers))
    else:  # pattern: HF derives the layer types when the file has none
        period = r.get(family.hf_period_key) if family.hf_period_key else None
        if period is not None and not (isinstance(period, int) and period > 0):
            raise ValueError(
                f"{r.model_type} config: field {family.hf_period_key!r} must be a positive "
                f"integer, got {period!r}"
            )
        derived = family.layer_types(n_layers, period)
        if kinds is None:
            kinds = derived
        elif period is not None and kinds != derived:
            raise ValueError(
                f"{r.model_type} config: field 'layer_types' disagrees with "
                f"{family.hf_period_key}={period} (every {period}th layer global)"
            )
    if "sliding" not in kinds:
        return {}
    return dict(sliding_window=window, layer_types=kinds)


def config_from_hf(config: dict[str, Any] | str | Path | Any) -> Config:
    """The Config of an HF `config.json` (a dict, a file, a model directory or a transformers
    config object). Errors about a file name it."""
    path = _config_path(config)
    try:
        return _config_from_dict(_load(config))
    except ValueError as err:
        if path is None or str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {err}") from None


def _config_from_dict(data: dict[str, Any]) -> Config:
    model_type = data.get("model_type")
    media: dict[str, Any] = {}
    if model_type in HF_WRAPPERS:  # multimodal wrapper: the text model is what we build
        key, inner = HF_WRAPPERS[model_type]
        if model_type in HF_MULTIMODAL:  # ... with its image and audio embedders
            media = HF_MULTIMODAL[model_type][0](data, dict(data.get(key) or {}))
        data = dict(data.get(key) or {})
        data.setdefault("model_type", inner)
        model_type = inner
    if model_type not in FAMILIES:
        raise ValueError(
            f"config: field 'model_type'={model_type!r} is not supported; "
            f"expected one of {', '.join(FAMILIES)}"
        )
    family = FAMILIES[model_type]
    r = _Reader(data, family)
    for key, (allowed, why) in family.hf_fixed.items():
        r.expect(key, allowed, why)
    missing = [k for k in family.hf_keys if k not in family.hf_defaults and r.get(k) is None]
    if missing:
        raise ValueError(
            f"{model_type} config: required field{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(repr, missing))} {'are' if len(missing) > 1 else 'is'} missing"
        )
    fields: dict[str, Any] = dict(family.traits)
    for key, names in family.hf_keys.items():
        value = r.get(key)
        if value is None:
            continue  # the Config derives it (n_kv_heads, head_dim, d_ff, ...)
        for name in (names,) if isinstance(names, str) else names:
            if name == "activation":
                fields[name] = _activation(r, key, value)
            else:
                fields[name] = _TO_OURS.get(name, lambda v: v)(value)
    if family.rope != "none":
        fields.update(_read_rope(r, family))
    fields.update(_read_sliding(r, family, fields["n_layers"]))
    if family.read_hf is not None:
        fields.update(family.read_hf(r, fields))
    fields.update(name=model_type, hf_model_type=model_type)
    fields.update(media)
    r.check_unknown()
    return Config(**fields)


# ------------------------------------------------------------------------------------------------
def infer_model_type(cfg: Config) -> str:
    """The HF family of this config: its hf_model_type, or else the first family of the table
    that can express it."""
    if cfg.hf_model_type is not None:
        return cfg.hf_model_type
    for family in FAMILIES.values():
        try:
            _to_hf(cfg, family)
        except ValueError:
            continue
        return family.model_type
    raise ValueError(
        "hf_model_type: no supported HF family can express this config (set hf_model_type to "
        "see which field a family lacks)"
    )


def _rope_to_hf(theta: float, s: RopeScaling | None, fraction: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": "default" if s is None else s.type, "rope_theta": theta}
    if fraction != 1.0:
        out["partial_rotary_factor"] = fraction
    if s is not None and s.proportion is not None:
        out["partial_rotary_factor"] = s.proportion
    if s is not None:
        if s.type != "proportional" or s.factor != 1.0:  # HF's default for proportional
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
            ("short_factor", s.short_factor),
            ("long_factor", s.long_factor),
        ):
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        if s.type == "yarn" and not s.truncate:
            out["truncate"] = False
    return out


def config_to_hf(cfg: Config) -> dict[str, Any]:
    """The HF `config.json` dict of the config's family (refused when the family cannot
    express the config: the first field that would change is named)."""
    refuse_connections(cfg)
    per_layer = ("heads_per_layer", "kv_heads_per_layer", "d_ff_per_layer", "moe_d_ff_per_layer")
    for name in (*per_layer, "experts_per_layer"):
        if getattr(cfg, name) is not None:
            raise ValueError(
                f"config_to_hf: {name}={getattr(cfg, name)!r}: HF configs have one size for all "
                "layers; a model pruned unevenly is kept as a glassformer model directory and "
                "its GGUF (llama.cpp's deci architecture)"
            )
    family = get_family(infer_model_type(cfg))
    if not cfg.multimodal:
        return _to_hf(cfg, family)
    wrapper = MULTIMODAL_TEXT_FAMILIES.get(family.model_type)
    if wrapper is None:
        raise ValueError(
            f"config_to_hf: HF {family.model_type!r} has no image or audio embedders; "
            f"choose an hf_model_type among {sorted(MULTIMODAL_TEXT_FAMILIES)}"
        )
    plain = {name: Config.__dataclass_fields__[name].default for name in MULTIMODAL_FIELDS}
    out = HF_MULTIMODAL[wrapper][1](cfg, _to_hf(cfg.replace(**plain), family))
    back = _config_from_dict(out)
    for name in MULTIMODAL_FIELDS:
        if getattr(back, name) != getattr(cfg, name):
            raise ValueError(
                f"config_to_hf: HF {wrapper!r} cannot express {name}={getattr(cfg, name)!r} "
                f"(it would become {getattr(back, name)!r})"
            )
    return out


def refuse_connections(cfg: Config) -> None:
    """HF's configs and weights know only the plain residual stream."""
    if cfg.connections != "residual":
        raise ValueError(
            f"connections: {cfg.connections!r} has no HF equivalent (HF models have the plain "
            "residual stream only); save the model in glassformer's own format instead"
        )


def _to_hf(cfg: Config, family: Family) -> dict[str, Any]:
    model_type = family.model_type
    out: dict[str, Any] = {"model_type": model_type}
    for key, names in family.hf_keys.items():
        value = getattr(cfg, names if isinstance(names, str) else names[0])
        if value is None and family.hf_defaults.get(key) is None:
            continue  # absent reads back as None (a null where HF's default is a value)
        if key in _ACTIVATION_KEYS:
            value = family.hf_gelu_tanh if value == "gelu_tanh" else _ACTIVATION_TO_HF[value]
        out[key] = list(value) if isinstance(value, tuple) else value
    if family.rope != "none":
        global_rope = _rope_to_hf(cfg.rope_theta, cfg.rope_scaling, cfg.rope_fraction)
        if family.hf_defaults.get("partial_rotary_factor", 1.0) != cfg.rope_fraction:
            global_rope["partial_rotary_factor"] = cfg.rope_fraction  # GLM's default is 0.5
        if family.rope == "per_layer_type":
            local = {"rope_type": "default", "rope_theta": cfg.rope_theta_local or cfg.rope_theta}
            out["rope_parameters"] = {"full_attention": global_rope, "sliding_attention": local}
        else:
            out["rope_parameters"] = global_rope
    _sliding_to_hf(cfg, family, out)
    if family.write_hf is not None:
        family.write_hf(cfg, out)
    # Refuse what the family cannot express: read it back and compare every field.
    back = _config_from_dict(out)
    for name in Config.__dataclass_fields__:
        if name in ("name", "hf_model_type", "build_mtp"):  # labels and build choices
            continue
        if getattr(back, name) != getattr(cfg, name):
            raise ValueError(
                f"config_to_hf: HF {model_type!r} cannot express {name}={getattr(cfg, name)!r} "
                f"(it would become {getattr(back, name)!r}); choose an hf_model_type that has it"
            )
    return out


_ACTIVATION_KEYS = frozenset({"hidden_act", "hidden_activation", "activation_function"})


def _sliding_to_hf(cfg: Config, family: Family, out: dict[str, Any]) -> None:
    layer_types = None
    if cfg.sliding_window is not None:
        layer_types = [
            "sliding_attention" if cfg.layer_type(i) == "sliding" else "full_attention"
            for i in range(cfg.n_layers)
        ]
    if family.sliding == "all":
        out["sliding_window"] = cfg.sliding_window  # None too: HF's default may be a window
    elif family.sliding == "gated":
        out["use_sliding_window"] = cfg.sliding_window is not None
        out["sliding_window"] = cfg.sliding_window
    elif family.sliding == "optional":
        out["use_sliding_window"] = cfg.sliding_window is not None
        out["sliding_window"] = cfg.sliding_window
        if layer_types is not None:
            out["layer_types"] = layer_types
    elif family.sliding == "pattern":
        out["sliding_window"] = cfg.sliding_window
        out["layer_types"] = layer_types or ["full_attention"] * cfg.n_layers
