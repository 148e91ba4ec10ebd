"""The continuous-batching scheduler: replies equal each prompt decoded alone, token for token,
whatever joins or leaves the batch around them; slots come back; chunked prefill."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glassformer.generation import GenerationConfig, generate
from glassformer.serving import QueueFullError, Request, Scheduler
from glassformer.serving.scheduler import collect

PROMPTS = ["hello there", "a much longer prompt than the first one", "x", "0123456789" * 3]


def alone(model, tok, prompt: str, config: GenerationConfig) -> list[int]:
    return generate(model, tok, prompt, config).tokens


def run_all(scheduler: Scheduler, requests: list[Request], arrivals: list[int]) -> int:
    """Submit each request at its arrival step, step until all finish; the most running."""
    step, busiest, pending = 0, 0, sorted(zip(arrivals, range(len(requests)), strict=True))
    while pending or any(r.finish_reason is None for r in requests):
        while pending and pending[0][0] <= step:
            scheduler.submit(requests[pending.pop(0)[1]])
        scheduler.step()
        busiest = max(busiest, len(scheduler.running))
        step += 1
        assert step < 10_000
    return busiest


def test_concurrent_greedy_equals_alone(tiny_model, byte_tok) -> None:
    config = GenerationConfig(max_new_tokens=10, ignore_eos=True)
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=3, max_queue=8, ctx=128)
    requests = [
        Request(prompt=byte_tok.encode(p), config=config, emit=lambda e: None) for p in PROMPTS
    ]
    busiest = run_all(scheduler, requests, [0, 0, 2, 3])
    assert busiest == 3  # the fourth waited for a slot
    for prompt, request in zip(PROMPTS, requests, strict=True):
        assert request.tokens == alone(tiny_model, byte_tok, prompt, config)
        assert request.finish_reason == "length"
    assert scheduler.slots_free == 3 and not scheduler.running


def test_seeded_sampling_equals_alone(tiny_model, byte_tok) -> None:
    config = GenerationConfig(max_new_tokens=8, temperature=0.9, top_p=0.9, seed=7, ignore_eos=True)
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, ctx=128)
    requests = [
        Request(prompt=byte_tok.encode(p), config=config, emit=lambda e: None) for p in PROMPTS[:2]
    ]
    run_all(scheduler, requests, [0, 1])
    for prompt, request in zip(PROMPTS, requests, strict=False):
        assert request.tokens == alone(tiny_model, byte_tok, prompt, config)


def test_repetition_penalty_equals_alone(tiny_model, byte_tok) -> None:
    """The penalty sees the prompt and the reply so far, as `generate` gives it."""
    config = GenerationConfig(max_new_tokens=12, repetition_penalty=10.0, ignore_eos=True)
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, ctx=128)
    requests = [
        Request(prompt=byte_tok.encode(p), config=config, emit=lambda e: None) for p in PROMPTS[:2]
    ]
    run_all(scheduler, requests, [0, 1])
    for prompt, request in zip(PROMPTS, requests, strict=False):
        assert request.tokens == alone(tiny_model, byte_tok, prompt, config)
    plain = alone(tiny_model, byte_tok, PROMPTS[0], GenerationConfig(max_new_tokens=12))
    assert requests[0].tokens != plain  # the penalty changed the reply: the test can fail


def test_chunked_prefill_interleaves_and_matches(tiny_model, byte_tok) -> None:
    """A 30-token prompt prefilled 4 tokens a step: the other sequence decodes meanwhile, and
    the long prompt's reply still equals its whole-prompt decode (logits within float error)."""
    config = GenerationConfig(max_new_tokens=6, ignore_eos=True)
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, ctx=128, prefill_chunk=4)
    short = Request(prompt=byte_tok.encode("hi"), config=config, emit=lambda e: None)
    long_prompt = "0123456789" * 3
    seen: list[int] = []
    long = Request(prompt=byte_tok.encode(long_prompt), config=config, emit=lambda e: None)
    short.emit = lambda e: seen.append(len(long.tokens))
    scheduler.submit(short)
    scheduler.submit(long)
    while long.finish_reason is None or short.finish_reason is None:
        scheduler.step()
    # the short one finished all 6 tokens while the long prompt (8 chunks) was still prefilling
    assert seen == [0] * 6
    assert long.tokens == alone(tiny_model, byte_tok, long_prompt, config)
    assert short.tokens == alone(tiny_model, byte_tok, "hi", config)
    # the chunked cache holds the same keys as one whole prefill: the next logits agree
    cache = tiny_model.new_cache(1, 64)
    ids = torch.tensor([byte_tok.encode(long_prompt)])
    whole = tiny_model(ids, cache)[:, -1]
    cache.reset()
    for i in range(0, ids.shape[1], 4):
        chunked = tiny_model(ids[:, i : i + 4], cache)[:, -1]
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_stops_finish_and_free_the_slot(tiny_model, byte_tok) -> None:
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=1, ctx=128)
    free = alone(tiny_model, byte_tok, "abc", GenerationConfig(max_new_tokens=12, ignore_eos=True))
    text = byte_tok.decode(free)
    stop = text[4:6]
    request = Request(
        prompt=byte_tok.encode("abc"),
        config=GenerationConfig(max_new_tokens=12, stop_strings=(stop,), ignore_eos=True),
        emit=lambda e: None,
    )
    events = collect(scheduler, request)
    assert request.finish_reason == "stop"
    assert "".join(e.text for e in events) == text[: text.find(stop)]
    by_id = Request(
        prompt=byte_tok.encode("abc"),
        config=GenerationConfig(max_new_tokens=12, stop_token_ids=(free[3],)),
        emit=lambda e: None,
    )
    collect(scheduler, by_id)
    assert by_id.finish_reason == "eos" and by_id.tokens == free[: free.index(free[3])]
    assert scheduler.slots_free == 1


