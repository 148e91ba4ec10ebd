"""One torch thread for the diagnostics tests (restored afterwards).

Their work is many small ops (tiny models, 8-vector power-iteration blocks, short forward
passes); on the shared 2-core machine two intra-op threads made such ops several times slower,
and the tests slower with them. The library guards its own small linear algebra the same way
(`glassformer.diagnostics.spectral.single_thread`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
