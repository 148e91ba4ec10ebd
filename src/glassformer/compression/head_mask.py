"""A multiplier per attention head: the "head mask" xi of Michel et al. 2019.

    Attn(x) = sum_h xi_h * o_h W_o[h]        (o_h: head h's output, W_o[h]: its rows of W_o)

xi_h = 1 everywhere is the model itself, xi_h = 0 removes head h. The mask acts where the heads
are still separate: on the input of the output projection, [b, t, H * d_v], which is split into
heads as [b, t, H, d_v] and scaled. It is a forward pre-hook on each `o_proj`, so the attention
components stay as they are. Layers of linear attention (Gated DeltaNet) have no such heads and
keep their output.

`HeadMask.mask` is [n_layers, n_heads] (one mask for every sequence) or [n_layers, batch,
n_heads] (one per sequence: the gradient of a sum of per-sequence losses with respect to row b
is then that sequence's own gradient, which `head_gradient` needs), or None (no scaling).
"""

from __future__ import annotations

import torch
from torch import nn


def attention_layers(model: nn.Module) -> list[int]:
    """Indices of the blocks whose token mixer has softmax attention heads (an `o_proj` over
    n_heads heads): standard attention and MLA, not linear attention."""
    return [
        i
        for i, block in enumerate(model.layers)
        if not getattr(block, "linear", False) and hasattr(block.attn, "o_proj")
    ]


class HeadMask:
    """`with HeadMask(model, mask):` runs `model` with head h of layer l scaled by mask[l, h]
    (or mask[l, b, h] for sequence b); `mask` may be replaced between forward passes."""

    def __init__(self, model: nn.Module, mask: torch.Tensor | None = None) -> None:
        self.model = model
        self.n_layers, self.n_heads = model.config.n_layers, model.config.n_heads
        self.mask = mask
        self._handles: list = []

    @property
    def mask(self) -> torch.Tensor | None:
        return self._mask

    @mask.setter
    def mask(self, mask: torch.Tensor | None) -> None:
        if mask is not None and (
            mask.dim() not in (2, 3)
            or mask.shape[0] != self.n_layers
            or mask.shape[-1] != self.n_heads
        ):
            raise ValueError(
                f"head mask: expected [{self.n_layers}, {self.n_heads}] or "
                f"[{self.n_layers}, batch, {self.n_heads}], got {tuple(mask.shape)}"
            )
        self._mask = mask

    def __enter__(self) -> HeadMask:
        for i in attention_layers(self.model):
            hook = self.model.layers[i].attn.o_proj.register_forward_pre_hook(self._scaler(i))
            self._handles.append(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _scaler(self, layer: int):
        def scale(module: nn.Module, args: tuple) -> tuple | None:
            if self._mask is None:
                return None
            (out,) = args
            b, t, width = out.shape
            m = self._mask[layer].to(out.dtype)
            m = m.view(1, 1, -1, 1) if m.dim() == 1 else m.view(b, 1, -1, 1)
            return ((out.view(b, t, self.n_heads, width // self.n_heads) * m).view(b, t, width),)

        return scale
