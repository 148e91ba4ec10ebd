"""MUDDFormer: multiway dynamic dense connections.

Xiao, Zhang, Meng, Luo, Zhang, Wang (2025), "MUDDFormer: Breaking Residual Bottlenecks in
Transformers via Multiway Dynamic Dense Connections".

After block i the next block's inputs are read from all block outputs so far, with weights
computed from the current hidden state, separately for each of its input streams
s in {Q, K, V, R} (query, key, value, residual):

    X_0 = embeddings
    A_i = GELU(RMSNorm(X_i) W1_i) W2_i + b_i               A_i in R^{C x (i+1)}, C streams
    X_i^s = sum_{j=0..i} A_i[s, j] X_j                      s = 1 .. C
    X_{i+1} = Block_{i+1}(X_i^Q, X_i^K, X_i^V, X_i^R):
        H = X^R + Attn(N(X^Q), N(X^K), N(X^V))               (queries, keys and values
        X_{i+1} = H + FFN(N'(H))                              projected from their own stream)
    the final norm reads X_L^R = sum_j A_L[0, j] X_j          (one stream, C = 1)

W1_i in R^{D x C(i+1)}, W2_i in R^{C(i+1) x C(i+1)}. The first block reads X_0 alone (there is
nothing to mix). The multiway split needs separate key and value projections; a layer whose
keys and values come from one projection (MLA's latent, Gated DeltaNet's fused projection,
shared or keys-equal-values layers) reads two streams, its input and its residual (C = 2).
Initialisation: W2 = 0 and b_i one-hot on j = i for every stream, so X_i^s = X_i and the network
starts as the plain residual network; W1 ~ N(0, std). The normalisation has no learned scale
(W1 absorbs one). N is the block's own attention norm, shared by the three streams.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.connections import ConnectionModule, Topology, rms, weighted_sum
from glassformer.config import Config


def splits_kv(config: Config, layer: int) -> bool:
    """Does this layer project its keys and values from separate inputs (four streams)?"""
    return (
        config.layer_type(layer) != "linear"
        and config.attention == "mha"
        and config.kv_source(layer) is None
        and not config.layer_k_eq_v(layer)
    )


def mudd_streams(config: Config) -> list[int]:
    """C of each dynamic dense connection: after blocks 1 .. n_layers (the last: the final
    norm's one stream)."""
    n = config.n_layers
    return [4 if splits_kv(config, i) else 2 for i in range(1, n)] + [1]


class DynamicDense(ConnectionModule):
    """DA_i: C weighted sums over X_0 .. X_i, the weights computed from X_i."""

    def __init__(self, d_model: int, sources: int, streams: int, eps: float) -> None:
        super().__init__()
        self.sources, self.streams, self.eps = sources, streams, eps
        width = streams * sources
        self.w1 = nn.Parameter(torch.empty(d_model, width))
        self.w2 = nn.Parameter(torch.empty(width, width))
        self.bias = nn.Parameter(torch.empty(streams, sources))
        self.bias.no_weight_decay = True  # type: ignore[attr-defined]  # init: one-hot on j = i

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        nn.init.normal_(self.w1, 0.0, std)
        self.w2.zero_()
        self.bias.zero_()
        self.bias[:, -1] = 1.0

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """A_i [..., C, i+1] from X_i [..., D]."""
        a = F.gelu(rms(x, self.eps) @ self.w1) @ self.w2
        return a.unflatten(-1, (self.streams, self.sources)) + self.bias

    def forward(self, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        a = self.weights(outputs[-1]).unsqueeze(-1)  # [..., C, i+1, 1]
        return [
            weighted_sum([a[..., s, j, :] for j in range(self.sources)], outputs)
            for s in range(self.streams)
        ]


class MUDD(Topology):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.split = [splits_kv(config, i) for i in range(config.n_layers)]
        d, eps = config.d_model, config.norm_eps
        self.dense = nn.ModuleList(
            DynamicDense(d, i + 1, c, eps) for i, c in enumerate(mudd_streams(config), start=1)
        )
        self.reset_parameters(config.init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        for m in self.dense:
            m.reset_parameters(std)

    def start(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]  # X_0 .. X_i

    def layer(self, i: int, block: nn.Module, outputs: list[torch.Tensor], args: Any) -> list:
        rope, positions, cache, key_valid, _, shared_kv, image = args
        # the first block reads X_0 in every stream
        streams = self.dense[i - 1](outputs) if i else [outputs[0]] * (4 if self.split[i] else 2)
        kv = (streams[1], streams[2]) if self.split[i] else None
        h = streams[-1] + block.attn_branch(
            streams[0], rope, positions, cache, key_valid, shared_kv, image, kv
        )
        outputs.append(h + block.mlp_branch(h))
        return outputs

    def finish(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        return self.dense[-1](outputs)[0]

    def hidden(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        return outputs[-1]  # the block's output X_i
