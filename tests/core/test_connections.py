"""Cross-layer connections (components/connections/): DenseFormer, MUDDFormer,
Hyper-Connections and mHC.

- The papers' initialisations of DenseFormer, MUDDFormer and Hyper-Connections make the network
  the plain residual one: a variant loading the plain model's weights gives its logits.
- Hyper-Connections and mHC equal the `hyper-connections` package on the same weights.
- Cached decoding equals the full forward, gradients equal float64 finite differences, for
  every variant, on dense, MoE, MLA and hybrid (linear / chunked attention) families.
"""

from __future__ import annotations

import pytest
import torch

from glassformer.components.connections.hyper_connections import HyperConnection, sinkhorn
from glassformer.components.connections.mudd import mudd_streams
from glassformer.config import Config
from glassformer.model import Transformer
from tests.families import SEQ, our_config

VARIANTS = ("denseformer", "mudd", "hyper", "mhc")
PRESERVING = ("denseformer", "mudd", "hyper")
# dense, MoE, MLA + MoE, hybrid linear attention + MoE, chunked + NoPE + MoE, sliding + sandwich
FAMILIES = ("llama", "qwen3_moe", "deepseek_v3", "qwen3_next", "llama4_text", "gemma2")


def tiny(**kw: object) -> Config:
    base = dict(vocab_size=61, d_model=16, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=24,
                max_seq_len=64)  # fmt: skip
    return Config(**{**base, **kw})  # type: ignore[arg-type]


@torch.no_grad()
def perturb_connections(model: Transformer, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    assert model.connections is not None
    for p in model.connections.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * 0.2)


def variant(name: str, kind: str, **kw: object) -> Config:
    return our_config(name).replace(connections=kind, **kw)


# --- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"connections": "dense"}, "connections: expected one of"),
        ({"connections": "denseformer", "dense_dilation": 0}, "dense_dilation: must be"),
        ({"connections": "denseformer", "dense_period": -1}, "dense_period: must be"),
        ({"connections": "hyper", "hyper_streams": 0}, "hyper_streams: must be"),
        ({"connections": "mhc", "mhc_sinkhorn_iters": 0}, "mhc_sinkhorn_iters: must be"),
        ({"connections": "hyper", "norm_placement": "post"}, "connections: 'hyper' needs"),
        ({"connections": "mudd", "layer_scalar": True}, "connections: 'mudd' does not take"),
    ],
)
def test_bad_settings_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_config_round_trips_and_hf_refuses() -> None:
    cfg = our_config("llama").replace(connections="mhc", hyper_streams=3, mhc_sinkhorn_iters=7)
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="connections: 'mhc' has no HF equivalent"):
        cfg.to_hf()
    from glassformer.hf.weights import ours_to_hf

    model = Transformer(cfg)
    with pytest.raises(ValueError, match="connections: 'mhc' has no HF equivalent"):
        ours_to_hf(cfg, model.state_dict())


# --- function-preserving initialisations ----------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", PRESERVING)
def test_init_equals_plain_network(family: str, kind: str) -> None:
    cfg = our_config(family)
    torch.manual_seed(0)
    plain = Transformer(cfg).eval()
    with torch.no_grad():  # plain weights away from their init
        for p in plain.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ids = torch.randint(0, cfg.vocab_size, (2, SEQ))
    model = Transformer(cfg.replace(connections=kind)).eval()
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(m.startswith("connections.") for m in missing)
    with torch.no_grad():
        err = (model(ids) - plain(ids)).abs().max().item()
    assert err <= 1e-5, err


def test_denseformer_dilation_period_keep_init_and_count() -> None:
    cfg = tiny(n_layers=6, connections="denseformer", dense_dilation=2, dense_period=3)
    model = Transformer(cfg)
    alpha = model.connections.alpha  # type: ignore[union-attr]
    # DWAs after blocks 3 and 6; block 3 reads X_1, X_3; block 6 reads X_0, X_2, X_4, X_6
    assert {k: v.numel() for k, v in alpha.items()} == {"3": 2, "6": 4}
    plain = Transformer(tiny(n_layers=6)).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        assert (model.eval()(ids) - plain(ids)).abs().max().item() <= 1e-6


