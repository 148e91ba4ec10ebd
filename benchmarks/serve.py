"""A bounded load test of OpenAI-compatible servers on loopback with the official openai client:
`glassformer serve`, llama-cpp-python's server and `transformers serve` on the same model file,
in one run. 1, 4, 8 and 16 concurrent clients each send a fixed prompt a fixed number of
times, streaming, greedy; time to first token (TTFT) and inter-token latency (ITL) p50/p99 and
aggregate tokens/s per level.

    python benchmarks/serve.py [--model smollm2-135m-instruct] [--quant int4] [--threads 2]
                               [--clients 1 4 8 16] [--requests 2] [--max-tokens 32]
                               [--engines glassformer llama.cpp transformers] [--json]

Each server is a subprocess on a free port, given the same thread count, warmed up with one
request, loaded with every level, then stopped; only one runs at a time.

- glassformer: `glassformer serve MODEL --quant Q --threads T --max-batch <most clients>`
  (continuous batching; the decode tokens of all running sequences in one batched step).
- llama.cpp: `python -m llama_cpp.server --model <the GGUF> --n_threads T
  --interrupt_requests False` on the same GGUF file (for SmolLM2-135M-Instruct its own Q4_1
  blocks). Its server answers one request at a time: requests queue behind a lock (by default
  a newcomer would cut the running reply off). It needs `pip install 'llama-cpp-python[server]'`.
- transformers: `transformers serve --continuous-batching --device cpu` on the GGUF
  (dequantised to float32 by transformers), OMP_NUM_THREADS=T. An engine that is not installed
  or does not answer within --start-timeout is reported with the reason instead of figures.

Tokens are counted from each reply's usage where the server sends it (stream_options), else as
the streamed chunks that carry text. A reply may end before --max-tokens at the end of turn.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
ENGINES = ("glassformer", "llama.cpp", "transformers")

# llama-cpp-python's server module, run as `python -m llama_cpp.server` would run it.
LLAMA_SERVER = "import runpy; runpy.run_module('llama_cpp.server', run_name='__main__')"
# The same with llama.cpp's extra weight buffer types off (`use_extra_bufts`, llama.cpp's
# --no-repack): on a CPU that advertises AMX where the OS has not enabled its tile state (a VM),
# llama.cpp puts the weights in AMX buffers and its prompt products fault on `tilezero`
# (SIGILL). Off, every product runs on its AVX2/AVX-512 kernels.
LLAMA_SERVER_NO_EXTRA_BUFTS = (
    "import llama_cpp, llama_cpp.llama as L; d = llama_cpp.llama_model_default_params\n"
    "def p():\n    q = d(); q.use_extra_bufts = False; return q\n"
    "llama_cpp.llama_model_default_params = L.llama_cpp.llama_model_default_params = p\n"
    + LLAMA_SERVER
)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_request(client, model: str, max_tokens: int) -> dict:
    start = time.perf_counter()
    stamps, usage_tokens = [], None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if getattr(chunk, "usage", None) is not None:
            usage_tokens = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    tokens = usage_tokens if usage_tokens is not None else len(stamps)
    return {"start": start, "stamps": stamps, "tokens": tokens}


def run_level(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=900)

    def client_loop() -> list[dict]:
        return [one_request(client, model, max_tokens) for _ in range(requests)]

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [
            r for f in [pool.submit(client_loop) for _ in range(clients)] for r in f.result()
        ]
    wall = time.perf_counter() - start
    ttft = [r["stamps"][0] - r["start"] for r in results if r["stamps"]]
    itl = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)]
    tokens = sum(r["tokens"] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "empty_replies": sum(not r["stamps"] for r in results),
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": 1e3 * percentile(ttft, 0.5),
        "ttft_p99_ms": 1e3 * percentile(ttft, 0.99),
        "itl_p50_ms": 1e3 * percentile(itl, 0.5),
        "itl_p99_ms": 1e3 * percentile(itl, 0.99),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(engine: str, args, gguf: Path, port: int) -> tuple[list[str], dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if engine == "glassformer":
        command = [sys.executable, "-m", "glassformer.cli", "serve", args.model]
        command += ["--quant", args.quant, "--threads", str(args.threads), "--port", str(port)]
        command += ["--max-batch", str(max(args.clients)), "--ctx", "512"]
        return command, env
    if engine == "llama.cpp":
        launch = LLAMA_SERVER if args.llama_extra_bufts else LLAMA_SERVER_NO_EXTRA_BUFTS
        command = [sys.executable, "-c", launch, "--model", str(gguf)]
        command += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
        # requests queue behind one another instead of a newcomer cutting the running one off
        command += ["--interrupt_requests", "False", "--n_ctx", "2048"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        return command, env
    # transformers: the GGUF as `<folder>:<file>`, read offline (nothing is fetched)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = ["transformers", "serve", f"{gguf.parent}:{gguf.name}", "--continuous-batching"]
    command += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning"]
    return command, env


def wait_ready(url: str, server: subprocess.Popen, timeout: float) -> str | None:
    """None once /v1/models answers; else why not (the process died, or the timeout)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"exited with status {server.returncode} before answering"
        try:
            if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return f"did not answer /v1/models within {timeout:.0f} s"


