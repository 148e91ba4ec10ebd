"""Generation's limits: the context length, a cache that grows as needed, broken logits, and the
values a GenerationConfig accepts."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

import glassformer as gf
from glassformer.generation import GenerationConfig, NonFiniteLogitsError, generate
from glassformer.inference import optimize
from tests.generation.byte_tokenizer import ByteTokenizer

# The module (its name is shadowed by the function in the package's namespace).
generate_module = importlib.import_module("glassformer.generation.generate")


def _tiny(**overrides) -> gf.Transformer:
    torch.manual_seed(0)
    cfg = gf.Config.preset("tiny").replace(vocab_size=257, **overrides)
    model = gf.Transformer(cfg).eval()
    with torch.no_grad():  # random-init norms sit at 1: perturb so a misplaced key shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _greedy_without_cache(model: gf.Transformer, ids: list[int], n: int) -> list[int]:
    """The reference: every step a full forward pass over the whole sequence, no cache."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids) :]


@pytest.mark.parametrize("window", [None, 6])
def test_growing_cache_equals_full_recompute(
    monkeypatch: pytest.MonkeyPatch, window: int | None
) -> None:
    """A cache that starts small and doubles (full layers, and sliding layers that become rings
    on growth) gives the tokens of recomputing the whole sequence each step."""
    monkeypatch.setattr(generate_module, "INITIAL_NEW", 2)
    types = None if window is None else ("sliding", "full", "sliding", "full")
    model = _tiny(max_seq_len=64, sliding_window=window, layer_types=types)
    tok = ByteTokenizer()
    capacities: list[int] = []
    new_cache = model.new_cache

    def spy(batch, max_seq_len=None, **kw):
        capacities.append(max_seq_len)
        return new_cache(batch, max_seq_len, **kw)

    monkeypatch.setattr(model, "new_cache", spy)
    result = generate(model, tok, "abc", GenerationConfig(max_new_tokens=20, ignore_eos=True))
    assert result.tokens == _greedy_without_cache(model, tok.encode("abc"), 20)
    assert capacities == [5, 10, 20, 40]  # prompt + 2, then doubling as each fills


def test_padded_batch_with_growing_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate_module, "INITIAL_NEW", 3)
    model, tok = _tiny(max_seq_len=64), ByteTokenizer()
    cfg = GenerationConfig(max_new_tokens=15, ignore_eos=True)
    prompts = ["a longer prompt", "x"]
    batched = generate(model, tok, prompts, cfg)
    for prompt, result in zip(prompts, batched, strict=True):
        assert result.tokens == _greedy_without_cache(model, tok.encode(prompt), 15)


def _peak_rss_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_stops_at_the_context_with_bounded_memory() -> None:
    """Asking for two million tokens from a 48-position model: 48 positions in all, finish
    reason "context", and the process's peak memory barely moves (the cache is never sized
    for the request)."""
    model, tok = _tiny(max_seq_len=48), ByteTokenizer()
    prompt = "hello world"  # 11 tokens
    if not _peak_rss_reset():
        pytest.skip("needs Linux's /proc/self/clear_refs")
    before = _status_kb("VmHWM")
    result = generate(
        model, tok, prompt, GenerationConfig(max_new_tokens=2_000_000, ignore_eos=True)
    )
    grown_mb = (_status_kb("VmHWM") - before) / 1024
    assert len(result.prompt_tokens) + len(result.tokens) == 48
    assert result.finish_reason == "context"
    assert result.tokens == _greedy_without_cache(model, tok.encode(prompt), 37)
    assert grown_mb < 32, f"peak RSS grew {grown_mb:.0f} MB"


def test_prompt_filling_the_context_is_refused() -> None:
    model, tok = _tiny(max_seq_len=16), ByteTokenizer()
    with pytest.raises(ValueError, match="16 tokens leave no room in the model's context of 16"):
        generate(model, tok, "x" * 16, GenerationConfig(max_new_tokens=4))


def test_reply_ending_within_the_context_is_not_marked() -> None:
    model, tok = _tiny(max_seq_len=48), ByteTokenizer()
    result = generate(model, tok, "hi", GenerationConfig(max_new_tokens=5, ignore_eos=True))
    assert result.finish_reason == "length" and len(result.tokens) == 5


@pytest.mark.parametrize("fast", [False, True], ids=["plain", "optimized"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_weights_raise_instead_of_decoding(fast: bool, bad: float) -> None:
    """A NaN (or inf) in the weights would otherwise argmax to token 0, end of text here: an
    empty reply that looks normal."""
    model = _tiny(max_seq_len=64)
    with torch.no_grad():
        model.layers[1].mlp.down_proj.weight[3, 5] = bad
    if fast:
        model = optimize(model, "none", huge_pages=False)
    with pytest.raises(NonFiniteLogitsError, match=r"logits: (NaN|infinite) values at step 0"):
        generate(model, ByteTokenizer(), "hi", GenerationConfig(max_new_tokens=4))


def test_non_finite_logits_midway_name_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny(max_seq_len=64)
    forward = model.forward
    calls = {"n": 0}

    def breaking(*args, **kw):
        logits = forward(*args, **kw)
        calls["n"] += 1
        return logits.fill_(math.nan) if calls["n"] == 3 else logits

    monkeypatch.setattr(model, "forward", breaking)
    with pytest.raises(NonFiniteLogitsError, match="NaN values at step 2"):
        generate(model, ByteTokenizer(), "hi", GenerationConfig(max_new_tokens=8, ignore_eos=True))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 1e-40),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", -0.5),
        ("repetition_penalty", math.nan),
        ("repetition_penalty", math.inf),
        ("repetition_penalty", 0.0),
        ("top_p", math.nan),
        ("min_p", math.nan),
    ],
)
def test_config_refuses_non_finite_and_out_of_range(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: must be .*got {value}"):
        GenerationConfig(**{field: value})


def test_smallest_temperature_samples_like_greedy() -> None:
    """The smallest accepted temperature stays finite through sampling and, with logits a unit
    apart, picks the argmax (this model's top two logits lie far more than 1e-3 apart)."""
    model, tok = _tiny(max_seq_len=64), ByteTokenizer()
    greedy = generate(model, tok, "abc", GenerationConfig(max_new_tokens=6, ignore_eos=True))
    cold = GenerationConfig(max_new_tokens=6, ignore_eos=True, temperature=1e-3, seed=0)
    assert generate(model, tok, "abc", cold).tokens == greedy.tokens


def test_growing_cache_on_the_native_decode_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimized model decodes through a DecodePlan bound to one cache: after each growth a
    new plan follows the new cache, giving the tokens of a cache that never grows; and plans
    do not outlive their caches (each call's caches are freed)."""
    import gc

    model = optimize(_tiny(max_seq_len=128), "none", huge_pages=False)
    tok, cfg = ByteTokenizer(), GenerationConfig(max_new_tokens=40, ignore_eos=True)
    whole = generate(model, tok, "abc", cfg).tokens  # INITIAL_NEW (256) covers all 40
    monkeypatch.setattr(generate_module, "INITIAL_NEW", 3)
    assert generate(model, tok, "abc", cfg).tokens == whole
    gc.collect()
    assert len(model.__dict__.get("_plans", {})) == 0
