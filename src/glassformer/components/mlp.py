"""Position-wise feed-forward networks.

Classic MLP (Vaswani et al. 2017; GPT-2):   y = W_down act(W_up x + b_up) + b_down
Gated linear unit (Shazeer 2020, "GLU Variants Improve Transformer"):
    y = W_down ( act(W_gate x) * (W_up x) )
with act = SiLU (SwiGLU: Llama, Qwen, Mistral, DeepSeek) or GELU-tanh (GeGLU: Gemma).
Clamped SwiGLU (gpt-oss, OpenAI 2025 model card), with g = W_gate x + b_gate, u = W_up x + b_up:
    g' = min(g, limit),  u' = clamp(u, -limit, limit)
    y = W_down ( (u' + offset) * g' sigmoid(alpha g') ) + b_down  (alpha 1.702, limit 7, offset 1)
which is SwiGLU at alpha = 1, no limit, offset 0 (Config.glu_alpha, glu_limit, glu_up_offset).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.config import Config
from glassformer.kernels.dispatch import gelu_tanh


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function named by `Config.activation` (GELU-tanh: `kernels.dispatch`)."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return gelu_tanh
    if name == "silu":
        return F.silu
    if name == "relu":
        return F.relu
    raise ValueError(f"activation: unknown activation {name!r}")


def glu_fn(config: Config) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(gate, up) -> act(gate) * up, in the config's GLU variant (the dense MLP and the
    experts share it)."""
    act = activation_fn(config.activation)
    alpha, limit, offset = config.glu_alpha, config.glu_limit, config.glu_up_offset
    if alpha == 1.0 and limit is None and offset == 0.0:
        return lambda gate, up: act(gate) * up

    def clamped(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        if limit is not None:
            gate = gate.clamp(max=limit)
            up = up.clamp(-limit, limit)
        return (up + offset) * (gate * torch.sigmoid(gate * alpha))

    return clamped


class MLP(nn.Module):
    def __init__(self, config: Config, d_ff: int | None = None) -> None:
        super().__init__()
        d, f = config.d_model, d_ff or config.d_ff
        self.gated = config.mlp == "glu"
        self.gate_proj = nn.Linear(d, f, bias=config.mlp_bias) if self.gated else None
        self.up_proj = nn.Linear(d, f, bias=config.mlp_bias)
        self.down_proj = nn.Linear(f, d, bias=config.mlp_bias)
        self.act = activation_fn(config.activation)
        self.glu = glu_fn(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.glu(self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(self.act(self.up_proj(x)))
