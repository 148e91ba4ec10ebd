"""The OpenAI-compatible API on a tiny model: every endpoint, the streaming format, logprobs,
usage, each error case, a full queue and disconnecting clients (FastAPI's TestClient, and a
live uvicorn on loopback driven by httpx and the official openai client)."""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from glassformer.generation import GenerationConfig, generate
from glassformer.serving import Request, Scheduler
from glassformer.serving.api import create_app
from tests.serving.conftest import serve_live, wait_free

NAME = "tiny"


@pytest.fixture(scope="module")
def scheduler(tiny_model, byte_tok):
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, max_queue=2, ctx=64)
    scheduler.start()
    yield scheduler
    scheduler.stop()


@pytest.fixture(scope="module")
def client(scheduler):
    with TestClient(create_app(scheduler, NAME), raise_server_exceptions=False) as client:
        yield client


def greedy(model, tok, text: str, n: int, special: bool = True) -> str:
    return generate(model, tok, text, GenerationConfig(max_new_tokens=n)).text


def events(response) -> list:
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def assert_error(response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_health_and_models(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["slots_total"] == health["slots_free"] == 2
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [NAME]
    assert client.get(f"/v1/models/{NAME}").json()["id"] == NAME
    assert_error(client.get("/v1/models/other"), 404)
    assert_error(client.get("/nowhere"), 404)


def test_completion_equals_generate(client, tiny_model, byte_tok) -> None:
    body = {"model": NAME, "prompt": "hello", "max_tokens": 7, "temperature": 0}
    out = client.post("/v1/completions", json=body).json()
    assert out["object"] == "text_completion"
    expected = generate(tiny_model, byte_tok, "hello", GenerationConfig(max_new_tokens=7))
    assert out["choices"][0]["text"] == expected.text
    assert (
        out["choices"][0]["finish_reason"]
        == {"eos": "stop", "length": "length"}[expected.finish_reason]
    )
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": len(expected.tokens),
        "total_tokens": 5 + len(expected.tokens),
    }
    ids = client.post("/v1/completions", json={**body, "prompt": byte_tok.encode("hello")})
    assert ids.json()["choices"][0]["text"] == expected.text


def test_chat_uses_the_template(client, tiny_model, byte_tok) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]
    body = {"model": NAME, "messages": messages, "max_tokens": 6, "temperature": 0}
    out = client.post("/v1/chat/completions", json=body).json()
    assert out["object"] == "chat.completion"
    rendered = "<system>be brief<user>hi<assistant>"
    expected = generate(tiny_model, byte_tok, rendered, GenerationConfig(max_new_tokens=6))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": expected.text}
    assert out["usage"]["prompt_tokens"] == len(rendered)


def test_streaming_chat_chunks(client, tiny_model, byte_tok) -> None:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "stream"}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = client.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    expected = generate(
        tiny_model, byte_tok, "<user>stream<assistant>", GenerationConfig(max_new_tokens=8)
    )
    assert text == expected.text
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finals[-1] in ("stop", "length") and set(finals[:-1]) == {None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(
        expected.tokens
    )


def test_streaming_completion_with_logprobs(client) -> None:
    body = {
        "model": NAME,
        "prompt": "abc",
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
        "logprobs": 3,
    }
    chunks = events(client.post("/v1/completions", json=body))
    whole = client.post("/v1/completions", json={**body, "stream": False}).json()
    logprobs = whole["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == whole["usage"]["completion_tokens"]
    streamed = [lp for c in chunks for lp in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert streamed == logprobs["token_logprobs"]
    for token, lp, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert len(top) <= 3 and lp <= 0
        assert math.isclose(max(top.values()), lp, abs_tol=1e-6)  # greedy: the top one
        assert top[token] == lp


def test_chat_logprobs_and_sampling_seed(client) -> None:
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 6,
        "temperature": 1.0,
        "top_p": 0.9,
        "seed": 11,
        "logprobs": True,
        "top_logprobs": 2,
    }
    first = client.post("/v1/chat/completions", json=body).json()
    again = client.post("/v1/chat/completions", json=body).json()
    assert first["choices"][0]["message"] == again["choices"][0]["message"]
    content = first["choices"][0]["logprobs"]["content"]
    assert len(content) == first["usage"]["completion_tokens"]
    for entry in content:
        assert len(entry["top_logprobs"]) == 2
        assert entry["bytes"] == list(entry["token"].encode())
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]


def test_stop_strings(client, tiny_model, byte_tok) -> None:
    free = greedy(tiny_model, byte_tok, "abc", 12)
    stop = free[3:5]
    body = {"model": NAME, "prompt": "abc", "max_tokens": 12, "temperature": 0, "stop": [stop]}
    out = client.post("/v1/completions", json=body).json()["choices"][0]
    assert out["text"] == free[: free.find(stop)] and out["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "other", "prompt": "a"}, "model"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "max_tokens": -1}, "max_tokens"),
        ("/v1/completions", {"model": NAME, "prompt": "a" * 64}, "prompt"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "n": 2}, "n"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "temperature": 5}, "temperature"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "top_p": 0}, "top_p"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "logprobs": 9}, "logprobs"),
        ("/v1/completions", {"model": NAME, "prompt": "a", "seed": 2**70}, "seed"),
        ("/v1/completions", {"model": NAME, "prompt": [99999]}, "prompt"),
        ("/v1/completions", {"model": NAME}, "prompt"),
        ("/v1/completions", {"model": NAME, "prompt": ""}, "prompt"),
        ("/v1/chat/completions", {"model": NAME, "messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {
                "model": NAME,
                "messages": [{"role": "user", "content": "a"}],
                "top_logprobs": 99,
                "logprobs": True,
            },
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            {"model": NAME, "messages": [{"role": "assistant", "content": "a"}]},
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": NAME, "messages": [{"role": "user", "content": "a"}], "presence_penalty": 1},
            "presence_penalty",
        ),
    ],
)
def test_bad_requests_are_400(client, path, body, param) -> None:
    assert_error(client.post(path, json=body), 400, param)


