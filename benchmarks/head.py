"""The LM head's two speed-ups, each against the plain PyTorch call it replaces, in one run.

1. Logits without autograd: `linear_into_aligned_rows` (rows padded to 64 floats) against
   `F.linear`, at GPT-2 small's head (1024 tokens x 768 -> 50257).
2. Head + next-token loss with its backward: `linear_cross_entropy` (fused, chunked) against
   `F.cross_entropy(F.linear(h, W))`, at the training benchmark's size (2048 tokens x 384 ->
   8192) and GPT-2's (1024 x 768 -> 50257). Peak memory of each is measured in a fresh
   process (the growth of its peak RSS over the inputs alone).

The variants alternate round after round; the ratio is the median of within-round ratios.

    python benchmarks/head.py [--rounds 8] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from glassformer.components.head_loss import linear_cross_entropy
from glassformer.model import linear_into_aligned_rows

LOSS_SHAPES = {"train-bench": (2048, 384, 8192), "gpt2": (1024, 768, 50257)}


def inputs(tokens: int, width: int, vocab: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, width, generator=gen, requires_grad=True)
    w = (torch.randn(vocab, width, generator=gen) * 0.02).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), generator=gen)
    return h, w, y


def loss_step(variant: str, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
    h.grad = w.grad = None
    if variant == "fused":
        loss = linear_cross_entropy(h, w, y)
    else:
        loss = F.cross_entropy(F.linear(h, w), y, reduction="sum")
    loss.backward()


def alternate(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(slow: list[float], fast: list[float]) -> float:
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))


def peak_rss_growth_mb(variant: str, shape: str, threads: int) -> float:
    """Peak RSS of one loss step in a fresh process (Linux), minus its RSS just before."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", variant, shape, "--threads", str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_child(variant: str, shape: str) -> None:
    h, w, y = inputs(*LOSS_SHAPES[shape])
    # Reset the high-water mark (Linux: "5" > clear_refs), so that importing torch, which
    # peaks higher than a small step, does not hide the step's own peak.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    loss_step(variant, h, w, y)
    print((_status_kb("VmHWM") - before) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(*args.rss_child)
        return

    report: dict[str, dict[str, float]] = {}
    x = torch.randn(1024, 768)
    w = torch.randn(50257, 768) * 0.02
    with torch.no_grad():
        times = alternate(
            {"F.linear": lambda: F.linear(x, w), "aligned": lambda: linear_into_aligned_rows(x, w)},
            args.rounds,
        )
    report["logits gpt2 1024x768->50257"] = {
        "F.linear_ms": 1e3 * min(times["F.linear"]),
        "aligned_ms": 1e3 * min(times["aligned"]),
        "speedup": median_ratio(times["F.linear"], times["aligned"]),
    }
    for shape, dims in LOSS_SHAPES.items():
        tensors = inputs(*dims)
        times = alternate(
            {v: (lambda v=v, t=tensors: loss_step(v, *t)) for v in ("plain", "fused")},
            args.rounds,
        )
        report[f"head+loss fwd+bwd {shape} {dims[0]}x{dims[1]}->{dims[2]}"] = {
            "plain_ms": 1e3 * min(times["plain"]),
            "fused_ms": 1e3 * min(times["fused"]),
            "speedup": median_ratio(times["plain"], times["fused"]),
            "plain_peak_mb": peak_rss_growth_mb("plain", shape, args.threads),
            "fused_peak_mb": peak_rss_growth_mb("fused", shape, args.threads),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.threads} threads, {args.rounds} alternating rounds (best ms, median ratio)")
    for name, row in report.items():
        cells = ", ".join(
            f"{k} {v:.2f}x" if k == "speedup" else f"{k} {v:.0f}" for k, v in row.items()
        )
        print(f"{name}: {cells}")


if __name__ == "__main__":
    main()
