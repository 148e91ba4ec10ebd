"""Interoperability with HF transformers: configs (`config.py`) and weights (`weights.py`).

from_hf(model_or_dir) -> Transformer     (an HF model instance or a `save_pretrained` dir)
to_hf(model)          -> an HF `*ForCausalLM` with the same weights (needs transformers)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from glassformer.hf.config import config_from_hf, config_to_hf
from glassformer.hf.weights import hf_to_ours, ours_to_hf, wrap_text_names
from glassformer.model import Transformer

__all__ = ["config_from_hf", "config_to_hf", "from_hf", "hf_to_ours", "ours_to_hf", "to_hf"]


def read_hf_dir(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """config.json and all weights of a `save_pretrained` directory (safetensors, sharded too),
    validated before any tensor is read (see `glassformer.loaders.safetensors_io`)."""
    from glassformer.loaders.safetensors_io import read_hf_dir as read_validated

    return read_validated(path)


def from_hf(model_or_dir: Any, dtype: torch.dtype | None = None) -> Transformer:
    """Convert an HF transformers causal LM (or a local model directory) to a Transformer."""
    if isinstance(model_or_dir, str | Path):
        hf_config, hf_state = read_hf_dir(model_or_dir)
    else:
        hf_config = model_or_dir.config.to_dict()
        hf_state = model_or_dir.state_dict()
    config = config_from_hf(hf_config)
    state = hf_to_ours(config, hf_state)
    with torch.device("meta"):
        model = Transformer(config)
    model.load_state_dict(state, strict=True, assign=True)
    with torch.device(model.embed.weight.device):
        model.build_rotary()  # non-persistent tables are not in the state dict
    if dtype is not None:
        model = model.to(dtype)
    return model


def to_hf(model: Transformer) -> Any:
    """An HF transformers `AutoModelForCausalLM` instance holding this model's weights (for a
    model with image or audio embedders, the family's multimodal model:
    `Gemma4UnifiedForConditionalGeneration`)."""
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError as err:  # pragma: no cover - transformers is an optional extra
        raise ImportError("to_hf needs HF transformers: pip install transformers") from err
    from glassformer.hf.export import with_int_keys

    hf_dict = with_int_keys(config_to_hf(model.config))
    model_type = hf_dict.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **hf_dict)
    if model.config.multimodal:
        from transformers import AutoModelForImageTextToText

        hf_model = AutoModelForImageTextToText.from_config(hf_config)
    else:
        hf_model = AutoModelForCausalLM.from_config(hf_config)
    hf_model = hf_model.to(model.embed.weight.dtype)
    # HF's causal LMs have no MTP modules: export the main model only.
    main_state = {k: v for k, v in model.state_dict().items() if not k.startswith("mtp.")}
    state = ours_to_hf(model.config.replace(build_mtp=False), main_state)
    if model.config.multimodal:
        state = wrap_text_names(state)
    result = hf_model.load_state_dict(state, strict=False)
    # Tied heads are aliases in HF's state dict, so only they may be reported missing.
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"to_hf: HF model mismatch: missing {missing[:8]}, unexpected "
            f"{result.unexpected_keys[:8]}"
        )
    return hf_model.eval()
