"""One frozen dataclass that describes every architecture glassformer builds.

A GPT-2, a Llama, a Gemma 3 and a DeepSeek-V3 differ only in the values below: which norm,
where it sits, how positions enter, which attention and which MLP. The model (`model.py`), the
HF weight-name mapping (`hf/`), the GGUF loader and the explorer's cost model all read this one
object, so there is a single source of truth for "what does this network compute".

Conventions:
- `d_model` is the residual width, `n_heads * head_dim` the attention width (they may differ,
  as in Gemma and Qwen3).
- `layer_types[i]` is "full", "sliding", "linear" or "chunked"; sliding layers attend to the
  last `sliding_window` keys including the current one (key j is visible to query i when
  0 <= i - j < window); linear layers are Gated DeltaNet linear attention (`linear_*` sizes);
  chunked layers attend to the keys of their own chunk of `attention_chunk_size` positions
  (i // c == j // c, j <= i).
- All sizes are validated on construction; a bad value raises `ValueError` naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

NormType = Literal["layernorm", "rmsnorm"]
NormPlacement = Literal["pre", "post", "sandwich", "output"]
PositionType = Literal["learned", "rope", "none"]
AttentionType = Literal["mha", "mla"]
MLPType = Literal["mlp", "glu"]
Activation = Literal["gelu", "gelu_tanh", "silu", "relu"]
RouterScore = Literal["softmax", "sigmoid"]
LayerType = Literal["full", "sliding", "linear", "chunked"]
QKNormScope = Literal["head", "all"]
Connections = Literal["residual", "denseformer", "mudd", "hyper", "mhc"]
CONNECTIONS: tuple[str, ...] = ("residual", "denseformer", "mudd", "hyper", "mhc")

# The fields of the encoder-free multimodal embedders (what a text-only HF config lacks)
MULTIMODAL_FIELDS = (
    "vision_patch_size", "vision_pool", "vision_embed_dim", "vision_posemb_size",
    "vision_norm_eps", "audio_frame_size", "audio_norm_eps", "image_token_id", "audio_token_id",
    "video_token_id", "mm_pad_token_id", "boi_token_id", "eoi_token_id", "boa_token_id",
    "eoa_token_id", "image_bidirectional", "vision_encoder_layers", "vision_encoder_heads",
)  # fmt: skip

ROPE_SCALING_TYPES = ("linear", "llama3", "yarn", "longrope", "proportional")
# Config fields that give one size per layer (structured pruning)
_PER_LAYER_SIZES = (
    "heads_per_layer",
    "kv_heads_per_layer",
    "d_ff_per_layer",
    "moe_d_ff_per_layer",
    "experts_per_layer",
)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _type_error(cls: type, name: str, hint: Any, value: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (None: it fits).

    JSON and hand-written dicts carry strings like "false" or "1e4" and floats like inf; a
    bool field must hold a bool (bool("false") is True), an int field an int (not a bool), and a
    float field a finite int or float, so a config never silently means something else.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        reasons = [_type_error(cls, name, a, value) for a in options]
        if None in reasons:
            return None
        # report against the alternative of the value's own kind (a list: the tuple one)
        for a, why in zip(options, reasons, strict=True):
            if isinstance(value, tuple | list) and typing.get_origin(a) is tuple:
                return why
        return reasons[0]
    if origin is Literal:
        return None if value in args else f"expected one of {', '.join(map(str, args))}"
    if hint is bool:
        return None if isinstance(value, bool) else "expected true or false (a boolean)"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "expected an integer"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        return None if math.isfinite(value) else "expected a finite number"
    if hint is str:
        return None if isinstance(value, str) else "expected a string"
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return "expected a list"
        inner = args[0] if args else Any
        for item in value:
            if inner is not Any and (why := _type_error(cls, name, inner, item)):
                return f"an element: {why}"
        return None
    if origin is dict:
        return None if isinstance(value, dict) else "expected an object"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return None if isinstance(value, hint | dict) else f"expected a {hint.__name__}"
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_field_types(obj: Any, prefix: str = "") -> None:
    """Raise ValueError naming the first field of dataclass `obj` whose value has the wrong
    type for its annotation (see `_type_error`)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        why = _type_error(type(obj), f.name, hints[f.name], value)
        if why:
            shown = repr(value) + (" (a string)" if isinstance(value, str) else "")
            raise ValueError(f"{prefix}{f.name}: {why}, got {shown}")


