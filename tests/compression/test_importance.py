"""Importance measures against direct measurements on tiny models (compression/)."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import glassformer as gf
from glassformer.compression.head_mask import HeadMask
from glassformer.compression.importance import Scores, compute_importance


def _model(name: str, seed: int = 0, **overrides) -> gf.Transformer:
    torch.manual_seed(seed)
    model = gf.Transformer(gf.Config.preset(name, **overrides)).eval()
    with torch.no_grad():  # off the initial values, so every weight shows in the outputs
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _ids(model: gf.Transformer, n: int = 3, t: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (n, t), generator=g)


def _seq_losses(model: gf.Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of each sequence, [n]."""
    logits = model(ids)[:, :-1].double()
    ce = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    return ce.view(ids.shape[0], -1).mean(1)


# --- the head mask ---
@pytest.mark.parametrize("name", ["tiny", "tiny-gpt2", "tiny-deepseek-v3", "tiny-mixtral"])
def test_head_mask_of_ones_changes_nothing_and_zero_removes_the_head(name: str) -> None:
    model = _model(name)
    ids = _ids(model)
    c = model.config
    with torch.no_grad():
        plain = model(ids)
        with HeadMask(model, torch.ones(c.n_layers, c.n_heads)):
            ones = model(ids)
        mask = torch.ones(c.n_layers, c.n_heads)
        mask[1, 2] = 0
        with HeadMask(model, mask):
            masked = model(ids)
        # the reference: head 2 of layer 1 cut out of the output projection's weights
        cut = copy.deepcopy(model)
        o = cut.layers[1].attn.o_proj.weight
        width = o.shape[1] // c.n_heads
        o[:, 2 * width : 3 * width] = 0
        removed = cut(ids)
    assert torch.equal(plain, ones)
    assert (masked - removed).abs().max().item() <= 1e-5
    assert (masked - plain).abs().max().item() > 1e-3  # the head mattered


def test_head_mask_rejects_a_wrong_shape() -> None:
    model = _model("tiny")
    with pytest.raises(ValueError, match="head mask"):
        HeadMask(model, torch.ones(3, 4))


# --- each measure against a direct computation ---
def test_head_gradient_equals_finite_differences_of_the_mask() -> None:
    model = _model("tiny", n_layers=2).double()
    model.set_attention_impl("eager")  # float64 throughout (the CPU causal kernel is float32)
    ids = _ids(model, n=3, t=12)
    c = model.config
    scores = compute_importance(model, ids, measures=["heads"], batch_size=3)
    eps = 1e-3  # central differences: error O(eps^2); smaller meets float32 rounding in RoPE
    expected = torch.zeros(c.n_layers, c.n_heads, dtype=torch.float64)
    with torch.no_grad(), HeadMask(model) as masker:
        for layer in range(c.n_layers):
            for head in range(c.n_heads):
                diff = []
                for sign in (1, -1):
                    mask = torch.ones(c.n_layers, c.n_heads, dtype=torch.float64)
                    mask[layer, head] += sign * eps
                    masker.mask = mask
                    diff.append(_seq_losses(model, ids))
                # central difference of each sequence's loss, then |.| averaged over sequences
                expected[layer, head] = ((diff[0] - diff[1]) / (2 * eps)).abs().mean()
    torch.testing.assert_close(scores.heads.double(), expected, rtol=1e-3, atol=5e-5)


def test_block_influence_equals_the_direct_cosine() -> None:
    model = _model("tiny")
    ids = _ids(model)
    scores = compute_importance(model, ids, measures=["layers"])
    streams = []  # the residual stream after 0, 1, ..., n_layers blocks
    with torch.no_grad():
        for n in range(model.config.n_layers + 1):
            head = copy.deepcopy(model)
            head.layers = head.layers[:n]
            streams.append(head.hidden_states(ids)[0].double())
    expected = torch.stack(
        [1 - F.cosine_similarity(x, y, dim=-1).mean() for x, y in itertools.pairwise(streams)]
    )
    torch.testing.assert_close(scores.layers.double(), expected, rtol=0, atol=1e-6)


def test_expert_frequency_and_gate_mass_count_the_router_choices() -> None:
    model = _model("tiny-mixtral")
    ids = _ids(model)
    c = model.config
    inputs: dict[int, torch.Tensor] = {}
    hooks = [
        block.mlp.register_forward_pre_hook(
            lambda m, args, i=i: inputs.__setitem__(i, args[0].reshape(-1, c.d_model))
        )
        for i, block in enumerate(model.layers)
    ]
    scores = compute_importance(model, ids, measures=["experts"])
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for layer, x in inputs.items():
        # Mixtral routing spelled out: softmax over the experts, top k, renormalised weights
        probs = (x.double() @ model.layers[layer].mlp.router.weight.double().T).softmax(-1)
        count = torch.zeros(c.n_experts, dtype=torch.float64)
        mass = torch.zeros(c.n_experts, dtype=torch.float64)
        for row in probs:
            top = row.topk(c.n_experts_per_token)
            for e, p in zip(top.indices.tolist(), top.values / top.values.sum(), strict=True):
                count[e] += 1
                mass[e] += p
        torch.testing.assert_close(scores.experts[layer].double(), count / len(x))
        torch.testing.assert_close(scores.expert_gate_mass[layer].double(), mass / len(x))


