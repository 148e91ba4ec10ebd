"""Forward and forward+backward throughput of a GPT-2-small model: glassformer vs HF transformers.

Forward: logits of every position, without autograd. Forward+backward: the mean next-token
cross-entropy and its gradients (HF via `labels=`, glassformer via its fused head + loss).

Both models hold the same weights (converted with `glassformer.from_hf`), run the same input on
the same threads, timed in alternation round after round; the ratio is the median of the
within-round ratios and tokens/s come from each engine's best round. Nothing here gates a test:
wall-clock numbers drift between machines and runs.

    python benchmarks/forward.py [--batch 4] [--seq 256] [--threads 2] [--repeats 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
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

    models = {"hf": hf, "glassformer": ours}

    def logits_of(name: str) -> torch.Tensor:
        return hf(ids).logits if name == "hf" else ours(ids)

    def forward(name: str) -> None:
        with torch.no_grad():
            logits_of(name)

    # Forward+backward of the training loss: mean next-token cross-entropy, HF through its
    # `labels=` argument, ours through the fused head + loss (`forward(..., labels=)`).
    targets = torch.cat([ids[:, 1:], torch.full((args.batch, 1), -100)], dim=1)
    count = args.batch * (args.seq - 1)

    def loss_of(name: str) -> torch.Tensor:
        if name == "hf":
            return hf(input_ids=ids, labels=ids).loss
        return ours(ids, labels=targets) / count

    def forward_backward(name: str) -> None:
        models[name].zero_grad(set_to_none=True)
        loss_of(name).backward()

    for model in models.values():
        model.train()
        for module in model.modules():  # no dropout: the same work as eval, with autograd
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    # Alternate the engines round after round so a busy shared machine slows both alike; the
    # ratio is the median of within-round ratios, tokens/s come from each one's best round.
    times: dict[tuple[str, str], list[float]] = {}
    for kind, fn in (("forward", forward), ("fwd_bwd", forward_backward)):
        for name in models:
            fn(name)  # warm-up
        for _ in range(args.repeats):
            for name in models:
                start = time.perf_counter()
                fn(name)
                times.setdefault((kind, name), []).append(time.perf_counter() - start)
    results = {
        name: {f"{kind}_tok_s": tokens / min(times[kind, name]) for kind in ("forward", "fwd_bwd")}
        for name in models
    }
    ratio = {
        f"{kind}_tok_s": statistics.median(
            h / g for h, g in zip(times[kind, "hf"], times[kind, "glassformer"], strict=True)
        )
        for kind in ("forward", "fwd_bwd")
    }
    with torch.no_grad():
        hf.eval()
        ours.eval()
        err = (hf(ids).logits - ours(ids)).abs().max().item()
        loss_err = abs(loss_of("hf").item() - loss_of("glassformer").item())
    report = {
        "config": vars(args),
        "results": results,
        "ratio_vs_hf": ratio,
        "max_abs_logit_diff": err,
        "loss_diff": loss_err,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"GPT-2 small, batch {args.batch} x seq {args.seq}, {args.threads} threads, fp32")
    print(f"{'':14s}{'forward tok/s':>16s}{'fwd+bwd tok/s':>16s}")
    for name, row in results.items():
        print(f"{name:14s}{row['forward_tok_s']:16.0f}{row['fwd_bwd_tok_s']:16.0f}")
    print(f"{'ratio':14s}{ratio['forward_tok_s']:15.2f}x{ratio['fwd_bwd_tok_s']:15.2f}x")
    print(f"max |logit difference| = {err:.2e}, |loss difference| = {loss_err:.2e}")


if __name__ == "__main__":
    main()
