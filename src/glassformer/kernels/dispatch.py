"""Which implementation computes each of the core model's heavy steps: the one place that chooses.

The components call one function per step and never a kernel:

    attention(q, k, v, mask, scale=..., softcap=..., sinks=..., impl=...)  attention.py, mla.py
    gelu_tanh(x)                                                 components/mlp.py (the activation)
    logits_cross_entropy(h, w, labels, ignore, softcap, grad)    components/head_loss.py
    gated_delta_step(q, k, v, g, beta, state, impl=...)          components/gated_deltanet.py
    chunk_gated_delta(q, k, v, g, beta, state, chunk, impl=...)  components/gated_deltanet.py

Each function here picks glassformer's own C kernel (`glassformer.kernels.autograd`) where it
applies (float32 tensors on the CPU, the library built, not being traced by `torch.compile`) and
PyTorch's ops otherwise; both compute the same function, and the tests hold them against each
other and against float64 (`tests/core/test_native_routes.py`, `tests/core/test_head_loss.py`,
`tests/kernels`). `GLASSFORMER_KERNELS=reference` (or no C compiler, or a CPU without AVX2)
leaves only PyTorch's ops.

Why each kernel exists, and the benchmark that measures it against the PyTorch call it replaces:

- Causal attention (`kernels/attention.c`). PyTorch's CPU flash kernel takes keys in blocks of
  up to 512, so below 512 positions it scores every key and masks half of them away; the native
  kernel scores, per block of 24 queries, only the keys the block can see, forward and backward.
  `benchmarks/train_kernels.py` (one training layer's worth), `benchmarks/prefill_attention.py`
  (by sequence length; it sets `CAUSAL_MAX_T`).
- GELU-tanh (`kernels/activations.c`): x / (1 + e^(-2u)) with one exp per element where PyTorch
  evaluates a tanh; also more accurate for negative x, where 1 + tanh(u) cancels.
  `benchmarks/train_kernels.py`.
- The head's cross-entropy (`kernels/xent.c`). The logits of a chunk are computed one vocabulary
  slice at a time, as [slices, tokens, slice width] (MKL runs products with a few thousand output
  columns faster than one with the whole vocabulary), and softmax, loss and gradient are one
  kernel that keeps each row in cache through its three passes, where PyTorch's amax, sub, exp,
  sum, mul and scatter each stream the chunk through memory. `benchmarks/head.py`.
- Gated DeltaNet's decoding step (`kernels/delta.c`, wrapper `kernels/delta_rule.py`). Per head
  the step reads the state once for M^T k and M^T q and rewrites it while it is in cache, one
  call and one parallel region for all heads where PyTorch's step is a dozen calls, each
  streaming the state or synchronising the threads. `benchmarks/linear_attention.py`.
- Gated DeltaNet's chunked form (prefill), same files. The loop over chunks is, per chunk, four
  products with the state and a few elementwise passes: in PyTorch nine calls, each a parallel
  region over all heads, where the kernel lets each thread carry whole heads through every
  chunk with the state in cache. The chunks' triangular solves are forward substitutions in one
  call (LAPACK's batched solve takes a call per 64 x 64 matrix). The batched products stay
  PyTorch's. `benchmarks/linear_attention.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glassformer.kernels import autograd as kernels
from glassformer.kernels import delta_rule

# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------

ATTENTION_IMPLS = ("native", "sdpa", "eager")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    scale: float,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    impl: str = "native",
) -> torch.Tensor:
    """softmax(softcap(scale q k^T) + mask) v over grouped KV heads.

    q [B, H, T, D], k [B, HK, S, D], v [B, HK, S, Dv] (HK divides H); mask [T, S] or
    [B, 1, T, S] bool (True = visible), or None for plain causal attention over S == T keys.
    Returns [B, H, T, Dv].

    `impl` (set per model by `Transformer.set_attention_impl`):
    "eager" spells the math out (`eager_attention`; what FLOP counters see); "sdpa" calls
    PyTorch's fused kernel; "native" (the default) is "sdpa" except for plain causal attention
    the native kernel takes (`kernels.autograd.causal_attention_supported`), which runs it.
    Soft-capping needs the scores, so it always runs eager; so does a single query row on the
    CPU (decoding), where PyTorch's CPU flash kernel has a large fixed cost per call and the
    explicit product is a pair of tiny matmuls.

    `sinks` [H] (attention sinks, gpt-oss): one more logit per head in every softmax row,
    dropped afterwards, a_ij = exp(s_ij) / (exp(sink_h) + sum_j exp(s_ij)). Eager appends it as
    a score column. The fused path (also what "native" takes: the causal kernel has no sinks),
    on the CPU without gradients, runs PyTorch's CPU flash kernel, which also returns each row's
    log-sum-exp L = log sum_j exp(s_ij), and rescales its output by
    sum_j exp(s_ij) / (exp(sink_h) + sum_j exp(s_ij)) = sigmoid(L - sink_h). That kernel's L
    carries no gradient, so with gradients (or off the CPU) SDPA gets one more key of zeros
    with a zero value and the sink as that key's additive mask entry: its softmax then
    includes the sink, gradients and all, at the price of a per-head [T, S + 1] mask.
    `benchmarks/attention_sinks.py` times the three routes with sinks against each other.
    """
    if (
        impl == "native"
        and mask is None
        and softcap is None
        and sinks is None
        and kernels.causal_attention_supported(q, k, v)
    ):
        b, h, t, d = q.shape
        return kernels.causal_attention(q, k, v, scale).view(b, t, h, d).transpose(1, 2)
    fused = impl in ("native", "sdpa")
    if fused and softcap is None and (q.shape[-2] > 1 or q.device.type != "cpu"):
        if sinks is not None:
            return _sdpa_with_sinks(q, k, v, mask, scale, sinks)
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None,
            scale=scale,
            enable_gqa=q.shape[1] // k.shape[1] > 1,
        )
    return eager_attention(q, k, v, mask, scale, softcap, sinks)


def _sdpa_with_sinks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    sinks: torch.Tensor,
) -> torch.Tensor:
    """Attention with sinks on the fused kernels (see `attention`): the CPU flash kernel's
    output rescaled by sigmoid(L - sink) without gradients; otherwise SDPA over the keys plus
    one zero key whose score is the sink (scale q . 0 + sink) and whose zero value adds
    nothing to the output."""
    grads = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, sinks))
    if q.device.type == "cpu" and not grads and cpu_flash_attention is not None:
        return _cpu_flash_with_sinks(q, k, v, mask, scale, sinks)
    h, t, s = q.shape[1], q.shape[2], k.shape[2]
    k = torch.cat((k, k.new_zeros(*k.shape[:2], 1, k.shape[-1])), dim=-2)
    v = torch.cat((v, v.new_zeros(*v.shape[:2], 1, v.shape[-1])), dim=-2)
    if mask is None:
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    visible = mask.view(-1, 1, t, s)
    bias = torch.zeros(visible.shape, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~visible, float("-inf")).expand(visible.shape[0], h, t, s)
    sink = sinks.to(q.dtype).view(1, h, 1, 1).expand(visible.shape[0], h, t, 1)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=torch.cat((bias, sink), dim=-1),
        scale=scale,
        enable_gqa=h // k.shape[1] > 1,
    )


def _cpu_flash_with_sinks(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    sinks: torch.Tensor,
) -> torch.Tensor:
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # this kernel takes no grouped heads
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    bias = None
    if mask is not None:  # an additive mask in q's dtype: [T, S] or [B, 1, T, S]
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device)
        bias = bias.masked_fill(~mask, float("-inf"))
    out, lse = cpu_flash_attention(q, k, v, 0.0, mask is None, attn_mask=bias, scale=scale)
    # a row with every key hidden has out = 0 (and L = 0): it stays 0, as with the sink column
    keep = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))
    return out * keep.unsqueeze(-1).to(out.dtype)


# PyTorch's CPU flash attention, which returns the rows' log-sum-exp with the output (a private
# op: where a PyTorch build lacks it, the zero-key route serves)
cpu_flash_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """`attention` as explicit matmuls and a softmax (float32 softmax for lower-precision q);
    the sinks, when given, as one more score column that the softmax sees and the product with
    v does not."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask is None:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is not None:
        sink = sinks.to(scores.dtype).view(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
        probs = torch.softmax(torch.cat((scores, sink), dim=-1).float(), dim=-1)[..., :-1]
        return torch.matmul(probs.to(q.dtype), v)
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    return torch.matmul(probs, v)


# ---------------------------------------------------------------------------------------------
# Gated DeltaNet: one decoding step of the gated delta rule
# ---------------------------------------------------------------------------------------------


def gated_delta_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor,
    impl: str = "native",
) -> torch.Tensor:
    """One token of the gated delta rule, `state` advanced in place; arguments and result as
    `components.gated_deltanet.recurrent_gated_delta_rule`. The native kernel for float32 CPU
    tensors outside autograd when `impl` is "native", that PyTorch step otherwise."""
    if impl == "native" and delta_rule.delta_step_supported(q, k, v, g, beta, state):
        return delta_rule.delta_step(q, k, v, g, beta, state)
    from glassformer.components.gated_deltanet import recurrent_gated_delta_rule  # no cycle

    return recurrent_gated_delta_rule(q, k, v, g, beta, state)


