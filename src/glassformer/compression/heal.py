"""Healing a pruned model by knowledge distillation from the unpruned one (Hinton et al. 2015,
"Distilling the Knowledge in a Neural Network"; as Minitron heals its pruned models: Muralidharan
et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation").

At every position t of a window of the default corpus the student (pruned) learns the
teacher's (unpruned) next-token distribution, at temperature T:

    L_t = T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) )
        + w * mean_i (h_student,i - h_teacher,i)^2        (optional: final hidden states)

T^2 keeps the gradient's size independent of T. The hidden-state term matches the residual
stream before the final norm (the pruned model keeps the teacher's width, so the two are
comparable). The run is an ordinary training run of `training.Trainer` (checkpoints, resume,
metrics.jsonl), with `DistillTask` as its task.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from glassformer.training.tasks import LMTask


class DistillTask(LMTask):
    """Windows of prepared token shards (as `LMTask`), with the teacher's distribution as the
    target. The loss is the summed per-position KL (+ the hidden-state term); the extra metric
    "ce" is the student's next-token cross-entropy on the same tokens."""

    def __init__(
        self,
        teacher: nn.Module,
        data_dir: str | os.PathLike[str],
        seq_len: int,
        seed: int,
        temperature: float = 1.0,
        hidden_weight: float = 0.0,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        if not hidden_weight >= 0:
            raise ValueError(f"hidden_weight: must be >= 0, got {hidden_weight}")
        super().__init__(data_dir, seq_len, seed)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = temperature
        self.hidden_weight = hidden_weight

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids, labels = batch["input_ids"], batch["labels"]
        teacher = self.teacher.to(ids.device)
        with torch.no_grad():
            t_hidden, _, _ = teacher.hidden_states(ids)
            t_logits = teacher.head(teacher.final_norm(t_hidden)).float()
        captured: list[torch.Tensor] = []
        inner = getattr(model, "module", model)  # DDP wraps the model
        hook = None
        if self.hidden_weight:
            hook = inner.final_norm.register_forward_hook(
                lambda module, args, out: captured.append(args[0])
            )
        try:
            s_logits = model(ids).float()
        finally:
            if hook is not None:
                hook.remove()
        t = self.temperature
        log_p_t = F.log_softmax(t_logits / t, dim=-1)
        log_p_s = F.log_softmax(s_logits / t, dim=-1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1) * (t * t)
        loss = kl.sum()
        if self.hidden_weight:
            mse = (captured[0].float() - t_hidden.float()).pow(2).mean(-1)
            loss = loss + self.hidden_weight * mse.sum()
        with torch.no_grad():
            ce = F.cross_entropy(s_logits.flatten(0, 1), labels.flatten(), reduction="sum")
        return loss, {"ce": ce.detach()}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].numel())


def tokenizer_json(source: Path, out_dir: Path) -> Path:
    """A tokenizer.json for the teacher's tokenizer (the corpus is prepared with it): an HF
    directory's own, or a GGUF's converted once into `out_dir`."""
    if source.is_dir() and (source / "tokenizer.json").is_file():
        return source / "tokenizer.json"
    if source.suffix == ".gguf":
        target = out_dir / "tokenizer"
        if not (target / "tokenizer.json").is_file():
            from glassformer.hf.export import gguf_tokenizer_files

            gguf_tokenizer_files(source, target)
        return target / "tokenizer.json"
    raise ValueError(f"{source}: no tokenizer.json to prepare the healing corpus with")


def heal(
    teacher: nn.Module,
    student: nn.Module,
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    tokens: int,
    *,
    seed: int = 0,
    hidden_weight: float = 0.0,
    temperature: float = 1.0,
    seq_len: int = 256,
    batch_size: int = 8,
    lr: float = 3e-4,
    data: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Distil `teacher` into `student` (trained in place) on `tokens` tokens of the default
    corpus (prepared once with the teacher's tokenizer, cached), or of prepared shards `data`.
    Checkpoints go to `out_dir`; running again with the same arguments resumes there. Returns
    the training summary (loss = mean KL per token; ce = the student's cross-entropy)."""
    from glassformer.training.config import TrainConfig
    from glassformer.training.tasks import default_data_dir
    from glassformer.training.trainer import Trainer

    if tokens < 1:
        raise ValueError(f"tokens: must be >= 1, got {tokens}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        vocab = teacher.config.vocab_size
        data = default_data_dir(vocab, str(tokenizer_json(Path(source), out)))
    steps = max(1, math.ceil(tokens / (batch_size * seq_len)))
    tc = TrainConfig(
        out=str(out),
        preset=None,
        data=str(data),
        seq_len=seq_len,
        batch_size=batch_size,
        max_steps=steps,
        lr=lr,
        warmup_steps=min(steps - 1, max(1, steps // 20)) if steps > 1 else 0,
        weight_decay=0.0,
        eval_every=0,
        eval_batches=4,
        sample_tokens=0,
        checkpoint_every=max(1, steps // 10),
        keep_checkpoints=2,
        seed=seed,
        resume=True,
        stop_after=stop_after,
        progress=progress,
        export=False,
        extra={"distill": {"temperature": temperature, "hidden_weight": hidden_weight}},
    )
    task = DistillTask(teacher, data, seq_len, seed, temperature, hidden_weight)
    trainer = Trainer(tc, model=student, task=task, model_config=student.config)
    try:
        summary = trainer.train()
    finally:
        from glassformer.training.distributed import cleanup

        cleanup(trainer.info)
    student.eval()
    return {
        k: summary.get(k)
        for k in ("status", "steps", "tokens", "loss", "first_loss", "seconds", "out", "val_loss")
        if k in summary
    }
