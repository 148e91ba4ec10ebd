"""Time of the weight-only 1:1-rule analysis of a real model (default: Gemma 3 270M).

Reports, separately: loading the GGUF (dequantisation; not part of the analysis), the
weight-only analysis (`weight_analysis`: W_down W_up products, block power iteration for the
norms, the float64 covariance recursion with one eigvalsh per layer), the ratio-only fast path
(`spectral_ratios`: power iteration through the factors, no d x d products), and, as the peer,
the same recursion with every norm from a full SVD (`torch.linalg.matrix_norm(ord=2)`), the
naive way. Nothing here gates a test: wall-clock figures drift between machines (and on a
shared machine, with its load). docs/telemetry.md keeps the current figures.

    python benchmarks/telemetry.py [--model gemma-3-270m] [--threads 2] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from glassformer.diagnostics.lyapunov import spectral_ratios, weight_analysis
from glassformer.diagnostics.spectral import SMALL_DIM, single_thread


def svd_peer(model: torch.nn.Module) -> float:
    """The recursion with full-SVD norms everywhere (the naive implementation; dense MLPs
    only), under the same thread policy as `weight_analysis` so that only the algorithm
    differs."""
    start = time.perf_counter()
    c = None
    with single_thread(model.config.d_model < SMALL_DIM):
        _svd_recursion(model, c)
    return time.perf_counter() - start


def _svd_recursion(model: torch.nn.Module, c: torch.Tensor | None) -> None:
    for block in model.layers:
        up = block.mlp.up_proj.weight.detach().double()
        w_mlp = block.mlp.down_proj.weight.detach().double() @ up
        wo = block.attn.o_proj.weight.detach().double()
        w_attn = wo if wo.shape[0] == wo.shape[1] else wo @ wo.T
        d = w_mlp.shape[0]
        eye = torch.eye(d, dtype=torch.float64)
        c = eye if c is None else c
        torch.linalg.matrix_norm(w_mlp, ord=2)
        torch.linalg.matrix_norm(w_attn, ord=2)
        a = eye + w_mlp + w_attn
        torch.linalg.matrix_norm(a, ord=2)
        nxt = a @ c @ a.T
        c = nxt / torch.linalg.matrix_norm(nxt, ord=2)
        torch.linalg.eigvalsh(c)


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true", help="skip the full-SVD peer")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from glassformer.loaders import load_model

    start = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - start
    n_params = sum(p.numel() for p in model.parameters())

    result = {
        "model": args.model,
        "params": n_params,
        "layers": model.config.n_layers,
        "d_model": model.config.d_model,
        "threads": args.threads,
        "load_s": load_s,
        "weight_analysis_s": best_of(lambda: weight_analysis(model), args.repeat),
        "spectral_ratios_s": best_of(lambda: spectral_ratios(model), args.repeat),
    }
    if not args.no_peer:
        result["full_svd_peer_s"] = min(svd_peer(model) for _ in range(args.repeat))
    result["load_plus_analysis_s"] = load_s + result["weight_analysis_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:24s} {value:.2f}" if isinstance(value, float) else f"{key:24s} {value}")


if __name__ == "__main__":
    main()
