"""A bounded load test of `glassformer serve` on loopback with the official openai client:
1, 4 and 8 concurrent clients, each sending the same fixed prompt a fixed number of times,
streaming; time to first token and inter-token latency (p50/p95) and aggregate tokens/s.

    python benchmarks/serve.py [--model smollm2-135m-instruct] [--quant int4] [--threads 2]
                               [--clients 1 4 8] [--requests 2] [--max-tokens 32] [--json]

The server is started as a subprocess (`glassformer serve --port 0 --json`, --max-batch the
largest client count) and stopped at the end. Greedy decoding; a reply may end before
--max-tokens at the end of turn, so tokens are counted from each reply's usage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_client(client, model: str, requests: int, max_tokens: int) -> list[dict]:
    results = []
    for _ in range(requests):
        start = time.perf_counter()
        stamps, tokens = [], 0
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].delta.content:
                stamps.append(time.perf_counter())
        results.append({"start": start, "stamps": stamps, "tokens": tokens})
    return results


def run_level(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [
            pool.submit(one_client, client, model, requests, max_tokens) for _ in range(clients)
        ]
        results = [r for f in futures for r in f.result()]
    wall = time.perf_counter() - start
    ttft = [r["stamps"][0] - r["start"] for r in results if r["stamps"]]
    itl = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)]
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": 1e3 * percentile(ttft, 0.5),
        "ttft_p95_ms": 1e3 * percentile(ttft, 0.95),
        "itl_p50_ms": 1e3 * percentile(itl, 0.5),
        "itl_p95_ms": 1e3 * percentile(itl, 0.95),
        "itl_mean_ms": 1e3 * statistics.fmean(itl) if itl else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quant", default="int4", choices=("none", "int8", "int4"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    command = [sys.executable, "-m", "glassformer.cli", "serve", args.model, "--port", "0"]
    command += ["--quant", args.quant, "--threads", str(args.threads), "--json"]
    command += ["--max-batch", str(max(args.clients)), "--ctx", "512"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line:
            raise SystemExit("the server did not start")
        info = json.loads(line)
        rows = [
            run_level(info["url"], info["model"], c, args.requests, args.max_tokens)
            for c in args.clients
        ]
    finally:
        server.terminate()
        server.wait(30)
    if args.json:
        print(json.dumps({"model": args.model, "quant": args.quant, "rows": rows}))
        return
    print(
        f"{args.model} {args.quant}, {args.threads} threads, {args.requests} requests per "
        f"client, max_tokens {args.max_tokens}"
    )
    header = "clients | requests | tokens | tokens/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms"
    print(f"| {header} | ITL p95 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['tokens']} | {r['tokens_per_s']:.1f} | "
            f"{r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} | {r['itl_p50_ms']:.0f} | "
            f"{r['itl_p95_ms']:.0f} |"
        )


if __name__ == "__main__":
    main()
