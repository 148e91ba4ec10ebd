"""Structured pruning against direct references: a pruned model must compute what the unpruned
one computes with the same heads and neurons masked to zero (their output-projection columns
zeroed), and with removed layers skipped (a hook that passes the block's input through)."""

from __future__ import annotations

import copy

import pytest
import torch

from glassformer.compression.prune import (
    PrunePlan,
    apply_plan,
    check_heads,
    parse_amount,
    plan_pruning,
    pruned_config,
)
from glassformer.config import Config
from glassformer.model import Transformer
from tests.families import SEQ, VOCAB, our_config, perturb

# MHA (GPT-2: LayerNorm, biases), GQA (Llama), MQA with biases, QK-norm (Qwen3), sliding and
# sandwich layers (Gemma 3), sinks and MoE with biases (gpt-oss), MoE (Qwen3-MoE, Mixtral),
# gated attention beside linear layers (Qwen3-Next)
FAMILIES = [
    "gpt2",
    "llama",
    "llama-bias-mqa-linear",
    "qwen3",
    "gemma3_text",
    "gpt_oss",
    "qwen3_moe",
    "mixtral",
    "qwen3_next",
]


def build(name: str, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(our_config(name)).float().eval()
    perturb(model, seed)
    return model


def ids(batch: int = 2, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def masked(model: Transformer, plan: PrunePlan) -> Transformer:
    """The unpruned model with the plan's removed heads and neurons zeroed where they leave
    their layer (output-projection columns), removed experts' router logits (and balancing
    biases) at -inf, and removed layers passed through by a hook."""
    ref = copy.deepcopy(model)
    cfg = model.config
    for i, block in enumerate(ref.layers):
        if i not in plan.layers:
            block.register_forward_hook(lambda module, args, out: args[0])
            continue
        if i in plan.heads:
            hd = cfg.layer_head_dim(i)
            for h in range(cfg.layer_n_heads(i)):
                if h not in plan.heads[i]:
                    block.attn.o_proj.weight[:, h * hd : (h + 1) * hd] = 0
        if i in plan.experts:
            router = block.mlp.router
            gone = [e for e in range(router.weight.shape[0]) if e not in plan.experts[i]]
            bias = torch.zeros(router.weight.shape[0]) if router.bias is None else router.bias
            bias = bias.detach().clone().index_fill_(0, torch.tensor(gone), -torch.inf)
            router.bias = torch.nn.Parameter(bias)
            if router.score_bias is not None:
                router.score_bias.index_fill_(0, torch.tensor(gone), -torch.inf)
        if i in plan.neurons:
            mlp = block.mlp
            experts = getattr(mlp, "experts", None)
            width = (experts.down_proj if experts is not None else mlp.down_proj.weight).shape[-1]
            gone = [j for j in range(width) if j not in plan.neurons[i]]
            if experts is not None:
                experts.down_proj[:, :, gone] = 0
            else:
                mlp.down_proj.weight[:, gone] = 0
    return ref


@pytest.mark.parametrize("name", FAMILIES)
def test_pruning_nothing_changes_nothing(name: str) -> None:
    model = build(name)
    plan = plan_pruning(model, heads=0.0, mlp=0.0, layers=0)
    small = apply_plan(model, plan)
    assert small.config == model.config
    x = ids()
    with torch.no_grad():
        assert torch.equal(small(x), model(x))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("by", ["magnitude", "random"])
def test_pruned_equals_masked(name: str, by: str) -> None:
    model = build(name)
    cfg = model.config
    experts = "34%" if cfg.n_experts else 0  # MoE: a third of the experts too
    plan = plan_pruning(model, heads="50%", mlp="30%", layers=0, by=by, experts=experts)
    assert bool(plan.experts) == bool(cfg.n_experts)
    small = apply_plan(model, plan)
    assert small.num_parameters() < model.num_parameters()
    # the pruned module's parameters are what its Config says (explorer's count)
    from glassformer.explorer.costs import parameter_counts

    assert parameter_counts(small.config)["params_total"] == small.num_parameters()
    attn = [i for i in range(cfg.n_layers) if cfg.layer_type(i) != "linear"]
    assert all(small.config.layer_n_heads(i) < cfg.layer_n_heads(i) for i in attn)
    x = ids()
    with torch.no_grad():
        want = masked(model, plan)(x)
        got = small(x)
        assert (want - model(x)).abs().max() > 1e-3  # the cut matters
    assert (got - want).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["llama", "gemma3_text", "qwen3_moe"])
def test_removing_layers_equals_skipping_them(name: str) -> None:
    model = build(name)
    cfg = model.config
    keep = tuple(i for i in range(cfg.n_layers) if i != 1)
    plan = PrunePlan(keep)
    small = apply_plan(model, plan)
    assert small.config.n_layers == cfg.n_layers - 1
    if cfg.layer_types is not None:
        assert small.config.layer_types == tuple(cfg.layer_types[i] for i in keep)
    x = ids()
    with torch.no_grad():
        assert (small(x) - masked(model, plan)(x)).abs().max() <= 1e-5


def test_uneven_layers_and_cached_decoding() -> None:
    """Per-layer head counts and widths: the cache, the explorer and decoding follow."""
    model = build("llama")
    plan = PrunePlan((0, 1), heads={0: (0, 2)}, neurons={1: tuple(range(0, 112, 2))})
    small = apply_plan(model, plan)
    cfg = small.config
    assert cfg.heads_per_layer == (2, 4) and cfg.kv_heads_per_layer == (2, 2)
    assert cfg.d_ff_per_layer == (112, 56)
    from glassformer.explorer.costs import parameter_counts

    assert parameter_counts(cfg)["params_total"] == small.num_parameters()
    x = ids(seq=12)
    with torch.no_grad():
        full = small(x)
        cache = small.new_cache(2, 16)
        steps = [small(x[:, :5], cache)] + [small(x[:, t : t + 1], cache) for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4
    # the Config round-trips through its JSON form
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_gqa_keeps_groups_whole() -> None:
    cfg = build("llama").config  # 4 query heads over 2 KV heads
    assert check_heads(cfg, 0, (0, 2)) == (0, 1)
    assert check_heads(cfg, 0, (2, 3)) == (1,)  # a whole group (and its KV head) removed
    with pytest.raises(ValueError, match="same number in every group"):
        check_heads(cfg, 0, (0, 1, 2))
    with pytest.raises(ValueError, match="remove the layer instead"):
        check_heads(cfg, 0, ())


def test_bad_requests_raise_clear_errors() -> None:
    model = build("llama")
    with pytest.raises(ValueError, match=r"heads: a fraction must be in \[0, 1\)"):
        plan_pruning(model, heads=1.0)
    with pytest.raises(ValueError, match=r"mlp: a fraction must be in \[0, 1\)"):
        plan_pruning(model, mlp="-10%")
    with pytest.raises(ValueError, match="only 2 exist"):
        plan_pruning(model, layers=3)
    with pytest.raises(ValueError, match="leaves none"):
        plan_pruning(model, layers=2)
    with pytest.raises(ValueError, match="empties its KV groups"):
        plan_pruning(model, heads="90%")
    with pytest.raises(ValueError, match="experts: the model has no routed experts"):
        plan_pruning(model, experts="25%")
    moe = build("mixtral")  # 4 experts, top-2
    with pytest.raises(ValueError, match="fewer than the 2 each token is routed to"):
        plan_pruning(moe, experts="75%")
    with pytest.raises(ValueError, match="by: expected one of"):
        plan_pruning(model, heads="25%", by="loudest")
    with pytest.raises(ValueError, match="remove the layer instead"):
        pruned_config(model.config, PrunePlan((0, 1), heads={0: ()}))
    with pytest.raises(ValueError, match=r"heads: layer 0 has heads 0\.\.3"):
        pruned_config(model.config, PrunePlan((0, 1), heads={0: (0, 9)}))
    assert parse_amount("25%", "heads") == 0.25 and parse_amount("2", "layers") == 2


def test_config_validates_per_layer_sizes() -> None:
    base = Config(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2)
    with pytest.raises(ValueError, match="heads_per_layer: has 1 entries, expected n_layers=2"):
        base.replace(heads_per_layer=(4,))
    with pytest.raises(ValueError, match="kv_heads_per_layer: layer 1 has 2 KV heads"):
        base.replace(heads_per_layer=(4, 3), kv_heads_per_layer=(2, 2))
    with pytest.raises(ValueError, match="d_ff_per_layer: every entry must be a positive"):
        base.replace(d_ff_per_layer=(8, 0))
    with pytest.raises(ValueError, match="moe_d_ff_per_layer: the config has n_experts=0"):
        base.replace(moe_d_ff_per_layer=(8, 8))


@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_uneven_pruned_model_on_the_fast_decode_path(quant: str) -> None:
    """The native decode plan and the fused/quantised modules take per-layer shapes: the plan
    is built (not refused), its steps equal the module steps, and in float32 the plain model's."""
    import glassformer as gf
    from glassformer.explorer.costs import parameter_counts
    from glassformer.inference import native, optimize

    if not native.available():
        pytest.skip("native kernels unavailable")
    cfg = gf.Config.preset("tiny")  # 4 layers, 4 query heads over 2 KV heads, d_ff 384
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    perturb(model)
    plan = PrunePlan((0, 1, 3), heads={0: (0, 2)}, neurons={1: tuple(range(0, 384, 4))})
    small = apply_plan(model, plan)
    assert small.config.heads_per_layer == (2, 4, 4)
    assert small.config.d_ff_per_layer == (384, 96, 384)
    assert parameter_counts(small.config)["params_total"] == small.num_parameters()
    x = torch.randint(0, cfg.vocab_size, (2, 30), generator=torch.Generator().manual_seed(1))
    fast = optimize(small, quant)
    steps = {}
    with torch.inference_mode():
        reference = small(x)[:, 20:]
        for use_plan in (False, True):
            fast.use_plan = use_plan
            cache = fast.new_cache(2, 64)
            fast(x[:, :20], cache)
            steps[use_plan] = torch.stack(
                [fast(x[:, t : t + 1], cache)[:, 0] for t in range(20, 30)], 1
            )
            assert (fast.decode_plan(cache) is not None) == use_plan

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / b.norm())

    assert rel(steps[True], steps[False]) < (1e-5 if quant == "none" else 1e-6)
    if quant == "none":
        assert rel(steps[True], reference) < 1e-5


def test_uneven_expert_counts() -> None:
    """Per-layer expert counts and widths in an MoE model: equal to masking, cached decoding
    equals the full forward, the explorer counts the module's parameters (total and active)."""
    from glassformer.explorer.costs import parameter_counts

    model = build("qwen3_moe")  # 6 experts, top-2, 2 layers
    plan = PrunePlan((0, 1), experts={0: (0, 2, 5)}, neurons={1: tuple(range(0, 40, 2))})
    small = apply_plan(model, plan)
    cfg = small.config
    assert cfg.experts_per_layer == (3, 6) and cfg.moe_d_ff_per_layer is not None
    counts = parameter_counts(cfg)
    assert counts["params_total"] == small.num_parameters()
    per_expert = [small.layers[i].mlp.experts.up_proj[0].numel() * 3 for i in range(2)]
    idle = [(3 - 2) * per_expert[0], (6 - 2) * per_expert[1]]
    assert counts["params_active"] == small.num_parameters() - sum(idle)
    x = ids(seq=12)
    with torch.no_grad():
        full = small(x)
        assert (full - masked(model, plan)(x)).abs().max() <= 1e-5
        cache = small.new_cache(2, 16)
        steps = [small(x[:, :5], cache)] + [small(x[:, t : t + 1], cache) for t in range(5, 12)]
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="experts_per_layer: a layer with 1 experts"):
        cfg.replace(experts_per_layer=(1, 6))


