"""Structured pruning: remove attention heads, MLP neurons, experts, expert channels and whole
layers.

A head h of a layer contributes o_h W_o[h] to the attention output (o_h its softmax-weighted
values, W_o[h] its rows of the output projection), and a neuron j of an MLP contributes
a_j W_down[:, j]; removing either is exact surgery on the weight matrices:

    head h:    the rows of W_q (and of the output gate) for h, the columns of W_o for h, its
               sink logit; a KV head goes with the last query head of its group
    neuron j:  row j of W_gate and W_up (and their biases), column j of W_down; in an MoE
               layer, channel j of every expert
    expert e:  row e of the router (its logit) and the expert's weights; the router then
               chooses among the others, as the unpruned router does with logit e at -inf
    layer l:   the whole block (the residual stream passes it unchanged)
    channel c: column c of the embedding and of every matrix reading the residual stream, row c
               of every matrix writing to it, entry c of every norm on it (hidden width)

The first four are exact. The hidden width is not: every RMSNorm on the residual stream
normalises by the mean square over the channels, so removing channels changes the statistic
of the others. The norms' weights are scaled by sqrt(d / d') (d' kept of d channels), which
makes the cut exact when the removed channels carry nothing (the tests check this), and a
good start for healing otherwise (Minitron prunes the width this way, then distils).

so the pruned model computes exactly what the unpruned one computes with those heads and
neurons masked to zero (Michel et al. 2019, "Are Sixteen Heads Really Better than One?";
Ma et al. 2023, "LLM-Pruner"; Muralidharan et al. 2024, "Compact Language Models via Pruning
and Knowledge Distillation" (Minitron); Men et al. 2024, "ShortGPT"). The result is an
ordinary `Transformer` of a smaller `Config`: uniform cuts change n_heads / n_kv_heads / d_ff,
uneven ones set the per-layer sizes (`Config.heads_per_layer`, `kv_heads_per_layer`,
`d_ff_per_layer`, `moe_d_ff_per_layer`).

Grouped-query attention keeps its groups whole: the query heads kept in one layer must leave
every KV group either empty (the KV head goes too) or with the same number of query heads as
every other surviving group, so that head i still reads KV head i // group.

    plan = plan_pruning(model, heads=0.25, mlp=0.3, layers=2, by="magnitude")
    small = apply_plan(model, plan)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from glassformer.config import Config
from glassformer.model import Transformer

METHODS = ("importance", "magnitude", "random")


@dataclass(frozen=True)
class PrunePlan:
    """What to keep. `heads[i]` / `neurons[i]` / `experts[i]`: the kept query heads / MLP (or
    expert) channels / routed experts of original layer i (absent: all of them); `layers`: the
    kept original layers, in order."""

    layers: tuple[int, ...]
    heads: dict[int, tuple[int, ...]] = field(default_factory=dict)
    neurons: dict[int, tuple[int, ...]] = field(default_factory=dict)
    experts: dict[int, tuple[int, ...]] = field(default_factory=dict)
    channels: tuple[int, ...] | None = None  # kept residual-stream channels (None: all)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "heads": {str(i): list(v) for i, v in sorted(self.heads.items())},
            "neurons": {str(i): list(v) for i, v in sorted(self.neurons.items())},
            "experts": {str(i): list(v) for i, v in sorted(self.experts.items())},
            "channels": None if self.channels is None else list(self.channels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrunePlan:
        return cls(
            tuple(data["layers"]),
            {int(i): tuple(v) for i, v in data.get("heads", {}).items()},
            {int(i): tuple(v) for i, v in data.get("neurons", {}).items()},
            {int(i): tuple(v) for i, v in data.get("experts", {}).items()},
            None if data.get("channels") is None else tuple(data["channels"]),
        )


# --- checks --------------------------------------------------------------------------------------
def parse_amount(text: str | float | int, what: str) -> float | int:
    """'25%' or 0.25 -> the fraction 0.25; '2' or 2 -> the count 2 (layers only take counts
    or fractions; heads and neurons take fractions). Raises ValueError naming `what`."""
    if isinstance(text, str):
        s = text.strip()
        try:
            if s.endswith("%"):
                value: float | int = float(s[:-1]) / 100
            elif "." in s or "e" in s.lower():
                value = float(s)
            else:
                value = int(s)
        except ValueError:
            raise ValueError(
                f"{what}: expected a fraction like 25% or 0.25, or a count, got {text!r}"
            ) from None
    else:
        value = text
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a number, got {text!r}")
    if isinstance(value, float) and not 0 <= value < 1:
        raise ValueError(f"{what}: a fraction must be in [0, 1), got {value}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{what}: a count must be >= 0, got {value}")
    return value


def _count(amount: float | int, total: int, what: str) -> int:
    """How many of `total` units an amount removes (a fraction rounds to the nearest unit)."""
    n = round(amount * total) if isinstance(amount, float) else amount
    if n > total:
        raise ValueError(f"{what}: asks to remove {n}, but only {total} exist")
    return n


def prunable(config: Config) -> None:
    """Raise ValueError for a config whose structure this pruner does not cut."""
    if config.attention != "mha":
        raise ValueError(f"attention: pruning needs attention='mha', got {config.attention!r}")
    if config.n_kv_shared_layers:
        raise ValueError("n_kv_shared_layers: pruning KV-sharing layers is not implemented")
    if config.per_layer_dim or config.moe_beside_mlp:
        raise ValueError("per_layer_dim: pruning Gemma 4's per-layer inputs is not implemented")
    if config.qk_norm and config.qk_norm_scope == "all":
        # one RMS statistic over all heads: removing a head changes the others' normalisation
        raise ValueError("qk_norm_scope: 'all' ties the heads together; pruning needs 'head'")


def attention_layers(config: Config) -> list[int]:
    return [i for i in range(config.n_layers) if config.layer_type(i) != "linear"]


def check_heads(config: Config, layer: int, kept: tuple[int, ...]) -> tuple[int, ...]:
    """The kept KV heads of `layer` for these kept query heads; ValueError when the groups
    would be uneven, a head index is out of range, or no head is left."""
    h, hk = config.layer_n_heads(layer), config.layer_n_kv_heads(layer)
    if not kept:
        raise ValueError(
            f"heads: removing all {h} heads of layer {layer} leaves it without attention; "
            "remove the layer instead (--layers)"
        )
    if len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= h:
        raise ValueError(f"heads: layer {layer} has heads 0..{h - 1}, got {list(kept)[:8]}")
    group = h // hk
    per_group = [sum(1 for q in kept if q // group == g) for g in range(hk)]
    sizes = {n for n in per_group if n}
    if len(sizes) > 1:
        raise ValueError(
            f"heads: layer {layer} would keep {per_group} query heads in its {hk} KV groups; "
            "a grouped layer must keep the same number in every group it keeps"
        )
    return tuple(g for g, n in enumerate(per_group) if n)


# --- scores --------------------------------------------------------------------------------------
def magnitude_scores(model: Transformer) -> dict[str, Any]:
    """Weight-magnitude scores (a baseline that needs no data): a head's Frobenius norm of its
    output-projection columns, a neuron's |W_down[:, j]| * (|W_up[j]| + |W_gate[j]|) (summed
    over experts), a layer's norm of its two output projections."""
    cfg = model.config
    heads: dict[int, torch.Tensor] = {}
    neurons: dict[int, torch.Tensor] = {}
    experts: dict[int, torch.Tensor] = {}
    layers = torch.zeros(cfg.n_layers)
    with torch.no_grad():
        for i, block in enumerate(model.layers):
            total = 0.0
            if cfg.layer_type(i) != "linear":
                attn = block.attn
                w = attn.o_proj.weight.float()
                heads[i] = w.view(w.shape[0], attn.n_heads, -1).pow(2).sum((0, 2)).sqrt()
                total += float(w.pow(2).sum())
            down, up, gate = _mlp_weights(block.mlp)
            if down is not None:
                # dense: down [d, f], up/gate [f, d]; experts: down [E, d, f], up/gate [E, f, d]
                out_norm = down.float().pow(2).sum(-2).sqrt()
                in_norm = up.float().pow(2).sum(-1).sqrt()
                if gate is not None:
                    in_norm = in_norm + gate.float().pow(2).sum(-1).sqrt()
                score = out_norm * in_norm
                neurons[i] = score.sum(0) if score.dim() == 2 else score
                if score.dim() == 2:  # an expert's score: its channels' scores summed
                    experts[i] = score.sum(1)
                total += float(down.float().pow(2).sum())
            layers[i] = math.sqrt(total)
    with torch.no_grad():  # a residual channel: its embedding column's norm
        channels = model.embed.weight.float().pow(2).sum(0).sqrt()
    return {
        "heads": heads,
        "neurons": neurons,
        "experts": experts,
        "layers": layers,
        "channels": channels,
    }


