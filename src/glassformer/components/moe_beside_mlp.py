"""A Mixture-of-Experts block beside the dense MLP (Gemma 4; Gemma Team 2026, "Gemma 4").

Gemma 4's MoE models keep every layer's dense GLU and add routed experts next to it; both read
the same residual stream x and each has its own norms:

    h_dense = N_1'( GLU( N(x) ) )                       N: the block's pre-feed-forward norm
    h_moe   = N_2'( sum_{e in top_k} w_e GLU_e( N_2(x) ) )
    y       = N'( h_dense + h_moe )                     N': the block's post-feed-forward norm

The router scores the un-normalised stream through a scale-free RMSNorm, a learned per-channel
scale s and 1/sqrt(d); the top-k softmax probabilities are renormalised to sum to one and then
multiplied by a learned per-expert scale c:

    r = RMS(x) * s / sqrt(d),   p = softmax(r W_r),   w_e = c_e * p_e / sum_{top_k} p
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.components.moe import Experts
from glassformer.components.norms import UnscaledRMSNorm, make_norm
from glassformer.config import Config


class ScaledRouter(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.norm = UnscaledRMSNorm(config.norm_eps)
        self.scale = nn.Parameter(torch.ones(config.d_model))
        self.weight = nn.Parameter(torch.empty(config.n_experts, config.d_model))
        self.expert_scale = nn.Parameter(torch.ones(config.n_experts))
        self.top_k = config.n_experts_per_token
        self.root = config.d_model**-0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, d] -> (weights [N, k], expert ids [N, k])."""
        r = self.norm(x) * self.scale * self.root
        probs = F.linear(r, self.weight).softmax(-1, dtype=torch.float32)
        weights, ids = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True) * self.expert_scale[ids]
        return weights.to(x.dtype), ids


class MoEBesideMLP(nn.Module):
    """The experts' half: combines with the dense MLP's output `dense` (see the module doc)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.router = ScaledRouter(config)
        self.experts = Experts(config)
        self.pre_norm = make_norm(config)
        self.post_norm = make_norm(config)
        self.post_dense_norm = make_norm(config)

    def forward(self, x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        weights, ids = self.router(flat)
        experts = self.experts(self.pre_norm(flat), ids, weights).view(x.shape)
        return self.post_dense_norm(dense) + self.post_norm(experts)
