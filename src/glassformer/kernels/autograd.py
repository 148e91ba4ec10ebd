"""The differentiable native kernels: causal attention, GELU-tanh and the head's cross-entropy.

Autograd functions over the C kernels of `attention.c`, `activations.c` and `xent.c`, plus the
rule for which tensors they take (`native_ok`, `causal_attention_supported`,
`gelu_tanh_supported`). The core model reaches them only through `glassformer.kernels.dispatch`,
which holds PyTorch's equivalents and says why each kernel exists; the inference modules call
`causal_attention` for a prefill. Measured against PyTorch by `benchmarks/train_kernels.py`,
`benchmarks/prefill_attention.py` and `benchmarks/head.py`.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from glassformer.kernels import library, threads

# Longest sequence for the native causal kernel. Each block of 24 queries keeps its scores against
# all T keys in cache, while PyTorch's flash kernel tiles the keys, so the kernel's margin over
# SDPA narrows as T grows, the backward's first: beyond this length the training step gains
# nothing. `python benchmarks/prefill_attention.py --lengths 2048 4096` measures the forward.
CAUSAL_MAX_T = 2048


def native_ok(*tensors: torch.Tensor) -> bool:
    """Whether the kernels may take these tensors: float32 on the CPU, not being traced by
    torch.compile (which sees only PyTorch's ops), and the library built."""
    return (
        all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
        and not torch.compiler.is_compiling()  # ctypes calls cannot be traced
        and library() is not None
    )


def _causal_shape_problem(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """What keeps q [B, H, T, D], k, v [B, HK, T, D] from the kernel's layout, or None."""
    if q.dim() != 4 or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        return f"need q [B, H, T, D] and k, v [B, HK, T, D], got {tuple(q.shape)}, {tuple(k.shape)}"
    if q.shape[-1] % 16:
        return f"need D % 16 == 0, got D = {q.shape[-1]}"
    if q.shape[2] != k.shape[2] or q.shape[1] % k.shape[1]:
        return f"need as many keys as queries and HK | H, got {tuple(q.shape)}, {tuple(k.shape)}"
    if any(t.stride(-1) != 1 for t in (q, k, v)):
        return "need a unit stride in the last dimension"
    return None


def causal_attention_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether `causal_attention` takes q [B, H, T, D], k, v [B, HK, T, D] (and is faster than
    SDPA for them: up to CAUSAL_MAX_T positions)."""
    return (
        _causal_shape_problem(q, k, v) is None and q.shape[2] <= CAUSAL_MAX_T and native_ok(q, k, v)
    )


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> torch.Tensor:
    """softmax(scale q k^T + causal mask) v for q [B, H, T, D] and k, v [B, HK, T, D] (HK
    divides H: grouped KV heads; float32, any strides with a contiguous last dimension, D % 16
    == 0), returned as [B, T, H * D] contiguous (the output projection's input). Differentiable;
    without autograd recording (inference) the forward keeps nothing for a backward."""
    problem = _causal_shape_problem(q, k, v)
    if problem is not None:
        raise ValueError(f"causal_attention: {problem}")
    return _CausalAttention.apply(q, k, v, scale)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        lib = library()
        assert lib is not None
        b, h, t, d = q.shape
        hk = k.shape[1]
        out = torch.empty(b, t, h * d)
        needs_grad = any(ctx.needs_input_grad[:3])  # type: ignore[attr-defined]
        lse = torch.empty(b, h, t) if needs_grad else None
        lib.attn_prefill(  # arguments as in kernels.SIGNATURES["attn_prefill"]
            q.data_ptr(), *q.stride()[:3],
            k.data_ptr(), *k.stride()[:3],
            v.data_ptr(), *v.stride()[:3],
            b, h, hk, t, d, scale,
            out.data_ptr(), None if lse is None else lse.data_ptr(), threads(),
        )  # fmt: skip
        if needs_grad:
            ctx.save_for_backward(q, k, v, out, lse)
            ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable  # the kernels' gradients carry no graph: a double backward errors
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        lib = library()
        assert lib is not None
        q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        b, h, t, d = q.shape
        hk = k.shape[1]
        grad_out = grad_out.contiguous()
        # Written as [B, T, heads, D]: the layout of the projections' outputs, so the views
        # back to [B, heads, T, D] cost nothing and the projections' backward reads them as is.
        dq = torch.empty(b, t, h, d)
        dk = torch.empty(b, t, hk, d)
        dv = torch.empty(b, t, hk, d)
        lib.attn_backward(  # arguments as in kernels.SIGNATURES["attn_backward"]
            q.data_ptr(), *q.stride()[:3],
            k.data_ptr(), *k.stride()[:3],
            v.data_ptr(), *v.stride()[:3],
            out.data_ptr(), grad_out.data_ptr(), lse.data_ptr(),
            b, h, hk, t, d, ctx.scale,  # type: ignore[attr-defined]
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), threads(),
        )  # fmt: skip
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2), None


def gelu_tanh_supported(x: torch.Tensor) -> bool:
    return x.is_contiguous() and native_ok(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) for a contiguous float32 CPU tensor."""
    return _GeluTanh.apply(x)


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor
    ) -> torch.Tensor:
        lib = library()
        assert lib is not None
        y = torch.empty_like(x)
        lib.gelu_tanh(x.data_ptr(), y.data_ptr(), x.numel(), threads())
        ctx.save_for_backward(x)
        return y

    @staticmethod
    @once_differentiable  # the kernels' gradients carry no graph: a double backward errors
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_y: torch.Tensor
    ) -> torch.Tensor:
        lib = library()
        assert lib is not None
        (x,) = ctx.saved_tensors  # type: ignore[attr-defined]
        grad_y = grad_y.contiguous()
        grad_x = torch.empty_like(x)
        lib.gelu_tanh_backward(x.data_ptr(), grad_y.data_ptr(), grad_x.data_ptr(), x.numel(),
                               threads())  # fmt: skip
        return grad_x


def softmax_cross_entropy_(
    z: torch.Tensor, labels: torch.Tensor, ignore: int, grad: bool
) -> torch.Tensor:
    """Per-row cross-entropy of logits z [slices, rows, width] (row i's logits are z[:, i, :]
    in order; float32, contiguous) against int64 labels [rows] (`ignore` rows count 0); with
    `grad`, z is overwritten by dL/dz = softmax(z) - onehot(label) (zero for ignored rows).
    Labels must lie in [0, slices * width) or equal `ignore`: the caller checks."""
    lib = library()
    assert lib is not None and z.is_contiguous() and labels.dtype == torch.int64
    slices, rows, width = z.shape
    labels = labels.contiguous()
    loss = torch.empty(rows)
    lib.xent_rows(z.data_ptr(), rows, slices, width, rows * width, labels.data_ptr(), ignore,
                  int(grad), loss.data_ptr(), threads())  # fmt: skip
    return loss
