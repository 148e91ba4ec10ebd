"""Our logit processors against HF transformers' own (an independent implementation)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.generation.sampling import SamplingConfig, process_logits, sample

generation = pytest.importorskip("transformers.generation.logits_process")


def _hf_process(logits: torch.Tensor, context: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    procs = []
    if cfg.repetition_penalty != 1.0:
        procs.append(generation.RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
    if not cfg.greedy:
        procs.append(generation.TemperatureLogitsWarper(cfg.temperature))
        if cfg.top_k:
            procs.append(generation.TopKLogitsWarper(cfg.top_k))
        if cfg.top_p < 1.0:
            procs.append(generation.TopPLogitsWarper(cfg.top_p))
        if cfg.min_p > 0:
            procs.append(generation.MinPLogitsWarper(cfg.min_p))
    out = logits.clone()
    for proc in procs:
        out = proc(context, out)
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.7]),
    top_k=st.sampled_from([0, 1, 5, 40]),
    top_p=st.sampled_from([1.0, 0.9, 0.5, 0.05]),
    min_p=st.sampled_from([0.0, 0.05, 0.3]),
    penalty=st.sampled_from([1.0, 1.3, 0.8]),
)
def test_processors_match_hf(seed, temperature, top_k, top_p, min_p, penalty) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 50, generator=gen) * 3
    context = torch.randint(0, 50, (3, 7), generator=gen)
    cfg = SamplingConfig(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=penalty,
    )
    ours = process_logits(logits, context, cfg)
    theirs = _hf_process(logits, context, cfg)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    finite = ~torch.isinf(ours)
    assert torch.allclose(ours[finite], theirs[finite], atol=1e-5)


def test_greedy_is_argmax_and_seeded_sampling_repeats() -> None:
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    context = torch.zeros(4, 0, dtype=torch.long)
    assert torch.equal(sample(logits, context, SamplingConfig()), logits.argmax(-1))
    cfg = SamplingConfig(temperature=1.0, top_p=0.9)
    a = sample(logits, context, cfg, torch.Generator().manual_seed(7))
    b = sample(logits, context, cfg, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack(
        [
            sample(
                logits, torch.zeros(1, 0, dtype=torch.long), SamplingConfig(temperature=1.0), gen
            )
            for _ in range(4000)
        ]
    )
    freq = torch.bincount(draws.flatten(), minlength=3).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -1.0),
        ("top_p", 0.0),
        ("top_k", -2),
        ("min_p", 1.5),
        ("repetition_penalty", 0.0),
    ],
)
def test_bad_sampling_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})
