"""Cross-layer connections: how the outputs of the blocks reach the later blocks.

The plain network keeps one residual stream, x_l = x_{l-1} + f_l(x_{l-1}): block l sees the
earlier blocks only through their sum. The methods here let deep blocks read earlier
representations directly, each selected by `Config.connections`:

    "residual"     the plain stream (no module: the model calls the blocks in turn)
    "denseformer"  a learned weighted average of all earlier block outputs after a block
                   (denseformer.py; Pagliardini et al. 2024)
    "mudd"         dynamic dense connections, separate ones for the query, key, value and
                   residual inputs of each block (mudd.py; Xiao et al. 2025)
    "hyper"        n residual streams mixed by learned width and depth connections
                   (hyper_connections.py; Zhu et al. 2024)
    "mhc"          Hyper-Connections whose stream mixing is doubly stochastic (Sinkhorn-Knopp)
                   (mhc.py; DeepSeek-AI 2025)

Every topology has the same three steps, so the model reads "blocks produce outputs, the
topology combines them":

    state = topology.start(x_0)                          x_0: the embeddings
    state = topology.layer(i, block_i, state, args)      i = 0 .. n_layers - 1
    x_L   = topology.finish(state)                       into the final norm

All of them act position by position (no mixing along the sequence), so cached decoding needs
nothing beyond the blocks' own caches: the earlier blocks' outputs at the current positions are
computed in the same call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from glassformer.config import Config


class ConnectionModule(nn.Module, ABC):
    """Base of every module here: `Transformer.reset_parameters` calls `reset_parameters(std)`
    on each, which sets the module's own (direct) parameters to its paper's initialisation."""

    @abstractmethod
    def reset_parameters(self, std: float) -> None:
        """Set this module's own (direct) parameters to its paper's initialisation."""


class Topology(ConnectionModule):
    """A whole topology (what `make_connections` returns): it also names the representation
    after each layer, which the diagnostics read."""

    @abstractmethod
    def hidden(self, state: Any) -> torch.Tensor:
        """The representation after a layer, [B, T, d], for diagnostics (a topology's state
        may hold several)."""


def make_connections(config: Config) -> Topology | None:
    """The topology module of `config` (None: the plain residual stream)."""
    kind = config.connections
    if kind == "residual":
        return None
    if kind == "denseformer":
        from glassformer.components.connections.denseformer import DenseFormer

        return DenseFormer(config)
    if kind == "mudd":
        from glassformer.components.connections.mudd import MUDD

        return MUDD(config)
    from glassformer.components.connections.hyper_connections import HyperConnections

    return HyperConnections(config, constrained=kind == "mhc")


def rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) over the last dim, without a learned scale: the connection
    weights that read it are linear maps, which absorb any per-channel scale."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def weighted_sum(weights: Sequence[torch.Tensor], tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_m weights[m] * tensors[m] (weights: scalars, or per-token [..., 1] columns)."""
    y = weights[0] * tensors[0]
    for w, x in zip(weights[1:], tensors[1:], strict=True):
        y = y + w * x
    return y
