"""Answers of a chat model to a list of user prompts, generated in batches.

Each prompt becomes one user turn rendered with the model's chat template up to the
assistant's reply; the reply is decoded (greedy, or sampled with a seed) until the template's
end-of-turn token or `max_new_tokens`. Rows of a batch are left-padded and decoded together
(`glassformer.generation.generate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["chat_prompt", "respond"]


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The text of a one-turn conversation up to the assistant's reply."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    if not getattr(tokenizer, "chat_template", None):
        return prompt
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def respond(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """The model's reply to each prompt (one user turn each), in order."""
    from glassformer.generation import GenerationConfig, generate

    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [chat_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        cfg = GenerationConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            seed=None if seed is None else seed + start, add_special_tokens=False,
        )  # fmt: skip
        results = generate(model, tokenizer, chunk, cfg)
        out += [r.text.strip() for r in results]  # type: ignore[union-attr]
        if progress is not None:
            progress(len(chunk))
    return out
