"""Text generation: sampling (`sampling.py`), the KV-cached decode loop (`generate.py`) and
`load`, which turns a model name or path into a ready (model, tokenizer) pair."""

from __future__ import annotations

import os

import torch

from glassformer.generation.generate import Generation, GenerationConfig, generate
from glassformer.generation.sampling import SamplingConfig, process_logits, sample

__all__ = [
    "Generation",
    "GenerationConfig",
    "SamplingConfig",
    "generate",
    "load",
    "process_logits",
    "sample",
]


def load(name_or_path: str | os.PathLike[str], dtype: torch.dtype = torch.float32):
    """(Transformer, Tokenizer) for a model name (`smollm2-135m-instruct`, `gemma-3-270m`),
    a `.gguf` file or an HF model directory."""
    from glassformer.loaders.resolve import load_model, resolve
    from glassformer.tokenizer import load_tokenizer

    path = resolve(name_or_path)
    return load_model(path, dtype), load_tokenizer(path)
