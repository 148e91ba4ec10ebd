"""Hyper-Connections: n parallel residual streams, mixed by learned width and depth connections.

Zhu, Huang, Zeng, Wu, Ma, Zhou, Zhou (2024), "Hyper-Connections" (ICLR 2025).

The hidden state is a matrix H in R^{n x D} (n = `hyper_streams`, the expansion rate). Each
sublayer T (attention, feed-forward) of each block gets its own connection:

    width:  [h_0, H'] = A^T H              A = [A_m | A_r] in R^{n x (1+n)}
            (h_0 = sum_s A_m[s] H_s is the sublayer's input; H' = A_r^T H mixes the streams)
    depth:  H_new = H' + B^T T(h_0)        B in R^{1 x n} (stream s receives B_s T(h_0))

static form: A, B learned matrices. Dynamic form (`hyper_dynamic`), per token:

    Hn = RMSNorm(H)                        (per stream, no learned scale: W absorbs one)
    A  = s_alpha * tanh(Hn W_alpha) + A_static          W_alpha in R^{D x (1+n)}
    B  = s_beta  * tanh(Hn W_beta)^T + B_static         W_beta in R^{D}

H_0 = n copies of the embeddings; the final norm reads the mean of the n streams (the paper
sums them; the mean keeps the scale of a single stream, which the final norm's eps sees).
Initialisation (the paper's): A_m = e_{k mod n} for the k-th connection (2 per block), A_r = I,
B = 1, W = 0, s = 0.01. Then every stream holds the plain network's hidden state and the model
starts as the plain pre-norm network. The price: n times the residual-stream activations,
kept and moved at every sublayer.

`HyperConnection` also carries the manifold-constrained form (`mhc.py`), which differs only in
how A and B are turned into weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.components.connections import ConnectionModule, Topology, rms
from glassformer.config import Config


def sinkhorn(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """Sinkhorn-Knopp (1967) on exp(logits) over the last two dims: alternately divide each
    column, then each row, by its sum. The result's rows sum to 1 exactly and its columns to 1
    within the iteration's convergence: a doubly stochastic matrix. The row-wise max is taken
    out first (a constant per column, which the first column normalisation cancels)."""
    m = logits - logits.amax(dim=-2, keepdim=True).detach()
    p = m.exp()
    for _ in range(iters):
        p = p / p.sum(dim=-2, keepdim=True).clamp_min(1e-12)
        p = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return p


class HyperConnection(ConnectionModule):
    """The width and depth connection around one sublayer."""

    def __init__(self, config: Config, index: int, constrained: bool = False) -> None:
        super().__init__()
        n, d = config.hyper_streams, config.d_model
        self.n, self.index, self.constrained = n, index, constrained
        self.eps, self.iters = config.norm_eps, config.mhc_sinkhorn_iters
        self.static_alpha = nn.Parameter(torch.empty(n, 1 + n))
        self.static_beta = nn.Parameter(torch.empty(n))
        self.static_alpha.no_weight_decay = True  # type: ignore[attr-defined]  # init: e_k, I
        self.dynamic = config.hyper_dynamic
        if self.dynamic:
            # columns: [W_alpha (1 + n) | W_beta (1)]; one product for all of them
            self.dynamic_proj = nn.Parameter(torch.empty(d, n + 2))
            # HC: (s_alpha, s_beta); mHC: (s_pre, s_res, s_post)
            self.dynamic_scale = nn.Parameter(torch.empty(3 if constrained else 2))
        self.reset_parameters(config.init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        n = self.n
        self.static_alpha.zero_()
        self.static_alpha[self.index % n, 0] = 1.0
        self.static_alpha[:, 1:] = torch.eye(n)
        self.static_beta.fill_(1.0)
        if self.dynamic:
            self.dynamic_proj.zero_()
            self.dynamic_scale.fill_(0.01)

    def coefficients(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A [..., n, 1+n], B [..., n]) for the streams h [..., n, D] (static: [n, 1+n], [n])."""
        alpha, beta = self.static_alpha.to(h.dtype), self.static_beta.to(h.dtype)
        if not self.dynamic:
            if self.constrained:
                return self._constrain(alpha, beta)
            return alpha, beta
        w = rms(h, self.eps) @ self.dynamic_proj.to(h.dtype)  # [..., n, n + 2]
        s = self.dynamic_scale.to(h.dtype)
        if self.constrained:
            scale = torch.cat((s[:1], s[1:2].expand(self.n)))
            return self._constrain(w[..., : self.n + 1] * scale + alpha, w[..., -1] * s[2] + beta)
        w = torch.tanh(w)
        return w[..., : self.n + 1] * s[0] + alpha, w[..., -1] * s[1] + beta

    def _constrain(
        self, alpha: torch.Tensor, beta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mHC's manifold constraints (see mhc.py)."""
        pre = torch.sigmoid(alpha[..., :1])
        res = sinkhorn(alpha[..., 1:], self.iters)
        return torch.cat((pre, res), dim=-1), 2 * torch.sigmoid(beta)

    def width(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """streams [..., n, D] -> (sublayer input [..., D], mixed streams [..., n, D], B)."""
        alpha, beta = self.coefficients(h)
        mixed = alpha.transpose(-1, -2) @ h  # [..., 1 + n, D]
        return mixed[..., 0, :], mixed[..., 1:, :], beta

    @staticmethod
    def depth(out: torch.Tensor, mixed: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """H_new = H' + B^T T(h_0)."""
        return mixed + beta[..., None] * out[..., None, :]


class HyperConnections(Topology):
    """The topology: two connections per block, H_0 = n copies, the mean at the end."""

    def __init__(self, config: Config, constrained: bool = False) -> None:
        super().__init__()
        self.n = config.hyper_streams
        self.hc = nn.ModuleList(
            HyperConnection(config, k, constrained) for k in range(2 * config.n_layers)
        )

    @torch.no_grad()
    def reset_parameters(self, std: float) -> None:
        for m in self.hc:
            m.reset_parameters(std)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-2).expand(*x.shape[:-1], self.n, x.shape[-1])

    def layer(self, i: int, block: nn.Module, h: torch.Tensor, args: Any) -> torch.Tensor:
        rope, positions, cache, key_valid, _, shared_kv, image = args
        attn, ffn = self.hc[2 * i], self.hc[2 * i + 1]
        x, mixed, beta = attn.width(h)
        h = attn.depth(block.attn_branch(x, rope, positions, cache, key_valid, shared_kv, image),
                       mixed, beta)  # fmt: skip
        x, mixed, beta = ffn.width(h)
        return ffn.depth(block.mlp_branch(x), mixed, beta)

    def finish(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=-2)

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=-2)  # what the final norm would read here
