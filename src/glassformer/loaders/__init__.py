"""Loading and saving weights: GGUF files, HF safetensors directories and named models.

    from glassformer.loaders import load_model, load_gguf, config_from_gguf
    model = load_model("smollm2-135m-instruct")     # a known name, a .gguf path or an HF dir
    cfg, state = load_gguf("model.gguf")            # Config + state dict (glassformer names)
    cfg = config_from_gguf("model.gguf")            # header only, fast

Modules: `gguf` (GGUF header parsing, metadata -> Config, tensor mapping), `dequant` (the
GGML block formats, decoded by hand), `safetensors_io` (HF directories, sharded, atomic
writes), `resolve` (model names -> files). See docs/loading.md.
"""

from glassformer.loaders.dequant import GGMLType, dequantize
from glassformer.loaders.gguf import (
    GGUFHeader,
    TensorInfo,
    config_from_gguf,
    load_gguf,
    read_header,
)
from glassformer.loaders.resolve import (
    KNOWN_MODELS,
    ModelNotInstalledError,
    load_checkpoint,
    load_model,
    resolve,
)
from glassformer.loaders.safetensors_io import (
    load_hf_dir,
    load_safetensors,
    read_hf_dir,
    save_hf_dir,
    save_safetensors,
    write_hf_dir,
)

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
