"""Generated Triton kernels (fusion/codegen.py) against the reference program generated from the
same IR (fusion/kernels.py: PyTorch ops on whole tensors), forward and gradients, and whole
models on the kernels (`fuse`) against the plain model.

On a CPU the kernels run under Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py
before triton is imported). Shapes are odd on purpose: 37 rows (not a multiple of the 16-row
block), widths 48 and 80, head_dim 12 (RoPE halves of 6 in 16-wide tiles)."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.fusion import fuse
from glassformer.fusion.blocks import why_unfused
from glassformer.fusion.codegen import backward_unsupported, unsupported
from glassformer.fusion.ir import Gemm, block_program
from glassformer.fusion.kernels import (
    Route,
    node_parameters,
    reference,
    route,
    run,
    run_backward,
    tiles,
)
from tests.families import TINY_HF_CONFIGS, perturb
from tests.fusion.needs_triton import require_triton
from tests.fusion.odd_shapes import odd

require_triton()

ROWS = 37

# odd widths: d_model 80 and 48, head_dim 12, d_ff 144 / 72
ODD = {
    "llama-odd": dict(
        TINY_HF_CONFIGS["llama"],
        hidden_size=80,
        intermediate_size=144,
        num_attention_heads=5,
        num_key_value_heads=1,
        head_dim=12,
    ),
    "qwen3-odd": odd("qwen3"),
    "gemma3-odd": odd("gemma3_text", num_key_value_heads=1),
    "deepseek_v3-odd": dict(
        TINY_HF_CONFIGS["deepseek_v3"],
        hidden_size=48,
        kv_lora_rank=20,
        q_lora_rank=28,
        qk_rope_head_dim=12,
        qk_nope_head_dim=10,
    ),
    "qwen3_moe-odd": dict(
        TINY_HF_CONFIGS["qwen3_moe"], hidden_size=48, moe_intermediate_size=40, head_dim=12
    ),
    "phi3-odd": dict(
        TINY_HF_CONFIGS["phi3"], hidden_size=48, num_attention_heads=4, num_key_value_heads=2
    ),
}


def _model(hf: dict | gf.Config, dtype: torch.dtype = torch.float32) -> gf.Transformer:
    torch.manual_seed(0)
    model = gf.Transformer(hf if isinstance(hf, gf.Config) else gf.Config.from_hf(hf))
    with torch.no_grad():
        perturb(model)
    return model.to(dtype)


def _routing(g: Gemm, seed: int = 2) -> Route | None:
    """A grouped node's rows: each of ROWS tokens to top_k distinct experts, padded per expert
    to the interpreter's BM (the down projection reads the gate/up kernel's rows back)."""
    if not g.experts:
        return None
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(g.experts, generator=gen)[: g.top_k] for _ in range(ROWS)])
    rows = route(ids, g.experts, tiles(torch.device("cpu"))[0])
    return rows if g.name.endswith(("gate_up", "up_proj")) else rows.rows_of_output()


def _case(g: Gemm, dtype: torch.dtype, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    rows = _routing(g)
    n_out = ROWS if rows is None else rows.row_src.numel()
    x = rnd(ROWS if rows is None or g.name.endswith(("gate_up", "up_proj")) else n_out, g.in_width)
    loads = {ld.name: rnd(ROWS, ld.width) for ld in g.loads}
    gate = rnd(ROWS, g.in_width) if g.prologue.gate else None
    stats = None
    if g.prologue.norm and g.prologue.stats != "loop":
        stats = torch.rand(ROWS, generator=gen) + 0.5
    grads = {
        s.name: torch.randn(ROWS, generator=gen) if s.f32 else rnd(n_out, s.width) for s in g.stores
    }
    return x, loads, gate, stats, grads, rows


def _close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    """max |got - want| <= tol * max(1, max |want|)."""
    err = (got.float() - want.float()).abs().max().item()
    assert err <= tol * max(1.0, want.float().abs().max().item()), (what, err)


def check_node(g: Gemm, params: dict, dtype: torch.dtype, tol: float) -> None:
    """The kernel's stores and every gradient against the reference program (autograd)."""
    x, loads, gate, stats, grads, rows = _case(g, dtype)
    want_x = x.float().requires_grad_()
    want_loads = {k: v.float().requires_grad_() for k, v in loads.items()}
    want_stats = None if stats is None else stats.clone().requires_grad_()
    ps = node_parameters(g, params)
    for p in ps:
        p.grad = None
    ref = reference(g, params, want_x.to(dtype), want_loads, gate, want_stats, rows)
    got = run(g, params, x, loads, gate, stats, positions=ROWS, rows=rows)
    for name in ref:
        _close(got[name], ref[name], tol, f"{g.name}: {name}")
    if backward_unsupported(g) is not None:
        return
    sum((ref[k].float() * grads[k].float()).sum() for k in ref).backward()
    back = run_backward(g, params, x, grads, loads, gate, stats, positions=ROWS, rows=rows)
    _close(back["input"], want_x.grad, tol, f"{g.name}: d input")
    for name, t in want_loads.items():
        if name not in ("cos", "sin"):
            _close(back[name], t.grad, tol, f"{g.name}: d {name}")
    if want_stats is not None:
        _close(back["stats"], want_stats.grad, tol, f"{g.name}: d stats")
    named = {id(p): n for n, p in params[""].named_parameters()}
    for p in ps:
        _close(back[named[id(p)]], p.grad, tol, f"{g.name}: d {named[id(p)]}")


