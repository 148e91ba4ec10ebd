"""The Triton kernel tests' common start: `require_triton()` skips the calling test module
where triton is not installed (and fails it on CI, where it must be) or cannot run here.
tests/conftest.py sets TRITON_INTERPRET=1 without a GPU, before triton is imported, so on a
CPU the kernels run under Triton's interpreter."""

from __future__ import annotations

import os

import pytest


def require_triton() -> None:
    """Call at the top level of a test module, after its imports."""
    try:
        import triton  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("triton is not installed (pip install triton)", allow_module_level=True)
    from glassformer.fusion.lm_head_loss import available

    if not available():
        pytest.skip("triton imported before TRITON_INTERPRET=1 was set", allow_module_level=True)