def test_malformed_json_is_400(client) -> None:
    for raw in (b"{bad", b"[1, 2]", b""):
        response = client.post(
            "/v1/completions", content=raw, headers={"content-type": "application/json"}
        )
        assert_error(response, 400)


def test_queue_full_is_503(tiny_model, byte_tok) -> None:
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=1, max_queue=0, ctx=64)  # not started
    scheduler.submit(Request(prompt=[1], config=GenerationConfig(), emit=lambda e: None))
    with TestClient(create_app(scheduler, NAME)) as client:
        body = {"model": NAME, "prompt": "a"}
        error = assert_error(client.post("/v1/completions", json=body), 503)
        assert error["code"] == "queue_full"


# -- a live server on loopback -----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tiny_model, byte_tok):
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, max_queue=4, ctx=256)
    with serve_live(scheduler, NAME) as url:
        yield url, scheduler


def test_disconnects_free_their_slots(live, monkeypatch) -> None:
    url, scheduler = live
    # at least 5 ms a step, so that 190 tokens outlast the client's 0.3 s on any machine
    step = scheduler.step
    monkeypatch.setattr(scheduler, "step", lambda: (time.sleep(0.005), step())[1])
    body = {"model": NAME, "prompt": "long", "max_tokens": 200, "temperature": 0}
    # streaming: read two chunks, then hang up
    with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert scheduler.slots_free < 2
    wait_free(url, 2)
    # not streaming: the client times out and closes its connection
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 190}, timeout=0.3)
    wait_free(url, 2)
    # the server still answers
    out = httpx.post(f"{url}/v1/completions", json={**body, "max_tokens": 3}).json()
    assert out["usage"]["completion_tokens"] <= 3


def test_openai_client(live, tiny_model, byte_tok) -> None:
    openai = pytest.importorskip("openai")
    url, _ = live
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [NAME]
    expected = generate(
        tiny_model, byte_tok, "<user>hi<assistant>", GenerationConfig(max_new_tokens=9)
    ).text
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=9, temperature=0
    )
    assert reply.choices[0].message.content == expected
    stream = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=9,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    completion = client.completions.create(model=NAME, prompt="hi", max_tokens=4, temperature=0)
    assert completion.choices[0].text == greedy(tiny_model, byte_tok, "hi", 4)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="nope", prompt="hi")


def test_many_clients_with_random_disconnects(live) -> None:
    """64 requests from 16 threads, some hanging up mid-stream: every answer is a completion,
    a 503 (queue full) or a disconnect of ours; afterwards every slot is free again, and the
    slots' caches are the ones allocated at start (memory stays flat)."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    url, scheduler = live
    buffers = [layer.keys.data_ptr() for cache in scheduler.caches for layer in cache.layers]

    def one(i: int) -> str:
        rng = random.Random(i)
        body = {"model": NAME, "prompt": f"client {i}", "max_tokens": rng.randint(1, 40)}
        if rng.random() < 0.5:
            with httpx.stream(
                "POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60
            ) as r:
                if r.status_code != 200:
                    r.read()
                    return str(r.status_code)
                for n, _ in enumerate(r.iter_lines()):
                    if n == rng.randint(0, 6):
                        return "left"
            return "200"
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        if r.status_code != 200:
            assert_error(r, r.status_code)
        return str(r.status_code)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(one, range(64)))
    assert set(outcomes) <= {"200", "503", "left"}, outcomes
    assert "200" in outcomes
    wait_free(url, 2)
    assert buffers == [
        layer.keys.data_ptr() for cache in scheduler.caches for layer in cache.layers
    ]
