"""GEMM-epilogue fusion: the block as GEMMs with epilogue programs (`ir`), Triton kernels
generated from them (`codegen`, `kernels`), `fuse(model)` to run a model on them, and the LM
head's cross-entropy as one kernel (`lm_head_loss`)."""

from glassformer.fusion.fuse import fuse

__all__ = ["fuse"]