@dataclass(frozen=True)
class RopeScaling:
    """Context-extension schemes for RoPE frequencies (applied to the global layers).

    - linear: theta_i / factor (position interpolation, Chen et al. 2023).
    - llama3: low frequencies divided by `factor`, high ones kept, a smooth ramp between
      (Llama 3.1 report).
    - yarn: NTK-by-parts ramp between interpolation and extrapolation plus an attention
      temperature (Peng et al. 2023, "YaRN").
    - longrope: one searched factor per rotated frequency, a short set for sequences up to
      `original_max_seq_len` and a long set beyond, plus a scale on cos and sin (Ding et al.
      2024, "LongRoPE"; Phi-3's 128k models).
    - proportional (Gemma 4): the frequencies of a full-width rotary over head_dim, of which
      only the first `proportion` are kept; the remaining pairs get frequency 0 (no rotation),
      all divided by `factor`.
    """

    type: str
    factor: float
    original_max_seq_len: int | None = None
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    beta_fast: float | None = None  # yarn
    beta_slow: float | None = None  # yarn
    mscale: float | None = None  # yarn (DeepSeek)
    mscale_all_dim: float | None = None  # yarn (DeepSeek)
    attention_factor: float | None = None  # yarn
    truncate: bool = True  # yarn
    short_factor: tuple[float, ...] | None = None  # longrope: one per rotated frequency
    long_factor: tuple[float, ...] | None = None  # longrope
    proportion: float | None = None  # proportional: share of the frequencies kept

    def __post_init__(self) -> None:
        check_field_types(self, "rope_scaling.")
        for name in ("short_factor", "long_factor"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))  # frozen: normalise once here
        if self.type not in ROPE_SCALING_TYPES:
            raise ValueError(
                f"rope_scaling.type: unknown rope type {self.type!r}; "
                f"expected one of {', '.join(ROPE_SCALING_TYPES)}"
            )
        if not self.factor > 0:
            raise ValueError(f"rope_scaling.factor: must be > 0, got {self.factor}")
        if self.type in ("llama3", "yarn", "longrope") and not self.original_max_seq_len:
            raise ValueError(
                f"rope_scaling.original_max_seq_len: required for rope type {self.type!r}"
            )
        if self.type == "longrope":
            for name in ("short_factor", "long_factor"):
                factors = getattr(self, name)
                if factors is None:
                    raise ValueError(f"rope_scaling.{name}: required for rope type 'longrope'")
                if not all(f > 0 for f in factors):
                    raise ValueError(f"rope_scaling.{name}: every factor must be > 0")
        if self.type == "llama3":
            for name in ("low_freq_factor", "high_freq_factor"):
                if getattr(self, name) is None:
                    raise ValueError(f"rope_scaling.{name}: required for rope type 'llama3'")
            assert self.low_freq_factor is not None and self.high_freq_factor is not None
            # Equal factors (Llama 4 Scout's published file) leave no ramp: a step at L/factor
            if self.high_freq_factor < self.low_freq_factor:
                raise ValueError(
                    "rope_scaling.high_freq_factor: must be at least low_freq_factor, got "
                    f"{self.high_freq_factor} < {self.low_freq_factor}"
                )
        if self.type == "proportional" and not (
            self.proportion is not None and 0 <= self.proportion <= 1
        ):
            raise ValueError(
                f"rope_scaling.proportion: must be in [0, 1] for rope type 'proportional', "
                f"got {self.proportion}"
            )


