"""Model weights in transparent huge pages: one TLB entry per 2 MiB of streamed weights.

Linux maps anonymous memory in 4 KiB pages unless a region is marked with
`madvise(MADV_HUGEPAGE)`; then (with `/sys/kernel/mm/transparent_hugepage/enabled` at `madvise`
or `always`) each aligned 2 MiB of it is one page. Decoding streams every weight once a token:
with 4 KiB pages that is a TLB miss and a page walk per 4 KiB read (135,000 a token for SmolLM2
in float32), with 2 MiB pages 270. `move_into_huge_pages()` puts a model's weights there
(`optimize()` calls it, unless `huge_pages=False`; docs/inference.md has the measurement).

PyTorch can do this for all its CPU allocations (`THP_MEM_ALLOC_ENABLE=1`, read once per
process); here it is done for the memory that profits, whatever the environment says: the
weights, allocated once and read every token. Short-lived buffers, such as a forward pass's
logits, stay in ordinary pages, where faulting in huge pages would cost more system time than
the TLB saves. Where the kernel offers no huge pages (other platforms, THP `never`) nothing
moves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from itertools import chain
from pathlib import Path

import torch
from torch import nn

HUGE_PAGE = 2 << 20
ALIGN = 64  # each moved tensor starts on a cache line
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def mode() -> str:
    """The kernel's transparent-huge-page mode (`always`, `madvise`, `never`), or `unavailable`."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return "unavailable"
    start, stop = text.find("["), text.find("]")
    return text[start + 1 : stop] if 0 <= start < stop else "unavailable"


def available() -> bool:
    """Whether memory marked here can get huge pages."""
    return hasattr(mmap, "MADV_HUGEPAGE") and mode() in ("always", "madvise")


def _give_back_freed_memory() -> None:
    """glibc keeps freed heap memory mapped for reuse; `malloc_trim(0)` returns it to the
    system. Called while weights move, so the old copies do not stay resident beside the new
    (without it SmolLM2's float32 weights sit in memory twice: +280 MB RSS). No-op elsewhere."""
    if "libc" not in _LIBC:
        name = ctypes.util.find_library("c")
        _LIBC["libc"] = ctypes.CDLL(name) if name else None
    trim = getattr(_LIBC["libc"], "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC: dict[str, ctypes.CDLL | None] = {}


def _region(nbytes: int) -> tuple[mmap.mmap, int]:
    """An anonymous mapping of at least `nbytes` from a 2 MiB boundary, marked for huge pages,
    and the offset of that boundary in it. Nothing is touched: pages arrive on first write."""
    mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    base = torch.frombuffer(mapping, dtype=torch.uint8, count=1).data_ptr()
    return mapping, -base % HUGE_PAGE


def _view(mapping: mmap.mmap, offset: int, nbytes: int) -> torch.Tensor:
    # A tensor on its own storage (it starts at `offset`, it holds `nbytes`) that keeps the
    # mapping alive; the mapping is unmapped when the last such tensor is freed.
    return torch.frombuffer(mapping, dtype=torch.uint8, count=nbytes, offset=offset)


def move_into_huge_pages(module: nn.Module, min_bytes: int = 4096) -> int:
    """Move the CPU parameters and buffers of `module` into one huge-page region, each tensor
    on its own storage, ties kept; returns the bytes moved (0 when huge pages are unavailable).

    One region rather than one per tensor: int4 layers are under a huge page each, and a
    region per tensor would round every one up to 2 MiB. Tensors under `min_bytes` (norm
    weights, biases) stay where they are. Like `module.to()`, this goes through
    `nn.Module._apply`, so modules that cache pointers to their buffers drop them.
    """
    if not available():
        return 0
    sizes: dict[int, int] = {}  # storage address -> bytes (sizes only: old copies may go)
    for t in chain(module.parameters(), module.buffers()):
        storage = t.untyped_storage()
        if t.device.type == "cpu" and storage.nbytes() >= min_bytes:
            sizes[storage.data_ptr()] = storage.nbytes()
    if not sizes:
        return 0
    mapping, end = _region(sum(-(-n // ALIGN) * ALIGN for n in sizes.values()))
    places: dict[int, int] = {}  # old storage address -> offset in the region
    for ptr, nbytes in sizes.items():
        places[ptr] = end
        end += -(-nbytes // ALIGN) * ALIGN
    moved: dict[int, torch.Tensor] = {}  # old storage address -> its bytes in the region

    def relocate(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in places:  # too small, or already moved (a tied weight seen twice)
            return t
        if ptr not in moved:  # copied when first met, so each old copy is freed as we go
            _give_back_freed_memory()  # the tensor moved before this one
            moved[ptr] = _view(mapping, places[ptr], storage.nbytes())
            moved[ptr].copy_(torch.empty(0, dtype=torch.uint8).set_(storage))
        return torch.empty(0, dtype=t.dtype).set_(
            moved[ptr].untyped_storage(), t.storage_offset(), t.shape, t.stride()
        )

    module._apply(relocate)
    _give_back_freed_memory()
    return sum(dst.numel() for dst in moved.values())
