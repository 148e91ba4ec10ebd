"""What the core does not implement around output norms, whole-projection QK-norm, LongRoPE
and GLM-4.5 is refused with the field and the value named."""

from __future__ import annotations

import pytest

import glassformer as gf
from tests.families import TINY_HF_CONFIGS

BASE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4)
LONGROPE = dict(type="longrope", factor=4.0, original_max_seq_len=16,
                short_factor=[1.0] * 4, long_factor=[2.0] * 4)  # fmt: skip


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(norm_placement="outputs"), r"norm_placement: expected one of .*output.*'outputs'"),
        (dict(qk_norm=True, qk_norm_scope="token"), r"qk_norm_scope: expected one of head, all"),
        (dict(qk_norm_scope="all"), r"qk_norm_scope: 'all' needs qk_norm=True"),
        (dict(rope_scaling={**LONGROPE, "long_factor": None}),
         r"rope_scaling.long_factor: required for rope type 'longrope'"),
        (dict(rope_scaling={**LONGROPE, "short_factor": [1.0, 0.0, 1.0, 1.0]}),
         r"rope_scaling.short_factor: every factor must be > 0"),
        (dict(rope_scaling={**LONGROPE, "short_factor": [1.0] * 3}),
         r"rope_scaling.short_factor: has 3 factors, expected .* rope_dim/2=4"),
        (dict(rope_scaling={**LONGROPE, "original_max_seq_len": None}),
         r"rope_scaling.original_max_seq_len: required for rope type 'longrope'"),
        (dict(attention="mla", kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4,
              v_head_dim=4, rope_scaling=LONGROPE),
         r"rope_scaling.type: 'longrope' is not implemented for MLA"),
    ],
)  # fmt: skip
def test_config_refuses_by_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gf.Config(**{**BASE, **fields})


def test_longrope_config_round_trips_through_json(tmp_path) -> None:
    cfg = gf.Config(**BASE, rope_scaling=LONGROPE)
    cfg.save(tmp_path / "c.json")
    assert gf.Config.load(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("glm4_moe", dict(n_shared_experts=0), r"'n_shared_experts'=0 is not supported"),
        ("phi3", dict(rope_parameters=dict(rope_type="dynamic", rope_theta=1e4, factor=2.0)),
         r"'rope_parameters.rope_type'='dynamic' is not supported for phi3"),
        ("phi3-longrope",
         dict(rope_parameters={**TINY_HF_CONFIGS["phi3-longrope"]["rope_parameters"],
                               "long_factor": "1.0"}),
         r"'rope_parameters.long_factor' must be a list of numbers"),
        ("olmo3", dict(layer_types=["sliding_attention"] * 3 + ["chunked_attention"]),
         r"'layer_types' has unsupported \['chunked_attention'\]"),
        ("olmo2", dict(qk_norm_eps=1e-5), r"unknown field\(s\) \['qk_norm_eps'\]"),
    ],
)  # fmt: skip
def test_hf_config_refuses_by_key(name: str, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gf.Config.from_hf({**TINY_HF_CONFIGS[name], **change})


def test_output_norm_config_cannot_become_a_pre_norm_family() -> None:
    olmo2 = gf.Config.from_hf(TINY_HF_CONFIGS["olmo2"])
    with pytest.raises(ValueError, match=r"HF 'llama' cannot express norm_placement='output'"):
        olmo2.replace(hf_model_type="llama").to_hf()


def test_longrope_decoding_is_hf_generate() -> None:
    """Decoding across the switch (prompt 10 tokens, L0 = 16, 20 new tokens): each cached
    step's logits equal those HF's generate computes (it drops its cache at the switch and
    re-runs the sequence, as we do), and our greedy loop, whose cache grows on the way, picks
    HF's tokens."""
    import torch

    from glassformer.generation.generate import GenerationConfig, generate
    from tests.families import build_hf
    from tests.generation.byte_tokenizer import ByteTokenizer

    hf = build_hf("phi3-longrope")
    ours = gf.from_hf(hf).eval()
    prompt = torch.randint(1, 97, (1, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = hf.generate(
            prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
        tokens = out.sequences[0, 10:]
        cache = ours.new_cache(1, 30)
        got = [ours(prompt, cache)[:, -1]]
        got += [ours(tokens[None, t : t + 1], cache)[:, -1] for t in range(19)]
    for t, (mine, theirs) in enumerate(zip(got, out.logits, strict=True)):
        assert (mine - theirs).abs().max() <= 1e-4, f"step {t}"
    greedy = generate(
        ours, ByteTokenizer(), prompt[0].tolist(),
        GenerationConfig(max_new_tokens=20, ignore_eos=True),
    )  # fmt: skip
    assert greedy.tokens == tokens.tolist()
