"""The optimizer, its learning-rate schedule and the compute precision of a run.

AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):

    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
    theta -= lr_t * ( m_hat / (sqrt(v_hat) + eps) + wd * theta )

with weight decay on matrices only (not norms, biases), the fused kernel where PyTorch has one
(CUDA, CPU), and the warmup + cosine or warmup-stable-decay schedules of `schedule.py`.
bf16 autocast runs the matmuls in bfloat16 where the device supports it (master weights and
the loss stay float32).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glassformer.training.config import TrainConfig
from glassformer.training.schedule import make_scheduler

__all__ = ["autocast_dtype", "make_optimizer", "make_schedule", "param_groups", "warmup_steps"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (and embeddings); not norms, biases or other vectors, nor parameters
    marked `no_weight_decay` (the static weights of cross-layer connections, whose init is the
    identity connection, not zero)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        matrix = p.dim() >= 2 and not getattr(p, "no_weight_decay", False)
        (decay if matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = param_groups(model, tc.weight_decay)
    kwargs: dict[str, Any] = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps)
    if device.type in ("cuda", "cpu") and not _has_dtensor(model):
        # One fused kernel for all parameters: no per-tensor Python loop.
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=device.type != "cpu" or None, **kwargs)


def _has_dtensor(model: nn.Module) -> bool:
    return any(hasattr(p, "device_mesh") for p in model.parameters())


def warmup_steps(tc: TrainConfig) -> int:
    """`tc.warmup_steps`, or 5% of the run (at least 1 step when it has more than one)."""
    if tc.warmup_steps is not None:
        return tc.warmup_steps
    return max(1, round(0.05 * tc.max_steps)) if tc.max_steps > 1 else 0


def make_schedule(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> Any:
    return make_scheduler(
        optimizer, tc.max_steps, warmup_steps(tc), tc.schedule, tc.min_lr_ratio,
        tc.decay_fraction,
    )  # fmt: skip


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    if tc.dtype == "fp32":
        return None
    if tc.dtype == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on CPU: fp32 (bf16 CPU matmuls are slow without AMX/AVX512-BF16)
