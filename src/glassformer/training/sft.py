"""Supervised fine-tuning on chat data, with the loss on the assistant's tokens only.

Each example is a JSONL line `{"messages": [{"role": ..., "content": ...}, ...]}`. The
conversation is rendered with the model's own chat template and tokenized; the training
objective is the next-token cross-entropy restricted to the assistant's replies,

    L = -1/|A| sum_{t in A} log p(x_t | x_<t),     A = positions of assistant tokens

(the InstructGPT/Alpaca recipe: the model is not trained to write the user's turns or the
system prompt, only to answer them).

Finding A without template-specific rules: for the i-th message, if it is the assistant's,

    P_i = render(messages[:i], add_generation_prompt=True)    (the prompt up to its reply)
    S_i = render(messages[:i + 1])                             (the same plus the reply)

and the reply is the text S_i[len(P_i):] minus trailing whitespace: the content plus the
template's end-of-turn marker (`<|im_end|>`), which the model must learn to emit to stop. This
is what HF transformers' `return_assistant_tokens_mask` reports for templates that mark the
reply with `{% generation %}`, but works for any prefix-stable template (each S_i a prefix of
the full rendering, which the code checks). Tokens are then mapped to characters through their
bytes (a byte-level BPE spells the text exactly), and a token counts as the assistant's when
it starts inside a reply span.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from glassformer.jsonl import jsonl_rows
from glassformer.training.data import EpochOrder, ExampleBatches
from glassformer.training.tasks import IGNORE, NextTokenLoss

__all__ = [
    "SFTTask",
    "assistant_spans",
    "load_chat_jsonl",
    "strip_generation_tags",
    "tokenize_chat",
]

_GENERATION_TAG = re.compile(r"\{%-?\s*(?:end)?generation\s*-?%\}")


def strip_generation_tags(template: str) -> str:
    """Remove HF's `{% generation %}` markers (only HF's Jinja environment knows them)."""
    return _GENERATION_TAG.sub("", template)


def load_chat_jsonl(path: str | os.PathLike[str]) -> list[list[dict[str, Any]]]:
    conversations = []
    for _, where, row in jsonl_rows(path):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"{where}: expected an object with a 'messages' list")
        if not any(m.get("role") == "assistant" for m in messages):
            raise ValueError(f"{where}: no assistant message to learn from")
        conversations.append(messages)
    if not conversations:
        raise ValueError(f"{path}: no conversations")
    return conversations


def _render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], gen: bool, tpl: str) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=gen, chat_template=tpl)


def assistant_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], chat_template: str | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """(full rendered text, [(start, end) character spans of each assistant reply])."""
    template = chat_template or tokenizer.chat_template
    if not template:
        raise ValueError("the tokenizer has no chat template (pass chat_template=)")
    template = strip_generation_tags(template)
    full = _render(tokenizer, messages, False, template)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], True, template)
        upto = _render(tokenizer, messages[: i + 1], False, template)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise ValueError(
                "the chat template is not prefix-stable (an earlier turn renders differently "
                "once later turns follow), so assistant tokens cannot be located"
            )
        reply = upto[len(prompt) :].rstrip()
        spans.append((len(prompt), len(prompt) + len(reply)))
    return full, spans


def tokenize_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    chat_template: str | None = None,
) -> tuple[list[int], list[int]]:
    """(token ids, mask) for a conversation; mask[i] = 1 when token i is an assistant token."""
    text, spans = assistant_spans(tokenizer, messages, chat_template)
    ids = tokenizer.encode(text, add_special_tokens=False, parse_special=True)
    # Character offsets of each token, from its bytes. A byte-level vocabulary spells the text
    # exactly; check, and fall back to encoding span by span otherwise.
    data = text.encode("utf-8")
    pieces = [tokenizer.token_bytes(t) for t in ids]
    if b"".join(pieces) != data:
        return _tokenize_by_segments(tokenizer, text, spans)
    char_at = _byte_to_char(text)
    mask = []
    pos = 0
    for piece in pieces:
        start_char = char_at[pos]
        mask.append(int(any(s <= start_char < e for s, e in spans)))
        pos += len(piece)
    return ids, mask


def _byte_to_char(text: str) -> list[int]:
    out = []
    for i, ch in enumerate(text):
        out += [i] * len(ch.encode("utf-8"))
    out.append(len(text))
    return out


def _tokenize_by_segments(
    tokenizer: Any, text: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []
    pos = 0
    for start, end in [*spans, (len(text), len(text))]:
        for seg, flag in ((text[pos:start], 0), (text[start:end], 1)):
            if seg:
                part = tokenizer.encode(seg, add_special_tokens=False, parse_special=True)
                ids += part
                mask += [flag] * len(part)
        pos = end
    return ids, mask


class SFTTask(ExampleBatches, NextTokenLoss):
    """Chat fine-tuning batches: right-padded rows, labels IGNORE outside assistant tokens."""

    def __init__(
        self,
        tokenizer: Any,
        conversations: Sequence[Sequence[Mapping[str, Any]]],
        max_len: int = 512,
        val_fraction: float = 0.1,
        seed: int = 0,
        chat_template: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else 0
        examples = []
        for conv in conversations:
            ids, mask = tokenize_chat(tokenizer, conv, chat_template)
            ids, mask = ids[: max_len + 1], mask[: max_len + 1]
            if sum(mask[1:]):  # something left to learn after truncation
                examples.append((ids, mask))
        if not examples:
            raise ValueError("no example has assistant tokens within max_len")
        order = list(range(len(examples)))
        random.Random(seed).shuffle(order)
        n_val = int(len(examples) * val_fraction) if len(examples) > 1 else 0
        if val_fraction > 0 and len(examples) > 1:
            n_val = max(1, n_val)
        self.val = [examples[i] for i in order[:n_val]]
        self.train = [examples[i] for i in order[n_val:]]
        self.seed = seed
        self.order = EpochOrder(len(self.train), seed)
        self.conversations = [conversations[i] for i in order[:n_val]] or list(conversations[:1])

    def _collate(self, rows: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in rows) - 1
        inputs = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for r, (ids, mask) in enumerate(rows):
            n = len(ids) - 1
            inputs[r, :n] = torch.tensor(ids[:-1])
            target = torch.tensor(ids[1:])
            keep = torch.tensor(mask[1:], dtype=torch.bool)
            labels[r, :n] = torch.where(keep, target, torch.full_like(target, IGNORE))
        # Right padding needs no attention mask: causal attention never looks ahead.
        return {"input_ids": inputs, "labels": labels}

    def sample_prompt(self) -> str:
        """A held-out conversation up to its first assistant reply, rendered for generation."""
        conv = self.conversations[0]
        first = next(i for i, m in enumerate(conv) if m.get("role") == "assistant")
        template = strip_generation_tags(self.tokenizer.chat_template or "")
        return _render(self.tokenizer, conv[:first], True, template)


def write_jsonl(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return out
