"""The LM head and its cross-entropy as one Triton program whose logits never reach memory.

    z_iv = epilogue(h_i . w_v)             epilogue: z -> c tanh(z / c) (soft-cap, Gemma 2)
    L    = sum_{i: y_i != ignore} [ logsumexp_v z_iv - z_{i, y_i} ]
    dL/dz_iv = g (softmax(z_i)_v - [v = y_i]) epilogue'(h_i . w_v)     (0 on ignored rows)
    dL/dh_i  = sum_v dL/dz_iv w_v ,   dL/dw_v = sum_i dL/dz_iv h_i

Cut Cross-Entropy (Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language
Models"): the forward walks the vocabulary in tiles of BLOCK_V columns for a block of BLOCK_M
rows, forms each [BLOCK_M, BLOCK_V] tile of logits in registers (a GEMM over d in BLOCK_D
steps), applies the epilogue, and folds the tile into a running max and sum of exponentials
(the online softmax of Milakov & Gimelshein 2018) and into the target logit. Memory receives
one float per row (the logsumexp) and one per row of loss. The backward recomputes each tile
from h, W and the stored logsumexp, forms dL/dz in registers, and adds dz W into dL/dh and
dz^T h into dL/dW (float32 atomics: every (row block, vocabulary tile) program contributes to
both). Peak memory is therefore the inputs, the float32 gradients and 2 floats per row, against
tokens x vocabulary logits (and their gradient, and the float32 log-softmax) for
`cross_entropy(h W^T)`.

The semantics are those of `glassformer.components.head_loss.linear_cross_entropy` (the CPU
path's chunked C loss): a float32 sum over rows whose label is not IGNORE, optional final-logit
soft-capping, gradients in the dtypes of h and W. The GEMMs accumulate in float32 from the
inputs' dtype (bf16 in, float32 accumulate, as cuBLAS does).

This is the kernel of the IR's LM-head node (`fusion/head.py`, which also counts its traffic
for the explorer). The kernels run on a GPU, or on the CPU under Triton's interpreter
(`TRITON_INTERPRET=1`, set before triton is imported), which is how the tests check them
against PyTorch.
"""

from __future__ import annotations

import os

import torch

try:  # triton is optional: the model never needs it, `fuse(model)` and the tests do
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None

from glassformer.components.head_loss import IGNORE

__all__ = [
    "available",
    "linear_cross_entropy_triton",
    "tile_sizes",
    "use_for_training_loss",
]


