"""Where a single-stream decode token's time goes: the native decode plan's kernels by kind
(block products, attention, the LM head, RoPE + cache store, norms, SiLU and adds), the
embedding lookup, the sampler, and what `generate` adds around the step (its Python, and its
prefill spread over the new tokens), next to the bandwidth bound (the bytes a step must read
over the machine's measured read bandwidth).

    python benchmarks/decode_profile.py [--model smollm2-135m-instruct] [--quant int4]
                                        [--threads 2] [--context 128] [--rounds 7] [--json]

Each kernel call of the plan's program is run on its own (`gf_run_program` over one record),
`--reps` times per round at a fixed position; a category's figure is the sum of its calls'
best-of-rounds times, so a noisy machine inflates it less than a whole-step mean would. The
parts are measured apart, so they need not add up to the whole step exactly (the whole step
keeps caches warm across calls; one ctypes call per record adds ~1 us).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time

import torch

from glassformer.inference import native

KINDS = {
    native.OP_RMSNORM: "norms",
    native.OP_F32_MM: "products",
    native.OP_Q4_MM: "products",
    native.OP_Q8_MM: "products",
    native.OP_SILU_MUL: "silu, adds",
    native.OP_ADD: "silu, adds",
    native.OP_ROPE_STORE: "rope + cache store",
    native.OP_ATTEND: "attention",
}


# With one thread every kernel runs on the calling thread, so its CPU time is the cost of the
# work alone, not counting the time spent waiting for a core on a shared machine.
CLOCK = {"clock": time.perf_counter}


def best(fn, reps: int, rounds: int) -> float:
    """Best-of-rounds seconds per call."""
    clock = CLOCK["clock"]
    times = []
    for _ in range(rounds):
        start = clock()
        for _ in range(reps):
            fn()
        times.append((clock() - start) / reps)
    return min(times)


def profile(args) -> dict:
    from glassformer.generation import GenerationConfig, generate, load
    from glassformer.generation.sampling import sample
    from glassformer.inference.bench import measure_bandwidth
    from glassformer.loaders.resolve import resolve

    torch.set_num_threads(args.threads)
    if args.threads == 1:
        CLOCK["clock"] = time.thread_time
    net, tok = load(resolve(args.model), quant=args.quant)
    cache = net.new_cache(1, args.context + 64)
    ids = torch.randint(100, 10_000, (1, args.context))
    out: dict = {"model": args.model, "quant": args.quant, "threads": args.threads}
    with torch.inference_mode():
        net(ids, cache)
        net(ids[:, -1:], cache)  # builds the plan
        plan = net.decode_plan(cache)
        assert plan is not None, "the model does not run on the native decode plan"
        pos = cache.length
        program, n = plan.program, len(plan.program)
        size = ctypes.sizeof(native.Op)
        base = ctypes.addressof(program)
        last_mm = max(i for i in range(n) if KINDS[program[i].kind] == "products")
        parts: dict[str, float] = {}
        for i in range(n):
            kind = "LM head" if i == last_mm else KINDS[program[i].kind]
            op = ctypes.c_void_p(base + i * size)
            t = best(lambda op=op: plan.lib.run_program(op, 1, pos), args.reps, args.rounds)
            parts[kind] = parts.get(kind, 0.0) + t
        step_ids = ids[0, -1:]
        parts["embedding"] = best(lambda: plan._embed(step_ids), args.reps, args.rounds)

        def whole_step() -> None:
            cache.length = pos
            plan.step(step_ids)

        step = best(whole_step, args.reps, args.rounds)
        logits = plan.logits[:, : tok.vocab_size if hasattr(tok, "vocab_size") else None]
        empty = torch.empty(1, 0, dtype=torch.long)
        for name, config in (
            ("sampler (greedy)", GenerationConfig()),
            ("sampler (T 0.7, top-p 0.9)", GenerationConfig(temperature=0.7, top_p=0.9, seed=0)),
        ):
            gen = torch.Generator().manual_seed(0)
            parts[name] = best(lambda c=config, g=gen: sample(logits, empty, c, g), 20, args.rounds)
        # generate() end to end: per new token, minus the plan step, is its Python around it
        prompt = tok.decode(ids[0, : args.context].tolist())
        new = 64
        config = GenerationConfig(max_new_tokens=new, ignore_eos=True)
        gen_times = []
        clock = CLOCK["clock"]
        for _ in range(3):
            start = clock()
            res = generate(net, tok, prompt, config)
            gen_times.append((clock() - start) / len(res.tokens))
        per_token = min(gen_times)  # prefill included, spread over the tokens
    bandwidth = measure_bandwidth(args.threads)
    weight_bytes = plan_bytes(plan)
    out.update(
        step_ms=1e3 * step,
        generate_ms_per_token=1e3 * per_token,
        # what generate() adds per token beyond the step and a greedy draw: its Python, and
        # its 128-token prefill spread over the 64 new tokens
        python_ms_per_token=1e3 * (per_token - step - parts["sampler (greedy)"]),
        parts_ms={k: 1e3 * v for k, v in parts.items()},
        weight_mb=weight_bytes / 1e6,
        bandwidth_gb_s=bandwidth,
        bound_ms=1e3 * weight_bytes / (bandwidth * 1e9),
    )
    return out


def plan_bytes(plan) -> int:
    """Bytes of the weights the plan's products read once a step, from their records: int4
    codes (K / 2 bytes a row) and float16 d, mn per group; int8 codes and float32 scales;
    float32 rows. Norm weights, rotary tables and the KV cache are small beside them."""
    total = 0
    for op in plan.program:
        a = op.a
        if op.kind == native.OP_Q4_MM:  # x, M, K, q, d, mn, N, group
            k, n, group = a[2], a[6], a[7]
            total += n * k // 2 + 2 * 2 * n * (k // group)
        elif op.kind == native.OP_Q8_MM:  # x, M, K, q, s, N, group
            k, n, group = a[2], a[5], a[6]
            total += n * k + 4 * n * (k // group)
        elif op.kind == native.OP_F32_MM:  # x, M, K, w, N
            total += 4 * a[2] * a[4]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quant", default="int4", choices=("none", "int8", "int4"))
    parser.add_argument("--threads", type=int, default=2, help="1: CPU-time clock (see CLOCK)")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = profile(args)
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.model} {args.quant}, {args.threads} threads, context {args.context}")
    print("| part | ms / token | share of the plan step |")
    print("|---|---|---|")
    for name, ms in out["parts_ms"].items():
        print(f"| {name} | {ms:.3f} | {100 * ms / out['step_ms']:.0f}% |")
    print(f"| whole plan step | {out['step_ms']:.3f} | 100% |")
    print(
        f"| generate() per new token, its prefill included | {out['generate_ms_per_token']:.3f} | |"
    )
    print(f"| generate() beyond step + greedy draw | {out['python_ms_per_token']:.3f} | |")
    print(
        f"bandwidth bound: {out['weight_mb']:.1f} MB of weights / {out['bandwidth_gb_s']:.1f} "
        f"GB/s = {out['bound_ms']:.2f} ms / token"
    )


if __name__ == "__main__":
    main()