def _nodes(hf: dict, dtype: torch.dtype = torch.float32):
    model = _model(hf, dtype)
    cfg = model.config
    seen = set()
    for i in range(cfg.n_layers):
        for g in block_program(cfg, i).gemms:
            key = (g, cfg.layer_type(i))
            if unsupported(g) or repr(key) in seen:
                continue
            seen.add(repr(key))
            yield g, dict(model.layers[i].named_modules())


@pytest.mark.parametrize(
    "name", ["llama-odd", "qwen3-odd", "gemma3-odd", "deepseek_v3-odd", "qwen3_moe-odd"]
)
def test_kernels_equal_the_reference_fp32(name: str) -> None:
    for g, params in _nodes(ODD[name]):
        check_node(g, params, torch.float32, 1e-5)


def test_kernels_equal_the_reference_bf16() -> None:
    for g, params in _nodes(ODD["qwen3-odd"], torch.bfloat16):
        check_node(g, params, torch.bfloat16, 3e-2)


@pytest.mark.slow
@pytest.mark.parametrize("family", [*sorted(TINY_HF_CONFIGS), "phi3-odd"])
def test_every_familys_kernels(family: str) -> None:
    hf = ODD.get(family) or TINY_HF_CONFIGS[family]
    for g, params in _nodes(hf):
        check_node(g, params, torch.float32, 1e-5)


def test_unsupported_nodes_say_why() -> None:
    gpt2 = _model(TINY_HF_CONFIGS["gpt2"])
    assert "layernorm" in why_unfused(gpt2, 0)
    oss = _model(TINY_HF_CONFIGS["gpt_oss"])
    experts = block_program(oss.config, 0).gemm("mlp.experts.gate_up")
    assert unsupported(experts) is None  # the clamped SwiGLU's forward is generated
    assert "clamped" in backward_unsupported(experts)  # its backward: autograd of the reference
    olmo = _model(TINY_HF_CONFIGS["olmo2"])
    assert why_unfused(olmo, 0)


def test_kernel_traffic_is_the_irs() -> None:
    """The activation elements a generated kernel is handed to read and write (its input, the
    tensors its program loads, its stores) are the IR's fused count per token times the rows."""
    for g, params in _nodes(ODD["gemma3-odd"]):
        x, loads, gate, stats, _, _ = _case(g, torch.float32)
        outs = run(g, params, x, loads, gate, stats, positions=ROWS)
        moved = x.numel() + (0 if gate is None else gate.numel())
        moved += sum(v.numel() for v in loads.values()) + (0 if stats is None else stats.numel())
        moved += sum(v.numel() for v in outs.values())
        assert moved == g.traffic()["fused"] * ROWS, g.name


@pytest.mark.parametrize(
    "family",
    [
        "llama",
        pytest.param("qwen3", marks=pytest.mark.slow),
        pytest.param("gemma3_text", marks=pytest.mark.slow),
        pytest.param("deepseek_v3", marks=pytest.mark.slow),
    ],
)
def test_fused_model_equals_the_plain_model(family: str) -> None:
    """Logits, loss and every parameter's gradient of a whole model on the kernels."""
    fused = check_model(TINY_HF_CONFIGS[family])
    assert all(why_unfused(fused, i) is None for i in range(fused.config.n_layers))
    assert all(hasattr(b, "fused") for b in fused.layers)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(TINY_HF_CONFIGS))
def test_every_fused_family_equals_the_plain_model(family: str) -> None:
    """Every tiny config: the blocks `fuse` covers on kernels, the rest plain."""
    check_model(TINY_HF_CONFIGS[family])


def test_pruned_model_on_the_kernels() -> None:
    """Per-layer head counts and MLP widths (a pruned model): each layer's program has its
    own widths."""
    cfg = gf.Config.from_hf(TINY_HF_CONFIGS["qwen3"]).replace(
        heads_per_layer=(2, 4), kv_heads_per_layer=(1, 2), d_ff_per_layer=(112, 56)
    )
    fused = check_model(cfg)
    assert all(hasattr(b, "fused") for b in fused.layers)


def check_model(hf: dict | gf.Config) -> gf.Transformer:
    plain = _model(hf)
    fused = fuse(_model(hf))
    ids = torch.randint(
        0, plain.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0)
    )
    losses = []
    for m in (plain, fused):
        logits = m(ids)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        losses.append((logits, loss))
    assert (losses[0][0] - losses[1][0]).abs().max().item() <= 1e-4
    assert abs(losses[0][1].item() - losses[1][1].item()) <= 1e-4
    assert all(b.fused.kernel_calls for b in fused.layers if hasattr(b, "fused"))
    # the training loss of forward(labels=) runs the LM-head kernel
    labelled = [m(ids[:, :-1], labels=ids[:, 1:]) for m in (plain, fused)]
    assert abs(labelled[0].item() - labelled[1].item()) <= 1e-4 * max(1.0, labelled[0].item())
    fused_params = dict(fused.named_parameters())
    assert fused_params.keys() == dict(plain.named_parameters()).keys()
    for n, p in plain.named_parameters():
        if p.grad is not None:
            _close(fused_params[n].grad, p.grad, 1e-4, n)
    return fused
