"""Validation: the mean loss over held-out samples, and a sampled continuation of a prompt.

    val_loss = sum_i loss_i / N     over the N items counted in `eval_batches` global batches

The same samples whatever the world size: the held-out samples [0, total) are split into equal,
contiguous slices per rank and the sums are all-reduced, so 1 process and N ranks report the
same number. Extra sums a task returns (a classifier's `correct`) become `val_<name>` means.
`val_ppl` = exp(val_loss) is reported unless the task sets `reports_perplexity = False` (a
preference loss is no cross-entropy, so its exponential is no perplexity).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from glassformer.training.config import TrainConfig
from glassformer.training.distributed import DistInfo, all_reduce_sum, is_fsdp, unwrap
from glassformer.training.tasks import Task

__all__ = ["eval_sample_count", "evaluate", "sample_text"]

Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


def eval_sample_count(task: Task, tc: TrainConfig, world: int) -> int:
    """Held-out samples one evaluation reads, over all ranks (0: the task has none)."""
    n = task.eval_samples()
    if n <= 0:
        return 0
    total = min(n, tc.eval_batches * tc.batch_size)
    total -= total % world
    return max(total, world)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    tc: TrainConfig,
    info: DistInfo,
    micro_batch: int,
    device: torch.device,
    autocast: Autocast,
) -> dict[str, float]:
    """{"val_loss", "val_ppl", "val_<extra>"...}, or {} when the task has no held-out split."""
    total = eval_sample_count(task, tc, info.world_size)
    if total <= 0:
        return {}
    per_rank = total // info.world_size
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    extras: dict[str, torch.Tensor] = {}
    first = info.rank * per_rank
    done = 0
    while done < per_rank:
        count = min(micro_batch, per_rank - done)
        batch = to_device(task.eval_batch(first + done, count), device)
        with autocast():
            loss_sum, extra = task.loss(model, batch)
        sums[0] += loss_sum.double()
        sums[1] += task.count(batch)
        for k, v in extra.items():
            extras[k] = extras.get(k, torch.zeros((), dtype=torch.float64, device=device))
            extras[k] += v.double()
        done += count
    model.train()
    # The loss, the count and the task's extra sums in one all-reduce.
    names = sorted(extras)
    totals = all_reduce_sum(torch.cat([sums, *(extras[k].reshape(1) for k in names)]), info)
    loss = float(totals[0] / totals[1])
    out = {"val_loss": loss}
    if getattr(task, "reports_perplexity", True):
        out["val_ppl"] = math.exp(min(loss, 50.0))
    for k, v in zip(names, totals[2:], strict=True):
        out[f"val_{k}"] = float(v / totals[1])
    return out


def sample_text(
    model: nn.Module, task: Task, tc: TrainConfig, tokenizer: Any, autocast: Autocast
) -> str | None:
    """The prompt and `tc.sample_tokens` sampled tokens after it (temperature 0.8, top-k 40,
    its own generator seeded with the run's seed: the training RNG stream is untouched), or
    None for a model that is not a language model or a run without samples."""
    if not tc.sample_tokens or tokenizer is None:
        return None
    if not hasattr(unwrap(model), "new_cache"):
        return None  # not a language model (a classifier): nothing to sample
    from glassformer.generation import GenerationConfig, generate

    sample_prompt = getattr(task, "sample_prompt", None)
    prompt = sample_prompt() if callable(sample_prompt) else tc.sample_prompt
    # Chat prompts carry special-token strings (<|im_start|>): parse them.
    ids = tokenizer.encode(prompt, add_special_tokens=False, parse_special=True)
    if not ids:
        return None
    # FSDP needs every rank in the forward (parameters are all-gathered); DDP and a single
    # process can use the plain module. All ranks generate the same text.
    net = model if is_fsdp(model) else unwrap(model)
    net.eval()
    cfg = GenerationConfig(max_new_tokens=tc.sample_tokens, temperature=0.8, top_k=40, seed=tc.seed)
    try:
        with autocast():
            result = generate(net, tokenizer, ids, cfg)
    finally:
        net.train()
    return prompt + result.text  # type: ignore[union-attr]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
