"""Attention with sinks (gpt-oss) on the CPU: the three routes of `kernels.dispatch.attention`.

For one prefill of gpt-oss's attention shape (64 query heads over 8 KV heads of 64 dims), a
sliding window of 128 as on its sliding layers, no gradients:

- eager: the scores with the sink as one more column, softmax, the product with v;
- zero-key SDPA: SDPA over the keys plus a key of zeros whose mask entry is the sink (the
  route taken with gradients: it builds a per-head [T, S + 1] mask);
- flash + LSE: PyTorch's CPU flash kernel, its output rescaled by sigmoid(L - sink) with the
  row log-sum-exp L it returns (the route taken without gradients).

Timed in alternation; each one's best time and its max abs difference from eager are printed.

    python benchmarks/attention_sinks.py [--lengths 256 1024] [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from glassformer.kernels import dispatch


def measure(t: int, rounds: int) -> dict[str, dict[str, float]]:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 64, t, 64, generator=gen)
    k, v = (torch.randn(1, 8, t, 64, generator=gen) for _ in range(2))
    sinks = torch.randn(64, generator=gen)
    visible = torch.ones(t, t, dtype=torch.bool).tril() & ~torch.ones(t, t, dtype=torch.bool).tril(
        -128
    )
    scale = 64**-0.5

    def zero_key() -> torch.Tensor:
        with torch.enable_grad():  # the route gradients take (nothing is differentiated here)
            return dispatch._sdpa_with_sinks(q, k, v, visible, scale, sinks.requires_grad_())

    routes = {
        "eager": lambda: dispatch.eager_attention(q, k, v, visible, scale, None, sinks),
        "zero-key sdpa": zero_key,
        "flash + lse": lambda: dispatch._sdpa_with_sinks(q, k, v, visible, scale, sinks.detach()),
    }
    with torch.no_grad():
        reference = routes["eager"]()
        out: dict[str, dict[str, float]] = {
            name: {"err": float((fn().detach() - reference).abs().max()), "ms": float("inf")}
            for name, fn in routes.items()
        }
        for _ in range(rounds):
            for name, fn in routes.items():
                start = time.perf_counter()
                fn()
                out[name]["ms"] = min(out[name]["ms"], (time.perf_counter() - start) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for t in args.lengths:
        print(json.dumps({"positions": t, **measure(t, args.rounds)}))


if __name__ == "__main__":
    main()
