"""The op list: every operation of a forward (or training) pass, derived from a `Config`.

Each `Op` carries symbolic formulas (see `expr.py`: variables B, T, S and `eager`) for

    flops_mm         matrix FLOPs, 2 per multiply-accumulate, attention score and value products
                     over the full query x key grid as an unmasked kernel executes them
    flops_mm_causal  the same counting only visible (causal / sliding-window) pairs, what a causal
                     flash kernel executes; equal to flops_mm for every non-attention op
    flops_other      everything else: norms, softmax, activations, RoPE, residual and bias adds
    w_read/w_write   weight (and gradient) elements read / written
    a_read/a_write   activation elements read / written (HBM traffic of the unfused op)
    kv_read/kv_write KV-cache elements read / written
    cache_elems      KV-cache elements this op's layer allocates
    state_f32_*      the linear-attention state (Gated DeltaNet), float32 whatever the cache
                     dtype: elements read / written / allocated
    train_extra_mm   matrix FLOPs of a training step beyond 3x the forward's
    saved            activation elements a training step keeps for the backward pass
    fuse_into        GEMM-epilogue view: the GEMM whose epilogue (or prologue) absorbs this op
    fused_saved      activation elements of traffic that fusing it removes

Geometry per layer (W = sliding window, None for full attention):
    prefill/train  queries T, grid keys T, visible pairs sum_i min(i+1, W), cache cap min(T, W)
    decode         one query, cache cap = min(S, W); grid keys = S, or W + 1 for a ring layer
                   (glassformer's ring cache attends to its W slots plus the new entry)
A sliding layer in prefill still runs the full T x T grid in an unmasked kernel (flops_mm) but
only the visible pairs in a windowed flash kernel (flops_mm_causal). A chunked layer (Llama 4,
chunk C) is costed like a window of C for its cache and decode grid; in prefill its visible
pairs are those within each chunk, floor(T/C) C (C + 1) / 2 + r (r + 1) / 2 with r = T mod C.
NoPE layers have no RoPE ops; Llama 4's NoPE layers scale q by a per-position temperature
(1 FLOP per element), its RoPE layers RMS-normalise q and k without a weight.

Elementwise FLOPs per element (conventions, stated in docs/explorer.md): RMSNorm 4, LayerNorm 6
(+1 with bias), softmax 5, SiLU 4, GELU 8, ReLU 1, GLU product 1, RoPE 3 per rotated element,
score scaling 1 (+3 with soft-capping), residual/bias add 1, cross-entropy 5, AdamW 13 per
parameter. The clamped SwiGLU of gpt-oss adds 1 for the sigmoid's gain, 3 for the clamps
(gate above, up both sides) and 1 for the offset on up; attention sinks add one column to every
softmax row (5 FLOPs per row).
Multi-head latent attention has two orders: "plain" expands keys and values with kv_b_proj
(prefill), "absorbed" folds W_uk into the query and W_uv after the attention so the scores run
against the cached latent directly (decode).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from glassformer.config import Config
from glassformer.explorer.expr import (
    B,
    S,
    T,
    Value,
    add,
    causal_pairs,
    emin,
    epow,
    floordiv,
    if_less,
    mul,
    prod,
    sub,
    var,
)

Mode = Literal["prefill", "decode", "train"]
MLAOrder = Literal["plain", "absorbed"]
MODES: tuple[str, ...] = ("prefill", "decode", "train")

EAGER = var("eager")  # 1: unmasked eager attention (scores materialised), 0: flash kernel
MASTER = var("master")  # 1 when the optimizer keeps fp32 master weights (dtype below fp32)

NORM_FLOPS = {"rmsnorm": 4, "layernorm": 6}
ACT_FLOPS = {"silu": 4, "gelu": 8, "gelu_tanh": 8, "relu": 1}
SOFTMAX_FLOPS = 5
ROPE_FLOPS = 3
SOFTCAP_FLOPS = 3
CE_FLOPS = 5
ADAMW_FLOPS = 13


def glu_flops(cfg: Config) -> int:
    """FLOPs per element of act(g) * u in the config's GLU variant (see components/mlp.py)."""
    return (
        ACT_FLOPS[cfg.activation]
        + 1  # the product
        + (1 if cfg.glu_alpha != 1.0 else 0)  # alpha g inside the sigmoid
        + (3 if cfg.glu_limit is not None else 0)  # min(g, L), clamp(u, -L, L)
        + (1 if cfg.glu_up_offset != 0.0 else 0)  # u + offset
    )


def blend(eager_value: Value, flash_value: Value) -> Value:
    return EAGER * eager_value + sub(1, EAGER) * flash_value


@dataclass
class Edge:
    src: str  # producing op in the same section, or "x" (section input), "cache", "ids"
    shape: tuple[Value, ...]


@dataclass
class Op:
    name: str
    kind: str  # embedding matmul norm rope cache attention softmax elementwise residual ...
    inputs: list[Edge]
    out_shape: tuple[Value, ...]
    params: int = 0
    flops_mm: Value = 0
    flops_mm_causal: Value | None = None
    flops_other: Value = 0
    w_read: Value = 0
    w_write: Value = 0
    a_read: Value = 0
    a_write: Value = 0
    kv_read: Value = 0
    kv_write: Value = 0
    f32_read: Value = 0
    f32_write: Value = 0
    cache_elems: Value = 0
    # the linear-attention state held in float32 whatever the cache dtype: its traffic, its size
    state_f32_read: Value = 0
    state_f32_write: Value = 0
    state_f32_elems: Value = 0
    # matrix FLOPs a training step adds beyond 3x the forward's (see `_to_train`)
    train_extra_mm: Value = 0
    saved: Value = 0
    fuse_into: str | None = None
    fused_saved: Value = 0
    note: str = ""

    def __post_init__(self) -> None:
        if self.flops_mm_causal is None:
            self.flops_mm_causal = self.flops_mm


@dataclass(frozen=True)
class LayerSpans:
    """A set of layer indices as sorted, disjoint `range`s. Identical layers are costed once and
    multiplied, so the cost model is a closed form in the layer count: a stack of 10**9 equal
    layers is one range, not a Python object per layer."""

    spans: tuple[range, ...] = ()

    def __len__(self) -> int:
        return sum(len(r) for r in self.spans)

    @property
    def first(self) -> int:
        return self.spans[0].start

    def to_json(self) -> list[list[int]]:
        """[[first, last], ...], inclusive."""
        return [[r.start, r.stop - 1] for r in self.spans]

    def describe(self) -> str:
        """ "0-3,8" for a few spans; "N layers" for an interleaved pattern (Gemma)."""
        if len(self.spans) > 2:
            return f"{len(self)} layers"
        parts = [f"{r.start}" if len(r) == 1 else f"{r.start}-{r.stop - 1}" for r in self.spans]
        return "layers " + ",".join(parts)


@dataclass
class Section:
    key: str
    title: str
    kind: str  # embed | per_layer | block | head | mtp | optimizer
    layers: LayerSpans = field(default_factory=LayerSpans)
    ops: list[Op] = field(default_factory=list)

    @property
    def count(self) -> int:
        return max(1, len(self.layers)) if self.kind == "block" else 1


@dataclass
class Geometry:
    """How many queries and keys one layer's attention sees (per sequence)."""

    tokens: Value  # queries per sequence
    grid: Value  # keys per query in the unmasked grid
    pairs: Value  # visible (query, key) pairs per sequence and head
    cap: Value  # cache slots per sequence (0: no cache)
    written: Value  # cache entries written per sequence
    decode: bool


def geometry(
    mode: str, window: int | None, tokens: Value = T, cache: bool = True, chunk: int | None = None
) -> Geometry:
    span = window or chunk  # the positions the layer's cache keeps (a ring when shorter)
    if mode == "decode":
        cap = S if span is None else emin(S, span)
        grid = S if span is None else if_less(span, S, span + 1, S)
        return Geometry(1, grid, cap, cap, 1, True)
    cap = (tokens if span is None else emin(tokens, span)) if cache else 0
    pairs = causal_pairs(tokens, window) if chunk is None else chunked_pairs(tokens, chunk)
    return Geometry(tokens, tokens, pairs, cap, cap, False)


