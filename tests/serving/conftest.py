"""A tiny random model with a byte tokenizer (and a small chat template) for the serving tests."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from tests.generation.byte_tokenizer import ByteTokenizer


class ChatByteTokenizer(ByteTokenizer):
    """ByteTokenizer plus a chat template: `<role>content` per turn, then `<assistant>`."""

    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    vocab_size = 257

    def apply_chat_template(self, messages, add_generation_prompt: bool = True) -> str:
        if messages[-1]["role"] == "assistant" and add_generation_prompt:
            raise ValueError("the last turn is the assistant's")
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


@pytest.fixture(scope="session")
def tiny_model() -> gf.Transformer:
    torch.manual_seed(0)
    config = gf.Config.preset("tiny").replace(vocab_size=257, max_seq_len=256)
    return gf.Transformer(config).eval()


@pytest.fixture(scope="session")
def byte_tok() -> ChatByteTokenizer:
    return ChatByteTokenizer()
