"""Autoregressive generation with a KV cache: prefill once, then one token per step.

    prefill:  logits_T = f(t_1 .. t_T)          (one batched forward; fills the cache)
    decode:   t_{n+1} ~ sample(logits_n);  logits_{n+1} = f(t_{n+1} | cache)
Prompts of different lengths share a batch by left padding: padded keys are masked out, so each
row computes exactly what it would alone. Text is streamed as it becomes valid UTF-8, holding
back any tail that could still grow into a stop string.

Generation ends at the model's context (`config.max_seq_len` positions, prompt included) with
finish_reason "context": past it a model with learned positions has none, and a RoPE model
sees distances it never trained on. The cache starts at what the prompt and the first
`INITIAL_NEW` tokens need and doubles when full (capped at the context), so asking for more
tokens than a reply uses costs no memory. Non-finite logits (NaN weights, an overflowing
activation) raise `NonFiniteLogitsError` instead of decoding to an arbitrary token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from glassformer.components.kv_cache import KVCache, LayerCache
from glassformer.generation.sampling import SamplingConfig, sample
from glassformer.model import Transformer

# New-token slots the first cache holds beyond the prompt; it doubles from there.
INITIAL_NEW = 256


class NonFiniteLogitsError(ValueError):
    """The model produced NaN or infinite logits: its weights or activations are broken."""


@dataclass(frozen=True)
class GenerationConfig(SamplingConfig):
    max_new_tokens: int = 128
    stop_strings: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] | None = None  # None: the tokenizer's end-of-turn ids
    ignore_eos: bool = False
    add_special_tokens: bool = True  # BOS/EOS as the tokenizer's metadata says

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens: must be >= 0, got {self.max_new_tokens}")
        if isinstance(self.stop_strings, str):
            object.__setattr__(self, "stop_strings", (self.stop_strings,))


@dataclass
class Generation:
    """One prompt's result."""

    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"  # "eos" | "stop" | "length" | "context"
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_tokens) / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # The first new token comes from the prefill; each later one costs one decode step.
        steps = max(len(self.tokens) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "prefill_tokens_per_s": self.prefill_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
        }


class _TextStream:
    """Incremental detokenisation of one row, with stop-string detection."""

    def __init__(self, tokenizer, stop_strings: Sequence[str]) -> None:
        self.tokenizer, self.stop_strings = tokenizer, tuple(s for s in stop_strings if s)
        self.hold = max((len(s) for s in self.stop_strings), default=1) - 1
        self.emitted = 0
        self.text = ""
        self.stopped = False

    def update(self, tokens: list[int], final: bool) -> str:
        """Decode all tokens; return the newly safe text to show."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        for stop in self.stop_strings:
            at = text.find(stop)
            if at != -1:
                text, self.stopped, final = text[:at], True, True
        if not final and text.endswith("\ufffd"):
            return ""  # an unfinished UTF-8 sequence: wait for the next token
        self.text = text
        safe = len(text) if final else max(len(text) - self.hold, self.emitted)
        new, self.emitted = text[self.emitted : safe], safe
        return new


@torch.inference_mode()
def generate(
    model: Transformer,
    tokenizer,
    prompts: str | Sequence[str] | Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    on_text: Callable[[int, str], None] | None = None,
    media: dict[str, torch.Tensor] | None = None,
) -> Generation | list[Generation]:
    """Generate continuations of one prompt (returns a Generation) or a batch (a list).

    `prompts` may be text or token ids. `on_text(row, text)` receives streamed text pieces.
    `media`: the multimodal keyword inputs of the prompt's prefill (`pixel_values`, ...: see
    `glassformer.multimodal.prepare`), for one prompt whose ids hold their placeholders.
    """
    config = config or GenerationConfig()
    single = isinstance(prompts, str) or (
        len(prompts) > 0 and isinstance(prompts[0], int)  # type: ignore[index]
    )
    batch_prompts = [prompts] if single else list(prompts)
    if not batch_prompts:
        return []
    ids = [
        # Special-token strings in the prompt (a rendered chat template) are parsed as tokens.
        tokenizer.encode(p, add_special_tokens=config.add_special_tokens, parse_special=True)
        if isinstance(p, str)
        else list(p)
        for p in batch_prompts
    ]
    if any(len(row) == 0 for row in ids):
        # An empty prompt, and a tokenizer that adds no BOS token of its own (SmolLM2's).
        raise ValueError("prompt: empty (it encodes to no tokens); give some text")
    results = [Generation(prompt_tokens=row) for row in ids]
    if config.max_new_tokens == 0:
        return results[0] if single else results

    stop_ids = _stop_ids(config, tokenizer)
    device = model.embed.weight.device
    batch, longest = len(ids), max(len(row) for row in ids)
    context_len = model.config.max_seq_len
    if longest >= context_len:
        raise ValueError(
            f"prompt: {longest} tokens leave no room in the model's context of "
            f"{context_len} positions"
        )
    # The whole sequence, prompt and reply, fits the context.
    new_tokens = min(config.max_new_tokens, context_len - longest)
    input_ids = torch.zeros(batch, longest, dtype=torch.long, device=device)
    mask = torch.zeros(batch, longest, dtype=torch.long, device=device)
    for b, row in enumerate(ids):
        input_ids[b, longest - len(row) :] = torch.tensor(row)
        mask[b, longest - len(row) :] = 1
    padded = bool((mask == 0).any())
    cache = model.new_cache(batch, min(longest + min(new_tokens, INITIAL_NEW), context_len))
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    streams = [_TextStream(tokenizer, config.stop_strings) for _ in range(batch)]
    done = [False] * batch

    n_text = _n_text(model, tokenizer)
    start = time.perf_counter()
    if media and (batch > 1 or padded):
        raise ValueError("media: given for one unpadded prompt only")
    logits = model(input_ids, cache, attention_mask=mask if padded else None, **(media or {}))
    logits = logits[:, -1, :n_text]
    _check_finite(logits, 0)
    prefill_seconds = time.perf_counter() - start
    for result in results:
        result.prefill_seconds = prefill_seconds
    context = input_ids.masked_fill(mask == 0, 0)  # seen tokens for the repetition penalty
    decode_start = time.perf_counter()
    for step in range(new_tokens):
        next_ids = sample(logits, context, config, generator)
        last_step = step == new_tokens - 1
        for b in range(batch):
            if done[b]:
                continue
            token = int(next_ids[b])
            if token in stop_ids:
                done[b], results[b].finish_reason = True, "eos"
            else:
                results[b].tokens.append(token)
                if last_step and new_tokens < config.max_new_tokens:
                    results[b].finish_reason = "context"
            piece = streams[b].update(results[b].tokens, final=done[b] or last_step)
            if streams[b].stopped:
                done[b], results[b].finish_reason = True, "stop"
            if piece and on_text is not None:
                on_text(b, piece)
        if all(done) or last_step:
            break
        context = torch.cat((context, next_ids[:, None]), dim=1)
        if cache.length == cache.max_seq_len:
            cache = grow_cache(model, cache, min(2 * cache.max_seq_len, context_len))
        logits = model(next_ids[:, None], cache)[:, -1, :n_text]
        _check_finite(logits, step + 1)
    decode_seconds = time.perf_counter() - decode_start
    for b, result in enumerate(results):
        result.text = streams[b].text
        result.decode_seconds = decode_seconds
    return results[0] if single else results


def _stop_ids(config: GenerationConfig, tokenizer) -> set[int]:
    """The token ids that end a reply: `stop_token_ids`, else the tokenizer's EOS ids; none
    with `ignore_eos`."""
    if config.ignore_eos:
        return set()
    return set(config.stop_token_ids if config.stop_token_ids is not None else tokenizer.eos_ids)


def _n_text(model: Transformer, tokenizer) -> int:
    """The logit columns to sample from. An embedding padded past the tokenizer (rows kept
    for alignment) has ids with no text: choose among the tokenizer's ids only."""
    rows = model.config.vocab_size
    return min(getattr(tokenizer, "vocab_size", None) or rows, rows)


