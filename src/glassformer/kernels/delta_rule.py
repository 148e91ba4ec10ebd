"""The gated delta rule's decoding step in C (`delta.c`), for Gated DeltaNet layers.

`glassformer.kernels.dispatch.gated_delta_step` chooses it over the component's PyTorch step
(`components/gated_deltanet.recurrent_gated_delta_rule`), which computes the same function:
one token, float32 on the CPU, outside autograd (the state is updated in place). Measured by
`benchmarks/linear_attention.py`; held to the PyTorch step by `tests/core/test_gated_deltanet.py`.
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