def test_context_limit_and_errors(tiny_model, byte_tok) -> None:
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=1, max_queue=1, ctx=16)
    request = Request(
        prompt=byte_tok.encode("0123456789"),
        config=GenerationConfig(max_new_tokens=100, ignore_eos=True),
        emit=lambda e: None,
    )
    collect(scheduler, request)
    assert request.finish_reason == "context" and len(request.tokens) == 6
    with pytest.raises(ValueError, match="context of 16"):
        scheduler.submit(Request(prompt=[1] * 16, config=GenerationConfig(), emit=print))
    scheduler.submit(Request(prompt=[1], config=GenerationConfig(), emit=print))
    scheduler.submit(Request(prompt=[1], config=GenerationConfig(), emit=print))
    with pytest.raises(QueueFullError):
        scheduler.submit(Request(prompt=[1], config=GenerationConfig(), emit=print))
    with pytest.raises(ValueError, match="max_batch"):
        Scheduler(tiny_model, byte_tok, max_batch=0)
    with pytest.raises(ValueError, match="ctx"):
        Scheduler(tiny_model, byte_tok, ctx=10_000)


def test_cancel_frees_the_slot_at_the_next_step(tiny_model, byte_tok) -> None:
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, ctx=128)
    config = GenerationConfig(max_new_tokens=50, ignore_eos=True)
    a = Request(prompt=[5, 6], config=config, emit=lambda e: None)
    b = Request(prompt=[7, 8], config=config, emit=lambda e: None)
    scheduler.submit(a)
    scheduler.submit(b)
    scheduler.step()
    assert scheduler.slots_free == 0
    a.cancel()
    scheduler.step()
    assert scheduler.slots_free == 1 and [s.request for s in scheduler.running] == [b]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),  # arrival step
            st.text(alphabet="abcxyz ", min_size=1, max_size=12),  # prompt
            st.integers(0, 6),  # max_tokens
            st.booleans(),  # cancelled after arriving
        ),
        min_size=1,
        max_size=6,
    ),
    st.integers(1, 3),
)
def test_random_arrivals_property(tiny_model, byte_tok, jobs, max_batch) -> None:
    """Random arrivals, lengths and cancellations: never more than max_batch running, every
    uncancelled reply equals its prompt alone, all slots come back."""
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=max_batch, max_queue=10, ctx=64)
    requests, arrivals = [], []
    for arrival, prompt, max_tokens, cancel in jobs:
        config = GenerationConfig(max_new_tokens=max_tokens, ignore_eos=True)
        request = Request(prompt=byte_tok.encode(prompt), config=config, emit=lambda e: None)
        if cancel:
            request.cancel()
        requests.append(request)
        arrivals.append(arrival)
    step, pending = 0, sorted(zip(arrivals, range(len(requests)), strict=True))
    while pending or scheduler.running or scheduler.waiting:
        while pending and pending[0][0] <= step:
            scheduler.submit(requests[pending.pop(0)[1]])
        scheduler.step()
        assert len(scheduler.running) <= max_batch
        assert len(scheduler.running) + scheduler.slots_free == max_batch
        step += 1
    assert scheduler.slots_free == max_batch
    for (_, prompt, max_tokens, cancel), request in zip(jobs, requests, strict=True):
        if cancel:
            assert request.tokens == []
            continue
        config = GenerationConfig(max_new_tokens=max_tokens, ignore_eos=True)
        assert request.tokens == alone(tiny_model, byte_tok, prompt, config)
        assert request.finish_reason == "length"


def test_a_request_that_cannot_start_is_an_error_event(tiny_model, byte_tok) -> None:
    """A seed torch cannot take fails that request alone; the loop serves the next one."""
    scheduler = Scheduler(tiny_model, byte_tok, max_batch=1, ctx=64)
    events = []
    bad = Request(prompt=[5], config=GenerationConfig(seed=2**70), emit=events.append)
    good = Request(prompt=[5], config=GenerationConfig(max_new_tokens=3), emit=lambda e: None)
    scheduler.submit(bad)
    scheduler.submit(good)
    while good.finish_reason is None:
        scheduler.step()
    assert bad.finish_reason == "error" and events[-1].finish_reason == "error"
    assert "Overflow" in events[-1].error
    assert scheduler.slots_free == 1


def test_the_loop_survives_a_failing_step(tiny_model, byte_tok) -> None:
    """An unexpected error in a step fails the requests in flight; the thread keeps serving."""
    import threading

    scheduler = Scheduler(tiny_model, byte_tok, max_batch=2, ctx=64)
    step = scheduler.step
    calls = {"n": 0}

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        step()

    scheduler.step = flaky
    done = threading.Event()
    events = []
    first = Request(prompt=[5], config=GenerationConfig(max_new_tokens=2), emit=events.append)
    second = Request(
        prompt=[6],
        config=GenerationConfig(max_new_tokens=2, ignore_eos=True),
        emit=lambda e: done.set() if e.finish_reason else None,
    )
    scheduler.submit(first)
    scheduler.start()
    try:
        deadline = 100
        while first.finish_reason is None and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert first.finish_reason == "error" and "boom" in events[-1].error
        scheduler.submit(second)
        assert done.wait(10) and second.finish_reason == "length"
        assert scheduler.slots_free == 2
    finally:
        scheduler.stop()
