"""The gated delta rule in C (`delta.c`), for Gated DeltaNet layers: the decoding step and the
chunked form.

`glassformer.kernels.dispatch` chooses them over the component's PyTorch forms
(`components/gated_deltanet.recurrent_gated_delta_rule` and `chunk_gated_delta_rule`), which
compute the same functions: float32 on the CPU, outside autograd. `delta_chunked` runs the
chunked form's batched products with PyTorch, as the component does, and its loop over chunks
in C. Measured by `benchmarks/linear_attention.py`; held to the PyTorch forms by
`tests/core/test_gated_deltanet.py`.
"""

from __future__ import annotations

import torch

from glassformer.kernels import library, threads
from glassformer.kernels.autograd import native_ok


def delta_step_supported(*tensors: torch.Tensor) -> bool:
    """One token ([B, 1, heads, dim] inputs), float32 CPU tensors, no gradient wanted."""
    return not torch.is_grad_enabled() and tensors[0].shape[1] == 1 and native_ok(*tensors)


def delta_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
) -> torch.Tensor:
    """q, k [B, 1, Hk, dk], v [B, 1, H, dv], g, beta [B, 1, H], state [B, H, dk, dv]
    (contiguous, advanced in place) -> o [B, 1, H, dv]."""
    lib = library()
    assert lib is not None and state.is_contiguous()
    b, _, hk, dk = k.shape
    h, dv = v.shape[-2:]
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    out = torch.empty_like(v)
    lib.delta_step(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), g.data_ptr(), beta.data_ptr(),
        state.data_ptr(), out.data_ptr(), b, h, hk, dk, dv, threads(),
    )  # fmt: skip
    return out


def delta_chunked_supported(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *rest: torch.Tensor | None, chunk: int
) -> bool:
    """No gradient wanted, float32 CPU tensors, and sizes the kernels' vectors and 4 x 16 tiles
    divide: chunk a multiple of 8 up to 256, d_k of 4, d_v of 16."""
    return (
        not torch.is_grad_enabled()
        and chunk % 8 == 0
        and chunk <= 256
        and k.shape[-1] % 4 == 0
        and v.shape[-1] % 16 == 0
        and native_ok(q, k, v, *(x for x in rest if x is not None))
    )


def delta_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`chunk_gated_delta_rule` (arguments, result and equations as there): the per-chunk
    matrices with PyTorch's batched products, except A, P and the triangular solve, which the C
    kernels form from the key heads' products and the decays as they read them
    (`gf_delta_solve`, `gf_delta_chunks`), and the loop over chunks in `gf_delta_chunks`."""
    from glassformer.components.gated_deltanet import chunk_major  # imported here: no cycle

    lib = library()
    assert lib is not None
    b, t, hk, dk = k.shape
    h, dv = v.shape[-2:]
    r = h // hk
    n = -(-t // chunk)

    qc, kc, vc = (chunk_major(x, chunk) for x in (q, k, v))
    gamma = chunk_major(g, chunk).cumsum(-1)  # [n, B, H, C]
    betac = chunk_major(beta, chunk)
    # per key head; the kernels apply the decays and beta per value head as they read them
    kk = kc @ kc.transpose(-1, -2)
    qk = qc @ kc.transpose(-1, -2)
    t_mat = q.new_empty(n * b * h, chunk, chunk)  # T = A^-1 diag(beta)
    t_eg = torch.empty_like(t_mat)  # T diag(exp(gamma))
    lib.delta_solve(
        kk.data_ptr(), gamma.data_ptr(), betac.data_ptr(), t_mat.data_ptr(), t_eg.data_ptr(),
        t_mat.shape[0], h, hk, chunk, threads(),
    )  # fmt: skip
    u = torch.bmm(t_mat, vc.view(-1, chunk, dv))
    # W: the r value heads of a key head stacked as one [r C, C] matrix against its K
    w = torch.bmm(t_eg.view(n * b * hk, r * chunk, chunk), kc.view(-1, chunk, dk))
    m = (
        torch.zeros(b * h, dk, dv, dtype=q.dtype, device=q.device)
        if state is None
        else state.reshape(b * h, dk, dv).to(q.dtype, copy=True).contiguous()
    )
    out = q.new_empty(b, n * chunk, h, dv)
    lib.delta_chunks(
        qc.data_ptr(), kc.data_ptr(), w.data_ptr(), u.data_ptr(), qk.data_ptr(),
        gamma.data_ptr(), m.data_ptr(), out.data_ptr(), n, b, h, hk, chunk, dk, dv, threads(),
    )  # fmt: skip
    return out[:, :t], m.view(b, h, dk, dv)