def random_scores(model: Transformer, seed: int = 0) -> dict[str, Any]:
    """Uniform random scores (the baseline every method must beat)."""
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    heads = {i: torch.rand(cfg.layer_n_heads(i), generator=g) for i in attention_layers(cfg)}
    neurons, experts = {}, {}
    for i, block in enumerate(model.layers):
        down, _, _ = _mlp_weights(block.mlp)
        if down is not None:
            neurons[i] = torch.rand(down.shape[-1], generator=g)
            if down.dim() == 3:
                experts[i] = torch.rand(down.shape[0], generator=g)
    layers = torch.rand(cfg.n_layers, generator=g)
    channels = torch.rand(cfg.d_model, generator=g)
    return {
        "heads": heads,
        "neurons": neurons,
        "experts": experts,
        "layers": layers,
        "channels": channels,
    }


def _mlp_weights(mlp: nn.Module) -> tuple[Any, Any, Any]:
    """(down, up, gate) weights of a dense MLP or of an MoE layer's routed experts."""
    experts = getattr(mlp, "experts", None)
    if experts is not None:
        return experts.down_proj, experts.up_proj, experts.gate_proj
    if hasattr(mlp, "down_proj"):
        gate = mlp.gate_proj.weight if mlp.gate_proj is not None else None
        return mlp.down_proj.weight, mlp.up_proj.weight, gate
    return None, None, None


