"""glassformer: a white-box Transformer workbench.

import glassformer as gf
cfg = gf.Config.preset("llama-3-8b")          # any architecture is data
model = gf.Transformer(gf.Config.preset("tiny"))
model = gf.from_hf(hf_model_or_dir)            # HF transformers -> glassformer
hf_model = gf.to_hf(model)                     # and back
"""

from glassformer.config import Config, RopeScaling
from glassformer.generation import GenerationConfig, generate, load
from glassformer.hf import from_hf, to_hf
from glassformer.model import Transformer

__all__ = [
    "Config",
    "GenerationConfig",
    "RopeScaling",
    "Transformer",
    "from_hf",
    "generate",
    "load",
    "to_hf",
]
__version__ = "0.1.0"
