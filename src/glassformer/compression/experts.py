"""Whole experts by how the router uses them (as in the expert-pruning studies of Lu et al.
2024, "Not All Experts are Equal: Efficient Expert Pruning and Skipping for Mixture-of-Experts
Large Language Models", and Muzio et al. 2024, "SEER-MoE"):

    frequency_e = (1/N) #{t : e among the experts token t chose}      (sums to k over experts)
    gate_mass_e = (1/N) sum_{t chose e} w_te                          (w: the routing weight
                                                                       the layer applies)

over the N calibration tokens of each MoE layer. An expert no token chooses can be removed
without changing the model's output on that data; one chosen often but with small weights
moves the output little (gate mass), so the two together say how much an expert carries.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn


def _routers(model: nn.Module) -> dict[int, nn.Module]:
    """Block index -> its router (the MoE's own, or Gemma 4's routed experts beside the MLP)."""
    found = {}
    for i, block in enumerate(model.layers):
        for name, m in block.named_modules():
            if name.endswith("router"):
                found[i] = m
    return found


class ExpertUsage:
    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.routers = _routers(model)
        self.count = torch.zeros(c.n_layers, max(c.n_experts, 1), dtype=torch.float64)
        self.mass = torch.zeros_like(self.count)
        self.tokens = torch.zeros(c.n_layers, dtype=torch.float64)

    def attach(self, stack: ExitStack) -> None:
        for i, router in self.routers.items():
            stack.callback(router.register_forward_hook(self._hook(i)).remove)

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple, out: tuple) -> None:
            weights, ids = out[0].detach(), out[1]  # [N, k] each
            n_experts = self.count.shape[1]
            self.count[layer] += torch.bincount(ids.flatten(), minlength=n_experts).double()
            self.mass[layer].index_add_(0, ids.flatten(), weights.flatten().double())
            self.tokens[layer] += ids.shape[0]

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        freq = torch.full_like(self.count, float("nan"))
        mass = torch.full_like(self.count, float("nan"))
        rows = list(self.routers)
        freq[rows] = self.count[rows] / self.tokens[rows, None].clamp_min(1)
        mass[rows] = self.mass[rows] / self.tokens[rows, None].clamp_min(1)
        return {"expert_frequency": freq.float(), "expert_gate_mass": mass.float()}
