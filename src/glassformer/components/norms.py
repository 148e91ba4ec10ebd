"""Normalisation layers.

LayerNorm (Ba et al. 2016):  y = (x - mean(x)) / sqrt(var(x) + eps) * w + b
RMSNorm (Zhang & Sennrich 2019):  y = x / sqrt(mean(x^2) + eps) * w
Gemma's RMSNorm stores w around zero and scales by (1 + w), so a freshly initialised
(all-zero) weight is the identity scale.

Both compute their statistics in float32 (or the input's dtype when wider): in half precision
the mean of squares of a wide vector overflows or loses the small components.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.config import Config


def at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or in its own dtype when wider (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = at_least_f32(x)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:
            # Gemma multiplies in float32 before casting back.
            return (x32 * (1.0 + at_least_f32(self.weight))).type_as(x)
        return self.weight * x32.type_as(x)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, unit_offset={self.unit_offset}"


def unit_rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without a learned scale, x / sqrt(mean(x^2) + eps) over the last dim, computed in
    float32 (Llama 4's q/k norm, which HF calls an L2 norm; Gemma 4's value heads and router)."""
    x32 = at_least_f32(x)
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x)


class UnscaledRMSNorm(nn.Module):
    """`unit_rms_norm` as a module: y = x / sqrt(mean(x^2) + eps) (Gemma 4's value heads and
    router input)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unit_rms_norm(x, self.eps)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def make_norm(config: Config, dim: int | None = None) -> nn.Module:
    """The model's norm at width `dim` (default d_model), as the config asks."""
    dim = config.d_model if dim is None else dim
    if config.norm == "layernorm":
        return LayerNorm(dim, config.norm_eps, bias=config.norm_bias)
    return RMSNorm(dim, config.norm_eps, unit_offset=config.norm_unit_offset)