@dataclass(frozen=True)
class Config:
    """Architecture of a decoder-only Transformer. Differences between families are data."""

    # --- sizes -------------------------------------------------------------------------------
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None  # None: = n_heads (MHA); 1: MQA; otherwise GQA
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int = 0  # MLP hidden width (0: 4 * d_model)
    max_seq_len: int = 2048
    name: str = field(default="custom", compare=False)
    hf_model_type: str | None = None  # the HF `model_type` this config round-trips to

    # --- positions ---------------------------------------------------------------------------
    position: PositionType = "rope"
    rope_theta: float = 10000.0
    rope_theta_local: float | None = None  # theta of sliding layers, when it differs (Gemma 3)
    rope_fraction: float = 1.0  # partial rotary: share of head_dim that is rotated
    rope_interleaved: bool = False  # pairs (x0,x1),(x2,x3) (GPT-J/DeepSeek) vs halves (GPT-NeoX)
    rope_scaling: RopeScaling | None = None

    # --- norms -------------------------------------------------------------------------------
    norm: NormType = "rmsnorm"
    norm_eps: float = 1e-5
    norm_unit_offset: bool = False  # Gemma: y = x_hat * (1 + w), weights stored around 0
    norm_bias: bool = False  # LayerNorm with a bias (GPT-2)
    norm_placement: NormPlacement = "pre"  # sandwich = pre + post norms (Gemma 2/3); output:
    # norms on the sublayer outputs only, x + N(Attn(x)) (OLMo 2)

    # --- attention ---------------------------------------------------------------------------
    attention: AttentionType = "mha"
    qkv_bias: bool = False
    attn_out_bias: bool = False
    qk_norm: bool = False  # RMSNorm per head on q and k before RoPE (Qwen3, Gemma 3)
    # What one QK-norm statistic covers: "head" (each head, Qwen3) or "all" (the whole
    # projection, n_heads*head_dim of q and n_kv_heads*head_dim of k, before the head split: OLMo 2)
    qk_norm_scope: QKNormScope = "head"
    attn_logit_softcap: float | None = None  # s = c * tanh(s / c) (Gemma 2)
    query_pre_attn_scalar: float | None = None  # scale = scalar ** -0.5 instead of head_dim
    sliding_window: int | None = None
    layer_types: tuple[LayerType, ...] | None = None  # None: all "full" (or all "sliding"
    # when sliding_window is set and no pattern is given, as in Mistral)

    # --- Multi-head Latent Attention (DeepSeek-V2/V3) ----------------------------------------
    q_lora_rank: int | None = None  # None: q is a plain projection
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0

    # --- linear attention: Gated DeltaNet (Qwen3-Next, Qwen3.5), layers of type "linear" ----
    linear_n_k_heads: int | None = None  # query/key heads
    linear_n_v_heads: int | None = None  # value heads (a multiple of the key heads)
    linear_k_head_dim: int | None = None
    linear_v_head_dim: int | None = None
    linear_conv_kernel: int = 4  # taps of the causal depthwise convolution over q, k, v

    # --- MLP ---------------------------------------------------------------------------------
    mlp: MLPType = "glu"
    activation: Activation = "silu"
    mlp_bias: bool = False

    # --- Mixture of Experts ------------------------------------------------------------------
    n_experts: int = 0  # routed experts; 0: dense model
    n_experts_per_token: int = 0  # top-k
    n_shared_experts: int = 0
    moe_d_ff: int = 0  # width of one expert (0: d_ff)
    router_score: RouterScore = "softmax"
    router_norm_topk: bool = True  # renormalise the top-k weights to sum to one
    router_n_groups: int = 1  # grouped routing (DeepSeek): pick topk_groups groups first
    router_topk_groups: int = 1
    routed_scaling: float = 1.0
    router_bias: bool = False  # aux-loss-free load balancing bias (used for choice only)
    first_k_dense: int = 0  # the first k layers use a dense MLP of width d_ff

    # --- gpt-oss: attention sinks, router logit bias, clamped SwiGLU -------------------------
    # A learned logit per query head that joins each softmax row and is then dropped, so a row
    # may give less than all of its weight to the keys (components/attention.py).
    attn_sinks: bool = False
    router_logit_bias: bool = False  # the router's linear map has a bias: logits = x W_r + b_r
    # GLU variant (components/mlp.py): act(g) = g * sigmoid(glu_alpha * g) (glu_alpha = 1: SiLU),
    # the gate clamped above and the up projection on both sides at glu_limit, then
    # y = (up + glu_up_offset) * act(gate). gpt-oss: alpha 1.702, limit 7, offset 1.
    glu_alpha: float = 1.0
    glu_limit: float | None = None
    glu_up_offset: float = 0.0

    # --- NoPE layers, chunked attention, attention temperature (Llama 4, SmolLM3) -------------
    # Layers that skip RoPE (NoPE: Kazemnejad et al. 2023); the others rotate as configured.
    nope_layers: tuple[int, ...] = ()
    # "chunked" layers: a query sees the keys of its own chunk of this many positions (Llama 4).
    attention_chunk_size: int | None = None
    # NoPE layers scale q by 1 + s * log(1 + floor((p + 1) / floor_)) at position p (Llama 4's
    # attention temperature tuning); None: no scaling. s is attn_temperature_scale.
    attn_temperature_floor: int | None = None
    attn_temperature_scale: float = 0.1
    # q and k RMS-normalised per head without a learned scale, on RoPE layers only (Llama 4;
    # HF calls it an L2 norm).
    qk_l2_norm: bool = False
    moe_layer_step: int = 1  # MoE on the layers i with (i + 1) % step == 0 (Llama 4)
    router_scales_input: bool = False  # the routing weight multiplies the expert's input

    # --- Qwen3-Next / Qwen3.5: gated attention output, gated shared expert ---------------------
    # q_proj also yields a per-head gate g; the attention output is o * sigmoid(g) before o_proj
    attn_output_gate: bool = False
    # the shared expert's output is scaled by sigmoid(x w_g) (one learned scalar per token)
    shared_expert_gate: bool = False
    shared_expert_d_ff: int = 0  # width of the shared expert MLP (0: moe_d_ff * n_shared_experts)

    # --- embeddings and head -----------------------------------------------------------------
    tie_embeddings: bool = False
    embed_scale: bool = False  # multiply embeddings by sqrt(d_model) (Gemma)
    final_logit_softcap: float | None = None

    # --- DeepSeek-V3 multi-token prediction --------------------------------------------------
    n_mtp_modules: int = 0  # how many MTP depths the published model has
    # Build them (only training needs them). A build choice, so equality ignores it.
    build_mtp: bool = field(default=False, compare=False)

    # --- Gemma 4 (Gemma Team 2026; per-layer embeddings and KV sharing as in Gemma 3n) --------
    global_head_dim: int | None = None  # head_dim of the full-attention layers (None: head_dim)
    global_n_kv_heads: int | None = None  # KV heads of the full-attention layers (None: n_kv_heads)
    global_k_eq_v: bool = False  # full-attention layers project keys only and use them as values
    v_norm: bool = False  # RMS-normalise each value head (no learned scale) before attention
    n_kv_shared_layers: int = 0  # the last n layers reuse the keys and values of the last
    # earlier layer of their type (no projections, no cache of their own)
    per_layer_dim: int = 0  # width of the per-layer input embeddings (0: none)
    per_layer_vocab_size: int = 0  # rows of the per-layer embedding table
    double_wide_mlp: bool = False  # the KV-shared layers' MLP is 2 * d_ff wide
    moe_beside_mlp: bool = False  # the MoE block runs next to the dense MLP (both summed)
    layer_scalar: bool = False  # each block's output times a stored per-layer scalar

    # --- encoder-free multimodal input (Gemma 4 unified; components/multimodal_embedders.py) ---
    # An image is cut into vision_patch_size-pixel patches, vision_pool x vision_pool of them
    # merged into one soft token of (patch * pool)^2 * 3 raw pixel values; audio is cut into
    # frames of audio_frame_size raw samples, one soft token each. 0: no such embedder.
    vision_patch_size: int = 0
    vision_pool: int = 1
    vision_embed_dim: int = 0  # width of the patch projection and the 2D position table
    vision_posemb_size: int = 0  # rows of the factorised position table (grid coordinates < it)
    vision_norm_eps: float = 1e-6  # the RMSNorm before the projection into d_model
    audio_frame_size: int = 0
    audio_norm_eps: float = 1e-6
    # Placeholder ids the soft tokens replace (their own embedding is the mm_pad_token_id row)
    image_token_id: int | None = None
    audio_token_id: int | None = None
    video_token_id: int | None = None  # embedded as padding; video input is not built
    mm_pad_token_id: int = 0
    # Markers around an image / audio clip in the prompt (preprocessing only)
    boi_token_id: int | None = None
    eoi_token_id: int | None = None
    boa_token_id: int | None = None
    eoa_token_id: int | None = None
    # Which layers let the tokens of one image attend to each other in both directions (text
    # stays causal): "none", "sliding" (the sliding-window layers only: Gemma 4) or "all"
    image_bidirectional: Literal["none", "sliding", "all"] = "none"

    # --- structured pruning: per-layer sizes (compression/prune.py; Michel et al. 2019, Minitron
    # 2024). None: every layer has the uniform sizes above. A layer i then has
    # heads_per_layer[i] query heads and kv_heads_per_layer[i] KV heads (a divisor of them, so
    # each KV head still serves a whole group), and a dense MLP of d_ff_per_layer[i]
    # (its experts_per_layer[i] routed experts moe_d_ff_per_layer[i] wide on an MoE layer).
    # Linear-attention layers keep their linear_* sizes. llama.cpp's "deci" architecture
    # (Nemotron-NAS) carries the head counts and widths as per-layer arrays in GGUF.
    heads_per_layer: tuple[int, ...] | None = None
    kv_heads_per_layer: tuple[int, ...] | None = None
    d_ff_per_layer: tuple[int, ...] | None = None
    moe_d_ff_per_layer: tuple[int, ...] | None = None
    experts_per_layer: tuple[int, ...] | None = None

    # --- cross-layer connections (components/connections/) -----------------------------------
    # How block outputs reach later blocks: "residual" (one stream, x_l = x_{l-1} + f(x_{l-1})),
    # "denseformer" (a learned average of all earlier block outputs after a block), "mudd"
    # (dynamic dense connections, separate ones for the query, key, value and residual inputs),
    # "hyper" (n residual streams mixed by learned width/depth connections) or "mhc" (the same
    # with the stream mixing kept doubly stochastic). Not expressible in any HF config.
    connections: Connections = "residual"
    dense_dilation: int = 1  # DenseFormer: a weighted average reads every k-th earlier output
    dense_period: int = 1  # DenseFormer: a weighted average after every p-th block only
    hyper_streams: int = 4  # Hyper-Connections / mHC: expansion rate n (parallel streams)
    hyper_dynamic: bool = True  # token-dependent connection weights besides the static ones
    mhc_sinkhorn_iters: int = 20  # mHC: Sinkhorn-Knopp normalisations of the stream mixing

    # --- a ViT encoder over the patches (components/vision_encoder.py) -----------------------
    # Pre-norm Transformer layers of width vision_embed_dim over each image's patches, between
    # the position embedding and the projection into d_model (MLP 4 x wide). 0: none, the
    # encoder-free path. No HF config has it (to_hf refuses); it is the baseline the
    # encoder-free path is compared with (benchmarks/vlm.py).
    vision_encoder_layers: int = 0
    vision_encoder_heads: int = 4

    # --- bookkeeping -------------------------------------------------------------------------
    init_std: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        check_field_types(self)  # before anything is derived from the values
        set_ = object.__setattr__  # frozen: fill derived defaults once, here
        if self.n_kv_heads is None:
            set_(self, "n_kv_heads", self.n_heads)
        if self.head_dim is None and self.attention == "mla":
            set_(self, "head_dim", self.qk_nope_head_dim + self.qk_rope_head_dim)
        if self.head_dim is None and _positive_int(self.n_heads) and _positive_int(self.d_model):
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"n_heads: {self.n_heads} does not divide d_model={self.d_model} "
                    "(give head_dim explicitly if the attention width differs from d_model)"
                )
            set_(self, "head_dim", self.d_model // self.n_heads)
        if self.d_ff == 0:
            set_(self, "d_ff", 4 * self.d_model)
        if self.n_experts and self.moe_d_ff == 0:
            set_(self, "moe_d_ff", self.d_ff)
        if isinstance(self.rope_scaling, dict):
            set_(self, "rope_scaling", RopeScaling(**self.rope_scaling))
        if self.layer_types is not None:
            set_(self, "layer_types", tuple(self.layer_types))
        for name in _PER_LAYER_SIZES:
            if isinstance(getattr(self, name), list):
                set_(self, name, tuple(getattr(self, name)))
        if isinstance(self.nope_layers, list):
            set_(self, "nope_layers", tuple(self.nope_layers))
        if isinstance(self.eos_token_id, list):
            set_(self, "eos_token_id", tuple(self.eos_token_id))
        self.validate()

    def validate(self) -> None:
        def positive(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")

        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            positive(name)
        positive("max_seq_len")
        if self.attention == "mla":  # head_dim is derived from these
            for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                positive(name)
        positive("head_dim")
        assert self.n_kv_heads is not None
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_kv_heads: {self.n_kv_heads} does not divide n_heads={self.n_heads}"
            )
        for name, allowed in (
            ("position", ("learned", "rope", "none")),
            ("norm", ("layernorm", "rmsnorm")),
            ("norm_placement", ("pre", "post", "sandwich", "output")),
            ("qk_norm_scope", ("head", "all")),
            ("attention", ("mha", "mla")),
            ("mlp", ("mlp", "glu")),
            ("activation", ("gelu", "gelu_tanh", "silu", "relu")),
            ("router_score", ("softmax", "sigmoid")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps: must be > 0, got {self.norm_eps}")
        if not 0 < self.rope_fraction <= 1:
            raise ValueError(f"rope_fraction: must be in (0, 1], got {self.rope_fraction}")
        if self.position == "rope" and not self.rope_theta > 0:
            raise ValueError(f"rope_theta: must be > 0, got {self.rope_theta}")
        if self.position == "rope" and self.attention == "mha" and self.rope_dim % 2:
            raise ValueError(
                f"rope_fraction: rotated dims head_dim*rope_fraction={self.rope_dim} must be even"
            )
        if self.rope_scaling is not None and not isinstance(self.rope_scaling, RopeScaling):
            raise ValueError("rope_scaling: expected a RopeScaling or a dict")
        rs = self.rope_scaling
        if rs is not None and rs.type == "longrope":
            if self.attention == "mla":
                raise ValueError("rope_scaling.type: 'longrope' is not implemented for MLA")
            for name in ("short_factor", "long_factor"):
                n = len(getattr(rs, name))
                if n != self.rope_dim // 2:
                    raise ValueError(
                        f"rope_scaling.{name}: has {n} factors, expected one per rotated "
                        f"frequency, rope_dim/2={self.rope_dim // 2}"
                    )
        for name in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}: must be > 0 or None, got {value}")
        if self.sliding_window is not None:
            positive("sliding_window")
        if self.layer_types is not None:
            if len(self.layer_types) != self.n_layers:
                raise ValueError(
                    f"layer_types: has {len(self.layer_types)} entries, expected n_layers="
                    f"{self.n_layers}"
                )
            kinds = ("full", "sliding", "linear", "chunked")
            bad = sorted({t for t in self.layer_types if t not in kinds})
            if bad:
                raise ValueError(
                    f"layer_types: unknown layer type(s) {bad}; use full|sliding|linear|chunked"
                )
            if "sliding" in self.layer_types and self.sliding_window is None:
                raise ValueError("sliding_window: layer_types has sliding layers but no window")
            if "chunked" in self.layer_types and self.attention_chunk_size is None:
                raise ValueError(
                    "attention_chunk_size: layer_types has chunked layers but no chunk size"
                )
        self._validate_linear_attention()
        self._validate_nope_chunks()
        if self.qk_norm_scope != "head" and not self.qk_norm:
            raise ValueError(f"qk_norm_scope: {self.qk_norm_scope!r} needs qk_norm=True")
        if self.attention == "mla":
            if self.q_lora_rank is not None:
                positive("q_lora_rank")
            if self.qk_rope_head_dim % 2:
                raise ValueError("qk_rope_head_dim: must be even")
            if self.qk_norm or self.attn_logit_softcap:
                raise ValueError("attention: MLA does not take qk_norm or attn_logit_softcap")
        if self.n_experts < 0:
            raise ValueError(f"n_experts: must be >= 0, got {self.n_experts}")
        if self.n_experts:
            positive("n_experts_per_token")
            positive("moe_d_ff")
            if self.n_experts_per_token > self.n_experts:
                raise ValueError(
                    f"n_experts_per_token: {self.n_experts_per_token} exceeds n_experts="
                    f"{self.n_experts}"
                )
            positive("router_n_groups")
            positive("router_topk_groups")
            if self.n_experts % self.router_n_groups:
                raise ValueError(
                    f"router_n_groups: {self.router_n_groups} does not divide n_experts="
                    f"{self.n_experts}"
                )
            if self.router_topk_groups > self.router_n_groups:
                raise ValueError("router_topk_groups: exceeds router_n_groups")
            per_group = self.n_experts // self.router_n_groups
            if self.router_n_groups > 1 and per_group < 2:
                raise ValueError("router_n_groups: each group needs at least 2 experts")
            if self.n_experts_per_token > self.router_topk_groups * per_group:
                raise ValueError("n_experts_per_token: more than the experts in the chosen groups")
        for name in ("n_shared_experts", "first_k_dense", "n_mtp_modules"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        if self.shared_expert_d_ff < 0 or isinstance(self.shared_expert_d_ff, bool):
            raise ValueError(
                f"shared_expert_d_ff: must be an integer >= 0, got {self.shared_expert_d_ff!r}"
            )
        if self.shared_expert_gate and not self.n_shared_experts:
            raise ValueError("shared_expert_gate: the config has n_shared_experts=0")
        if self.attn_output_gate and self.attention != "mha":
            raise ValueError(f"attn_output_gate: needs attention='mha', got {self.attention!r}")
        if self.first_k_dense > self.n_layers:
            raise ValueError(f"first_k_dense: exceeds n_layers={self.n_layers}")
        if self.build_mtp and not self.n_mtp_modules:
            raise ValueError("build_mtp: the config has n_mtp_modules=0")
        self._validate_gpt_oss_fields()
        self._validate_gemma4()
        self._validate_multimodal()
        self._validate_per_layer_sizes()
        self._validate_connections()
        self._validate_vision_encoder()

    def _validate_connections(self) -> None:
        if self.connections not in CONNECTIONS:
            raise ValueError(
                f"connections: expected one of {', '.join(CONNECTIONS)}, got {self.connections!r}"
            )
        for name in ("dense_dilation", "dense_period", "hyper_streams", "mhc_sinkhorn_iters"):
            if not _positive_int(getattr(self, name)):
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.connections in ("mudd", "hyper", "mhc"):
            # these rewire the two sublayers of a block; the ones below act on the whole stream
            if self.norm_placement == "post":
                raise ValueError(
                    f"connections: {self.connections!r} needs a residual stream outside the "
                    "norms; norm_placement='post' has none"
                )
            if self.per_layer_dim or self.layer_scalar:
                raise ValueError(
                    f"connections: {self.connections!r} does not take Gemma 4's per-layer "
                    "inputs or layer scalars (they act on the whole residual stream)"
                )

    def _validate_gpt_oss_fields(self) -> None:
        if self.attn_sinks and self.attention != "mha":
            raise ValueError(f"attn_sinks: needs attention='mha', got {self.attention!r}")
        if self.router_logit_bias and not self.n_experts:
            raise ValueError("router_logit_bias: the config has n_experts=0")
        if not self.glu_alpha > 0:
            raise ValueError(f"glu_alpha: must be > 0, got {self.glu_alpha}")
        if self.glu_limit is not None and not self.glu_limit > 0:
            raise ValueError(f"glu_limit: must be > 0 or None, got {self.glu_limit}")
        variant = {"glu_alpha": 1.0, "glu_limit": None, "glu_up_offset": 0.0}
        for name, plain in variant.items():
            value = getattr(self, name)
            if value != plain and (self.mlp != "glu" or self.activation != "silu"):
                raise ValueError(
                    f"{name}: {value} applies to the SiLU GLU only (mlp='glu', "
                    f"activation='silu'), got mlp={self.mlp!r}, activation={self.activation!r}"
                )

    def _validate_gemma4(self) -> None:
        for name in ("global_head_dim", "global_n_kv_heads"):
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        gkv = self.layer_n_kv_heads_of("full")
        if self.n_heads % gkv:
            raise ValueError(f"global_n_kv_heads: {gkv} does not divide n_heads={self.n_heads}")
        if self.attention == "mla" and (
            self.global_head_dim or self.global_n_kv_heads or self.global_k_eq_v or self.v_norm
        ):
            raise ValueError(
                "attention: MLA does not take global_head_dim, global_n_kv_heads, "
                "global_k_eq_v or v_norm"
            )
        for name in ("n_kv_shared_layers", "per_layer_dim", "per_layer_vocab_size"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        if self.per_layer_dim and not self.per_layer_vocab_size:
            raise ValueError("per_layer_vocab_size: must be > 0 when per_layer_dim is set")
        shared = self.n_kv_shared_layers
        if shared:
            if shared >= self.n_layers:
                raise ValueError(
                    f"n_kv_shared_layers: {shared} leaves no layer of n_layers={self.n_layers} "
                    "to compute the keys and values they share"
                )
            if self.attention == "mla":
                raise ValueError("n_kv_shared_layers: not implemented for MLA")
            first = self.n_layers - shared
            kinds = {self.layer_type(i) for i in range(self.n_layers)}
            own = {self.layer_type(i) for i in range(first)}
            if kinds - own:
                raise ValueError(
                    f"n_kv_shared_layers: {shared} leaves no earlier {sorted(kinds - own)[0]} "
                    "layer whose keys and values the shared layers of that type could reuse"
                )
        if self.double_wide_mlp and not shared:
            raise ValueError("double_wide_mlp: widens the KV-shared layers; n_kv_shared_layers=0")
        gemma4_block = self.moe_beside_mlp or self.per_layer_dim or self.layer_scalar
        if gemma4_block and self.norm_placement == "post":
            raise ValueError(
                "norm_placement: 'post' does not take experts beside the MLP, per-layer "
                "inputs or layer scalars; use 'pre' or 'sandwich'"
            )
        if self.moe_beside_mlp and not self.n_experts:
            raise ValueError("moe_beside_mlp: the config has n_experts=0")
        if self.moe_beside_mlp and (
            self.n_shared_experts or self.router_n_groups > 1 or self.router_bias
        ):
            raise ValueError(
                "moe_beside_mlp: Gemma 4's router takes no shared experts, groups or bias"
            )
        if self.position == "rope" and self.attention == "mha" and self.rope_dim_of("full") % 2:
            raise ValueError(
                f"global_head_dim: rotated dims {self.rope_dim_of('full')} must be even"
            )
        rs = self.rope_scaling
        if isinstance(rs, RopeScaling) and rs.type == "proportional" and self.rope_fraction != 1:
            raise ValueError(
                f"rope_fraction: {self.rope_fraction} with rope_scaling 'proportional' (which "
                "carries its own proportion); use 1.0"
            )

    def _validate_multimodal(self) -> None:
        for name in ("vision_patch_size", "vision_embed_dim", "vision_posemb_size",
                     "audio_frame_size", "mm_pad_token_id"):  # fmt: skip
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name}: must be an integer >= 0, got {value!r}")
        if not _positive_int(self.vision_pool):
            raise ValueError(f"vision_pool: must be a positive integer, got {self.vision_pool!r}")
        for name in ("vision_norm_eps", "audio_norm_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)!r}")
        if self.vision_patch_size:
            for name in ("vision_embed_dim", "vision_posemb_size"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: must be > 0 when vision_patch_size is set")
            if self.image_token_id is None:
                raise ValueError("image_token_id: needed when vision_patch_size is set")
        if self.audio_frame_size and self.audio_token_id is None:
            raise ValueError("audio_token_id: needed when audio_frame_size is set")
        for name in ("image_token_id", "audio_token_id", "video_token_id", "boi_token_id",
                     "eoi_token_id", "boa_token_id", "eoa_token_id"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}: {value} is outside the vocabulary of {self.vocab_size}")
        if self.mm_pad_token_id >= self.vocab_size:
            raise ValueError(
                f"mm_pad_token_id: {self.mm_pad_token_id} is outside the vocabulary of "
                f"{self.vocab_size}"
            )
        if self.image_bidirectional != "none" and self.attention != "mha":
            raise ValueError(
                f"image_bidirectional: {self.image_bidirectional!r} needs attention='mha', got "
                f"{self.attention!r}"
            )
        if self.image_bidirectional != "none" and not self.vision_patch_size:
            raise ValueError(
                f"image_bidirectional: {self.image_bidirectional!r} needs a vision embedder "
                "(vision_patch_size > 0)"
            )

    def _validate_vision_encoder(self) -> None:
        n = self.vision_encoder_layers
        if n < 0:
            raise ValueError(f"vision_encoder_layers: must be an integer >= 0, got {n!r}")
        if not n:
            return
        if not self.vision_patch_size:
            raise ValueError(
                f"vision_encoder_layers: {n} needs a vision embedder (vision_patch_size > 0)"
            )
        heads = self.vision_encoder_heads
        if not _positive_int(heads) or self.vision_embed_dim % heads:
            raise ValueError(
                f"vision_encoder_heads: {heads!r} must be a positive divisor of vision_embed_dim "
                f"{self.vision_embed_dim}"
            )

    @property
    def vision_patch_dim(self) -> int:
        """Raw pixel values in one merged patch (the vision embedder's input width)."""
        return (self.vision_patch_size * self.vision_pool) ** 2 * 3

    @property
    def multimodal(self) -> bool:
        """Whether the model has an image or audio embedder."""
        return bool(self.vision_patch_size or self.audio_frame_size)

    def image_blocks_bidirectional(self, layer: int) -> bool:
        """Whether the tokens of one image see each other both ways on this layer."""
        rule = self.image_bidirectional
        return rule == "all" or (rule == "sliding" and self.layer_type(layer) == "sliding")
    def _validate_per_layer_sizes(self) -> None:
        """Per-layer head counts and widths: one positive entry per layer; KV heads divide the
        query heads of their layer; only standard attention varies its heads per layer."""
        for name in _PER_LAYER_SIZES:
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) != self.n_layers:
                raise ValueError(
                    f"{name}: has {len(sizes)} entries, expected n_layers={self.n_layers}"
                )
            bad = next((s for s in sizes if not _positive_int(s)), None)
            if bad is not None:
                raise ValueError(f"{name}: every entry must be a positive integer, got {bad!r}")
        per_layer_heads = self.heads_per_layer is not None or self.kv_heads_per_layer is not None
        if per_layer_heads and self.attention == "mla":
            raise ValueError("heads_per_layer: per-layer head counts need attention='mha'")
        if per_layer_heads and self.n_kv_shared_layers:
            raise ValueError(
                "heads_per_layer: per-layer head counts with n_kv_shared_layers (a sharing "
                "layer's queries must match its source's KV heads) are not implemented"
            )
        if per_layer_heads:
            for i in range(self.n_layers):
                h, hk = self.layer_n_heads(i), self.layer_n_kv_heads(i)
                if h % hk:
                    raise ValueError(
                        f"kv_heads_per_layer: layer {i} has {hk} KV heads, which do not divide "
                        f"its {h} query heads"
                    )
        if self.moe_d_ff_per_layer is not None and not self.n_experts:
            raise ValueError("moe_d_ff_per_layer: the config has n_experts=0")
        if self.experts_per_layer is not None:
            if not self.n_experts:
                raise ValueError("experts_per_layer: the config has n_experts=0")
            if self.router_n_groups > 1 or self.moe_beside_mlp:
                raise ValueError(
                    "experts_per_layer: per-layer expert counts with grouped routing or "
                    "experts beside the MLP are not implemented"
                )
            few = min(self.experts_per_layer)
            if few < self.n_experts_per_token:
                raise ValueError(
                    f"experts_per_layer: a layer with {few} experts cannot route each token "
                    f"to n_experts_per_token={self.n_experts_per_token}"
                )

    def _validate_linear_attention(self) -> None:
        """Linear (Gated DeltaNet) layers need their four sizes; the value heads are shared out
        over the key heads, so the key heads divide them."""
        if not isinstance(self.linear_conv_kernel, int) or self.linear_conv_kernel < 1:
            raise ValueError(
                f"linear_conv_kernel: must be a positive integer, got {self.linear_conv_kernel!r}"
            )
        if not (self.layer_types and "linear" in self.layer_types):
            return
        for name in ("linear_n_k_heads", "linear_n_v_heads", "linear_k_head_dim",
                     "linear_v_head_dim"):  # fmt: skip
            value = getattr(self, name)
            if value is None:
                raise ValueError(f"{name}: required when layer_types has 'linear' layers")
            if not _positive_int(value):
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        assert self.linear_n_v_heads is not None and self.linear_n_k_heads is not None
        if self.linear_n_v_heads % self.linear_n_k_heads:
            raise ValueError(
                f"linear_n_k_heads: {self.linear_n_k_heads} does not divide "
                f"linear_n_v_heads={self.linear_n_v_heads}"
            )

    def _validate_nope_chunks(self) -> None:
        if self.attention_chunk_size is not None:
            if not _positive_int(self.attention_chunk_size):
                raise ValueError(
                    f"attention_chunk_size: must be a positive integer, got "
                    f"{self.attention_chunk_size!r}"
                )
            if self.layer_types is None and self.sliding_window is not None:
                raise ValueError(
                    "layer_types: required when both sliding_window and attention_chunk_size "
                    "are set (which layers slide and which are chunked)"
                )
            if self.attention == "mla":
                raise ValueError("attention_chunk_size: MLA layers are not chunked")
        nope = self.nope_layers
        if nope:
            if self.position != "rope" or self.attention == "mla":
                raise ValueError(
                    f"nope_layers: needs standard attention with position='rope', got "
                    f"position={self.position!r}, attention={self.attention!r}"
                )
            if list(nope) != sorted(set(nope)) or nope[0] < 0 or nope[-1] >= self.n_layers:
                raise ValueError(
                    f"nope_layers: expected increasing layer indices below n_layers="
                    f"{self.n_layers}, got {list(nope)[:8]}"
                )
        if self.attn_temperature_floor is not None and not _positive_int(
            self.attn_temperature_floor
        ):
            raise ValueError(
                f"attn_temperature_floor: must be a positive integer or None, got "
                f"{self.attn_temperature_floor!r}"
            )
        if self.qk_l2_norm and (self.qk_norm or self.attention == "mla"):
            raise ValueError("qk_l2_norm: not with qk_norm or MLA (one q/k norm per layer)")
        if not _positive_int(self.moe_layer_step):
            raise ValueError(
                f"moe_layer_step: must be a positive integer, got {self.moe_layer_step!r}"
            )
        if self.router_scales_input and (not self.n_experts or self.mlp != "glu"):
            raise ValueError("router_scales_input: needs routed GLU experts (n_experts > 0)")

    # --- derived quantities (used by the model, the loaders and the explorer alike) ------------
    @property
    def rope_dim(self) -> int:
        """How many dims of each head are rotated."""
        if self.attention == "mla":
            return self.qk_rope_head_dim
        assert self.head_dim is not None
        return int(self.head_dim * self.rope_fraction)

    @property
    def qk_head_dim(self) -> int:
        if self.attention == "mla":
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        assert self.head_dim is not None
        return self.head_dim

    @property
    def attn_v_head_dim(self) -> int:
        if self.attention == "mla":
            return self.v_head_dim
        assert self.head_dim is not None
        return self.head_dim

    @property
    def attention_scale(self) -> float:
        """Multiplier of q.k before the softmax."""
        if self.query_pre_attn_scalar is not None:
            scale = self.query_pre_attn_scalar**-0.5
        else:
            scale = self.qk_head_dim**-0.5
        rs = self.rope_scaling
        if self.attention == "mla" and rs is not None and rs.type == "yarn" and rs.mscale_all_dim:
            # DeepSeek folds YaRN's temperature into the softmax scale: mscale(s, m)^2
            m = 0.1 * rs.mscale_all_dim * math.log(rs.factor) + 1.0 if rs.factor > 1 else 1.0
            scale *= m * m
        return scale

    def layer_type(self, layer: int) -> LayerType:
        if self.layer_types is not None:
            return self.layer_types[layer]
        if self.sliding_window is not None:
            return "sliding"
        return "chunked" if self.attention_chunk_size is not None else "full"

    def window(self, layer: int) -> int | None:
        """Keys visible to a query in this layer (None: unbounded, and for linear layers, which
        keep a fixed-size state instead of keys)."""
        return self.sliding_window if self.layer_type(layer) == "sliding" else None

    def chunk(self, layer: int) -> int | None:
        """The attention chunk of a chunked layer (None: the layer is not chunked)."""
        return self.attention_chunk_size if self.layer_type(layer) == "chunked" else None

    def kv_span(self, layer: int) -> int | None:
        """The most recent positions this layer's cache must keep (None: all of them): a
        window, or a chunk (a query never sees a key of an earlier chunk)."""
        return self.window(layer) or self.chunk(layer)

    def uses_rope(self, layer: int) -> bool:
        return self.position == "rope" and layer not in self.nope_layers

    @property
    def shared_d_ff(self) -> int:
        """Width of the shared-expert MLP of an MoE layer (0: none)."""
        if not self.n_shared_experts:
            return 0
        return self.shared_expert_d_ff or self.moe_d_ff * self.n_shared_experts

    def is_moe_layer(self, layer: int) -> bool:
        return (
            self.n_experts > 0
            and layer >= self.first_k_dense
            and (layer + 1) % self.moe_layer_step == 0
        )

    # --- per-layer shapes (Gemma 4's full-attention layers differ from its sliding ones) ---------
    def layer_head_dim_of(self, kind: LayerType) -> int:
        assert self.head_dim is not None
        return (self.global_head_dim or self.head_dim) if kind == "full" else self.head_dim

    def layer_n_kv_heads_of(self, kind: LayerType) -> int:
        assert self.n_kv_heads is not None
        return (self.global_n_kv_heads or self.n_kv_heads) if kind == "full" else self.n_kv_heads

    def layer_head_dim(self, layer: int) -> int:
        return self.layer_head_dim_of(self.layer_type(layer))

    def layer_n_kv_heads(self, layer: int) -> int:
        if self.kv_heads_per_layer is not None:
            return self.kv_heads_per_layer[layer]
        return self.layer_n_kv_heads_of(self.layer_type(layer))

    def layer_n_heads(self, layer: int) -> int:
        """Query heads of a layer (fewer than n_heads in a pruned model)."""
        return self.n_heads if self.heads_per_layer is None else self.heads_per_layer[layer]

    def layer_n_experts(self, layer: int) -> int:
        """Routed experts of an MoE layer (fewer than n_experts in a pruned model)."""
        return self.n_experts if self.experts_per_layer is None else self.experts_per_layer[layer]

    def layer_moe_d_ff(self, layer: int) -> int:
        """Width of one routed expert of an MoE layer."""
        return self.moe_d_ff if self.moe_d_ff_per_layer is None else self.moe_d_ff_per_layer[layer]

    def rope_dim_of(self, kind: LayerType) -> int:
        """Rotated dims of a head in layers of this kind (proportional RoPE: the whole head,
        its non-rotating pairs at frequency 0)."""
        if self.attention == "mla":
            return self.qk_rope_head_dim
        return int(self.layer_head_dim_of(kind) * self.rope_fraction)

    def layer_attention_scale(self, layer: int) -> float:
        if self.query_pre_attn_scalar is None and self.attention == "mha":
            return self.layer_head_dim(layer) ** -0.5
        return self.attention_scale

    def layer_k_eq_v(self, layer: int) -> bool:
        return self.global_k_eq_v and self.layer_type(layer) == "full"

    def kv_source(self, layer: int) -> int | None:
        """The layer whose keys and values this one reuses (None: it computes its own): the last
        layer of the same type before the shared ones."""
        first = self.n_layers - self.n_kv_shared_layers
        if layer < first:
            return None
        kind = self.layer_type(layer)
        return max(i for i in range(first) if self.layer_type(i) == kind)

    def layer_d_ff(self, layer: int) -> int:
        """Width of the dense MLP of a layer (Gemma 4 doubles it on its KV-shared layers)."""
        if self.d_ff_per_layer is not None:
            return self.d_ff_per_layer[layer]
        wide = self.double_wide_mlp and self.kv_source(layer) is not None
        return 2 * self.d_ff if wide else self.d_ff

    @property
    def n_kv_groups(self) -> int:
        assert self.n_kv_heads is not None
        return self.n_heads // self.n_kv_heads

    # --- construction helpers ------------------------------------------------------------------
    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["layer_types"] is not None:
            out["layer_types"] = list(out["layer_types"])
        out["nope_layers"] = list(out["nope_layers"])
        for name in _PER_LAYER_SIZES:
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Config: unknown field(s) {unknown}")
        data = dict(data)
        if isinstance(data.get("rope_scaling"), dict):
            data["rope_scaling"] = RopeScaling(**data["rope_scaling"])
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Config:
        """A published architecture by name (see `glassformer.presets.PRESETS`)."""
        from glassformer.presets import get_preset

        return get_preset(name, **overrides)

    @classmethod
    def from_hf(cls, config: dict[str, Any] | str | Path) -> Config:
        """From an HF `config.json` (a dict, a file, or a model directory)."""
        from glassformer.hf.config import config_from_hf

        return config_from_hf(config)

    def to_hf(self) -> dict[str, Any]:
        """To an HF `config.json` dict of the matching `model_type`."""
        from glassformer.hf.config import config_to_hf

        return config_to_hf(self)
