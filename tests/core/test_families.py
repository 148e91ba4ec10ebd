"""The family table (`glassformer.families`) against HF transformers' own config classes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import glassformer as gf
from glassformer.families import FAMILIES, GGUF_ARCHITECTURES, like
from tests.families import TINY_HF_CONFIGS, hf_config

transformers = pytest.importorskip("transformers")

# Keys whose absence HF resolves from other keys, as the Config does (None: derive it).
DERIVED = {"num_key_value_heads", "head_dim", "n_inner"}


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_declared_defaults_are_hf_defaults(model_type: str) -> None:
    family = FAMILIES[model_type]
    hf_class = type(transformers.AutoConfig.for_model(model_type))
    for key, value in family.hf_defaults.items():
        # the class's default, before __post_init__ derives anything from it; rope keys live in
        # rope_parameters (the sparse test covers them)
        if not hasattr(hf_class, key):
            continue
        if value is None and key in DERIVED:
            continue
        if key == "rope_parameters":  # filled in by __post_init__ (Gemma 4): an instance's
            assert transformers.AutoConfig.for_model(model_type).rope_parameters == value
            continue
        assert getattr(hf_class, key) == value, f"{model_type}.{key}"


@pytest.mark.parametrize("name", sorted(TINY_HF_CONFIGS))
def test_a_sparse_config_reads_as_hf_fills_it(name: str) -> None:
    """A config.json naming only some keys means HF's defaults for the rest."""
    sparse = TINY_HF_CONFIGS[name]
    assert gf.Config.from_hf(sparse) == gf.Config.from_hf(hf_config(name).to_dict())


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_traits_are_not_also_read_from_the_config(model_type: str) -> None:
    family = FAMILIES[model_type]
    read = {f for v in family.hf_keys.values() for f in ((v,) if isinstance(v, str) else v)}
    assert not read & set(family.traits), model_type
    fields = {f.name for f in dataclasses.fields(gf.Config)}
    assert read <= fields and set(family.traits) <= fields, model_type


def test_gguf_architectures_name_their_family() -> None:
    assert {a: f.model_type for a, f in GGUF_ARCHITECTURES.items()} == {
        "llama": "llama",
        "deci": "llama",  # Llama blocks of per-layer sizes (pruned models)
        "qwen2": "qwen2",
        "qwen3": "qwen3",
        "gemma3": "gemma3_text",
        "gpt-oss": "gpt_oss",
        "smollm3": "smollm3",
        "llama4": "llama4_text",
        "olmo2": "olmo2",
        "glm4moe": "glm4_moe",
        "phi3": "phi3",
        "gemma4": "gemma4_text",
        "qwen35": "qwen3_5_text",
        "qwen35moe": "qwen3_5_moe_text",
        "qwen3next": "qwen3_next",
    }


def test_like_extends_and_drops() -> None:
    base = FAMILIES["llama"]
    child = like(base, "child", traits=dict(qk_norm=True), drop_keys=("mlp_bias",))
    assert child.model_type == "child" and child.traits["qk_norm"] is True
    assert child.traits["norm"] == base.traits["norm"]
    assert "mlp_bias" not in child.hf_keys and "mlp_bias" not in child.hf_defaults
    assert "mlp_bias" in base.hf_keys  # the base is untouched


def test_presets_import_no_loaders() -> None:
    code = "import sys, glassformer.presets; print(any('loaders' in m for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_infer_model_type_picks_the_first_family_that_expresses_the_config() -> None:
    from glassformer.hf.config import infer_model_type

    tiny = gf.Config.preset("tiny").replace(hf_model_type=None)
    assert infer_model_type(tiny) == "llama"
    assert infer_model_type(tiny.replace(qkv_bias=True)) == "qwen2"
    assert infer_model_type(tiny.replace(qk_norm=True)) == "qwen3"
    assert infer_model_type(tiny.replace(sliding_window=8)) == "mistral"
    gpt2 = gf.Config.preset("tiny-gpt2").replace(hf_model_type=None)
    assert infer_model_type(gpt2) == "gpt2"
    with pytest.raises(ValueError, match="no supported HF family"):
        infer_model_type(tiny.replace(norm_placement="post"))


# Configs whose windows depend on keys beyond the tiny table's: Qwen3-MoE slides on every layer
# once use_sliding_window is set, Qwen3 from max_window_layers on.
WINDOW_VARIANTS = {
    "qwen3_moe-window": dict(
        TINY_HF_CONFIGS["qwen3_moe"], use_sliding_window=True, sliding_window=5
    ),
    "qwen3-window": dict(
        TINY_HF_CONFIGS["qwen3"], num_hidden_layers=3, use_sliding_window=True,
        sliding_window=5, max_window_layers=2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted({**TINY_HF_CONFIGS, **WINDOW_VARIANTS}))
def test_each_layer_window_is_hfs(name: str) -> None:
    """The window of every layer is the one HF's attention module of that layer applies."""
    import torch

    spec = dict({**TINY_HF_CONFIGS, **WINDOW_VARIANTS}[name])
    model_type = spec.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **spec)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(hf_config)
    layers = hf.transformer.h if model_type == "gpt2" else hf.model.layers
    cfg = gf.Config.from_hf({"model_type": model_type, **spec})
    assert cfg == gf.Config.from_hf(hf_config.to_dict())
    for i, layer in enumerate(layers):
        if hasattr(layer, "linear_attn"):  # a linear-attention layer: no keys, no window
            assert cfg.layer_type(i) == "linear" and cfg.window(i) is None, (name, i)
            continue
        assert cfg.layer_type(i) != "linear", (name, i)
        attn = layer.attn if model_type == "gpt2" else layer.self_attn
        # per-layer modules hold their window; the others pass the config's to every layer
        hf_window = getattr(attn, "sliding_window", getattr(attn.config, "sliding_window", None))
        assert cfg.window(i) == hf_window, (name, i)
