"""GEMM-epilogue fusion: the block as GEMMs with epilogue programs (`ir`), Triton kernels
generated from them (`codegen`, `kernels`), `fuse(model)` to run a model on them, and the LM
head's cross-entropy as one kernel (`lm_head_loss`).

Nothing here imports triton until a kernel is compiled: Triton reads TRITON_INTERPRET=1 (run
kernels on the CPU) when it is first imported."""

from typing import Any

__all__ = ["fuse"]


def __getattr__(name: str) -> Any:
    if name == "fuse":
        from glassformer.fusion.blocks import fuse

        return fuse
    raise AttributeError(name)
