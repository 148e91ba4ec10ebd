"""`fuse(model)`: the model's blocks on the kernels generated from their fusion IR.

Each block keeps its modules and weights; `FusedBlock` runs its forward as the IR's nodes: the
GEMM nodes through their generated Triton kernels (`kernels.node_apply`, an
`autograd.Function`, so training works; the routed experts as grouped kernels over
expert-sorted rows), the opaque nodes through the block's own modules (attention with its
cache and mask, MLA's latent expansion, the router, the scatter of expert outputs). A block
whose layer the generator does not cover (a linear-attention layer, gated attention, Gemma 4's
per-layer inputs, KV sharing, post-norm, a LayerNorm prologue) runs its plain forward.

The kernels run on a GPU, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.components.block import Block
from glassformer.fusion.codegen import unsupported
from glassformer.fusion.ir import BlockProgram, Gemm, block_program
from glassformer.fusion.kernels import CacheSlots, node_apply, route, run, tiles

__all__ = ["FusedBlock", "fuse", "why_unfused"]


def why_unfused(model: nn.Module, layer: int) -> str | None:
    """Why `fuse` leaves `layer` on its plain forward (None: it runs the kernels)."""
    cfg = model.config
    block = model.layers[layer]
    if cfg.layer_type(layer) == "linear":
        return "linear-attention layer"
    if cfg.norm_placement not in ("pre", "sandwich"):
        return f"norm_placement {cfg.norm_placement!r}"
    if cfg.norm != "rmsnorm":
        return f"norm {cfg.norm!r}"
    if block.moe is not None or block.per_layer_input is not None or block.layer_scalar is not None:
        return "Gemma 4 block extras"
    if cfg.attention != "mla":
        attn = block.attn
        if attn.gated or attn.v_norm is not None or attn.temperature is not None:
            return "gated attention, value norm or query temperature"
        if attn.k_proj is None or attn.v_proj is None or attn.hands_on_kv:
            return "KV sharing or keys as values"
        if cfg.qk_norm and cfg.qk_norm_scope != "head":
            return "QK-norm over the whole projection"
    for node in block_program(cfg, layer).gemms:
        why = unsupported(node)
        if why:
            return f"{node.name}: {why}"
    return None


class FusedBlock:
    """The forward of a `Block` whose GEMM nodes run generated kernels. `fuse` installs it as
    the block's `forward`, so the block keeps its modules, parameter names and state dict."""

    def __init__(
        self, block: Block, program: BlockProgram, mla: bool, cached_program: BlockProgram
    ) -> None:
        self.block = block
        self.plain = block.forward
        self.program = program
        self.mla = mla
        self.nodes = {n.name: n for n in program.gemms}
        # decoding: the K and V kernels store into the cache's slots
        self.cached_nodes = {
            n.name: n for n in cached_program.gemms if any(s.cache for s in n.stores)
        }
        self.kernel_calls = 0  # forward passes that ran the kernels (not the plain forward)
        self.cache_stores = 0  # of those, the ones whose K/V kernels wrote the cache
        self.params = dict(block.named_modules())

    def _run(self, name: str, x: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
        return node_apply(self.nodes[name], self.params, x, **kw)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
        cache: Any = None,
        key_valid: torch.Tensor | None = None,
        per_layer_input: torch.Tensor | None = None,
        shared_kv: dict | None = None,
        *rest: Any,
    ) -> torch.Tensor:
        if any(r is not None for r in rest) or shared_kv:  # image blocks, KV sharing
            return self.plain(
                x, rope, positions, cache, key_valid, per_layer_input, shared_kv, *rest
            )
        self.kernel_calls += 1
        b, t, d = x.shape
        rows = x.reshape(b * t, d)
        pos = {"positions": t}
        rot = {"cos": rope[0], "sin": rope[1]} if rope is not None else {}
        attn = self.block.attn
        if self.mla:
            out = self._mla(rows, b, t, rot, positions, cache, key_valid)
        else:
            q = self._run("attn.q_proj", rows, loads=rot, **pos)["q"]
            hd, h, hk = attn.head_dim, attn.n_heads, attn.n_kv_heads
            q = q.view(b, t, h, hd).transpose(1, 2)
            if self._stores_into(cache):
                k, v, key_positions = self._kv_into_cache(rows, t, rot, positions, cache, q.dtype)
            else:
                k = self._run("attn.k_proj", rows, loads=rot, **pos)["k"]
                v = self._run("attn.v_proj", rows, **pos)["v"]
                k = k.view(b, t, hk, hd).transpose(1, 2)
                v = v.view(b, t, hk, hd).transpose(1, 2)
                k, v, key_positions = attn._append_to_cache(k, v, positions, cache, q.dtype)
            out = attn._attend(q, k, v, positions, key_positions, key_valid, cache is not None)
        name = "attn.o_proj"
        res = self._run(name, out.reshape(b * t, -1), loads={"x": rows})
        h_rows = res["h"]
        if "mlp.gate_up" in self.nodes or "mlp.up_proj" in self.nodes:
            first = "mlp.gate_up" if "mlp.gate_up" in self.nodes else "mlp.up_proj"
            a = self._run(first, h_rows, stats=res.get("sumsq"))["a"]
            y = self._run("mlp.down_proj", a, loads={"h": h_rows})["y"]
            return y.view(b, t, d)
        blk = self.block
        hn = blk.mlp_norm(h_rows)  # the router reads it too: written once
        branch = self._moe(hn)
        if blk.post_mlp_norm is not None:
            branch = blk.post_mlp_norm(branch)
        return (h_rows + branch).view(b, t, d)

    def _stores_into(self, cache: Any) -> bool:
        """Whether the K and V kernels write this call's keys into the cache themselves: a
        cache of slots written in order (a ring's attention still needs the slots it is about
        to overwrite) and no gradient wanted (the stored keys leave the autograd graph)."""
        if cache is None or cache.ring or len(self.cached_nodes) != 2:
            return False
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.block.parameters())
        return not grad

    def _kv_into_cache(
        self,
        rows: torch.Tensor,
        t: int,
        rot: dict[str, torch.Tensor],
        positions: torch.Tensor,
        cache: Any,
        dtype: torch.dtype,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K and V straight into the cache's slots; every key and value written so far (in
        `dtype`) and their positions, as `LayerCache.update` returns them."""
        self.cache_stores += 1
        start = int(positions[0])
        k_node, v_node = self.cached_nodes["attn.k_proj"], self.cached_nodes["attn.v_proj"]
        run(k_node, self.params, rows, rot, positions=t, cache=CacheSlots(cache.keys, start))
        run(v_node, self.params, rows, positions=t, cache=CacheSlots(cache.values, start))
        cache.positions[start : start + t] = positions
        end = start + t
        return (
            cache.keys.narrow(2, 0, end).to(dtype),
            cache.values.narrow(2, 0, end).to(dtype),
            cache.positions[:end],
        )

    def _moe(self, hn: torch.Tensor) -> torch.Tensor:
        """The MoE layer: the router (opaque), the routed experts as grouped GEMM kernels over
        expert-sorted rows, the shared experts as kernels, the weighted scatter back (opaque)."""
        moe = self.block.mlp
        weights, ids, _ = moe.router(hn)
        if moe.experts.scale_input:  # Llama 4 scales each expert's input: the module's loop
            routed = moe.experts(hn, ids, weights)
        else:
            rows = route(ids, moe.experts.up_proj.shape[0], tiles(hn.device)[0])
            a = self._run(
                "mlp.experts.gate_up" if moe.experts.gated else "mlp.experts.up_proj", hn, rows=rows
            )["a"]
            y = next(
                iter(self._run("mlp.experts.down_proj", a, rows=rows.rows_of_output()).values())
            )
            valid = rows.valid
            w = weights.flatten()[rows.pair[valid]]
            routed = torch.zeros_like(hn).index_add(
                0, rows.row_src[valid], (y[valid] * w[:, None]).to(hn.dtype)
            )
        if moe.shared is None:
            return routed
        first = "mlp.shared.gate_up" if moe.experts.gated else "mlp.shared.up_proj"
        shared = next(iter(self._run("mlp.shared.down_proj", self._run(first, hn)["a"]).values()))
        if moe.shared_gate is not None:
            shared = torch.sigmoid(moe.shared_gate(hn)) * shared
        return routed + shared

    def _mla(
        self,
        rows: torch.Tensor,
        b: int,
        t: int,
        rot: dict[str, torch.Tensor],
        positions: torch.Tensor,
        cache: Any,
        key_valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """MLA's projections as kernels; its latent expansion and attention as in `mla.py`."""
        from glassformer.components.kv_cache import attention_mask
        from glassformer.kernels.dispatch import attention

        attn = self.block.attn
        pos = {"positions": t}
        if "attn.q_a_proj" in self.nodes:
            c_q = self._run("attn.q_a_proj", rows)["c_q"]
            q = self._run("attn.q_b_proj", c_q, loads=rot, **pos)
        else:
            q = self._run("attn.q_proj", rows, loads=rot, **pos)
        q = next(iter(q.values())).view(b, t, attn.n_heads, -1).transpose(1, 2)
        kv = self._run("attn.kv_a_proj", rows, loads=rot, **pos)
        c_kv = kv["c_kv"].view(b, t, -1)
        k_rope = kv["k_rope"].view(b, t, -1) if "k_rope" in kv else None
        if k_rope is None:  # no rotary positions: the rope key is the projection's tail
            raise ValueError("fusion: MLA without RoPE is not generated")
        key_positions = positions
        if cache is not None:
            c_kv, k_rope, key_positions = cache.update(c_kv, k_rope, positions)
        s = c_kv.shape[1]
        h = attn.n_heads
        kvx = attn.kv_b_proj(c_kv).view(b, s, h, -1).transpose(1, 2)
        k_nope, v = kvx.split([attn.nope_dim, attn.v_dim], dim=-1)
        k = torch.cat((k_nope, k_rope[:, None].expand(b, h, s, attn.rope_dim)), -1)
        mask = attention_mask(positions, key_positions, attn.window, key_valid, cache is not None)
        out = attention(q, k, v, mask, scale=attn.scale, impl=attn.impl)
        return out.transpose(1, 2).reshape(b, t, -1)


def fuse(model: nn.Module) -> nn.Module:
    """Put each block the generator covers on its generated kernels, and the training loss
    (`forward(ids, labels=...)`) on the LM-head cross-entropy kernel, in place; returns the
    model. Same parameters, same outputs (to float rounding); gradients flow through the
    kernels' backward."""
    from glassformer.fusion.lm_head_loss import use_for_training_loss

    cfg = model.config
    use_for_training_loss(model)  # forward(ids, labels=...): the LM head + loss kernel
    for i, block in enumerate(model.layers):
        if isinstance(getattr(block, "fused", None), FusedBlock) or why_unfused(model, i):
            continue
        fused = FusedBlock(
            block,
            block_program(cfg, i),
            cfg.attention == "mla",
            block_program(cfg, i, cached=True),
        )
        block.fused = fused
        block.forward = fused.forward
    return model


def gemm_nodes(model: nn.Module) -> list[Gemm]:
    """The GEMM nodes the fused model runs as kernels."""
    return [n for b in model.layers if hasattr(b, "fused") for n in b.fused.nodes.values()]
