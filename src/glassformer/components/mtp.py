"""Multi-token prediction (DeepSeek-V3, arXiv 2412.19437, section 2.2).

Depth k predicts token i+k+1 from the depth k-1 representation of token i and the embedding of
token i+k, through one extra Transformer block:
    h'_i = W_k [ RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i) ]
    h^k  = Block_k(h')            logits^k = Head(RMSNorm(h^k))
The embedding and the output head are shared with the main model. The modules only add a
training signal (and draft tokens for speculative decoding); plain inference ignores them, which
is why they are built only when asked (`Config.build_mtp`).
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.components.block import Block
from glassformer.components.norms import make_norm
from glassformer.config import Config


class MTPModule(nn.Module):
    def __init__(self, config: Config, depth: int) -> None:
        super().__init__()
        d = config.d_model
        self.embed_norm = make_norm(config)
        self.hidden_norm = make_norm(config)
        self.proj = nn.Linear(2 * d, d, bias=False)
        # It continues after the last layer and is built like it (a MoE block in DeepSeek-V3).
        self.block = Block(config, layer=config.n_layers - 1)
        self.final_norm = make_norm(config)

    def forward(
        self,
        hidden: torch.Tensor,
        next_embeddings: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (h^k for the next depth, normalised h^k for the head)."""
        h = self.proj(
            torch.cat((self.embed_norm(next_embeddings), self.hidden_norm(hidden)), dim=-1)
        )
        h = self.block(h, rope, positions)
        return h, self.final_norm(h)
