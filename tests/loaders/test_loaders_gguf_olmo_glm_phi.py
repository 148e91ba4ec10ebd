"""OLMo 2, GLM-4.5 and Phi-3 GGUFs, written from perturbed tiny HF models the way llama.cpp's
converter writes them (`gguf_builders`), loaded by us and compared with HF's logits.

What each exercises: olmo2 the output norms (post_attention_norm / post_ffw_norm only) and
whole-projection QK-norm weights; olmo3 (an olmo2 file with a window) its 3 sliding : 1 full
layers with YaRN on the full ones only; glm4moe partial NeoX rotary, q/k/v biases, per-head QK-norm,
the sigmoid router with its balancing bias (exp_probs_b), shared experts, a dense first layer
and a next-token-prediction block after the model's own (skipped); phi3 the fused attn_qkv and
ffn_up = [gate; up], and LongRoPE's factor tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer.loaders.gguf import config_from_gguf
from glassformer.loaders.resolve import load_model
from tests.families import SEQ, TINY_HF_CONFIGS, VOCAB, build_hf
from tests.loaders.gguf_builders import base_kv, hf_to_gguf, write_gguf

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4
CASES = {  # test name -> (tiny config, GGUF architecture)
    "olmo2": ("olmo2", "olmo2"),
    "olmo3": ("olmo3", "olmo2"),  # llama.cpp files OLMo 3 as olmo2 with a window
    "glm4moe": ("glm4moe-ungrouped", "glm4moe"),
    "phi3": ("phi3", "phi3"),
    "phi3-longrope": ("phi3-longrope", "phi3"),
}
# llama.cpp's GLM-4.5 router has no expert groups (GLM-4.5 uses one): the tiny config with one
TINY_HF_CONFIGS.setdefault(
    "glm4moe-ungrouped", dict(TINY_HF_CONFIGS["glm4_moe"], n_group=1, topk_group=1)
)


def _write(tmp_path: Path, name: str, extra_block: bool = False) -> tuple[Path, object]:
    config_name, arch = CASES[name]
    hf = build_hf(config_name)
    kv = base_kv(hf.config, arch)
    tensors = hf_to_gguf(arch, hf.config, hf.state_dict())
    if extra_block:  # as Glm4MoeModel writes the MTP layer: block n_layers, plus nextn.*
        n = hf.config.num_hidden_layers
        for key in [k for k in tensors if k.startswith(f"blk.{n - 1}.")]:
            tensors[key.replace(f"blk.{n - 1}.", f"blk.{n}.", 1)] = tensors[key]
        d = hf.config.hidden_size
        tensors[f"blk.{n}.nextn.eh_proj.weight"] = np.ones((d, 2 * d), np.float32)
        tensors[f"blk.{n}.nextn.enorm.weight"] = np.ones(d, np.float32)
        kv["block_count"] = n + 1
        kv["nextn_predict_layers"] = 1
    return write_gguf(tmp_path / f"{name}.gguf", arch, kv, tensors), hf


@pytest.mark.parametrize("name", sorted(CASES))
def test_gguf_logits_match_hf(tmp_path: Path, name: str) -> None:
    path, hf = _write(tmp_path, name, extra_block=name == "glm4moe")
    model = load_model(path)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (model(ids) - hf(ids).logits).abs().max().item()
    assert err <= TOLERANCE, f"{name}: max abs logit error {err:.3g}"


def test_gguf_config_is_the_hf_config(tmp_path: Path) -> None:
    """What llama.cpp's keys and tensors say reads as the HF config does (labels aside)."""
    import glassformer as gf

    for name in ("phi3-longrope", "glm4moe", "olmo2"):
        path, hf = _write(tmp_path, name, extra_block=name == "glm4moe")
        ours = config_from_gguf(path)
        want = gf.Config.from_hf(hf.config.to_dict())
        skip = {"name", "bos_token_id", "eos_token_id", "init_std", "rope_scaling"}
        for field in ours.__dataclass_fields__:
            if field not in skip:  # floats are stored as F32
                got, ref = getattr(ours, field), getattr(want, field)
                assert got == (pytest.approx(ref) if isinstance(ref, float) else ref), field
        if name == "phi3-longrope":
            got, ref = ours.rope_scaling, want.rope_scaling
            assert got.type == ref.type == "longrope" and got.factor == ref.factor
            assert np.allclose(got.long_factor, ref.long_factor)  # stored as F32
            assert got.attention_factor == pytest.approx(np.sqrt(1 + np.log(4) / np.log(16)))


def test_olmo3_gguf_reads_as_hf_olmo3(tmp_path: Path) -> None:
    import math

    import glassformer as gf

    path, hf = _write(tmp_path, "olmo3")
    ours, want = config_from_gguf(path), gf.Config.from_hf(hf.config.to_dict())
    assert ours.hf_model_type == "olmo3" and ours.layer_types == want.layer_types
    assert ours.window(0) == want.window(0) == 7 and ours.window(3) is None
    assert ours.rope_theta_local == want.rope_theta_local
    # HF's file gives YaRN's attention factor; llama.cpp's default is the same 0.1 ln 8 + 1
    assert want.rope_scaling.attention_factor == 0.1 * math.log(8.0) + 1.0


@pytest.mark.parametrize(
    "case, extra, message",
    [
        (
            "olmo3",
            {"rope.scaling.yarn_attn_factor": 1.0},
            r"yarn_attn_factor is not read for OLMo 3",
        ),
        ("glm4moe", {"expert_gating_func": 1}, r"expert_gating_func=1 is not supported"),  # softmax
    ],
)
def test_gguf_metadata_we_do_not_read_is_refused(
    tmp_path: Path, case: str, extra: dict[str, object], message: str
) -> None:
    name, arch = CASES[case]
    hf = build_hf(name)
    kv = {**base_kv(hf.config, arch), **extra}
    path = write_gguf(tmp_path / "bad.gguf", arch, kv, hf_to_gguf(arch, hf.config, hf.state_dict()))
    with pytest.raises(ValueError, match=message):
        config_from_gguf(path)


@pytest.mark.parametrize("quant, mixed", [("int8", True), ("int4", False), ("int4", True)])
def test_phi3_direct_quantised_load_splits_the_fused_tensors(
    tmp_path: Path, quant: str, mixed: bool
) -> None:
    """The direct int4/int8 loader decodes attn_qkv and ffn_up, splits them and quantises the
    parts as `optimize` quantises the float model's (an F32 file under mixed int4: int8)."""
    from glassformer.inference.gguf_direct import load_gguf_quantized
    from glassformer.inference.optimize import optimize

    path, _ = _write(tmp_path, "phi3")
    direct = load_gguf_quantized(path, quant, mixed=mixed)
    ref = optimize(load_model(path), "int8" if mixed else quant)
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(direct(ids), ref(ids))
