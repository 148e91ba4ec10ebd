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

from glassformer.compression.attention_maps import HeadRowMean


class HeadConfidence(HeadRowMean):
    key = "head_confidence"

    def row_stat(self, a: torch.Tensor) -> torch.Tensor:
        return a.amax(-1)
