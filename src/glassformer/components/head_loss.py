"""The LM head fused with next-token cross-entropy, computed a chunk of tokens at a time.

    z_i = W h_i                   (optionally z_i = c tanh(z_i / c), final-logit soft-capping)
    L   = sum_{i: y_i != ignore} [ logsumexp_v z_iv - z_{i, y_i} ]
    dL/dz_i = softmax(z_i) - onehot(y_i)            (zero for ignored rows)
    dL/dh_i = W^T dL/dz_i ,   dL/dW = sum_i dL/dz_i h_i^T

The logits of a batch are its largest activation by far (tokens x vocabulary floats: 67 MB for
2048 tokens of an 8k vocabulary, 2 GB for Gemma's 262k), and a plain `cross_entropy(W h)`
writes them, reads them for log-softmax, writes that, then writes and reads a gradient of the
same size in the backward. Here each chunk's logits live only inside the forward: the gradient
is formed in place from them (softmax minus one-hot) and immediately multiplied into dL/dh and
dL/dW, and the backward only scales those by the incoming gradient. Same GEMMs, a few fewer
passes over memory, and peak memory of one chunk instead of the whole batch. The idea of
Liger Kernel's fused linear cross-entropy (Hsu et al. 2024) and of Cut Cross-Entropy (Wijmans
et al. 2024).

Each chunk's logits, loss and dL/dz come from one call, `logits_cross_entropy`
(`glassformer.kernels.dispatch`: on the CPU in float32 a native kernel, elsewhere PyTorch ops).
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.kernels.dispatch import logits_cross_entropy

IGNORE = -100
# Tokens per chunk: enough rows for the head's GEMMs to run at full speed (`benchmarks/head.py`
# measures the fused loss), few enough that a chunk's logits stay small next to the batch's
# (512 x 262k vocabulary = 0.5 GB in float32).
CHUNK_TOKENS = 512


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    softcap: float | None = None,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """Sum over labels != IGNORE of cross-entropy(softcap(hidden @ weight.T), labels), float32.

    hidden [..., d], labels [...] (same leading shape), weight [vocab, d]. Without autograd
    recording, only the loss is computed (chunked all the same).
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels: expected shape {tuple(hidden.shape[:-1])} (the tokens), "
            f"got {tuple(labels.shape)}"
        )
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1).long().contiguous()
    bad = (y != IGNORE) & ((y < 0) | (y >= weight.shape[0]))
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"labels: expected token ids in [0, {weight.shape[0]}) or {IGNORE} (ignored), "
            f"got {int(y[first])} at flat position {first}"
        )
    chunk = chunk_tokens or CHUNK_TOKENS
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, y, softcap, chunk)
    total = torch.zeros((), dtype=torch.float32, device=h.device)
    for s in range(0, h.shape[0], chunk):
        total += logits_cross_entropy(h[s : s + chunk], weight, y[s : s + chunk], IGNORE,
                                      softcap, grad=False)[0]  # fmt: skip
    return total


def _compute_dtype(h: torch.Tensor, device: torch.device) -> torch.dtype:
    """The dtype autocast would run the head's matmul in (bf16 under bf16 autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return h.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Gradients are formed in the forward (chunk by chunk) and scaled in the backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        weight: torch.Tensor,
        y: torch.Tensor,
        softcap: float | None,
        chunk: int,
    ) -> torch.Tensor:
        # Only the gradients autograd asks for: a frozen head (LoRA fine-tuning) skips dL/dW.
        need_h, need_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        dtype = _compute_dtype(h, h.device)
        with torch.autocast(h.device.type, enabled=False):
            hc, wc = h.to(dtype), weight.to(dtype)
            grad_h = torch.empty_like(hc) if need_h else None
            # Written by the first chunk's product; zeros only when there is no chunk.
            alloc = torch.empty if h.shape[0] else torch.zeros
            f32 = {"dtype": torch.float32, "device": weight.device}
            grad_w = alloc(weight.shape, **f32) if need_w else None
            loss = torch.zeros((), dtype=torch.float32, device=h.device)
            for s in range(0, h.shape[0], chunk):
                h_part = hc[s : s + chunk]
                part, dz = logits_cross_entropy(h_part, wc, y[s : s + chunk], IGNORE, softcap,
                                                grad=True)  # fmt: skip
                assert dz is not None
                loss += part
                n_slices = dz.shape[0]  # dL/dz comes in vocabulary slices: W is cut alike
                w_sliced = wc.view(n_slices, -1, wc.shape[1])
                if grad_h is not None:  # dL/dh = sum over slices of dL/dz_slice W_slice
                    torch.mm(dz[0], w_sliced[0], out=grad_h[s : s + chunk])
                    for b in range(1, n_slices):
                        grad_h[s : s + chunk].addmm_(dz[b], w_sliced[b])
                if grad_w is not None:  # the first chunk writes, the others add
                    grad_w_sliced = grad_w.view(n_slices, -1, wc.shape[1])
                    h_f = h_part.float()
                    for b in range(n_slices):
                        if s == 0:
                            torch.mm(dz[b].t().float(), h_f, out=grad_w_sliced[b])
                        else:
                            grad_w_sliced[b].addmm_(dz[b].t().float(), h_f)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return (
            None if grad_h is None else (grad_h * grad_loss).to(h_dtype),
            None if grad_w is None else (grad_w * grad_loss).to(w_dtype),
            None,
            None,
            None,
        )


def head_weight(lm_head: nn.Module | None, embed: nn.Embedding) -> torch.Tensor | None:
    """The [vocab, d] matrix of a plain (or tied) head; None when the head is wrapped (LoRA)."""
    if lm_head is None:
        return embed.weight
    if type(lm_head) is nn.Linear and lm_head.bias is None:
        return lm_head.weight
    return None
