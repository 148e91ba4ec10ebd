"""glassformer against HF transformers: logits, incremental decoding and round trips."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from tests.families import ABSOLUTE_POSITION_CONFIGS, SEQ, TINY_HF_CONFIGS, VOCAB, build_hf

pytest.importorskip("transformers")

FAMILIES = sorted(TINY_HF_CONFIGS)
TOLERANCE = 1e-4


def _ids(batch: int = 2, seq: int = SEQ, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request: pytest.FixtureRequest) -> tuple[str, object, gf.Transformer]:
    hf = build_hf(request.param)
    return request.param, hf, gf.from_hf(hf).eval()


@pytest.mark.parametrize("impl", ["native", "sdpa", "eager"])
def test_logits_match_hf(pair: tuple, impl: str) -> None:
    name, hf, ours = pair
    ours.set_attention_impl(impl)
    ids = _ids()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (2, SEQ, VOCAB)
    err = (got - expected).abs().max().item()
    assert err <= TOLERANCE, f"{name}: max abs logit error {err:.3g}"


def test_incremental_decoding_matches_full_forward(pair: tuple) -> None:
    """Prefill a chunk, then decode one token at a time (past every sliding window)."""
    name, _, ours = pair
    ours.set_attention_impl("sdpa")
    ids = _ids(seed=1)
    with torch.no_grad():
        full = ours(ids)
        switch = ours.rope_switch_at
        if switch is not None and switch < SEQ:
            # LongRoPE: a position's logits are the forward's over the sequence up to it, which
            # before the switch uses the short factors (causality makes that the full forward's
            # for every other model)
            full[:, :switch] = ours(ids[:, :switch])
        cache = ours.new_cache(batch_size=2, max_seq_len=SEQ)
        pieces = [ours(ids[:, :11], cache)]
        pieces += [ours(ids[:, t : t + 1], cache) for t in range(11, 30)]
        pieces.append(ours(ids[:, 30:], cache))  # a multi-token chunk into a full ring
    err = (torch.cat(pieces, dim=1) - full).abs().max().item()
    assert err <= TOLERANCE, f"{name}: cached decoding differs from full forward by {err:.3g}"
    assert cache.length == SEQ


def test_sliding_layers_keep_only_their_window(pair: tuple) -> None:
    name, _, ours = pair
    cache = ours.new_cache(batch_size=1, max_seq_len=SEQ)
    longer = ours.new_cache(batch_size=1, max_seq_len=4 * SEQ)
    for i, layer in enumerate(cache.layers):
        if ours.config.layer_type(i) == "linear":  # a fixed-size state, whatever the length
            assert 0 < layer.nbytes() == longer.layers[i].nbytes(), f"{name} layer {i}"
            continue
        if ours.config.kv_source(i) is not None:  # KV sharing: attends to another layer's cache
            assert layer is None, f"{name} layer {i} shares KV but has a cache"
            continue
        window = ours.config.kv_span(i)  # a window, or an attention chunk
        expected = min(window, SEQ) if window is not None else SEQ
        assert layer.capacity == expected, f"{name} layer {i}"
        if ours.config.attention == "mla":  # the compressed latent, not per-head K/V
            assert layer.keys.shape == (1, expected, ours.config.kv_lora_rank)
            assert layer.values.shape == (1, expected, ours.config.qk_rope_head_dim)


def test_round_trip_through_hf_is_identical(pair: tuple) -> None:
    name, hf, ours = pair
    back = gf.to_hf(ours)
    back.set_attn_implementation("eager")
    ids = _ids(seed=2)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, hf(ids).logits), name
    assert gf.Config.from_hf(back.config.to_dict()) == ours.config


def test_config_round_trip(pair: tuple) -> None:
    _, hf, ours = pair
    cfg = gf.Config.from_hf(hf.config.to_dict())
    assert cfg == ours.config
    assert gf.Config.from_hf(cfg.to_hf()) == cfg


def test_from_hf_directory(tmp_path, pair: tuple) -> None:
    name, hf, ours = pair
    hf.save_pretrained(tmp_path)
    loaded = gf.from_hf(tmp_path).eval()
    ours.set_attention_impl("native")  # the fixture is shared: another test may have changed it
    ids = _ids(seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(ids), ours(ids)), name


def test_left_padded_batch_matches_each_row_alone(pair: tuple) -> None:
    """Rows of different lengths in one batch (left padding), prefill and cached decoding."""
    name, hf, ours = pair
    ours.set_attention_impl("sdpa")
    long, short = _ids(1, 30, seed=4), _ids(1, 19, seed=5)
    pad = 30 - 19
    batch = torch.cat((long, torch.cat((torch.zeros(1, pad, dtype=torch.long), short), 1)))
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    with torch.no_grad():
        alone = [ours(long), ours(short)]
        padded = ours(batch, attention_mask=mask)
        cache = ours.new_cache(2, 40)
        prefill = ours(batch[:, :25], cache, attention_mask=mask[:, :25])
        steps = [ours(batch[:, t : t + 1], cache) for t in range(25, 30)]
        hf_out = hf(
            batch, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)
        ).logits
    cached = torch.cat([prefill, *steps], dim=1)
    short_row = hf_out[1, pad:] if name in ABSOLUTE_POSITION_CONFIGS else alone[1][0]
    for got in (padded, cached):
        assert (got[0] - alone[0][0]).abs().max() <= TOLERANCE, name
        assert (got[1, pad:] - short_row).abs().max() <= TOLERANCE, name
    assert (padded[1, pad:] - hf_out[1, pad:]).abs().max() <= TOLERANCE, name
