"""The attention weights a_ij of every head, as the model computes them, for the measures that
read them (`head_entropy`, `head_confidence`).

The model runs its spelled-out attention ("eager": explicit scores and a softmax), and a torch
function mode passes each softmax over [b, H, t, s] scores computed inside a layer's token mixer
to the measures, with the layer's index. Rows of queries that see a single key (the first
position) are dropped: every head has weight 1 there and says nothing. With attention sinks the
softmax has one more column, the sink's share of the row, which counts as one more key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from glassformer.compression.head_mask import attention_layers

_SOFTMAX = {torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}


class AttentionMaps(TorchFunctionMode):
    """`with AttentionMaps(model, consumers):` calls consumer(layer, a) with a [b, H, t-1, s]
    for each attention layer in every forward pass; restores the attention implementation."""

    def __init__(
        self, model: nn.Module, consumers: list[Callable[[int, torch.Tensor], None]]
    ) -> None:
        super().__init__()
        self.model, self.consumers = model, consumers
        self.layer: int | None = None
        self._handles: list = []
        self._impls: dict[nn.Module, str] = {}

    def __enter__(self) -> AttentionMaps:
        for m in self.model.modules():
            if hasattr(m, "impl"):
                self._impls[m] = m.impl
                m.impl = "eager"
        for i in attention_layers(self.model):
            attn = self.model.layers[i].attn
            self._handles.append(attn.register_forward_pre_hook(self._enter_layer(i)))
            self._handles.append(attn.register_forward_hook(self._leave_layer))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for h in self._handles:
            h.remove()
        for m, impl in self._impls.items():
            m.impl = impl

    def _enter_layer(self, i: int):
        def hook(module: nn.Module, args: tuple) -> None:
            self.layer = i

        return hook

    def _leave_layer(self, module: nn.Module, args: tuple, out: object) -> None:
        self.layer = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAX and self.layer is not None and out.dim() == 4 and out.shape[2] > 1:
            rows = out.detach()[:, :, 1:].float()
            for consume in self.consumers:
                consume(self.layer, rows)
        return out


class HeadRowMean(ABC):
    """A consumer of `AttentionMaps`: per layer and head, the mean over batch and query rows of
    a per-row statistic of the attention weights (`row_stat`), NaN for layers without
    attention. A measure names its result `key` and defines `row_stat`."""

    needs_attention_maps = True
    key: str

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.total = torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64)
        self.rows = torch.zeros(c.n_layers, dtype=torch.float64)
        self.layers = attention_layers(model)

    @abstractmethod
    def row_stat(self, a: torch.Tensor) -> torch.Tensor:
        """a [b, H, rows, keys] -> [b, H, rows]."""

    def __call__(self, layer: int, a: torch.Tensor) -> None:
        """a [b, H, rows, keys]: one layer's attention weights."""
        self.total[layer] += self.row_stat(a).sum((0, 2)).double()
        self.rows[layer] += a.shape[0] * a.shape[2]

    def result(self) -> dict[str, torch.Tensor]:
        out = torch.full_like(self.total, float("nan"))
        out[self.layers] = self.total[self.layers] / self.rows[self.layers, None].clamp_min(1)
        return {self.key: out.float()}
