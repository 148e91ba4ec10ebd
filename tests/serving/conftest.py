"""A tiny random model with a byte tokenizer (and a small chat template) for the serving tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
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


@contextmanager
def serve_live(scheduler, name: str) -> Iterator[str]:
    """`scheduler` behind uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    from glassformer.serving.api import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(scheduler, name), host="127.0.0.1", port=port, log_level="error")
    )
    scheduler.start()
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        scheduler.stop()


def wait_free(url: str, total: int) -> dict:
    """/health once every slot is free and nothing waits (fails after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        health = httpx.get(f"{url}/health").json()
        if health["slots_free"] == total and health["queued"] == 0:
            return health
        assert time.monotonic() < deadline, f"slots not freed: {health}"
        time.sleep(0.05)
