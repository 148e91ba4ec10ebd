"""Weight names and layouts: HF transformers <-> glassformer, derived from the Config.

Most tensors only change name. Some change layout, as the family table says
(`glassformer.families`: `hf_layout`, `fused_qkv`, `fused_gate_up`):
- GPT-2 stores its projections as `Conv1D` weights [in, out] (transposed from nn.Linear) and
  fuses q, k, v into one `c_attn` matrix.
- Phi-3 fuses q, k, v into one `qkv_proj` [(n_heads + 2 n_kv_heads) head_dim, d] and the MLP's
  gate and up into one `gate_up_proj` [2f, d] (gate first); we keep separate projections.
- HF MoE layers fuse each expert's gate and up projections into `gate_up_proj` [E, 2f, d]
  (gate first); we keep them as two stacked tensors. gpt-oss stores them [E, d, 2f] with gate
  and up in alternate columns, `down_proj` [E, f, d], and biases alongside
  (`hf_experts_interleaved`); its router is `mlp.router` (`hf_router`) with a bias. Its
  published checkpoints store the experts as MXFP4 blocks and scales (`dequantize_mxfp4`).
  Llama 4 stores its experts [E, d, 2f] with gate columns before up columns and `down_proj`
  [E, f, d] (`hf_experts_in_out`), and names its feed-forward `feed_forward`, its router
  `router` and its shared expert `shared_expert`.
  Checkpoints on disk (and `save_pretrained`) keep one tensor per expert instead, named
  `experts.{j}.{gate,up,down}_proj` (Mixtral: `block_sparse_moe.experts.{j}.w1/w3/w2`);
  `unify_expert_layout` stacks those first.
- Gated DeltaNet (linear) layers live under `linear_attn` in HF. Qwen3-Next stores q, k, v and
  the output gate z as one `in_proj_qkvz`, and b, a as one `in_proj_ba`, both grouped by key
  head ([q_i, k_i, v_i, z_i] for key head i with its n_v / n_k value heads); we keep Qwen3.5's
  separate [q; k; v], z, b and a projections.
- Gemma 4 fuses each expert's gate and up like the other MoE families, and its layers without
  their own keys and values (KV sharing; keys-equal-values) have no k/v projections to map.
- Tied embeddings: HF lists `lm_head.weight` even when it is the embedding; we keep one tensor.
The mapping is a list of `Rule`s built from the config, so one function serves both directions
and every tensor on either side must be claimed by exactly one rule.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from glassformer.config import Config
from glassformer.families import Family, get_family

Tensors = list[torch.Tensor]


@dataclass(frozen=True)
class Rule:
    ours: tuple[str, ...]
    hf: tuple[str, ...]
    to_ours: Callable[[Tensors], Tensors] = lambda t: t
    to_hf: Callable[[Tensors], Tensors] = lambda t: t


def _rename(ours: str, hf: str) -> Rule:
    return Rule((ours,), (hf,))


def _transposed(ours: str, hf: str) -> Rule:
    return Rule((ours,), (hf,), lambda t: [t[0].T.contiguous()], lambda t: [t[0].T.contiguous()])


def _split(ours: tuple[str, ...], hf: str, sizes: list[int], dim: int, transpose: bool) -> Rule:
    def to_ours(t: Tensors) -> Tensors:
        w = t[0].T if transpose else t[0]
        return [p.contiguous() for p in torch.split(w, sizes, dim=dim)]

    def to_hf(t: Tensors) -> Tensors:
        w = torch.cat(t, dim=dim)
        return [w.T.contiguous() if transpose else w]

    return Rule(ours, (hf,), to_ours, to_hf)


def family_of(config: Config) -> Family:
    from glassformer.hf.config import infer_model_type

    return get_family(infer_model_type(config))


def weight_rules(config: Config) -> list[Rule]:
    """Every tensor of the model, with its HF name(s) and layout change."""
    from glassformer.hf.config import refuse_connections

    refuse_connections(config)
    family = family_of(config)
    if family.hf_layout == "gpt2":
        return _gpt2_rules(config)
    return _llama_like_rules(config, family) + _multimodal_rules(config)


# Where HF's Gemma 4 unified model keeps its image and audio embedders
_VISION, _AUDIO = "model.embed_vision", "model.embed_audio"


def _multimodal_rules(cfg: Config) -> list[Rule]:
    """The encoder-free image and audio embedders (`components/multimodal_embedders.py`)."""
    rules = []
    if cfg.vision_patch_size:
        for name in ("patch_ln1", "patch_dense", "patch_ln2", "pos_norm"):
            _linear(rules, f"vision_embed.{name}", f"{_VISION}.{name}", bias=True)
        rules += [
            _rename("vision_embed.pos_embedding", f"{_VISION}.pos_embedding"),
            _rename(
                "vision_embed.projection.weight",
                f"{_VISION}.multimodal_embedder.embedding_projection.weight",
            ),
        ]
    if cfg.audio_frame_size:
        rules.append(
            _rename("audio_embed.projection.weight", f"{_AUDIO}.embedding_projection.weight")
        )
    return rules


# The names HF's Gemma 4 unified checkpoints store the vision embedder under (its
# conversion_mapping renames them on loading): on disk -> in memory
_CHECKPOINT_NAMES = (
    ("model.vision_embedder.", _VISION + "."),
    (_VISION + ".embedding_projection.", _VISION + ".multimodal_embedder.embedding_projection."),
)


def unify_multimodal_names(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names of the image embedder -> the names HF's model holds."""
    out = {}
    for name, tensor in hf_state.items():
        for disk, memory in _CHECKPOINT_NAMES:
            if name.startswith(disk):
                name = memory + name.removeprefix(disk)
        out[name] = tensor
    return out


