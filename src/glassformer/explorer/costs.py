"""Evaluate the op list for a mode, batch, sequence, dtype and hardware: the cost model.

Per op (one instance; a section's ops repeat `count` times, once per layer of that kind):

    flops_matmul        matrix FLOPs over the full query x key grid (what FlopCounterMode counts
                        on an eager model), 2 per multiply-accumulate
    flops_matmul_causal matrix FLOPs of the visible pairs only (causal / windowed flash kernel)
    flops_other         norms, softmax, activations, RoPE, residual and bias adds
    bytes               weights (w_read, w_write) x weight bytes + activations x activation bytes
                        + KV cache x cache bytes + fp32 optimizer state x 4
    intensity           executed FLOPs / bytes
    time_s              roofline: max(matmul / peak_matrix(dtype) + other / peak_vector,
                                      bytes / bandwidth)
    bound               "compute" when the compute term is the larger, else "memory"

Executed matrix FLOPs are flops_matmul_causal with the flash kernel (the default) and
flops_matmul with `attention="eager"` (which also materialises the score matrix in memory).
Whole-pass figures sum the ops (`time_s`: ops run one after another, each at its own bound) and
also give the fully overlapped bound max(sum compute, sum memory).

Modes: prefill (B sequences of S tokens, writes the KV cache), decode (B sequences, one new
token each against a cache of S tokens) and train (forward + backward + AdamW step; memory of
weights, gradients, optimizer states and activations, with and without activation
checkpointing per block, which adds one forward recomputation of the blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glassformer.config import Config
from glassformer.explorer.expr import Number, Value, evaluate
from glassformer.explorer.hardware import DEFAULT_HARDWARE, Hardware, get_hardware
from glassformer.explorer.ops import (
    MODES,
    MLAOrder,
    Op,
    Section,
    build_sections,
    expert_params,
    moe_layer_count,
    sliding_layer_count,
)


@dataclass(frozen=True)
class DType:
    name: str
    weight_bytes: float
    act_bytes: float
    kv_bytes: float
    compute: str  # which hardware peak the GEMMs run at
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight_bytes": self.weight_bytes,
            "act_bytes": self.act_bytes,
            "kv_bytes": self.kv_bytes,
            "compute": self.compute,
            "note": self.note,
        }


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("fp32", 4, 4, 4, "fp32", "fp32 everywhere (no TF32)"),
        DType("bf16", 2, 2, 2, "bf16", "bf16 weights, activations, KV cache and GEMMs"),
        DType("fp16", 2, 2, 2, "fp16", "fp16 weights, activations, KV cache and GEMMs"),
        DType("fp8", 1, 2, 1, "fp8", "fp8 weights, KV cache and GEMMs; bf16 between ops"),
        DType("int8", 1, 2, 1, "int8", "W8A8: int8 weights, KV cache and GEMMs; bf16 between ops"),
        DType(
            "int4", 0.5, 2, 2, "bf16", "W4A16: 4-bit weights dequantised in the GEMM (bf16 rate)"
        ),
    )
}

CONVENTIONS = {
    "flops": "2 FLOPs per multiply-accumulate",
    "flops_matmul": "every matrix product; attention scores and values over the full query x key "
    "grid as an unmasked kernel executes them (= torch FlopCounterMode on an eager model)",
    "flops_matmul_causal": "matrix products counting only visible (causal/window) query-key pairs "
    "(what a causal or windowed flash kernel executes)",
    "flops_other": "norms, softmax, activations, RoPE, residual and bias adds, router top-k, loss",
    "bytes": "HBM traffic of the unfused op sequence: each op reads its inputs and weights and "
    "writes its outputs once",
    "time": "roofline per op: max(matmul/peak_matrix + other/peak_vector, bytes/bandwidth)",
    "counts": "per-op figures are for one instance; `count` instances (one per layer) run",
}


def resolve_dtype(name: str) -> DType:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {name!r}") from None


def environment(mode: str, batch: int, seq: int, attention: str) -> dict[str, Number]:
    if batch < 1 or seq < 1:
        raise ValueError("batch and seq must be >= 1")
    if attention not in ("flash", "eager"):
        raise ValueError(f"attention: expected flash or eager, got {attention!r}")
    tokens = 1 if mode == "decode" else seq
    return {"B": batch, "T": tokens, "S": seq, "eager": 1 if attention == "eager" else 0}


def _shape(shape: tuple[Value, ...], env: dict[str, Number]) -> list[Number]:
    return [evaluate(s, env) for s in shape]


def evaluate_op(
    op: Op, env: dict[str, Number], dt: DType, hw: Hardware, with_shapes: bool = True
) -> dict[str, Any]:
    """One op's numbers. page.html's `evalOp` mirrors this function line by line."""

    def ev(e: Value) -> Number:
        return evaluate(e, env)

    mm, mm_causal, other = ev(op.flops_mm), ev(op.flops_mm_causal), ev(op.flops_other)  # type: ignore[arg-type]
    executed = mm if env["eager"] else mm_causal
    master = 1 if dt.weight_bytes < 4 else 0
    env_m = {**env, "master": master}
    w_r, w_w = ev(op.w_read) * dt.weight_bytes, ev(op.w_write) * dt.weight_bytes
    a_r, a_w = ev(op.a_read) * dt.act_bytes, ev(op.a_write) * dt.act_bytes
    k_r, k_w = ev(op.kv_read) * dt.kv_bytes, ev(op.kv_write) * dt.kv_bytes
    k_r += ev(op.state_f32_read) * 4  # a linear-attention state is float32
    k_w += ev(op.state_f32_write) * 4
    f_r = evaluate(op.f32_read, env_m) * 4
    f_w = evaluate(op.f32_write, env_m) * 4
    read, written = w_r + a_r + k_r + f_r, w_w + a_w + k_w + f_w
    total = read + written
    peak, _ = hw.compute_peak(dt.compute)
    t_compute = executed / peak + other / hw.vector_flops
    t_memory = total / hw.bandwidth
    out: dict[str, Any] = {
        "name": op.name,
        "kind": op.kind,
        "params": op.params,
        "flops_matmul": mm,
        "flops_matmul_causal": mm_causal,
        "flops_other": other,
        "flops": executed + other,
        "bytes_weights": w_r + w_w + f_r + f_w,
        "bytes_activations": a_r + a_w,
        "bytes_kv": k_r + k_w,
        "bytes_read": read,
        "bytes_written": written,
        "bytes": total,
        "intensity": (executed + other) / total if total else None,
        "time_compute_s": t_compute,
        "time_memory_s": t_memory,
        "time_s": max(t_compute, t_memory),
        "bound": "compute" if t_compute >= t_memory else "memory",
        "cache_bytes": ev(op.cache_elems) * dt.kv_bytes + ev(op.state_f32_elems) * 4,
        "saved_bytes": ev(op.saved) * dt.act_bytes,
        "fuse_into": op.fuse_into,
        "fused_saved_bytes": ev(op.fused_saved) * dt.act_bytes,
        "note": op.note,
    }
    if with_shapes:
        out["inputs"] = [{"src": e.src, "shape": _shape(e.shape, env)} for e in op.inputs]
        out["output_shape"] = _shape(op.out_shape, env)
    return out


SUMMED = (
    "params",
    "flops_matmul",
    "flops_matmul_causal",
    "flops_other",
    "flops",
    "bytes_weights",
    "bytes_activations",
    "bytes_kv",
    "bytes_read",
    "bytes_written",
    "bytes",
    "time_compute_s",
    "time_memory_s",
    "time_s",
    "cache_bytes",
    "saved_bytes",
    "fused_saved_bytes",
)


def _sum(rows: list[dict[str, Any]], weights: list[int] | None = None) -> dict[str, Any]:
    weights = weights or [1] * len(rows)
    return {k: sum(r[k] * w for r, w in zip(rows, weights, strict=True)) for k in SUMMED}


def epilogue_view(rows: list[dict[str, Any]], hw: Hardware) -> dict[str, float]:
    """Unfused vs GEMM-epilogue-fused traffic and roofline time of one section instance.

    Fused ops join their host GEMM: the group runs at max(sum of compute, (sum of bytes -
    bytes removed by the fusion) / bandwidth)."""
    by_name = {r["name"]: r for r in rows}

    def hosted(r: dict[str, Any]) -> bool:
        return bool(r["fuse_into"]) and r["fuse_into"] != r["name"] and r["fuse_into"] in by_name

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if hosted(r):
            groups.setdefault(r["fuse_into"], []).append(r)
    time_fused = 0.0
    saved = 0.0
    for r in rows:
        if hosted(r):
            continue  # timed with its host
        members = groups.get(r["name"], [])
        compute = r["time_compute_s"] + sum(m["time_compute_s"] for m in members)
        bytes_ = r["bytes"] + sum(m["bytes"] for m in members)
        removed = sum(m["fused_saved_bytes"] for m in members)
        if r["fuse_into"]:  # its host lives in another section: only its own traffic shrinks
            removed += r["fused_saved_bytes"]
        removed = min(removed, bytes_)  # never more than the group moves
        saved += removed
        time_fused += max(compute, (bytes_ - removed) / hw.bandwidth)
    unfused = sum(r["bytes"] for r in rows)
    time_unfused = sum(r["time_s"] for r in rows)
    return {
        "bytes_unfused": unfused,
        "bytes_fused": unfused - saved,
        "bytes_saved": saved,
        "time_unfused_s": time_unfused,
        "time_fused_s": time_fused,
        "time_saved_s": time_unfused - time_fused,
    }


def analyze(
    cfg: Config,
    mode: str = "prefill",
    batch: int = 1,
    seq: int = 2048,
    dtype: str = "bf16",
    hardware: str | Hardware = DEFAULT_HARDWARE,
    attention: str = "flash",
    mla_order: MLAOrder | None = None,
    mtp: bool | None = None,
) -> dict[str, Any]:
    """The full analysis as a JSON-ready dict (see the module docstring for the fields)."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if mla_order is not None and mla_order not in ("plain", "absorbed"):
        raise ValueError(f"mla_order: expected plain or absorbed, got {mla_order!r}")
    dt = resolve_dtype(dtype)
    hw = hardware if isinstance(hardware, Hardware) else get_hardware(hardware)
    env = environment(mode, batch, seq, attention)
    order: MLAOrder = mla_order or ("absorbed" if mode == "decode" else "plain")
    sections = build_sections(cfg, mode, order, mtp)

    ops_out: list[dict[str, Any]] = []
    section_out: list[dict[str, Any]] = []
    for s in sections:
        rows = [evaluate_op(op, env, dt, hw) for op in s.ops]
        for r in rows:
            r["section"] = s.key
            r["count"] = s.count
            ops_out.append(r)
        sec = {"key": s.key, "title": s.title, "kind": s.kind, "count": s.count}
        sec["layers"] = s.layers.to_json()  # [[first, last], ...]: repeated layers grouped
        sec.update(_sum(rows))
        sec["epilogue"] = epilogue_view(rows, hw)
        section_out.append(sec)
    counts = [s["count"] for s in section_out]
    tot = _sum(section_out, counts)

    params = parameter_counts(cfg)
    peak, peak_dtype = hw.compute_peak(dt.compute)
    t_compute, t_memory = tot["time_compute_s"], tot["time_memory_s"]
    new_tokens = batch * env["T"]
    result: dict[str, Any] = {
        "model": cfg.name,
        "family": cfg.hf_model_type,
        "mode": mode,
        "batch": batch,
        "seq": seq,
        "dtype": dt.to_dict(),
        "hardware": hw.to_dict(),
        "attention_kernel": attention,
        "mla_order": order if cfg.attention == "mla" else None,
        "conventions": CONVENTIONS,
        **params,
        "flops_matmul": tot["flops_matmul"],
        "flops_matmul_causal": tot["flops_matmul_causal"],
        "flops_other": tot["flops_other"],
        "flops_executed": tot["flops"],
        "weights_bytes": params["params_total"] * dt.weight_bytes,
        "kv_cache_bytes": tot["cache_bytes"],
        "traffic_bytes": tot["bytes"],
        "roofline": {
            "peak_flops": peak,
            "peak_dtype": peak_dtype,
            "vector_flops": hw.vector_flops,
            "bandwidth": hw.bandwidth,
            "ridge_intensity": peak / hw.bandwidth,
            "intensity": tot["flops"] / tot["bytes"] if tot["bytes"] else None,
            "time_s": tot["time_s"],
            "time_compute_s": t_compute,
            "time_memory_s": t_memory,
            "time_overlapped_s": max(t_compute, t_memory),
            "bound": "compute" if t_compute >= t_memory else "memory",
            "tokens_per_s": new_tokens / tot["time_s"] if tot["time_s"] else None,
            "new_tokens": new_tokens,
        },
        "sections": section_out,
        "ops": ops_out,
    }
    result["memory"] = memory(cfg, mode, sections, section_out, ops_out, params, dt, hw, env)
    result["epilogue"] = _epilogue_totals(section_out)
    if mode == "train":
        # A training step is 3x the forward's matrix FLOPs plus what some ops add beyond that
        # (the delta rule's triangular solve, `Op.train_extra_mm`); take that part out first.
        extra = [sum(evaluate(op.train_extra_mm, env) for op in s.ops) * s.count for s in sections]
        forward = [
            (out["flops_matmul"] * out["count"] - more) / 3
            for out, more in zip(section_out, extra, strict=True)
        ]
        block_fwd = sum(
            f for f, o in zip(forward, section_out, strict=True) if o["kind"] == "block"
        )
        result["train"] = {
            "flops_matmul_forward": sum(forward),
            "flops_matmul_with_checkpointing": tot["flops_matmul"] + block_fwd,
            "note": "forward + backward (= 3 x forward matmul FLOPs) + AdamW; activation "
            "checkpointing per block recomputes each block's forward once more",
        }
    if cfg.n_experts:
        result["moe"] = moe_summary(cfg, ops_out, params, env)
    if cfg.attention == "mla":
        result["mla"] = mla_summary(cfg, mode, batch, seq, dt, hw, attention)
    if sliding_layer_count(cfg):
        result["sliding"] = sliding_summary(cfg, mode, seq, batch, dt)
    if cfg.attention_chunk_size is not None:
        result["chunked"] = chunked_summary(cfg, mode, seq, batch, dt)
    if cfg.layer_types and "linear" in cfg.layer_types:
        result["linear_attention"] = linear_attention_summary(
            cfg, mode, seq, batch, dt, section_out
        )
    result["connections"] = connections_summary(cfg, env, dt, ops_out)
    return result


