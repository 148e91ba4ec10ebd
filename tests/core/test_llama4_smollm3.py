"""Llama 4's text model and SmolLM3 beyond the shared parity table: variants, the multimodal
wrapper, and the refusals of what glassformer does not implement."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from tests.families import TINY_HF_CONFIGS, VOCAB, build_hf

pytest.importorskip("transformers")

LLAMA4 = TINY_HF_CONFIGS["llama4_text"]
SMOLLM3 = TINY_HF_CONFIGS["smollm3"]


def _ids(batch: int, seq: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _parity(spec: dict, name: str) -> float:
    TINY_HF_CONFIGS[name] = spec
    try:
        hf = build_hf(name)
    finally:
        del TINY_HF_CONFIGS[name]
    ours = gf.from_hf(hf).eval()
    ids = _ids(2, 24, 0)
    with torch.no_grad():
        return (ours(ids) - hf(ids).logits).abs().max().item()


def test_top2_routing_every_layer_without_qk_norm() -> None:
    """Two experts per token (each fed the token scaled by its own sigmoid score), MoE on every
    layer, HF's derived NoPE pattern, no q/k norm (as Maverick), no temperature tuning."""
    spec = dict(
        LLAMA4, num_experts_per_tok=2, interleave_moe_layer_step=1, use_qk_norm=False,
        attn_temperature_tuning=False, no_rope_layer_interval=2,
    )  # fmt: skip
    assert _parity(spec, "llama4_text-top2") <= 1e-4


def test_the_multimodal_wrapper_reads_as_its_text_model() -> None:
    text = {k: v for k, v in LLAMA4.items() if k != "model_type"}
    wrapped = {"model_type": "llama4", "text_config": text, "vision_config": {}}
    assert gf.Config.from_hf(wrapped) == gf.Config.from_hf(LLAMA4)


def test_derived_patterns() -> None:
    cfg = gf.Config.from_hf(LLAMA4)
    assert cfg.nope_layers == (3,)
    assert cfg.layer_types == ("chunked", "chunked", "chunked", "full")
    assert [cfg.is_moe_layer(i) for i in range(4)] == [False, True, False, True]
    assert cfg.attn_temperature_floor == 4 and cfg.qk_l2_norm
    smol = gf.Config.from_hf({k: v for k, v in SMOLLM3.items() if k != "no_rope_layers"})
    assert smol.nope_layers == ()  # 3 layers, every 4th NoPE: none
    assert smol.layer_types is None and smol.sliding_window is None


def test_a_chunked_layer_caches_one_chunk_and_decodes_across_chunks() -> None:
    hf = build_hf("llama4_text")
    ours = gf.from_hf(hf).eval()
    cache = ours.new_cache(1, 40)
    assert [layer.capacity for layer in cache.layers] == [8, 8, 8, 40]
    ids = _ids(1, 20, 3)
    with torch.no_grad():
        expected = hf(ids).logits
        steps = [ours(ids[:, :5], cache)] + [ours(ids[:, t : t + 1], cache) for t in range(5, 20)]
    assert (torch.cat(steps, 1) - expected).abs().max() <= 1e-4


def test_every_layer_chunked_round_trips() -> None:
    cfg = gf.Config.from_hf({**LLAMA4, "no_rope_layers": [1, 1, 1, 1]})
    assert cfg.layer_types is None and cfg.layer_type(3) == "chunked" and not cfg.nope_layers
    assert cfg.attn_temperature_floor is None  # no NoPE layer to tune
    assert gf.Config.from_hf(cfg.to_hf()) == cfg
    assert cfg.to_hf()["layer_types"] == ["chunked_attention"] * 4


def test_hf_temperature_counts_from_the_padded_start() -> None:
    """Why the padding test holds Llama 4's padded rows to HF's rather than to the row alone:
    HF's NoPE temperature uses arange + cache length, not position_ids."""
    hf = build_hf("llama4_text")
    short = _ids(1, 19, 5)
    batch = torch.cat((torch.zeros(1, 11, dtype=torch.long), short), 1)
    mask = torch.ones_like(batch)
    mask[0, :11] = 0
    with torch.no_grad():
        alone = hf(short).logits[0]
        padded = hf(batch, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0))
    assert (padded.logits[0, 11:] - alone).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(moe_layers=[0, 3]), "'moe_layers'=[0, 3] is not supported"),
        (dict(moe_layers=[]), "'moe_layers'=[] is not supported"),
        (dict(attention_chunk_size=None, layer_types=["chunked_attention"] * 4),
         "chunked layers but attention_chunk_size is null"),
        (dict(no_rope_layers=[1, 0]), "'no_rope_layers' must hold a 0 or 1 for each of the 4"),
        (dict(layer_types=["sliding_attention"] * 4), "'layer_types' has unsupported"),
        (dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)),
         "'rope_parameters.rope_type'='dynamic' is not supported"),
    ],
)  # fmt: skip
def test_llama4_refusals_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gf.Config.from_hf({**LLAMA4, **change})


