"""Training throughput: glassformer against HF transformers' GPT2LMHeadModel, side by side.

The same GPT-2-style network (6 layers, width 384, 6 heads, context 256, vocabulary 8192,
tied embeddings, learned positions, GELU-tanh MLP, LayerNorm; HF's dropouts set to 0 so both
compute the same function), the same batch (8 x 256 tokens), the same optimizer (AdamW,
fused for ours) and one full training step each: forward,
next-token cross-entropy, backward, clip, optimizer step. The variants are timed in alternation,
round after round, so a busy shared machine slows them alike; the ratio is the median over
rounds of the within-round ratio of step times, tokens/s and MFU come from each variant's
fastest step (the closest to an idle machine). HF is run twice: with fused AdamW (what HF's
Trainer uses by default on torch >= 2.8, so the same optimizer kernel as ours) and with
`torch.optim.AdamW`'s defaults (on CPU the per-parameter for-loop implementation, what a
hand-written HF training loop gets). MFU is model FLOPs per token (the trainer's:
`glassformer.training.mfu`, PaLM appendix B with attention over the causal pairs) per second
over the best fp32 matmul rate measured during the run.

    python benchmarks/train.py [--rounds 20] [--threads 2] [--compile] [--compile-hf] [--json]

On a shared machine the step time drifts by 30% or more within a minute; the quartiles of the
within-round ratios are printed beside the median so that a run shows its own spread, and 40
rounds (about four minutes) give a median that repeats to a few percent.

`--compile` / `--compile-hf` add torch.compile'd variants of ours / HF's (compile time is
excluded: the warm-up steps absorb it; it takes a minute or more on a small CPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

LAYERS, WIDTH, HEADS, CONTEXT, BATCH, VOCAB = 6, 384, 6, 256, 8, 8192


def build_ours(compile_: bool) -> tuple[Callable[[torch.Tensor], float], int]:
    from glassformer.config import Config
    from glassformer.model import Transformer
    from glassformer.training.config import TrainConfig
    from glassformer.training.optim import make_optimizer

    cfg = Config.preset("gpt2").replace(
        name="bench", d_model=WIDTH, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=HEADS,
        head_dim=WIDTH // HEADS, d_ff=4 * WIDTH, vocab_size=VOCAB, max_seq_len=CONTEXT,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(cfg).train()
    # The trainer's own optimizer setup (fused AdamW, decay on matrices only).
    opt = make_optimizer(model, TrainConfig(lr=3e-4, weight_decay=0.1), torch.device("cpu"))
    forward = torch.compile(model) if compile_ else model
    params = list(model.parameters())

    def step(batch: torch.Tensor) -> float:
        x, y = batch[:, :-1], batch[:, 1:]
        loss = forward(x, labels=y) / y.numel()  # the trainer's loss: head and CE fused
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, sum(p.numel() for p in params)


def build_hf(compile_: bool, fused: bool = True) -> tuple[Callable[[torch.Tensor], float], int]:
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    # fused=None is torch's default: on CPU, the per-parameter for-loop implementation.
    opt = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), fused=fused or None)
    forward = torch.compile(model) if compile_ else model
    params = list(model.parameters())

    def step(batch: torch.Tensor) -> float:
        # HF shifts the labels itself: input and labels are the same 256 tokens.
        x = batch[:, :-1]
        loss = forward(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, sum(p.numel() for p in params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time ours compiled")
    parser.add_argument("--compile-hf", action="store_true", help="also time HF compiled")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from glassformer.config import Config
    from glassformer.explorer.hardware import matmul_rate
    from glassformer.training.mfu import model_flops_per_token

    variants: dict[str, tuple[Callable[[torch.Tensor], float], int]] = {
        "glassformer": build_ours(False),
        "hf": build_hf(False),
        "hf-default-adamw": build_hf(False, fused=False),
    }
    if args.compile:
        variants["glassformer+compile"] = build_ours(True)
    if args.compile_hf:
        variants["hf+compile"] = build_hf(True)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=gen)
    for step, _ in variants.values():
        for _ in range(args.warmup):
            step(batch)
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    # kernel time and minor page faults of each step: first touches of freshly mapped memory
    sys_time: dict[str, list[float]] = {name: [] for name in variants}
    faults: dict[str, list[int]] = {name: [] for name in variants}
    peak = 0.0
    for _ in range(args.rounds):
        # fp32 1024^3 matmul FLOP/s now: the best probe is the closest to an idle machine
        peak = max(peak, matmul_rate(torch.float32, 1024, 0.3))
        for name, (step, _) in variants.items():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            start, start_cpu = time.perf_counter(), time.process_time()
            step(batch)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            after = resource.getrusage(resource.RUSAGE_SELF)
            sys_time[name].append(after.ru_stime - usage.ru_stime)
            faults[name].append(after.ru_minflt - usage.ru_minflt)

    cfg = Config.preset("gpt2").replace(
        d_model=WIDTH, n_layers=LAYERS, n_heads=HEADS, n_kv_heads=HEADS,
        head_dim=WIDTH // HEADS, d_ff=4 * WIDTH, vocab_size=VOCAB, max_seq_len=CONTEXT,
    )  # fmt: skip
    flops_per_token = model_flops_per_token(cfg, CONTEXT)
    tokens = BATCH * CONTEXT
    result: dict[str, Any] = {
        "config": f"{LAYERS} layers, d={WIDTH}, ctx {CONTEXT}, batch {BATCH}, vocab {VOCAB}",
        "threads": args.threads,
        "params": {name: n for name, (_, n) in variants.items()},
        "flops_per_token": flops_per_token,
        "peak_fp32_flops_measured": peak,
        "variants": {},
    }
    for name, ts in times.items():
        best = min(ts)
        result["variants"][name] = {
            "step_seconds": ts,
            "step_cpu_seconds": cpu[name],
            "tokens_per_s": tokens / best,
            "tokens_per_s_median": tokens / statistics.median(ts),
            "mfu": flops_per_token * tokens / best / peak,
            "step_sys_seconds_median": statistics.median(sys_time[name]),
            "step_minor_faults_median": statistics.median(faults[name]),
        }
    v = result["variants"]

    def paired(a: str, b: str, table: dict[str, list[float]] = times) -> float:
        # Median over rounds of the ratio within a round: load drifts between rounds, so
        # comparing steps run seconds apart cancels most of a shared machine's noise.
        return statistics.median(tb / ta for ta, tb in zip(table[a], table[b], strict=True))

    result["ratio"] = paired("glassformer", "hf")
    within = [tb / ta for ta, tb in zip(times["glassformer"], times["hf"], strict=True)]
    result["ratio_quartiles"] = (
        statistics.quantiles(within, n=4) if len(within) > 1 else [within[0]] * 3
    )
    result["ratio_vs_default_adamw"] = paired("glassformer", "hf-default-adamw")
    # CPU time of the process: what the step costs, whatever else runs (most robust with
    # --threads 1; with more threads, waiting threads spin and count).
    result["ratio_cpu_time"] = paired("glassformer", "hf", cpu)
    result["ratio_cpu_time_vs_default_adamw"] = paired("glassformer", "hf-default-adamw", cpu)
    if args.compile:
        result["ratio_compiled"] = paired("glassformer+compile", "hf")
        result["ratio_compiled_cpu_time"] = paired("glassformer+compile", "hf", cpu)
    if args.compile and args.compile_hf:
        result["ratio_both_compiled"] = paired("glassformer+compile", "hf+compile")
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['config']}, {args.threads} threads, {args.rounds} interleaved rounds")
    print(f"measured fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s")
    print("  variant                 tok/s (best step)  tok/s (median)   MFU (best)"
          "   system ms/step   page faults/step")  # fmt: skip
    for name, r in v.items():
        print(
            f"  {name:22s} {r['tokens_per_s']:10.0f} {r['tokens_per_s_median']:16.0f}"
            f"   {100 * r['mfu']:8.1f}%   {1e3 * r['step_sys_seconds_median']:14.0f}"
            f"   {r['step_minor_faults_median']:16.0f}"
        )
    q1, _, q3 = result["ratio_quartiles"]
    print(f"glassformer / HF (fused AdamW, HF Trainer's default): {result['ratio']:.2f}x "
          f"(quartiles of the rounds {q1:.2f}-{q3:.2f})")  # fmt: skip
    print(f"glassformer / HF (torch.optim.AdamW defaults):        "
          f"{result['ratio_vs_default_adamw']:.2f}x")  # fmt: skip
    print(f"same, in process CPU time: {result['ratio_cpu_time']:.2f}x and "
          f"{result['ratio_cpu_time_vs_default_adamw']:.2f}x")  # fmt: skip
    if args.compile:
        print(f"glassformer+compile / HF (fused AdamW): {result['ratio_compiled']:.2f}x")
    if "ratio_both_compiled" in result:
        print(f"glassformer+compile / HF+compile: {result['ratio_both_compiled']:.2f}x")


if __name__ == "__main__":
    main()