def connections_summary(
    cfg: Config, env: dict[str, Number], dt: DType, ops_out: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the cross-layer topology adds (explorer/connections.py): its parameters, FLOPs and
    traffic (its own ops: the connections section and the ops inside the blocks that belong
    to it), the activations it keeps alive across layers, and in training what it saves for
    the backward pass beyond the plain residual adds it replaces."""
    from glassformer.explorer.connections import connection_params, resident_per_token

    mine = [
        r for r in ops_out
        if r["section"] == "connections"
        or "_hc." in r["name"] or r["name"].startswith("attn_norm_")
        or (cfg.connections in ("hyper", "mhc") and r["name"].endswith("_residual"))
    ]  # fmt: skip
    tokens = env["B"] * env["T"]
    return {
        "kind": cfg.connections,
        "params": connection_params(cfg),
        "flops_matmul": sum(r["flops_matmul"] * r["count"] for r in mine),
        "flops_other": sum(r["flops_other"] * r["count"] for r in mine),
        "bytes": sum(r["bytes"] * r["count"] for r in mine),
        "saved_bytes": sum(r["saved_bytes"] * r["count"] for r in mine),
        "resident_bytes": resident_per_token(cfg) * tokens * dt.act_bytes,
        "note": "resident: activations held across layers beyond the plain stream's one "
        "(stored block outputs; the extra streams); Hyper-Connections' depth updates are "
        "counted whole (they replace the residual adds)",
    }


def parameter_counts(cfg: Config) -> dict[str, int]:
    """Exact parameter counts, summed over the op list (no weights allocated)."""
    from glassformer.explorer.multimodal import multimodal_params  # it imports this module

    sections = build_sections(cfg, "prefill", "plain", mtp=True)
    base = sum(op.params * s.count for s in sections if s.kind != "mtp" for op in s.ops)
    base += multimodal_params(cfg)  # image and audio embedders (explorer/multimodal.py)
    mtp = sum(op.params for s in sections if s.kind == "mtp" for op in s.ops)
    embed = sum(op.params for s in sections if s.kind == "embed" for op in s.ops)
    n_moe = moe_layer_count(cfg)
    inactive = 0
    mtp_inactive = 0
    if cfg.n_experts:
        per = expert_params(cfg)
        idle = cfg.n_experts - cfg.n_experts_per_token
        inactive = n_moe * idle * per
        if cfg.moe_d_ff_per_layer is not None or cfg.experts_per_layer is not None:
            # a pruned model: experts differ per layer
            moe_layers = [i for i in range(cfg.n_layers) if cfg.is_moe_layer(i)]
            inactive = sum(
                (cfg.layer_n_experts(i) - cfg.n_experts_per_token) * expert_params(cfg, i)
                for i in moe_layers
            )
        if cfg.is_moe_layer(cfg.n_layers - 1):
            mtp_inactive = cfg.n_mtp_modules * (cfg.n_experts - cfg.n_experts_per_token) * per
    built_mtp = cfg.build_mtp
    return {
        "params_total": base + (mtp if built_mtp else 0),
        "params_active": base - inactive + ((mtp - mtp_inactive) if built_mtp else 0),
        "params_embedding": embed,
        "params_mtp": mtp,
        "params_mtp_active": mtp - mtp_inactive,
        "params_without_mtp": base,
    }


def memory(
    cfg: Config,
    mode: str,
    sections: list[Section],
    section_out: list[dict[str, Any]],
    ops_out: list[dict[str, Any]],
    params: dict[str, int],
    dt: DType,
    hw: Hardware,
    env: dict[str, Number],
) -> dict[str, Any]:
    weights = params["params_total"] * dt.weight_bytes
    kv = sum(s["cache_bytes"] * s["count"] for s in section_out)
    out: dict[str, Any] = {"weights_bytes": weights, "kv_cache_bytes": kv}
    if mode != "train":
        # transient activations: the largest single op output (buffers are reused layer to
        # layer); logits dominate in prefill
        transient = max(
            (
                r["bytes_written"]
                for r in ops_out
                # the connections section's ops sum over layers; each output is a d-vector
                if r["kind"] != "cache" and r["section"] != "connections"
            ),
            default=0,
        )
        # cross-layer connections keep earlier block outputs (or extra streams) alive
        from glassformer.explorer.connections import resident_per_token

        resident = resident_per_token(cfg) * env["B"] * env["T"] * dt.act_bytes
        out["activations_bytes"] = transient + resident
        out["total_bytes"] = weights + kv + transient + resident
    else:
        n_params = sum(op.params * s.count for s in sections for op in s.ops)
        master = 4 * n_params if dt.weight_bytes < 4 else 0
        grads = n_params * dt.weight_bytes
        optim = 8 * n_params + master
        saved = sum(s["saved_bytes"] * s["count"] for s in section_out)
        block_saved = [s["saved_bytes"] for s in section_out if s["kind"] == "block"]
        other_saved = sum(s["saved_bytes"] for s in section_out if s["kind"] != "block")
        n_blocks = sum(s["count"] for s in section_out if s["kind"] == "block")
        inputs = n_blocks * env["B"] * env["T"] * cfg.d_model * dt.act_bytes
        ckpt = inputs + max(block_saved, default=0) + other_saved
        out.update(
            {
                "weights_bytes": n_params * dt.weight_bytes,
                "gradients_bytes": grads,
                "optimizer_bytes": optim,
                "activations_bytes": saved,
                "activations_checkpointed_bytes": ckpt,
                "total_bytes": n_params * dt.weight_bytes + grads + optim + saved,
                "total_checkpointed_bytes": n_params * dt.weight_bytes + grads + optim + ckpt,
                "note": "AdamW m and v in fp32 (+ fp32 master weights below fp32); activations "
                "= tensors kept for the backward; checkpointing keeps each block's input and "
                "recomputes one block at a time",
            }
        )
    out["device_bytes"] = hw.memory_bytes
    out["fits"] = out["total_bytes"] <= hw.memory_bytes if hw.memory_bytes else None
    return out


def _epilogue_totals(section_out: list[dict[str, Any]]) -> dict[str, Any]:
    per_section = []
    tot = {"bytes_unfused": 0.0, "bytes_fused": 0.0, "bytes_saved": 0.0}
    tot.update({"time_unfused_s": 0.0, "time_fused_s": 0.0, "time_saved_s": 0.0})
    for s in section_out:
        e = s["epilogue"]
        per_section.append({"section": s["key"], "title": s["title"], "count": s["count"], **e})
        for k in tot:
            tot[k] += e[k] * s["count"]
    return {
        "sections": per_section,
        "total": tot,
        "fused": "norms (into the consumer GEMM's prologue: rows scaled by 1/rms, weights folded "
        "into W), QK-norm, RoPE, activations/GLU, residual adds, logit soft-cap and the LM-head "
        "cross-entropy (into the producer GEMM's epilogue); attention per the chosen kernel",
    }


def moe_summary(
    cfg: Config, ops_out: list[dict[str, Any]], params: dict[str, int], env: dict[str, Number]
) -> dict[str, Any]:
    e, k = cfg.n_experts, cfg.n_experts_per_token
    n_moe = moe_layer_count(cfg)
    per = expert_params(cfg)
    expert_ops = [r for r in ops_out if r["kind"] == "experts" and r["section"].startswith("block")]
    flops = sum(r["flops_matmul"] * r["count"] for r in expert_ops)
    tokens = env["B"] * env["T"]
    return {
        "n_experts": e,
        "top_k": k,
        "n_shared_experts": cfg.n_shared_experts,
        "moe_layers": n_moe,
        "params_per_expert": per,
        "params_routed_total": n_moe * e * per,
        "params_routed_active": n_moe * k * per,
        "params_total": params["params_total"],
        "params_active": params["params_active"],
        "expert_flops_topk": flops,
        "expert_flops_if_dense": flops * e / k,
        "expected_experts_hit_per_layer": e * (1 - (1 - k / e) ** tokens),
    }


def mla_summary(
    cfg: Config, mode: str, batch: int, seq: int, dt: DType, hw: Hardware, attention: str
) -> dict[str, Any]:
    per_token = cfg.kv_lora_rank + cfg.qk_rope_head_dim
    mha_per_token = cfg.n_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    layers = cfg.n_layers
    orders = {}
    env = environment(mode, batch, seq, attention)
    section_mode = "prefill" if mode == "train" else mode
    for order in ("plain", "absorbed"):
        secs = build_sections(cfg, section_mode, order, mtp=False)  # type: ignore[arg-type]
        block = next(s for s in secs if s.kind == "block")
        rows = [
            evaluate_op(op, env, dt, hw, False) for op in block.ops if op.name.startswith("attn.")
        ]
        agg = _sum(rows)
        orders[order] = {
            "flops_matmul_per_layer": agg["flops_matmul"],
            "flops_matmul_causal_per_layer": agg["flops_matmul_causal"],
            "bytes_per_layer": agg["bytes"],
            "time_per_layer_s": agg["time_s"],
        }
    return {
        "cache_elems_per_token_per_layer": per_token,
        "mha_equivalent_elems_per_token_per_layer": mha_per_token,
        "kv_cache_bytes": batch * seq * layers * per_token * dt.kv_bytes,
        "mha_equivalent_kv_cache_bytes": batch * seq * layers * mha_per_token * dt.kv_bytes,
        "compression": mha_per_token / per_token,
        "orders": orders,
        "note": "plain: kv_b_proj expands every cached latent to per-head keys/values (prefill "
        "order); absorbed: W_uk folded into q and W_uv after the attention, scores run on "
        "the latent (decode order)",
    }


def sliding_summary(cfg: Config, mode: str, seq: int, batch: int, dt: DType) -> dict[str, Any]:
    assert cfg.head_dim is not None and cfg.n_kv_heads is not None
    n_sliding = sliding_layer_count(cfg)
    n_full = cfg.n_layers - n_sliding
    per_token = (
        cfg.kv_lora_rank + cfg.qk_rope_head_dim
        if cfg.attention == "mla"
        else 2 * cfg.n_kv_heads * cfg.head_dim
    )
    window = cfg.sliding_window or seq
    cache = (n_sliding * min(seq, window) + n_full * seq) * batch * per_token * dt.kv_bytes
    full = cfg.n_layers * seq * batch * per_token * dt.kv_bytes
    if cfg.layer_types is not None and cfg.attention == "mha":
        # per layer (a list exists): Gemma 4's shapes differ by type, KV-sharing layers hold none
        per_layer = [
            (cfg.window(i), 2 * cfg.layer_n_kv_heads(i) * cfg.layer_head_dim(i))
            for i in range(cfg.n_layers)
            if cfg.kv_source(i) is None
        ]
        slots = sum(min(seq, w or seq) * elems for w, elems in per_layer)
        cache = slots * batch * dt.kv_bytes
        full = sum(seq * elems for _, elems in per_layer) * batch * dt.kv_bytes
    return {
        "sliding_layers": n_sliding,
        "full_layers": n_full,
        "window": cfg.sliding_window,
        "kv_cache_bytes": cache if mode != "train" else 0,
        "kv_cache_bytes_if_all_full": full if mode != "train" else 0,
        "note": "sliding layers cache min(S, window) slots and attend to at most window keys",
    }


def chunked_summary(cfg: Config, mode: str, seq: int, batch: int, dt: DType) -> dict[str, Any]:
    """Llama 4's chunked layers: each caches min(S, chunk) slots (a ring), the others S."""
    assert cfg.head_dim is not None and cfg.n_kv_heads is not None
    chunk = cfg.attention_chunk_size
    n = cfg.n_layers
    n_chunked = sum(cfg.chunk(i) is not None for i in range(n))
    per_token = 2 * cfg.n_kv_heads * cfg.head_dim * batch * dt.kv_bytes
    slots = sum(min(seq, cfg.kv_span(i) or seq) for i in range(n))
    train = mode == "train"
    return {
        "chunked_layers": n_chunked,
        "other_layers": cfg.n_layers - n_chunked,
        "chunk": chunk,
        "kv_cache_bytes": 0 if train else slots * per_token,
        "kv_cache_bytes_if_all_full": 0 if train else cfg.n_layers * seq * per_token,
        "note": "a chunked layer's query sees only its own chunk of positions, so it caches "
        "min(S, chunk) slots",
    }


def linear_attention_summary(
    cfg: Config, mode: str, seq: int, batch: int, dt: DType, section_out: list[dict[str, Any]]
) -> dict[str, Any]:
    """A hybrid's cache split: the linear layers' fixed-size states against the attention
    layers' keys and values, and what the cache would hold were every layer attention."""
    assert cfg.layer_types is not None and cfg.head_dim is not None
    assert cfg.n_kv_heads is not None
    linear = [s for s in section_out if s["key"].startswith("block.linear.")]
    state = sum(s["cache_bytes"] * s["count"] for s in linear)
    kv = sum(s["cache_bytes"] * s["count"] for s in section_out) - state
    n_linear = cfg.layer_types.count("linear")
    per_token = (
        cfg.kv_lora_rank + cfg.qk_rope_head_dim
        if cfg.attention == "mla"
        else 2 * cfg.n_kv_heads * cfg.head_dim
    )
    all_full = cfg.n_layers * batch * seq * per_token * dt.kv_bytes if mode != "train" else 0
    return {
        "linear_layers": n_linear,
        "attention_layers": cfg.n_layers - n_linear,
        "state_bytes": state,
        "state_bytes_per_layer": state / n_linear if n_linear else 0,
        "attention_kv_bytes": kv,
        "kv_cache_bytes_if_all_attention": all_full,
        "note": "a linear layer keeps a fixed-size state (its conv window and an fp32 d_k x d_v "
        "memory per value head) whatever the context; attention layers keep every position",
    }
