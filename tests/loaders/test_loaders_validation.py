"""Values a config must refuse, and the closed forms that keep huge configs cheap.

- Every Config field is checked against its annotation before anything is derived: a bool is
  a bool (the string "false" is truthy), an int an int, a float a finite number.
- The explorer groups identical layers (`LayerSpans`): its layer groups match a per-layer
  enumeration of the config, and its parameter count for 10**9 layers matches the straight
  line through modules actually built with 1 and 2 layers.
"""

from __future__ import annotations

import math

import pytest
import torch

import glassformer as gf
from glassformer.explorer.costs import analyze, parameter_counts
from glassformer.explorer.ops import layer_kinds, moe_layer_count, sliding_layer_count
from glassformer.presets import PRESETS, get_preset


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tie_embeddings": "false"}, "tie_embeddings: expected true or false"),
        ({"qk_norm": 1}, "qk_norm: expected true or false"),
        ({"rope_theta": math.inf}, "rope_theta: expected a finite number, got inf"),
        ({"norm_eps": math.nan}, "norm_eps: expected a finite number"),
        ({"rope_theta": "1e4"}, "rope_theta: expected a number, got '1e4' (a string)"),
        ({"n_layers": True}, "n_layers: expected an integer, got True"),
        ({"d_model": 64.0}, "d_model: expected an integer"),
        ({"n_heads": 0}, "n_heads: must be a positive integer, got 0"),
        ({"eos_token_id": [1, "2"]}, "eos_token_id: an element: expected an integer"),
        ({"norm": "batchnorm"}, "norm: expected one of layernorm, rmsnorm"),
        ({"rope_scaling": {"type": "linear", "factor": math.inf}}, "rope_scaling.factor"),
        ({"rope_scaling": {"type": "linear", "factor": "2"}}, "rope_scaling.factor"),
    ],
)
def test_config_refuses_values_of_the_wrong_type(change: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        gf.Config.preset("tiny", **change)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_preset_still_validates() -> None:
    for name in PRESETS:
        get_preset(name)


def _per_layer_kinds(cfg: gf.Config) -> dict[tuple[str, bool, bool], list[int]]:
    kinds: dict[tuple[str, bool, bool], list[int]] = {}
    for i in range(cfg.n_layers):
        # a layer that reads another layer's keys and values is a kind of its own (Gemma 4)
        shared = "_shared" if cfg.kv_source(i) is not None else ""
        key = (cfg.layer_type(i) + shared, cfg.is_moe_layer(i), cfg.uses_rope(i))
        kinds.setdefault(key, []).append(i)
    return kinds


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_layer_groups_match_a_per_layer_enumeration(name: str) -> None:
    cfg = get_preset(name)
    grouped = {k: [i for r in v.spans for i in r] for k, v in layer_kinds(cfg).items()}
    assert grouped == _per_layer_kinds(cfg)
    assert moe_layer_count(cfg) == sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))
    windows = [cfg.window(i) for i in range(cfg.n_layers)]
    assert sliding_layer_count(cfg) == sum(w is not None for w in windows)


def _built_params(cfg: gf.Config) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in gf.Transformer(cfg).parameters())


@pytest.mark.parametrize("name", ["tiny", "tiny-deepseek-v3", "tiny-qwen3", "tiny-mixtral"])
def test_closed_form_for_a_billion_layers(name: str) -> None:
    """params(N) is a + b N for a uniform stack: two built modules fix the line, and the
    explorer's closed form must land on it at N = 10**9 (and analyse it in milliseconds)."""
    base = get_preset(name)
    first = base.first_k_dense
    one, two = (_built_params(base.replace(n_layers=first + k)) for k in (1, 2))
    n = 10**9
    big = base.replace(n_layers=n)
    assert parameter_counts(big)["params_total"] == one + (two - one) * (n - first - 1)
    report = analyze(big, mode="train")
    blocks = [s for s in report["sections"] if s["key"].startswith("block.")]
    assert sum(s["count"] for s in blocks) == n
    assert any(s["layers"] == [[first, n - 1]] for s in blocks)


def test_interleaved_pattern_is_grouped_by_kind() -> None:
    cfg = get_preset("tiny-gemma3")
    report = analyze(cfg, mode="decode", seq=64)
    by_key = {s["key"]: s for s in report["sections"]}
    sliding, full = by_key["block.sliding.dense"], by_key["block.full.dense"]
    assert sliding["count"] + full["count"] == cfg.n_layers
    listed = sorted(i for s in (sliding, full) for a, b in s["layers"] for i in range(a, b + 1))
    assert listed == list(range(cfg.n_layers))


def test_tokenizer_and_embedding_are_cross_checked_at_load(tmp_path) -> None:
    """A tokenizer with ids past the embedding is refused by `load` (before any weight); one
    smaller than the embedding (padded rows) loads, and generation never picks a padded id,
    even when the model favours one (decoding it would have no text)."""
    from tests.hardening.test_bad_files import VOCAB, write_gguf

    with pytest.raises(ValueError, match=r"tokenizer has 117 tokens.*97 rows"):
        gf.load(write_gguf(tmp_path / "big.gguf", tokenizer_tokens=VOCAB + 20))
    model, tokenizer = gf.load(write_gguf(tmp_path / "small.gguf", tokenizer_tokens=60))
    assert tokenizer.vocab_size == 60 < model.config.vocab_size
    with torch.no_grad():  # the last two rows get logits +-s, all others 0: a padded id wins
        w = model.lm_head.weight
        v = torch.randn(w.shape[1])
        w.zero_()
        w[VOCAB - 2], w[VOCAB - 1] = v, -v
        assert int(model(torch.tensor([[5, 6, 7]]))[0, -1].argmax()) >= VOCAB - 2
    result = gf.generate(model, tokenizer, "!#", gf.GenerationConfig(max_new_tokens=6))
    assert result.tokens and max(result.tokens) < 60
