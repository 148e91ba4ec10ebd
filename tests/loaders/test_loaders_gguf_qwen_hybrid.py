"""GGUF files of Qwen3-Next (qwen3next) and Qwen3.5 (qwen35, qwen35moe), written from tiny
random HF models the way llama.cpp's converter writes them (tensor names from gguf.constants'
MODEL_TENSORS of each architecture), loaded and compared with the HF model's logits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES

import glassformer as gf
from glassformer.loaders.gguf import load_gguf
from tests.families import SEQ, TINY_HF_CONFIGS, VOCAB, perturb
from tests.loaders.gguf_builders import (
    QWEN_HYBRID_ARCHS,
    qwen_hybrid_kv,
    qwen_hybrid_tensors,
    write_gguf,
)

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


# llama.cpp's qwen3next has routed experts on every layer (no dense ffn_* tensors) and always
# renormalises the top-k weights: the tiny Qwen3-Next of the parity tests without its dense first
# layer and unnormalised routing
GGUF_CHANGES = {"qwen3_next": dict(mlp_only_layers=[], norm_topk_prob=True)}


def _hf(name: str) -> object:
    spec = {**TINY_HF_CONFIGS[name], **GGUF_CHANGES.get(name, {})}
    config = transformers.AutoConfig.for_model(spec.pop("model_type"), **spec)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
    perturb(model)
    return model


def _gguf(tmp_path: Path, name: str, **kv_changes: object) -> tuple[Path, object]:
    hf = _hf(name)
    arch = QWEN_HYBRID_ARCHS[name]
    kv = {**qwen_hybrid_kv(hf.config, arch), **kv_changes}
    tensors = qwen_hybrid_tensors(arch, hf.config, hf.state_dict())
    return write_gguf(tmp_path / f"{name}.gguf", arch, kv, tensors), hf


@pytest.mark.parametrize("name", sorted(QWEN_HYBRID_ARCHS))
def test_tensor_names_are_the_architectures(tmp_path: Path, name: str) -> None:
    """Every tensor written is one gguf.constants lists for the architecture."""
    arch = QWEN_HYBRID_ARCHS[name]
    enum = next(a for a, n in MODEL_ARCH_NAMES.items() if n == arch)
    assert isinstance(enum, MODEL_ARCH)
    allowed = {TENSOR_NAMES[t] for t in MODEL_TENSORS[enum]}
    hf = _hf(name)
    for tensor in qwen_hybrid_tensors(arch, hf.config, hf.state_dict()):
        base = re.sub(r"\.(weight|bias)$", "", re.sub(r"^blk\.\d+\.", "blk.{bid}.", tensor))
        assert base in allowed, tensor


@pytest.mark.parametrize("name", sorted(QWEN_HYBRID_ARCHS))
def test_gguf_matches_the_hf_model(tmp_path: Path, name: str) -> None:
    path, hf = _gguf(tmp_path, name)
    cfg, state = load_gguf(path)
    expected = gf.Config.from_hf(hf.config.to_dict())
    # labels, token ids, and the epsilon GGUF stores as float32
    same = dict(name="x", bos_token_id=None, eos_token_id=None, norm_eps=cfg.norm_eps)
    assert cfg.replace(**same) == expected.replace(**same)
    model = gf.Transformer(cfg).eval()
    model.load_state_dict(state, strict=True)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (model(ids) - hf(ids).logits).abs().max().item()
    assert err <= TOLERANCE, f"{name}: max abs logit error {err:.3g}"


@pytest.mark.parametrize("name", sorted(QWEN_HYBRID_ARCHS))
def test_direct_quantised_load_matches_optimize(tmp_path: Path, name: str) -> None:
    """The direct int8 loader splits the fused tensors (Qwen3-Next's ssm_ba) as `load_gguf`
    does and quantises what `optimize` quantises in the float model (every linear layer of the
    blocks: Gated DeltaNet projections and shared experts included)."""
    from glassformer.inference.gguf_direct import load_gguf_quantized
    from glassformer.inference.optimize import optimize
    from glassformer.loaders import load_model

    path, _ = _gguf(tmp_path, name)
    direct = load_gguf_quantized(path, "int8")
    ref = optimize(load_model(path), "int8")
    ids = torch.randint(0, VOCAB, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(direct(ids), ref(ids))


def test_interval_that_disagrees_with_the_tensors_is_refused(tmp_path: Path) -> None:
    path, _ = _gguf(tmp_path, "qwen3_next", full_attention_interval=3)
    with pytest.raises(ValueError, match=r"qwen3next.full_attention_interval=3 does not match"):
        load_gguf(path)


def test_positive_decay_rate_is_refused_as_corrupt(tmp_path: Path) -> None:
    """ssm_a holds -exp(A_log) < 0; a positive entry has no A_log."""
    hf = _hf("qwen3_5_text")
    tensors = qwen_hybrid_tensors("qwen35", hf.config, hf.state_dict())
    tensors["blk.0.ssm_a"] = np.abs(tensors["blk.0.ssm_a"])
    path = write_gguf(tmp_path / "bad.gguf", "qwen35", qwen_hybrid_kv(hf.config, "qwen35"), tensors)
    with pytest.raises(ValueError, match=r"'blk.0.ssm_a'.*inf/NaN"):
        load_gguf(path)
