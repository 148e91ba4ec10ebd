"""The scheduler's batched decode step: with an optimised model every decoding sequence advances
in one `BatchDecodePlan` step, and each reply still equals its prompt decoded alone (greedy and
seeded sampling), in float32 and int4, through ragged lengths and slots reused by newcomers."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.generation import GenerationConfig, generate
from glassformer.inference import native, optimize
from glassformer.serving import Request, Scheduler

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")

PROMPTS = [f"prompt {i}: " + "abc" * (i * 7 % 23) for i in range(11)]  # ragged, 11 > 8 slots


@pytest.fixture(scope="module", params=["none", "int4"])
def fast_model(request) -> gf.Transformer:
    torch.manual_seed(0)
    config = gf.Config.preset("tiny").replace(vocab_size=257, max_seq_len=256, n_kv_heads=1)
    model = gf.Transformer(config).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    return optimize(model, request.param)


def test_batch_of_eight_equals_generate_alone(fast_model, byte_tok) -> None:
    scheduler = Scheduler(fast_model, byte_tok, max_batch=8, max_queue=8, ctx=160,
                          prefill_chunk=16)  # fmt: skip
    configs = [
        GenerationConfig(max_new_tokens=6 + i % 5, ignore_eos=True)
        if i % 3
        else GenerationConfig(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=i, ignore_eos=True)
        for i in range(len(PROMPTS))
    ]
    requests = [
        Request(prompt=byte_tok.encode(p), config=c, emit=lambda e: None)
        for p, c in zip(PROMPTS, configs, strict=True)
    ]
    plan = scheduler.batch_plan()
    assert plan is not None
    rows_seen = []
    inner = plan.step
    plan.step = lambda ids, slots: (rows_seen.append(len(slots)), inner(ids, slots))[1]
    for request in requests:  # eight start together; three take the slots of leavers
        scheduler.submit(request)
    while any(r.finish_reason is None for r in requests):
        scheduler.step()
    assert max(rows_seen) == 8  # a full batch decoded in one step
    assert len(set(rows_seen)) > 3  # and ragged batches as sequences came and went
    for prompt, config, request in zip(PROMPTS, configs, requests, strict=True):
        assert request.tokens == generate(fast_model, byte_tok, prompt, config).tokens
        assert request.finish_reason == "length"
    assert scheduler.slots_free == 8 and not scheduler.running


def test_plain_model_decodes_sequence_by_sequence(tiny_model, byte_tok) -> None:
    assert Scheduler(tiny_model, byte_tok, max_batch=2, ctx=64).batch_plan() is None
