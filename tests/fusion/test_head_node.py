"""The LM head's IR node (fusion/head.py) against the explorer: its unfused count is the
explorer's train-mode head ops (GEMM, soft-cap, cross-entropy) read and written one by one, and
the explorer's fused head traffic is the kernel's loads and stores the node counts."""

import pytest

from glassformer.explorer.costs import DEFAULT_HARDWARE, environment, evaluate_op, resolve_dtype
from glassformer.explorer.hardware import get_hardware
from glassformer.explorer.ops import build_sections
from glassformer.fusion.head import head_node
from glassformer.presets import get_preset


@pytest.mark.parametrize("preset", ["gemma-2-2b", "llama-3-8b", "qwen3-30b-a3b", "gpt2"])
def test_head_node_traffic_is_the_explorers(preset):
    cfg = get_preset(preset)
    section = next(s for s in build_sections(cfg, "train", "plain", None) if s.kind == "head")
    env = environment("train", 1, 1, "flash")  # one token
    dt, hw = resolve_dtype("fp32"), get_hardware(DEFAULT_HARDWARE)
    rows = [evaluate_op(op, env, dt, hw) for op in section.ops if op.name != "final_norm"]
    assert {r["name"] for r in rows} >= {"lm_head", "cross_entropy"}
    unfused = sum(r["bytes_activations"] for r in rows) / 4
    saved = sum(r["fused_saved_bytes"] for r in rows if r["fuse_into"] == "lm_head") / 4
    node = head_node(cfg)
    assert node.traffic() == {"unfused": unfused, "fused": unfused - saved}
    # the logits (vocab elements per token) are gone from the fused count
    assert node.traffic()["fused"] == 3 * cfg.d_model + 3
    assert ("tanh" in node.format()) == bool(cfg.final_logit_softcap)
    assert node.weight == ("embed.weight" if cfg.tie_embeddings else "lm_head.weight")
