"""The families glassformer reproduces, in one table keyed by HF `model_type`.

A family is what its checkpoints share: the traits every model of it has (Gemma's (1 + w)
norms and sandwich placement, Qwen3's q/k norms), how its HF `config.json` names the sizes,
the defaults HF fills in for keys a `config.json` leaves out, what llama.cpp calls it in GGUF
files, and how its weight names and layouts depart from the common one. The sizes of one model
are its `Config`.

Three readers share this table: the HF mapping (`hf/config.py` for `config.json`,
`hf/weights.py` for tensor names), the GGUF loader (`loaders/gguf.py`) and the presets. Adding
a family is one `Family` entry here, usually `like(an existing one, ...)`, plus whatever new
math it brings to the model (see docs/adding-a-family.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from glassformer.config import RopeScaling

Sliding = Literal["none", "all", "gated", "optional", "pattern"]

# HF key -> Config field(s). A tuple: one HF key sets several fields, which must agree on export.
Keys = Mapping[str, str | tuple[str, ...]]


# A per-layer attention pattern is a tuple of n_layers entries; published models have at most a
# few hundred layers, so a count beyond this is a corrupt or hostile file, not a model.
MAX_PATTERN_LAYERS = 1 << 20


@dataclass(frozen=True)
class Family:
    """One HF `model_type` and everything glassformer knows about it besides the math."""

    model_type: str
    # Config fields every model of the family has (not in its config.json).
    traits: Mapping[str, Any] = field(default_factory=dict)
    # --- HF config.json -------------------------------------------------------------------------
    hf_keys: Keys = field(default_factory=dict)  # read and written as is
    # HF's own default for a key that config.json may omit (checked against HF's config classes
    # in tests). A key in hf_keys without a default here is required.
    hf_defaults: Mapping[str, Any] = field(default_factory=dict)
    # Keys that must hold one of the given values: key -> (allowed values, what else would mean).
    hf_fixed: Mapping[str, tuple[tuple[Any, ...], str]] = field(default_factory=dict)
    # Keys that duplicate another (legacy spellings): key -> the key it duplicates. They are read
    # when the main key is absent and must agree with it when both are present.
    hf_aliases: Mapping[str, str] = field(default_factory=dict)
    # Keys this family's HF model ignores (besides the ones no family reads, in hf/config.py).
    hf_no_math: frozenset[str] = frozenset()
    hf_gelu_tanh: str = "gelu_pytorch_tanh"  # HF's name for the tanh GELU in this family
    rope: Literal["none", "global", "per_layer_type"] = "global"  # per_layer_type: Gemma 3's
    # separate `rope_parameters` for its sliding and full layers
    hf_rope_types: tuple[str, ...] = ("default", "linear", "llama3", "yarn")  # that we read
    hf_rope_aliases: Mapping[str, str] = field(default_factory=dict)  # legacy rope type names
    # The rope parameters HF assumes when a file has neither rope_parameters nor rope_scaling
    # (None: the default rope type), with rope_theta from the file or hf_defaults.
    hf_rope_default: Mapping[str, Any] | None = None
    # How sliding windows appear: none; all (every layer slides, Mistral); gated (every layer
    # slides when use_sliding_window, Qwen3-MoE); optional (when use_sliding_window, the layers
    # from max_window_layers on slide, or as layer_types says, Qwen2/Qwen3); pattern
    # (layer_types, which HF derives when absent: every `layer_period`-th layer is global, the
    # period read from `hf_period_key`, Gemma).
    sliding: Sliding = "none"
    layer_period: int = 0
    hf_period_key: str | None = None
    # Family-specific reading and writing beyond plain keys (a reader with get/require/expect;
    # the fields read so far) -> more fields; (config, HF dict being written) -> None.
    read_hf: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    write_hf: Callable[[Any, dict[str, Any]], None] | None = None
    # --- HF weight names ------------------------------------------------------------------------
    hf_layout: Literal["gpt2", "llama"] = "llama"  # gpt2: Conv1D weights under transformer.h.*
    fused_qkv: bool = False  # q, k, v stored as one `self_attn.qkv_proj` (Phi-3)
    fused_gate_up: bool = False  # gate and up stored as one `mlp.gate_up_proj` (Phi-3)
    hf_router: str = "gate"  # the MoE router's module name under the feed-forward
    # Expert matrices stored [E, in, out] with gate and up interleaved in the columns of
    # `gate_up_proj` (gate = [..., ::2], up = [..., 1::2]) and biases `gate_up_proj_bias`,
    # `down_proj_bias` (gpt-oss); otherwise [E, out, in], gate rows before up rows.
    hf_experts_interleaved: bool = False
    # Llama 4: the feed-forward module's and the shared expert's names; experts stored
    # [E, in, out] (HF's bmm layout), gate columns before up columns.
    hf_mlp: str = "mlp"
    hf_shared: str = "shared_experts"
    hf_experts_in_out: bool = False
    # Gated DeltaNet projections stored as `in_proj_qkvz` and `in_proj_ba`, grouped by key head
    # (Qwen3-Next); else as HF's Qwen3.5 names them (in_proj_qkv, in_proj_z, in_proj_b, in_proj_a)
    fused_linear_attn: bool = False
    # Checkpoint tensors HF's causal LM of this family skips (Qwen3-Next's and Qwen3.5's
    # multi-token-prediction layers `mtp.*`, Qwen3.5's vision tower)
    hf_unused_prefixes: tuple[str, ...] = ()
    # llama.cpp's Qwen3.5 converter reorders the linear layers' value heads from grouped by key
    # head (HF: [k0: v0 v1, k1: v0 v1]) to tiled ([v0 of k0, k1, v1 of k0, k1]) for ggml's
    # broadcast; we put them back
    gguf_v_heads_tiled: bool = False
    # --- GGUF (llama.cpp) -----------------------------------------------------------------------
    gguf_arch: str | None = None  # `general.architecture`; keys are `{gguf_arch}.*`
    gguf_rope_permuted: bool = False  # the converter permutes Q/K rows for interleaved RoPE
    gguf_norm_offset: bool = False  # the converter stores norm weights as 1 + w
    # (metadata reader, fields read so far) -> more fields (llama.cpp's per-arch settings)
    read_gguf: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None

    def layer_types(self, n_layers: int, period: int | None = None) -> tuple[str, ...]:
        """HF's default pattern: every `period`-th layer global, the others sliding."""
        period = period or self.layer_period
        if n_layers > MAX_PATTERN_LAYERS:  # spelled out per layer: bound it before building
            raise ValueError(
                f"num_hidden_layers: {n_layers} layers with a sliding/global pattern exceed the "
                f"{MAX_PATTERN_LAYERS} that glassformer spells out per layer"
            )
        return tuple("full" if (i + 1) % period == 0 else "sliding" for i in range(n_layers))


def like(base: Family, model_type: str, **changes: Any) -> Family:
    """`base` with another model_type; mapping-valued changes extend the base's mappings, and
    `drop_keys` removes HF keys the new family does not have (from every HF mapping)."""
    drop = set(changes.pop("drop_keys", ()))
    for name in ("hf_keys", "hf_defaults", "hf_fixed", "hf_aliases"):
        merged = {**getattr(base, name), **changes.get(name, {})}
        changes[name] = {k: v for k, v in merged.items() if k not in drop}
    changes["traits"] = {**base.traits, **changes.get("traits", {})}
    changes["hf_no_math"] = (base.hf_no_math - drop) | frozenset(changes.get("hf_no_math", ()))
    return dataclasses.replace(base, model_type=model_type, **changes)


# --- the families ---------------------------------------------------------------------------------

