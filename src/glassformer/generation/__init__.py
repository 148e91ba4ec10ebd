"""Text generation: sampling (`sampling.py`), the KV-cached decode loop (`generate.py`) and
`load`, which turns a model name or path into a ready (model, tokenizer) pair."""

from __future__ import annotations

import os

import torch

from glassformer.generation.generate import (
    Generation,
    GenerationConfig,
    NonFiniteLogitsError,
    generate,
    grow_cache,
)
from glassformer.generation.sampling import SamplingConfig, process_logits, sample

__all__ = [
    "Generation",
    "GenerationConfig",
    "NonFiniteLogitsError",
    "SamplingConfig",
    "generate",
    "grow_cache",
    "load",
    "process_logits",
    "sample",
]


def load(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    quant: str | None = None,
):
    """(Transformer, Tokenizer) for a model name (`smollm2-135m-instruct`, `gemma-3-270m`),
    a `.gguf` file or an HF model directory.

    `quant` (see `glassformer.inference`): None = the plain model, the one to read, train,
    export and compare against (a slow decoder: every module runs through PyTorch); "none" =
    float32 with fused modules and the native decode step, the same function several times
    faster (`glassformer generate`'s default); "int8" / "int4" = weight-only quantised linear
    layers (a GGUF's Q4/Q8 blocks are mapped directly, without a float32 copy of the model).
    """
    from glassformer.loaders.resolve import check_tokenizer, load_model, resolve
    from glassformer.tokenizer import load_tokenizer

    path = resolve(name_or_path)
    tokenizer = load_tokenizer(path)
    check_tokenizer(path, tokenizer)  # before any weight is read
    if quant is None:
        return load_model(path, dtype), tokenizer
    from glassformer.inference import QUANT_MODES, optimize

    if quant not in QUANT_MODES:
        raise ValueError(f"quant: expected one of {', '.join(QUANT_MODES)}, got {quant!r}")
    if quant != "none" and path.is_file():
        from glassformer.inference.gguf_direct import load_gguf_quantized

        model = load_gguf_quantized(path, quant)
    else:
        model = optimize(load_model(path, dtype), quant, inplace=True)
    return model, tokenizer