def test_smollm3_sliding_layers_need_use_sliding_window() -> None:
    spec = dict(SMOLLM3, use_sliding_window=False, layer_types=["sliding_attention"] * 3)
    with pytest.raises(ValueError, match="sliding layers but use_sliding_window=False"):
        gf.Config.from_hf(spec)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(layer_types=("chunked",) * 4), "attention_chunk_size: layer_types has chunked"),
        (dict(attention_chunk_size=0), "attention_chunk_size: must be a positive integer"),
        (dict(nope_layers=(4,)), "nope_layers: expected increasing layer indices below"),
        (dict(nope_layers=(2, 1)), "nope_layers: expected increasing layer indices"),
        (dict(nope_layers=(1,), position="none"), "nope_layers: needs standard attention"),
        (dict(attn_temperature_floor=0), "attn_temperature_floor: must be a positive"),
        (dict(qk_l2_norm=True, qk_norm=True), "qk_l2_norm: not with qk_norm"),
        (dict(moe_layer_step=0), "moe_layer_step: must be a positive integer"),
        (dict(router_scales_input=True), "router_scales_input: needs routed GLU experts"),
        (dict(attention_chunk_size=8, sliding_window=4), "layer_types: required when both"),
    ],
)
def test_config_refusals_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gf.Config.preset("tiny", **change)


@pytest.mark.parametrize("name", ["smollm3-nowindow", "llama4_text-optimized"])
def test_optimized_model_decodes_as_the_plain_one(name: str) -> None:
    """The fused inference modules (and, for SmolLM3 without a window, the native decode plan)
    keep NoPE layers unrotated and Llama 4's chunks, q/k norm and temperature."""
    from glassformer.inference.optimize import optimize

    spec = dict(SMOLLM3, use_sliding_window=False) if name.startswith("smollm3") else LLAMA4
    TINY_HF_CONFIGS[name] = spec
    try:
        hf = build_hf(name)
    finally:
        TINY_HF_CONFIGS.pop(name)
    plain = gf.from_hf(hf).eval()
    fast = optimize(gf.from_hf(hf).eval())
    ids = _ids(1, 30, 6)
    with torch.no_grad():
        expected = plain(ids)
        cache = fast.new_cache(1, 40)
        steps = [fast(ids[:, :9], cache)] + [fast(ids[:, t : t + 1], cache) for t in range(9, 30)]
    assert (torch.cat(steps, 1) - expected).abs().max() <= 1e-4


def test_a_multimodal_checkpoint_loads_its_text_model(tmp_path) -> None:
    """Llama4ForConditionalGeneration's directory: config under text_config, weights under
    language_model.*, the vision tower and projector skipped."""
    import transformers

    text = {k: v for k, v in LLAMA4.items() if k != "model_type"}
    vision = dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=28, patch_size=14, vision_output_dim=32, projector_input_dim=32,
        projector_output_dim=64,
    )  # fmt: skip
    config = transformers.Llama4Config(text_config=text, vision_config=vision)
    torch.manual_seed(0)
    hf = transformers.Llama4ForConditionalGeneration(config).float().eval()
    hf.save_pretrained(tmp_path)
    ours = gf.from_hf(tmp_path).eval()
    ids = _ids(2, 20, 7)
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
        assert (ours(ids) - expected).abs().max() <= 1e-4


def test_the_explorer_reports_the_chunked_cache() -> None:
    from glassformer.explorer import analyze

    cfg = gf.Config.from_hf(LLAMA4)
    model = gf.Transformer(cfg)
    a = analyze(cfg, "decode", batch=2, seq=40, dtype="fp32")
    chunked = a["chunked"]
    assert (chunked["chunked_layers"], chunked["other_layers"], chunked["chunk"]) == (3, 1, 8)
    assert chunked["kv_cache_bytes"] == a["kv_cache_bytes"] == model.new_cache(2, 40).nbytes()
    full = gf.Transformer(cfg.replace(layer_types=None, attention_chunk_size=None))
    assert chunked["kv_cache_bytes_if_all_full"] == full.new_cache(2, 40).nbytes()