def test_denseformer_equals_the_papers_equations() -> None:
    """Trained-looking DWA weights: the model equals the plain network whose block outputs are
    replaced, through hooks, by Y_i = sum_{j <= i, (i - j) % k == 0} alpha_{i,j} X_j after every
    p-th block (Pagliardini et al. 2024, written out here from the paper, float64)."""
    k, p = 2, 3
    cfg = tiny(n_layers=6, connections="denseformer", dense_dilation=k, dense_period=p)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    perturb_connections(model)
    plain = Transformer(cfg.replace(connections="residual")).double().eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    alpha = model.connections.alpha  # type: ignore[union-attr]
    outputs: list[torch.Tensor] = []  # X_0 .. X_i

    def keep_input(_: torch.nn.Module, args: tuple) -> None:
        outputs.append(args[0])

    def dwa(i: int):  # a forward hook on block i
        def hook(_: torch.nn.Module, __: tuple, x: torch.Tensor) -> torch.Tensor:
            outputs.append(x)
            if i % p:
                return x
            js = [j for j in range(i + 1) if (i - j) % k == 0]
            return sum(a * outputs[j] for a, j in zip(alpha[str(i)], js, strict=True))

        return hook

    plain.layers[0].register_forward_pre_hook(keep_input)
    for i, block in enumerate(plain.layers, start=1):
        block.register_forward_hook(dwa(i))
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        err = (model(ids) - plain(ids)).abs().max().item()
    assert len(outputs) == 7 and err <= 1e-10, err


def test_mudd_streams_per_layer() -> None:
    """Four streams where keys and values have their own projections, two where one
    projection makes both (MLA, Gated DeltaNet), one into the final norm."""
    assert mudd_streams(our_config("llama")) == [4] * (our_config("llama").n_layers - 1) + [1]
    assert set(mudd_streams(our_config("deepseek_v3"))[:-1]) == {2}
    cfg = our_config("qwen3_next")
    want = [2 if cfg.layer_type(i) == "linear" else 4 for i in range(1, cfg.n_layers)] + [1]
    assert mudd_streams(cfg) == want


# --- cached decoding ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", VARIANTS)
def test_cached_decoding_equals_full_forward(family: str, kind: str) -> None:
    cfg = variant(family, kind, hyper_streams=3)
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    perturb_connections(model)
    ids = torch.randint(0, cfg.vocab_size, (2, SEQ))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(2, SEQ)
        parts = [model(ids[:, :17], cache=cache)]
        parts += [model(ids[:, t : t + 1], cache=cache) for t in range(17, SEQ)]
    err = (torch.cat(parts, dim=1) - full).abs().max().item()
    assert err <= 1e-4, err


# --- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "dynamic"),
    [(k, True) for k in VARIANTS] + [("hyper", False), ("mhc", False)],  # static forms
)
def test_gradients_match_finite_differences(kind: str, dynamic: bool) -> None:
    cfg = tiny(d_model=8, n_heads=2, n_kv_heads=1, d_ff=8, vocab_size=11, n_layers=2,
               connections=kind, hyper_streams=2, hyper_dynamic=dynamic,
               mhc_sinkhorn_iters=4)  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    perturb_connections(model)
    ids = torch.randint(0, 11, (1, 4))
    conn = list(model.connections.parameters())  # type: ignore[union-attr]
    others = [model.embed.weight]

    def f(*params: torch.Tensor) -> torch.Tensor:
        names = [n for n, _ in model.connections.named_parameters()]  # type: ignore[union-attr]
        mapping = {f"connections.{n}": p for n, p in zip(names, params[:-1], strict=True)}
        mapping["embed.weight"] = params[-1]
        logits = torch.func.functional_call(model, mapping, (ids,))
        return logits.square().mean()

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in [*conn, *others])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


