"""Data-driven rank-collapse measures on constructed token matrices and a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glassformer.config import Config
from glassformer.diagnostics.activations import (
    activation_analysis,
    byte_chunks,
    collect_hidden_states,
    encode_chunks,
    probe_text,
    projection_matrices,
    projection_metrics,
    representation_measures,
)
from glassformer.model import Transformer


def test_identical_tokens_are_fully_collapsed() -> None:
    x = torch.randn(1, 12).repeat(9, 1) * 3.0
    m = representation_measures(x)
    assert m["token_cosine"] == pytest.approx(1.0)
    assert m["rank1_residual"] == pytest.approx(0.0, abs=1e-7)
    assert m["effective_rank"] == pytest.approx(1.0, abs=1e-6)
    assert m["residual_norm"] == pytest.approx(float(x[0].norm()), rel=1e-6)


def test_orthonormal_tokens_have_full_rank() -> None:
    t, d = 6, 10
    x = torch.eye(t, d)
    m = representation_measures(x)
    assert m["token_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert m["effective_rank"] == pytest.approx(t)
    # X - 1 xbar^T = I - 11^T / T has T - 1 unit eigenvalues and a zero
    assert m["effective_rank_centered"] == pytest.approx(t - 1)
    assert m["rank1_residual"] == pytest.approx(math.sqrt((t - 1) / t))
    assert m["residual_norm"] == pytest.approx(1.0)


def test_cosine_and_erank_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 7)) + 2.0  # a shared offset: positive mean cosine
    m = representation_measures(torch.from_numpy(x))
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = u @ u.T
    brute = (cos.sum() - np.trace(cos)) / (20 * 19)
    assert m["token_cosine"] == pytest.approx(brute, rel=1e-10)
    s2 = np.linalg.svd(x, compute_uv=False) ** 2
    p = s2 / s2.sum()
    assert m["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    xc = x - x.mean(0)
    assert m["rank1_residual"] == pytest.approx(np.linalg.norm(xc) / np.linalg.norm(x))


def tiny() -> Transformer:
    torch.manual_seed(0)
    return Transformer(Config.preset("tiny")).eval()


def test_hidden_states_are_the_block_outputs() -> None:
    model = tiny()
    ids = torch.randint(0, model.config.vocab_size, (2, 10))
    states = collect_hidden_states(model, ids)
    assert len(states) == model.config.n_layers + 1
    with torch.no_grad():
        last, _, _ = model.hidden_states(ids)
        torch.testing.assert_close(states[0], model.embed_tokens(ids))
    torch.testing.assert_close(states[-1], last)
    assert not model.layers[0]._forward_hooks and not model.layers[0]._forward_pre_hooks


def test_activation_analysis_averages_sequences_and_skips_the_first_token() -> None:
    model = tiny()
    seqs = byte_chunks(probe_text(), model.config.vocab_size, seq_len=24, max_sequences=3)
    assert len(seqs) == 3 and all(len(s) == 24 for s in seqs)
    model.train()
    out = activation_analysis(model, seqs)
    assert model.training  # the mode is restored
    assert out["n_tokens"] == 3 * 23 and out["skip_first"] == 1
    assert len(out["layers"]) == model.config.n_layers
    # the average of per-sequence measures
    one = [activation_analysis(model, [s])["layers"][2]["token_cosine"] for s in seqs]
    assert out["layers"][2]["token_cosine"] == pytest.approx(sum(one) / 3)
    with pytest.raises(ValueError):
        activation_analysis(model, [])


class FakeTokenizer:
    bos_id = 1

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens
        return [2 + (ord(c) % 50) for c in text]


def test_encode_chunks_prepends_bos() -> None:
    chunks = encode_chunks(FakeTokenizer(), "abc def\n\n" * 40, seq_len=16, max_sequences=4)
    assert len(chunks) == 4
    assert all(c[0] == 1 and len(c) == 16 for c in chunks)
    short = encode_chunks(FakeTokenizer(), "hi", seq_len=16)
    nl = 2 + ord("\n") % 50
    assert short == [[1, 2 + ord("h") % 50, 2 + ord("i") % 50, nl, nl]]


def test_probe_text_is_shipped() -> None:
    text = probe_text()
    assert len(text.split()) > 500 and text.count("\n\n") >= 5


def test_projection_names_for_each_family() -> None:
    for preset, expected in [
        ("tiny", {"q", "k", "v", "o", "gate", "up", "down"}),
        ("tiny-gpt2", {"q", "k", "v", "o", "up", "down"}),
        ("tiny-mixtral", {"q", "k", "v", "o", "experts.gate", "experts.up", "experts.down"}),
    ]:
        model = Transformer(Config.preset(preset))
        assert set(projection_matrices(model.layers[0])) == expected, preset
    rows = projection_metrics(tiny())
    assert len(rows) == 4
    q = rows[0]["q"]
    w = tiny().layers[0].attn.q_proj.weight.detach().double().numpy()
    assert q["spectral_norm"] == pytest.approx(np.linalg.norm(w, 2), rel=1e-9)
    assert q["stable_rank"] == pytest.approx(
        np.linalg.norm(w) ** 2 / np.linalg.norm(w, 2) ** 2, rel=1e-9
    )
