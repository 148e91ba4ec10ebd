"""Gated DeltaNet against HF's Qwen3.5 layer (same perturbed weights) and against the recurrence
written out literally in float64: chunked prefill, step-by-step decoding, continuing a state,
left padding, and the state's fixed size."""

from __future__ import annotations

import pytest
import torch

from glassformer.components.gated_deltanet import (
    GatedDeltaNet,
    chunk_gated_delta_rule,
    recurrent_gated_delta_rule,
)
from glassformer.config import Config

qwen3_5 = pytest.importorskip("transformers.models.qwen3_5.modeling_qwen3_5")

D, NK, NV, DK, DV, K = 64, 2, 4, 16, 24, 4  # value heads outnumber key heads
TOL = 1e-4


def hf_layer(seed: int = 0) -> torch.nn.Module:
    from transformers import Qwen3_5TextConfig

    hf_cfg = Qwen3_5TextConfig(
        vocab_size=97, hidden_size=D, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=96, linear_num_key_heads=NK,
        linear_num_value_heads=NV, linear_key_head_dim=DK, linear_value_head_dim=DV,
        linear_conv_kernel_dim=K, layer_types=["linear_attention"], rms_norm_eps=1e-6,
    )  # fmt: skip
    torch.manual_seed(seed)
    layer = qwen3_5.Qwen3_5GatedDeltaNet(hf_cfg, 0).float().eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in layer.parameters():  # move norms off 1, biases off their init
            p.add_(torch.randn(p.shape, generator=gen) * (0.1 if p.dim() == 1 else 0.05))
    return layer


def config() -> Config:
    return Config(
        vocab_size=97, d_model=D, n_layers=1, n_heads=4, layer_types=("linear",),
        linear_n_k_heads=NK, linear_n_v_heads=NV, linear_k_head_dim=DK, linear_v_head_dim=DV,
        linear_conv_kernel=K, norm_eps=1e-6,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> tuple[GatedDeltaNet, torch.nn.Module]:
    hf = hf_layer()
    ours = GatedDeltaNet(config(), 0).eval()
    ours.load_state_dict(hf.state_dict())  # the same names and shapes: strict
    return ours, hf


def inputs(t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, t, D, generator=torch.Generator().manual_seed(seed))


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("t", [40, 150])
@torch.no_grad()
def test_prefill_matches_hf(pair: tuple[GatedDeltaNet, torch.nn.Module], t: int) -> None:
    ours, hf = pair
    x = inputs(t)
    assert maxdiff(ours(x), hf(x)) <= TOL


@torch.no_grad()
def test_decode_step_by_step(pair: tuple[GatedDeltaNet, torch.nn.Module]) -> None:
    ours, hf = pair
    x = inputs(70, seed=1)
    full = hf(x)
    state = ours.new_state(2, torch.float32)
    steps = torch.cat([ours(x[:, i : i + 1], state) for i in range(x.shape[1])], 1)
    assert maxdiff(steps, full) <= TOL


@torch.no_grad()
def test_prefill_then_decode_and_continue(pair: tuple[GatedDeltaNet, torch.nn.Module]) -> None:
    """Chunked prefill into a state, a few recurrent steps, then a multi-chunk continuation
    (the chunked form from a state): all equal one full forward."""
    ours, hf = pair
    x = inputs(150, seed=2)
    full = hf(x)
    state = ours.new_state(2, torch.float32)
    parts = [ours(x[:, :37], state)]
    parts += [ours(x[:, i : i + 1], state) for i in range(37, 41)]
    parts.append(ours(x[:, 41:], state))
    assert maxdiff(torch.cat(parts, 1), full) <= TOL
    nbytes = state.nbytes()
    state.reset()
    assert maxdiff(ours(x[:, :50], state), full[:, :50]) <= TOL
    assert state.nbytes() == nbytes


@torch.no_grad()
def test_left_padding(pair: tuple[GatedDeltaNet, torch.nn.Module]) -> None:
    """Row 1 is left-padded by 9 tokens: its real tokens give what they give unpadded, and the
    whole batch matches HF with the same mask; decoding continues from the padded prefill."""
    ours, hf = pair
    x = inputs(45, seed=3)
    pad = 9
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, :pad] = False
    x_padded = x.clone()
    x_padded[1, :pad] = torch.randn(pad, D)  # garbage under the padding
    y = ours(x_padded, key_valid=mask)
    assert maxdiff(y, hf(x_padded, attention_mask=mask.long())) <= TOL
    assert maxdiff(y[1:, pad:], hf(x[1:, pad:])) <= TOL
    state = ours.new_state(2, torch.float32)
    ours(x_padded[:, :40], state, key_valid=mask[:, :40])
    steps = torch.cat([ours(x_padded[:, i : i + 1], state) for i in range(40, 45)], 1)
    assert maxdiff(steps, y[:, 40:]) <= TOL