# --- the hyper-connections package ----------------------------------------------------------
def _package_pair(constrained: bool, dynamic: bool, n: int, d: int, index: int):
    hc_pkg = pytest.importorskip("hyper_connections")
    cfg = tiny(d_model=d, connections="mhc" if constrained else "hyper", hyper_streams=n,
               hyper_dynamic=dynamic, norm_eps=1e-12, mhc_sinkhorn_iters=20)  # fmt: skip
    ours = HyperConnection(cfg, index, constrained=constrained).double()
    if constrained:
        ref = hc_pkg.ManifoldConstrainedHyperConnections(n, dim=d, layer_index=index)
    else:
        ref = hc_pkg.HyperConnections(n, dim=d, layer_index=index, tanh=True)
    ref = ref.double()
    gen = torch.Generator().manual_seed(index)
    with torch.no_grad():
        for p in ref.parameters():  # away from the init, in every parameter
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
        if not dynamic:
            ref.dynamic_alpha_fn.zero_()
            ref.dynamic_beta_fn.zero_()
        ours.static_alpha.copy_(ref.static_alpha)
        ours.static_beta.copy_(ref.static_beta)
        if dynamic:
            # the package's RMSNorm scale (1 + gamma) folds into the projection
            gain = (1 + ref.norm.gamma)[:, None]
            alpha_fn = ref.dynamic_alpha_fn[0] if constrained else ref.dynamic_alpha_fn
            proj = torch.cat((alpha_fn, ref.dynamic_beta_fn[:, None]), dim=1)
            ours.dynamic_proj.copy_(gain * proj)
            if constrained:
                scales = [ref.pre_branch_scale, ref.residual_scale, ref.h_post_scale]
            else:
                scales = [ref.dynamic_alpha_scale, ref.dynamic_beta_scale]
            ours.dynamic_scale.copy_(torch.stack([s.reshape(()) for s in scales]))
    return ours, ref


@pytest.mark.parametrize("constrained", [False, True], ids=["hyper", "mhc"])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_equals_hyper_connections_package(constrained: bool, dynamic: bool) -> None:
    n, d, b, t = 4, 16, 2, 5
    for index in (0, 3):
        ours, ref = _package_pair(constrained, dynamic, n, d, index)
        h = torch.randn(b, t, n, d, dtype=torch.float64)
        out = torch.randn(b, t, d, dtype=torch.float64)
        with torch.no_grad():
            # the package stacks the streams into the batch: [(b n), t, d]
            x_ref, add_residual = ref(h.permute(0, 2, 1, 3).reshape(b * n, t, d))
            new_ref = add_residual(out).reshape(b, n, t, d).permute(0, 2, 1, 3)
            x, mixed, beta = ours.width(h)
            new = ours.depth(out, mixed, beta)
        tol = 1e-6 if constrained else 1e-10  # the package runs mHC in float32
        assert (x - x_ref).abs().max().item() <= tol
        assert (new - new_ref).abs().max().item() <= tol


def test_sinkhorn_is_doubly_stochastic() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 4, 4, generator=gen, dtype=torch.float64)
    p = sinkhorn(logits, 20)
    assert (p >= 0).all()
    assert (p.sum(-1) - 1).abs().max().item() <= 1e-5
    assert (p.sum(-2) - 1).abs().max().item() <= 1e-5
    # the mixing of a trained-looking mHC model: every token's matrix
    cfg = tiny(connections="mhc", hyper_streams=4)
    hc = HyperConnection(cfg, 1, constrained=True)
    with torch.no_grad():
        hc.dynamic_proj.normal_(0, 1.0)
        alpha, _ = hc.coefficients(torch.randn(3, 7, 4, 16))
    res = alpha[..., 1:]
    assert (res.sum(-1) - 1).abs().max().item() <= 1e-5
    assert (res.sum(-2) - 1).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", PRESERVING)
def test_diagnostics_read_each_layer(kind: str) -> None:
    """The per-layer hidden states the diagnostics read (embeddings, then each block's
    output): at the function-preserving init they are the plain network's."""
    from glassformer.diagnostics.activations import collect_hidden_states

    cfg = tiny()
    plain = Transformer(cfg).eval()
    model = Transformer(cfg.replace(connections=kind)).eval()
    model.load_state_dict(plain.state_dict(), strict=False)
    ids = torch.randint(0, 61, (1, 9))
    with torch.no_grad():
        ours, ref = collect_hidden_states(model, ids), collect_hidden_states(plain, ids)
    assert len(ours) == len(ref) == cfg.n_layers + 1
    for a, b in zip(ours, ref, strict=True):
        assert (a - b).abs().max().item() <= 1e-6
    assert not hasattr(model.connections, "__dict__") or "layer" not in vars(model.connections)


def test_static_connection_weights_are_not_decayed() -> None:
    """Weight decay pulls towards zero; the static connection weights start at the identity
    connection, so the optimizer leaves them undecayed (as every vector)."""
    from glassformer.training.optim import param_groups

    for kind in VARIANTS:
        model = Transformer(tiny(connections=kind))
        decayed = {id(p) for p in param_groups(model, 0.1)[0]["params"]}
        for name, p in model.connections.named_parameters():  # type: ignore[union-attr]
            static = name.endswith(("static_alpha", "static_beta", "bias")) or "alpha." in name
            assert (id(p) in decayed) == (not static and p.dim() >= 2), name
