"""What defines a training run: `TrainConfig`, saved as OUT/train_config.json and in every
checkpoint, and `TrainingDiverged`, the error a non-finite loss or gradient norm raises."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from glassformer.training.schedule import SCHEDULES

__all__ = ["TrainConfig", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as OUT/train_config.json and in checkpoints)."""

    out: str = "runs/run"
    preset: str | None = "tiny"
    config: str | None = None  # a Config JSON file (overrides preset)
    data: str | None = None  # prepared data dir; None: the default corpus (cached)
    tokenizer: str | None = None  # tokenizer.json for preparing the default corpus
    vocab_size: int | None = None  # of the tokenizer trained for the default corpus
    seq_len: int = 256
    batch_size: int = 16  # global: sequences per optimizer step, over all ranks
    micro_batch_size: int | None = None  # per rank and forward pass; None: batch / ranks
    max_steps: int = 200
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: 5% of max_steps (at least 1 when max_steps > 1)
    decay_fraction: float = 0.2  # wsd: share of the run spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0: off
    dtype: str = "auto"  # auto (bf16 on GPUs that have it, else fp32) | fp32 | bf16
    device: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    fsdp: bool = False
    eval_every: int = 100  # 0: only at the end
    eval_batches: int = 8  # global batches of validation samples per evaluation
    eval_at_start: bool = False  # also evaluate before the first step (fine-tuning baselines)
    sample_tokens: int = 48  # per eval; 0: no samples
    sample_prompt: str = "def "
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    resume: bool = False
    # start a new run in OUT although it holds another run's checkpoints (they are moved aside)
    force: bool = False
    stop_after: int | None = None  # leave after this many steps (checkpointed), to resume later
    tensorboard: bool = False
    telemetry_every: int = 0  # spectral telemetry into metrics.jsonl every N steps (0: off)
    balance_weight: float = 0.0  # weight of the 1:1-rule balance regulariser (0: off)
    progress: bool = True
    export: bool = True  # write OUT/final (HF directory + tokenizer) at the end
    init_std: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("seq_len", "batch_size", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype: expected auto, fp32 or bf16, got {self.dtype!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
