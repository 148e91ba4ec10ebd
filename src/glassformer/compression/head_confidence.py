"""Head confidence (Voita, Talbot, Moiseev, Sennrich & Titov 2019, "Analyzing Multi-Head
Self-Attention: Specialized Heads Do the Heavy Lifting, the Rest Can Be Pruned", section 4):

    conf_h = E_{x, i} [ max_j a_ij ]

the average of the largest weight a head gives in each attention row. Voita et al. found that
the heads that matter most (by layer-wise relevance propagation and by the cost of removing
them) are mostly confident ones: positional heads, syntactic heads, rare-token heads. They
exclude the end-of-sentence token, where unused heads park their attention; in a decoder-only
model that place is taken by the first token (an attention sink), which is why a high
confidence on its own is not proof of a useful head. Queries seeing a single key are left out
(`attention_maps`).
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.compression.head_mask import attention_layers


class HeadConfidence:
    needs_attention_maps = True

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.total = torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64)
        self.rows = torch.zeros(c.n_layers, dtype=torch.float64)
        self.layers = attention_layers(model)

    def __call__(self, layer: int, a: torch.Tensor) -> None:
        self.total[layer] += a.amax(-1).sum((0, 2)).double()
        self.rows[layer] += a.shape[0] * a.shape[2]

    def result(self) -> dict[str, torch.Tensor]:
        out = torch.full_like(self.total, float("nan"))
        out[self.layers] = self.total[self.layers] / self.rows[self.layers, None].clamp_min(1)
        return {"head_confidence": out.float()}