@pytest.mark.parametrize("name", ["llama", "qwen3", "qwen3_moe", "gpt_oss"])
def test_width_cut_is_exact_when_the_removed_channels_carry_nothing(name: str) -> None:
    """Zero residual channels (their embedding columns and every row writing to them): the
    stream stays 0 there, and cutting them (norm weights scaled by sqrt(d / d')) gives the same
    logits; eps is tiny so that the norms' statistic is the mean square alone."""
    torch.manual_seed(0)
    model = Transformer(our_config(name).replace(norm_eps=1e-12)).float().eval()
    perturb(model)
    d = model.config.d_model
    gone = torch.arange(1, d, 8)  # every eighth channel
    with torch.no_grad():
        model.embed.weight[:, gone] = 0
        for block in model.layers:
            block.attn.o_proj.weight[gone] = 0
            if block.attn.o_proj.bias is not None:
                block.attn.o_proj.bias[gone] = 0
            experts = getattr(block.mlp, "experts", None)
            if experts is not None:
                experts.down_proj[:, gone] = 0
                if experts.down_proj_bias is not None:
                    experts.down_proj_bias[:, gone] = 0
            else:
                block.mlp.down_proj.weight[gone] = 0
    keep = tuple(c for c in range(d) if c not in set(gone.tolist()))
    small = apply_plan(model, PrunePlan(tuple(range(model.config.n_layers)), channels=keep))
    assert small.config.d_model == len(keep)
    from glassformer.explorer.costs import parameter_counts

    assert parameter_counts(small.config)["params_total"] == small.num_parameters()
    x = ids()
    with torch.no_grad():
        assert (small(x) - model(x)).abs().max() <= 1e-4


def test_width_by_magnitude_and_refusals() -> None:
    model = build("llama")
    plan = plan_pruning(model, width="25%", by="magnitude")
    assert plan.channels is not None and len(plan.channels) == 48
    small = apply_plan(model, plan)
    with torch.no_grad():
        assert small(ids()).shape[-1] == model.config.vocab_size
    for name, field in (("gpt2", "norm"), ("gemma3_text", "embed_scale")):
        with pytest.raises(ValueError, match=f"{field}: "):
            apply_plan(build(name), plan_pruning(build(name), width="25%"))
