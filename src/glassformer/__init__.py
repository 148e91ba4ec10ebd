"""glassformer: a white-box Transformer workbench.

import glassformer as gf
cfg = gf.Config.preset("llama-3-8b")          # any architecture is data
model = gf.Transformer(gf.Config.preset("tiny"))
model = gf.from_hf(hf_model_or_dir)            # HF transformers -> glassformer
hf_model = gf.to_hf(model)                     # and back

The names below load on first use (PEP 562): `import glassformer` and the command line's
start-up do not import PyTorch until something needs it (`glassformer --help` and the cost
model are arithmetic on a Config).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from glassformer.config import Config, RopeScaling
    from glassformer.generation import GenerationConfig, generate, load
    from glassformer.hf import from_hf, to_hf
    from glassformer.model import Transformer
    from glassformer.tokenizer import load_tokenizer

_LAZY = {
    "Config": "glassformer.config",
    "RopeScaling": "glassformer.config",
    "GenerationConfig": "glassformer.generation",
    "generate": "glassformer.generation",
    "load": "glassformer.generation",
    "from_hf": "glassformer.hf",
    "to_hf": "glassformer.hf",
    "Transformer": "glassformer.model",
    "load_tokenizer": "glassformer.tokenizer",
}

__all__ = [
    "Config",
    "GenerationConfig",
    "RopeScaling",
    "Transformer",
    "from_hf",
    "generate",
    "load",
    "load_tokenizer",
    "to_hf",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glassformer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
