"""Our logit processors against HF transformers' own (an independent implementation)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.generation.sampling import SamplingConfig, candidates, process_logits, sample

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


# The sort-based truncation the candidate lists replace, kept as the reference: top-k masks
# below the k-th largest logit, top-p sorts the whole vocabulary and keeps each token while
# the mass strictly before it is below p, min-p compares with the largest probability.
def _reference_process(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        remove = probs.cumsum(-1) - probs >= cfg.top_p
        remove[..., 0] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    if cfg.min_p > 0:
        probs = logits.softmax(-1)
        threshold = cfg.min_p * probs.max(-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def _clear_of_boundaries(logits: torch.Tensor, cfg: SamplingConfig) -> bool:
    """No token's top-p mass-before or min-p ratio within float32 rounding of the cut, so
    the kept set is defined by the arithmetic, not by the last bit of a sum."""
    x = logits.double() / cfg.temperature
    if 0 < cfg.top_k < x.shape[-1]:
        x = x.masked_fill(x < torch.topk(x, cfg.top_k, dim=-1).values[..., -1:], float("-inf"))
    if cfg.top_p < 1.0:
        probs = x.sort(-1, descending=True).values.softmax(-1)
        if ((probs.cumsum(-1) - probs - cfg.top_p).abs() < 1e-5).any():
            return False
    if cfg.min_p > 0:
        probs = x.softmax(-1)
        ratio = probs / probs.max(-1, keepdim=True).values
        if ((ratio - cfg.min_p).abs() < 1e-5).any():
            return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    vocab=st.sampled_from([2, 7, 64, 65, 300, 5000]),
    scale=st.sampled_from([0.01, 0.3, 1.0, 4.0, 20.0]),
    temperature=st.sampled_from([0.3, 0.7, 1.0, 2.5]),
    top_k=st.sampled_from([0, 1, 3, 40, 64, 600]),
    top_p=st.sampled_from([1.0, 0.999, 0.95, 0.9, 0.5, 0.05]),
    min_p=st.sampled_from([0.0, 0.0, 0.05, 0.3]),
)
def test_candidate_truncation_matches_the_full_sort(
    seed, vocab, scale, temperature, top_k, top_p, min_p
) -> None:
    """process_logits (candidate lists) against the whole-vocabulary sort: the same kept
    tokens and the same draw probabilities, for every row of a batch. Flat rows (small scale,
    large vocabularies) make top-p's candidate list grow several times."""
    from hypothesis import assume

    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(seed)) * scale
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    assume(_clear_of_boundaries(logits, cfg))
    empty = torch.zeros(3, 0, dtype=torch.long)
    ours = process_logits(logits, empty, cfg)
    ref = _reference_process(logits, cfg)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    finite = ~torch.isinf(ref)
    assert torch.allclose(ours[finite], ref[finite], atol=1e-5, rtol=1e-6)
    # the probabilities sample() draws with, scattered back over the vocabulary
    values, ids = candidates(logits, empty, cfg)
    probs = values.softmax(-1)
    if ids is not None:
        probs = torch.zeros(3, vocab).scatter(-1, ids, probs)
    assert torch.allclose(probs, ref.softmax(-1), atol=1e-6)


def test_top_k_keeps_ties_with_the_kth_logit() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0, 2.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    cfg = SamplingConfig(temperature=1.0, top_k=2)
    empty = torch.zeros(2, 0, dtype=torch.long)
    ours = process_logits(logits, empty, cfg)
    theirs = _hf_process(logits, empty, cfg)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.isfinite(ours[0]).sum() == 4 and torch.isfinite(ours[1]).sum() == 2


def test_top_p_draws_follow_the_truncated_distribution() -> None:
    """Draws from the candidate list against the exact truncated probabilities: top-p 0.8
    over [0.4, 0.3, 0.15, 0.1, 0.05] keeps the first three, renormalised."""
    p = torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]])
    cfg = SamplingConfig(temperature=1.0, top_p=0.8)
    gen = torch.Generator().manual_seed(1)
    empty = torch.zeros(1, 0, dtype=torch.long)
    draws = torch.stack([sample(p.log(), empty, cfg, gen) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    exact = torch.tensor([0.4, 0.3, 0.15, 0.0, 0.0]) / 0.85
    assert torch.allclose(freq, exact, atol=0.03)
    assert freq[3:].sum() == 0