def available() -> bool:
    """Whether the kernels can run here: triton imported, and a GPU or the interpreter."""
    return triton is not None and (
        torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"
    )


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def tile_sizes(device: torch.device, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_V, BLOCK_D). On a GPU, tiles an H100's tensor cores keep busy; under the
    interpreter (numpy, one program at a time), small tiles (`tl.dot` takes 16 and up), so odd
    test shapes cross several tiles in every dimension."""
    if device.type != "cuda":
        return 16, 64, 32
    if dtype == torch.float32:
        return 64, 64, 32
    return 64, 128, 64


if triton is not None:

    @triton.jit
    def _tanh(x):
        # tanh from exp, which the interpreter and every GPU have: sign(x) (1 - e) / (1 + e),
        # e = exp(-2|x|), which never overflows
        e = tl.exp(-2.0 * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(x < 0, -t, t)

    @triton.jit
    def _dot(a, b, acc, DOT_F32: tl.constexpr):
        """a @ b + acc, accumulated in float32. DOT_F32 widens the operands first: exact for
        bf16 (a product of two 8-bit significands fits float32's 24), and what the interpreter
        needs (its numpy dot mis-reads bf16 operands)."""
        if DOT_F32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        return tl.dot(a, b, acc, input_precision="ieee")

    @triton.jit
    def _load_tile(ptr, idx, n, stride, ds, width):
        """The [len(idx), len(ds)] tile of the [n, width] matrix at ptr (row stride `stride`),
        zero outside it."""
        return tl.load(
            ptr + idx[:, None] * stride + ds[None, :],
            mask=(idx[:, None] < n) & (ds[None, :] < width),
            other=0.0,
        )

    @triton.jit
    def _logit_tile(
        h_ptr,
        w_ptr,
        rows,
        cols,
        n_rows,
        vocab,
        width,
        stride_h,
        stride_w,
        DOT_F32: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """h[rows] . w[cols]^T as a float32 [BLOCK_M, BLOCK_V] tile (zero outside the matrix)."""
        acc = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
        for d0 in range(0, width, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            h = _load_tile(h_ptr, rows, n_rows, stride_h, ds, width)
            w = _load_tile(w_ptr, cols, vocab, stride_w, ds, width)
            acc = _dot(h, tl.trans(w), acc, DOT_F32)
        return acc

    @triton.jit
    def _forward_kernel(
        h_ptr,
        w_ptr,
        y_ptr,
        lse_ptr,
        loss_ptr,
        n_rows,
        vocab,
        width,
        stride_h,
        stride_w,
        softcap,
        ignore,
        SOFTCAP: tl.constexpr,
        DOT_F32: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        in_rows = rows < n_rows
        y = tl.load(y_ptr + rows, mask=in_rows, other=ignore)
        top = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)
        picked = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for v0 in range(0, vocab, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            z = _logit_tile(
                h_ptr,
                w_ptr,
                rows,
                cols,
                n_rows,
                vocab,
                width,
                stride_h,
                stride_w,
                DOT_F32,
                BLOCK_M,
                BLOCK_V,
                BLOCK_D,
            )
            if SOFTCAP:  # the epilogue, spliced between the GEMM and the reduction
                z = softcap * _tanh(z / softcap)
            z = tl.where(cols[None, :] < vocab, z, float("-inf"))
            picked += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)
            # Online softmax: rescale the running sum to the new running max.
            new_top = tl.maximum(top, tl.max(z, axis=1))
            total = total * tl.exp(top - new_top) + tl.sum(tl.exp(z - new_top[:, None]), axis=1)
            top = new_top
        lse = top + tl.log(total)
        tl.store(lse_ptr + rows, lse, mask=in_rows)
        tl.store(loss_ptr + rows, tl.where(y != ignore, lse - picked, 0.0), mask=in_rows)

    @triton.jit
    def _backward_kernel(
        h_ptr,
        w_ptr,
        y_ptr,
        lse_ptr,
        grad_ptr,
        dh_ptr,
        dw_ptr,
        n_rows,
        vocab,
        width,
        stride_h,
        stride_w,
        softcap,
        ignore,
        SOFTCAP: tl.constexpr,
        NEED_H: tl.constexpr,
        NEED_W: tl.constexpr,
        DOT_F32: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_V: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        in_rows = rows < n_rows
        in_cols = cols < vocab
        y = tl.load(y_ptr + rows, mask=in_rows, other=ignore)
        lse = tl.load(lse_ptr + rows, mask=in_rows, other=0.0)
        g = tl.load(grad_ptr)
        u = _logit_tile(
            h_ptr,
            w_ptr,
            rows,
            cols,
            n_rows,
            vocab,
            width,
            stride_h,
            stride_w,
            DOT_F32,
            BLOCK_M,
            BLOCK_V,
            BLOCK_D,
        )
        if SOFTCAP:
            t = _tanh(u / softcap)
            z = softcap * t
        else:
            z = u
        p = tl.where(in_cols[None, :], tl.exp(z - lse[:, None]), 0.0)
        dz = p - tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
        dz = dz * tl.where(y != ignore, g, 0.0)[:, None]
        if SOFTCAP:
            dz = dz * (1.0 - t * t)  # d(c tanh(u / c)) / du
        dz = dz.to(h_ptr.dtype.element_ty)  # the GEMMs' input dtype, as the forward's
        zero_h = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        zero_w = tl.zeros((BLOCK_V, BLOCK_D), dtype=tl.float32)
        for d0 in range(0, width, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            in_ds = ds < width
            if NEED_H:
                w = _load_tile(w_ptr, cols, vocab, stride_w, ds, width)
                tl.atomic_add(
                    dh_ptr + rows[:, None] * width + ds[None, :],
                    _dot(dz, w, zero_h, DOT_F32),
                    mask=in_rows[:, None] & in_ds[None, :],
                )
            if NEED_W:
                h = _load_tile(h_ptr, rows, n_rows, stride_h, ds, width)
                tl.atomic_add(
                    dw_ptr + cols[:, None] * width + ds[None, :],
                    _dot(tl.trans(dz), h, zero_w, DOT_F32),
                    mask=in_cols[:, None] & in_ds[None, :],
                )


def _check_runtime() -> None:
    if not available():
        raise RuntimeError(
            "linear_cross_entropy_triton: needs triton and a CUDA device, or TRITON_INTERPRET=1 "
            "set before triton is imported (the CPU interpreter)"
        )


def _check(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
    _check_runtime()
    if h.dtype != w.dtype:
        raise ValueError(f"weight: expected the dtype of hidden ({h.dtype}), got {w.dtype}")


class _TritonLinearCrossEntropy(torch.autograd.Function):
    """Forward saves h, W and the row logsumexps; backward recomputes the logits tile by tile."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        w: torch.Tensor,
        y: torch.Tensor,
        softcap: float | None,
        tiles: tuple[int, int, int],
    ) -> torch.Tensor:
        n, d = h.shape
        vocab = w.shape[0]
        bm, bv, bd = tiles
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        loss = torch.empty(n, dtype=torch.float32, device=h.device)
        if n:
            _forward_kernel[(triton.cdiv(n, bm),)](
                h,
                w,
                y,
                lse,
                loss,
                n,
                vocab,
                d,
                h.stride(0),
                w.stride(0),
                float(softcap or 1.0),
                IGNORE,
                SOFTCAP=softcap is not None,
                DOT_F32=_interpreted(),
                BLOCK_M=bm,
                BLOCK_V=bv,
                BLOCK_D=bd,
            )
        ctx.save_for_backward(h, w, y, lse)
        ctx.softcap, ctx.tiles = softcap, tiles
        return loss.sum()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        h, w, y, lse = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        n, d = h.shape
        vocab = w.shape[0]
        bm, bv, bd = ctx.tiles
        f32 = {"dtype": torch.float32, "device": h.device}
        dh = torch.zeros(n, d, **f32) if need_h else None
        dw = torch.zeros(vocab, d, **f32) if need_w else None
        if n and (need_h or need_w):
            softcap = ctx.softcap
            grad = grad_loss.to(torch.float32).reshape(1).contiguous()
            dummy = torch.empty(1, **f32)  # the pointer of a gradient nobody asked for
            _backward_kernel[(triton.cdiv(n, bm), triton.cdiv(vocab, bv))](
                h,
                w,
                y,
                lse,
                grad,
                dummy if dh is None else dh,
                dummy if dw is None else dw,
                n,
                vocab,
                d,
                h.stride(0),
                w.stride(0),
                float(softcap or 1.0),
                IGNORE,
                SOFTCAP=softcap is not None,
                NEED_H=need_h,
                NEED_W=need_w,
                DOT_F32=_interpreted(),
                BLOCK_M=bm,
                BLOCK_V=bv,
                BLOCK_D=bd,
            )
        return (
            None if dh is None else dh.to(h.dtype),
            None if dw is None else dw.to(w.dtype),
            None,
            None,
            None,
        )


