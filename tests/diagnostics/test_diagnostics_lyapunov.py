"""The 1:1-rule analysis on constructed weights with analytically known ratio, erank and
collapse layer, and against an independent numpy implementation of the study's recursion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glassformer.config import Config
from glassformer.diagnostics.lyapunov import (
    layer_maps,
    spectral_ratios,
    spectrum_stats,
    weight_analysis,
)
from glassformer.model import Transformer


def small_model(
    d: int = 16, heads: int = 2, head_dim: int = 8, layers: int = 6, ff: int = 32, **kw: object
) -> Transformer:
    cfg = Config(
        vocab_size=64,
        d_model=d,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kw.pop("n_kv_heads", heads),  # type: ignore[arg-type]
        head_dim=head_dim,
        d_ff=ff,
        max_seq_len=64,
        **kw,  # type: ignore[arg-type]
    )
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def set_spiked_weights(model: Transformer, m: np.ndarray, c: float) -> None:
    """W_down W_up = diag(m) (through a wider hidden layer), W_o = c I (square)."""
    d = model.config.d_model
    f = model.config.d_ff
    with torch.no_grad():
        for block in model.layers:
            up = torch.zeros(f, d)
            up[:d, :d] = torch.diag(torch.tensor(m, dtype=torch.float32))
            down = torch.zeros(d, f)
            down[:, :d] = torch.eye(d)
            block.mlp.up_proj.weight.copy_(up)
            block.mlp.down_proj.weight.copy_(down)
            block.attn.o_proj.weight.copy_(c * torch.eye(d))


def analytic_spike(d: int, s: float, c: float, n_layers: int) -> list[dict[str, float]]:
    """A = diag(1 + c + s, 1 + c, ..., 1 + c): C after L layers has one eigenvalue
    r = ((1 + c + s) / (1 + c))^(2L) and d - 1 equal to 1 (before normalisation)."""
    out = []
    for layer in range(1, n_layers + 1):
        r = ((1 + c + s) / (1 + c)) ** (2 * layer)
        z = r + d - 1
        p1, q = r / z, 1 / z
        entropy = -(p1 * math.log(p1) + (d - 1) * q * math.log(q))
        out.append(
            {
                "effective_rank": math.exp(entropy),
                "participation_ratio": 1 / (p1 * p1 + (d - 1) * q * q),
                "condition_number": r,
            }
        )
    return out


def test_spiked_model_matches_closed_form() -> None:
    d, s, c, n_layers = 16, 1.0, 0.5, 6
    model = small_model(d=d, layers=n_layers)
    m = np.zeros(d)
    m[0] = s
    set_spiked_weights(model, m, c)
    wa = weight_analysis(model)
    expected = analytic_spike(d, s, c, n_layers)
    for row, exp in zip(wa.layers, expected, strict=True):
        assert row.mlp_spectral_norm == pytest.approx(s, rel=1e-6)
        assert row.attn_spectral_norm == pytest.approx(c, rel=1e-6)
        assert row.spectral_ratio == pytest.approx(s / c, rel=1e-6)
        assert row.in_band  # rho = 2, the edge of the band
        assert row.A_spectral_norm == pytest.approx(1 + c + s, rel=1e-6)
        assert row.effective_rank == pytest.approx(exp["effective_rank"], rel=1e-9)
        assert row.participation_ratio == pytest.approx(exp["participation_ratio"], rel=1e-9)
        assert row.condition_number == pytest.approx(exp["condition_number"], rel=1e-9)
    assert wa.in_band_fraction == 1.0
    assert wa.A_spectral_norm_mean == pytest.approx(1 + c + s)


def test_collapse_layer_is_the_first_below_threshold() -> None:
    d, s, c, n_layers = 8, 3.0, 0.5, 8
    model = small_model(d=d, heads=2, head_dim=4, layers=n_layers)
    m = np.zeros(d)
    m[0] = s
    set_spiked_weights(model, m, c)
    expected = [e["effective_rank"] for e in analytic_spike(d, s, c, n_layers)]
    for threshold in (1.05, 1.5, 3.0):
        first = next((i for i, e in enumerate(expected) if e < threshold), None)
        wa = weight_analysis(model, erank_threshold=threshold)
        assert wa.collapse_layer == first
    assert first is not None and first > 0  # the thresholds do separate layers here
    assert weight_analysis(model, erank_threshold=1.0).collapse_layer is None
    assert weight_analysis(model).in_band_fraction == 0.0  # rho = 6


def test_non_square_output_projection_uses_wo_wo_transpose() -> None:
    d, alpha, beta = 16, 0.8, 0.7
    model = small_model(d=d, heads=4, head_dim=8, layers=2)  # W_o: 16 x 32
    m = np.full(d, alpha)
    with torch.no_grad():
        for block in model.layers:
            f = model.config.d_ff
            up = torch.zeros(f, d)
            up[:d] = torch.diag(torch.tensor(m, dtype=torch.float32))
            down = torch.zeros(d, f)
            down[:, :d] = torch.eye(d)
            block.mlp.up_proj.weight.copy_(up)
            block.mlp.down_proj.weight.copy_(down)
            wo = torch.zeros(d, 32)
            wo[:, :d] = beta * torch.eye(d)
            block.attn.o_proj.weight.copy_(wo)
    wa = weight_analysis(model)
    row = wa.layers[0]
    assert not row.attn_square
    assert row.attn_spectral_norm == pytest.approx(beta**2, rel=1e-6)
    assert row.spectral_ratio == pytest.approx(alpha / beta**2, rel=1e-6)
    # A = (1 + alpha + beta^2) I: C stays the identity, erank = d
    assert row.effective_rank == pytest.approx(d, rel=1e-9)
    assert row.A_spectral_norm == pytest.approx(1 + alpha + beta**2, rel=1e-6)
    assert spectral_ratios(model)[0]["spectral_ratio"] == pytest.approx(alpha / beta**2, rel=1e-6)


def numpy_reference(model: Transformer) -> list[dict[str, float]]:
    """The study's recursion written independently in numpy (full SVDs, no power iteration)."""
    d = model.config.d_model
    c = np.eye(d)
    rows = []
    for block in model.layers:
        up = block.mlp.up_proj.weight.detach().double().numpy()
        down = block.mlp.down_proj.weight.detach().double().numpy()
        wo = block.attn.o_proj.weight.detach().double().numpy()
        w_mlp = down @ up
        w_attn = wo if wo.shape[0] == wo.shape[1] else wo @ wo.T
        a = np.eye(d) + w_mlp + w_attn
        nxt = a @ c @ a.T
        c = nxt / np.linalg.norm(nxt, 2)
        lam = np.clip(np.linalg.eigvalsh(c), 0, None)
        p = lam / lam.sum()
        nz = p[p > 0]
        floor = np.finfo(np.float64).eps * max(1.0, lam.max()) * d
        rows.append(
            {
                "spectral_ratio": np.linalg.norm(w_mlp, 2) / np.linalg.norm(w_attn, 2),
                "A_spectral_norm": np.linalg.norm(a, 2),
                "effective_rank": float(np.exp(-(nz * np.log(nz)).sum())),
                "participation_ratio": float(1 / (p**2).sum()),
                "condition_number": float(lam.max() / lam[lam > floor].min()),
            }
        )
    return rows


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # square W_o, SwiGLU
        dict(heads=4, head_dim=8, n_kv_heads=2),  # GQA, W_o 16 x 32
        dict(mlp="mlp", activation="gelu", norm="layernorm", norm_bias=True),  # GPT-2 style
        dict(norm_placement="sandwich", norm_unit_offset=True, heads=2, head_dim=16),  # Gemma
    ],
)
def test_against_independent_numpy_reference(kw: dict) -> None:
    model = small_model(layers=5, **kw)
    with torch.no_grad():  # init_std 0.02 is nearly the identity map: make the test bite
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20.0)
    ours = weight_analysis(model)
    ref = numpy_reference(model)
    for row, exp in zip(ours.layers, ref, strict=True):
        for key, value in exp.items():
            assert getattr(row, key) == pytest.approx(value, rel=1e-6), key


