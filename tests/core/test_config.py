"""Config validation, serialisation and HF-config error reporting."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glassformer as gf

BASE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(n_heads=5), "n_heads"),
        (dict(n_kv_heads=3), "n_kv_heads"),
        (dict(d_model=-8), "d_model"),
        (dict(n_layers=0), "n_layers"),
        (dict(vocab_size=-1), "vocab_size"),
        (dict(rope_scaling={"type": "ntk-magic", "factor": 2.0}), "rope_scaling.type"),
        (dict(rope_scaling={"type": "llama3", "factor": 8.0}), "rope_scaling.original"),
        (dict(norm="batchnorm"), "norm"),
        (dict(activation="swish2"), "activation"),
        (dict(layer_types=("full",)), "layer_types"),
        (dict(layer_types=("full", "sliding")), "sliding_window"),
        (dict(n_experts=4, n_experts_per_token=5), "n_experts_per_token"),
        (dict(n_experts=6, n_experts_per_token=2, router_n_groups=4), "router_n_groups"),
        (dict(attention="mla"), "kv_lora_rank"),
        (dict(rope_fraction=1.5), "rope_fraction"),
        (dict(norm_eps=0.0), "norm_eps"),
    ],
)
def test_bad_config_names_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        gf.Config(**{**BASE, **changes})


@pytest.mark.parametrize(
    ("hf", "field"),
    [
        (dict(model_type="bert"), "model_type"),
        (
            dict(
                model_type="llama",
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=64,
                vocab_size=10,
                quantization_config={"bits": 4},
            ),
            "quantization_config",
        ),
        (
            dict(
                model_type="llama",
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=64,
                vocab_size=10,
                rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0},
            ),
            "rope_type",
        ),
        (
            dict(
                model_type="llama",
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=64,
                vocab_size=10,
                num_key_value_heads=3,
            ),
            "n_kv_heads",
        ),
        (
            dict(
                model_type="llama",
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=1,
                intermediate_size=64,
                vocab_size=10,
                hidden_act="mish",
            ),
            "hidden_act",
        ),
        (
            dict(
                model_type="qwen3_moe",
                hidden_size=32,
                num_attention_heads=4,
                num_hidden_layers=2,
                intermediate_size=64,
                vocab_size=10,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=8,
                decoder_sparse_step=2,
            ),
            "decoder_sparse_step",
        ),
        (
            dict(
                model_type="gpt2",
                n_embd=32,
                n_layer=1,
                n_head=4,
                vocab_size=10,
                scale_attn_by_inverse_layer_idx=True,
            ),
            "scale_attn_by_inverse_layer_idx",
        ),
        (dict(model_type="llama", num_attention_heads=4), "hidden_size"),
    ],
)
def test_bad_hf_config_names_the_field(hf: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        gf.Config.from_hf(hf)


def test_to_hf_refuses_what_the_family_cannot_express() -> None:
    cfg = gf.Config.preset("tiny").replace(hf_model_type="llama", qk_norm=True)
    with pytest.raises(ValueError, match="qk_norm"):
        cfg.to_hf()


def test_save_and_load(tmp_path) -> None:
    cfg = gf.Config.preset("deepseek-v3")
    cfg.save(tmp_path / "c.json")
    assert gf.Config.load(tmp_path / "c.json") == cfg
    (tmp_path / "bad.json").write_text('{"vocab_size": 3, "widht": 4}')
    with pytest.raises(ValueError, match="widht"):
        gf.Config.load(tmp_path / "bad.json")


def test_from_hf_reads_a_config_file(tmp_path) -> None:
    import json

    cfg = gf.Config.preset("gemma-3-270m")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf()))
    assert gf.Config.from_hf(tmp_path) == cfg
    assert gf.Config.from_hf(tmp_path / "config.json") == cfg


@settings(max_examples=15, deadline=None)
@given(
    heads=st.sampled_from([1, 2, 4]),
    kv_div=st.sampled_from([1, 2, 4]),
    layers=st.integers(1, 3),
    window=st.sampled_from([None, 3, 5]),
    mlp=st.sampled_from(["mlp", "glu"]),
    placement=st.sampled_from(["pre", "post", "sandwich"]),
    interleaved=st.booleans(),
    seq=st.integers(2, 12),
)
def test_any_valid_config_decodes_like_its_full_forward(
    heads, kv_div, layers, window, mlp, placement, interleaved, seq
) -> None:
    kv = max(1, heads // kv_div)
    cfg = gf.Config(
        vocab_size=50,
        d_model=8 * heads,
        n_layers=layers,
        n_heads=heads,
        n_kv_heads=kv,
        max_seq_len=16,
        sliding_window=window,
        mlp=mlp,
        norm_placement=placement,
        rope_interleaved=interleaved,
    )
    torch.manual_seed(0)
    model = gf.Transformer(cfg).eval()
    ids = torch.randint(0, 50, (1, seq))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache(1, 16)
        steps = torch.cat([model(ids[:, t : t + 1], cache) for t in range(seq)], dim=1)
    assert full.shape == (1, seq, 50)
    assert (steps - full).abs().max() < 1e-5
