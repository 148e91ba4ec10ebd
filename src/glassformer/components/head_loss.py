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

On the CPU in float32 two more things are done (`kernels/xent.c`): the logits are computed one
vocabulary slice at a time, as [slices, tokens, slice width] (MKL runs a product with 8k output
columns and a 384-long inner dimension at ~120 GFLOP/s here, slices of ~1k columns at ~170),
and softmax, loss and gradient are one kernel that keeps each row in cache through its three
passes. Everywhere else (GPU, bf16 autocast, soft-capping) the same steps are PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import nn

from glassformer.kernels.autograd import native_ok, softmax_cross_entropy_

IGNORE = -100
# Tokens per chunk: GEMMs of 512 rows run at full speed here (256 rows lose ~10%), and a
# chunk's logits stay small next to the batch's (512 x 262k vocabulary = 0.5 GB in float32).
CHUNK_TOKENS = 512
# Vocabulary slice width for the CPU path: the largest divisor of the vocabulary in this range
# (2048 for 8k, 1733 for GPT-2's 50257); a vocabulary without one is a single slice.
SLICE_RANGE = (512, 2048)


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
    slices = _slices(h, weight, softcap)
    for s in range(0, h.shape[0], chunk):
        total += _chunk(h[s : s + chunk], weight, y[s : s + chunk], softcap, slices, False)[0]
    return total


def _compute_dtype(h: torch.Tensor, device: torch.device) -> torch.dtype:
    """The dtype autocast would run the head's matmul in (bf16 under bf16 autocast)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return h.dtype


def _slices(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> int | None:
    """How many vocabulary slices the native kernel computes the logits in, or None where the
    kernel cannot run (PyTorch ops then compute all the logits at once)."""
    if softcap is not None or _compute_dtype(h, h.device) != torch.float32 or not native_ok(h, w):
        return None
    vocab = w.shape[0]
    low, high = SLICE_RANGE
    width = next((n for n in range(min(high, vocab), low - 1, -1) if vocab % n == 0), vocab)
    return vocab // width


def _chunk(
    h: torch.Tensor,
    w: torch.Tensor,
    y: torch.Tensor,
    softcap: float | None,
    slices: int | None,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(loss sum of the chunk, dL/dz of the chunk as [slices, tokens, vocab / slices] in w's
    dtype, or None without grad)."""
    if slices is not None:  # the native kernel (float32 CPU, no soft-capping)
        z = torch.empty(slices, h.shape[0], w.shape[0] // slices)
        wb = w.view(slices, -1, w.shape[1])
        torch.bmm(h.expand(slices, *h.shape), wb.transpose(1, 2), out=z)
        loss = softmax_cross_entropy_(z, y, IGNORE, grad).sum()
        return loss, z if grad else None
    z = (h @ w.t()).float()
    tanh = None
    if softcap is not None:
        tanh = torch.tanh(z / softcap)
        z = tanh * softcap
    valid = y != IGNORE
    target = y.clamp(min=0).unsqueeze(1)
    picked = z.gather(1, target).squeeze(1)
    top = z.amax(1, keepdim=True)
    probs = z.sub_(top).exp_()  # softmax numerators, in place of the logits
    total = probs.sum(1, keepdim=True)
    lse = top.squeeze(1) + total.log().squeeze(1)
    loss = torch.where(valid, lse - picked, 0.0).sum()
    if not grad:
        return loss, None
    # dL/dz = softmax - onehot on counted rows, 0 on ignored ones: scale each row once.
    probs.mul_(torch.where(valid, 1.0 / total.squeeze(1), 0.0).unsqueeze(1))
    probs.scatter_add_(1, target, -valid.to(probs.dtype).unsqueeze(1))
    if tanh is not None:
        probs.mul_(1.0 - tanh * tanh)  # d(c tanh(z / c)) / dz
    return loss, probs.to(w.dtype).unsqueeze(0)


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
            slices = _slices(hc, wc, softcap)
            n_slices = slices or 1
            w_sliced = wc.view(n_slices, -1, wc.shape[1])
            grad_w_sliced = None if grad_w is None else grad_w.view(n_slices, -1, wc.shape[1])
            for s in range(0, h.shape[0], chunk):
                h_part = hc[s : s + chunk]
                part, dz = _chunk(h_part, wc, y[s : s + chunk], softcap, slices, True)
                assert dz is not None
                loss += part
                if grad_h is not None:  # dL/dh = sum over slices of dL/dz_slice W_slice
                    torch.mm(dz[0], w_sliced[0], out=grad_h[s : s + chunk])
                    for b in range(1, n_slices):
                        grad_h[s : s + chunk].addmm_(dz[b], w_sliced[b])
                if grad_w_sliced is not None:  # the first chunk writes, the others add
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
