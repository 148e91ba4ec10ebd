"""DenseFormer: a Depth-Weighted Average (DWA) of all earlier block outputs after a block.

Pagliardini, Mohtashami, Fleuret, Jaggi (2024), "DenseFormer: Enhancing Information Flow in
Transformers via Depth Weighted Averaging".

    X_0 = embeddings
    X_i = Block_i(Y_{i-1})                          (Y_0 = X_0)
    Y_i = DWA_i(X_0 .. X_i) = sum_{j in J_i} alpha_{i,j} X_j      when i % p == 0
    Y_i = X_i                                                      otherwise
    J_i = {j <= i : (i - j) % k == 0}     (dilation k: every k-th earlier output)

with period p (`dense_period`) and dilation k (`dense_dilation`); the paper's "k x p
DenseFormer". Y_L goes into the final norm. Initialisation: alpha_{i,i} = 1 and every other
weight 0, so the network starts as the plain residual network. The weights are scalars, one per
(i, j): |J_i| parameters per DWA. The cost is not in them but in keeping the block outputs
X_j alive until the last DWA that reads them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.components.connections import Topology, weighted_sum
from glassformer.config import Config


def dwa_sources(config: Config) -> dict[int, list[int]]:
    """i -> J_i for every i (1 .. n_layers) followed by a DWA."""
    k, p = config.dense_dilation, config.dense_period
    return {
        i: [j for j in range(i + 1) if (i - j) % k == 0]
        for i in range(1, config.n_layers + 1)
        if i % p == 0
    }


class DenseFormer(Topology):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.sources = dwa_sources(config)
        self.n_layers = config.n_layers
        # alpha[str(i)][m] weighs X_{J_i[m]}
        self.alpha = nn.ParameterDict(
            {str(i): nn.Parameter(torch.empty(len(js))) for i, js in self.sources.items()}
        )
        self.reset_parameters(config.init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        for w in self.alpha.values():
            w.zero_()
            w[-1] = 1.0  # J_i ends with i itself

    def start(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [x], x  # (X_0 .. X_i, Y_i)

    def layer(
        self, i: int, block: nn.Module, state: tuple[list[torch.Tensor], torch.Tensor], args: Any
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        outputs, y = state
        x = block(y, *args)
        outputs.append(x)
        n = i + 1
        if n not in self.sources:
            return outputs, x
        return outputs, self.average(n, outputs)

    def average(self, i: int, outputs: list[torch.Tensor]) -> torch.Tensor:
        alpha = self.alpha[str(i)].to(outputs[0].dtype)
        return weighted_sum(alpha, [outputs[j] for j in self.sources[i]])

    def finish(self, state: tuple[list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return state[1]

    def hidden(self, state: tuple[list[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        return state[0][-1]  # the block's output X_i

    def weights(self) -> torch.Tensor:
        """[n_layers, n_layers + 1]: alpha_{i,j} (row i-1 the DWA after block i; NaN where
        there is no weight), for heat maps."""
        n = self.n_layers
        out = torch.full((n, n + 1), float("nan"))
        for i, js in self.sources.items():
            out[i - 1, js] = self.alpha[str(i)].detach().float().cpu()
        return out