def chunked_pairs(n: Value, chunk: int) -> Value:
    """Visible (query, key) pairs over n tokens when each query sees its own chunk causally."""
    full = floordiv(n, chunk)
    rest = sub(n, mul(full, chunk))
    return add(mul(full, chunk * (chunk + 1) // 2), floordiv(mul(rest, add(rest, 1)), 2))


# --- op constructors ---------------------------------------------------------------------------
def linear(
    name: str,
    src: str,
    n: Value,
    lead: tuple[Value, ...],
    d_in: int,
    d_out: int,
    bias: bool,
    kind: str = "matmul",
) -> Op:
    """y = x W^T (+ b) over n rows; lead is the shape before the feature dim (for display)."""
    params = d_in * d_out + (d_out if bias else 0)
    return Op(
        name,
        kind,
        [Edge(src, (*lead, d_in))],
        (*lead, d_out),
        params=params,
        flops_mm=2 * n * d_in * d_out,
        flops_other=n * d_out if bias else 0,
        w_read=params,
        a_read=n * d_in,
        a_write=n * d_out,
        saved=n * d_in,
    )


def norm(
    cfg: Config,
    name: str,
    src: str,
    n: Value,
    lead: tuple[Value, ...],
    dim: int,
    host: str | None,
    rms: bool = False,
) -> Op:
    kind = "rmsnorm" if rms else cfg.norm
    bias = kind == "layernorm" and cfg.norm_bias
    params = dim * (2 if bias else 1)
    per_elem = NORM_FLOPS[kind] + (1 if bias else 0)
    return Op(
        name,
        "norm",
        [Edge(src, (*lead, dim))],
        (*lead, dim),
        params=params,
        flops_other=per_elem * n * dim,
        w_read=params,
        a_read=n * dim,
        a_write=n * dim,
        saved=n * dim,
        fuse_into=host,
        # the normalised tensor is never written nor read back: consumers read x and the GEMM
        # scales rows by 1/rms (norm weights folded into W); row statistics neglected
        fused_saved=2 * n * dim,
    )


def rope_op(name: str, src: str, shape: tuple[Value, ...], rows: Value, rot: int, host: str) -> Op:
    """Rotate `rot` dims of each of `rows` vectors (shape[-1] wide)."""
    width = shape[-1]
    assert isinstance(width, int)
    tokens = shape[-2]
    return Op(
        name,
        "rope",
        [Edge(src, shape)],
        shape,
        flops_other=ROPE_FLOPS * rows * rot,
        a_read=rows * width + tokens * rot,  # the vectors and the cos/sin tables
        a_write=rows * width,
        saved=0,
        fuse_into=host,
        fused_saved=2 * rows * width,
    )


def residual(name: str, src: str, n: Value, lead: tuple[Value, ...], d: int, host: str) -> Op:
    return Op(
        name,
        "residual",
        [Edge(src, (*lead, d)), Edge("x", (*lead, d))],
        (*lead, d),
        flops_other=n * d,
        a_read=2 * n * d,
        a_write=n * d,
        fuse_into=host,
        # the branch output is neither written by its producer nor read back here
        fused_saved=2 * n * d,
    )


def mlp_ops(
    cfg: Config, prefix: str, src: str, n: Value, lead: tuple[Value, ...], d_ff: int
) -> list[Op]:
    d, bias, act = cfg.d_model, cfg.mlp_bias, cfg.activation
    ops: list[Op] = []
    if cfg.mlp == "glu":
        ops.append(linear(f"{prefix}.gate_proj", src, n, lead, d, d_ff, bias))
        ops.append(linear(f"{prefix}.up_proj", src, n, lead, d, d_ff, bias))
        ops.append(
            Op(
                f"{prefix}.act",
                "elementwise",
                [
                    Edge(f"{prefix}.gate_proj", (*lead, d_ff)),
                    Edge(f"{prefix}.up_proj", (*lead, d_ff)),
                ],
                (*lead, d_ff),
                flops_other=glu_flops(cfg) * n * d_ff,
                a_read=2 * n * d_ff,
                a_write=n * d_ff,
                saved=2 * n * d_ff,
                fuse_into=f"{prefix}.gate_proj",
                # gate and up run as one GEMM whose epilogue writes act(g) * u: g and u (2 N f)
                # are never written, nor read back (2 N f)
                fused_saved=4 * n * d_ff,
            )
        )
    else:
        ops.append(linear(f"{prefix}.up_proj", src, n, lead, d, d_ff, bias))
        ops.append(
            Op(
                f"{prefix}.act",
                "elementwise",
                [Edge(f"{prefix}.up_proj", (*lead, d_ff))],
                (*lead, d_ff),
                flops_other=ACT_FLOPS[act] * n * d_ff,
                a_read=n * d_ff,
                a_write=n * d_ff,
                saved=n * d_ff,
                fuse_into=f"{prefix}.up_proj",
                fused_saved=2 * n * d_ff,
            )
        )
    ops.append(linear(f"{prefix}.down_proj", f"{prefix}.act", n, lead, d_ff, d, bias))
    return ops


def moe_ops(
    cfg: Config, src: str, n: Value, lead: tuple[Value, ...], layer: int | None = None
) -> list[Op]:
    d, k = cfg.d_model, cfg.n_experts_per_token
    # a pruned model's layers may differ in expert count and width
    e = cfg.n_experts if layer is None else cfg.layer_n_experts(layer)
    f = cfg.moe_d_ff if layer is None else cfg.layer_moe_d_ff(layer)
    gated = cfg.mlp == "glu"
    # Expected distinct experts touched by n tokens when each token picks each expert with
    # probability k/E (uniform routing): E (1 - (1 - k/E)^n). One token: k; many: E.
    hit = e * sub(1, epow(1 - k / e, n))
    rows = n * k  # (token, expert) pairs
    first_src = src  # the normalised tokens (the shared experts read them unscaled)
    ops: list[Op] = []
    router = linear("mlp.router", src, n, lead, d, e, cfg.router_logit_bias, kind="router")
    router.note = "computed in fp32"
    ops.append(router)
    per_score = SOFTMAX_FLOPS if cfg.router_score == "softmax" else 4
    ops.append(
        Op(
            "mlp.router_topk",
            "router",
            [Edge("mlp.router", (*lead, e))],
            (*lead, k),
            flops_other=n * e * (per_score + 1 + (2 if cfg.router_n_groups > 1 else 0)) + 2 * rows,
            a_read=n * e,
            a_write=2 * rows,
            saved=n * e,
            note=f"top-{k} of {e}"
            + (
                f" in {cfg.router_topk_groups} of {cfg.router_n_groups} groups"
                if cfg.router_n_groups > 1
                else ""
            ),
        )
    )

    bias = cfg.mlp_bias

    def expert_linear(name: str, s: str, d_in: int, d_out: int) -> Op:
        per_expert = d_in * d_out + (d_out if bias else 0)
        return Op(
            name,
            "experts",
            [Edge(s, (rows, d_in))],
            (rows, d_out),
            params=e * per_expert,
            flops_mm=2 * rows * d_in * d_out,
            flops_other=rows * d_out if bias else 0,
            w_read=hit * per_expert,
            a_read=rows * d_in,
            a_write=rows * d_out,
            saved=rows * d_in,
            note=f"{e} experts, top-{k}: each token through {k}",
        )

    scaled = cfg.router_scales_input
    if scaled:  # Llama 4: each (token, expert) row is the token scaled by its routing weight
        ops.append(
            Op(
                "mlp.experts.scale_input",
                "elementwise",
                [Edge(src, (*lead, d)), Edge("mlp.router_topk", (*lead, k))],
                (rows, d),
                flops_other=rows * d,
                a_read=n * d + rows,
                a_write=rows * d,
                saved=rows * d,
                note="routing weight x token (scales the expert's input)",
            )
        )
        src = "mlp.experts.scale_input"
    if gated:
        ops.append(expert_linear("mlp.experts.gate_proj", src, d, f))
    ops.append(expert_linear("mlp.experts.up_proj", src, d, f))
    ops.append(
        Op(
            "mlp.experts.act",
            "elementwise",
            [Edge("mlp.experts.gate_proj" if gated else "mlp.experts.up_proj", (rows, f))],
            (rows, f),
            flops_other=(glu_flops(cfg) if gated else ACT_FLOPS[cfg.activation]) * rows * f,
            a_read=(2 if gated else 1) * rows * f,
            a_write=rows * f,
            saved=(2 if gated else 1) * rows * f,
            fuse_into="mlp.experts.gate_proj" if gated else "mlp.experts.up_proj",
            fused_saved=(4 if gated else 2) * rows * f,
        )
    )
    ops.append(expert_linear("mlp.experts.down_proj", "mlp.experts.act", f, d))
    combine_inputs = [Edge("mlp.experts.down_proj", (rows, d)), Edge("mlp.router_topk", (*lead, k))]
    if cfg.n_shared_experts:
        shared = mlp_ops(cfg, "mlp.shared", first_src, n, lead, cfg.shared_d_ff)
        ops.extend(shared)
        combine_inputs.append(Edge("mlp.shared.down_proj", (*lead, d)))
    if cfg.shared_expert_gate:
        gate = linear("mlp.shared_gate", src, n, lead, d, 1, False)
        gate.note = "sigmoid(x w_g) scales the shared expert"
        gate.flops_other = ACT_FLOPS["silu"] * n + n * d  # the sigmoid and the scaling
        ops.append(gate)
        combine_inputs.append(Edge("mlp.shared_gate", (*lead, 1)))
    ops.append(
        Op(
            "mlp.combine",
            "elementwise",
            combine_inputs,
            (*lead, d),
            flops_other=(1 if scaled else 2) * rows * d + (n * d if cfg.n_shared_experts else 0),
            a_read=rows * d + (0 if scaled else rows) + (n * d if cfg.n_shared_experts else 0),
            a_write=n * d,
            note=("sum" if scaled else "weighted sum")
            + " of the chosen experts (+ shared experts)",
        )
    )
    return ops


# --- attention ---------------------------------------------------------------------------------
def mha_ops(cfg: Config, layer: int, src: str, g: Geometry, cache: bool) -> list[Op]:
    # Gemma 4's layers differ: their own head_dim and KV heads on full layers, keys reused as
    # values (no v_proj), and KV-sharing layers that project queries only
    d, h = cfg.d_model, cfg.layer_n_heads(layer)
    hkv, hd = cfg.layer_n_kv_heads(layer), cfg.layer_head_dim(layer)
    own_kv = cfg.kv_source(layer) is None
    tok = g.tokens
    n = B * tok
    lead = (B, tok)
    gated = cfg.attn_output_gate  # q_proj also yields the output gate, h * hd more rows
    ops = [linear("attn.q_proj", src, n, lead, d, h * hd * (2 if gated else 1), cfg.qkv_bias)]
    if own_kv:
        ops.append(linear("attn.k_proj", src, n, lead, d, hkv * hd, cfg.qkv_bias))
    if own_kv and not cfg.layer_k_eq_v(layer):
        ops.append(linear("attn.v_proj", src, n, lead, d, hkv * hd, cfg.qkv_bias))
    q_src, k_src = "attn.q_proj", "attn.k_proj" if own_kv else "kv_source"
    q_shape, k_shape = (B, h, tok, hd), (B, hkv, tok, hd)
    if cfg.qk_norm:
        normed = (("q", q_shape, h, q_src), ("k", k_shape, hkv, k_src))[: 2 if own_kv else 1]
        for which, shape, heads, host in normed:
            if cfg.qk_norm_scope == "head":
                op = norm(cfg, f"attn.{which}_norm", host, n * heads, shape[:-1], hd, host, True)
                op.note = "per-head RMSNorm (QK-norm)"
            else:  # one statistic over the whole projection of a token (OLMo 2)
                op = norm(cfg, f"attn.{which}_norm", host, n, lead, heads * hd, host, rms=True)
                op.note = "RMSNorm over all heads of the projection (QK-norm)"
            ops.append(op)
        q_src, k_src = "attn.q_norm", "attn.k_norm" if own_kv else k_src
    rope = cfg.uses_rope(layer)
    if rope:
        rot = cfg.rope_dim_of(cfg.layer_type(layer))
        ops.append(rope_op("attn.rope_q", q_src, q_shape, n * h, rot, "attn.q_proj"))
        if own_kv:
            ops.append(rope_op("attn.rope_k", k_src, k_shape, n * hkv, rot, "attn.k_proj"))
            k_src = "attn.rope_k"
        q_src = "attn.rope_q"
    if cfg.qk_l2_norm and rope:
        pairs = (("q", q_shape, h, q_src), ("k", k_shape, hkv, k_src))[: 2 if own_kv else 1]
        for which, shape, heads, host in pairs:
            op = norm(cfg, f"attn.{which}_l2norm", host, n * heads, shape[:-1], hd, host, rms=True)
            op.params, op.w_read = 0, 0
            op.flops_other = (NORM_FLOPS["rmsnorm"] - 1) * n * heads * hd  # no weight
            op.note = "per-head RMS norm without a weight (Llama 4's L2 norm)"
            ops.append(op)
        q_src, k_src = "attn.q_l2norm", "attn.k_l2norm" if own_kv else k_src
    if cfg.attn_temperature_floor is not None and not rope:
        ops.append(
            Op(
                "attn.q_temperature",
                "elementwise",
                [Edge(q_src, q_shape)],
                q_shape,
                flops_other=n * h * hd + 4 * tok,  # q * tau(p); tau: floor, log1p, mul, add
                a_read=n * h * hd,
                a_write=n * h * hd,
                saved=n * h * hd,
                fuse_into="attn.q_proj",
                fused_saved=2 * n * h * hd,
                note="q * (1 + s log(1 + floor((p + 1) / F))) on NoPE layers",
            )
        )
        q_src = "attn.q_temperature"
    v_src = "attn.v_proj" if own_kv and not cfg.layer_k_eq_v(layer) else "attn.k_proj"
    if not own_kv:
        v_src = "kv_source"
    elif cfg.v_norm:
        ops.append(unscaled_norm("attn.v_norm", v_src, n * hkv, k_shape[:-1], hd, v_src))
        v_src = "attn.v_norm"
    per_token_kv = 2 * hkv * hd
    if cache and own_kv:
        ops.append(
            Op(
                "attn.kv_cache_write",
                "cache",
                [Edge(k_src, k_shape), Edge(v_src, k_shape)],
                (B, hkv, g.cap, hd),
                a_read=B * g.written * per_token_kv,
                kv_write=B * g.written * per_token_kv,
                cache_elems=B * g.cap * per_token_kv,
                note=f"K and V, {g.cap if isinstance(g.cap, int) else 'min(S, window)'} slots",
            )
        )
    ops.extend(_attention_core(cfg, g, q_src, k_src, v_src, h, hkv, hd, hd, cache))
    out_src = "attn.value"
    if gated:
        ops.append(
            Op(
                "attn.output_gate",
                "elementwise",
                [Edge("attn.value", (B, h, tok, hd)), Edge("attn.q_proj", (*lead, h * hd))],
                (*lead, h * hd),
                flops_other=(ACT_FLOPS["silu"] + 1) * n * h * hd,
                a_read=2 * n * h * hd,
                a_write=n * h * hd,
                saved=2 * n * h * hd,
                fuse_into="attn.o_proj",
                # the o_proj prologue scales its input: neither o * sigmoid(g) is written nor
                # read back
                fused_saved=2 * n * h * hd,
                note="o * sigmoid(g), the gate from q_proj",
            )
        )
        out_src = "attn.output_gate"
    ops.append(linear("attn.o_proj", out_src, n, lead, h * hd, d, cfg.attn_out_bias))
    return ops


def _softmax(g: Geometry, h: int, sinks: bool = False) -> Op:
    """The row softmax over the score grid: standard heads and both MLA orders alike. With
    attention sinks each row has one more column, the head's sink logit (h parameters)."""
    grid_total = B * h * g.tokens * g.grid
    sink_column = B * h * g.tokens if sinks else 0
    return Op(
        "attn.softmax",
        "softmax",
        [Edge("attn.scores", (B, h, g.tokens, g.grid))],
        (B, h, g.tokens, g.grid),
        params=h if sinks else 0,
        w_read=h if sinks else 0,
        flops_other=SOFTMAX_FLOPS * (blend(grid_total, B * h * g.pairs) + sink_column),
        a_read=EAGER * grid_total,
        a_write=EAGER * grid_total,
        saved=EAGER * grid_total + B * h * g.tokens,  # probabilities (eager) or row logsumexp
        note="masked, in fp32" if not g.decode else "in fp32",
    )


def _attention_core(
    cfg: Config,
    g: Geometry,
    q_src: str,
    k_src: str,
    v_src: str,
    h: int,
    hkv: int,
    qk: int,
    vd: int,
    cache: bool,
    k_shared: int = 0,
) -> list[Op]:
    """scores -> softmax -> value for standard heads (MHA/GQA/MQA and MLA's plain order).

    k_shared: MLA's rope key dims, one vector shared by all heads (read once per token)."""
    tok = g.tokens
    grid_total = B * h * tok * g.grid
    pairs_total = B * h * g.pairs
    elems = blend(grid_total, pairs_total)
    keys = B * hkv * g.cap if g.decode else B * hkv * tok  # key vectors read from HBM
    k_vec = qk - k_shared
    from_cache = g.decode and cache
    score_other = (1 + (SOFTCAP_FLOPS if cfg.attn_logit_softcap else 0)) * elems
    k_read = keys * k_vec + (B * (g.cap if g.decode else tok)) * k_shared
    scores = Op(
        "attn.scores",
        "attention",
        [
            Edge(q_src, (B, h, tok, qk)),
            Edge("cache" if from_cache else k_src, (B, hkv, g.grid, qk)),
        ],
        (B, h, tok, g.grid),
        flops_mm=2 * grid_total * qk,
        flops_mm_causal=2 * pairs_total * qk,
        flops_other=score_other,
        a_read=B * h * tok * qk + (0 if from_cache else k_read),
        kv_read=k_read if from_cache else 0,
        a_write=EAGER * grid_total,
        saved=B * h * tok * qk + (0 if from_cache else k_read),
        note="q k^T * scale" + (" , soft-capped" if cfg.attn_logit_softcap else ""),
    )
    softmax = _softmax(g, h, cfg.attn_sinks)
    if cfg.attn_sinks:
        softmax.note += ", one sink column per head"

    v_read = keys * vd
    value = Op(
        "attn.value",
        "attention",
        [
            Edge("attn.softmax", (B, h, tok, g.grid)),
            Edge("cache" if from_cache else v_src, (B, hkv, g.grid, vd)),
        ],
        (B, h, tok, vd),
        flops_mm=2 * grid_total * vd,
        flops_mm_causal=2 * pairs_total * vd,
        a_read=EAGER * grid_total + (0 if from_cache else v_read),
        kv_read=v_read if from_cache else 0,
        a_write=B * h * tok * vd,
        saved=B * h * tok * vd + (0 if from_cache else v_read),
        note="probs @ v",
    )
    return [scores, softmax, value]


def _head_matmul(name: str, src: str, tok: Value, h: int, k_in: int, k_out: int, note: str) -> Op:
    """x_h W_h with a [k_in, k_out] weight per head: MLA's absorbed order applies kv_b_proj's
    halves this way, W_uk to the query and W_uv to the attention's latent output."""
    n = B * tok
    return Op(
        name,
        "matmul",
        [Edge(src, (B, h, tok, k_in))],
        (B, h, tok, k_out),
        params=h * k_in * k_out,
        flops_mm=2 * n * h * k_in * k_out,
        w_read=h * k_in * k_out,
        a_read=n * h * k_in,
        a_write=n * h * k_out,
        saved=n * h * k_in,
        note=note,
    )


def mla_ops(
    cfg: Config, layer: int, src: str, g: Geometry, cache: bool, order: MLAOrder
) -> list[Op]:
    d, h = cfg.d_model, cfg.n_heads
    nope, rope, vd, r = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    qk = nope + rope
    tok = g.tokens
    n = B * tok
    lead = (B, tok)
    ops: list[Op] = []
    if cfg.q_lora_rank is None:
        ops.append(linear("attn.q_proj", src, n, lead, d, h * qk, False))
        q_src = "attn.q_proj"
    else:
        rq = cfg.q_lora_rank
        ops.append(linear("attn.q_a_proj", src, n, lead, d, rq, cfg.qkv_bias))
        ops.append(
            norm(cfg, "attn.q_a_norm", "attn.q_a_proj", n, lead, rq, "attn.q_b_proj", rms=True)
        )
        ops.append(linear("attn.q_b_proj", "attn.q_a_norm", n, lead, rq, h * qk, False))
        q_src = "attn.q_b_proj"
    ops.append(linear("attn.kv_a_proj", src, n, lead, d, r + rope, cfg.qkv_bias))
    ops[-1].note = "compress: c_kv (kv_lora_rank) and the shared rope key"
    kv_norm = norm(cfg, "attn.kv_a_norm", "attn.kv_a_proj", n, lead, r, None, rms=True)
    # c_kv is cached (and, in the plain order, read by kv_b_proj): its norm fuses into
    # kv_a_proj's epilogue (a row of kv_lora_rank fits one tile), it still writes c_kv.
    kv_norm.fuse_into, kv_norm.fused_saved = "attn.kv_a_proj", 2 * n * r
    ops.append(kv_norm)
    if cfg.position == "rope":
        q_rope = rope_op("attn.rope_q", q_src, (B, h, tok, rope), n * h, rope, q_src)
        k_rope = rope_op("attn.rope_k", "attn.kv_a_proj", (B, tok, rope), n, rope, "attn.kv_a_proj")
        ops.extend([q_rope, k_rope])
        q_src = "attn.rope_q"
    per_token = r + rope
    if cache:
        ops.append(
            Op(
                "attn.kv_cache_write",
                "cache",
                [Edge("attn.kv_a_norm", (B, tok, r)), Edge("attn.rope_k", (B, tok, rope))],
                (B, g.cap, per_token),
                a_read=B * g.written * per_token,
                kv_write=B * g.written * per_token,
                cache_elems=B * g.cap * per_token,
                note="compressed latent c_kv + shared rope key",
            )
        )
    from_cache = g.decode and cache
    if order == "plain":
        key_rows = B * g.grid if g.decode else n  # latents expanded per step
        kv_b = linear(
            "attn.kv_b_proj",
            "cache" if from_cache else "attn.kv_a_norm",
            key_rows,
            (B, g.grid),
            r,
            h * (nope + vd),
            False,
        )
        if from_cache:
            kv_b.kv_read, kv_b.a_read = B * g.cap * r, 0
        kv_b.note = "expand latents to per-head k_nope and v"
        ops.append(kv_b)
        # scores/value read the expanded per-head keys (k_rope shared) and values
        geo = replace(g, cap=g.grid if g.decode else g.cap)
        core = _attention_core(
            cfg, geo, q_src, "attn.kv_b_proj", "attn.kv_b_proj", h, h, qk, vd, False, k_shared=rope
        )
        if from_cache:  # the shared rope key still comes from the cache
            core[0].kv_read = B * g.cap * rope
            core[0].a_read = core[0].a_read - B * g.grid * rope
        elif cfg.position == "rope":
            core[0].inputs.append(Edge("attn.rope_k", (B, g.grid, rope)))
        ops.extend(core)
        ops.append(linear("attn.o_proj", "attn.value", n, lead, h * vd, d, cfg.attn_out_bias))
        return ops

    # absorbed: q_lat = q_nope W_uk (per head), scores against [c_kv ; k_rope], o = (P c_kv) W_uv
    uk_note = "W_uk (kv_b_proj's key half) folded into the query"
    ops.append(_head_matmul("attn.q_absorb", q_src, tok, h, nope, r, uk_note))
    tok_keys = g.cap if g.decode else tok
    grid_total = B * h * tok * g.grid
    pairs_total = B * h * g.pairs
    elems = blend(grid_total, pairs_total)
    latent_read = B * tok_keys * per_token
    ops.append(
        Op(
            "attn.scores",
            "attention",
            [Edge("attn.q_absorb", (B, h, tok, r)), Edge(q_src, (B, h, tok, rope))]
            + (
                [Edge("cache", (B, g.grid, per_token))]
                if from_cache
                else [
                    Edge("attn.kv_a_norm", (B, g.grid, r)),
                    Edge("attn.rope_k", (B, g.grid, rope)),
                ]
            ),
            (B, h, tok, g.grid),
            flops_mm=2 * grid_total * per_token,
            flops_mm_causal=2 * pairs_total * per_token,
            flops_other=elems,
            a_read=n * h * per_token + (0 if from_cache else latent_read),
            kv_read=latent_read if from_cache else 0,
            a_write=EAGER * grid_total,
            saved=n * h * per_token + (0 if from_cache else latent_read),
            note="[q_lat ; q_rope] . [c_kv ; k_rope]: heads share one latent key",
        )
    )
    ops.append(_softmax(g, h))
    c_read = B * tok_keys * r
    ops.append(
        Op(
            "attn.value",
            "attention",
            [
                Edge("attn.softmax", (B, h, tok, g.grid)),
                Edge("cache" if from_cache else "attn.kv_a_norm", (B, g.grid, r)),
            ],
            (B, h, tok, r),
            flops_mm=2 * grid_total * r,
            flops_mm_causal=2 * pairs_total * r,
            # a fused kernel reuses the latent tile loaded for the scores; eager reads it again
            a_read=EAGER * grid_total + (0 if from_cache else EAGER * c_read),
            kv_read=EAGER * c_read if from_cache else 0,
            a_write=n * h * r,
            saved=n * h * r,
            note="probs @ c_kv (values in latent space)",
        )
    )
    uv_note = "W_uv (kv_b_proj's value half) after the attention"
    ops.append(_head_matmul("attn.v_up", "attn.value", tok, h, r, vd, uv_note))
    ops.append(linear("attn.o_proj", "attn.v_up", n, lead, h * vd, d, cfg.attn_out_bias))
    return ops


# --- linear attention (Gated DeltaNet) ---------------------------------------------------------
LINEAR_CHUNK = 64  # tokens per chunk of the chunked form (components/gated_deltanet.py's CHUNK)
GATE_FLOPS = 10  # per token and value head: softplus, exp(A_log) scaling, exp (decay), sigmoid


def linear_attention_ops(cfg: Config, src: str, g: Geometry, cache: bool) -> list[Op]:
    """A Gated DeltaNet layer (components/gated_deltanet.py), op by op as the module runs them.

    Prefill and training run the chunked form over ceil(T / C) chunks of C tokens (the last one
    padded): per chunk and key head the products Q K^T and K K^T, per value head one triangular
    solve for A^-1 and the products U = T V and W = T K, then, chunk after chunk, the state reads
    (W M, Q M), the intra-chunk attention (P V') and the state update (K^T V'). Decoding runs
    the recurrent step: one read of M for k and q, a rank-1 update. The state in place of a KV
    cache: the conv window [B, conv_dim, K-1] (cache dtype) and M [B, H, d_k, d_v] (float32),
    the same at every sequence length.
    """
    hk, h = cfg.linear_n_k_heads, cfg.linear_n_v_heads
    dk, dv, kernel = cfg.linear_k_head_dim, cfg.linear_v_head_dim, cfg.linear_conv_kernel
    assert hk is not None and h is not None and dk is not None and dv is not None
    d = cfg.d_model
    key_dim, value_dim = hk * dk, h * dv
    conv_dim = 2 * key_dim + value_dim
    tok = g.tokens
    n = B * tok
    lead = (B, tok)
    state = B * h * dk * dv  # M, float32
    window = B * conv_dim * (kernel - 1)
    ops = [
        linear("attn.in_proj_qkv", src, n, lead, d, conv_dim, False),
        linear("attn.in_proj_z", src, n, lead, d, value_dim, False),
        linear("attn.in_proj_b", src, n, lead, d, h, False),
        linear("attn.in_proj_a", src, n, lead, d, h, False),
    ]
    ops.append(
        Op(
            "attn.conv1d",
            "conv",
            [Edge("attn.in_proj_qkv", (*lead, conv_dim))],
            (*lead, conv_dim),
            params=conv_dim * kernel,
            flops_mm=2 * n * conv_dim * kernel,
            flops_other=ACT_FLOPS["silu"] * n * conv_dim,
            w_read=conv_dim * kernel,
            a_read=n * conv_dim,
            a_write=n * conv_dim,
            kv_read=window if cache else 0,
            kv_write=window if cache else 0,
            cache_elems=window if cache else 0,
            saved=n * conv_dim,
            note=f"causal depthwise, {kernel} taps, SiLU"
            + ("; keeps the last K-1 inputs" if cache else ""),
        )
    )
    ops.append(
        Op(
            "attn.qk_l2norm",
            "norm",
            [Edge("attn.conv1d", (*lead, 2 * key_dim))],
            (*lead, 2 * key_dim),
            flops_other=NORM_FLOPS["rmsnorm"] * n * 2 * key_dim,
            a_read=n * 2 * key_dim,
            a_write=n * 2 * key_dim,
            saved=n * 2 * key_dim,
            note="q, k L2-normalised per head (q * d_k^-1/2)",
        )
    )
    ops.append(
        Op(
            "attn.gates",
            "elementwise",
            [Edge("attn.in_proj_a", (*lead, h)), Edge("attn.in_proj_b", (*lead, h))],
            (*lead, h),
            params=2 * h,
            flops_other=GATE_FLOPS * n * h,
            w_read=2 * h,
            a_read=2 * n * h,
            a_write=2 * n * h,
            saved=2 * n * h,
            note="g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b)",
        )
    )
    qkv = [Edge("attn.qk_l2norm", (*lead, 2 * key_dim)), Edge("attn.conv1d", (*lead, value_dim))]
    if g.decode:
        read = Op(
            "attn.state_read",
            "attention",
            [*qkv, Edge("cache" if cache else "attn.gates", (B, h, dk, dv))],
            (B, h, 2, dv),
            flops_mm=2 * B * h * 2 * dk * dv,
            flops_other=6 * B * h * dv,  # delta and the output from the two reads
            a_read=n * (2 * key_dim + value_dim),
            a_write=n * value_dim,
            state_f32_read=state,
            note="M^T k and M^T q in one read; o = alpha M^T q + (q.k) delta",
        )
        update = Op(
            "attn.state_update",
            "elementwise",
            [Edge("attn.state_read", (B, h, 2, dv))],
            (B, h, dk, dv),
            flops_other=3 * state,
            a_read=n * (key_dim + value_dim),
            state_f32_read=2 * state,
            state_f32_write=2 * state,
            state_f32_elems=state if cache else 0,
            note="M <- alpha M + k delta^T, in place (float32 state)",
        )
        core = [read, update]
        out_src = "attn.state_read"
    else:
        c = LINEAR_CHUNK
        chunks = floordiv(tok + (c - 1), c)
        padded = B * chunks * c  # token rows of every chunk, padding included
        rows_k, rows_v = padded * hk, padded * h  # (token, head) rows
        scores = Op(
            "attn.chunk_scores",
            "attention",
            qkv[:1],
            (B, h, tok, c),
            flops_mm=2 * 2 * rows_k * c * dk,
            flops_other=6 * rows_v * c,  # decays exp(gamma_i - gamma_j), masks, beta
            a_read=2 * rows_k * dk,
            a_write=2 * rows_v * c,
            saved=2 * rows_k * dk + 2 * rows_v * c,
            note=f"per chunk of {c}: Q K^T and K K^T per key head, decays per value head",
        )
        ut = Op(
            "attn.chunk_solve",
            "attention",
            [Edge("attn.chunk_scores", (B, h, tok, c)), qkv[1]],
            (B, h, tok, dk + dv),
            flops_mm=2 * rows_v * c * (dk + dv),
            flops_other=rows_v * c * c,  # the unit-triangular inverse, C^3 per chunk and head
            train_extra_mm=2 * rows_v * c * c,  # its backward's product
            a_read=rows_v * c + rows_k * dk + rows_v * dv,
            a_write=rows_v * (c + dk + dv),
            saved=rows_v * (c + dk + dv),
            note="A^-1 (a triangular solve), U = A^-1 diag(beta) V, W = A^-1 diag(beta e^g) K",
        )
        state_reads = Op(
            "attn.chunk_state_read",
            "attention",
            [Edge("attn.chunk_solve", (B, h, tok, dk + dv)), qkv[0]],
            (B, h, tok, 2 * dv),
            flops_mm=2 * 2 * rows_v * dk * dv,
            # the first chunk starts from zeros: no gradient flows to its state
            train_extra_mm=-2 * 2 * B * h * c * dk * dv,
            flops_other=2 * rows_v * dk,  # Q e^gamma per value head
            a_read=rows_v * 2 * dk,
            a_write=rows_v * 2 * dv,
            state_f32_read=2 * B * chunks * h * dk * dv,
            saved=rows_v * 2 * dk + B * chunks * h * dk * dv,
            note="per chunk: V' = U - W M, Q M (the state entering the chunk)",
        )
        intra = Op(
            "attn.chunk_intra",
            "attention",
            [
                Edge("attn.chunk_scores", (B, h, tok, c)),
                Edge("attn.chunk_state_read", (B, h, tok, dv)),
            ],
            (B, h, tok, dv),
            flops_mm=2 * rows_v * c * dv,
            flops_other=rows_v * dv,  # added to the state's contribution
            a_read=rows_v * (c + 2 * dv),
            a_write=rows_v * dv,
            saved=rows_v * (c + dv),
            note="((Q K^T) * D) V' within each chunk",
        )
        update = Op(
            "attn.chunk_state_update",
            "attention",
            [Edge("attn.chunk_state_read", (B, h, tok, dv))],
            (B, h, dk, dv),
            flops_mm=2 * rows_v * dk * dv,
            # training keeps no state: the last chunk's update reaches no output, no gradient
            train_extra_mm=-2 * 2 * B * h * c * dk * dv,
            flops_other=rows_v * dk + 2 * B * chunks * h * dk * dv,
            a_read=rows_v * (dk + dv),
            state_f32_read=B * chunks * h * dk * dv,
            state_f32_write=B * chunks * h * dk * dv,
            state_f32_elems=state if cache else 0,
            saved=rows_v * (dk + dv),
            note="M <- e^gamma_C M + (K e^(gamma_C - gamma))^T V', chunk after chunk",
        )
        core = [scores, ut, state_reads, intra, update]
        out_src = "attn.chunk_intra"
    ops.extend(core)
    norm_op = Op(
        "attn.norm",
        "norm",
        [Edge(out_src, (*lead, value_dim)), Edge("attn.in_proj_z", (*lead, value_dim))],
        (*lead, value_dim),
        params=dv,
        flops_other=(NORM_FLOPS["rmsnorm"] + ACT_FLOPS["silu"] + 1) * n * value_dim,
        w_read=dv,
        a_read=2 * n * value_dim,
        a_write=n * value_dim,
        saved=2 * n * value_dim,
        fuse_into="attn.out_proj",
        fused_saved=2 * n * value_dim,
        note="RMSNorm(o) * SiLU(z) per value head",
    )
    ops.append(norm_op)
    ops.append(linear("attn.out_proj", "attn.norm", n, lead, value_dim, d, False))
    return ops


# --- block -------------------------------------------------------------------------------------
def block_ops(
    cfg: Config,
    layer: int,
    mode: str,
    tokens: Value = T,
    cache: bool = True,
    mla_order: MLAOrder = "plain",
) -> list[Op]:
    g = geometry(mode, cfg.window(layer), tokens, cache, cfg.chunk(layer))
    d = cfg.d_model
    n = B * g.tokens
    lead = (B, g.tokens)
    ops: list[Op] = []
    post = cfg.norm_placement == "post"
    sandwich = cfg.norm_placement == "sandwich"
    output = cfg.norm_placement == "output"  # norms on the branch outputs only (OLMo 2)

    def attention(src: str) -> list[Op]:
        if cfg.layer_type(layer) == "linear":
            return linear_attention_ops(cfg, src, g, cache)
        if cfg.attention == "mla":
            return mla_ops(cfg, layer, src, g, cache, mla_order)
        return mha_ops(cfg, layer, src, g, cache)

    def first_gemm(attn: list[Op]) -> str:
        return next(op.name for op in attn if op.kind in ("matmul", "router"))

    if post:
        attn = attention("x")
        attn_out = attn[-1].name  # the output projection
        ops.extend(attn)
        ops.append(residual("attn_residual", attn_out, n, lead, d, attn_out))
        ops.append(norm(cfg, "attn_norm", "attn_residual", n, lead, d, attn_out))
        mlp_src = "attn_norm"
    else:
        attn = attention("x" if output else "attn_norm")
        attn_out = attn[-1].name
        if not output:
            ops.append(norm(cfg, "attn_norm", "x", n, lead, d, first_gemm(attn)))
        ops.extend(attn)
        branch = attn_out
        if sandwich or output:
            ops.append(norm(cfg, "post_attn_norm", branch, n, lead, d, attn_out))
            branch = "post_attn_norm"
        ops.append(residual("attn_residual", branch, n, lead, d, attn_out))
        mlp_src = "attn_residual" if output else "mlp_norm"
    beside = cfg.moe_beside_mlp and cfg.is_moe_layer(layer)
    moe = cfg.is_moe_layer(layer) and not beside
    d_ff = cfg.layer_d_ff(layer)
    ffn = (
        moe_ops(cfg, mlp_src, n, lead, layer)
        if moe
        else mlp_ops(cfg, "mlp", mlp_src, n, lead, d_ff)
    )
    out_name = "mlp.combine" if moe else "mlp.down_proj"
    if beside:
        ffn += moe_beside_mlp_ops(cfg, "attn_residual", n, lead)
        out_name = "moe.sum"
    if post:
        ops.extend(ffn)
        ops.append(residual("mlp_residual", out_name, n, lead, d, out_name))
        ops.append(norm(cfg, "mlp_norm", "mlp_residual", n, lead, d, out_name))
    else:
        if not output:
            ops.append(norm(cfg, "mlp_norm", "attn_residual", n, lead, d, first_gemm(ffn)))
        ops.extend(ffn)
        branch = out_name
        if sandwich or output:
            ops.append(norm(cfg, "post_mlp_norm", branch, n, lead, d, out_name))
            branch = "post_mlp_norm"
        ops.append(residual("mlp_residual", branch, n, lead, d, out_name))
    # the residual adds read the block input / the attention output, not their branch
    for op in ops:
        if op.name == "mlp_residual":
            op.inputs[1] = Edge("attn_norm" if post else "attn_residual", op.inputs[1].shape)
    if cfg.per_layer_dim:
        ops += per_layer_input_ops(cfg, "mlp_residual", n, lead)
    if cfg.layer_scalar:
        ops.append(layer_scalar_op(ops[-1].name, n, lead, d))
    _fusion_from_ir(cfg, layer, ops, n)
    if cfg.connections != "residual":
        ops = _with_connections(cfg, layer, ops, n, lead)
    return ops


def _with_connections(
    cfg: Config, layer: int, ops: list[Op], n: Value, lead: tuple[Value, ...]
) -> list[Op]:
    """A block's ops under a cross-layer topology (explorer/connections.py): Hyper-Connections
    around each sublayer; MUDDFormer's key and value streams through the attention norm."""
    from glassformer.components.connections.mudd import splits_kv
    from glassformer.explorer.connections import hyper_sublayer_ops

    names = [op.name for op in ops]
    if cfg.connections in ("hyper", "mhc"):
        attn_width, attn_depth = hyper_sublayer_ops(cfg, "attn", n, lead)
        mlp_width, mlp_depth = hyper_sublayer_ops(cfg, "mlp", n, lead)
        a, m = names.index("attn_residual"), names.index("mlp_residual")
        return [*attn_width, *ops[:a], attn_depth, *mlp_width, *ops[a + 1 : m], mlp_depth,
                *ops[m + 1 :]]  # fmt: skip
    if cfg.connections == "mudd" and splits_kv(cfg, layer) and "attn_norm" in names:
        i = names.index("attn_norm")
        extra = []
        for stream in ("k", "v"):
            op = norm(cfg, f"attn_norm_{stream}", "x", n, lead, cfg.d_model, None)
            extra.append(replace(op, params=0, w_read=0, note="the attention norm, shared"))
        return [*ops[: i + 1], *extra, *ops[i + 1 :]]
    return ops


def _fusion_from_ir(cfg: Config, layer: int, ops: list[Op], n: Value) -> None:
    """The epilogue view of a block: which GEMM each op fuses into and the traffic that
    removes, read from the fusion IR (`glassformer.fusion.ir`), the program the code generator
    compiles. Ops the IR does not fuse stay unfused."""
    from glassformer.fusion.ir import explorer_fusion  # the IR imports nothing of the explorer

    fusion = explorer_fusion(cfg, layer)
    for op in ops:
        host, per_token = fusion.get(op.name, (None, 0))
        op.fuse_into, op.fused_saved = host, n * per_token if per_token else 0


# --- embedding and head ------------------------------------------------------------------------
def embed_ops(cfg: Config, tokens: Value, name: str = "embed", owns: bool = True) -> list[Op]:
    d = cfg.d_model
    n = B * tokens
    ops = [
        Op(
            name,
            "embedding",
            [Edge("ids", (B, tokens))],
            (B, tokens, d),
            params=cfg.vocab_size * d if owns else 0,
            flops_other=n * d if cfg.embed_scale else 0,
            w_read=emin(n, cfg.vocab_size) * d,  # gathered rows only
            a_write=n * d,
            note="row gather" + (" * sqrt(d_model)" if cfg.embed_scale else ""),
        )
    ]
    if cfg.position == "learned" and owns:
        ops.append(
            Op(
                "pos_embed",
                "embedding",
                [Edge(name, (B, tokens, d))],
                (B, tokens, d),
                params=cfg.max_seq_len * d,
                flops_other=n * d,
                w_read=tokens * d,
                a_read=n * d,
                a_write=n * d,
                note="learned absolute positions, added",
            )
        )
    return ops


def head_ops(
    cfg: Config, tokens: Value, src: str, train: bool, prefix: str = "", shared: bool = False
) -> list[Op]:
    d, v = cfg.d_model, cfg.vocab_size
    n = B * tokens
    lead = (B, tokens)
    head = linear(f"{prefix}lm_head", f"{prefix}final_norm", n, lead, d, v, False)
    if cfg.tie_embeddings or shared:
        head.params = 0  # the embedding matrix (or the main head), counted once
        head.note = "tied to embed.weight" if cfg.tie_embeddings else "shares lm_head.weight"
    ops = [norm(cfg, f"{prefix}final_norm", src, n, lead, d, f"{prefix}lm_head"), head]
    last = f"{prefix}lm_head"
    if cfg.final_logit_softcap:
        ops.append(
            Op(
                f"{prefix}logit_softcap",
                "elementwise",
                [Edge(last, (*lead, v))],
                (*lead, v),
                flops_other=SOFTCAP_FLOPS * n * v,
                a_read=n * v,
                a_write=n * v,
                saved=n * v,
                fuse_into=f"{prefix}lm_head",
                fused_saved=2 * n * v,
            )
        )
        last = f"{prefix}logit_softcap"
    if train:
        # The loss kernel keeps the logits and their gradient on chip: the group saves what
        # its IR node counts (`fusion.head.HeadLoss.traffic`), the soft-cap's share above
        # included; `_to_train` doubles this forward figure.
        from glassformer.fusion.head import head_node

        t = head_node(cfg).traffic()
        per_token = t["unfused"] - t["fused"] - (4 * v if cfg.final_logit_softcap else 0)
        ops.append(
            Op(
                f"{prefix}cross_entropy",
                "loss",
                [Edge(last, (*lead, v))],
                (B,),
                flops_other=CE_FLOPS * n * v,
                a_read=n * v,
                a_write=n,
                saved=n * v,
                fuse_into=f"{prefix}lm_head",
                fused_saved=n * per_token / 2,
            )
        )
    return ops


def mtp_ops(cfg: Config, depth: int, mode: str, train: bool, mla_order: MLAOrder) -> list[Op]:
    """DeepSeek-V3 MTP depth `depth` (1-based): it sees the first T - depth positions."""
    d = cfg.d_model
    tok = T - depth
    n = B * tok
    lead = (B, tok)
    ops = embed_ops(cfg, tok, name="embed", owns=False)
    ops[0].note = "shared embedding, tokens shifted by the depth"
    ops.append(norm(cfg, "embed_norm", "embed", n, lead, d, "proj"))
    ops.append(norm(cfg, "hidden_norm", "x", n, lead, d, "proj"))
    proj = linear("proj", "embed_norm", n, lead, 2 * d, d, False)
    proj.inputs.append(Edge("hidden_norm", (*lead, d)))
    ops.append(proj)
    block = block_ops(cfg, cfg.n_layers - 1, mode, tok, cache=False, mla_order=mla_order)
    rename = {op.name: f"block.{op.name}" for op in block}
    for op in block:
        op.name = rename[op.name]
        op.inputs = [
            Edge(rename.get(e.src, "proj" if e.src == "x" else e.src), e.shape) for e in op.inputs
        ]
        op.fuse_into = rename.get(op.fuse_into, op.fuse_into) if op.fuse_into else None
    ops.extend(block)
    ops.extend(head_ops(cfg, tok, block[-1].name, train, shared=True))
    return ops


# --- the whole model ---------------------------------------------------------------------------
def _per_layer_sizes(cfg: Config) -> bool:
    """Whether layers of one type may differ in size (a pruned model)."""
    names = ("heads_per_layer", "kv_heads_per_layer", "d_ff_per_layer", "moe_d_ff_per_layer")
    return any(getattr(cfg, name) is not None for name in (*names, "experts_per_layer"))


def layer_kinds(cfg: Config) -> dict[tuple, LayerSpans]:
    """(layer type, MoE?, RoPE?) -> the layers of that kind. Without an explicit `layer_types`
    list, interleaved MoE or NoPE layers every layer has the same type and only
    `first_k_dense` splits the stack, so this costs O(1) whatever `n_layers` is; otherwise it
    costs one step per layer."""
    n = cfg.n_layers
    uniform = cfg.layer_types is None and cfg.moe_layer_step == 1 and not cfg.nope_layers
    uniform = uniform and not cfg.n_kv_shared_layers and not _per_layer_sizes(cfg)
    if uniform:
        dense = min(cfg.first_k_dense, n) if cfg.n_experts else n
        ltype, rope = cfg.layer_type(0), cfg.position == "rope"
        parts = [((ltype, False, rope), range(0, dense)), ((ltype, True, rope), range(dense, n))]
    else:

        def kind(i: int) -> tuple[str, bool, bool] | tuple[str, bool, bool, str]:
            # KV-sharing layers (Gemma 4) form kinds of their own: "<type>_shared"
            shared = "_shared" if cfg.kv_source(i) is not None else ""
            base = cfg.layer_type(i) + shared, cfg.is_moe_layer(i), cfg.uses_rope(i)
            if not _per_layer_sizes(cfg):
                return base
            # a pruned model: layers of one kind but different sizes are different kinds
            moe = cfg.is_moe_layer(i)
            ff = cfg.layer_moe_d_ff(i) if moe else cfg.layer_d_ff(i)
            e = f"e{cfg.layer_n_experts(i)}" if moe else ""
            return (*base, f"h{cfg.layer_n_heads(i)}kv{cfg.layer_n_kv_heads(i)}{e}ff{ff}")

        parts, start = [], 0
        for i in range(1, n + 1):  # runs of equal (type, moe, rope)
            if i == n or kind(i) != kind(start):
                parts.append((kind(start), range(start, i)))
                start = i
    kinds: dict[tuple[str, bool, bool], list[range]] = {}
    for key, span in parts:
        if len(span):
            kinds.setdefault(key, []).append(span)
    return {key: LayerSpans(tuple(spans)) for key, spans in kinds.items()}


def moe_layer_count(cfg: Config) -> int:
    """Layers with a routed MoE MLP (closed form of sum(cfg.is_moe_layer(i)))."""
    if not cfg.n_experts:
        return 0
    step, first = cfg.moe_layer_step, min(cfg.first_k_dense, cfg.n_layers)
    return cfg.n_layers // step - first // step


def sliding_layer_count(cfg: Config) -> int:
    """Layers with a sliding window (closed form of sum(cfg.window(i) is not None))."""
    if cfg.sliding_window is None:
        return 0
    return cfg.n_layers if cfg.layer_types is None else cfg.layer_types.count("sliding")


def build_sections(
    cfg: Config, mode: str, mla_order: MLAOrder | None = None, mtp: bool | None = None
) -> list[Section]:
    """The op list of one pass, grouped into sections; identical layers share a section."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    order: MLAOrder = mla_order or ("absorbed" if mode == "decode" else "plain")
    train = mode == "train"
    cache = mode != "train"
    fwd_mode = "prefill" if train else mode
    tokens: Value = 1 if mode == "decode" else T
    sections = [Section("embed", "embedding", "embed", LayerSpans(), embed_ops(cfg, tokens))]
    if cfg.per_layer_dim:
        ple = per_layer_embed_ops(cfg, tokens)
        sections.append(Section("per_layer_embed", "per-layer inputs", "per_layer", ops=ple))
    for (ltype, moe, rope, *sizes), layers in layer_kinds(cfg).items():
        window, chunk = cfg.window(layers.first), cfg.chunk(layers.first)
        span = f", sliding {window}" if window else (f", chunked {chunk}" if chunk else ", full")
        if ltype == "linear":
            span = ", linear attention"
        nope = not rope and cfg.position == "rope"
        desc = ("MoE" if moe else "dense") + span + (", NoPE" if nope else "")
        if cfg.kv_source(layers.first) is not None:
            desc += f", keys and values of layer {cfg.kv_source(layers.first)}"
        key = f"block.{ltype}.{'moe' if moe else 'dense'}" + (".nope" if nope else "")
        if sizes:  # a pruned model's sizes (query heads, KV heads, MLP width)
            key += f".{sizes[0]}"
            desc += f", {sizes[0]}"
        title = f"{layers.describe()} ({desc})"
        ops = block_ops(cfg, layers.first, fwd_mode, tokens, cache, order)
        sections.append(Section(key, title, "block", layers, ops))
    if cfg.connections != "residual":
        from glassformer.explorer.connections import section_ops

        title = f"cross-layer connections ({cfg.connections})"
        conn = section_ops(cfg, tokens)
        sections.append(Section("connections", title, "connections", LayerSpans(), conn))
    last = "x"
    head = head_ops(cfg, tokens, last, train)
    sections.append(Section("head", "final norm and LM head", "head", LayerSpans(), head))
    with_mtp = cfg.build_mtp if mtp is None else mtp
    if with_mtp and cfg.n_mtp_modules and mode != "decode":
        for k in range(1, cfg.n_mtp_modules + 1):
            sections.append(
                Section(
                    f"mtp.{k - 1}",
                    f"MTP depth {k}",
                    "mtp",
                    LayerSpans(),
                    mtp_ops(cfg, k, fwd_mode, train, order),
                )
            )
    if train:
        sections = [_to_train(s) for s in sections]
        params = sum(op.params * s.count for s in sections for op in s.ops)
        adamw = [optimizer_op(params)]
        sections.append(Section("optimizer", "AdamW step", "optimizer", LayerSpans(), adamw))
    return sections


def _to_train(section: Section) -> Section:
    """Forward + backward: matmul FLOPs x3 (dX and dW each cost a forward), elementwise x3
    (approx.), weights read twice and their gradients written once, activations:
    fwd reads X writes Y, bwd reads dY and X, writes dX. Epilogue fusion saves its forward
    traffic twice (the backward kernel skips the same intermediate gradient)."""
    ops = []
    for op in section.ops:
        ops.append(
            replace(
                op,
                flops_mm=3 * op.flops_mm + op.train_extra_mm,
                flops_mm_causal=3 * op.flops_mm_causal + op.train_extra_mm,  # type: ignore[operator]
                flops_other=3 * op.flops_other,
                w_read=2 * op.w_read,
                w_write=op.w_read,
                a_read=2 * op.a_read + op.a_write,
                a_write=op.a_write + op.a_read,
                fused_saved=2 * op.fused_saved,  # forward and backward each skip it once
                inputs=list(op.inputs),
            )
        )
    return Section(section.key, section.title, section.kind, section.layers, ops)


def optimizer_op(params: int) -> Op:
    p = params
    return Op(
        "adamw",
        "optimizer",
        [Edge("grads", (p,))],
        (p,),
        flops_other=ADAMW_FLOPS * p,
        w_read=p,  # gradients, in the weight dtype
        w_write=p,  # the updated weights
        f32_read=prod(p, 2 + MASTER),  # m, v (+ fp32 master weights)
        f32_write=prod(p, 2 + MASTER),
        note="m, v in fp32; fp32 master weights when the dtype is below fp32",
    )


def expert_params(cfg: Config, layer: int | None = None) -> int:
    """Parameters of one routed expert (with its biases, when the projections have them)."""
    gated = cfg.mlp == "glu"
    f = cfg.moe_d_ff if layer is None else cfg.layer_moe_d_ff(layer)
    biases = ((2 if gated else 1) * f + cfg.d_model) if cfg.mlp_bias else 0
    return (3 if gated else 2) * cfg.d_model * f + biases


# --- Gemma 4: per-layer inputs, experts beside the MLP, layer scalars, value norms -------------
def unscaled_norm(
    name: str, src: str, n: Value, lead: tuple[Value, ...], dim: int, host: str
) -> Op:
    """RMSNorm without a learned scale (Gemma 4's value heads)."""
    return Op(
        name,
        "norm",
        [Edge(src, (*lead, dim))],
        (*lead, dim),
        flops_other=NORM_FLOPS["rmsnorm"] * n * dim,
        a_read=n * dim,
        a_write=n * dim,
        saved=n * dim,
        fuse_into=host,
        fused_saved=2 * n * dim,
        note="RMSNorm without scale",
    )


def per_layer_embed_ops(cfg: Config, tokens: Value) -> list[Op]:
    """e_l = (RMSNorm((x_0 W_proj)_l / sqrt(d)) + E_ple[t]_l sqrt(p)) / sqrt(2), all L layers."""
    d, p, layers = cfg.d_model, cfg.per_layer_dim, cfg.n_layers
    n, width = B * tokens, cfg.n_layers * cfg.per_layer_dim
    lead = (B, tokens)
    table = Op(
        "per_layer_embed.embed",
        "embedding",
        [Edge("ids", lead)],
        (*lead, layers, p),
        params=cfg.per_layer_vocab_size * width,
        flops_other=n * width,  # * sqrt(p)
        w_read=emin(n, cfg.per_layer_vocab_size) * width,
        a_write=n * width,
        note=f"row gather of {layers} x {p} per token, * sqrt(p)",
    )
    projection = linear("per_layer_embed.projection", "embed", n, lead, d, width, False)
    pnorm = norm(
        cfg, "per_layer_embed.norm", "per_layer_embed.projection", n * layers, (*lead, layers), p,
        "per_layer_embed.projection",
    )  # fmt: skip
    combine = Op(
        "per_layer_embed.combine",
        "elementwise",
        [Edge("per_layer_embed.norm", (*lead, layers, p)), Edge(table.name, (*lead, layers, p))],
        (*lead, layers, p),
        flops_other=3 * n * width,  # 1/sqrt(d) on the projection, the sum, 1/sqrt(2)
        a_read=2 * n * width,
        a_write=n * width,
        saved=n * width,
        fuse_into="per_layer_embed.projection",
        fused_saved=2 * n * width,
    )
    return [table, projection, pnorm, combine]


def per_layer_input_ops(cfg: Config, src: str, n: Value, lead: tuple[Value, ...]) -> list[Op]:
    """x + RMSNorm(W_up(act(x W_gate) * e_l)): the block's per-layer input."""
    d, p = cfg.d_model, cfg.per_layer_dim
    gate = linear("per_layer_input.gate", src, n, lead, d, p, False)
    act = Op(
        "per_layer_input.act",
        "elementwise",
        [Edge(gate.name, (*lead, p)), Edge("per_layer_embed.combine", (*lead, p))],
        (*lead, p),
        flops_other=(ACT_FLOPS[cfg.activation] + 1) * n * p,
        a_read=2 * n * p,
        a_write=n * p,
        saved=2 * n * p,
        fuse_into=gate.name,
        fused_saved=2 * n * p,
    )
    up = linear("per_layer_input.projection", act.name, n, lead, p, d, False)
    post = norm(cfg, "per_layer_input.norm", up.name, n, lead, d, up.name)
    res = residual("per_layer_residual", post.name, n, lead, d, up.name)
    res.inputs[1] = Edge(src, (*lead, d))
    return [gate, act, up, post, res]


def layer_scalar_op(src: str, n: Value, lead: tuple[Value, ...], d: int) -> Op:
    return Op(
        "layer_scalar",
        "elementwise",
        [Edge(src, (*lead, d))],
        (*lead, d),
        flops_other=n * d,
        a_read=n * d,
        a_write=n * d,
        fuse_into=src,
        fused_saved=2 * n * d,
        note="block output * stored scalar",
    )


def moe_beside_mlp_ops(cfg: Config, src: str, n: Value, lead: tuple[Value, ...]) -> list[Op]:
    """Gemma 4's routed experts beside the dense MLP (whose ops precede these): the router
    reads RMS(x) * s / sqrt(d), the experts N_2(x); y = N_1'(dense) + N_2'(experts)."""
    d, e = cfg.d_model, cfg.n_experts
    pre = norm(cfg, "moe.pre_norm", src, n, lead, d, "moe.experts.gate_proj")
    router_norm = unscaled_norm("moe.router_norm", src, n, lead, d, "moe.router")
    router_norm.params, router_norm.w_read = d, d  # the per-channel scale s
    router_norm.flops_other = (NORM_FLOPS["rmsnorm"] + 2) * n * d  # * s * 1/sqrt(d)
    router_norm.note = "RMSNorm without scale, * s / sqrt(d)"
    ops = [pre, router_norm]
    for op in moe_ops(cfg, pre.name, n, lead):
        op.name = "moe." + op.name.removeprefix("mlp.")
        op.inputs = [Edge(_moe_name(e_.src), e_.shape) for e_ in op.inputs]
        op.fuse_into = _moe_name(op.fuse_into) if op.fuse_into else None
        ops.append(op)
    router = next(op for op in ops if op.name == "moe.router")
    router.inputs = [Edge(router_norm.name, (*lead, d))]
    topk = next(op for op in ops if op.name == "moe.router_topk")
    topk.params, topk.w_read = e, e  # the per-expert scale c
    topk.note += ", renormalised, * per-expert scale"
    dense_norm = norm(cfg, "moe.post_dense_norm", "mlp.down_proj", n, lead, d, "mlp.down_proj")
    post = norm(cfg, "moe.post_norm", "moe.combine", n, lead, d, "moe.combine")
    total = Op(
        "moe.sum",
        "elementwise",
        [Edge(dense_norm.name, (*lead, d)), Edge(post.name, (*lead, d))],
        (*lead, d),
        flops_other=n * d,
        a_read=2 * n * d,
        a_write=n * d,
        note="dense MLP + experts",
    )
    return [*ops, dense_norm, post, total]


def _moe_name(name: str) -> str:
    return "moe." + name.removeprefix("mlp.") if name.startswith("mlp.") else name
