"""Every importance measure of a model in one pass over calibration data, as a `Scores`.

    scores = compute_importance(model, windows)      # windows: [n, seq_len] token ids
    scores.heads        [n_layers, n_heads]           gradient head importance (Michel et al.)
    scores.neurons      [n_layers, d_ff]              MLP neurons (activation-weighted magnitude)
    scores.experts      [n_layers, n_experts]         routing frequency
    scores.layers       [n_layers]                    Block Influence (ShortGPT)
    scores.embedding    [d_model]                     residual-stream channels (Minitron)

plus head_entropy and head_confidence [n_layers, n_heads], expert_gate_mass [n_layers,
n_experts] and expert_channels [n_layers, n_experts, moe_d_ff]. Higher is more important for
every score except head_entropy (a description of the head, not a ranking). NaN marks a unit a
layer does not have (the heads of a linear-attention layer, the neurons of an MoE layer, the
channels past a narrower layer's width), so every tensor has the same shape for every layer.

Each calibration window runs forward with the head mask, the hooks of the other measures and
the spelled-out attention (whose weights the entropy and confidence read), then backward from
the sum of the windows' mean losses to the head mask only: the weights get no gradient.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.compression.attention_maps import AttentionMaps
from glassformer.compression.block_influence import BlockInfluence
from glassformer.compression.embedding_channels import EmbeddingChannels
from glassformer.compression.experts import ExpertUsage
from glassformer.compression.head_confidence import HeadConfidence
from glassformer.compression.head_entropy import HeadEntropy
from glassformer.compression.head_gradient import HeadGradient
from glassformer.compression.neurons import ExpertChannels, Neurons

MEASURES = ("heads", "attention", "neurons", "experts", "layers", "embedding")

_TENSORS = (
    "heads",
    "head_entropy",
    "head_confidence",
    "neurons",
    "experts",
    "expert_gate_mass",
    "expert_channels",
    "layers",
    "embedding",
)


@dataclass
class Scores:
    """Importance scores of one model (see the module docstring for shapes); a measure that was
    not computed, or that the model has no units for (experts of a dense model), is None."""

    heads: torch.Tensor | None = None
    head_entropy: torch.Tensor | None = None
    head_confidence: torch.Tensor | None = None
    neurons: torch.Tensor | None = None
    experts: torch.Tensor | None = None
    expert_gate_mass: torch.Tensor | None = None
    expert_channels: torch.Tensor | None = None
    layers: torch.Tensor | None = None
    embedding: torch.Tensor | None = None
    tokens: int = 0  # calibration tokens the scores were averaged over
    meta: dict[str, Any] = field(default_factory=dict)  # model name, seq_len, seed, ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tensors as nested lists, NaN as null."""
        out: dict[str, Any] = {"tokens": self.tokens, "meta": self.meta}
        for name in _TENSORS:
            t = getattr(self, name)
            out[name] = None if t is None else _nan_to_none(t.tolist())
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scores:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"scores: unknown fields {sorted(unknown)}")
        kwargs: dict[str, Any] = {"tokens": int(data.get("tokens", 0))}
        kwargs["meta"] = dict(data.get("meta") or {})
        for name in _TENSORS:
            v = data.get(name)
            kwargs[name] = None if v is None else torch.tensor(_none_to_nan(v), dtype=torch.float32)
        return cls(**kwargs)

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The scores as JSON text; written atomically to `path` when given."""
        text = json.dumps(self.to_dict())
        if path is not None:
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike[str]) -> Scores:
        """From JSON text or a file written by `to_json`."""
        s = str(text_or_path)
        text = s if s.lstrip().startswith("{") else Path(s).read_text()
        return cls.from_dict(json.loads(text))


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, list):
        return [_nan_to_none(x) for x in v]
    return None if isinstance(v, float) and math.isnan(v) else v


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_to_nan(x) for x in v]
    return float("nan") if v is None else v


def compute_importance(
    model: nn.Module,
    windows: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    tokenizer: Any = None,
    tokens: int = 4096,
    seq_len: int = 256,
    seed: int = 0,
    measures: Sequence[str] = MEASURES,
    batch_size: int = 4,
    progress: Callable[[str, int, int], None] | None = None,
) -> Scores:
    """The scores of `model` over calibration `windows` ([n, seq_len] token ids, or a list of
    [b, seq_len] batches); without windows, over `tokens` tokens of the default corpus encoded
    by `tokenizer` (`calibration.calibration_windows`, in windows of `seq_len`, document order
    seeded by `seed`). `measures`: which of MEASURES to compute ("attention": entropy and
    confidence; the others as named), fewer for speed. `progress(stage, done, total)` is called
    after each batch."""
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"measures: unknown {unknown}, expected some of {', '.join(MEASURES)}")
    if windows is None:
        if tokenizer is None:
            raise ValueError("windows: give calibration windows, or a tokenizer to cut them")
        from glassformer.compression.calibration import calibration_windows

        windows = calibration_windows(tokenizer, tokens, seq_len, seed)
    batches = list(windows.split(batch_size)) if torch.is_tensor(windows) else list(windows)
    if not batches or batches[0].dim() != 2 or batches[0].shape[1] < 2:
        raise ValueError("windows: expected token ids [n, seq_len] with n >= 1, seq_len >= 2")
    config = model.config
    parts: list[Any] = []
    if "heads" in measures:
        parts.append(HeadGradient(model))
    maps = [HeadEntropy(model), HeadConfidence(model)] if "attention" in measures else []
    parts += maps
    if "neurons" in measures:
        parts.append(Neurons(model))
        if config.n_experts:
            parts.append(ExpertChannels(model))
    if "experts" in measures and config.n_experts:
        parts.append(ExpertUsage(model))
    if "layers" in measures:
        parts.append(BlockInfluence(model))
    if "embedding" in measures:
        parts.append(EmbeddingChannels(model))
    backward = any(getattr(p, "needs_backward", False) for p in parts)

    was_training = model.training
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    tokens = 0
    try:
        for p in grads:
            p.requires_grad_(False)
        with ExitStack() as stack:
            for p in parts:
                if hasattr(p, "attach"):
                    p.attach(stack)
            if maps:
                stack.enter_context(AttentionMaps(model, maps))
            for k, ids in enumerate(batches):
                for p in parts:
                    if hasattr(p, "before"):
                        p.before(ids)
                with torch.set_grad_enabled(backward):
                    labels = torch.full_like(ids, -100)
                    labels[:, :-1] = ids[:, 1:]
                    # sum over windows of each window's mean loss
                    loss = model(ids, labels=labels) / (ids.shape[1] - 1)
                if backward:
                    loss.backward()
                for p in parts:
                    if hasattr(p, "after_backward"):
                        p.after_backward()
                tokens += ids.numel()
                if progress is not None:
                    progress("importance", k + 1, len(batches))
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)
        model.train(was_training)
    found: dict[str, torch.Tensor] = {}
    for p in parts:
        found.update(p.result())
    found["heads"] = found.pop("head_gradient", None)
    found["experts"] = found.pop("expert_frequency", None)
    return Scores(**{k: v for k, v in found.items() if v is not None}, tokens=tokens)
