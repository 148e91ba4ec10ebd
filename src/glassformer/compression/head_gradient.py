"""Head importance by the gradient of a head mask (Michel, Levy & Neubig 2019, "Are Sixteen
Heads Really Better than One?", eq. 2):

    I_h = E_x | dL(x) / dxi_h |   at xi = 1

where xi_h multiplies head h's output (`head_mask.HeadMask`) and L(x) is the mean next-token
loss of sequence x. To first order, L(xi_h = 0) - L(xi_h = 1) ~ -dL/dxi_h, so I_h estimates how
much the loss would move if the head were removed, from one backward pass instead of one forward
pass per head. The absolute value is taken per sequence, before averaging, as the paper does: a
head that helps some sequences and hurts others is still important. Michel et al. normalise the
scores of each layer by their l2 norm before pruning across layers; `Scores` keeps them raw.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn

from glassformer.compression.head_mask import HeadMask, attention_layers


class HeadGradient:
    """Accumulates sum_x |dL(x)/dxi| over the sequences of the calibration passes."""

    needs_backward = True

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.masker = HeadMask(model)
        self.total = torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64)
        self.sequences = 0
        self.rows = attention_layers(model)

    def attach(self, stack: ExitStack) -> None:
        stack.enter_context(self.masker)

    def before(self, input_ids: torch.Tensor) -> None:
        c = self.masker
        b = input_ids.shape[0]
        self.masker.mask = torch.ones(c.n_layers, b, c.n_heads, requires_grad=True)

    def after_backward(self) -> None:
        grad = self.masker.mask.grad
        if grad is not None:  # None: no head reached the loss (no attention layer)
            self.total += grad.detach().abs().sum(1).double()
        self.sequences += self.masker.mask.shape[1]
        self.masker.mask = None

    def result(self) -> dict[str, torch.Tensor]:
        out = torch.full_like(self.total, float("nan"))
        out[self.rows] = self.total[self.rows] / max(self.sequences, 1)
        return {"head_gradient": out.float()}