def run_engine(engine: str, args, gguf: Path, log) -> dict:
    from openai import OpenAI

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        command, env = server_command(engine, args, gguf, port)
        logfile = open(Path(args.logs) / f"serve-{engine}.log", "w")  # noqa: SIM115
        server = subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT, env=env)
    except (OSError, FileNotFoundError) as err:
        return {"engine": engine, "error": f"could not start: {err}"}
    try:
        reason = wait_ready(url, server, args.start_timeout)
        if reason is not None:
            tail = Path(logfile.name).read_text()[-600:].strip().splitlines()[-3:]
            return {"engine": engine, "error": f"{reason}: {' | '.join(tail)}"}
        model = OpenAI(base_url=f"{url}/v1", api_key="unused").models.list().data[0].id
        log(f"{engine}: serving {model}; warm-up")
        try:
            run_level(url, model, 1, 1, 4)
        except Exception as err:  # a server that starts but cannot answer a chat request
            return {"engine": engine, "error": f"the warm-up request failed: {err}"}
        rows = []
        for clients in args.clients:
            log(f"{engine}: {clients} clients")
            try:
                rows.append(run_level(url, model, clients, args.requests, args.max_tokens))
            except Exception as err:
                rows.append({"clients": clients, "error": f"{type(err).__name__}: {err}"})
        return {"engine": engine, "command": " ".join(command), "rows": rows}
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        logfile.close()


def goals(results: list[dict]) -> list[str]:
    """The serving goals, each as measured: 8-stream aggregate vs our single stream and vs
    llama.cpp's server at 8; p99 ITL at 8 vs the single stream's."""
    by = {
        r["engine"]: {row["clients"]: row for row in r.get("rows", []) if "error" not in row}
        for r in results
    }
    ours, peer = by.get("glassformer", {}), by.get("llama.cpp", {})
    lines = []
    if 1 in ours and 8 in ours:
        one, eight = ours[1], ours[8]
        x = eight["tokens_per_s"] / one["tokens_per_s"]
        lines.append(f"8-stream aggregate / single stream: {x:.2f}x (goal >= 4x)")
        y = eight["itl_p99_ms"] / one["itl_p99_ms"]
        lines.append(f"p99 ITL at 8 / p99 ITL at 1: {y:.2f}x (goal <= 3x)")
    if 8 in ours and 8 in peer:
        z = ours[8]["tokens_per_s"] / peer[8]["tokens_per_s"]
        lines.append(f"8-stream aggregate / llama-cpp-python server at 8: {z:.2f}x (goal >= 3x)")
    return lines


def table(results: list[dict]) -> str:
    lines = [
        "| engine | clients | requests | tokens | tokens/s | TTFT p50 ms | TTFT p99 ms | "
        "ITL p50 ms | ITL p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['engine']} | not run: {r['error']} |||||||| ")
            continue
        for row in r["rows"]:
            if "error" in row:
                lines.append(
                    f"| {r['engine']} | {row['clients']} | failed: {row['error']} ||||||| "
                )
                continue
            lines.append(
                f"| {r['engine']} | {row['clients']} | {row['requests']} | {row['tokens']} | "
                f"{row['tokens_per_s']:.1f} | {row['ttft_p50_ms']:.0f} | "
                f"{row['ttft_p99_ms']:.0f} | {row['itl_p50_ms']:.0f} | {row['itl_p99_ms']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quant", default="int4", choices=("none", "int8", "int4"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument(
        "--llama-extra-bufts",
        action="store_true",
        help="keep llama.cpp's extra weight buffers (AMX, repacked); off by default, see the code",
    )
    parser.add_argument("--logs", default=".", help="folder for each server's log")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from glassformer.loaders.resolve import resolve

    gguf = Path(resolve(args.model))
    if gguf.suffix != ".gguf":
        raise SystemExit(f"{args.model}: the peers need a GGUF file, got {gguf}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = [run_engine(engine, args, gguf, log) for engine in args.engines]
    summary = {
        "model": args.model,
        "gguf": gguf.name,
        "quant": args.quant,
        "threads": args.threads,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "results": results,
        "goals": goals(results),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"{args.model} ({gguf.name}), glassformer --quant {args.quant}, {args.threads} threads, "
        f"{args.requests} requests per client, max_tokens {args.max_tokens}"
    )
    print(table(results))
    for line in summary["goals"]:
        print(f"- {line}")


if __name__ == "__main__":
    main()
