"""The real model: SmolLM2-135M-Instruct (GGUF) served in a batch equals `generate` alone, token
for token, in float32 and int4; `glassformer serve` starts, answers and reports its slots."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import torch

from glassformer.generation import GenerationConfig, generate, load
from glassformer.serving import Request, Scheduler

QUESTIONS = [
    "What is 2+2?",
    "Name a colour.",
    "Say hello in French.",
    "Who wrote Hamlet?",
    "What is the capital of Italy?",
    "Count to five.",
    "Give me a word that rhymes with cat.",
    "Why is the sky blue?",
]


def _model_path():
    from glassformer.loaders.resolve import ModelNotInstalledError, resolve

    try:
        return resolve("smollm2-135m-instruct")
    except ModelNotInstalledError as err:
        pytest.skip(str(err))


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["none", "int4"])
def test_batched_replies_equal_generate_alone(quant: str) -> None:
    net, tok = load(_model_path(), quant=quant)
    config = GenerationConfig(max_new_tokens=8, add_special_tokens=False)
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        for q in QUESTIONS
    ]
    with torch.inference_mode():
        alone = [generate(net, tok, p, config).tokens for p in prompts]
    scheduler = Scheduler(net, tok, max_batch=8, ctx=128, prefill_chunk=512)
    assert scheduler.batch_plan() is not None  # one batched decode step for all eight
    requests = [
        Request(
            prompt=tok.encode(p, add_special_tokens=False, parse_special=True),
            config=config,
            emit=lambda e: None,
        )
        for p in prompts
    ]
    for request in requests:  # arrivals staggered: each joins a running batch
        scheduler.submit(request)
        scheduler.step()
    while any(r.finish_reason is None for r in requests):
        scheduler.step()
    assert [r.tokens for r in requests] == alone
    assert scheduler.slots_free == 8


@pytest.mark.slow
def test_serve_command_answers() -> None:
    _model_path()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "glassformer.cli", "serve", "smollm2-135m-instruct"]
    command += ["--port", "0", "--max-batch", "2", "--ctx", "256", "--json", "--threads", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        info = json.loads(line)
        assert info["model"] == "smollm2-135m-instruct" and info["slots"] == 2
        url = info["url"]
        assert httpx.get(f"{url}/health").json()["slots_free"] == 2
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "What is 2+2?"}],
            "max_tokens": 4,
            "temperature": 0,
        }
        out = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).json()
        assert out["usage"]["completion_tokens"] == 4 and out["choices"][0]["message"]["content"]
        too_long = {**body, "messages": [{"role": "user", "content": "word " * 400}]}
        error = httpx.post(f"{url}/v1/chat/completions", json=too_long, timeout=60)
        assert error.status_code == 400
        assert error.json()["error"]["code"] == "context_length_exceeded"
    finally:
        proc.terminate()
        proc.wait(30)