def naive_recurrence(q, k, v, g, beta, state=None):  # type: ignore[no-untyped-def]
    """S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T ; o_t = S_t q_t, in the
    paper's orientation (S: d_v x d_k), float64, one token at a time."""
    b, t, hk, dk = k.shape
    h, dv = v.shape[-2:]
    r = h // hk
    q, k = (x.double().repeat_interleave(r, dim=2) for x in (q, k))  # key head i: r value heads
    v, g, beta = (x.double() for x in (v, g, beta))
    s = torch.zeros(b, h, dv, dk, dtype=torch.float64)
    if state is not None:
        s = state.double().transpose(-1, -2)
    eye = torch.eye(dk, dtype=torch.float64)
    outs = []
    for n in range(t):
        kk, qq, vv = k[:, n], q[:, n], v[:, n]  # [B, H, d]
        a, be = g[:, n].exp()[..., None, None], beta[:, n][..., None, None]
        outer_kk = kk[..., :, None] * kk[..., None, :]
        s = a * s @ (eye - be * outer_kk) + be * vv[..., :, None] * kk[..., None, :]
        outs.append((s @ qq[..., None])[..., 0])
    return torch.stack(outs, 1), s.transpose(-1, -2)


def random_rule_inputs(t: int, seed: int = 0):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(2, t, NK, DK, generator=gen), dim=-1) * DK**-0.5
    k = torch.nn.functional.normalize(torch.randn(2, t, NK, DK, generator=gen), dim=-1)
    v = torch.randn(2, t, NV, DV, generator=gen)
    g = -torch.rand(2, t, NV, generator=gen) * 0.5
    beta = torch.rand(2, t, NV, generator=gen)
    state = torch.randn(2, NV, DK, DV, generator=gen) * 0.3
    return q, k, v, g, beta, state


def test_both_forms_match_float64_recurrence() -> None:
    q, k, v, g, beta, state = random_rule_inputs(70)
    want, want_state = naive_recurrence(q, k, v, g, beta, state)
    o, final = chunk_gated_delta_rule(q, k, v, g, beta, state)
    assert maxdiff(o.double(), want) <= TOL
    assert maxdiff(final.double(), want_state) <= TOL
    # small chunks: many chunk boundaries, a ragged last chunk
    o, final = chunk_gated_delta_rule(q, k, v, g, beta, state, chunk=16)
    assert maxdiff(o.double(), want) <= TOL
    assert maxdiff(final.double(), want_state) <= TOL
    memory = state.clone()  # the recurrent form advances the state in place
    o = recurrent_gated_delta_rule(q, k, v, g, beta, memory)
    assert maxdiff(o.double(), want) <= TOL
    assert maxdiff(memory.double(), want_state) <= TOL


@pytest.mark.parametrize("dv", [DV, 20])  # 20: a tail beyond the 8-wide vectors
def test_native_decode_step(dv: int) -> None:
    """The C step (kernels/delta.c) against the component's PyTorch step."""
    from glassformer import kernels
    from glassformer.kernels.delta_rule import delta_step

    if not kernels.available():
        pytest.skip("native kernels unavailable")
    q, k, v, g, beta, state = random_rule_inputs(1, seed=5)
    v, state = v[..., :dv].contiguous(), state[..., :dv].contiguous()
    ours, ref = state.clone(), state.clone()
    with torch.no_grad():
        o = delta_step(q, k, v, g, beta, ours)
        want = recurrent_gated_delta_rule(q, k, v, g, beta, ref)
    assert maxdiff(o, want) <= 1e-6 and maxdiff(ours, ref) <= 1e-6


@torch.no_grad()
def test_decode_paths_agree(pair: tuple[GatedDeltaNet, torch.nn.Module]) -> None:
    """Decoding through the native step (the default) and through PyTorch's (impl "eager")."""
    ours, _ = pair
    x = inputs(20, seed=6)
    outs = []
    for impl in ("native", "eager"):
        ours.impl = impl
        state = ours.new_state(2, torch.float32)
        ours(x[:, :12], state)
        outs.append(torch.cat([ours(x[:, i : i + 1], state) for i in range(12, 20)], 1))
    ours.impl = "native"
    assert maxdiff(*outs) <= 1e-6


def test_chunked_form_gradients() -> None:
    """Training runs the chunked form: its gradients equal those of the float64 recurrence."""
    args = [x.requires_grad_() for x in random_rule_inputs(20, seed=4)]
    grads = []
    for rule in (chunk_gated_delta_rule, naive_recurrence):
        o, final = rule(*args)
        loss = o.sin().sum() + final.cos().sum()
        grads.append(torch.autograd.grad(loss, args))
    for a, b in zip(*grads, strict=True):
        assert maxdiff(a.double(), b) <= TOL


