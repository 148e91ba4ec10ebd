"""One decode-sized product (1 row x [N x K] weights) through each kernel that could serve it:
PyTorch's float32 GEMM, its weight-only int8/int4 kernels (float32 and bfloat16 activations),
and glassformer's native float32, int8 and int4 kernels. Why `kernels/quant.c` exists.

    python benchmarks/quant_kernels.py [--n 3072] [--k 576] [--threads 2] [--json]

Prints microseconds per call (best of 5 runs of 50 calls, weights hot in cache) and the ratio
to PyTorch's float32 `F.linear`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glassformer.inference import native
from glassformer.inference.quant import quantize


def best_us(fn: Callable[[], object], calls: int = 50, runs: int = 5) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3072)
    parser.add_argument("--k", type=int, default=576)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, k = args.n, args.k
    torch.manual_seed(0)
    w, x = torch.randn(n, k), torch.randn(1, k)
    q8, q4 = quantize(w, "int8", None), quantize(w, "int4", 32)
    scales8 = q8.scales.reshape(-1).contiguous()
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
    packed4 = torch._convert_weight_to_int4pack_for_cpu(codes, 2)
    scale_zero = torch.randn(k // 32, n, 2)
    cases: dict[str, Callable[[], object]] = {
        "torch F.linear fp32": lambda: F.linear(x, w),
        "torch _weight_int8pack_mm, fp32 x": lambda: torch._weight_int8pack_mm(x, q8.q, scales8),
        "torch _weight_int8pack_mm, bf16 x": lambda: torch._weight_int8pack_mm(
            x.bfloat16(), q8.q, scales8.bfloat16()
        ),
        "torch _weight_int4pack_mm_for_cpu, fp32 x": lambda: torch._weight_int4pack_mm_for_cpu(
            x, packed4, 32, scale_zero
        ),
        "torch _weight_int4pack_mm_for_cpu, bf16 x": lambda: torch._weight_int4pack_mm_for_cpu(
            x.bfloat16(), packed4, 32, scale_zero.bfloat16()
        ),
    }
    if native.available():
        cases["glassformer f32_mm"] = lambda: native.f32_mm(x, w)
        cases["glassformer q8_mm (int8)"] = lambda: native.q8_mm(x, q8.q, q8.scales, q8.group)
        cases["glassformer q4_mm (int4)"] = lambda: native.q4_mm(x, q4.q, q4.d, q4.mn, q4.group)
    results = {name: best_us(fn) for name, fn in cases.items()}
    base = results["torch F.linear fp32"]
    if args.json:
        print(json.dumps({"n": n, "k": k, "threads": args.threads, "us": results}, indent=2))
        return
    print(f"1 x [{n} x {k}], {args.threads} threads, CPU {torch.backends.cpu.get_cpu_capability()}")
    for name, us in results.items():
        print(f"{name:44s}{us:9.1f} us{base / us:8.2f}x vs F.linear fp32")


if __name__ == "__main__":
    main()
