"""Decode attention over the KV cache: glassformer's native kernel on a float32 and a float16
cache, against PyTorch's SDPA on the float32 cache, for a stack of layers like SmolLM2's.

One new query per layer against `length` cached keys: the step a decoder takes per token.
The caches of all layers are distinct tensors (as in a model), so they stream from memory
rather than from the CPU's caches. The variants alternate round after round; the ratios are
medians of within-round ratios and times each one's best. The float16 cache is what quantised
models use (`optimize(..., "int8"|"int4")`, as llama.cpp): half the bytes to read.

    python benchmarks/decode_attention.py [--layers 30] [--heads 9] [--kv-heads 3]
                                          [--head-dim 64] [--lengths 256 640 2048] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from glassformer.inference import native


def measure(args: argparse.Namespace, length: int) -> dict[str, float]:
    h, hk, d, cap = args.heads, args.kv_heads, args.head_dim, length + 64
    caches32 = [
        (torch.randn(1, hk, cap, d), torch.randn(1, hk, cap, d)) for _ in range(args.layers)
    ]
    caches16 = [(k.half(), v.half()) for k, v in caches32]
    qkv = torch.randn(1, (h + 2 * hk) * d)
    q = qkv.view(1, -1, 1, d)[:, :h]
    scale = d**-0.5

    def sdpa() -> None:
        for k, v in caches32:
            F.scaled_dot_product_attention(
                q, k[:, :, :length], v[:, :, :length], scale=scale, enable_gqa=True
            )

    def native32() -> None:
        for k, v in caches32:
            native.attn_decode(qkv, h, k, v, length, scale)

    def native16() -> None:
        for k, v in caches16:
            native.attn_decode(qkv, h, k, v, length, scale)

    variants = {"sdpa": sdpa, "native_f32": native32, "native_f16": native16}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    def ratio(slow: str, fast: str) -> float:
        return statistics.median(a / b for a, b in zip(times[slow], times[fast], strict=True))

    return {
        "length": length,
        **{f"{name}_ms": 1e3 * min(t) for name, t in times.items()},
        "f32_over_sdpa": ratio("sdpa", "native_f32"),
        "f16_over_f32": ratio("native_f32", "native_f16"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 640, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not native.available():
        raise SystemExit("native kernels unavailable on this machine")
    torch.set_num_threads(args.threads)
    rows = [measure(args, n) for n in args.lengths]
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        return
    print(
        f"decode attention, {args.layers} layers, {args.heads} query heads over "
        f"{args.kv_heads} KV heads, D = {args.head_dim}, {args.threads} threads (ms per token)"
    )
    print(f"{'keys':>6s}{'SDPA f32':>10s}{'ours f32':>10s}{'ours f16':>10s}"
          f"{'f32 vs SDPA':>13s}{'f16 vs f32':>12s}")  # fmt: skip
    for r in rows:
        times = f"{r['sdpa_ms']:10.2f}{r['native_f32_ms']:10.2f}{r['native_f16_ms']:10.2f}"
        print(f"{r['length']:6.0f}{times}{r['f32_over_sdpa']:12.2f}x{r['f16_over_f32']:11.2f}x")


if __name__ == "__main__":
    main()