def test_state_size_is_constant() -> None:
    layer = GatedDeltaNet(config(), 0)
    state = layer.new_state(2, torch.bfloat16)
    conv_dim = 2 * NK * DK + NV * DV
    assert state.nbytes() == 2 * conv_dim * (K - 1) * 2 + 2 * NV * DK * DV * 4
    before = state.nbytes()
    with torch.no_grad():
        layer.to(torch.bfloat16)(inputs(130).bfloat16(), state)
    assert state.nbytes() == before
    assert state.recurrent.dtype == torch.float32 and state.conv.dtype == torch.bfloat16


def test_config_requires_linear_sizes() -> None:
    with pytest.raises(ValueError, match="linear_v_head_dim"):
        config().replace(linear_v_head_dim=None)
    with pytest.raises(ValueError, match="linear_n_k_heads"):
        config().replace(linear_n_k_heads=3)
    with pytest.raises(ValueError, match="linear_conv_kernel"):
        config().replace(linear_conv_kernel=0)
    cfg = config()
    assert cfg.layer_type(0) == "linear" and cfg.window(0) is None


def native_chunked_or_skip():  # type: ignore[no-untyped-def]
    from glassformer import kernels
    from glassformer.kernels.delta_rule import delta_chunked

    if not kernels.available():
        pytest.skip("native kernels unavailable")
    return delta_chunked


@pytest.mark.parametrize("t", [1, 37, 64, 150])
@pytest.mark.parametrize("chunk", [64, 16])
def test_native_chunked_form(t: int, chunk: int) -> None:
    """The C loop over chunks and triangular solves (`kernels.delta_rule.delta_chunked`) against
    the component's chunked form and the float64 recurrence, from a state and from none, at
    lengths that leave a ragged last chunk; d_v = 32 (the kernel's tiles need d_v % 16 == 0)."""
    delta_chunked = native_chunked_or_skip()
    q, k, v, g, beta, state = random_rule_inputs(t, seed=7)
    v = torch.cat((v, v[..., :8].flip(1)), -1)  # d_v 32
    state = torch.cat((state, state[..., :8].flip(-2)), -1)
    for start in (state, None):
        with torch.no_grad():
            o, final = delta_chunked(q, k, v, g, beta, start, chunk)
            o_ref, final_ref = chunk_gated_delta_rule(q, k, v, g, beta, start, chunk)
        assert maxdiff(o, o_ref) <= 1e-5 and maxdiff(final, final_ref) <= 1e-5
        want, want_state = naive_recurrence(q, k, v, g, beta, start)
        assert maxdiff(o.double(), want) <= 1e-5 and maxdiff(final.double(), want_state) <= 1e-5


def test_native_chunked_form_fast_decay() -> None:
    """Log-decays of -40 per token (as a layer with A = exp(A_log) near 16 gives): within a
    chunk the decays fall far below the smallest float, which the kernels flush to zero."""
    delta_chunked = native_chunked_or_skip()
    q, k, v, g, beta, state = random_rule_inputs(100, seed=9)
    v, state = torch.cat((v, v[..., :8]), -1), torch.cat((state, state[..., :8]), -1)
    g = g * 80
    with torch.no_grad():
        o, final = delta_chunked(q, k, v, g, beta, state, 64)
        o_ref, final_ref = chunk_gated_delta_rule(q, k, v, g, beta, state)
    want, want_state = naive_recurrence(q, k, v, g, beta, state)
    assert maxdiff(o, o_ref) <= 1e-5 and maxdiff(final, final_ref) <= 1e-5
    assert maxdiff(o.double(), want) <= 1e-5 and maxdiff(final.double(), want_state) <= 1e-5


@torch.no_grad()
def test_native_chunked_layer_left_padding() -> None:
    """A layer whose prefill takes the C kernels (d_v = 32) gives what PyTorch's chunked form
    gives (impl "eager"): left-padded rows, and a prefill continued from a state."""
    import dataclasses

    native_chunked_or_skip()
    layer = GatedDeltaNet(dataclasses.replace(config(), linear_v_head_dim=32), 0).eval()
    x = inputs(150, seed=8)
    mask = torch.ones(2, 150, dtype=torch.bool)
    mask[1, :21] = False
    x[1, :21] = torch.randn(21, D)  # garbage under the padding
    runs = []
    for impl in ("native", "eager"):
        layer.impl = impl
        state = layer.new_state(2, torch.float32)
        first = layer(x[:, :70], state, key_valid=mask[:, :70])
        rest = layer(x[:, 70:], state, key_valid=mask[:, 70:])
        runs.append((torch.cat((first, rest), 1), state.recurrent.clone()))
    layer.impl = "native"
    (y, s), (y_ref, s_ref) = runs
    assert maxdiff(y, y_ref) <= 1e-5 and maxdiff(s, s_ref) <= 1e-5
    assert maxdiff(y[1:, 21:], layer(x[1:, 21:])) <= 1e-5  # the padding changed nothing
