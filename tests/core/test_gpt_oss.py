"""gpt-oss beyond the shared parity tests: the published config.json, the refusals, the new
Config fields' validation, and training through the attention sinks.

The shared tables run the rest: tests/families.py's `gpt_oss` entries drive the HF logit and
decoding parity (tests/core/test_hf_parity.py) and the cost model (tests/explorer); the
presets' parameter counts are in tests/core/test_presets.py; GGUF files in
tests/loaders/test_loaders_gguf_gpt_oss.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import glassformer as gf
from glassformer.config import Config
from glassformer.presets import get_preset
from tests.families import SEQ, VOCAB, build_hf, our_config, perturb

transformers = pytest.importorskip("transformers")

# The keys of openai/gpt-oss-20b's config.json (copied by hand; its quantization_config, which
# says the experts are stored as MXFP4, is added back by the MXFP4 tests).
GPT_OSS_20B: dict[str, Any] = {
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
    "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02,
    "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
    "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
        "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": False,
    },
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128,
    "swiglu_limit": 7.0, "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0",
    "use_cache": True, "vocab_size": 201088,
}  # fmt: skip


def test_published_config_reads_as_the_preset() -> None:
    assert Config.from_hf(GPT_OSS_20B) == get_preset("gpt-oss-20b")


def test_published_style_directory_matches_hf(tmp_path: Path) -> None:
    """A tiny file with the published keys (legacy rope_scaling, OpenAI's duplicate
    experts_per_token): HF builds its model from the same directory."""
    tiny = {
        **GPT_OSS_20B, "vocab_size": VOCAB, "hidden_size": 48, "intermediate_size": 24,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 12, "num_local_experts": 4, "num_experts_per_tok": 2,
        "experts_per_token": 2, "sliding_window": 6, "pad_token_id": None,
        "eos_token_id": 2, "swiglu_limit": 0.4,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    hf_config = transformers.AutoConfig.from_pretrained(tmp_path)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(hf_config).float().eval()
    perturb(hf)
    hf.set_attn_implementation("eager")
    hf.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(tiny))  # the published keys again
    ours = gf.from_hf(tmp_path).eval()
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (ours(ids) - hf(ids).logits).abs().max().item()
    assert err <= 1e-4


MXFP4 = {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
         "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"}  # fmt: skip


def test_quantization_configs_other_than_mxfp4_are_refused() -> None:
    assert Config.from_hf({**GPT_OSS_20B, "quantization_config": MXFP4}) == get_preset(
        "gpt-oss-20b"
    )
    bnb = {**GPT_OSS_20B, "quantization_config": {"quant_method": "bitsandbytes"}}
    with pytest.raises(ValueError, match="quantization_config' with quant_method 'bitsandbytes"):
        Config.from_hf(bnb)


def test_mxfp4_checkpoint_matches_hf(tmp_path: Path) -> None:
    """A checkpoint laid out as the published ones (experts as MXFP4 `*_blocks` and `*_scales`,
    quantization_config mxfp4) against HF's model holding what transformers' own MXFP4 decoder
    (`convert_moe_packed_tensors`) makes of the same bytes."""
    from safetensors.torch import save_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    # inputs of every expert matrix in whole blocks of 32: d = 64, f = 32
    cfg = transformers.GptOssConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
        num_experts_per_tok=2, sliding_window=7, swiglu_limit=0.5, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    perturb(hf)
    hf.set_attn_implementation("eager")
    gen = torch.Generator().manual_seed(0)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    for i in range(cfg.num_hidden_layers):
        for name, n_in, n_out in (
            ("gate_up_proj", cfg.hidden_size, 2 * cfg.intermediate_size),
            ("down_proj", cfg.intermediate_size, cfg.hidden_size),
        ):
            key = f"model.layers.{i}.mlp.experts.{name}"
            shape = (cfg.num_local_experts, n_out, n_in // 32)
            blocks = torch.randint(0, 256, (*shape, 16), dtype=torch.uint8, generator=gen)
            scales = torch.randint(119, 124, shape, dtype=torch.uint8, generator=gen)
            weight = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)
            assert weight.shape == state.pop(key).shape
            state[f"{key}_blocks"], state[f"{key}_scales"] = blocks, scales
            with torch.no_grad():
                getattr(hf.model.layers[i].mlp.experts, name).copy_(weight)
    save_file(state, tmp_path / "model.safetensors")
    config = {**cfg.to_dict(), "quantization_config": MXFP4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    ours = gf.from_hf(tmp_path).eval()
    expected = gf.from_hf(hf).state_dict()
    for name, tensor in ours.state_dict().items():  # the decoded experts bit for bit
        assert torch.equal(tensor, expected[name]), name
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (ours(ids) - hf(ids).logits).abs().max().item()
    assert err <= 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type'='dynamic'"),
        ({"swiglu_limit": "7"}, "'swiglu_limit' must be a finite number, got '7'"),
        ({"swiglu_alpha": -1.0}, "glu_alpha: must be > 0, got -1.0"),
        ({"experts_per_token": 3}, "'experts_per_token'=3 disagrees"),
        ({"layer_types": ["chunked_attention"] * 24}, "'layer_types' has unsupported"),
        ({"num_experts_per_tok": 40, "experts_per_token": 40}, "n_experts_per_token: 40"),
    ],
)
def test_values_we_do_not_implement_are_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_hf({**GPT_OSS_20B, **change})


MLA = dict(kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(glu_limit=0.0), "glu_limit: must be > 0"),
        (dict(glu_alpha=0.0), "glu_alpha: must be > 0"),
        (dict(glu_alpha=1.702, activation="gelu_tanh"), "glu_alpha: 1.702 applies to the SiLU"),
        (dict(glu_up_offset=1.0, mlp="mlp"), "glu_up_offset: 1.0 applies to the SiLU"),
        (dict(router_logit_bias=True), "router_logit_bias: the config has n_experts=0"),
        (dict(attn_sinks=True, attention="mla", **MLA), "attn_sinks: needs attention='mha'"),
    ],
)
def test_new_fields_are_validated(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(vocab_size=32, d_model=32, n_layers=1, n_heads=4, **fields)


def test_training_gradients_agree_across_attention_paths() -> None:
    """The fused path's sinks (a zero key whose mask entry is the sink) give the same loss
    and gradients, the sinks' included, as the eager sink column."""
    model = gf.from_hf(build_hf("gpt_oss")).train()
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    grads = {}
    for impl in ("eager", "sdpa", "native"):
        model.set_attention_impl(impl)
        model.zero_grad(set_to_none=True)
        loss = model(ids[:, :-1], labels=ids[:, 1:])
        loss.backward()
        grads[impl] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    loss, ref = grads["eager"]
    assert ref["layers.0.attn.sinks"].abs().max() > 0
    for impl in ("sdpa", "native"):
        other_loss, other = grads[impl]
        assert torch.allclose(other_loss, loss, atol=1e-5)
        for name, g in ref.items():
            assert torch.allclose(other[name], g, atol=1e-5), (impl, name)


def test_router_softmax_over_the_chosen_logits_is_hfs() -> None:
    """Renormalised softmax weights of the top k equal HF's softmax over the top-k logits."""
    cfg = our_config("gpt_oss")
    hf = build_hf("gpt_oss")
    ours = gf.from_hf(hf)
    x = torch.randn(50, cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, hf_scores, hf_ids = hf.model.layers[0].mlp.router(x)
        weights, ids, _ = ours.layers[0].mlp.router(x)
    assert torch.equal(ids, hf_ids)
    assert torch.allclose(weights, hf_scores, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "total", "active"),
    [("gpt-oss-20b", 20.91e9, 3.61e9), ("gpt-oss-120b", 116.83e9, 5.13e9)],
)
def test_model_card_parameter_counts(name: str, total: float, active: float) -> None:
    """The gpt-oss model card's totals and per-token active counts (which leave out the
    input embedding), to the 4 significant digits it gives; the exact totals against HF's
    model are in tests/core/test_presets.py."""
    from glassformer.explorer import analyze

    a = analyze(get_preset(name))
    assert abs(a["params_total"] - total) <= 0.005e9
    assert abs(a["params_active"] - a["params_embedding"] - active) <= 0.005e9