def linear_cross_entropy_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    softcap: float | None = None,
    tiles: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Sum over labels != IGNORE of cross-entropy(softcap(hidden @ weight.T), labels), float32,
    on the Triton kernels: the drop-in of `head_loss.linear_cross_entropy` that `fuse(model)`
    uses for the training loss.

    hidden [..., d], labels [...] (same leading shape), weight [vocab, d] in hidden's dtype.
    `tiles` = (BLOCK_M, BLOCK_V, BLOCK_D) overrides `tile_sizes` (powers of two, each >= 16).
    """
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(
            f"labels: expected shape {tuple(hidden.shape[:-1])} (the tokens), "
            f"got {tuple(labels.shape)}"
        )
    # Under autocast the head's GEMM runs in the autocast dtype, as `F.linear` would; the
    # casts are differentiable, so the gradients come back in the callers' dtypes.
    if torch.is_autocast_enabled(hidden.device.type):
        dtype = torch.get_autocast_dtype(hidden.device.type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    h = hidden.reshape(-1, hidden.shape[-1]).contiguous()
    w = weight.contiguous()
    _check(h, w, labels)
    y = labels.reshape(-1).to(torch.int64).contiguous()
    bad = (y != IGNORE) & ((y < 0) | (y >= w.shape[0]))
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"labels: expected token ids in [0, {w.shape[0]}) or {IGNORE} (ignored), "
            f"got {int(y[first])} at flat position {first}"
        )
    chosen = tiles or tile_sizes(h.device, h.dtype)
    if any(t < 16 or t & (t - 1) for t in chosen):
        raise ValueError(f"tiles: expected powers of two >= 16, got {chosen}")
    return _TritonLinearCrossEntropy.apply(h, w, y, softcap, tuple(chosen))


def use_for_training_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Point `model`'s training loss (`Transformer.forward(ids, labels=...)`) at the Triton
    kernels; returns the model. A wrapped head (LoRA on lm_head) keeps its unfused loss, as
    in the plain model."""
    _check_runtime()
    model.head_loss = linear_cross_entropy_triton
    return model