def test_gate_is_dropped() -> None:
    model = small_model(layers=3)
    before = weight_analysis(model).to_dict()
    with torch.no_grad():
        for block in model.layers:
            block.mlp.gate_proj.weight.normal_(0, 5.0)
    assert weight_analysis(model).to_dict() == before


def test_spectrum_stats_known_values() -> None:
    flat = spectrum_stats(torch.tensor([1.0] * 5 + [0.0] * 3))
    assert flat["effective_rank"] == pytest.approx(5.0)
    assert flat["participation_ratio"] == pytest.approx(5.0)
    assert flat["condition_number"] == pytest.approx(1.0)  # zeros are not "nonzero"
    two = spectrum_stats(torch.tensor([4.0, 1.0]))
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert two["effective_rank"] == pytest.approx(math.exp(entropy))
    assert two["participation_ratio"] == pytest.approx(1 / (0.64 + 0.04))
    assert two["condition_number"] == pytest.approx(4.0)
    rank_one = spectrum_stats(torch.tensor([1.0, -1e-18, 0.0]))  # rounding below zero
    assert rank_one["effective_rank"] == pytest.approx(1.0)
    assert rank_one["condition_number"] == pytest.approx(1.0)


def test_fast_ratios_match_the_full_analysis() -> None:
    for preset in ("tiny", "tiny-gemma3", "tiny-mixtral", "tiny-gpt2"):
        torch.manual_seed(0)
        model = Transformer(Config.preset(preset)).eval()
        full = weight_analysis(model)
        fast = spectral_ratios(model)
        for row, f in zip(full.layers, fast, strict=True):
            assert f["spectral_ratio"] == pytest.approx(row.spectral_ratio, rel=1e-6), preset
            assert f["mlp_spectral_norm"] == pytest.approx(row.mlp_spectral_norm, rel=1e-6)


