"""Calibration windows: the tokens importance measures are averaged over.

They come from the default training corpus (`training.data.default_corpus`: pydoc's topic texts
and the standard library's sources), in a seeded random order of documents, each document
contributing at most two windows so that no single file dominates. Each window opens with the
tokenizer's BOS where it has one, as the model saw its text in training.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch


def _documents(seed: int) -> Iterator[tuple[str, Any]]:
    """(name, text or path) of the default corpus in a seeded random order, read lazily."""
    from glassformer.training.data import default_corpus_files

    items: list[tuple[str, Any]] = []
    try:
        from pydoc_data import topics

        items += [(f"pydoc_data:{k}", topics.topics[k]) for k in sorted(topics.topics)]
    except ImportError:  # some distributions strip pydoc_data
        pass
    items += [(str(p), p) for p in default_corpus_files()]
    random.Random(seed).shuffle(items)
    yield from items


def calibration_windows(
    tokenizer: Any, n_tokens: int, seq_len: int = 256, seed: int = 0
) -> torch.Tensor:
    """[n, seq_len] token ids, n = ceil(n_tokens / seq_len), from the default corpus."""
    if n_tokens < 1 or seq_len < 2:
        raise ValueError(
            f"calibration: need n_tokens >= 1 and seq_len >= 2, got {n_tokens}, {seq_len}"
        )
    n = -(-n_tokens // seq_len)
    bos = getattr(tokenizer, "bos_id", None) if getattr(tokenizer, "add_bos", True) else None
    body = seq_len - (bos is not None)
    windows: list[list[int]] = []
    for _, source in _documents(seed):
        text = source if isinstance(source, str) else source.read_text(errors="replace")
        # a window needs about 4 characters per token; reading further is wasted encoding
        enc = tokenizer.encode(text[: 2 * body * 8], add_special_tokens=False)
        ids = list(getattr(enc, "ids", enc))
        for start in range(0, min(len(ids), 2 * body) - body + 1, body):
            chunk = ids[start : start + body]
            windows.append(([bos] if bos is not None else []) + chunk)
            if len(windows) == n:
                return torch.tensor(windows)
    if not windows:
        raise ValueError("calibration: the default corpus gave no window of that length")
    return torch.tensor(windows)


def byte_windows(vocab_size: int, n_tokens: int, seq_len: int = 256, seed: int = 0) -> torch.Tensor:
    """Windows of the corpus's UTF-8 bytes as token ids (mod vocab_size), for a model that came
    without a tokenizer (a preset or a checkpoint whose run left none)."""
    n = -(-n_tokens // seq_len)
    data: list[int] = []
    for _, source in _documents(seed):
        text = source if isinstance(source, str) else source.read_text(errors="replace")
        data += [b % vocab_size for b in text[: 2 * seq_len].encode()]
        if len(data) >= n * seq_len:
            break
    usable = len(data) // seq_len * seq_len
    return torch.tensor(data[:usable]).view(-1, seq_len)[:n]
