"""Fast inference on the CPU: fused modules, weight-only int8/int4 and a lean decode loop.

    from glassformer.inference import optimize, Decoder
    fast = optimize(model, quant="int4")            # same function, swapped modules
    out = Decoder(fast, max_seq_len=1024).greedy([prompt_ids], max_new_tokens=128)

Modules: `quant` (formats and reference math), `native` (the AVX2 kernels), `modules`
(QuantLinear, FusedAttention, ...), `optimize`, `plan` (a decode step as a fixed list of native
calls, used automatically for single-token steps), `decode`, `gguf_direct` (GGUF Q4/Q8 blocks
straight into the int4/int8 layouts), `evaluate` (perplexity), `bench` (speed vs peers).
See docs/inference.md.
"""

from glassformer.inference.decode import Decoder, decode_step, prefill
from glassformer.inference.optimize import (
    QUANT_MODES,
    InferenceTransformer,
    fast_path_notes,
    optimize,
    weight_bytes,
)

__all__ = [
    "QUANT_MODES",
    "Decoder",
    "InferenceTransformer",
    "decode_step",
    "fast_path_notes",
    "optimize",
    "prefill",
    "weight_bytes",
]
