"""LoRA: low-rank adaptation of frozen weights (Hu et al. 2021, "LoRA: Low-Rank Adaptation of
Large Language Models").

A target linear layer y = W x + b (W: d_out x d_in, frozen) gets a trainable low-rank update

    y = W x + b + (alpha / r) * B A dropout(x),     A: r x d_in,  B: d_out x r,  r << d_in

A starts as Kaiming-uniform noise and B as zeros, so training starts from the pretrained
function exactly; only r (d_in + d_out) numbers per layer are learned (and kept in optimizer
state). Merging folds the update into the weight, W' = W + (alpha / r) B A, after which the
model is a plain Transformer again with no inference cost; with dropout off (eval mode) the
merged and unmerged models compute the same function (up to float rounding).

Targets are module-name suffixes: by default the attention query and value projections (the
paper's choice); "all-linear" adapts every linear layer in the blocks (QLoRA's advice,
Dettmers et al. 2023). The LoRA factors live next to the weight (`...q_proj.lora_A`), so the
frozen weights keep their names and checkpoints of the adapter alone stay small.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DEFAULT_TARGETS",
    "LoRALinear",
    "apply_lora",
    "load_adapter",
    "lora_state_dict",
    "merge_lora",
    "save_adapter",
]

DEFAULT_TARGETS = ("q_proj", "v_proj")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    """An nn.Linear (same `weight`, `bias`) plus the low-rank update (alpha/r) B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        if rank < 1:
            raise ValueError(f"lora rank: must be >= 1, got {rank}")
        nn.Module.__init__(self)  # skip nn.Linear's allocation: the weights are the base's
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(
            torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device)
        )
        self.lora_B = nn.Parameter(
            torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device)
        )
        # nn.Linear's own init for A (Kaiming-uniform with a = sqrt(5)), as in the paper's code.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scaling

    def merged_weight(self) -> torch.Tensor:
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling
        return (self.weight.float() + delta).to(self.weight.dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
            f"rank={self.rank}, alpha={self.alpha}"
        )


def _targets(targets: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    names = tuple(targets)
    if names == ("all-linear",) or names == ("all",):
        return ALL_LINEAR
    return names


def apply_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    targets: Iterable[str] | str = DEFAULT_TARGETS,
    freeze: bool = True,
) -> list[str]:
    """Freeze `model` and put LoRA on every nn.Linear whose name ends with a target suffix.

    Returns the adapted module names. Raises when nothing matches (a typo in `targets`).
    """
    suffixes = _targets(targets)
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    adapted = []
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if (
            isinstance(module, nn.Linear)
            and not isinstance(module, LoRALinear)
            and (leaf in suffixes)
        ):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, leaf, LoRALinear(module, rank, alpha, dropout))
            adapted.append(name)
    if not adapted:
        raise ValueError(f"lora targets {list(suffixes)} match no linear layer of the model")
    return adapted


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight and put plain nn.Linear layers back (in place)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            w = module.weight
            plain = nn.Linear(
                module.in_features,
                module.out_features,
                bias=module.bias is not None,
                device=w.device,
                dtype=w.dtype,
            )
            plain.weight.copy_(module.merged_weight())
            if module.bias is not None:
                plain.bias.copy_(module.bias)
            plain.weight.requires_grad_(w.requires_grad)
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, plain)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().cpu()
        for k, v in model.state_dict().items()
        if k.endswith((".lora_A", ".lora_B"))
    }


def _lora_config(model: nn.Module) -> dict[str, object]:
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    if not mods:
        raise ValueError("the model has no LoRA layers")
    first = mods[0][1]
    return {
        "format": "glassformer-lora",
        "rank": first.rank,
        "alpha": first.alpha,
        "dropout": getattr(first.dropout, "p", 0.0),
        "targets": sorted({n.rsplit(".", 1)[-1] for n, _ in mods}),
        "modules": [n for n, _ in mods],
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """adapter_model.safetensors (the A and B factors) + adapter_config.json."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = _lora_config(model)
    tensors = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> list[str]:
    """Apply LoRA as `adapter_config.json` says and load the saved factors."""
    from safetensors.torch import load_file

    src = Path(directory)
    config = json.loads((src / "adapter_config.json").read_text())
    adapted = apply_lora(
        model,
        int(config["rank"]),
        float(config["alpha"]),
        float(config.get("dropout", 0.0)),
        config["targets"],
    )
    state = load_file(str(src / "adapter_model.safetensors"))
    _missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{src}: adapter tensors {unexpected[:5]} do not fit the model")
    return adapted
