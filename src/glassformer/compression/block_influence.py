"""Whole layers by Block Influence (Men et al. 2024, "ShortGPT: Layers in Large Language Models
are More Redundant Than You Expect", eq. 1):

    BI_l = 1 - E_t [ x_t^T y_t / (||x_t|| ||y_t||) ]

with x_t the residual stream entering block l at token t and y_t the one leaving it. A block
that barely turns the hidden state (BI near 0) changes little of what later blocks see, and
ShortGPT removes the blocks of lowest BI first. The mean runs over all calibration tokens.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn


class BlockInfluence:
    def __init__(self, model: nn.Module) -> None:
        self.blocks = list(model.layers)
        self.cos = torch.zeros(len(self.blocks), dtype=torch.float64)
        self.tokens = torch.zeros(len(self.blocks), dtype=torch.float64)

    def attach(self, stack: ExitStack) -> None:
        for i, block in enumerate(self.blocks):
            stack.callback(block.register_forward_hook(self._hook(i)).remove)

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            x = args[0].detach().double().flatten(0, -2)
            y = out.detach().double().flatten(0, -2)
            self.cos[layer] += torch.nn.functional.cosine_similarity(x, y, dim=-1).sum()
            self.tokens[layer] += x.shape[0]

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        return {"layers": (1 - self.cos / self.tokens.clamp_min(1)).float()}
