"""The core's native CPU kernels against PyTorch's, forward and forward+backward, one layer's worth.

Causal attention: `glassformer.kernels.autograd.causal_attention` against
`F.scaled_dot_product_attention(is_causal=True)` (PyTorch's CPU flash kernel), q, k, v taken as
strided views of one [B, T, 3 H D] projection as in a model. GELU-tanh: `kernels.autograd.
gelu_tanh` against `F.gelu(approximate="tanh")`. The two sides alternate round after round; the
ratio is the median of the within-round ratios, times are each side's best round. The shapes are
the training benchmark's (`benchmarks/train.py`: 8 x 256 tokens, 6 heads of 64, MLP 1536) and
GPT-2 small's forward benchmark (`benchmarks/forward.py`: 4 x 256 tokens, 12 heads, MLP 3072).

    python benchmarks/train_kernels.py [--rounds 20] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glassformer.kernels import available
from glassformer.kernels.autograd import causal_attention, gelu_tanh

ATTENTION_SHAPES = {"train.py (8 x 256, 6 x 64)": (8, 6, 256, 64),
                    "forward.py (4 x 256, 12 x 64)": (4, 12, 256, 64)}  # fmt: skip
GELU_SHAPES = {"train.py (2048 x 1536)": (2048, 1536), "forward.py (1024 x 3072)": (1024, 3072)}


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def compare(sides: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        fn()
    for r in range(rounds):
        order = list(sides) if r % 2 else list(reversed(sides))
        for name in order:
            start = time.perf_counter()
            for _ in range(repeats):
                sides[name]()
            times[name].append((time.perf_counter() - start) / repeats)
    ours, theirs = times["glassformer"], times["pytorch"]
    return {
        "glassformer_ms": 1e3 * min(ours),
        "pytorch_ms": 1e3 * min(theirs),
        "speedup": statistics.median(t / o for o, t in zip(ours, theirs, strict=True)),
    }


def attention_case(b: int, h: int, t: int, d: int, backward: bool) -> dict[str, Callable]:
    x = torch.randn(b, t, 3 * h * d, requires_grad=backward)
    grad = torch.randn(b, t, h * d)

    def side(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            q, k, v = (y.view(b, t, h, d).transpose(1, 2) for y in x.split(h * d, dim=-1))
            out = fn(q, k, v, d**-0.5)
            if backward:
                out.backward(grad)
            return out

        return run

    return {"glassformer": side(causal_attention), "pytorch": side(sdpa)}


def gelu_case(m: int, f: int, backward: bool) -> dict[str, Callable]:
    x = torch.randn(m, f, requires_grad=backward)
    grad = torch.randn(m, f)

    def side(fn: Callable) -> Callable[[], object]:
        def run() -> object:
            y = fn(x)
            if backward:
                y.backward(grad)
            return y

        return run

    return {
        "glassformer": side(gelu_tanh),
        "pytorch": side(lambda z: F.gelu(z, approximate="tanh")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not available():
        raise SystemExit("the native kernels are unavailable on this machine")
    torch.manual_seed(0)
    results = []
    for backward in (False, True):
        pass_name = "forward+backward" if backward else "forward"
        for label, shape in ATTENTION_SHAPES.items():
            with torch.set_grad_enabled(backward):
                res = compare(attention_case(*shape, backward), args.rounds, 3)
            results.append({"kernel": "causal attention", "pass": pass_name, "shape": label, **res})
        for label, shape in GELU_SHAPES.items():
            with torch.set_grad_enabled(backward):
                res = compare(gelu_case(*shape, backward), args.rounds, 3)
            results.append({"kernel": "GELU-tanh", "pass": pass_name, "shape": label, **res})
    if args.json:
        print(json.dumps({"threads": args.threads, "results": results}))
        return
    print(f"{args.threads} threads, {args.rounds} alternating rounds (best ms, median speed-up)")
    print(f"  {'kernel':17} {'pass':17} {'shape':31} {'ours':>8} {'PyTorch':>8} {'speed-up':>8}")
    for r in results:
        print(
            f"  {r['kernel']:17} {r['pass']:17} {r['shape']:31} {r['glassformer_ms']:8.2f} "
            f"{r['pytorch_ms']:8.2f} {r['speedup']:7.2f}x"
        )


if __name__ == "__main__":
    main()
