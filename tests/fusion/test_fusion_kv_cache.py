"""The KV-cache write as the K/V projections' epilogue store (fusion/ir.py `Store.cache`): the
generated kernel against the reference program writing the same cache slots, a prefill and
single-token steps; fused cached decoding against the plain model's; the store in the IR's
traffic count. Under Triton's interpreter on a CPU (TRITON_INTERPRET=1, set before triton is
imported)."""

from __future__ import annotations

import pytest
import torch

import glassformer as gf
from glassformer.fusion import fuse
from glassformer.fusion.ir import block_program
from glassformer.fusion.kernels import CacheSlots, reference, run
from tests.families import TINY_HF_CONFIGS, perturb
from tests.fusion.needs_triton import require_triton
from tests.fusion.odd_shapes import odd

require_triton()

ODD = {"llama": odd("llama"), "qwen3": odd("qwen3")}


def _model(hf: dict) -> gf.Transformer:
    torch.manual_seed(0)
    model = gf.Transformer(gf.Config.from_hf(hf))
    with torch.no_grad():
        perturb(model)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_cache_store_kernel_equals_the_reference(family: str) -> None:
    """A prefill of 5 tokens then two single-token steps, batch 2: the kernel's cache
    contents == the reference program's (fp32, 1e-5), the slots not yet written still zero."""
    model = _model(ODD[family])
    cfg, params = model.config, dict(model.layers[0].named_modules())
    hkv, hd, cap, b = cfg.layer_n_kv_heads(0), cfg.layer_head_dim(0), 9, 2
    gen = torch.Generator().manual_seed(1)
    for name in ("attn.k_proj", "attn.v_proj"):
        node = block_program(cfg, 0, cached=True).gemm(name)
        assert [s.cache for s in node.stores] == [True]
        got = torch.zeros(b, hkv, cap, hd)
        want = torch.zeros(b, hkv, cap, hd)
        for start, t in ((0, 5), (5, 1), (6, 1)):
            x = torch.randn(b * t, cfg.d_model, generator=gen)
            pos = torch.arange(start, start + t)
            cos, sin = next(iter(model.rope_tables(pos, torch.float32).values()))
            loads = {"cos": cos, "sin": sin} if node.loads else {}
            with torch.no_grad():
                run(node, params, x, loads, positions=t, cache=CacheSlots(got, start))
                per_row = {k: v.repeat(b, 1) for k, v in loads.items()}  # the reference's rows
                reference(node, params, x, per_row, positions=t, cache=CacheSlots(want, start))
            err = (got - want).abs().max().item()
            assert err <= 1e-5 * max(1.0, want.abs().max().item()), (name, start, err)
            assert got[:, :, start : start + t].abs().sum() > 0
            assert got[:, :, start + t :].abs().sum() == 0


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_fused_cached_decoding_equals_the_plain_model(family: str) -> None:
    """Prefill 6 tokens, then 4 single-token steps, batch 2: fused logits == the plain model's
    cached decoding (1e-4), and every fused block wrote its keys from the K/V kernels."""
    plain, fused = _model(TINY_HF_CONFIGS[family]), fuse(_model(TINY_HF_CONFIGS[family]))
    ids = torch.randint(
        0, plain.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0)
    )
    outs = []
    for m in (plain, fused):
        cache = m.new_cache(batch_size=2, max_seq_len=12)
        with torch.no_grad():
            pieces = [m(ids[:, :6], cache)] + [m(ids[:, t : t + 1], cache) for t in range(6, 10)]
        outs.append((torch.cat(pieces, 1), cache))
    err = (outs[0][0] - outs[1][0]).abs().max().item()
    assert err <= 1e-4, err
    for lp, lf in zip(outs[0][1].layers, outs[1][1].layers, strict=True):
        assert (lp.keys - lf.keys).abs().max().item() <= 1e-4
        assert (lp.values - lf.values).abs().max().item() <= 1e-4
        assert torch.equal(lp.positions, lf.positions)
    assert all(blk.fused.cache_stores == 5 for blk in fused.layers)


def test_the_cache_store_in_the_traffic_count() -> None:
    """Cached, the K and V nodes store into the cache: their fused traffic is unchanged (the
    rows are stored once either way), the unfused sequence's separate append reads and writes
    each row again, which fusing saves (credited to the explorer's attn.kv_cache_write)."""
    cfg = gf.Config.from_hf(ODD["qwen3"])
    plain, cached = block_program(cfg, 0), block_program(cfg, 0, cached=True)
    width = cfg.layer_n_kv_heads(0) * cfg.layer_head_dim(0)
    for name in ("attn.k_proj", "attn.v_proj"):
        a, b = plain.gemm(name).traffic(), cached.gemm(name).traffic()
        assert b["fused"] == a["fused"]
        assert b["unfused"] == a["unfused"] + 2 * width
        assert b["saved"]["attn.kv_cache_write"] == 2 * width
    assert cached.gemm("attn.q_proj") == plain.gemm("attn.q_proj")
    assert cached.traffic()["unfused"] - plain.traffic()["unfused"] == 4 * width
    core = next(n for n in cached.nodes if n.name == "attn.core")
    assert "attn.kv_cache_write" not in core.explorer
