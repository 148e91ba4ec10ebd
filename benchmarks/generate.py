"""Prefill and decode speed on the embedded SmolLM2-135M-Instruct: glassformer vs HF transformers
vs llama.cpp, same prompt, same thread count, measured in one run and printed as ratios.

    python benchmarks/generate.py [--threads 2] [--prompt-tokens 512] [--new-tokens 128] [--json]

HF transformers loads the same GGUF (dequantised to fp32, as glassformer does). llama.cpp runs
the GGUF's own Q4_1/Q8_0 blocks; it is installed by this script's user, not by the project:
`pip install llama-cpp-python` (builds from source in about 6 minutes). Peers that are not
installed are reported as missing.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PROMPT_SEED_TEXT = (
    "The history of computing is a story of abstractions stacked on abstractions: switches "
    "became gates, gates became adders, adders became processors, and processors became the "
    "substrate for languages, operating systems and networks. "
)


def _prompt_ids(tok, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tok.encode(PROMPT_SEED_TEXT, add_special_tokens=False)
    return ids[:n]


def bench_glassformer(path, ids: list[int], new_tokens: int) -> dict:
    import glassformer as gf

    model, _ = gf.load(path)
    x = torch.tensor([ids])
    with torch.inference_mode():
        model(x[:, :16])  # warm-up
        cache = model.new_cache(1, len(ids) + new_tokens + 1)
        start = time.perf_counter()
        logits = model(x, cache)[:, -1]
        prefill = time.perf_counter() - start
        token = logits.argmax(-1, keepdim=True)
        generated = [int(token)]
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            token = model(token, cache)[:, -1].argmax(-1, keepdim=True)
            generated.append(int(token))
        decode = time.perf_counter() - start
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "prefill_tok_s": len(ids) / prefill,
        "decode_tok_s": (new_tokens - 1) / decode,
        "weight_bytes": weight_bytes,
        "tokens": generated,
    }


def bench_hf(path, ids: list[int], new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    x = torch.tensor([ids])
    with torch.inference_mode():
        model(x[:, :16])
        start = time.perf_counter()
        model(x)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        total = time.perf_counter() - start
    # generate() repeats the prefill: subtract it to get the decode steps alone.
    decode = max(total - prefill, 1e-9)
    return {
        "prefill_tok_s": len(ids) / prefill,
        "decode_tok_s": (new_tokens - 1) / decode,
        "tokens": out[0, len(ids) :].tolist(),
    }


def bench_llama_cpp(path, ids: list[int], new_tokens: int, threads: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=len(ids) + new_tokens + 8,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=len(ids),
        verbose=False,
    )
    llm.eval(ids[:16])
    llm.reset()
    start = time.perf_counter()
    llm.eval(ids)
    prefill = time.perf_counter() - start
    tokens = []
    start = time.perf_counter()
    for token in llm.generate([], top_k=1, top_p=1.0, temp=0.0, reset=False):
        tokens.append(token)
        if len(tokens) == new_tokens:
            break
    decode = time.perf_counter() - start
    return {
        "prefill_tok_s": len(ids) / prefill,
        "decode_tok_s": new_tokens / decode,
        "tokens": tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from glassformer.loaders.resolve import resolve
    from glassformer.tokenizer import load_tokenizer

    path = resolve("smollm2-135m-instruct")
    ids = _prompt_ids(load_tokenizer(path), args.prompt_tokens)
    results: dict[str, dict] = {"glassformer fp32": bench_glassformer(path, ids, args.new_tokens)}
    for name, fn in (
        ("HF transformers fp32", lambda: bench_hf(path, ids, args.new_tokens)),
        ("llama.cpp Q4_1", lambda: bench_llama_cpp(path, ids, args.new_tokens, args.threads)),
    ):
        try:
            results[name] = fn()
        except ImportError as err:
            results[name] = {"missing": str(err)}
    ours = results["glassformer fp32"]
    for row in results.values():
        if "missing" not in row:
            row["prefill_ratio"] = ours["prefill_tok_s"] / row["prefill_tok_s"]
            row["decode_ratio"] = ours["decode_tok_s"] / row["decode_tok_s"]
    hf_tokens = results.get("HF transformers fp32", {}).get("tokens")
    summary = {
        "config": vars(args),
        "results": {
            k: {kk: vv for kk, vv in v.items() if kk != "tokens"} for k, v in results.items()
        },
        "greedy_tokens_equal_hf": hf_tokens == ours["tokens"] if hf_tokens else None,
        "decode_bandwidth_GB_s": ours["weight_bytes"] * ours["decode_tok_s"] / 1e9,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"SmolLM2-135M-Instruct, {args.prompt_tokens}-token prompt, {args.new_tokens} new "
        f"tokens, {args.threads} threads"
    )
    print(
        f"{'':24s}{'prefill tok/s':>14s}{'decode tok/s':>14s}{'ours/them prefill':>19s}"
        f"{'ours/them decode':>18s}"
    )
    for name, row in results.items():
        if "missing" in row:
            print(f"{name:24s}  not installed ({row['missing']})")
            continue
        print(
            f"{name:24s}{row['prefill_tok_s']:14.1f}{row['decode_tok_s']:14.1f}"
            f"{row['prefill_ratio']:18.2f}x{row['decode_ratio']:17.2f}x"
        )
    print(
        f"glassformer decode reads {ours['weight_bytes'] / 1e6:.0f} MB of weights per token: "
        f"{summary['decode_bandwidth_GB_s']:.1f} GB/s"
    )
    print(f"greedy tokens equal HF's: {summary['greedy_tokens_equal_hf']}")


if __name__ == "__main__":
    main()
