"""Attention entropy of a head: how spread out its attention is.

    H_h = E_{x, i} [ - sum_j a_ij log a_ij ]      (a_ij: head h's weight of key j for query i)

In nats; 0 for a head that always looks at one token, log(i) for one that spreads evenly over
all it sees. Used to find heads that attend broadly and may be removable, or to characterise
heads alongside their confidence (Voita et al. 2019, "Analyzing Multi-Head Self-Attention:
Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned"; Clark et al. 2019, "What Does
BERT Look At?", who introduced the per-head attention entropy). Low entropy does not by itself
mean important: a head that attends to the first token only (an attention sink) has entropy 0.
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.compression.head_mask import attention_layers


class HeadEntropy:
    needs_attention_maps = True

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.total = torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64)
        self.rows = torch.zeros(c.n_layers, dtype=torch.float64)
        self.layers = attention_layers(model)

    def __call__(self, layer: int, a: torch.Tensor) -> None:
        """a [b, H, rows, keys]: one layer's attention weights."""
        plogp = torch.where(a > 0, a * a.clamp_min(1e-30).log(), torch.zeros_like(a))
        self.total[layer] += (-plogp.sum(-1)).sum((0, 2)).double()
        self.rows[layer] += a.shape[0] * a.shape[2]

    def result(self) -> dict[str, torch.Tensor]:
        out = torch.full_like(self.total, float("nan"))
        out[self.layers] = self.total[self.layers] / self.rows[self.layers, None].clamp_min(1)
        return {"head_entropy": out.float()}
