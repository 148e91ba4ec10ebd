"""`optimize(model, quant=...)`: swap a Transformer's modules for fused / quantised equivalents.

Nothing in the core changes: the model keeps its forward pass, its blocks and its cache; only
leaf modules are replaced (see `modules.py`), and the model's class becomes
`InferenceTransformer`, a subclass that adds four things:

- `forward(..., last_only=True)`: logits of the last position only. A prefill needs nothing
  else, and the LM head over all T positions is a T x vocab x d GEMM (SmolLM2: 29 GFLOP for 512
  tokens, a fifth of the whole prefill) whose result would be thrown away.
- rotary tables computed once per position and sliced, instead of cos/sin each step;
- a quantised LM head (tied or not) when `quant` is not "none";
- single-token steps through a `DecodePlan` (`plan.py`) where the architecture allows.

Quantisation covers every `nn.Linear` of the blocks (attention, MLP, MLA projections, shared
experts); stacked MoE expert tensors and the router stay float32. The LM head uses
`head_quant` (default int8: it is a fifth of SmolLM2's weights, and the logits are what the
sampler sees; llama.cpp's Q4 files keep it at 8 bits too). A layer whose width the format cannot
hold (K not a multiple of 64 for int4, of 32 for int8) stays float32.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from glassformer.components.attention import Attention
from glassformer.components.kv_cache import KVCache
from glassformer.components.mlp import MLP
from glassformer.components.norms import RMSNorm
from glassformer.inference import native
from glassformer.inference.hugepages import move_into_huge_pages
from glassformer.inference.modules import (
    SMALL_M,
    DecodeLinear,
    FastRMSNorm,
    FusedAttention,
    FusedMLP,
    QuantEmbedding,
    QuantLinear,
    can_concat,
    native_ok,
)
from glassformer.inference.plan import DecodePlan, why_not
from glassformer.inference.quant import pick_group, quantize
from glassformer.model import Transformer

QUANT_MODES = ("none", "int8", "int4")


class InferenceTransformer(Transformer):
    """A Transformer after `optimize()`; same forward pass, faster modules."""

    compile_decode: bool = False
    use_plan: bool = True  # single-token steps through `DecodePlan` where supported
    quant: str = "none"

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        if isinstance(self.lm_head, QuantLinear | DecodeLinear):
            logits = self.lm_head(hidden)
        elif self.lm_head is None and isinstance(self.embed, QuantEmbedding):
            logits = self.embed.table(hidden)
        elif (
            self.lm_head is None
            and hidden.numel() // hidden.shape[-1] <= SMALL_M
            and (native_ok(hidden) and self.embed.weight.dtype == torch.float32)
        ):  # a tied float32 head, decoding: the native matrix-vector kernel
            rows = hidden.reshape(-1, hidden.shape[-1]).contiguous()
            logits = native.f32_mm(rows, self.embed.weight).view(*hidden.shape[:-1], -1)
        else:
            return super().head(hidden)
        cap = self.config.final_logit_softcap
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
        last_only: bool = False,
        **media: torch.Tensor | None,
    ) -> torch.Tensor:
        """As `Transformer.forward` (`media`: its multimodal keyword inputs); with `last_only`,
        logits [batch, 1, vocab] of the last position only."""
        media = {k: v for k, v in media.items() if v is not None}
        if input_ids.shape[1] == 1 and cache is not None and attention_mask is None and not media:
            plan = self.decode_plan(cache)
            if plan is not None:
                return plan.step(input_ids[:, 0]).clone()[:, None]
        hidden, _, _ = self.hidden_states(input_ids, cache, attention_mask, **media)
        if last_only:
            hidden = hidden[:, -1:]
        return self.head(self.final_norm(hidden))

    def decode_plan(self, cache: KVCache) -> DecodePlan | None:
        """The lean single-token step for this cache (built on first use), or None when the
        model, the cache or the moment (autograd, torch.compile tracing) does not allow it."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling() or not self.use_plan:
            return None
        plans = self.__dict__.setdefault("_plans", weakref.WeakKeyDictionary())
        plan = plans.get(cache)
        if plan is None or plan.threads != torch.get_num_threads():
            plan = DecodePlan(self, cache) if why_not(self, cache) is None else None
            plans[cache] = plan
        if plan is not None and cache.key_valid is not None:  # padding appeared since
            return None
        return plan

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]  # nn.Module's signature
        self.__dict__.pop("_plans", None)  # the plans hold pointers to the old tensors
        return super()._apply(fn, recurse)

    def rope_tables(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        # hidden_states always passes arange(start, start + t): slice a table of positions
        # 0 .. L-1 computed by the same RotaryEmbedding (so the same values), grown by doubling.
        if not len(self.rotary) or positions.numel() == 0 or self.rope_switch_at is not None:
            # (LongRoPE's tables depend on where the sequence ends, not on the position alone)
            return super().rope_tables(positions, dtype)
        start = int(positions[0])
        end = start + positions.numel()
        tables = self.__dict__.setdefault("_rope_cache", {})
        cached = tables.get(dtype)
        if cached is None or cached[0] < end:
            length = max(end, 2 * cached[0] if cached else 256)
            full = torch.arange(length, device=positions.device)
            cached = (length, super().rope_tables(full, dtype))
            tables[dtype] = cached
        return {kind: (cos[start:end], sin[start:end]) for kind, (cos, sin) in cached[1].items()}

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        for module in self.modules():
            if isinstance(module, QuantLinear):
                n += module.in_features * module.out_features
        if exclude_embeddings:
            if isinstance(self.embed, QuantEmbedding):
                n -= self.embed.num_embeddings * self.embed.embedding_dim
            else:
                n -= self.embed.weight.numel()
        return n


def optimize(
    model: Transformer,
    quant: str = "none",
    *,
    fuse: bool = True,
    compile: bool = False,
    group_size: int | None = None,
    head_quant: str | None = None,
    inplace: bool = False,
    huge_pages: bool = True,
    kv_dtype: torch.dtype | None = None,
) -> InferenceTransformer:
    """A model computing the same function with fused and/or quantised modules.

    quant: "none" (float32), "int8" (per channel unless `group_size`) or "int4" (group-wise,
    `group_size` default 32). fuse: QKV and gate/up projections as one matrix, one-kernel
    RMSNorm. compile: `Decoder` compiles its decode step with `torch.compile` (falls back to
    eager when the compiler is unavailable). head_quant: the LM head's format ("int8" default
    when quantising; "none" keeps it float32). huge_pages: the weights move into one
    transparent-huge-page region (`inference.hugepages`): decode reads every weight each
    token, and 2 MiB pages spare it a TLB miss per 4 KiB (`benchmarks/ab_decode.py` measures
    the decode).
    kv_dtype: what `new_cache` stores keys and values in; float16 by default when quantising (as
    llama.cpp does: decode attention reads half the bytes), float32 otherwise. The model is
    copied unless `inplace`.
    """
    if quant not in QUANT_MODES:
        raise ValueError(f"quant: expected one of {', '.join(QUANT_MODES)}, got {quant!r}")
    kv_dtype = kv_dtype or (torch.float32 if quant == "none" else torch.float16)
    if kv_dtype not in native.CACHE_DTYPES:
        raise ValueError(f"kv_dtype: expected torch.float32 or torch.float16, got {kv_dtype}")
    head_quant = head_quant or ("none" if quant == "none" else "int8")
    if head_quant not in QUANT_MODES:
        raise ValueError(f"head_quant: expected one of {', '.join(QUANT_MODES)}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval().requires_grad_(False)
    if fuse:
        _fuse(model)
    for parent, name, linear in list(_block_linears(model)):
        fast = quantize_linear(linear, quant, group_size) if quant != "none" else linear
        if type(fast) is nn.Linear and fast.weight.dtype == torch.float32:
            fast = DecodeLinear.from_linear(fast)
        setattr(parent, name, fast)
    if head_quant != "none":
        _quantize_head(model, head_quant, group_size if head_quant == quant else None)
    elif type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32:
        model.lm_head = DecodeLinear.from_linear(model.lm_head)
    model.__class__ = InferenceTransformer
    assert isinstance(model, InferenceTransformer)
    model.compile_decode = compile
    model.quant = quant
    model.kv_dtype = kv_dtype
    if huge_pages:
        move_into_huge_pages(model)
    return model


def fast_path_notes(model: Transformer) -> list[str]:
    """What of the fast path a model does not get, and why, one line each (empty: all of it).

    The plain model gets a note saying so; an optimized one, the projections left float32 and
    the reason single-token steps run module by module instead of as one `DecodePlan`."""
    if not isinstance(model, InferenceTransformer):
        return ["the plain model: every module runs through PyTorch (optimize() for speed)"]
    notes = []
    if not native.available():
        notes.append(
            "native kernels unavailable (no AVX2/FMA, no C compiler, or "
            "GLASSFORMER_KERNELS=reference): PyTorch computes the same function, slower"
        )
    if model.quant != "none":
        linears = [
            m for _, _, m in _children(model.layers) if isinstance(m, nn.Linear | QuantLinear)
        ]
        kept = [m for m in linears if not isinstance(m, QuantLinear)]
        if kept:
            notes.append(
                f"{len(kept)} of {len(linears)} projections stay float32: their input width is "
                f"not a multiple of the {model.quant} group"
            )
    # A cache just long enough to turn sliding-window layers into rings, as a long generation
    # would (one of the full context would cost its size in memory, only to be asked).
    cfg = model.config
    windows = [cfg.kv_span(i) or 0 for i in range(cfg.n_layers)]
    reason = why_not(model, model.new_cache(1, min(cfg.max_seq_len, max(windows) + 1)))
    if reason is not None:
        notes.append(f"decode steps run module by module, not as one native program: {reason}")
    return notes


def _fuse(model: Transformer) -> None:
    cfg = model.config
    # the fused modules compute plain attention and act(g) * u: no sinks, no clamped GLU
    plain_glu = (cfg.glu_alpha, cfg.glu_limit, cfg.glu_up_offset) == (1.0, None, 0.0)
    for block in model.layers:
        attn, mlp = block.attn, block.mlp
        if (
            type(attn) is Attention
            and attn.sinks is None
            and not attn.gated  # the output gate rides in q_proj's rows
            and attn.fusable
            and cfg.image_bidirectional == "none"  # the fused module builds no image-block mask
            and can_concat([attn.q_proj, attn.k_proj, attn.v_proj])
        ):
            block.attn = FusedAttention.from_attention(attn)
        if (
            type(mlp) is MLP
            and plain_glu
            and mlp.gate_proj is not None
            and can_concat([mlp.gate_proj, mlp.up_proj])
        ):
            block.mlp = FusedMLP.from_mlp(mlp)
    for parent, name, module in list(_children(model)):
        if type(module) is RMSNorm:
            setattr(parent, name, FastRMSNorm.from_norm(module))


def _children(root: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    for parent in root.modules():
        for name, child in parent.named_children():
            yield parent, name, child


def _block_linears(model: Transformer) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    for parent, name, module in _children(model.layers):
        if type(module) is nn.Linear:
            yield parent, name, module


def quantize_linear(linear: nn.Linear, quant: str, group_size: int | None) -> nn.Module:
    """A QuantLinear with `linear`'s weights, or `linear` itself when the format cannot hold
    its width."""
    group = pick_group(linear.in_features, quant, group_size)
    if group is None:
        return linear
    return QuantLinear(quantize(linear.weight, quant, group), linear.bias)


def _quantize_head(model: Transformer, quant: str, group_size: int | None) -> None:
    if model.lm_head is not None:
        model.lm_head = quantize_linear(model.lm_head, quant, group_size)  # type: ignore[assignment]
        return
    table = model.embed.weight
    group = pick_group(table.shape[1], quant, group_size)
    if group is not None:
        model.embed = QuantEmbedding(quantize(table, quant, group))  # type: ignore[assignment]


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights a decode step reads: every parameter and quantised buffer, except an
    untied embedding table (a step reads one row of it)."""
    total = 0
    seen: set[int] = set()
    untied_embed = getattr(model, "lm_head", None) is not None and isinstance(
        getattr(model, "embed", None), nn.Embedding
    )
    for name, p in model.named_parameters():
        if untied_embed and name == "embed.weight":
            continue
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.nbytes() + (module.bias.numel() * 4 if module.bias is not None else 0)
    return total