def test_entropy_and_confidence_of_uniform_attention() -> None:
    # q = 0 makes every score 0: query i spreads 1 / (i + 1) over the i + 1 keys it sees
    model = _model("tiny")
    with torch.no_grad():
        for block in model.layers:
            block.attn.q_proj.weight.zero_()
    t = 16
    scores = compute_importance(model, _ids(model, t=t), measures=["attention"])
    rows = torch.arange(2, t + 1, dtype=torch.float64)  # keys seen by queries 1 .. t-1
    entropy, confidence = rows.log().mean().item(), (1 / rows).mean().item()
    assert torch.allclose(scores.head_entropy.double(), torch.tensor(entropy).double(), atol=1e-5)
    assert torch.allclose(
        scores.head_confidence.double(), torch.tensor(confidence).double(), atol=1e-6
    )


def test_confidence_of_a_head_that_looks_at_one_key_is_one() -> None:
    # huge q.k on the first key only (it is the BOS, a shared vector) -> one-hot rows
    model = _model("tiny", n_layers=1)
    ids = _ids(model)
    ids[:, 0] = 0
    scores = compute_importance(model, ids, measures=["attention"])
    assert scores.head_confidence.min() > 0 and scores.head_confidence.max() <= 1
    assert scores.head_entropy.min() >= 0


def test_neuron_scores_are_the_rms_size_of_each_neurons_contribution() -> None:
    model = _model("tiny")
    ids = _ids(model)
    scores = compute_importance(model, ids, measures=["neurons"])
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        block.mlp.register_forward_pre_hook(
            lambda m, args, i=i: captured.__setitem__(i, args[0].flatten(0, 1).double())
        )
        for i, block in enumerate(model.layers)
    ]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    for i, x in captured.items():
        mlp = model.layers[i].mlp
        gate, up = x @ mlp.gate_proj.weight.double().T, x @ mlp.up_proj.weight.double().T
        h = F.silu(gate) * up  # [tokens, d_ff]
        # ||h_tj W_down[:, j]||^2 averaged over tokens, square-rooted
        contribution = h[:, :, None] * mlp.down_proj.weight.double().T[None]
        expected = contribution.square().sum(-1).mean(0).sqrt()
        torch.testing.assert_close(scores.neurons[i].double(), expected, rtol=1e-4, atol=1e-8)


def test_expert_channels_cover_every_moe_layer_and_vanish_for_unchosen_experts() -> None:
    model = _model("tiny-mixtral")
    scores = compute_importance(model, _ids(model), measures=["neurons", "experts"])
    c = model.config
    assert scores.neurons is None  # no dense MLP
    assert scores.expert_channels.shape == (c.n_layers, c.n_experts, c.moe_d_ff)
    unused = scores.experts == 0
    assert (scores.expert_channels[unused] == 0).all()
    assert (scores.expert_channels[~unused] > 0).all()


def test_embedding_channels_sum_the_rms_of_every_stream_norm() -> None:
    model = _model("tiny", n_layers=1)
    ids = _ids(model)
    scores = compute_importance(model, ids, measures=["embedding"])
    outs = []
    norms = [model.layers[0].attn_norm, model.layers[0].mlp_norm, model.final_norm]
    hooks = [n.register_forward_hook(lambda m, a, y: outs.append(y.flatten(0, 1))) for n in norms]
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    expected = sum(y.double().square().mean(0).sqrt() for y in outs)
    torch.testing.assert_close(scores.embedding.double(), expected, rtol=1e-5, atol=1e-6)


# --- the Scores record ---
def test_scores_round_trip_through_json_keeping_nans(tmp_path) -> None:
    model = _model("tiny-deepseek-v3")  # a dense first layer: NaN rows in the expert scores
    scores = compute_importance(model, _ids(model))
    assert math.isnan(scores.experts[0, 0].item()) and not math.isnan(scores.experts[1, 0].item())
    back = Scores.from_json(scores.to_json(tmp_path / "s.json"))
    for name in ("heads", "neurons", "experts", "expert_channels", "layers", "embedding"):
        a, b = getattr(scores, name), getattr(back, name)
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
    assert back.tokens == scores.tokens == 3 * 16
    assert back.head_entropy.shape == (model.config.n_layers, model.config.n_heads)


def test_bad_input_is_refused() -> None:
    model = _model("tiny")
    with pytest.raises(ValueError, match="measures"):
        compute_importance(model, _ids(model), measures=["heads", "kidneys"])
    with pytest.raises(ValueError, match="windows"):
        compute_importance(model, torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown fields"):
        Scores.from_dict({"heads": [[1.0]], "livers": 1})
