"""The Transformer Math Explorer: a cost model driven by the same `Config` as the model.

    from glassformer.explorer import analyze
    result = analyze(Config.preset("llama-3-8b"), mode="decode", batch=8, seq=32768)

`ops` builds the per-op list (symbolic in batch B, tokens T and context S), `costs` evaluates it
for a mode, dtype and hardware (`hardware`), `report` prints it, `html` writes the interactive
page. Conventions: FLOPs are 2 per multiply-accumulate; `flops_matmul` counts the attention
products over the full query x key grid (= torch FlopCounterMode on an eager model),
`flops_matmul_causal` only the visible pairs, `flops_other` the non-matrix work.
"""

from glassformer.explorer.costs import DTYPES, analyze, parameter_counts
from glassformer.explorer.hardware import PRESETS as HARDWARE
from glassformer.explorer.hardware import get_hardware

__all__ = ["DTYPES", "HARDWARE", "analyze", "get_hardware", "parameter_counts"]
