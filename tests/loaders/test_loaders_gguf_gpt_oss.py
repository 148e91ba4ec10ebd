"""gpt-oss GGUF files (llama.cpp's `gpt-oss` architecture) against HF's GptOss model.

The files are written from a random tiny HF model the way convert_hf_to_gguf.py's GptOssModel
does (`tests/loaders/gguf_builders.py`): sinks, router and expert biases, gate and up split out
of HF's interleaved `gate_up_proj`, the pre-MLP norm under HF's name. The expert tensors are
stored as F32, F16/BF16 or MXFP4 (what real gpt-oss files hold); for the lossy formats the HF
model gets the same rounding first (through numpy / `gguf.quants`), so the logits must still
agree to 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from glassformer.config import Config
from glassformer.loaders.gguf import load_gguf
from glassformer.loaders.resolve import load_model
from tests.families import perturb
from tests.loaders.gguf_builders import base_kv, hf_to_gguf, write_gguf

transformers = pytest.importorskip("transformers")

ARCH = "gpt-oss"
VOCAB = 128
Q = GGMLQuantizationType


def tiny_gpt_oss() -> torch.nn.Module:
    config = transformers.GptOssConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=5, max_position_embeddings=64,
        rope_parameters=dict(
            rope_type="yarn", rope_theta=150000.0, factor=4.0, beta_fast=32.0, beta_slow=1.0,
            truncate=False, original_max_position_embeddings=16,
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    perturb(model)
    with torch.no_grad():  # GGUF fixes the clamp at 7: large enough gate/up values reach it
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj.mul_(40)
    model.set_attn_implementation("eager")
    return model


def logits_error(hf: torch.nn.Module, path: Path) -> float:
    model = load_model(path)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # 12 tokens: past the window of 5
        return (model(ids) - hf(ids).logits).abs().max().item()


def write(tmp_path: Path, hf: torch.nn.Module, qtypes: dict[str, Q] | None = None) -> Path:
    tensors = hf_to_gguf(ARCH, hf.config, hf.state_dict())
    return write_gguf(tmp_path / "m.gguf", ARCH, base_kv(hf.config, ARCH), tensors, qtypes)


def test_clamps_are_reached() -> None:
    """The test model's experts see gate and up values beyond the limit of 7."""
    hf = tiny_gpt_oss()
    seen: list[torch.Tensor] = []
    experts = hf.model.layers[0].mlp.experts
    experts._apply_gate = lambda gu, f=experts._apply_gate: seen.append(gu) or f(gu)
    with torch.no_grad():
        hf(torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0)))
    values = torch.cat([s.flatten() for s in seen])
    assert (values > 7).any() and (values < -7).any()


def test_f32_gguf_matches_hf(tmp_path: Path) -> None:
    hf = tiny_gpt_oss()
    path = write(tmp_path, hf)
    cfg, state = load_gguf(path)
    want = Config.from_hf(hf.config.to_dict())
    for name in ("attn_sinks", "router_logit_bias", "mlp_bias", "glu_alpha", "glu_limit",
                 "glu_up_offset", "layer_types", "sliding_window", "n_experts",
                 "n_experts_per_token", "moe_d_ff", "rope_scaling", "qkv_bias"):  # fmt: skip
        assert getattr(cfg, name) == getattr(want, name), name
    assert state["layers.1.attn.sinks"].shape == (4,)
    assert logits_error(hf, path) <= 1e-4


def test_f16_and_bf16_gguf_match_hf(tmp_path: Path) -> None:
    """Attention weights F16, expert weights BF16; the HF model rounded the same way."""
    hf = tiny_gpt_oss()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".self_attn." in name and name.endswith("proj.weight"):
                p.copy_(p.half().float())
            elif name.endswith(("experts.gate_up_proj", "experts.down_proj")):
                p.copy_(p.bfloat16().float())
    tensors = hf_to_gguf(ARCH, hf.config, hf.state_dict())
    attn = (".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".attn_output.weight")
    qtypes = {n: Q.F16 for n in tensors if n.endswith(attn)}
    qtypes |= {n: Q.BF16 for n in tensors if n.endswith("_exps.weight")}
    path = write(tmp_path, hf, qtypes)
    assert logits_error(hf, path) <= 1e-4


def test_mxfp4_experts_match_hf(tmp_path: Path) -> None:
    """MXFP4 expert weights (as published gpt-oss GGUFs store them) decode to gguf.quants'
    values: the HF model with its experts replaced by those values gives the same logits."""
    hf = tiny_gpt_oss()
    with torch.no_grad():
        for layer in hf.model.layers:
            ex = layer.mlp.experts
            for p in (ex.gate_up_proj, ex.down_proj):
                # quantised along GGUF rows: the input dim, i.e. HF's dim 1 ([E, in, out])
                rows = p.detach().transpose(1, 2).contiguous().numpy()
                back = dequantize(quantize(rows, Q.MXFP4), Q.MXFP4)
                assert not np.array_equal(back, rows)  # the rounding is real
                p.copy_(torch.from_numpy(back).transpose(1, 2))
    tensors = hf_to_gguf(ARCH, hf.config, hf.state_dict())
    path = write(tmp_path, hf, {n: Q.MXFP4 for n in tensors if "_exps.weight" in n})
    assert logits_error(hf, path) <= 1e-4
