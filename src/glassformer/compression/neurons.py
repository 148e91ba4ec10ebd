"""MLP neurons and expert channels by activation-weighted magnitude (Minitron: Muralidharan et
al. 2024, "Compact Language Models via Pruning and Knowledge Distillation"; Wanda: Sun et al.
2023, "A Simple and Effective Pruning Approach for Large Language Models").

Neuron j of an MLP y = W_down h(x) (h_j = act(g_j) u_j for a GLU) adds h_j W_down[:, j] to the
residual stream. Its score is the root-mean-square size of that contribution over the
calibration tokens:

    S_j = sqrt( E_t [ h_j(x_t)^2 ] ) * || W_down[:, j] ||_2

Minitron ranks neurons by the size of their activation alone; Wanda ranks single weights by
|W_ij| * ||X_j||_2, the weight times the norm of its input. S_j is Wanda's rule for the column
of W_down that a neuron owns, with the l2 norm of the column: the activation alone would ignore
how much of the residual stream the neuron can move, the weights alone what it actually does on
data. For an expert's channel, the contribution carries the routing weight w of each token that
chose the expert and is averaged over all tokens, so a rarely chosen expert's channels score low:

    S_ej = sqrt( (1/N) sum_{t routed to e} (w_te h_ej(x_t))^2 ) * || W_down[e][:, j] ||_2
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.mlp import MLP
from glassformer.components.moe import Experts


class Neurons:
    """S_j of every dense MLP neuron: [n_layers, d_ff] (NaN beyond a layer's width, and for a
    layer without a dense MLP)."""

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.mlps = {
            i: block.mlp for i, block in enumerate(model.layers) if isinstance(block.mlp, MLP)
        }
        width = max((m.down_proj.in_features for m in self.mlps.values()), default=0)
        self.sq = torch.zeros(c.n_layers, width, dtype=torch.float64)
        self.tokens = torch.zeros(c.n_layers, dtype=torch.float64)

    def attach(self, stack: ExitStack) -> None:
        for i, mlp in self.mlps.items():
            stack.callback(mlp.down_proj.register_forward_pre_hook(self._hook(i)).remove)

    def _hook(self, layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            h = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            self.sq[layer, : h.shape[1]] += h.square().sum(0)
            self.tokens[layer] += h.shape[0]

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        if not self.mlps:  # every layer routes to experts: `ExpertChannels` scores them
            return {}
        out = torch.full_like(self.sq, float("nan"))
        for i, mlp in self.mlps.items():
            w = mlp.down_proj.weight.detach().double().norm(dim=0)
            rms = (self.sq[i, : w.shape[0]] / self.tokens[i].clamp_min(1)).sqrt()
            out[i, : w.shape[0]] = rms * w
        return {"neurons": out.float()}


class ExpertChannels:
    """S_ej of every routed expert's channel: [n_layers, n_experts, moe_d_ff] (NaN for a layer
    without experts)."""

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.experts = {
            i: m
            for i, block in enumerate(model.layers)
            for m in block.modules()
            if isinstance(m, Experts)
        }
        self.sq = torch.zeros(c.n_layers, c.n_experts, c.moe_d_ff, dtype=torch.float64)
        self.tokens = torch.zeros(c.n_layers, dtype=torch.float64)

    def attach(self, stack: ExitStack) -> None:
        for i, m in self.experts.items():
            stack.callback(m.register_forward_pre_hook(self._hook(i)).remove)

    def _hook(self, layer: int):
        def hook(m: Experts, args: tuple) -> None:
            x, ids, weights = (a.detach() for a in args)
            self.tokens[layer] += x.shape[0]
            for e in ids.unique().tolist():
                token, slot = (ids == e).nonzero(as_tuple=True)
                w = weights[token, slot, None]
                h = x[token] * w if m.scale_input else x[token]
                up = F.linear(h, m.up_proj[e], m._bias(m.up_proj_bias, e))
                if m.gate_proj is not None:
                    h = m.glu(F.linear(h, m.gate_proj[e], m._bias(m.gate_proj_bias, e)), up)
                else:
                    h = m.act(up)
                if not m.scale_input:
                    h = h * w
                self.sq[layer, e] += h.double().square().sum(0)

        return hook

    def result(self) -> dict[str, torch.Tensor]:
        out = torch.full_like(self.sq, float("nan"))
        for i, m in self.experts.items():
            w = m.down_proj.detach().double().norm(dim=1)  # [E, f]: column norms of each W_down
            out[i] = (self.sq[i] / self.tokens[i].clamp_min(1)).sqrt() * w
        return {"expert_channels": out.float()}