def chunk_gated_delta(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None,
    chunk: int,
    impl: str = "native",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked form over a sequence; arguments and result as
    `components.gated_deltanet.chunk_gated_delta_rule`. The native kernels for float32 CPU
    tensors outside autograd when `impl` is "native", that PyTorch form otherwise."""
    if impl == "native" and delta_rule.delta_chunked_supported(
        q, k, v, g, beta, state, chunk=chunk
    ):
        return delta_rule.delta_chunked(q, k, v, g, beta, state, chunk)
    from glassformer.components.gated_deltanet import chunk_gated_delta_rule  # no cycle

    return chunk_gated_delta_rule(q, k, v, g, beta, state, chunk)


# ---------------------------------------------------------------------------------------------
# Activation
# ---------------------------------------------------------------------------------------------


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))). The native kernel
    for contiguous float32 CPU tensors, `F.gelu(approximate="tanh")` otherwise."""
    if kernels.gelu_tanh_supported(x):
        return kernels.gelu_tanh(x)
    return F.gelu(x, approximate="tanh")


# ---------------------------------------------------------------------------------------------
# The head's cross-entropy, one chunk of tokens
# ---------------------------------------------------------------------------------------------

# Vocabulary slice width for the native path: the largest divisor of the vocabulary in this range
# (2048 for 8k, 1733 for GPT-2's 50257); a vocabulary without one is a single slice.
SLICE_RANGE = (512, 2048)
_SLICE_WIDTH: dict[int, int] = {}  # by vocabulary size, found once


def vocab_slices(h: torch.Tensor, w: torch.Tensor, softcap: float | None) -> int | None:
    """How many vocabulary slices the native path computes the logits h w^T in, or None where it
    does not run: soft-capping, a product autocast would run below float32, or tensors the
    kernels do not take (PyTorch's ops then compute all the logits at once)."""
    if softcap is not None or not kernels.native_ok(h, w):
        return None
    device = h.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) != torch.float32:
        return None
    vocab = w.shape[0]
    if vocab not in _SLICE_WIDTH:
        low, high = SLICE_RANGE
        divisors = (n for n in range(min(high, vocab), low - 1, -1) if vocab % n == 0)
        _SLICE_WIDTH[vocab] = next(divisors, vocab)
    return vocab // _SLICE_WIDTH[vocab]


def logits_cross_entropy(
    h: torch.Tensor,
    w: torch.Tensor,
    labels: torch.Tensor,
    ignore: int,
    softcap: float | None,
    grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For one chunk of tokens h [rows, d] against the head w [vocab, d] and int64 labels [rows]
    (rows labelled `ignore` count 0): the summed cross-entropy of z = softcap(h w^T), and with
    `grad` dL/dz = softmax(z) - onehot(label) as [slices, rows, vocab / slices] in w's dtype
    (else None). `vocab_slices` says how many slices: one on PyTorch's ops."""
    slices = vocab_slices(h, w, softcap)
    if slices is not None:
        z = torch.empty(slices, h.shape[0], w.shape[0] // slices)
        wb = w.view(slices, -1, w.shape[1])
        torch.bmm(h.expand(slices, *h.shape), wb.transpose(1, 2), out=z)
        loss = kernels.softmax_cross_entropy_(z, labels, ignore, grad).sum()
        return loss, z if grad else None
    z = (h @ w.t()).float()
    tanh = None
    if softcap is not None:
        tanh = torch.tanh(z / softcap)
        z = tanh * softcap
    valid = labels != ignore
    target = labels.clamp(min=0).unsqueeze(1)
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