def _check_finite(logits: torch.Tensor, step: int) -> None:
    # amax propagates NaN, and is +inf or -inf for the other broken rows: one reduction.
    top = logits.amax(-1)
    if not bool(torch.isfinite(top).all()):
        rows = (~torch.isfinite(top)).nonzero().flatten().tolist()
        kind = "NaN" if bool(logits.isnan().any()) else "infinite"
        raise NonFiniteLogitsError(
            f"logits: {kind} values at step {step} (batch rows {rows}): the model's weights "
            "or activations are not finite, so no token can be chosen"
        )


def grow_cache(model: Transformer, cache: KVCache, capacity: int) -> KVCache:
    """A cache of `capacity` positions holding everything `cache` holds.

    Entries move by the position they hold: a full layer's slot is its position, a ring's is
    the position modulo the window (a layer becomes a ring once the capacity exceeds its
    window). A linear-attention layer's fixed-size state moves over as it is."""
    kv = [layer for layer in cache.layers if isinstance(layer, LayerCache)]
    if not kv:  # only fixed-size states: nothing grows but the position limit
        cache.max_seq_len = capacity
        if cache.key_valid is not None:
            grown = cache.key_valid.new_ones(cache.key_valid.shape[0], capacity)
            grown[:, : cache.key_valid.shape[1]] = cache.key_valid
            cache.key_valid = grown
        return cache
    layer0 = kv[0]
    batch = layer0.keys.shape[0]
    new = model.new_cache(batch, capacity, dtype=layer0.keys.dtype, device=layer0.keys.device)
    for i, (old, layer) in enumerate(zip(cache.layers, new.layers, strict=True)):
        if not isinstance(old, LayerCache):
            new.layers[i] = old
            continue
        src = (old.positions >= 0).nonzero().flatten()
        held = old.positions[src]
        dst = held % layer.capacity if layer.ring else held
        layer.keys.index_copy_(layer.seq_dim, dst, old.keys.index_select(old.seq_dim, src))
        layer.values.index_copy_(layer.seq_dim, dst, old.values.index_select(old.seq_dim, src))
        layer.positions[dst] = held
    new.length = cache.length
    if cache.key_valid is not None:
        new.key_valid = torch.ones(batch, capacity, dtype=torch.bool, device=layer0.keys.device)
        new.key_valid[:, : cache.max_seq_len] = cache.key_valid
    if cache.token_ids is not None:
        new.token_ids = cache.token_ids.new_zeros(batch, capacity)
        new.token_ids[:, : cache.max_seq_len] = cache.token_ids
    return new