def test_moe_mean_and_shared_choices() -> None:
    torch.manual_seed(0)
    model = Transformer(Config.preset("tiny-deepseek-v3")).eval()  # MLA, shared experts
    cfg = model.config
    layer = cfg.first_k_dense  # the first MoE layer
    block = model.layers[layer]
    ex, shared = block.mlp.experts, block.mlp.shared
    mean = sum(ex.down_proj[e].double() @ ex.up_proj[e].double() for e in range(cfg.n_experts)) * (
        cfg.routed_scaling / cfg.n_experts
    )
    shared_map = shared.down_proj.weight.double() @ shared.up_proj.weight.double()
    got_mean = layer_maps(block, moe="mean").w_mlp
    got_shared = layer_maps(block, moe="shared").w_mlp
    assert torch.allclose(got_mean, mean.detach() + shared_map.detach(), atol=1e-12)
    assert torch.allclose(got_shared, shared_map.detach(), atol=1e-12)
    wa = weight_analysis(model)
    assert len(wa.layers) == cfg.n_layers
    assert all(math.isfinite(r.effective_rank) for r in wa.layers)


def test_ov_variant_and_norm_folding() -> None:
    model = small_model(heads=4, head_dim=8, n_kv_heads=2, layers=2)
    block = model.layers[0]
    wv = block.attn.v_proj.weight.detach().double()  # [2*8, 16]
    wo = block.attn.o_proj.weight.detach().double()  # [16, 4*8]
    wv_full = wv.view(2, 8, 16).repeat_interleave(2, 0).reshape(32, 16)  # heads 0,1 -> kv 0
    maps = layer_maps(block, attention="ov")
    assert torch.allclose(maps.w_attn, wo @ wv_full, atol=1e-12)
    assert maps.attn_square
    # fresh norms have unit gains: folding changes nothing; doubling the MLP pre-norm gain
    # doubles W_mlp
    plain = layer_maps(block)
    assert torch.allclose(layer_maps(block, fold_norms=True).w_mlp, plain.w_mlp)
    with torch.no_grad():
        block.mlp_norm.weight.fill_(2.0)
    assert torch.allclose(layer_maps(block, fold_norms=True).w_mlp, 2 * plain.w_mlp)
    with pytest.raises(ValueError, match="attention"):
        layer_maps(block, attention="nope")  # type: ignore[arg-type]
