"""Residual-stream (embedding) channels by their normalised activations (Muralidharan et al.
2024, "Compact Language Models via Pruning and Knowledge Distillation", section 2.2):

    S_i = sum_n sqrt( E_t [ N_n(x_t)_i^2 ] )

over every normalisation N_n that reads the residual stream (each block's attention and MLP
input norms, and the final norm): the root-mean-square size of channel i in what the sublayers
actually read, summed over the places that read it. Minitron aggregates the LayerNorm outputs
the same way to choose which hidden dimensions to remove, since a channel is shared by the
embedding, every block and the head, so its importance is a sum over all of them.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn


def _stream_norms(model: nn.Module) -> list[nn.Module]:
    norms = [
        m
        for block in model.layers
        for m in (getattr(block, "attn_norm", None), getattr(block, "mlp_norm", None))
        if m is not None
    ]
    return [*norms, model.final_norm]


class EmbeddingChannels:
    def __init__(self, model: nn.Module) -> None:
        self.norms = _stream_norms(model)
        self.sq = torch.zeros(len(self.norms), model.config.d_model, dtype=torch.float64)
        self.tokens = torch.zeros(len(self.norms), dtype=torch.float64)

    def attach(self, stack: ExitStack) -> None:
        for n, norm in enumerate(self.norms):
            stack.callback(norm.register_forward_hook(self._hook(n)).remove)

    def _hook(self, n: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            y = out.detach().double().flatten(0, -2)
            self.sq[n] += y.square().sum(0)
            self.tokens[n] += y.shape[0]

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        rms = (self.sq / self.tokens[:, None].clamp_min(1)).sqrt()
        return {"embedding": rms.sum(0).float()}