GPT2 = Family(
    "gpt2",
    traits=dict(
        position="learned", norm="layernorm", norm_bias=True, qkv_bias=True,
        attn_out_bias=True, mlp="mlp", mlp_bias=True,
    ),
    hf_keys={
        "vocab_size": "vocab_size", "n_embd": "d_model", "n_layer": "n_layers",
        "n_head": "n_heads", "n_inner": "d_ff", "n_positions": "max_seq_len",
        "layer_norm_epsilon": "norm_eps", "activation_function": "activation",
        "tie_word_embeddings": "tie_embeddings", "initializer_range": "init_std",
        "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    },
    hf_defaults=dict(
        n_inner=None, n_positions=1024, layer_norm_epsilon=1e-5, activation_function="gelu_new",
        tie_word_embeddings=True, initializer_range=0.02, bos_token_id=50256,
        eos_token_id=50256,
    ),
    hf_fixed={
        "scale_attn_weights": ((True,), "GPT-2 without attention scaling"),
        "scale_attn_by_inverse_layer_idx": ((False,), "per-layer attention scaling"),
        "add_cross_attention": ((False,), "cross-attention is encoder-decoder only"),
    },
    hf_gelu_tanh="gelu_new",
    rope="none",
    hf_layout="gpt2",
)  # fmt: skip

LLAMA = Family(
    "llama",
    traits=dict(position="rope", norm="rmsnorm", mlp="glu", attention="mha"),
    hf_keys={
        "vocab_size": "vocab_size", "hidden_size": "d_model", "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
        "head_dim": "head_dim", "intermediate_size": "d_ff",
        "max_position_embeddings": "max_seq_len", "rms_norm_eps": "norm_eps",
        "hidden_act": "activation", "tie_word_embeddings": "tie_embeddings",
        "initializer_range": "init_std", "bos_token_id": "bos_token_id",
        "eos_token_id": "eos_token_id", "attention_bias": ("qkv_bias", "attn_out_bias"),
        "mlp_bias": "mlp_bias",
    },
    hf_defaults=dict(
        num_key_value_heads=None, head_dim=None, max_position_embeddings=2048,
        rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
        initializer_range=0.02, bos_token_id=1, eos_token_id=2, attention_bias=False,
        mlp_bias=False,
    ),
    hf_fixed={"pretraining_tp": ((1,), "tensor-parallel slicing of the forward pass")},
    gguf_arch="llama",
    gguf_rope_permuted=True,
)  # fmt: skip

MISTRAL = like(
    LLAMA, "mistral",
    sliding="all",
    hf_defaults=dict(sliding_window=4096, max_position_embeddings=131072),
    drop_keys=("attention_bias", "mlp_bias"),
    gguf_arch=None,
    gguf_rope_permuted=False,
)  # fmt: skip

MIXTRAL = like(
    MISTRAL, "mixtral",
    traits=dict(router_score="softmax", router_norm_topk=True),
    hf_keys={"num_local_experts": "n_experts", "num_experts_per_tok": "n_experts_per_token"},
    hf_defaults=dict(sliding_window=None, rms_norm_eps=1e-5, rope_theta=1_000_000.0),
)  # fmt: skip

QWEN2 = like(
    LLAMA, "qwen2",
    traits=dict(qkv_bias=True, attn_out_bias=False),
    hf_defaults=dict(max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                     use_sliding_window=False, sliding_window=4096, max_window_layers=28),
    sliding="optional",
    drop_keys=("attention_bias", "mlp_bias"),
    gguf_arch="qwen2",
    gguf_rope_permuted=False,
)  # fmt: skip

QWEN3 = like(
    LLAMA, "qwen3",
    traits=dict(qk_norm=True),
    hf_defaults=dict(max_position_embeddings=32768, bos_token_id=None, eos_token_id=None,
                     use_sliding_window=False, sliding_window=4096, max_window_layers=28),
    sliding="optional",
    drop_keys=("mlp_bias",),
    gguf_arch="qwen3",
    gguf_rope_permuted=False,
)  # fmt: skip


def _read_dense_prefix(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    dense = list(r.get("mlp_only_layers", []))
    if dense != list(range(len(dense))):
        raise ValueError(
            f"{r.model_type} config: field 'mlp_only_layers' must be a prefix 0..k-1 of the "
            f"layers, got {dense}"
        )
    return dict(first_k_dense=len(dense))


def _write_dense_prefix(cfg: Any, out: dict[str, Any]) -> None:
    out["mlp_only_layers"] = list(range(cfg.first_k_dense))


QWEN3_MOE = like(
    QWEN3, "qwen3_moe",
    traits=dict(router_score="softmax"),
    hf_keys={
        "num_experts": "n_experts", "num_experts_per_tok": "n_experts_per_token",
        "moe_intermediate_size": "moe_d_ff", "norm_topk_prob": "router_norm_topk",
    },
    hf_defaults=dict(norm_topk_prob=False),
    hf_aliases={"num_local_experts": "num_experts"},
    hf_fixed={"decoder_sparse_step": ((1,), "MoE only every n-th layer")},
    sliding="gated",
    hf_no_math={"max_window_layers"},  # HF's Qwen3-MoE has no per-layer pattern
    drop_keys=("max_window_layers",),
    read_hf=_read_dense_prefix,
    write_hf=_write_dense_prefix,
    gguf_arch=None,
)  # fmt: skip

GEMMA2 = like(
    LLAMA, "gemma2",
    traits=dict(norm_unit_offset=True, norm_placement="sandwich", embed_scale=True,
                qk_norm=False),
    hf_keys={
        "hidden_activation": "activation", "query_pre_attn_scalar": "query_pre_attn_scalar",
        "attn_logit_softcapping": "attn_logit_softcap",
        "final_logit_softcapping": "final_logit_softcap",
    },
    hf_defaults=dict(
        vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256,
        max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, sliding_window=4096, bos_token_id=2, eos_token_id=1,
    ),
    hf_fixed={"use_bidirectional_attention": ((False, None), "bidirectional attention")},
    hf_aliases={"sliding_window_size": "sliding_window"},  # published Gemma 2 9B/27B files
    # HF's Gemma reads hidden_activation; the older hidden_act and the pattern key of other
    # Gemma versions change nothing here.
    hf_no_math={"hidden_act", "sliding_window_pattern", "_sliding_window_pattern"},
    sliding="pattern",
    layer_period=2,
    drop_keys=("hidden_act", "mlp_bias"),
    gguf_arch=None,
    gguf_rope_permuted=False,
)  # fmt: skip


def _read_gemma3_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    n_layers, head_dim = fields["n_layers"], fields["head_dim"]
    pattern = meta.raw("attention.sliding_window_pattern")
    if isinstance(pattern, list | tuple) or hasattr(pattern, "shape"):
        if len(pattern) != n_layers:
            raise ValueError(
                f"{meta.path}: {meta.arch}.attention.sliding_window_pattern has "
                f"{len(pattern)} entries for {n_layers} layers"
            )
        layer_types = tuple("sliding" if bool(p) else "full" for p in pattern)  # true: sliding
    else:
        period = pattern if isinstance(pattern, int) and pattern > 0 else None
        layer_types = GEMMA3_TEXT.layer_types(n_layers, period)
    return dict(
        activation="gelu_tanh",
        sliding_window=meta.int("attention.sliding_window"),
        layer_types=layer_types,
        # llama.cpp: the 27B model (62 layers) scales by d_model / n_heads, others head_dim
        query_pre_attn_scalar=float(
            fields["d_model"] // fields["n_heads"] if n_layers == 62 else head_dim
        ),
        # not stored in GGUF; llama.cpp and HF both fix the local layers' base at 10k
        rope_theta_local=10000.0,
    )


GEMMA3_TEXT = like(
    GEMMA2, "gemma3_text",
    traits=dict(qk_norm=True),
    hf_defaults=dict(
        vocab_size=262208, max_position_embeddings=131072, attn_logit_softcapping=None,
        final_logit_softcapping=None, rope_theta=1_000_000.0, rope_local_base_freq=10000.0,
    ),
    rope="per_layer_type",
    layer_period=6,
    hf_period_key="sliding_window_pattern",  # HF reads it when layer_types is absent
    drop_keys=("sliding_window_pattern", "sliding_window_size"),
    gguf_arch="gemma3",
    gguf_norm_offset=True,
    read_gguf=_read_gemma3_gguf,
)  # fmt: skip

# Gemma 4 (Gemma Team 2026): Gemma 3's layout with plain-scale norms (y = x_hat * w), unit
# attention scale (q and k are RMS-normalised), unscaled value norms and a stored scalar per
# layer; per-layer input embeddings, KV sharing over the last layers, keys-equal-values and
# their own head_dim / KV heads on the full-attention layers, and routed experts beside the
# dense MLP (enable_moe_block). HF derives every full layer's head_dim and KV heads from
# global_head_dim / num_global_key_value_heads (the latter only with attention_k_eq_v), and
# saves them as `per_layer_config`; the last layer is always full.
def _read_gemma4(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kinds = fields.get("layer_types")
    if kinds is not None and kinds[-1] != "full":
        out["layer_types"] = (*kinds[:-1], "full")  # HF forces it (with a warning)
    n_layers = fields["n_layers"]
    kinds = out.get("layer_types", kinds) or ("full",) * n_layers
    k_eq_v = fields.get("global_k_eq_v", False)
    head_dim, kv_heads = r.get("global_head_dim", 512), r.get("num_global_key_value_heads")
    per_layer = r.get("per_layer_config")
    if per_layer is not None:
        want = {str(i) for i, kind in enumerate(kinds) if kind == "full"}
        overrides = {str(k): v for k, v in per_layer.items()}
        shapes = {tuple(sorted(v.items())) for v in overrides.values()}
        if set(overrides) != want or len(shapes) != 1 or not set(dict(*shapes)) <= {
            "head_dim", "num_key_value_heads"
        }:
            raise ValueError(
                f"{r.model_type} config: field 'per_layer_config'={per_layer!r} is not "
                "supported: expected the same head_dim (and num_key_value_heads) on every "
                "full-attention layer and nothing else"
            )
        shape = dict(*shapes)
        head_dim, kv_heads = shape.get("head_dim", fields.get("head_dim")), shape.get(
            "num_key_value_heads"
        )
    elif not k_eq_v:
        kv_heads = None  # HF reads num_global_key_value_heads only with attention_k_eq_v
    out.update(global_head_dim=head_dim, global_n_kv_heads=kv_heads)
    if r.get("enable_moe_block", False):
        out.update(
            moe_beside_mlp=True,
            n_experts=r.require("num_experts"),
            n_experts_per_token=r.require("top_k_experts"),
            moe_d_ff=r.require("moe_intermediate_size"),
        )
    else:
        for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
            r.get(key)  # unused without the MoE block
    return out


def _write_gemma4(cfg: Any, out: dict[str, Any]) -> None:
    out["global_head_dim"] = cfg.global_head_dim
    if cfg.global_k_eq_v or cfg.global_n_kv_heads is None:
        out["num_global_key_value_heads"] = cfg.global_n_kv_heads
    else:  # HF applies the global KV heads without keys-equal-values only this way
        override = {"head_dim": cfg.global_head_dim, "num_key_value_heads": cfg.global_n_kv_heads}
        out["per_layer_config"] = {
            str(i): dict(override) for i in range(cfg.n_layers) if cfg.layer_type(i) == "full"
        }
    out["enable_moe_block"] = cfg.moe_beside_mlp
    if cfg.moe_beside_mlp:
        out.update(
            num_experts=cfg.n_experts,
            top_k_experts=cfg.n_experts_per_token,
            moe_intermediate_size=cfg.moe_d_ff,
        )


def _per_type(meta: Any, key: str, kinds: tuple[str, ...], default: int) -> dict[str, int]:
    """A per-layer integer key (or one integer for all) -> its value for each layer type, which
    must be the same on every layer of that type."""
    raw = meta.raw(key)
    if raw is None:
        raw = default
    values = [int(v) for v in raw] if isinstance(raw, list | tuple) or hasattr(raw, "shape") else (
        [raw] * len(kinds)
    )
    if len(values) != len(kinds):
        raise ValueError(
            f"{meta.path}: {meta.arch}.{key} has {len(values)} entries for {len(kinds)} layers"
        )
    out: dict[str, set[int]] = {}
    for kind, value in zip(kinds, values, strict=True):
        out.setdefault(kind, set()).add(value)
    for kind, seen in out.items():
        if len(seen) > 1:
            raise ValueError(
                f"{meta.path}: {meta.arch}.{key} differs between {kind} layers {sorted(seen)}; "
                "glassformer builds one value per layer type"
            )
    return {kind: seen.pop() for kind, seen in out.items()}


def _read_gemma4_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's gemma4 metadata (key names from gguf.constants): key_length(_swa) and
    rope.dimension_count(_swa) are the full and sliding layers' head_dim, head_count_kv and
    feed_forward_length may be per-layer arrays, sliding_window_pattern is one bool per layer
    (true: sliding). Keys-equal-values shows as full layers without attn_v."""
    from glassformer.loaders.gguf import proportional_rope

    n_layers, tensors = fields["n_layers"], meta.header.tensors
    pattern = meta.raw("attention.sliding_window_pattern")
    if not (isinstance(pattern, list | tuple) or hasattr(pattern, "shape")):
        raise ValueError(
            f"{meta.path}: {meta.arch}.attention.sliding_window_pattern should be one bool per "
            f"layer, got {pattern!r}"
        )
    if len(pattern) != n_layers:
        raise ValueError(
            f"{meta.path}: {meta.arch}.attention.sliding_window_pattern has {len(pattern)} "
            f"entries for {n_layers} layers"
        )
    kinds = tuple("sliding" if bool(p) else "full" for p in pattern)
    head_dim, global_head_dim = meta.int("attention.key_length_swa"), meta.int(
        "attention.key_length"
    )
    for key, want in (
        ("attention.value_length_swa", head_dim),
        ("attention.value_length", global_head_dim),
        ("rope.dimension_count_swa", head_dim),
        ("rope.dimension_count", global_head_dim),
    ):
        if meta.int(key, want) != want:
            raise ValueError(
                f"{meta.path}: {meta.arch}.{key}={meta.int(key)} differs from the head size "
                f"{want}; only whole-head rotary (and keys as wide as values) is supported"
            )
    kv = _per_type(meta, "attention.head_count_kv", kinds, fields["n_heads"])
    shared = meta.int("attention.shared_kv_layers", 0)
    ff = _per_type(
        meta, "feed_forward_length", tuple(
            k + ("+shared" if i >= n_layers - shared else "") for i, k in enumerate(kinds)
        ), fields["d_ff"],
    )  # fmt: skip
    own_ff = {v for k, v in ff.items() if not k.endswith("+shared")}
    shared_ff = {v for k, v in ff.items() if k.endswith("+shared")}
    if len(own_ff) != 1 or not shared_ff <= {*own_ff, 2 * min(own_ff)} or len(shared_ff) > 1:
        raise ValueError(
            f"{meta.path}: {meta.arch}.feed_forward_length {ff} is not one width (doubled on "
            "the KV-sharing layers at most)"
        )
    d_ff = own_ff.pop()
    full_own = [i for i, k in enumerate(kinds) if k == "full" and i < n_layers - shared]
    with_v = {f"blk.{i}.attn_v.weight" in tensors for i in full_own}
    if len(with_v) > 1:
        raise ValueError(f"{meta.path}: some full-attention layers have attn_v, others not")
    ple = meta.int("embedding_length_per_layer_input", 0)
    ple_table = tensors.get("per_layer_token_embd.weight")
    return dict(
        activation="gelu_tanh",
        layer_types=kinds,
        sliding_window=meta.int("attention.sliding_window"),
        head_dim=head_dim,
        global_head_dim=global_head_dim,
        n_kv_heads=kv.get("sliding", kv.get("full")),
        global_n_kv_heads=kv.get("full"),
        global_k_eq_v=with_v == {False},
        n_kv_shared_layers=shared,
        d_ff=d_ff,
        double_wide_mlp=bool(shared_ff) and shared_ff != {d_ff},
        per_layer_dim=ple,
        # without per-layer inputs the table size means nothing; the main vocabulary stands in
        per_layer_vocab_size=ple_table.shape[0] if ple and ple_table else fields["vocab_size"],
        rope_fraction=1.0,
        rope_theta_local=meta.float("rope.freq_base_swa", 10000.0),
        rope_scaling=proportional_rope(meta.header, global_head_dim),
        final_logit_softcap=meta.float("final_logit_softcapping"),
    )


GEMMA4_TEXT = like(
    GEMMA3_TEXT, "gemma4_text",
    traits=dict(norm_unit_offset=False, qk_norm=True, v_norm=True, layer_scalar=True,
                query_pre_attn_scalar=1.0),
    hf_keys={
        "hidden_size_per_layer_input": "per_layer_dim",
        "vocab_size_per_layer_input": "per_layer_vocab_size",
        "attention_k_eq_v": "global_k_eq_v", "num_kv_shared_layers": "n_kv_shared_layers",
        "use_double_wide_mlp": "double_wide_mlp",
    },
    hf_defaults=dict(
        vocab_size=262_144, hidden_size=2304, intermediate_size=9216, num_hidden_layers=30,
        num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=512,
        max_position_embeddings=131_072, final_logit_softcapping=None,
        vocab_size_per_layer_input=262_144, hidden_size_per_layer_input=256,
        attention_k_eq_v=False, num_kv_shared_layers=0, use_double_wide_mlp=False,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                               "rope_theta": 1_000_000.0},
        },
    ),
    hf_fixed={"use_bidirectional_attention": ((None, "vision"), "bidirectional attention "
                                              "over all tokens")},
    # HF's Gemma 4 fixes the default period at 6, scales scores by 1, caps no attention
    # logits and reads RoPE from rope_parameters only: these keys of older Gemmas change nothing
    hf_no_math={"sliding_window_pattern", "query_pre_attn_scalar", "attn_logit_softcapping",
                "rope_theta", "rope_local_base_freq"},
    drop_keys=("query_pre_attn_scalar", "attn_logit_softcapping", "rope_theta",
               "rope_local_base_freq"),
    hf_rope_types=("default", "linear", "llama3", "yarn", "proportional"),
    hf_period_key=None,
    read_hf=_read_gemma4,
    write_hf=_write_gemma4,
    # llama.cpp's converter stores Gemma 4's norm weights as they are: unlike Gemma 3's
    # (1 + w), HF's Gemma 4 norms already multiply by w
    gguf_arch="gemma4",
    gguf_norm_offset=False,
    read_gguf=_read_gemma4_gguf,
)  # fmt: skip

# Gemma 4's unified (encoder-free multimodal) text stack: Gemma 4's layers without per-layer
# inputs or experts, 1024-token windows. Its wrapper config (`gemma4_unified`) adds the image and
# audio embedders, read and written by `_read_gemma4_unified` / `_write_gemma4_unified`.
GEMMA4_UNIFIED_TEXT = like(
    GEMMA4_TEXT, "gemma4_unified_text",
    hf_defaults=dict(sliding_window=1024, max_position_embeddings=262_144),
    drop_keys=("hidden_size_per_layer_input", "vocab_size_per_layer_input"),
    # published configs still carry the per-layer input sizes, which its HF model never reads
    hf_no_math={"hidden_size_per_layer_input", "vocab_size_per_layer_input"},
    gguf_arch=None,
    read_gguf=None,
)  # fmt: skip


def _read_gemma4_unified(outer: dict[str, Any], text: dict[str, Any]) -> dict[str, Any]:
    """The Config fields of a `gemma4_unified` wrapper's vision and audio embedders (`text`:
    its text_config). HF's vision embedder feeds its position-normed width into a projection
    of width output_proj_dims, so the two must agree; token ids outside the text vocabulary are
    HF's defaults for models without that input and are dropped."""
    from glassformer.hf.config import check_value_type

    known = {"text_config", "vision_config", "audio_config", "boi_token_id", "eoi_token_id",
             "image_token_id", "video_token_id", "boa_token_id", "eoa_token_index",
             "audio_token_id", "initializer_range", "tie_word_embeddings"}  # fmt: skip
    from glassformer.hf.config import NO_MATH_KEYS

    unknown = sorted(k for k in outer if k not in known | NO_MATH_KEYS and outer[k] is not None)
    if unknown:
        raise ValueError(
            f"gemma4_unified config: unknown field(s) {unknown}; glassformer does not know "
            "whether they change the model, so it refuses to guess"
        )
    for key in ("boi_token_id", "eoi_token_id", "image_token_id", "video_token_id",
                "boa_token_id", "eoa_token_index", "audio_token_id"):  # fmt: skip
        if outer.get(key) is not None:
            check_value_type("gemma4_unified config", key, outer[key])
    tie_outer = outer.get("tie_word_embeddings", True)
    if tie_outer != text.get("tie_word_embeddings", True):
        raise ValueError(
            f"gemma4_unified config: field 'tie_word_embeddings'={tie_outer!r} disagrees with "
            "the text_config's"
        )
    vocab = text.get("vocab_size", 262_144)
    defaults = dict(boi_token_id=255_999, eoi_token_id=258_882, image_token_id=258_880,
                    video_token_id=258_884, boa_token_id=256_000, eoa_token_index=258_883,
                    audio_token_id=258_881)  # fmt: skip
    ids = {k: outer.get(k, v) for k, v in defaults.items()}
    ids = {k: v if v is not None and 0 <= v < vocab else None for k, v in ids.items()}
    out: dict[str, Any] = dict(
        boi_token_id=ids["boi_token_id"], eoi_token_id=ids["eoi_token_id"],
        image_token_id=ids["image_token_id"], video_token_id=ids["video_token_id"],
        boa_token_id=ids["boa_token_id"], eoa_token_id=ids["eoa_token_index"],
        audio_token_id=ids["audio_token_id"], mm_pad_token_id=text.get("pad_token_id") or 0,
    )  # fmt: skip
    vision, audio = outer.get("vision_config"), outer.get("audio_config")
    no_math = {"initializer_range", "model_type"} | NO_MATH_KEYS
    if vision is not None:
        v = {"patch_size": 16, "pooling_kernel_size": 3, "mm_embed_dim": 3840,
             "mm_posemb_size": 1120, "rms_norm_eps": 1e-6, "output_proj_dims": 3840,
             **{k: x for k, x in vision.items() if x is not None}}  # fmt: skip
        extra = sorted(set(v) - no_math - {"patch_size", "pooling_kernel_size", "mm_embed_dim",
                                           "mm_posemb_size", "rms_norm_eps", "output_proj_dims",
                                           "model_patch_size", "num_soft_tokens"})  # fmt: skip
        if extra:
            raise ValueError(f"gemma4_unified vision_config: unknown field(s) {extra}")
        if v["output_proj_dims"] != v["mm_embed_dim"]:
            raise ValueError(
                f"gemma4_unified vision_config: field 'output_proj_dims'="
                f"{v['output_proj_dims']!r} must equal mm_embed_dim={v['mm_embed_dim']!r} "
                "(the projection reads the position-normed patches)"
            )
        bidirectional = text.get("use_bidirectional_attention", "vision")
        out.update(
            vision_patch_size=v["patch_size"], vision_pool=v["pooling_kernel_size"],
            vision_embed_dim=v["mm_embed_dim"], vision_posemb_size=v["mm_posemb_size"],
            vision_norm_eps=float(v["rms_norm_eps"]),
            image_bidirectional="sliding" if bidirectional == "vision" else "none",
        )  # fmt: skip
        if out["image_token_id"] is None:
            raise ValueError(
                f"gemma4_unified config: field 'image_token_id'={outer.get('image_token_id')!r} "
                f"is outside the vocabulary of {vocab}"
            )
    if audio is not None:
        a = {"audio_embed_dim": 640, "rms_norm_eps": 1e-6,
             **{k: x for k, x in audio.items() if x is not None}}  # fmt: skip
        extra = sorted(set(a) - no_math - {"audio_embed_dim", "rms_norm_eps", "hidden_size",
                                           "output_proj_dims", "audio_samples_per_token"})
        if extra:
            raise ValueError(f"gemma4_unified audio_config: unknown field(s) {extra}")
        out.update(audio_frame_size=a["audio_embed_dim"], audio_norm_eps=float(a["rms_norm_eps"]))
        if out["audio_token_id"] is None:
            raise ValueError(
                f"gemma4_unified config: field 'audio_token_id'={outer.get('audio_token_id')!r} "
                f"is outside the vocabulary of {vocab}"
            )
    return out


def _write_gemma4_unified(cfg: Any, text: dict[str, Any]) -> dict[str, Any]:
    """The `gemma4_unified` wrapper dict around the text_config dict `text`."""
    if cfg.image_bidirectional == "all":
        raise ValueError(
            "config_to_hf: HF 'gemma4_unified' cannot express image_bidirectional='all' (its "
            "'all' makes every token bidirectional)"
        )
    text = dict(text, model_type="gemma4_unified_text", pad_token_id=cfg.mm_pad_token_id)
    text["use_bidirectional_attention"] = "vision" if cfg.image_bidirectional == "sliding" else None
    if not text.get("enable_moe_block"):
        text.pop("enable_moe_block", None)
    out: dict[str, Any] = {
        "model_type": "gemma4_unified", "text_config": text,
        "tie_word_embeddings": cfg.tie_embeddings, "vision_config": None, "audio_config": None,
    }  # fmt: skip
    ids = dict(boi_token_id=cfg.boi_token_id, eoi_token_id=cfg.eoi_token_id,
               image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id,
               boa_token_id=cfg.boa_token_id, eoa_token_index=cfg.eoa_token_id,
               audio_token_id=cfg.audio_token_id)  # fmt: skip
    # None would read back as HF's default id, which may lie inside a large vocabulary
    out.update({k: (-1 if v is None else v) for k, v in ids.items()})
    if cfg.vision_patch_size:
        out["vision_config"] = dict(
            model_type="gemma4_unified_vision", patch_size=cfg.vision_patch_size,
            pooling_kernel_size=cfg.vision_pool, mm_embed_dim=cfg.vision_embed_dim,
            mm_posemb_size=cfg.vision_posemb_size, rms_norm_eps=cfg.vision_norm_eps,
            output_proj_dims=cfg.vision_embed_dim,
        )  # fmt: skip
    if cfg.audio_frame_size:
        out["audio_config"] = dict(
            model_type="gemma4_unified_audio", audio_embed_dim=cfg.audio_frame_size,
            rms_norm_eps=cfg.audio_norm_eps,
        )  # fmt: skip
    return out


# DeepSeek-V3's MoE (sigmoid router with a balancing bias, grouped top-k, shared experts, dense
# first layers, next-token-prediction modules) as HF names it; GLM-4.5 reuses it.
_DEEPSEEK_MOE_KEYS = {
        "n_routed_experts": "n_experts", "num_experts_per_tok": "n_experts_per_token",
        "n_shared_experts": "n_shared_experts", "moe_intermediate_size": "moe_d_ff",
        "norm_topk_prob": "router_norm_topk", "n_group": "router_n_groups",
        "topk_group": "router_topk_groups", "routed_scaling_factor": "routed_scaling",
        "first_k_dense_replace": "first_k_dense", "num_nextn_predict_layers": "n_mtp_modules",
}  # fmt: skip

DEEPSEEK_V3 = like(
    LLAMA, "deepseek_v3",
    traits=dict(attention="mla", router_score="sigmoid", router_bias=True),
    hf_keys={
        "q_lora_rank": "q_lora_rank", "kv_lora_rank": "kv_lora_rank",
        "qk_nope_head_dim": "qk_nope_head_dim", "qk_rope_head_dim": "qk_rope_head_dim",
        "v_head_dim": "v_head_dim", "rope_interleave": "rope_interleaved",
        **_DEEPSEEK_MOE_KEYS,
    },
    hf_defaults=dict(
        max_position_embeddings=4096, bos_token_id=0, eos_token_id=1, q_lora_rank=1536,
        rope_interleave=True, n_shared_experts=1, norm_topk_prob=True, n_group=8, topk_group=4,
        routed_scaling_factor=2.5, first_k_dense_replace=3, num_nextn_predict_layers=1,
    ),
    hf_fixed={
        "moe_layer_freq": ((1,), "MoE only every n-th layer"),
        "topk_method": (("noaux_tc",), "routing method"),
        "scoring_func": (("sigmoid",), "router score"),
    },
    hf_no_math={"qk_head_dim", "head_dim"},  # derived from the MLA dims
    drop_keys=("head_dim", "mlp_bias"),
    gguf_arch=None,
    gguf_rope_permuted=False,
)  # fmt: skip


# Phi-3 (Abdin et al. 2024): Llama's math with q/k/v and gate/up each stored as one matrix, a
# window on every layer, partial rotary allowed, LongRoPE for the 128k models (HF reads the
# legacy names 'su' and 'yarn' as 'longrope' for this family; the original context is the
# top-level original_max_position_embeddings).
def _write_phi3(cfg: Any, out: dict[str, Any]) -> None:
    # HF's default pad id (32000) must index the embedding; which id pads changes no logits
    if cfg.vocab_size <= 32000:
        out["pad_token_id"] = None
    if cfg.rope_scaling is not None and cfg.rope_scaling.type == "longrope":
        out["original_max_position_embeddings"] = cfg.rope_scaling.original_max_seq_len


def _read_phi3_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """Phi-3's window (0: none, as Phi-4 files say) and LongRoPE's two factor sets, which the
    converter stores as tensors with the cos/sin scale and the original context as keys."""
    from glassformer.loaders.gguf import read_f32_vector  # the loader is calling us

    out: dict[str, Any] = dict(sliding_window=meta.get("attention.sliding_window", 0, int) or None)
    header = meta.header
    if "rope_factors_long.weight" not in header.tensors:
        return out
    n = int(fields["head_dim"] * fields["rope_fraction"]) // 2
    original = meta.int("rope.scaling.original_context_length")
    out["rope_scaling"] = RopeScaling(
        "longrope",
        fields["max_seq_len"] / original,
        original_max_seq_len=original,
        attention_factor=meta.float("rope.scaling.attn_factor"),
        short_factor=tuple(read_f32_vector(header, "rope_factors_short.weight", n).tolist()),
        long_factor=tuple(read_f32_vector(header, "rope_factors_long.weight", n).tolist()),
    )
    return out


PHI3 = like(
    LLAMA, "phi3",
    hf_defaults=dict(max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1,
                     eos_token_id=32000, sliding_window=None,
                     original_max_position_embeddings=4096),
    # HF's Phi-3 has no biases whatever these say; the original context only feeds LongRoPE
    hf_no_math={"attention_bias", "mlp_bias", "original_max_position_embeddings"},
    drop_keys=("attention_bias", "mlp_bias"),
    sliding="all",
    hf_rope_types=("default", "longrope"),
    hf_rope_aliases={"su": "longrope", "yarn": "longrope"},
    write_hf=_write_phi3,
    fused_qkv=True,
    fused_gate_up=True,
    gguf_arch="phi3",  # llama.cpp: NeoX rotary; attn_qkv and ffn_up = [gate; up] fused
    gguf_rope_permuted=False,
    read_gguf=_read_phi3_gguf,
)  # fmt: skip

def _read_olmo2_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp files OLMo 3 as olmo2 with `attention.sliding_window`: then every 4th layer
    is full (its pattern of 4), and the sliding layers take plain RoPE (no YaRN) at the same
    base unless `rope.freq_base_swa` says otherwise, as HF's Olmo3 does."""
    window = meta.get("attention.sliding_window", 0, int)
    if not window:
        return {}
    if meta.raw("rope.scaling.yarn_attn_factor") is not None:
        raise ValueError(
            f"{meta.path}: metadata {meta.arch}.rope.scaling.yarn_attn_factor is not read for "
            "OLMo 3 files (its meaning against HF's attention_factor is unconfirmed)"
        )
    return dict(
        hf_model_type="olmo3",
        sliding_window=window,
        layer_types=OLMO3.layer_types(fields["n_layers"]),
        rope_theta_local=meta.float("rope.freq_base_swa", fields["rope_theta"]),
    )


# OLMo 2 (Team OLMo 2024, "2 OLMo 2 Furious"): Llama's sizes with the norms moved onto the
# sublayer outputs and QK-norm over the whole q and k projections. OLMo 3 adds Gemma-style
# sliding/full layers (every 4th full) with separate rope parameters per layer type.
OLMO2 = like(
    LLAMA, "olmo2",
    traits=dict(norm_placement="output", qk_norm=True, qk_norm_scope="all"),
    hf_defaults=dict(vocab_size=50304, rms_norm_eps=1e-5, bos_token_id=None,
                     eos_token_id=50279),
    drop_keys=("mlp_bias", "pretraining_tp"),
    gguf_arch="olmo2",  # llama.cpp: NeoX rotary, so no Q/K permutation
    gguf_rope_permuted=False,
    read_gguf=_read_olmo2_gguf,
)  # fmt: skip


# --- NoPE layers (SmolLM3, Llama 4) --------------------------------------------------------------
def _read_nope(r: Any, n_layers: int) -> tuple[int, ...]:
    """HF's `no_rope_layers` (1: the layer uses RoPE, 0: NoPE), derived when absent: every
    `no_rope_layer_interval`-th layer NoPE. Returns the NoPE layers' indices."""
    flags = r.get("no_rope_layers")
    interval = r.get("no_rope_layer_interval")  # read (HF ignores it) when flags are given
    if not flags:
        if n_layers > MAX_PATTERN_LAYERS:
            raise ValueError(
                f"{r.model_type} config: field 'num_hidden_layers'={n_layers} exceeds the "
                f"{MAX_PATTERN_LAYERS} layers glassformer spells a NoPE pattern out for"
            )
        return tuple(i for i in range(n_layers) if (i + 1) % interval == 0)
    if len(flags) < n_layers or any(f not in (0, 1) or isinstance(f, float) for f in flags):
        raise ValueError(
            f"{r.model_type} config: field 'no_rope_layers' must hold a 0 or 1 for each of the "
            f"{n_layers} layers, got {list(flags)[:8]}"
        )
    return tuple(i for i in range(n_layers) if not flags[i])


def _write_nope(cfg: Any, out: dict[str, Any]) -> None:
    nope = set(cfg.nope_layers)
    out["no_rope_layers"] = [0 if i in nope else 1 for i in range(cfg.n_layers)]


_HF_KINDS = {
    "full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked",
}  # fmt: skip


def _read_kinds(r: Any, n_layers: int, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    kinds = r.get("layer_types")
    if kinds is None:
        return None
    bad = sorted({str(k) for k in kinds if _HF_KINDS.get(k) not in allowed})
    if bad:
        raise ValueError(f"{r.model_type} config: field 'layer_types' has unsupported {bad}")
    if len(kinds) != n_layers:
        raise ValueError(
            f"{r.model_type} config: field 'layer_types' has {len(kinds)} entries for "
            f"num_hidden_layers={n_layers}"
        )
    return tuple(_HF_KINDS[k] for k in kinds)


def _write_kinds(cfg: Any, out: dict[str, Any]) -> None:
    names = {v: k for k, v in _HF_KINDS.items()}
    out["layer_types"] = [names[cfg.layer_type(i)] for i in range(cfg.n_layers)]


# SmolLM3 (Hugging Face 2025): Llama with every `no_rope_layer_interval`-th layer NoPE; when
# use_sliding_window is set, HF's derived pattern slides on the NoPE layers.
def _read_smollm3(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    n = fields["n_layers"]
    nope = _read_nope(r, n)
    window, use = r.get("sliding_window"), r.get("use_sliding_window")
    kinds = _read_kinds(r, n, ("full", "sliding"))
    if kinds is None:
        on = use and window is not None
        kinds = tuple("sliding" if on and i in nope else "full" for i in range(n))
    out: dict[str, Any] = dict(nope_layers=nope)
    if "sliding" in kinds:
        if not use or window is None:
            raise ValueError(
                f"smollm3 config: field 'layer_types' has sliding layers but "
                f"use_sliding_window={use!r}, sliding_window={window!r} (HF's attention paths "
                "disagree on what that means)"
            )
        out.update(sliding_window=window, layer_types=kinds)
    return out


def _write_smollm3(cfg: Any, out: dict[str, Any]) -> None:
    # HF's default pad id (128004) must index the embedding; which id pads changes no logits
    if cfg.vocab_size <= 128004:
        out["pad_token_id"] = None
    _write_nope(cfg, out)
    out["use_sliding_window"] = cfg.sliding_window is not None
    out["sliding_window"] = cfg.sliding_window
    _write_kinds(cfg, out)


def _read_smollm3_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    # llama.cpp fixes SmolLM3's NoPE step at 4 (no GGUF key) and has no sliding window
    n = fields["n_layers"]
    return dict(nope_layers=tuple(i for i in range(n) if (i + 1) % 4 == 0))


SMOLLM3 = like(
    LLAMA, "smollm3",
    hf_defaults=dict(
        max_position_embeddings=32768, tie_word_embeddings=True, bos_token_id=128000,
        eos_token_id=128001, rope_theta=2000000.0, use_sliding_window=False,
        sliding_window=None, no_rope_layer_interval=4,
    ),
    # SmolLM3-3B's file keeps Qwen2's max_window_layers, which HF's SmolLM3Config does not read
    hf_no_math={"max_window_layers"},
    read_hf=_read_smollm3,
    write_hf=_write_smollm3,
    gguf_arch="smollm3",
    gguf_rope_permuted=True,  # the converter is llama's: Q/K rows permuted
    read_gguf=_read_smollm3_gguf,
)  # fmt: skip

OLMO3 = like(
    OLMO2, "olmo3",
    hf_defaults=dict(sliding_window=4096, rope_theta=500000.0),
    sliding="pattern",
    layer_period=4,
    rope="per_layer_type",
    gguf_arch=None,  # llama.cpp files OLMo 3 as olmo2 with a window (_read_olmo2_gguf)
    read_gguf=None,
)  # fmt: skip

def _read_glm4_moe(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("n_shared_experts") == 0:
        raise ValueError(
            "glm4_moe config: field 'n_shared_experts'=0 is not supported (HF's Glm4Moe then "
            "builds a zero-width shared expert, which glassformer does not)"
        )
    return {}


def _read_glm4moe_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's MoE settings for GLM-4.5 (the converter writes them from config.json)."""
    gating = meta.get("expert_gating_func", 2, int)
    if gating != 2:  # gguf.ExpertGatingFuncType.SIGMOID
        raise ValueError(
            f"{meta.path}: metadata {meta.arch}.expert_gating_func={gating} is not supported "
            "(GLM-4.5 routes with a sigmoid, 2)"
        )
    norm = meta.raw("expert_weights_norm")
    if norm is not None and not isinstance(norm, bool):
        raise ValueError(f"{meta.path}: metadata {meta.arch}.expert_weights_norm must be a bool")
    return dict(
        n_shared_experts=meta.get("expert_shared_count", 0, int),
        first_k_dense=meta.get("leading_dense_block_count", 0, int),
        routed_scaling=meta.float("expert_weights_scale", 1.0),
        router_norm_topk=bool(norm),
        router_n_groups=meta.get("expert_group_count", 1, int),
        router_topk_groups=meta.get("expert_group_used_count", 1, int),
        n_mtp_modules=meta.get("nextn_predict_layers", 0, int),
    )


# GLM-4.5 (Zeng et al. 2025, "GLM-4.5: Agentic, Reasoning, and Coding (ARC) Foundation
# Models"): GQA with q/k/v biases (none on the output), optional per-head QK-norm, half-split
# partial rotary (HF's default share 0.5), and DeepSeek-V3's MoE: sigmoid router with a
# balancing bias, grouped top-k, shared experts, dense first layers. The checkpoints' extra
# next-token-prediction layer (num_nextn_predict_layers) is not part of HF's model, as for
# DeepSeek-V3's MTP here: counted, not built unless asked.
GLM4_MOE = like(
    LLAMA, "glm4_moe",
    traits=dict(router_score="sigmoid", router_bias=True, attn_out_bias=False),
    hf_keys={
        "attention_bias": "qkv_bias", "use_qk_norm": "qk_norm",
        **_DEEPSEEK_MOE_KEYS,
    },
    hf_defaults=dict(
        vocab_size=151552, hidden_size=4096, intermediate_size=10944, num_hidden_layers=46,
        num_attention_heads=96, num_key_value_heads=8, max_position_embeddings=131072,
        rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=None, use_qk_norm=False,
        n_routed_experts=128, num_experts_per_tok=8, n_shared_experts=1,
        moe_intermediate_size=1408, norm_topk_prob=True, n_group=1, topk_group=1,
        routed_scaling_factor=1.0, first_k_dense_replace=1, num_nextn_predict_layers=1,
        partial_rotary_factor=0.5,
    ),
    hf_aliases={"num_mtp_layers": "num_nextn_predict_layers"},
    drop_keys=("mlp_bias", "pretraining_tp"),
    read_hf=_read_glm4_moe,
    gguf_arch="glm4moe",  # llama.cpp: NeoX rotary, so no Q/K permutation
    gguf_rope_permuted=False,
    read_gguf=_read_glm4moe_gguf,
)  # fmt: skip

# gpt-oss (OpenAI 2025): Mixtral-like MoE in every layer, with attention sinks, biases on the
# attention and expert projections and the router, a clamped SwiGLU (swiglu_alpha, swiglu_limit;
# hidden_act is never read by HF's experts), sliding (128) and full layers alternating, and YaRN
# RoPE without truncation by default.
def _read_gpt_oss(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    # The published checkpoints store the experts as MXFP4 blocks and scales, which the weight
    # map decodes (hf/weights.py `dequantize_mxfp4`); no other quantization is read.
    quant = r.get("quantization_config")
    method = quant.get("quant_method") if isinstance(quant, dict) else quant
    if quant is not None and method != "mxfp4":
        raise ValueError(
            f"gpt_oss config: field 'quantization_config' with quant_method {method!r} is not "
            "supported (only the published checkpoints' 'mxfp4')"
        )
    return {}


def _read_gpt_oss_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    # llama.cpp fixes these for gpt-oss: sliding layers every other one from the first, the
    # clamped SwiGLU's alpha and limit; the GGUF stores YaRN's factor and original context
    # (llama.cpp's betas default to 32 and 1), and HF's gpt-oss does not truncate YaRN's
    # correction range.
    scaling = fields["rope_scaling"]
    if scaling is not None:
        scaling = dataclasses.replace(
            scaling, beta_fast=scaling.beta_fast or 32.0, beta_slow=scaling.beta_slow or 1.0,
            truncate=False,
        )  # fmt: skip
    return dict(
        sliding_window=meta.int("attention.sliding_window"),
        layer_types=GPT_OSS.layer_types(fields["n_layers"]),
        glu_alpha=1.702,
        glu_limit=7.0,
        rope_scaling=scaling,
    )


GPT_OSS = like(
    MIXTRAL, "gpt_oss",
    traits=dict(attn_sinks=True, router_logit_bias=True, mlp_bias=True, activation="silu",
                glu_up_offset=1.0),
    hf_keys={"attention_bias": ("qkv_bias", "attn_out_bias"), "swiglu_alpha": "glu_alpha",
             "swiglu_limit": "glu_limit"},
    hf_defaults=dict(
        vocab_size=201088, hidden_size=2880, intermediate_size=2880, num_hidden_layers=36,
        num_attention_heads=64, num_key_value_heads=8, head_dim=64, sliding_window=128,
        max_position_embeddings=131072, rms_norm_eps=1e-5, num_local_experts=128,
        num_experts_per_tok=4, swiglu_alpha=1.702, swiglu_limit=7.0, attention_bias=True,
        bos_token_id=None, eos_token_id=None, rope_theta=150000.0,
    ),
    # the published files also carry OpenAI's own names: experts_per_token duplicates
    # num_experts_per_tok; initial_context_length is not read by HF (YaRN's is in rope_scaling)
    hf_aliases={"experts_per_token": "num_experts_per_tok"},
    hf_no_math={"hidden_act", "initial_context_length"},
    drop_keys=("hidden_act", "pretraining_tp"),
    sliding="pattern",
    layer_period=2,
    hf_rope_default=dict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0,
                         truncate=False, original_max_position_embeddings=4096),
    hf_router="router",
    hf_experts_interleaved=True,
    read_hf=_read_gpt_oss,
    gguf_arch="gpt-oss",
    gguf_rope_permuted=False,
    read_gguf=_read_gpt_oss_gguf,
)  # fmt: skip


# Llama 4 (Meta 2025): RoPE layers attend within chunks (q/k unit-RMS-normalised), every
# `no_rope_layer_interval`-th layer is NoPE and global (query temperature tuning); MoE on every
# `interleave_moe_layer_step`-th layer, one shared expert plus top-k sigmoid experts whose input
# the routing weight scales; dense layers are `intermediate_size_mlp` wide.
def _read_llama4(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    n = fields["n_layers"]
    nope = _read_nope(r, n)
    chunk = r.get("attention_chunk_size")
    kinds = _read_kinds(r, n, ("full", "chunked"))
    if kinds is None:  # HF: the RoPE layers are chunked
        kinds = tuple(
            "chunked" if i not in nope and chunk is not None else "full" for i in range(n)
        )
    out: dict[str, Any] = dict(nope_layers=nope, attn_temperature_scale=float(r.get("attn_scale")))
    if "chunked" in kinds:
        if chunk is None:
            raise ValueError(
                "llama4_text config: field 'layer_types' has chunked layers but "
                "attention_chunk_size is null"
            )
        out["attention_chunk_size"] = chunk
        if "full" in kinds:  # all chunked: the Config's default for a chunk size alone
            out["layer_types"] = kinds
    floor = r.get("floor_scale")  # read either way: HF ignores it without tuning
    if r.get("attn_temperature_tuning") and nope:
        out["attn_temperature_floor"] = floor
    step = r.get("interleave_moe_layer_step")
    moe = r.get("moe_layers")
    if moe is not None:
        moe = list(moe)
        step = moe[0] + 1 if moe and isinstance(moe[0], int) else step
        if not moe or moe != list(range(step - 1, n, step)):
            raise ValueError(
                f"llama4_text config: field 'moe_layers'={moe[:8]} is not supported (MoE on "
                "every k-th layer, k = interleave_moe_layer_step, is)"
            )
    out["moe_layer_step"] = step
    return out


def _write_llama4(cfg: Any, out: dict[str, Any]) -> None:
    _write_nope(cfg, out)
    out["attention_chunk_size"] = cfg.attention_chunk_size
    _write_kinds(cfg, out)
    out["attn_temperature_tuning"] = cfg.attn_temperature_floor is not None
    out["floor_scale"] = cfg.attn_temperature_floor or 8192
    out["attn_scale"] = cfg.attn_temperature_scale
    step = cfg.moe_layer_step
    out["interleave_moe_layer_step"] = step
    out["moe_layers"] = list(range(step - 1, cfg.n_layers, step))


# What llama.cpp fixes for Llama 4 (no GGUF keys): the chunk (8192), every 4th layer NoPE and
# global, the NoPE temperature (floor 8192, scale 0.1), q/k norm unless there are 128 experts.
# A file with sliding_window = 0 (MobileLLM: no chunks, RoPE everywhere) is refused below.
_LLAMA4_CPP_CHUNK = 8192


def _read_llama4_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    n, path, arch = fields["n_layers"], meta.header.path, meta.arch
    experts = meta.int("expert_count", 0)
    if not experts:
        raise ValueError(f"{path}: {arch} without experts (MobileLLM) is not supported")
    window = meta.get("attention.sliding_window", None, int)
    if window == 0:
        raise ValueError(
            f"{path}: {arch}.attention.sliding_window = 0 (no chunked attention, RoPE on every "
            "layer, as llama.cpp reads it) is not supported"
        )
    chunk = meta.get("attention.chunk_size", None, int)  # written by some tools, not llama.cpp
    if chunk not in (None, _LLAMA4_CPP_CHUNK):
        raise ValueError(
            f"{path}: {arch}.attention.chunk_size = {chunk}; llama.cpp fixes the chunk at "
            f"{_LLAMA4_CPP_CHUNK}, and glassformer reads Llama 4 GGUFs as llama.cpp does"
        )
    nope = tuple(i for i in range(n) if (i + 1) % 4 == 0)
    return dict(
        n_experts=experts,
        n_experts_per_token=meta.int("expert_used_count"),
        moe_d_ff=meta.int("expert_feed_forward_length"),
        moe_layer_step=meta.int("interleave_moe_layer_step"),
        nope_layers=nope,
        attention_chunk_size=_LLAMA4_CPP_CHUNK,
        layer_types=tuple("full" if i in nope else "chunked" for i in range(n)),
        attn_temperature_floor=8192,
        attn_temperature_scale=0.1,
        qk_l2_norm=experts != 128,
    )


LLAMA4_TEXT = like(
    LLAMA, "llama4_text",
    traits=dict(rope_interleaved=True, router_score="sigmoid", router_norm_topk=False,
                router_scales_input=True, n_shared_experts=1),
    hf_keys={
        "intermediate_size_mlp": "d_ff", "intermediate_size": "moe_d_ff",
        "num_local_experts": "n_experts", "num_experts_per_tok": "n_experts_per_token",
        "use_qk_norm": "qk_l2_norm",
    },
    hf_defaults=dict(
        vocab_size=202048, hidden_size=5120, intermediate_size=8192,
        intermediate_size_mlp=16384, num_hidden_layers=48, num_attention_heads=40,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, num_experts_per_tok=1, num_local_experts=16,
        interleave_moe_layer_step=1, use_qk_norm=True, no_rope_layer_interval=4,
        attention_chunk_size=8192, attn_temperature_tuning=True, floor_scale=8192,
        attn_scale=0.1, rope_theta=500000.0,
    ),
    drop_keys=("mlp_bias",),
    read_hf=_read_llama4,
    write_hf=_write_llama4,
    hf_mlp="feed_forward",
    hf_router="router",
    hf_shared="shared_expert",
    hf_experts_in_out=True,
    hf_unused_prefixes=("vision_model.", "multi_modal_projector."),  # the multimodal wrapper's
    gguf_arch="llama4",
    gguf_rope_permuted=False,  # HF's Llama 4 already rotates pairs (2i, 2i + 1), as ggml does
    read_gguf=_read_llama4_gguf,
)  # fmt: skip


# Qwen3-Next and Qwen3.5 (Qwen team 2025-26): hybrids of Gated DeltaNet layers ("linear") and
# gated full attention ("full"), zero-centred (1 + w) RMSNorms, partial rotary, an MoE whose one
# shared expert is scaled by a sigmoid gate. HF names the layers in `layer_types`
# (linear_attention | full_attention) or, when absent, makes every `full_attention_interval`-th
# layer full.
_HYBRID_NAMES = {"linear_attention": "linear", "full_attention": "full"}


def _read_hybrid_layers(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    n_layers = fields["n_layers"]
    interval = r.get("full_attention_interval")
    if interval is not None and not (
        isinstance(interval, int) and not isinstance(interval, bool) and interval > 0
    ):
        raise ValueError(
            f"{r.model_type} config: field 'full_attention_interval' must be a positive "
            f"integer, got {interval!r}"
        )
    if n_layers > MAX_PATTERN_LAYERS:  # spelled out per layer: bound it before building
        raise ValueError(
            f"{r.model_type} config: field 'num_hidden_layers'={n_layers} exceeds the "
            f"{MAX_PATTERN_LAYERS} layers glassformer spells a layer pattern out for"
        )
    kinds = r.get("layer_types")
    if kinds is None:
        period = interval or 4  # HF's default
        kinds = ["full_attention" if (i + 1) % period == 0 else "linear_attention"
                 for i in range(n_layers)]  # fmt: skip
    if not isinstance(kinds, list):
        raise ValueError(f"{r.model_type} config: field 'layer_types' must be a list")
    bad = sorted({repr(k) for k in kinds if k not in _HYBRID_NAMES})
    if bad:
        raise ValueError(
            f"{r.model_type} config: field 'layer_types' has unsupported layer type(s) "
            f"{', '.join(bad)}; expected linear_attention or full_attention"
        )
    if len(kinds) != n_layers:
        raise ValueError(
            f"{r.model_type} config: field 'layer_types' has {len(kinds)} entries for "
            f"num_hidden_layers={n_layers}"
        )
    _check_mrope(r)
    types = tuple(_HYBRID_NAMES[k] for k in kinds)
    return dict(layer_types=None if "linear" not in types else types)


def _check_mrope(r: Any) -> None:
    """Qwen3.5's multimodal RoPE splits the rotary frequencies among three position rows (time,
    height, width of an image patch); a text token has the same position in all three, so for
    text the split changes nothing. Only its form is checked."""
    params = r.get("rope_parameters") or {}
    section = params.get("mrope_section") if isinstance(params, dict) else None
    if section is not None and not (
        isinstance(section, list)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in section)
    ):
        raise ValueError(
            f"{r.model_type} config: field 'rope_parameters.mrope_section' must be a list of "
            f"integers >= 0, got {section!r}"
        )
    interleaved = params.get("mrope_interleaved") if isinstance(params, dict) else None
    if interleaved is not None and not isinstance(interleaved, bool):
        raise ValueError(
            f"{r.model_type} config: field 'rope_parameters.mrope_interleaved' must be true or "
            f"false, got {interleaved!r}"
        )


def _write_hybrid_layers(cfg: Any, out: dict[str, Any]) -> None:
    names = {"linear": "linear_attention", "full": "full_attention"}
    out["layer_types"] = [names.get(cfg.layer_type(i), cfg.layer_type(i))
                          for i in range(cfg.n_layers)]  # fmt: skip


def _read_qwen3_next(r: Any, fields: dict[str, Any]) -> dict[str, Any]:
    return {**_read_dense_prefix(r, fields), **_read_hybrid_layers(r, fields)}


def _write_qwen3_next(cfg: Any, out: dict[str, Any]) -> None:
    _write_dense_prefix(cfg, out)
    _write_hybrid_layers(cfg, out)


def _read_qwen_hybrid_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's qwen3next / qwen35 / qwen35moe settings. The linear layers are those with
    Gated DeltaNet tensors (`ssm_a`); `full_attention_interval`, when present, must agree.
    Their sizes: ssm.state_size = key head dim, ssm.group_count = key heads,
    ssm.time_step_rank = value heads, ssm.inner_size = value heads x value head dim."""
    n = fields["n_layers"]
    linear = tuple(f"blk.{i}.ssm_a" in meta.header.tensors for i in range(n))
    interval = meta.get("full_attention_interval", None, int)
    if interval is not None and (
        interval <= 0 or linear != tuple((i + 1) % interval != 0 for i in range(n))
    ):
        raise ValueError(
            f"{meta.path}: metadata {meta.arch}.full_attention_interval={interval} does not "
            "match the layers that hold linear-attention tensors"
        )
    n_v, inner = meta.int("ssm.time_step_rank"), meta.int("ssm.inner_size")
    if n_v <= 0 or inner % n_v:
        raise ValueError(
            f"{meta.path}: metadata {meta.arch}.ssm.inner_size={inner} is not a multiple of "
            f"ssm.time_step_rank={n_v}"
        )
    out: dict[str, Any] = dict(
        layer_types=tuple("linear" if x else "full" for x in linear) if any(linear) else None,
        linear_n_k_heads=meta.int("ssm.group_count"), linear_n_v_heads=n_v,
        linear_k_head_dim=meta.int("ssm.state_size"), linear_v_head_dim=inner // n_v,
        linear_conv_kernel=meta.int("ssm.conv_kernel"),
    )  # fmt: skip
    if fields.get("n_experts"):
        # leading dense layers (Qwen3-Next's mlp_only_layers) hold no router
        routed = [f"blk.{i}.ffn_gate_inp.weight" in meta.header.tensors for i in range(n)]
        out["first_k_dense"] = routed.index(True) if True in routed else n
        out["shared_expert_d_ff"] = meta.int("expert_shared_feed_forward_length")
        norm = meta.raw("expert_weights_norm")  # llama.cpp renormalises unless told otherwise
        if norm is not None and not isinstance(norm, bool):
            raise ValueError(
                f"{meta.path}: metadata {meta.arch}.expert_weights_norm must be a bool"
            )
        out["router_norm_topk"] = True if norm is None else norm
    return out


_LINEAR_KEYS = {
    "linear_num_key_heads": "linear_n_k_heads", "linear_num_value_heads": "linear_n_v_heads",
    "linear_key_head_dim": "linear_k_head_dim", "linear_value_head_dim": "linear_v_head_dim",
    "linear_conv_kernel_dim": "linear_conv_kernel",
}  # fmt: skip
_LINEAR_DEFAULTS = dict(
    linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
    linear_value_head_dim=128, linear_conv_kernel_dim=4,
)  # fmt: skip
# keys of published Qwen3.5 files that HF's text model does not read: the multi-token-prediction
# layers (HF skips the `mtp.*` weights), the state dtype of the delta rule in other engines
_QWEN3_5_NO_MATH = {"mtp_num_hidden_layers", "mtp_use_dedicated_embeddings", "mamba_ssm_dtype",
                    "use_sliding_window"}  # fmt: skip

QWEN3_5_TEXT = like(
    QWEN3, "qwen3_5_text",
    traits=dict(norm_unit_offset=True, attn_output_gate=True),
    hf_keys=_LINEAR_KEYS,
    hf_defaults=dict(
        vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
        num_attention_heads=16, num_key_value_heads=4, head_dim=256, rms_norm_eps=1e-6,
        max_position_embeddings=32768, partial_rotary_factor=0.25, **_LINEAR_DEFAULTS,
    ),
    # HF's Qwen3.5 always gates the attention output (published files say so)
    hf_fixed={"attn_output_gate": ((True,), "attention without the output gate")},
    hf_no_math=_QWEN3_5_NO_MATH,
    hf_unused_prefixes=("mtp.", "model.visual."),
    sliding="none",
    drop_keys=("use_sliding_window", "sliding_window", "max_window_layers"),
    read_hf=_read_hybrid_layers,
    write_hf=_write_hybrid_layers,
    gguf_arch="qwen35",  # llama.cpp: NeoX rotary (no Q/K permutation), norms stored as 1 + w
    gguf_norm_offset=True,
    gguf_v_heads_tiled=True,
    read_gguf=_read_qwen_hybrid_gguf,
)  # fmt: skip

_MOE_TRAITS = dict(router_score="softmax", n_shared_experts=1, shared_expert_gate=True)
_MOE_KEYS = {
    "num_experts": "n_experts", "num_experts_per_tok": "n_experts_per_token",
    "moe_intermediate_size": "moe_d_ff", "shared_expert_intermediate_size": "shared_expert_d_ff",
}  # fmt: skip

QWEN3_5_MOE_TEXT = like(
    QWEN3_5_TEXT, "qwen3_5_moe_text",
    traits=dict(_MOE_TRAITS, router_norm_topk=True),
    hf_keys=_MOE_KEYS,
    hf_shared="shared_expert",
    hf_defaults=dict(
        vocab_size=248320, hidden_size=2048, num_hidden_layers=40, num_key_value_heads=2,
        num_experts=256, num_experts_per_tok=8, moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
    ),
    # every layer is MoE and the top-k weights are always renormalised, whatever these say
    hf_no_math={"intermediate_size", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers"},
    drop_keys=("intermediate_size",),
    gguf_arch="qwen35moe",
)  # fmt: skip

QWEN3_NEXT = like(
    QWEN3_5_TEXT, "qwen3_next",
    traits=_MOE_TRAITS,
    hf_keys={**_MOE_KEYS, "norm_topk_prob": "router_norm_topk"},
    hf_shared="shared_expert",
    hf_defaults=dict(
        vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=48,
        num_key_value_heads=2, num_experts=512, num_experts_per_tok=10,
        moe_intermediate_size=512, shared_expert_intermediate_size=512, norm_topk_prob=True,
    ),
    hf_fixed={"decoder_sparse_step": ((1,), "MoE only every n-th layer")},
    read_hf=_read_qwen3_next,
    write_hf=_write_qwen3_next,
    fused_linear_attn=True,
    gguf_arch="qwen3next",
    gguf_v_heads_tiled=False,  # its converter keeps HF's order
)  # fmt: skip

# Table order is the preference of `infer_model_type` for a config without hf_model_type: the
# first family that can express it.
FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (GPT2, LLAMA, QWEN2, QWEN3, MISTRAL, MIXTRAL, QWEN3_MOE, GEMMA2, GEMMA3_TEXT,
              DEEPSEEK_V3, PHI3, OLMO2, OLMO3, GLM4_MOE, GPT_OSS,
              SMOLLM3, LLAMA4_TEXT, QWEN3_5_TEXT, QWEN3_5_MOE_TEXT, QWEN3_NEXT, GEMMA4_TEXT,
              GEMMA4_UNIFIED_TEXT)
}  # fmt: skip

# HF model types whose config wraps the text model: (wrapper, key of the text part, its type)
HF_WRAPPERS = {
    "gemma3": ("text_config", "gemma3_text"),
    "llama4": ("text_config", "llama4_text"),
    "qwen3_5": ("text_config", "qwen3_5_text"),
    "qwen3_5_moe": ("text_config", "qwen3_5_moe_text"),
    "gemma4": ("text_config", "gemma4_text"),
    "gemma4_unified": ("text_config", "gemma4_unified_text"),
}

# Wrappers whose image / audio embedders glassformer builds: wrapper model_type -> (read the
# embedders' Config fields from (wrapper dict, text dict); write the wrapper dict from (config,
# text dict)), and the text family they wrap
HF_MULTIMODAL: dict[str, tuple[Callable[..., dict[str, Any]], Callable[..., dict[str, Any]]]] = {
    "gemma4_unified": (_read_gemma4_unified, _write_gemma4_unified),
}
MULTIMODAL_TEXT_FAMILIES = {"gemma4_unified_text": "gemma4_unified"}

GGUF_ARCHITECTURES: dict[str, Family] = {f.gguf_arch: f for f in FAMILIES.values() if f.gguf_arch}


def _read_deci_gguf(meta: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's "deci" (NVIDIA's Nemotron-NAS): Llama blocks whose head counts and MLP
    widths are per-layer arrays -> the Config's per-layer sizes (what a pruned Llama exports
    to, `compression/export.py`). Layers without attention or MLP (entries 0) are refused."""
    n = fields["n_layers"]
    out: dict[str, Any] = {}
    for key, name in (
        ("attention.head_count", "heads_per_layer"),
        ("attention.head_count_kv", "kv_heads_per_layer"),
        ("feed_forward_length", "d_ff_per_layer"),
    ):
        raw = meta.raw(key)
        if raw is None and name == "kv_heads_per_layer":  # optional: = the query heads
            raw = out["heads_per_layer"]
        if not (isinstance(raw, list | tuple) or hasattr(raw, "shape")):
            raw = [raw] * n
        values = tuple(int(v) for v in raw)
        if len(values) != n:
            raise ValueError(f"{meta.path}: deci.{key} has {len(values)} entries for {n} layers")
        if min(values) <= 0:
            raise ValueError(
                f"{meta.path}: deci.{key} has a layer without attention or MLP (entry 0), "
                "which glassformer does not build"
            )
        out[name] = values
    # the uniform fields: layer 0's sizes, as llama.cpp's n_head() and n_ff() are
    out["n_heads"], out["n_kv_heads"] = out["heads_per_layer"][0], out["kv_heads_per_layer"][0]
    out["d_ff"] = out["d_ff_per_layer"][0]
    return out


# llama.cpp's architecture for Llama blocks of per-layer sizes (see _read_deci_gguf)
GGUF_ARCHITECTURES["deci"] = dataclasses.replace(
    LLAMA, gguf_arch="deci", read_gguf=_read_deci_gguf
)


def get_family(model_type: str | None, what: str = "hf_model_type") -> Family:
    if model_type not in FAMILIES:
        raise ValueError(
            f"{what}: {model_type!r} is not a supported HF model type; expected one of "
            f"{', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]