def wrap_text_names(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A multimodal model's HF names: the text model's `model.*` under `model.language_model.`
    (the embedders and the head keep theirs)."""
    return {
        _TEXT_PREFIX + k.removeprefix("model.")
        if k.startswith("model.") and not k.startswith((_VISION + ".", _AUDIO + "."))
        else k: v
        for k, v in hf_state.items()
    }


def _gpt2_rules(cfg: Config) -> list[Rule]:
    rules = [
        _rename("embed.weight", "transformer.wte.weight"),
        _rename("pos_embed.weight", "transformer.wpe.weight"),
        _rename("final_norm.weight", "transformer.ln_f.weight"),
        _rename("final_norm.bias", "transformer.ln_f.bias"),
    ]
    d = cfg.d_model
    for i in range(cfg.n_layers):
        o, h = f"layers.{i}", f"transformer.h.{i}"
        for ours, hf in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
            rules += [_rename(f"{o}.{ours}.weight", f"{h}.{hf}.weight")]
            rules += [_rename(f"{o}.{ours}.bias", f"{h}.{hf}.bias")]
        qkv = tuple(f"{o}.attn.{p}_proj" for p in "qkv")
        rules += [
            _split(tuple(f"{n}.weight" for n in qkv), f"{h}.attn.c_attn.weight", [d] * 3, 0, True),
            _split(tuple(f"{n}.bias" for n in qkv), f"{h}.attn.c_attn.bias", [d] * 3, 0, False),
            _transposed(f"{o}.attn.o_proj.weight", f"{h}.attn.c_proj.weight"),
            _rename(f"{o}.attn.o_proj.bias", f"{h}.attn.c_proj.bias"),
            _transposed(f"{o}.mlp.up_proj.weight", f"{h}.mlp.c_fc.weight"),
            _rename(f"{o}.mlp.up_proj.bias", f"{h}.mlp.c_fc.bias"),
            _transposed(f"{o}.mlp.down_proj.weight", f"{h}.mlp.c_proj.weight"),
            _rename(f"{o}.mlp.down_proj.bias", f"{h}.mlp.c_proj.bias"),
        ]
    if not cfg.tie_embeddings:
        rules.append(_rename("lm_head.weight", "lm_head.weight"))
    return rules


def _linear(rules: list[Rule], ours: str, hf: str, bias: bool) -> None:
    rules.append(_rename(f"{ours}.weight", f"{hf}.weight"))
    if bias:
        rules.append(_rename(f"{ours}.bias", f"{hf}.bias"))


def _llama_like_rules(cfg: Config, family: Family) -> list[Rule]:
    rules = [
        _rename("embed.weight", "model.embed_tokens.weight"),
        _rename("final_norm.weight", "model.norm.weight"),
    ]
    if cfg.per_layer_dim:
        rules += [
            _rename("per_layer_embed.embed.weight", "model.embed_tokens_per_layer.weight"),
            _rename("per_layer_embed.projection.weight", "model.per_layer_model_projection.weight"),
            _rename("per_layer_embed.norm.weight", "model.per_layer_projection_norm.weight"),
        ]
    for i in range(cfg.n_layers):
        _block_rules(cfg, family, rules, f"layers.{i}", f"model.layers.{i}", i)
    if cfg.build_mtp:
        # DeepSeek-V3 checkpoints store MTP depth k as decoder layer n_layers + k, with its
        # own copies of the embedding and head (identical to the main ones; we share them).
        for k in range(cfg.n_mtp_modules):
            o, h = f"mtp.{k}", f"model.layers.{cfg.n_layers + k}"
            rules += [
                _rename(f"{o}.embed_norm.weight", f"{h}.enorm.weight"),
                _rename(f"{o}.hidden_norm.weight", f"{h}.hnorm.weight"),
                _rename(f"{o}.proj.weight", f"{h}.eh_proj.weight"),
                _rename(f"{o}.final_norm.weight", f"{h}.shared_head.norm.weight"),
            ]
            _block_rules(cfg, family, rules, f"{o}.block", h, cfg.n_layers - 1)
    if not cfg.tie_embeddings:
        rules.append(_rename("lm_head.weight", "lm_head.weight"))
    return rules


def _block_rules(
    cfg: Config, family: Family, rules: list[Rule], o: str, h: str, layer: int
) -> None:
    attn_norm = _rename(f"{o}.attn_norm.weight", f"{h}.input_layernorm.weight")
    if cfg.norm_placement == "output":  # OLMo 2: norms on the sublayer outputs only
        rules += [
            _rename(f"{o}.post_attn_norm.weight", f"{h}.post_attention_layernorm.weight"),
            _rename(f"{o}.post_mlp_norm.weight", f"{h}.post_feedforward_layernorm.weight"),
        ]
    elif cfg.norm_placement == "sandwich":
        rules += [
            attn_norm,
            _rename(f"{o}.post_attn_norm.weight", f"{h}.post_attention_layernorm.weight"),
            _rename(f"{o}.mlp_norm.weight", f"{h}.pre_feedforward_layernorm.weight"),
            _rename(f"{o}.post_mlp_norm.weight", f"{h}.post_feedforward_layernorm.weight"),
        ]
    else:
        rules += [
            attn_norm,
            _rename(f"{o}.mlp_norm.weight", f"{h}.post_attention_layernorm.weight"),
        ]
    if cfg.layer_type(layer) == "linear":
        _linear_attn_rules(cfg, family, rules, f"{o}.attn", f"{h}.linear_attn")
    elif cfg.attention == "mla":
        _mla_rules(cfg, rules, f"{o}.attn", f"{h}.self_attn")
    elif family.fused_qkv:
        assert cfg.head_dim is not None and cfg.n_kv_heads is not None
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        ours = tuple(f"{o}.attn.{p}_proj" for p in "qkv")
        hf = f"{h}.self_attn.qkv_proj"
        rules.append(
            _split(tuple(f"{n}.weight" for n in ours), f"{hf}.weight", [q, kv, kv], 0, False)
        )
        if cfg.qkv_bias:
            rules.append(
                _split(tuple(f"{n}.bias" for n in ours), f"{hf}.bias", [q, kv, kv], 0, False)
            )
        _linear(rules, f"{o}.attn.o_proj", f"{h}.self_attn.o_proj", cfg.attn_out_bias)
    else:
        own_kv = cfg.kv_source(layer) is None  # KV sharing: no k/v projections or k norm
        projections = "qkv" if own_kv and not cfg.layer_k_eq_v(layer) else "qk" if own_kv else "q"
        for p in projections:
            _linear(rules, f"{o}.attn.{p}_proj", f"{h}.self_attn.{p}_proj", cfg.qkv_bias)
        _linear(rules, f"{o}.attn.o_proj", f"{h}.self_attn.o_proj", cfg.attn_out_bias)
        if cfg.attn_sinks:
            rules.append(_rename(f"{o}.attn.sinks", f"{h}.self_attn.sinks"))
        if cfg.qk_norm:
            for p in "qk" if own_kv else "q":
                rules.append(_rename(f"{o}.attn.{p}_norm.weight", f"{h}.self_attn.{p}_norm.weight"))
    mlp = f"{h}.{family.hf_mlp}"
    if cfg.moe_beside_mlp:
        _gemma4_rules(cfg, rules, o, h, layer)
    elif cfg.is_moe_layer(layer):
        _moe_rules(cfg, family, rules, f"{o}.mlp", mlp)
    elif family.fused_gate_up:
        gate_up = (f"{o}.mlp.gate_proj.weight", f"{o}.mlp.up_proj.weight")
        rules.append(_split(gate_up, f"{mlp}.gate_up_proj.weight", [cfg.d_ff] * 2, 0, False))
        _linear(rules, f"{o}.mlp.down_proj", f"{mlp}.down_proj", cfg.mlp_bias)
    else:
        for p in ("gate_proj", "up_proj", "down_proj"):
            _linear(rules, f"{o}.mlp.{p}", f"{mlp}.{p}", cfg.mlp_bias)
    if cfg.per_layer_dim:
        rules += [
            _rename(f"{o}.per_layer_input.gate.weight", f"{h}.per_layer_input_gate.weight"),
            _rename(f"{o}.per_layer_input.projection.weight", f"{h}.per_layer_projection.weight"),
            _rename(f"{o}.per_layer_input.norm.weight", f"{h}.post_per_layer_input_norm.weight"),
        ]
    if cfg.layer_scalar:
        rules.append(_rename(f"{o}.layer_scalar", f"{h}.layer_scalar"))


def _gemma4_rules(cfg: Config, rules: list[Rule], o: str, h: str, layer: int) -> None:
    """The dense MLP and, beside it, the router, experts and their three norms."""
    for p in ("gate_proj", "up_proj", "down_proj"):
        _linear(rules, f"{o}.mlp.{p}", f"{h}.mlp.{p}", cfg.mlp_bias)
    if not cfg.is_moe_layer(layer):
        return
    m, f = f"{o}.moe", cfg.moe_d_ff
    rules += [
        _rename(f"{m}.router.weight", f"{h}.router.proj.weight"),
        _rename(f"{m}.router.scale", f"{h}.router.scale"),
        _rename(f"{m}.router.expert_scale", f"{h}.router.per_expert_scale"),
        *_stacked_experts(f"{m}.experts", f"{h}.experts", f, in_out=False),
        _rename(f"{m}.pre_norm.weight", f"{h}.pre_feedforward_layernorm_2.weight"),
        _rename(f"{m}.post_norm.weight", f"{h}.post_feedforward_layernorm_2.weight"),
        _rename(f"{m}.post_dense_norm.weight", f"{h}.post_feedforward_layernorm_1.weight"),
    ]


def _linear_attn_rules(cfg: Config, family: Family, rules: list[Rule], o: str, h: str) -> None:
    for name in ("conv1d.weight", "dt_bias", "A_log", "norm.weight", "out_proj.weight"):
        rules.append(_rename(f"{o}.{name}", f"{h}.{name}"))
    if not family.fused_linear_attn:
        for p in ("qkv", "z", "b", "a"):
            rules.append(_rename(f"{o}.in_proj_{p}.weight", f"{h}.in_proj_{p}.weight"))
        return
    assert cfg.linear_n_k_heads and cfg.linear_n_v_heads
    assert cfg.linear_k_head_dim and cfg.linear_v_head_dim
    hk, dk = cfg.linear_n_k_heads, cfg.linear_k_head_dim
    r = cfg.linear_n_v_heads // hk  # value heads per key head
    rdv = r * cfg.linear_v_head_dim

    def qkvz_to_ours(t: Tensors) -> Tensors:
        d = t[0].shape[-1]
        q, k, v, z = t[0].view(hk, 2 * dk + 2 * rdv, d).split([dk, dk, rdv, rdv], 1)
        parts = (q, k, v)
        return [torch.cat([x.reshape(-1, d) for x in parts]), z.reshape(-1, d)]

    def qkvz_to_hf(t: Tensors) -> Tensors:
        qkv, z = t
        d = qkv.shape[-1]
        q, k, v = qkv.split([hk * dk, hk * dk, hk * rdv])
        grouped = (q.view(hk, dk, d), k.view(hk, dk, d), v.view(hk, rdv, d), z.view(hk, rdv, d))
        return [torch.cat(grouped, 1).reshape(-1, d)]

    def ba_to_ours(t: Tensors) -> Tensors:
        d = t[0].shape[-1]
        return [x.reshape(-1, d) for x in t[0].view(hk, 2 * r, d).split([r, r], 1)]

    def ba_to_hf(t: Tensors) -> Tensors:
        d = t[0].shape[-1]
        return [torch.cat([x.view(hk, r, d) for x in t], 1).reshape(-1, d)]

    ours = (f"{o}.in_proj_qkv.weight", f"{o}.in_proj_z.weight")
    rules.append(Rule(ours, (f"{h}.in_proj_qkvz.weight",), qkvz_to_ours, qkvz_to_hf))
    ours = (f"{o}.in_proj_b.weight", f"{o}.in_proj_a.weight")
    rules.append(Rule(ours, (f"{h}.in_proj_ba.weight",), ba_to_ours, ba_to_hf))


def _mla_rules(cfg: Config, rules: list[Rule], o: str, h: str) -> None:
    if cfg.q_lora_rank is None:
        _linear(rules, f"{o}.q_proj", f"{h}.q_proj", False)
    else:
        _linear(rules, f"{o}.q_a_proj", f"{h}.q_a_proj", cfg.qkv_bias)
        rules.append(_rename(f"{o}.q_a_norm.weight", f"{h}.q_a_layernorm.weight"))
        _linear(rules, f"{o}.q_b_proj", f"{h}.q_b_proj", False)
    _linear(rules, f"{o}.kv_a_proj", f"{h}.kv_a_proj_with_mqa", cfg.qkv_bias)
    rules.append(_rename(f"{o}.kv_a_norm.weight", f"{h}.kv_a_layernorm.weight"))
    _linear(rules, f"{o}.kv_b_proj", f"{h}.kv_b_proj", False)
    _linear(rules, f"{o}.o_proj", f"{h}.o_proj", cfg.attn_out_bias)


def _interleaved_gate_up(ours: tuple[str, str], hf: str, transpose: bool) -> Rule:
    """HF's gpt-oss `gate_up_proj` [E, d, 2f] (or its bias [E, 2f]) with gate and up in
    alternate columns <-> our gate and up [E, f, d] (or [E, f])."""

    def to_ours(t: Tensors) -> Tensors:
        gate, up = t[0][..., ::2], t[0][..., 1::2]
        return [(w.transpose(1, 2) if transpose else w).contiguous() for w in (gate, up)]

    def to_hf(t: Tensors) -> Tensors:
        gate, up = (w.transpose(1, 2) if transpose else w for w in t)
        return [torch.stack((gate, up), dim=-1).flatten(-2).contiguous()]

    return Rule(ours, (hf,), to_ours, to_hf)


def _moe_rules(cfg: Config, family: Family, rules: list[Rule], o: str, h: str) -> None:
    router = f"{h}.{family.hf_router}"
    rules.append(_rename(f"{o}.router.weight", f"{router}.weight"))
    if cfg.router_logit_bias:
        rules.append(_rename(f"{o}.router.bias", f"{router}.bias"))
    if cfg.router_bias:
        rules.append(_rename(f"{o}.router.score_bias", f"{router}.e_score_correction_bias"))
    f = cfg.moe_d_ff
    if family.hf_experts_interleaved:
        x, gate_up = f"{o}.experts", f"{h}.experts.gate_up_proj"
        pair = (f"{x}.gate_proj", f"{x}.up_proj")
        rules.append(_interleaved_gate_up(pair, gate_up, True))
        rules.append(_expert_transposed(_rename(f"{x}.down_proj", f"{h}.experts.down_proj")))
        if cfg.mlp_bias:
            pair = (f"{x}.gate_proj_bias", f"{x}.up_proj_bias")
            rules.append(_interleaved_gate_up(pair, f"{gate_up}_bias", False))
            rules.append(_rename(f"{x}.down_proj_bias", f"{h}.experts.down_proj_bias"))
        return
    rules += _stacked_experts(f"{o}.experts", f"{h}.experts", f, family.hf_experts_in_out)
    if cfg.n_shared_experts:
        for p in ("gate_proj", "up_proj", "down_proj"):
            _linear(rules, f"{o}.shared.{p}", f"{h}.{family.hf_shared}.{p}", False)
        if cfg.shared_expert_gate:
            rules.append(_rename(f"{o}.shared_gate.weight", f"{h}.shared_expert_gate.weight"))


def _stacked_experts(ours: str, hf: str, f: int, in_out: bool) -> list[Rule]:
    """Our experts' gate and up [E, f, d] and down [E, d, f] <-> HF's `gate_up_proj` [E, 2f, d]
    (gate first) and `down_proj` [E, d, f]; with `in_out` (Llama 4) HF stores each expert's
    transpose ([E, d, 2f], [E, f, d])."""
    rules = [
        _split((f"{ours}.gate_proj", f"{ours}.up_proj"), f"{hf}.gate_up_proj", [f, f], 1, False),
        _rename(f"{ours}.down_proj", f"{hf}.down_proj"),
    ]
    return [_expert_transposed(r) for r in rules] if in_out else rules


def _expert_transposed(rule: Rule) -> Rule:
    """`rule` applied to HF tensors whose last two dims are swapped ([E, in, out])."""

    def swap(t: Tensors) -> Tensors:
        return [x.transpose(1, 2).contiguous() for x in t]

    return Rule(
        rule.ours,
        rule.hf,
        lambda t: rule.to_ours(swap(t)),
        lambda t: swap(rule.to_hf(t)),
    )


def _check_names(side: str, have: set[str], want: set[str]) -> None:
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        raise ValueError(f"{side} state dict does not match the config: " + "; ".join(parts))


# HF keeps these as non-persistent buffers or aliases; they carry no weights of their own.
_HF_IGNORABLE_SUFFIXES = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


_PER_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w2|w3)\.weight$")
_MIXTRAL_NAMES = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}


def unify_expert_layout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-expert checkpoint tensors -> HF's in-memory stacked `gate_up_proj` / `down_proj`."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[str, dict[int, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for name, tensor in hf_state.items():
        name = name.replace(".block_sparse_moe.", ".mlp.")
        match = _PER_EXPERT.match(name)
        if match is None:
            out[name] = tensor
            continue
        prefix, index, kind = match.groups()
        experts[prefix][_MIXTRAL_NAMES.get(kind, kind)][int(index)] = tensor
    for prefix, kinds in experts.items():
        stacked = {}
        for kind in ("gate_proj", "up_proj", "down_proj"):
            by_index = kinds.get(kind, {})
            if sorted(by_index) != list(range(len(by_index))) or not by_index:
                raise ValueError(f"{prefix}: incomplete per-expert tensors for {kind}")
            stacked[kind] = torch.stack([by_index[j] for j in range(len(by_index))])
        out[f"{prefix}.gate_up_proj"] = torch.cat((stacked["gate_proj"], stacked["up_proj"]), 1)
        out[f"{prefix}.down_proj"] = stacked["down_proj"]
    return out


# Multimodal checkpoints (Qwen3.5's) keep the text model under this prefix.
_TEXT_PREFIX = "model.language_model."
# Llama 4's multimodal checkpoints keep the whole causal LM (model.* and lm_head) under this one.
_LM_PREFIX = "language_model."


# E2M1 (4-bit float: sign, 2 exponent bits, 1 mantissa bit) code -> value (OCP MX v1.0)
_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def dequantize_mxfp4(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MXFP4 checkpoint tensors (gpt-oss's experts, `quant_method: mxfp4`) -> the float tensors
    HF's model holds.

    An expert matrix W [E, in, out] is stored as `<name>_blocks` uint8 [E, out, in/32, 16]: 32
    consecutive inputs of one output per block, two E2M1 codes per byte, the low nibble first;
    and `<name>_scales` uint8 [E, out, in/32], one E8M0 exponent per block:
        W[e, 32 g + j, o] = E2M1[code j of block (e, o, g)] * 2^(scale[e, o, g] - 127)
    (what transformers' `convert_moe_packed_tensors` computes). The values are exact in the
    dtype of the layer's float tensors (`<name>_bias`), which they are decoded to."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        if name.endswith("_scales") and name[: -len("_scales")] + "_blocks" in hf_state:
            continue
        if not name.endswith("_blocks"):
            out[name] = tensor
            continue
        base = name[: -len("_blocks")]
        scales = hf_state.get(base + "_scales")
        if scales is None or tensor.dtype != torch.uint8 or scales.dtype != torch.uint8:
            raise ValueError(f"{name}: MXFP4 blocks need uint8 {base}_scales beside them")
        if tensor.dim() != 4 or tensor.shape[-1] != 16 or tensor.shape[:-1] != scales.shape:
            raise ValueError(
                f"{name}: MXFP4 blocks {list(tensor.shape)} do not match {base}_scales "
                f"{list(scales.shape)} (expected [E, out, in/32, 16] and [E, out, in/32])"
            )
        bias = hf_state.get(base + "_bias")
        dtype = bias.dtype if bias is not None and bias.is_floating_point() else torch.float32
        e, n_out, groups, _ = tensor.shape
        w = torch.empty(e, groups * 32, n_out, dtype=dtype)  # [E, in, out]
        table = torch.tensor(_E2M1, dtype=torch.float32)
        for j in range(e):  # one expert at a time bounds the temporaries
            codes = torch.stack((tensor[j] & 0x0F, tensor[j] >> 4), dim=-1).flatten(-2)
            exponents = (scales[j].to(torch.int32) - 127).unsqueeze(-1).float()
            values = torch.ldexp(table[codes.long()], exponents)  # [out, in/32, 32]
            w[j] = values.flatten(-2).T
        out[base] = w
    return out


def hf_to_ours(config: Config, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rules = weight_rules(config)
    unused = family_of(config).hf_unused_prefixes
    hf_state = {
        "model." + k.removeprefix(_TEXT_PREFIX) if k.startswith(_TEXT_PREFIX) else k: v
        for k, v in hf_state.items()
        if not (unused and k.startswith(unused))
    }
    hf_state = {k.removeprefix(_LM_PREFIX): v for k, v in hf_state.items()}
    hf_state = dequantize_mxfp4(hf_state)
    hf_state = unify_expert_layout(hf_state)
    if config.multimodal:
        hf_state = unify_multimodal_names(hf_state)
    hf_state = {k: v for k, v in hf_state.items() if not k.endswith(_HF_IGNORABLE_SUFFIXES)}
    hf_state = _drop_mtp_extras(config, hf_state)
    if config.tie_embeddings:
        hf_state.pop("lm_head.weight", None)
    _check_names("HF", set(hf_state), {n for r in rules for n in r.hf})
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        tensors = rule.to_ours([hf_state[n] for n in rule.hf])
        out.update(zip(rule.ours, tensors, strict=True))
    return out


_MTP_SHARED_COPIES = ("embed_tokens.weight", "shared_head.head.weight")


def _drop_mtp_extras(config: Config, hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MTP layers are skipped unless built; their embedding/head copies are always shared."""
    first_mtp = config.n_layers
    kept = {}
    for name, tensor in hf_state.items():
        match = re.match(r"^model\.layers\.(\d+)\.(.*)$", name)
        in_mtp = match is not None and int(match.group(1)) >= first_mtp
        if in_mtp and (not config.build_mtp or match.group(2) in _MTP_SHARED_COPIES):
            continue
        kept[name] = tensor
    return kept


def ours_to_hf(config: Config, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rules = weight_rules(config)
    _check_names("glassformer", set(state), {n for r in rules for n in r.ours})
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        tensors = rule.to_hf([state[n] for n in rule.ours])
        out.update(zip(rule.hf, tensors, strict=True))
    gpt2 = family_of(config).hf_layout == "gpt2"
    embed = "transformer.wte.weight" if gpt2 else "model.embed_tokens.weight"
    if config.tie_embeddings:
        out["lm_head.weight"] = out[embed]
    if config.build_mtp:
        for k in range(config.n_mtp_modules):
            layer = f"model.layers.{config.n_layers + k}"
            out[f"{layer}.embed_tokens.weight"] = out[embed]
            out[f"{layer}.shared_head.head.weight"] = out["lm_head.weight"]
    return out
