"""The batched decode step (`BatchDecodePlan`) against single-sequence steps (`DecodePlan`).

Rows of a batched step are sequences of their own lengths in their own caches. Each row runs
the single step's arithmetic (the products and norms treat rows independently, attention cuts a
row's keys as it would for the row alone), so a batched row equals the single step bit for bit
in float32, int8 and int4, whatever other rows share the step, and the caches it writes are the
ones a single step writes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import glassformer as gf
from glassformer.inference import native, optimize
from glassformer.inference.plan import BatchDecodePlan

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernels unavailable")

CAP = 128
LENGTHS = [1, 7, 33, 70, 100]  # past 64 keys a row's attention is split (2 threads, 1 KV head)


def perturbed(config: gf.Config, quant: str) -> gf.Transformer:
    torch.manual_seed(0)
    model = gf.Transformer(config).eval()
    for p in model.parameters():  # random-init biases are 0 and norms 1: perturb everything
        p.data.add_(torch.randn_like(p) * 0.05)
    return optimize(model, quant)


def configs() -> list[gf.Config]:
    tiny = gf.Config.preset("tiny")  # Llama: GQA, SwiGLU, tied embeddings
    return [
        tiny,
        dataclasses.replace(tiny, qkv_bias=True, tie_embeddings=False, n_kv_heads=4),
        dataclasses.replace(tiny, n_kv_heads=1),
    ]


def prefilled(model, lengths: list[int], cache_dtype=None) -> tuple[list, list]:
    """Two identical sets of single-row caches holding prompts of the given lengths."""
    batched, alone = [], []
    for n in lengths:
        ids = torch.randint(0, model.config.vocab_size, (1, n))
        for caches in (batched, alone):
            cache = model.new_cache(1, CAP, dtype=cache_dtype)
            model(ids, cache)
            caches.append(cache)
    return batched, alone


@pytest.mark.parametrize("config", configs(), ids=["llama-gqa", "qwen2-bias", "one-kv-head"])
@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_batched_rows_equal_single_steps(config: gf.Config, quant: str) -> None:
    model = perturbed(config, quant)
    torch.manual_seed(1)
    with torch.inference_mode():
        batched, alone = prefilled(model, LENGTHS)
        plan = BatchDecodePlan(model, batched)
        # ragged rows, subsets and orders changing from step to step, as a server's batch does
        for slots in ([0, 1, 2, 3, 4], [4, 2], [3], [1, 0, 4, 3], [2, 3, 0, 1, 4]):
            ids = torch.randint(0, config.vocab_size, (len(slots),))
            rows = plan.step(ids, slots).clone()
            for b, slot in enumerate(slots):
                assert model.decode_plan(alone[slot]) is not None
                single = model(ids[b].view(1, 1), alone[slot])[0, 0]
                assert torch.equal(rows[b], single), (slots, b)
    for a, b in zip(batched, alone, strict=True):
        assert a.length == b.length
        for la, lb in zip(a.layers, b.layers, strict=True):
            assert torch.equal(la.positions, lb.positions)
            assert torch.equal(la.keys, lb.keys) and torch.equal(la.values, lb.values)


def test_float16_cache_and_slot_reuse() -> None:
    """A slot whose sequence left is reset and refilled; its next rows equal a fresh cache's."""
    model = perturbed(gf.Config.preset("tiny"), "int4")
    torch.manual_seed(2)
    with torch.inference_mode():
        batched, alone = prefilled(model, [40, 90], torch.float16)
        plan = BatchDecodePlan(model, batched)
        plan.step(torch.tensor([3, 4]), [0, 1])
        batched[1].reset()  # the sequence in slot 1 finished; a newcomer takes the slot
        ids = torch.randint(0, 2048, (1, 5))
        model(ids, batched[1])
        fresh = model.new_cache(1, CAP, dtype=torch.float16)
        model(ids, fresh)
        model(torch.tensor([[3]]), alone[0])
        for token in (7, 8, 9):
            rows = plan.step(torch.tensor([token, token]), [1, 0]).clone()
            assert torch.equal(rows[0], model(torch.tensor([[token]]), fresh)[0, 0])
            assert torch.equal(rows[1], model(torch.tensor([[token]]), alone[0])[0, 0])


def test_batched_step_against_the_float_model() -> None:
    """Independent of the plans: the plain module forward over each whole sequence."""
    config = dataclasses.replace(gf.Config.preset("tiny"), n_kv_heads=1)
    torch.manual_seed(0)
    plain = gf.Transformer(config).eval()
    for p in plain.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    model = optimize(plain, "none")
    torch.manual_seed(3)
    prompts = [torch.randint(0, config.vocab_size, (1, n)) for n in (5, 80, 33)]
    with torch.inference_mode():
        caches = [model.new_cache(1, CAP) for _ in prompts]
        for ids, cache in zip(prompts, caches, strict=True):
            model(ids, cache)
        plan = BatchDecodePlan(model, caches)
        nxt = torch.tensor([11, 12, 13])
        rows = plan.step(nxt, [0, 1, 2])
        for b, ids in enumerate(prompts):
            full = plain(torch.cat([ids, nxt[b].view(1, 1)], 1))[0, -1]
            assert float((rows[b] - full).abs().max()) < 1e-4


def test_bad_steps_are_refused() -> None:
    model = perturbed(gf.Config.preset("tiny"), "none")
    with torch.inference_mode():
        caches = [model.new_cache(1, 4) for _ in range(2)]
        model(torch.tensor([[1, 2, 3, 4]]), caches[0])
        plan = BatchDecodePlan(model, caches)
        with pytest.raises(ValueError, match="distinct slots"):
            plan.step(torch.tensor([1, 2]), [1, 1])
        with pytest.raises(ValueError, match="distinct slots"):
            plan.step(torch.tensor([1]), [0, 1])
        with pytest.raises(ValueError, match="KV cache full"):
            plan.step(torch.tensor([5]), [0])
        with pytest.raises(ValueError, match="one sequence"):
            BatchDecodePlan(model, [model.new_cache(2, 4)])
