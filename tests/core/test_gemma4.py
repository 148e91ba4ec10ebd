"""Gemma 4's text stack beyond the shared parity tests: the cache of KV-sharing layers, proportional
RoPE against HF's own function, the multimodal wrapper's config, and refused combinations."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from tests.families import TINY_HF_CONFIGS, our_config

transformers = pytest.importorskip("transformers")


def test_kv_sharing_layers_allocate_no_cache() -> None:
    cfg = our_config("gemma4_text")
    model = gf.Transformer(cfg)
    cache = model.new_cache(batch_size=2, max_seq_len=16)
    shared = [i for i in range(cfg.n_layers) if cfg.kv_source(i) is not None]
    assert shared == [3, 4, 5]
    assert [cfg.kv_source(i) for i in shared] == [2, 1, 1]  # last earlier layer of each type
    own = 0
    for i, layer in enumerate(cache.layers):
        block = model.layers[i].attn
        if i in shared:
            assert layer is None and block.k_proj is None and block.v_proj is None
            continue
        assert layer is not None
        hk, hd = cfg.layer_n_kv_heads(i), cfg.layer_head_dim(i)
        assert layer.keys.shape[1::2] == (hk, hd) == layer.values.shape[1::2]
        own += 2 * layer.keys.numel() * layer.keys.element_size()
    assert cache.nbytes() == own
    # keys-equal-values on the full layers only, with their own head_dim and KV heads
    assert model.layers[1].attn.v_proj is None and model.layers[0].attn.v_proj is not None
    assert (model.layers[1].attn.head_dim, model.layers[1].attn.n_kv_heads) == (32, 1)


def test_proportional_rope_is_hfs() -> None:
    from transformers import Gemma4TextConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from glassformer.components.rope import inverse_frequencies
    from glassformer.config import RopeScaling

    for dim, proportion, factor in ((32, 0.25, 1.0), (24, 0.5, 2.0), (512, 0.25, 1.0)):
        rope = {"rope_type": "proportional", "partial_rotary_factor": proportion,
                "rope_theta": 1e6, "factor": factor}  # fmt: skip
        hf_cfg = Gemma4TextConfig(
            head_dim=8, global_head_dim=dim,
            rope_parameters={"full_attention": rope,
                             "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
        )  # fmt: skip
        want, _ = ROPE_INIT_FUNCTIONS["proportional"](hf_cfg, None, layer_type="full_attention")
        scaling = RopeScaling("proportional", factor, proportion=proportion)
        got, attention_factor = inverse_frequencies(dim, 1e6, scaling)
        assert attention_factor == 1.0 and torch.equal(got, want), (dim, proportion)


def test_wrapper_config_reads_its_text_config() -> None:
    from transformers import Gemma4Config

    spec = dict(TINY_HF_CONFIGS["gemma4_text"])
    spec.pop("model_type")
    wrapper = Gemma4Config(text_config=spec).to_dict()
    assert gf.Config.from_hf(wrapper) == our_config("gemma4_text")


def test_last_layer_is_global_as_in_hf() -> None:
    spec = dict(TINY_HF_CONFIGS["gemma4_text-moe"], layer_types=["sliding_attention"] * 3)
    assert gf.Config.from_hf(spec).layer_types == ("sliding", "sliding", "full")


def test_global_kv_heads_without_k_eq_v_round_trip() -> None:
    """HF applies num_global_key_value_heads only with attention_k_eq_v; without it the global
    KV heads travel as per_layer_config."""
    cfg = our_config("gemma4_text-moe").replace(global_n_kv_heads=1)
    back = transformers.AutoConfig.for_model(**cfg.to_hf())
    assert gf.Config.from_hf(back.to_dict()) == cfg
    spec = dict(TINY_HF_CONFIGS["gemma4_text-moe"], num_global_key_value_heads=1)
    assert gf.Config.from_hf(spec).global_n_kv_heads is None  # ignored, as HF does


BAD_HF = [
    (dict(use_bidirectional_attention="all"), "use_bidirectional_attention"),
    (dict(per_layer_config={"0": {"head_dim": 8}}), "per_layer_config"),
    (dict(per_layer_config={"2": {"head_dim": 8, "sliding_window": 3}}), "per_layer_config"),
    (dict(num_kv_shared_layers=3), "n_kv_shared_layers"),
    (dict(num_kv_shared_layers=2), "n_kv_shared_layers"),  # no earlier full layer left
    (dict(enable_moe_block=True, num_experts=None), "num_experts"),
    (dict(use_double_wide_mlp=True), "double_wide_mlp"),
    (
        dict(rope_parameters=dict(
            sliding_attention=dict(rope_type="proportional", rope_theta=1e4,
                                   partial_rotary_factor=0.5),
            full_attention=dict(rope_type="default", rope_theta=1e6))),
        "sliding_attention",
    ),
    (
        dict(rope_parameters=dict(
            sliding_attention=dict(rope_type="default", rope_theta=1e4),
            full_attention=dict(rope_type="proportional", rope_theta=1e6,
                                partial_rotary_factor=1.5))),
        "proportion",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("change", "named"), BAD_HF)
def test_unsupported_combinations_are_refused_by_name(change: dict, named: str) -> None:
    spec = {**TINY_HF_CONFIGS["gemma4_text-moe"], **change}
    with pytest.raises(ValueError, match=named):
        gf.Config.from_hf(spec)


def test_config_refuses_gemma4_fields_it_cannot_build() -> None:
    cfg = our_config("gemma4_text")
    for change, named in (
        (dict(global_head_dim=0), "global_head_dim"),
        (dict(global_n_kv_heads=3), "global_n_kv_heads"),
        (dict(per_layer_vocab_size=0), "per_layer_vocab_size"),
        (dict(moe_beside_mlp=True), "moe_beside_mlp"),
        (dict(norm_placement="post"), "norm_placement"),
    ):
        with pytest.raises(ValueError, match=named):
            cfg.replace(**change)
