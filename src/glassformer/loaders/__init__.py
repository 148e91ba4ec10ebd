"""Loading and saving weights: GGUF files, HF safetensors directories and named models.

    from glassformer.loaders import load_model, load_gguf, config_from_gguf
    model = load_model("smollm2-135m-instruct")     # a known name, a .gguf path or an HF dir
    cfg, state = load_gguf("model.gguf")            # Config + state dict (glassformer names)
    cfg = config_from_gguf("model.gguf")            # header only, fast

Modules: `gguf` (GGUF header parsing, metadata -> Config, tensor mapping), `dequant` (the
GGML block formats, decoded by hand), `safetensors_io` (HF directories, sharded, atomic
writes), `resolve` (model names -> files). See docs/loading.md.
"""

from __future__ import annotations

import importlib
from typing import Any

# The names load on first use (PEP 562): resolving a model name or reading a config needs no
# torch, and `glassformer explore` should not pay for importing it.
_LAZY = {
    "GGMLType": "glassformer.loaders.dequant",
    "dequantize": "glassformer.loaders.dequant",
    "GGUFHeader": "glassformer.loaders.gguf",
    "TensorInfo": "glassformer.loaders.gguf",
    "config_from_gguf": "glassformer.loaders.gguf",
    "load_gguf": "glassformer.loaders.gguf",
    "read_header": "glassformer.loaders.gguf",
    "KNOWN_MODELS": "glassformer.loaders.resolve",
    "ModelNotInstalledError": "glassformer.loaders.resolve",
    "load_checkpoint": "glassformer.loaders.resolve",
    "load_model": "glassformer.loaders.resolve",
    "resolve": "glassformer.loaders.resolve",
    "load_hf_dir": "glassformer.loaders.safetensors_io",
    "load_safetensors": "glassformer.loaders.safetensors_io",
    "read_hf_dir": "glassformer.loaders.safetensors_io",
    "save_hf_dir": "glassformer.loaders.safetensors_io",
    "save_safetensors": "glassformer.loaders.safetensors_io",
    "write_hf_dir": "glassformer.loaders.safetensors_io",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glassformer.loaders' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "KNOWN_MODELS",
    "GGMLType",
    "GGUFHeader",
    "ModelNotInstalledError",
    "TensorInfo",
    "config_from_gguf",
    "dequantize",
    "load_checkpoint",
    "load_gguf",
    "load_hf_dir",
    "load_model",
    "load_safetensors",
    "read_header",
    "read_hf_dir",
    "resolve",
    "save_hf_dir",
    "save_safetensors",
    "write_hf_dir",
]
