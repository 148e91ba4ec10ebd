"""Causal prefill attention: glassformer's native kernel against PyTorch's SDPA on the CPU.

`gf_attn_prefill` computes each block of queries' scores only for the keys it can see; SDPA's
CPU flash kernel computes whole key blocks of up to 512 and masks. Both get the same strided
q, k, v views of one fused projection (as `FusedAttention` has them) and are timed in
alternation; the ratio is the median of within-round ratios, times are each one's best.

    python benchmarks/prefill_attention.py [--heads 9] [--kv-heads 3] [--head-dim 64]
                                           [--lengths 128 512 2048] [--threads 2] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from glassformer.kernels import available
from glassformer.kernels.autograd import causal_attention


def measure(h: int, hk: int, d: int, t: int, rounds: int) -> dict[str, float]:
    qkv = torch.randn(1, t, (h + 2 * hk) * d).view(1, t, h + 2 * hk, d).transpose(1, 2)
    q, k, v = qkv[:, :h], qkv[:, h : h + hk], qkv[:, h + hk :]
    scale = d**-0.5

    def sdpa() -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)
        return out.transpose(1, 2).reshape(1, t, h * d)  # the layout the output projection reads

    def ours() -> torch.Tensor:
        return causal_attention(q, k, v, scale)

    err = float((ours() - sdpa()).abs().max())
    times: dict[str, list[float]] = {"sdpa": [], "native": []}
    for _ in range(rounds):
        for name, fn in (("sdpa", sdpa), ("native", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    pairs = zip(times["sdpa"], times["native"], strict=True)
    return {
        "length": t, "sdpa_ms": 1e3 * min(times["sdpa"]), "native_ms": 1e3 * min(times["native"]),
        "speedup": statistics.median(a / b for a, b in pairs), "max_abs_diff": err,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not available():
        raise SystemExit("native kernels unavailable on this machine")
    torch.set_num_threads(args.threads)
    h, hk, d = args.heads, args.kv_heads, args.head_dim
    rows = [measure(h, hk, d, t, args.rounds) for t in args.lengths]
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        return
    print(f"causal attention, {h} query heads over {hk} KV heads, D = {d}, {args.threads} threads")
    print(f"{'T':>6s}{'SDPA ms':>10s}{'native ms':>11s}{'speed-up':>10s}{'max |diff|':>12s}")
    for r in rows:
        print(f"{r['length']:6.0f}{r['sdpa_ms']:10.2f}{r['native_ms']:11.2f}"
              f"{r['speedup']:9.2f}x{r['max_abs_diff']:12.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
