"""Forward and forward+backward throughput of a GPT-2-small model: glassformer vs HF transformers.

Both models hold the same weights (converted with `glassformer.from_hf`), run the same input on
the same threads, and the figures are printed side by side with their ratio. Nothing here gates
a test: wall-clock numbers drift between machines and runs.

    python benchmarks/forward.py [--batch 4] [--seq 256] [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch


def _time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import GPT2Config, GPT2LMHeadModel

    import glassformer as gf

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).float()
    hf.set_attn_implementation("sdpa")
    ours = gf.from_hf(hf)
    ids = torch.randint(0, 50257, (args.batch, args.seq))
    tokens = args.batch * args.seq

    results = {}
    for name, model, logits_of in (
        ("hf", hf, lambda m: m(ids).logits),
        ("glassformer", ours, lambda m: m(ids)),
    ):
        model.eval()
        with torch.no_grad():
            fwd = _time(lambda m=model, f=logits_of: f(m), args.repeats)
        model.train()
        for module in model.modules():  # no dropout: same work as eval, but with autograd
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

        def step(m: torch.nn.Module = model, f: Callable = logits_of) -> None:
            m.zero_grad(set_to_none=True)
            f(m).float().logsumexp(-1).mean().backward()

        bwd = _time(step, args.repeats)
        results[name] = {"forward_tok_s": tokens / fwd, "fwd_bwd_tok_s": tokens / bwd}

    with torch.no_grad():
        hf.eval()
        ours.eval()
        err = (hf(ids).logits - ours(ids)).abs().max().item()
    ratio = {
        k: results["glassformer"][k] / results["hf"][k] for k in ("forward_tok_s", "fwd_bwd_tok_s")
    }
    report = {
        "config": vars(args),
        "results": results,
        "ratio_vs_hf": ratio,
        "max_abs_logit_diff": err,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"GPT-2 small, batch {args.batch} x seq {args.seq}, {args.threads} threads, fp32")
    print(f"{'':14s}{'forward tok/s':>16s}{'fwd+bwd tok/s':>16s}")
    for name, row in results.items():
        print(f"{name:14s}{row['forward_tok_s']:16.0f}{row['fwd_bwd_tok_s']:16.0f}")
    print(f"{'ratio':14s}{ratio['forward_tok_s']:15.2f}x{ratio['fwd_bwd_tok_s']:15.2f}x")
    print(f"max |logit difference| = {err:.2e}")


if __name__ == "__main__":
    main()
