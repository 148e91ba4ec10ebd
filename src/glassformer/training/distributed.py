"""Data-parallel training on PyTorch's own distributed engine: DDP and FSDP2.

Under `torchrun --nproc-per-node N`, every process runs the same training command; torchrun
sets RANK, WORLD_SIZE and LOCAL_RANK, and `init_distributed` joins the process group (NCCL on
GPUs, gloo on CPU). Each optimizer step consumes one *global* batch of B sequences, which the
ranks split evenly; gradients are averaged across ranks, so

    g = 1/N sum_{tokens t in the global batch} grad loss_t

is the same number whatever the world size (up to the order of floating-point additions), and
2 processes reproduce the losses of 1 process with the same global batch.

- DDP (Li et al. 2020, "PyTorch Distributed"): every rank holds the whole model; gradients are
  all-reduced in buckets during the backward pass (skipped with `no_sync` on all but the last
  micro-batch of a gradient-accumulation step).
- FSDP2 (`torch.distributed.fsdp.fully_shard`; Zhao et al. 2023, "PyTorch FSDP", in the
  per-parameter DTensor form of PyTorch 2.4+): each Transformer block and then the root are
  sharded, so parameters, gradients and optimizer state are split across ranks (ZeRO-3,
  Rajbhandari et al. 2020); a block's parameters are all-gathered just before it runs and its
  gradients reduce-scattered after. Checkpoints gather a full state dict on rank 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "full_state",
    "init_distributed",
    "load_full_state",
    "no_sync",
    "unwrap",
    "wrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return DistInfo(device=dev)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank, world, local_rank, dev, backend)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks (in place; returns the tensor)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_model(model: nn.Module, info: DistInfo, fsdp: bool = False) -> nn.Module:
    """DDP, or FSDP2 over each block then the root; a single process gets the model back."""
    if not info.enabled:
        if fsdp:
            raise ValueError("--fsdp needs several processes: launch with torchrun")
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        layers = getattr(model, "layers", None)
        if layers is None:  # a wrapper (classifier) around a Transformer
            layers = model.backbone.layers  # type: ignore[union-attr]
        for block in layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP and torch.compile wrappers (FSDP2 modifies in place)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


@contextlib.contextmanager
def no_sync(model: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce for micro-batches before the last of an accumulation."""
    base = model._orig_mod if hasattr(model, "_orig_mod") else model
    if skip and isinstance(base, nn.parallel.DistributedDataParallel):
        with base.no_sync():
            yield
    elif skip and hasattr(base, "set_requires_gradient_sync"):  # FSDP2
        base.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            base.set_requires_gradient_sync(True)
    else:
        yield


def is_fsdp(model: nn.Module) -> bool:
    return hasattr(unwrap(model), "set_requires_gradient_sync")


def full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    info: DistInfo,
    trainable_only: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(model state, optimizer state) as full CPU tensors, complete on rank 0.

    FSDP2 shards are gathered with torch.distributed.checkpoint's state-dict API (collective:
    every rank must call). Otherwise the plain state dicts are used, which keeps the optimizer
    state exactly as `Optimizer.load_state_dict` wants it.
    """
    base = unwrap(model)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        msd = get_model_state_dict(base, options=opts)
        osd = get_optimizer_state_dict(base, optimizer, options=opts) if optimizer else None
    else:
        msd = {k: v.detach().cpu() for k, v in base.state_dict().items()}
        osd = optimizer.state_dict() if optimizer is not None else None
    if trainable_only:
        names = {n for n, p in base.named_parameters() if p.requires_grad}
        msd = {k: v for k, v in msd.items() if k in names}
    return msd, osd


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    info: DistInfo,
    strict: bool = True,
) -> None:
    base = unwrap(model)
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, strict=strict)
        set_model_state_dict(base, model_state, options=opts)
        if optimizer is not None and optimizer_state is not None:
            set_optimizer_state_dict(base, optimizer, optimizer_state, options=opts)
        return
    missing, unexpected = base.load_state_dict(model_state, strict=False)
    if unexpected or (strict and missing):
        raise ValueError(
            f"checkpoint does not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    if optimizer is not None and optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
