"""Shared test settings: deterministic torch on 2 threads, OpenMP threads that yield their core
when idle (a shared CI host otherwise loses whole time slices to spinning threads)."""

import os

from glassformer.threads import limit_spinning

limit_spinning()  # before torch starts its OpenMP runtime

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Triton reads TRITON_INTERPRET when it is imported, and torch imports it on its own (the
# inductor and flop-counting paths), so the fusion kernels' interpreter mode is chosen here,
# before any test runs, rather than in the fusion tests.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
