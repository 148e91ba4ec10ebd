"""Training from scratch and fine-tuning.

- `bpe_trainer`: byte-level BPE tokenizer training -> HF-compatible `tokenizer.json`.
- `data`: documents -> memory-mapped token shards + manifest; deterministic batches.
- `schedule`: warmup + cosine / warmup-stable-decay learning-rate schedules.
- `config`: `TrainConfig`, what defines a run.
- `tasks`: what the loop trains on (the LM task on token shards; the default corpus).
- `optim`: AdamW with decay on matrices, the schedule, the compute precision.
- `trainer`: setup and the loop (accumulation, clipping, compile, activation checkpointing).
- `evaluate`: validation loss and samples. `mfu`: model FLOPs, peaks, tokens/s and MFU.
- `metrics`: metrics.jsonl, TensorBoard and the progress bar.
- `checkpoint`: atomic checkpoint files and run identities; `checkpoint_manager`: a run's
  state in and out of them (start, resume, prune).
- `distributed`: DDP and FSDP2 under torchrun.
- `lora`, `sft`, `classify`: fine-tuning (LoRA adapters, chat SFT with assistant-only loss,
  last-token classification).
- `plot`: loss / perplexity / LR curves to PNG.

    from glassformer.training import TrainConfig, train
    summary = train(TrainConfig(preset="tiny", max_steps=100, out="runs/tiny"))
"""

from glassformer.training.trainer import TrainConfig, Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]
