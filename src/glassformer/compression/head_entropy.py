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

from glassformer.compression.attention_maps import HeadRowMean


class HeadEntropy(HeadRowMean):
    key = "head_entropy"

    def row_stat(self, a: torch.Tensor) -> torch.Tensor:
        plogp = torch.where(a > 0, a * a.clamp_min(1e-30).log(), torch.zeros_like(a))
        return -plogp.sum(-1)