def scores_for(model: Transformer, by: str, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Scores of the kind `by` names: "magnitude", "random" or "importance" (measured on
    calibration data by `glassformer.compression.importance`)."""
    if by == "magnitude":
        return magnitude_scores(model)
    if by == "random":
        return random_scores(model, seed)
    if by == "importance":
        try:
            from glassformer.compression import importance  # type: ignore[attr-defined]
        except ImportError as err:
            raise ValueError(
                "by: 'importance' needs glassformer.compression.importance, which is not "
                "available in this installation; use magnitude or random"
            ) from err
        return as_score_dict(model, importance.compute_importance(model, **kwargs))
    raise ValueError(f"by: expected one of {', '.join(METHODS)}, got {by!r}")


def as_score_dict(model: Transformer, scores: Any) -> dict[str, Any]:
    """Scores as tensors (attributes or keys: `importance.Scores`) -> the per-layer dicts
    `plan_pruning` reads: heads [n_layers, n_heads], neurons [n_layers, d_ff] (an MoE layer's
    channel scores: expert_channels [n_layers, n_experts, moe_d_ff] summed over its experts),
    experts [n_layers, n_experts], layers [n_layers]. NaN marks a unit a layer lacks."""

    def get(name: str) -> Any:
        return scores.get(name) if isinstance(scores, Mapping) else getattr(scores, name, None)

    cfg = model.config
    out: dict[str, Any] = {"heads": {}, "neurons": {}, "experts": {}, "layers": get("layers")}
    out["channels"] = get("embedding")  # importance.Scores' residual-channel scores
    heads, neurons, experts = get("heads"), get("neurons"), get("experts")
    channels = get("expert_channels")
    for i in range(cfg.n_layers):
        if heads is not None and cfg.layer_type(i) != "linear":
            out["heads"][i] = torch.as_tensor(heads[i])[: cfg.layer_n_heads(i)].float()
        down, _, _ = _mlp_weights(model.layers[i].mlp)
        if down is None:
            continue
        if down.dim() == 3:  # routed experts [E, d, f]
            if channels is not None:
                per_expert = torch.as_tensor(channels[i])[: down.shape[0], : down.shape[-1]]
                out["neurons"][i] = per_expert.float().nansum(0)
            if experts is not None:
                out["experts"][i] = torch.as_tensor(experts[i])[: down.shape[0]].float()
        elif neurons is not None:
            out["neurons"][i] = torch.as_tensor(neurons[i])[: down.shape[-1]].float()
    return out


# --- planning ------------------------------------------------------------------------------------
def plan_pruning(
    model: Transformer,
    heads: float | int | str = 0.0,
    mlp: float | int | str = 0.0,
    layers: float | int | str = 0,
    by: str = "magnitude",
    experts: float | int | str = 0.0,
    scores: Mapping[str, Any] | None = None,
    width: float | int | str = 0.0,
    seed: int = 0,
    round_to: int = 1,
) -> PrunePlan:
    """Choose what to remove: `layers` (a count, or a fraction of the layers) lowest-scored
    whole layers, then in each remaining layer the fraction `heads` of its query heads, `mlp`
    of its MLP (or expert) channels and `experts` of its routed experts with the lowest scores;
    `width`: the fraction of the residual stream's channels.

    In a grouped-query layer the heads go group by group: each KV group loses the same number
    of its lowest-scored query heads (a fraction that is not a multiple of the groups rounds to
    the nearest one that is). `round_to`: the kept MLP width of a layer is rounded to a
    multiple of it (the int4/int8 kernels quantise rows in groups of 32)."""
    cfg = model.config
    prunable(cfg)
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to: must be a positive integer, got {round_to!r}")
    heads_f, mlp_f = parse_amount(heads, "heads"), parse_amount(mlp, "mlp")
    experts_f = parse_amount(experts, "experts")
    width_f = parse_amount(width, "width")
    for name, value in (
        ("heads", heads_f),
        ("mlp", mlp_f),
        ("experts", experts_f),
        ("width", width_f),
    ):
        if isinstance(value, int) and value:
            raise ValueError(f"{name}: give a fraction (25% or 0.25), got the count {value}")
    layer_amount = parse_amount(layers, "layers")
    n_drop = _count(layer_amount, cfg.n_layers, "layers")
    if n_drop >= cfg.n_layers:
        raise ValueError(f"layers: removing {n_drop} of {cfg.n_layers} layers leaves none")
    if n_drop and cfg.moe_layer_step != 1:
        raise ValueError("layers: removing layers of interleaved MoE (moe_layer_step > 1)")
    s = dict(scores) if scores is not None else scores_for(model, by, seed)
    kept_layers = tuple(range(cfg.n_layers))
    if n_drop:
        layer_scores = torch.as_tensor(s["layers"]).float()
        drop = set(layer_scores.argsort()[:n_drop].tolist())
        kept_layers = tuple(i for i in range(cfg.n_layers) if i not in drop)
    plan_heads: dict[int, tuple[int, ...]] = {}
    plan_neurons: dict[int, tuple[int, ...]] = {}
    plan_experts: dict[int, tuple[int, ...]] = {}
    if experts_f and not cfg.n_experts:
        raise ValueError("experts: the model has no routed experts (n_experts=0)")
    for i in kept_layers:
        if experts_f and cfg.is_moe_layer(i):
            score = torch.as_tensor(s["experts"][i]).float()
            n = score.numel()
            k = n - round(experts_f * n)
            if k < cfg.n_experts_per_token:
                raise ValueError(
                    f"experts: removing {experts_f:.0%} of layer {i}'s {n} experts leaves {k}, "
                    f"fewer than the {cfg.n_experts_per_token} each token is routed to"
                )
            plan_experts[i] = tuple(sorted(score.argsort(descending=True)[:k].tolist()))
        if heads_f and cfg.layer_type(i) != "linear":
            plan_heads[i] = _lowest_heads_out(cfg, i, torch.as_tensor(s["heads"][i]), heads_f)
        if mlp_f and i in s["neurons"]:
            score = torch.as_tensor(s["neurons"][i]).float()
            n = score.numel()
            k = n - round(mlp_f * n)
            if round_to > 1 and k % round_to and n % round_to == 0:
                k = max(round_to, round(k / round_to) * round_to)
            if k < 1:
                raise ValueError(
                    f"mlp: removing {mlp_f:.0%} of layer {i}'s {n} channels leaves none"
                )
            plan_neurons[i] = tuple(sorted(score.argsort(descending=True)[:k].tolist()))
    channels = None
    if width_f:
        if s.get("channels") is None:
            raise ValueError("width: the scores have no residual-channel ('embedding') scores")
        score = torch.as_tensor(s["channels"]).float()
        k = cfg.d_model - round(width_f * cfg.d_model)
        if round_to > 1 and k % round_to and cfg.d_model % round_to == 0:
            k = max(round_to, round(k / round_to) * round_to)
        channels = tuple(sorted(score.argsort(descending=True)[:k].tolist()))
    return PrunePlan(kept_layers, plan_heads, plan_neurons, plan_experts, channels)


def _lowest_heads_out(
    cfg: Config, layer: int, score: torch.Tensor, fraction: float
) -> tuple[int, ...]:
    h, hk = cfg.layer_n_heads(layer), cfg.layer_n_kv_heads(layer)
    group = h // hk
    drop_per_group = round(fraction * h / hk) if group > 1 else 0
    if group == 1 or hk == 1:  # MHA (each head its own KV) or MQA (one group): any heads
        n_drop = round(fraction * h)
        if n_drop >= h:
            raise ValueError(
                f"heads: removing {fraction:.0%} of layer {layer}'s {h} heads leaves none"
            )
        return tuple(sorted(score.float().argsort(descending=True)[: h - n_drop].tolist()))
    if drop_per_group >= group:
        raise ValueError(
            f"heads: removing {fraction:.0%} of layer {layer}'s {h} heads empties its KV groups "
            f"of {group}; remove the layer instead (--layers)"
        )
    kept = []
    for g in range(hk):
        members = torch.arange(g * group, (g + 1) * group)
        order = score.float()[members].argsort(descending=True)
        kept += members[order[: group - drop_per_group]].tolist()
    return tuple(sorted(kept))


# --- surgery -------------------------------------------------------------------------------------
def pruned_config(config: Config, plan: PrunePlan) -> Config:
    """The Config of the model `apply_plan` builds (validated, like any Config)."""
    prunable(config)
    kept = plan.layers
    if not kept:
        raise ValueError("layers: the plan keeps no layer")
    if list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= config.n_layers:
        raise ValueError(f"layers: expected increasing layer indices below {config.n_layers}")
    for i in plan.heads:
        if i not in kept:
            raise ValueError(f"heads: layer {i} is removed by the plan")
        if config.layer_type(i) == "linear":
            raise ValueError(f"heads: layer {i} is a linear-attention layer (no softmax heads)")
    heads = [len(plan.heads.get(i, range(config.layer_n_heads(i)))) for i in kept]
    kv = [
        len(check_heads(config, i, plan.heads[i]))
        if i in plan.heads
        else config.layer_n_kv_heads(i)
        for i in kept
    ]
    for i, chosen_experts in plan.experts.items():
        if i not in kept or not config.is_moe_layer(i):
            raise ValueError(f"experts: layer {i} is not a kept MoE layer")
        e = config.layer_n_experts(i)
        if (
            len(chosen_experts) < config.n_experts_per_token
            or len(set(chosen_experts)) != len(chosen_experts)
            or min(chosen_experts) < 0
            or max(chosen_experts) >= e
        ):
            raise ValueError(
                f"experts: layer {i} has experts 0..{e - 1} and routes to "
                f"{config.n_experts_per_token}, got {list(chosen_experts)[:8]}"
            )
    if plan.experts and (config.router_n_groups > 1 or config.moe_beside_mlp):
        raise ValueError("experts: removing experts with grouped routing is not implemented")
    d_ff, moe_d_ff = [], []
    for i in kept:
        moe = config.is_moe_layer(i)
        width = config.layer_moe_d_ff(i) if moe else config.layer_d_ff(i)
        chosen = plan.neurons.get(i)
        if chosen is not None and (
            not chosen or len(set(chosen)) != len(chosen) or min(chosen) < 0 or max(chosen) >= width
        ):
            raise ValueError(
                f"neurons: layer {i} has channels 0..{width - 1}, got {list(chosen)[:8]}"
            )
        n = width if chosen is None else len(chosen)
        d_ff.append(config.layer_d_ff(i) if moe else n)
        moe_d_ff.append(n if moe else config.moe_d_ff)
    changes: dict[str, Any] = {"n_layers": len(kept)}
    if config.layer_types is not None:
        changes["layer_types"] = tuple(config.layer_types[i] for i in kept)
    if config.nope_layers:
        changes["nope_layers"] = tuple(j for j, i in enumerate(kept) if i in config.nope_layers)
    if config.first_k_dense:
        changes["first_k_dense"] = sum(1 for i in kept if i < config.first_k_dense)
    attn = [j for j, i in enumerate(kept) if config.layer_type(i) != "linear"]
    uniform_heads = len({heads[j] for j in attn}) <= 1 and len({kv[j] for j in attn}) <= 1
    plain_kv = config.global_n_kv_heads is None
    if uniform_heads and plain_kv and attn:
        changes["n_heads"], changes["n_kv_heads"] = heads[attn[0]], kv[attn[0]]
        changes["heads_per_layer"] = changes["kv_heads_per_layer"] = None
    else:
        changes["heads_per_layer"], changes["kv_heads_per_layer"] = tuple(heads), tuple(kv)
    dense = [j for j, i in enumerate(kept) if not config.is_moe_layer(i)]
    if len({d_ff[j] for j in dense}) <= 1 and not config.double_wide_mlp:
        changes["d_ff"] = d_ff[dense[0]] if dense else config.d_ff
        changes["d_ff_per_layer"] = None
    else:
        changes["d_ff_per_layer"] = tuple(d_ff)
    if config.n_experts:
        routed = [j for j, i in enumerate(kept) if config.is_moe_layer(i)]
        if len({moe_d_ff[j] for j in routed}) <= 1:
            changes["moe_d_ff"] = moe_d_ff[routed[0]] if routed else config.moe_d_ff
            changes["moe_d_ff_per_layer"] = None
        else:
            changes["moe_d_ff_per_layer"] = tuple(moe_d_ff)
        n_e = [len(plan.experts.get(i, range(config.layer_n_experts(i)))) for i in kept]
        if len({n_e[j] for j in routed}) <= 1:
            changes["n_experts"] = n_e[routed[0]] if routed else config.n_experts
            changes["experts_per_layer"] = None
        else:
            changes["experts_per_layer"] = tuple(n_e)
    if config.head_dim is not None:
        changes["head_dim"] = config.head_dim  # explicit: n_heads may no longer divide d_model
    if plan.channels is not None:
        width_prunable(config)
        c = plan.channels
        if not c or len(set(c)) != len(c) or min(c) < 0 or max(c) >= config.d_model:
            raise ValueError(f"channels: expected channels of 0..{config.d_model - 1}")
        changes["d_model"] = len(c)
    return dataclasses.replace(config, **changes)


def width_prunable(config: Config) -> None:
    """Raise ValueError for a config whose residual width this pruner does not cut."""
    if config.norm != "rmsnorm":
        # LayerNorm subtracts the mean over the channels: no weight scaling restores it
        raise ValueError(f"norm: pruning the width needs rmsnorm, got {config.norm!r}")
    if config.embed_scale:
        raise ValueError("embed_scale: the sqrt(d_model) embedding scale changes with the width")
    if config.layer_types is not None and "linear" in config.layer_types:
        raise ValueError("layer_types: pruning the width of linear-attention layers")
    if config.n_mtp_modules or config.position == "learned":
        raise ValueError("n_mtp_modules/position: pruning the width of MTP or learned positions")


# Parameters that read the residual stream (input columns) and that write to it (output rows),
# by their name inside a block; the dim that runs over the residual channels
_READS = {
    "attn.q_proj.weight": 1, "attn.k_proj.weight": 1, "attn.v_proj.weight": 1,
    "mlp.gate_proj.weight": 1, "mlp.up_proj.weight": 1, "mlp.router.weight": 1,
    "mlp.experts.gate_proj": 2, "mlp.experts.up_proj": 2,
    "mlp.shared.gate_proj.weight": 1, "mlp.shared.up_proj.weight": 1,
    "mlp.shared_gate.weight": 1,
}  # fmt: skip
_WRITES = {
    "attn.o_proj.weight": 0, "attn.o_proj.bias": 0, "mlp.down_proj.weight": 0,
    "mlp.down_proj.bias": 0, "mlp.experts.down_proj": 1, "mlp.experts.down_proj_bias": 1,
    "mlp.shared.down_proj.weight": 0, "mlp.shared.down_proj.bias": 0,
}  # fmt: skip
_NORMS = ("attn_norm.weight", "mlp_norm.weight", "post_attn_norm.weight", "post_mlp_norm.weight")


def _cut_width(
    config: Config, name: str, t: torch.Tensor, channels: tuple[int, ...]
) -> torch.Tensor:
    """The kept residual channels of parameter `name` (after the other cuts)."""
    idx = torch.tensor(channels)
    rest = name.split(".", 2)[2] if name.startswith("layers.") else name
    if name in ("embed.weight", "lm_head.weight"):
        return t.index_select(1, idx)
    if rest in _READS:
        return t.index_select(_READS[rest], idx)
    if rest in _WRITES:
        return t.index_select(_WRITES[rest], idx)
    if rest in _NORMS or name == "final_norm.weight":
        scale = math.sqrt(config.d_model / len(channels))
        kept = t.index_select(0, idx)
        if config.norm_unit_offset:  # stored around 0: y = x_hat (1 + w)
            return (1 + kept) * scale - 1
        return kept * scale
    return t


def _rows(n_units: int, size: int, kept: tuple[int, ...]) -> torch.Tensor:
    """Row indices of the kept units of `size` rows each, out of `n_units`."""
    return (torch.tensor(kept)[:, None] * size + torch.arange(size)).flatten()


def prune_state_dict(
    config: Config, state: Mapping[str, torch.Tensor], plan: PrunePlan
) -> dict[str, torch.Tensor]:
    """The unpruned model's state dict -> the pruned model's (tensors copied)."""
    out: dict[str, torch.Tensor] = {}
    new_index = {i: j for j, i in enumerate(plan.layers)}
    for name, tensor in state.items():
        if not name.startswith("layers."):
            out[name] = tensor.clone()
            continue
        _, idx, rest = name.split(".", 2)
        i = int(idx)
        if i not in new_index:
            continue
        out[f"layers.{new_index[i]}.{rest}"] = _cut(config, i, rest, tensor, plan)
    if plan.channels is not None:
        out = {k: _cut_width(config, k, v, plan.channels).clone() for k, v in out.items()}
    return out


def _cut(config: Config, i: int, rest: str, t: torch.Tensor, plan: PrunePlan) -> torch.Tensor:
    """The kept part of parameter `rest` of original layer i."""
    heads, neurons, experts = plan.heads.get(i), plan.neurons.get(i), plan.experts.get(i)
    if experts is not None and rest.startswith(("mlp.router.", "mlp.experts.")):
        # every router and expert tensor is indexed by expert first
        t = t.index_select(0, torch.tensor(experts))
    if heads is not None and rest.startswith("attn."):
        hd, h = config.layer_head_dim(i), config.layer_n_heads(i)
        kv = check_heads(config, i, heads)
        hk = config.layer_n_kv_heads(i)
        param = rest[len("attn.") :]
        if param.startswith("q_proj."):
            size = hd * (2 if config.attn_output_gate else 1)  # gated: [q_h, g_h] per head
            return t.index_select(0, _rows(h, size, heads)).clone()
        if param.startswith(("k_proj.", "v_proj.")):
            return t.index_select(0, _rows(hk, hd, kv)).clone()
        if param == "o_proj.weight":
            return t.index_select(1, _rows(h, hd, heads)).clone()
        if param == "sinks":
            return t[list(heads)].clone()
    if neurons is not None and rest.startswith("mlp."):
        idx = torch.tensor(neurons)
        param = rest[len("mlp.") :]
        if param.startswith(("gate_proj.", "up_proj.")):  # dense [f, d] weights, [f] biases
            return t.index_select(0, idx).clone()
        if param == "down_proj.weight":
            return t.index_select(1, idx).clone()
        if param in ("experts.gate_proj", "experts.up_proj"):  # [E, f, d]
            return t.index_select(1, idx).clone()
        if param == "experts.down_proj":  # [E, d, f]
            return t.index_select(2, idx).clone()
        if param in ("experts.gate_proj_bias", "experts.up_proj_bias"):  # [E, f]
            return t.index_select(1, idx).clone()
    return t.clone()


def apply_plan(model: Transformer, plan: PrunePlan) -> Transformer:
    """A new model with the plan's structure removed (the input model is left as it is)."""
    config = pruned_config(model.config, plan)
    state = prune_state_dict(model.config, model.state_dict(), plan)
    weight = model.embed.weight
    with torch.device("meta"):
        small = Transformer(config)
    small.load_state_dict(state, strict=True, assign=True)
    small.build_rotary()
    return small.to(weight.device).train(model.training)


def provenance(model: Transformer, plan: PrunePlan, by: str, **extra: Any) -> dict[str, Any]:
    """What a pruned model directory records about where it came from."""
    return {
        "source_config": model.config.to_dict(),
        "method": by,
        "plan": plan.to_dict(),
        **extra,
    }
