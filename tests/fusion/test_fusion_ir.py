"""The fusion IR against the explorer's op list: the unfused traffic the IR counts for its GEMM
nodes is the explorer's (independently written) per-op traffic of the same ops, and the
explorer's epilogue view is the IR's fused-vs-unfused difference."""

from __future__ import annotations

import pytest

from glassformer.explorer.costs import analyze
from glassformer.explorer.expr import evaluate
from glassformer.explorer.ops import build_sections
from glassformer.fusion.ir import OPS, Gemm, Opaque, block_program, format_program, model_programs
from glassformer.presets import get_preset

PRESETS = (
    "gpt2",
    "llama-3-8b",
    "mistral-7b",
    "qwen3-8b",
    "qwen3-30b-a3b",
    "gemma-2-2b",
    "gemma-3-1b",
    "deepseek-v3",
    "olmo-2-7b",
    "gpt-oss-20b",
    "qwen3-next-80b-a3b",
    "llama-4-scout-17b-16e",
    "gemma-4-e2b",
    "phi-3-mini-4k",
    "smollm3-3b",
    "glm-4.5-air",
    "qwen3-8b-pruned",
)
TOKENS = 5
ENV = {"B": 1, "T": TOKENS, "S": TOKENS, "eager": 0, "master": 0}


def _config(name: str):
    if name == "qwen3-8b-pruned":  # per-layer head counts and MLP widths
        n = get_preset("qwen3-8b").n_layers
        return get_preset("qwen3-8b").replace(
            heads_per_layer=(16,) * (n - 1) + (32,),
            kv_heads_per_layer=(4,) * (n - 1) + (8,),
            d_ff_per_layer=(6144,) * (n - 1) + (12288,),
        )
    return get_preset(name)


def _block_sections(name: str):
    cfg = _config(name)
    return cfg, [s for s in build_sections(cfg, "prefill", "plain", False) if s.kind == "block"]


def _covered(g: Gemm) -> set[str]:
    """The explorer ops whose work this GEMM node does (unfused: each its own op)."""
    ops = set(g.weights)
    if g.prologue.explorer:
        ops.add(g.prologue.explorer)
    ops |= {s.explorer for s in g.program if s.explorer and s.op != "sumsq"}
    return ops


@pytest.mark.parametrize("name", PRESETS)
def test_unfused_traffic_is_the_explorers(name: str) -> None:
    cfg, sections = _block_sections(name)
    for sec in sections:
        program = block_program(cfg, sec.layers.first)
        by_name = {op.name: op for op in sec.ops}
        covered: set[str] = set()
        for g in program.gemms:
            covered |= _covered(g)
        missing = covered - set(by_name)
        assert not missing, (sec.key, missing)
        explorer = sum(
            evaluate(by_name[o].a_read, ENV) + evaluate(by_name[o].a_write, ENV) for o in covered
        )
        assert program.traffic()["unfused"] * TOKENS == explorer, (name, sec.key)


@pytest.mark.parametrize("name", PRESETS)
def test_explorer_epilogue_view_is_the_irs(name: str) -> None:
    cfg = _config(name)
    a = analyze(cfg, "prefill", 1, TOKENS, dtype="fp32")
    sections = {s.key: s for s in build_sections(cfg, "prefill", "plain", False)}
    for sec in a["epilogue"]["sections"]:
        if not sec["section"].startswith("block"):
            continue
        t = block_program(cfg, sections[sec["section"]].layers.first).traffic()
        assert sec["bytes_saved"] == 4 * TOKENS * (t["unfused"] - t["fused"]), sec["section"]


def test_fused_traffic_is_loads_and_stores() -> None:
    """Llama 3 8B's gate/up node: the kernel reads the residual row and its 1/rms, writes
    act(g) * u; unfused, the norm writes the normalised row that each GEMM reads back, and g
    and u make a round trip."""
    g = block_program(get_preset("llama-3-8b"), 0).gemm("mlp.gate_up")
    d, f = 4096, 14336
    t = g.traffic()
    assert t["fused"] == d + 1 + f
    assert t["unfused"] == 2 * d + 2 * (d + f) + 3 * f
    assert t["saved"] == {"mlp_norm": 2 * d - 1, "mlp.gate_proj": d, "mlp.act": 4 * f}


def test_every_family_builds_and_prints() -> None:
    for name in PRESETS:
        cfg = _config(name)
        for p in model_programs(cfg):
            text = format_program(p)
            assert text.startswith(f"block {p.layer}")
            for node in p.nodes:
                assert node.name in text
                if isinstance(node, Gemm):
                    assert all(s.op in OPS for s in node.program)
    kinds = {type(n) for n in block_program(get_preset("qwen3-next-80b-a3b"), 0).nodes}
    assert Opaque in kinds  # the linear-attention layer


def test_cli_prints_a_block(capsys: pytest.CaptureFixture[str]) -> None:
    from glassformer.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fusion", "tiny-qwen3", "--layer", "0"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "[attn.q_proj]" in out and "rms_norm(q0) [attn.q_norm]" in out
