"""Qwen3-Next and Qwen3.5 beyond the shared parity tests: what their configs may not say, the
multimodal checkpoint layout, and a cache that mixes KV buffers with linear-attention states."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.components.kv_cache import LayerCache
from glassformer.hf.weights import hf_to_ours
from tests.families import SEQ, TINY_HF_CONFIGS, VOCAB, build_hf

transformers = pytest.importorskip("transformers")


def _spec(name: str, **changes: object) -> dict:
    return {**TINY_HF_CONFIGS[name], **changes}


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(layer_types=["linear_attention", "sliding_attention", "full_attention"]),
         r"'layer_types' has unsupported layer type\(s\) 'sliding_attention'"),
        (dict(layer_types=["linear_attention", "full_attention"]),
         r"'layer_types' has 2 entries for num_hidden_layers=3"),
        (dict(layer_types=None, full_attention_interval=0),
         r"'full_attention_interval' must be a positive integer, got 0"),
        (dict(decoder_sparse_step=2), r"'decoder_sparse_step'=2 is not supported"),
        (dict(attn_output_gate=False), r"'attn_output_gate'=False is not supported"),
        (dict(linear_num_key_heads=3), r"linear_n_k_heads: 3 does not divide linear_n_v_heads=4"),
        (dict(mlp_only_layers=[1]), r"'mlp_only_layers' must be a prefix"),
        (dict(rope_parameters=dict(rope_type="default", rope_theta=1e4, mrope_section="11")),
         r"'rope_parameters.mrope_section' must be a list of integers >= 0, got '11'"),
        (dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)),
         r"'rope_parameters.rope_type'='dynamic' is not supported"),
        (dict(some_new_switch=True), r"unknown field\(s\) \['some_new_switch'\]"),
    ],
)  # fmt: skip
def test_refusals_name_the_key_and_value(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gf.Config.from_hf(_spec("qwen3_next", **changes))


def test_full_attention_interval_is_hfs_layer_pattern() -> None:
    """Without layer_types, every interval-th layer is full, as HF's config derives it."""
    spec = _spec("qwen3_5_text", num_hidden_layers=6, full_attention_interval=3)
    ours = gf.Config.from_hf(spec)
    hf_types = transformers.AutoConfig.for_model(**spec).layer_types
    assert [ours.layer_type(i) for i in range(6)] == [t.split("_")[0] for t in hf_types]
    assert ours.to_hf()["layer_types"] == hf_types


def test_mrope_sections_change_nothing_for_text() -> None:
    """Text positions are the same in mrope's three rows: any sections give the same model."""
    base = gf.Config.from_hf(_spec("qwen3_5_text"))
    for section in ([4, 0, 0], [0, 0, 4], [11, 11, 10]):
        rope = dict(TINY_HF_CONFIGS["qwen3_5_text"]["rope_parameters"], mrope_section=section)
        assert gf.Config.from_hf(_spec("qwen3_5_text", rope_parameters=rope)) == base


def test_multimodal_checkpoint_layout_loads_the_text_model() -> None:
    """Qwen3.5's published checkpoints keep the text model under model.language_model, beside
    the vision tower and the MTP layer, which HF's causal LM skips; so do we."""
    hf = build_hf("qwen3_5_moe_text")
    state = {
        k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k: v
        for k, v in hf.state_dict().items()
    }
    state["model.visual.blocks.0.attn.qkv.weight"] = torch.zeros(3, 2)
    state["mtp.fc.weight"] = torch.zeros(2, 2)
    cfg = gf.Config.from_hf(hf.config.to_dict())
    ours = hf_to_ours(cfg, state)
    assert ours.keys() == hf_to_ours(cfg, hf.state_dict()).keys()
    for name, tensor in hf_to_ours(cfg, hf.state_dict()).items():
        assert torch.equal(ours[name], tensor), name


def test_mixed_cache_nbytes_reset_and_reuse() -> None:
    model = gf.from_hf(build_hf("qwen3_next")).eval()
    cfg = model.config
    cache = model.new_cache(2, SEQ)
    kinds = [isinstance(layer, LayerCache) for layer in cache.layers]
    assert kinds == [cfg.layer_type(i) != "linear" for i in range(cfg.n_layers)]
    assert cache.nbytes() == sum(
        layer.keys.nbytes + layer.values.nbytes if isinstance(layer, LayerCache)
        else layer.conv.nbytes + layer.recurrent.nbytes
        for layer in cache.layers
    )  # fmt: skip
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model(ids, cache)
        cache.reset()
        assert all(
            not layer.recurrent.any() and not layer.conv.any()
            for layer in cache.layers
            if not isinstance(layer, LayerCache)
        )
        assert torch.equal(model(ids, cache), first)
