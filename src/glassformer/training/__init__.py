"""Training from scratch and fine-tuning.

- `bpe_trainer`: byte-level BPE tokenizer training -> HF-compatible `tokenizer.json`.
- `data`: documents -> memory-mapped token shards + manifest; deterministic batches.
- `schedule`: warmup + cosine / warmup-stable-decay learning-rate schedules.
- `trainer`: the loop (AdamW, accumulation, clipping, bf16 autocast, compile, activation
  checkpointing, evaluation, samples, metrics, MFU) and `TrainConfig`.
- `checkpoint`: atomic, resumable checkpoints.
- `distributed`: DDP and FSDP2 under torchrun.
- `lora`, `sft`, `classify`: fine-tuning (LoRA adapters, chat SFT with assistant-only loss,
  last-token classification).
- `plot`: loss / perplexity / LR curves to PNG.

    from glassformer.training import TrainConfig, train
    summary = train(TrainConfig(preset="tiny", max_steps=100, out="runs/tiny"))
"""

from glassformer.training.trainer import TrainConfig, Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]
