"""glassformer.inference.hugepages: tensors moved into transparent huge pages hold the same
values, keep their ties, save like any tensor, and really are backed by 2 MiB pages where the
kernel offers them (read back from /proc/self/smaps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import glassformer as gf
from glassformer.inference import hugepages, optimize


def huge_kib_at(address: int) -> int | None:
    """AnonHugePages (KiB) of the mapping holding `address`, from /proc/self/smaps."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    inside = False
    for line in smaps.read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return None


def test_moved_module_computes_the_same_and_keeps_ties(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.preset("tiny").replace(tie_embeddings=False)).eval()
    model.lm_head.weight = model.embed.weight  # a tie across modules: one Parameter, two owners
    model.register_buffer("embed_rows", model.embed.weight.detach()[2:5])  # a view of it
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        before = model(ids)
    old = {n: p.data_ptr() for n, p in model.named_parameters()}
    moved = hugepages.move_into_huge_pages(model, min_bytes=1)
    with torch.no_grad():
        after = model(ids)
    assert torch.equal(before, after)
    if not hugepages.available():
        assert moved == 0
        return
    assert moved >= sum(p.numel() * p.element_size() for p in model.parameters())
    assert all(p.data_ptr() != old[n] for n, p in model.named_parameters())
    assert model.lm_head.weight is model.embed.weight  # still one tensor
    assert model.embed_rows.data_ptr() == model.embed.weight[2].data_ptr()  # still a view
    assert torch.equal(model.embed_rows, model.embed.weight[2:5])
    # every other tensor on its own storage, so safetensors (which refuses shared storage)
    # saves them
    state = {
        k: v for k, v in model.state_dict().items() if k not in ("lm_head.weight", "embed_rows")
    }
    save_file(state, tmp_path / "m.safetensors")
    loaded = load_file(tmp_path / "m.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.skipif(not hugepages.available(), reason="no transparent huge pages here")
def test_weights_are_backed_by_huge_pages() -> None:
    layers = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024))  # 8 MiB of weights
    hugepages.move_into_huge_pages(layers)
    kib = huge_kib_at(layers[0].weight.data_ptr())
    if kib is None:
        pytest.skip("/proc/self/smaps unavailable")
    assert kib >= 2048


def test_optimize_places_weights_in_huge_pages_and_computes_the_same() -> None:
    torch.manual_seed(1)
    model = gf.Transformer(gf.Config.preset("tiny")).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    plain = optimize(model, huge_pages=False)
    huge = optimize(model)
    with torch.no_grad():
        assert torch.equal(plain(ids), huge(ids))
    if hugepages.available():
        # every tensor of 4 KiB or more lies in one region, packed at cache-line offsets
        big = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
               for t in [*huge.parameters(), *huge.buffers()]
               if t.untyped_storage().nbytes() >= 4096}  # fmt: skip
        assert all(ptr % hugepages.ALIGN == 0 for ptr in big)
        span = max(p + n for p, n in big.items()) - min(big)
        assert span <= sum(-(-n // hugepages.ALIGN) * hugepages.ALIGN for n in big.values())


def test_mode_is_reported() -> None:
    assert hugepages.mode() in ("always", "madvise", "never", "unavailable")
