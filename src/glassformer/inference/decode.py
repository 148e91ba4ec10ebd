"""The lean decode loop: one static cache, last-position logits, an optionally compiled step.

    prefill:  logits = f(t_1 .. t_T)[T]        one batched forward, GEMMs; fills the cache
    step:     logits = f(t_{n+1} | cache)      one token per row: matrix-vector products

The cache (`Transformer.new_cache`) is allocated once per `Decoder` and reused after `reset()`,
so a step allocates only its activations. `decode_step` is the function a step runs; with
`compile=True` it is wrapped in `torch.compile` (dynamic shapes: the attended prefix grows by
one each step, which would otherwise recompile every step), and if compiling fails (no C++
compiler, an unsupported op) the eager function is used instead, with a warning.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from glassformer.components.kv_cache import KVCache
from glassformer.inference import native
from glassformer.inference.optimize import InferenceTransformer
from glassformer.model import Transformer

StepFn = Callable[[Transformer, torch.Tensor, KVCache], torch.Tensor]


def decode_step(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """tokens [B] (or [B, 1]) continuing the cached sequences -> logits [B, vocab]."""
    ids = tokens.reshape(-1, 1)
    if isinstance(model, InferenceTransformer):
        return model(ids, cache, last_only=True)[:, -1]
    return model(ids, cache)[:, -1]


def prefill(model: Transformer, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """input_ids [B, T] -> logits [B, vocab] of the last position (cache filled)."""
    if isinstance(model, InferenceTransformer):
        return model(input_ids, cache, last_only=True)[:, -1]
    return model(input_ids, cache)[:, -1]


def compiled_step(fallback: StepFn = decode_step) -> StepFn:
    """`decode_step` under torch.compile, falling back to eager on the first failure."""
    if native.available():
        native.custom_ops()  # registered before tracing, so the graph can hold the kernels
    try:
        compiled = torch.compile(fallback, dynamic=True)
    except Exception as err:  # any failure means: run eager
        warnings.warn(f"torch.compile unavailable ({err}); decoding eagerly", stacklevel=2)
        return fallback
    state = {"fn": compiled}

    def step(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        try:
            return state["fn"](model, tokens, cache)
        except Exception as err:
            if state["fn"] is fallback:
                raise
            warnings.warn(f"torch.compile failed ({err}); decoding eagerly", stacklevel=2)
            state["fn"] = fallback
            return fallback(model, tokens, cache)

    return step


@dataclass
class DecodeResult:
    tokens: list[list[int]]
    prefill_seconds: float
    decode_seconds: float
    step_seconds: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = len(self.step_seconds)
        return steps * len(self.tokens) / self.decode_seconds if self.decode_seconds else 0.0


class Decoder:
    """Greedy decoding with a reusable static cache.

    dec = Decoder(optimize(model, quant="int4"), max_seq_len=1024)
    out = dec.greedy([[1, 2, 3]], max_new_tokens=32)
    """

    def __init__(
        self,
        model: Transformer,
        batch_size: int = 1,
        max_seq_len: int | None = None,
        compile: bool | None = None,
    ) -> None:
        self.model = model
        self.cache = model.new_cache(batch_size, max_seq_len)
        if compile is None:
            compile = bool(getattr(model, "compile_decode", False))
        self.step_fn: StepFn = compiled_step() if compile else decode_step

    def reset(self) -> None:
        self.cache.reset()

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        return prefill(self.model, input_ids, self.cache)

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.step_fn(self.model, tokens, self.cache)

    @torch.inference_mode()
    def greedy(self, prompts: list[list[int]], max_new_tokens: int) -> DecodeResult:
        """Greedy continuation of equal-length prompts (no padding), timing each phase."""
        self.reset()
        ids = torch.tensor(prompts, dtype=torch.long)
        start = time.perf_counter()
        logits = self.prefill(ids)
        prefill_seconds = time.perf_counter() - start
        token = logits.argmax(-1)
        out = [[int(t)] for t in token]
        steps: list[float] = []
        start = time.perf_counter()
        for _ in range(max_new_tokens - 1):
            t0 = time.perf_counter()
            token = self.step(token).argmax(-1)
            for row, t in zip(out, token.tolist(), strict=True):
                row.append(t)
            steps.append(time.perf_counter() - t0)
        return DecodeResult(out, prefill_seconds, time.perf_counter() - start, steps)
