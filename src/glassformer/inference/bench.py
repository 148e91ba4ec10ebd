"""Prefill and decode speed of glassformer (float32, int8, int4) next to HF transformers and
llama.cpp, measured in one run, interleaved, with peak memory and memory-bandwidth use.

Each engine lives in its own worker process (so its peak resident memory is its own) and waits
on a pipe; the parent asks them in turn for one measurement per round, so every engine sees the
same background load over the run. A machine shared with other jobs makes single timings noisy:
each figure is the best of `rounds` (the least disturbed run), and every sample is kept in the
JSON output.

What is timed, for a prompt of P tokens and N new tokens, greedy, batch 1:
- prefill: one forward over the prompt into an empty cache, logits of the last position only
  (what generation needs; HF gets `logits_to_keep=1`, llama.cpp computes the last row only);
- decode: N - 1 single-token steps (the first new token comes from the prefill), including
  the argmax; tokens/s = (N - 1) / seconds.
HF transformers runs its own model class on the same GGUF (dequantised to float32) with a
plain `past_key_values` loop; llama.cpp runs the GGUF's own blocks through llama-cpp-python.

Bandwidth: a decode step streams every weight once plus the KV cache of the context, so
    bytes/token = weight bytes + 2 * layers * kv_heads * head_dim * L_avg * bytes/elem,
achieved GB/s = bytes/token * tokens/s, and utilisation = achieved / peak, where peak is
measured here (a multi-threaded sum over 512 MB, best of several) or given.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROMPT_SEED_TEXT = (
    "The history of computing is a story of abstractions stacked on abstractions: switches "
    "became gates, gates became adders, adders became processors, and processors became the "
    "substrate for languages, operating systems and networks. "
)
HF_NAME = "HF transformers fp32"
LLAMA_NAME = "llama.cpp"
QUANT_LABEL = {"none": "fp32", "int8": "int8", "int4": "int4"}


@dataclass
class Sample:
    prefill_s: float
    decode_s: float
    tokens: list[int]


@dataclass
class EngineReport:
    name: str
    prefill_tok_s: float = 0.0
    decode_tok_s: float = 0.0
    prefill_samples: list[float] = field(default_factory=list)
    decode_samples: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    base_rss_mb: float = 0.0
    load_s: float = 0.0
    weight_bytes: int = 0
    kv_bytes_per_token: int = 0  # cache bytes read per step, per context token
    decode_gb_s: float = 0.0
    bandwidth_util: float = 0.0
    tokens: list[int] = field(default_factory=list)
    error: str | None = None


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1 / 1024 if os.uname().sysname == "Linux" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def prompt_ids(tokenizer: Any, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        ids += tokenizer.encode(PROMPT_SEED_TEXT, add_special_tokens=False)
    return ids[:n]


# --- engines (each runs inside its worker process) ----------------------------------------------


class _Glassformer:
    def __init__(self, path: Path, quant: str, ids: list[int], new_tokens: int) -> None:
        from glassformer.generation import load
        from glassformer.inference import Decoder, weight_bytes

        self.model, _ = load(path, quant=quant)
        self.decoder = Decoder(self.model, max_seq_len=len(ids) + new_tokens + 1)
        self.ids, self.new_tokens = ids, new_tokens
        cfg = self.model.config
        self.weight_bytes = weight_bytes(self.model)
        self.kv_bytes = 2 * cfg.n_layers * (cfg.n_kv_heads or 0) * (cfg.head_dim or 0) * 4
        self.decoder.greedy([ids[:16]], 4)  # warm-up: kernels compiled, buffers touched

    def run(self) -> Sample:
        out = self.decoder.greedy([self.ids], self.new_tokens)
        return Sample(out.prefill_seconds, out.decode_seconds, out.tokens[0])


class _HF:
    def __init__(self, path: Path, ids: list[int], new_tokens: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
        self.ids, self.new_tokens = ids, new_tokens
        # transformers 5.x renamed `past_key_values` to `cache`; older versions only know the
        # former.
        params = inspect.signature(self.model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        cfg = self.model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * 4
        with torch.inference_mode():
            self.model(torch.tensor([ids[:16]]))

    def run(self) -> Sample:
        torch = self.torch
        x = torch.tensor([self.ids])
        with torch.inference_mode():
            start = time.perf_counter()
            out = self.model(x, use_cache=True, logits_to_keep=1)
            prefill = time.perf_counter() - start
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            tokens = [int(token)]
            start = time.perf_counter()
            for _ in range(self.new_tokens - 1):
                out = self.model(token, **{self.cache_kw: past}, use_cache=True)
                past = out.past_key_values
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                tokens.append(int(token))
            decode = time.perf_counter() - start
        return Sample(prefill, decode, tokens)


@contextlib.contextmanager
def _no_extra_bufts() -> Iterator[None]:
    """llama.cpp's extra weight buffer types off (`use_extra_bufts`, llama.cpp's --no-repack)
    for the models loaded inside: on a CPU that advertises AMX where the OS has not enabled
    its tile state (a VM), llama.cpp puts the weights in AMX buffers and its prompt products
    fault on `tilezero` (SIGILL). Off, every product runs on its AVX2/AVX-512 kernels.
    llama_cpp.Llama takes no such argument; it reads the low-level default parameters."""
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = default


class _LlamaCpp:
    def __init__(self, path: Path, ids: list[int], new_tokens: int, threads: int) -> None:
        import llama_cpp

        from glassformer.loaders.gguf import config_from_header, read_header

        with _no_extra_bufts():
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=len(ids) + new_tokens + 8,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=len(ids),
                verbose=False,
            )
        self.ids, self.new_tokens = ids, new_tokens
        header = read_header(path, decode_arrays=False)
        self.weight_bytes = sum(
            i.nbytes
            for name, i in header.tensors.items()
            if name != "token_embd.weight" or "output.weight" not in header.tensors
        )
        cfg = config_from_header(header)
        # llama.cpp's cache is f16: 2 bytes per element
        self.kv_bytes = 2 * cfg.n_layers * (cfg.n_kv_heads or 0) * (cfg.head_dim or 0) * 2
        self.llm.eval(ids[:16])

    def run(self) -> Sample:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(self.ids)
        prefill = time.perf_counter() - start
        tokens: list[int] = []
        start = time.perf_counter()
        first = None
        for token in self.llm.generate([], top_k=1, top_p=1.0, temp=0.0, reset=False):
            tokens.append(token)
            if first is None:
                # The first token is sampled from the prefill's logits: the decode clock starts
                # after it, as it does for the other engines.
                first = time.perf_counter()
            if len(tokens) == self.new_tokens:
                break
        decode = time.perf_counter() - (first or start)
        return Sample(prefill, decode, tokens)


def _worker(conn: Any, spec: dict[str, Any]) -> None:
    """Load one engine, then answer "run" with a Sample until "stop"."""
    import torch

    torch.set_num_threads(spec["threads"])
    base = _rss_mb()
    try:
        start = time.perf_counter()
        path, ids, n = Path(spec["path"]), spec["ids"], spec["new_tokens"]
        kind = spec["kind"]
        if kind == "hf":
            engine: Any = _HF(path, ids, n)
        elif kind == "llama.cpp":
            engine = _LlamaCpp(path, ids, n, spec["threads"])
        else:
            engine = _Glassformer(path, spec["quant"], ids, n)
        load_s = time.perf_counter() - start
        conn.send(("ready", {"load_s": load_s, "weight_bytes": engine.weight_bytes,
                             "kv_bytes": engine.kv_bytes, "base_rss_mb": base}))  # fmt: skip
    except Exception as err:  # an engine that cannot load is reported, not fatal
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while True:
        msg = conn.recv()
        if msg == "stop":
            conn.send(("rss", _rss_mb()))
            return
        sample = engine.run()
        conn.send(("sample", asdict(sample)))


# --- the parent: interleaved rounds -------------------------------------------------------------


def _recv(conn: Any, proc: Any, doing: str) -> tuple[str, Any]:
    """A worker's next message, or ("error", ...) when the worker died (a peer library that
    crashes the process, e.g. on an instruction the CPU advertises but the VM does not run)."""
    try:
        return conn.recv()
    except EOFError:
        proc.join()
        return "error", f"the worker process died while {doing} (exit code {proc.exitcode})"


def measure_bandwidth(threads: int, mbytes: int = 512, repeats: int = 5) -> float:
    """Best read bandwidth (GB/s) of a `threads`-thread sum over `mbytes` of float32."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.ones(mbytes * 2**20 // 4)
        a.sum()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a.sum()
            best = min(best, time.perf_counter() - start)
        return a.numel() * 4 / best / 1e9
    finally:
        torch.set_num_threads(old)


def run(
    model: str = "smollm2-135m-instruct",
    quants: tuple[str, ...] = ("none", "int8", "int4"),
    peers: bool = True,
    threads: int = 2,
    prompt_tokens: int = 512,
    new_tokens: int = 128,
    rounds: int = 3,
    bandwidth_gbs: float | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Benchmark; returns a JSON-able summary (see `format_table`)."""
    from glassformer.loaders.resolve import resolve
    from glassformer.tokenizer import load_tokenizer

    path = resolve(model)
    ids = prompt_ids(load_tokenizer(path), prompt_tokens)
    specs: list[tuple[str, dict[str, Any]]] = [
        (f"glassformer {QUANT_LABEL[q]}", {"kind": "glassformer", "quant": q}) for q in quants
    ]
    if peers:
        specs.append((HF_NAME, {"kind": "hf"}))
        if path.is_file():
            specs.append((LLAMA_NAME, {"kind": "llama.cpp"}))
    peak_bw = bandwidth_gbs or measure_bandwidth(threads)
    ctx = mp.get_context("spawn")
    workers: dict[str, Any] = {}
    reports: dict[str, EngineReport] = {}
    for name, spec in specs:
        if spec["kind"] == "llama.cpp":
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                reports[name] = EngineReport(name, error="llama-cpp-python is not installed")
                continue
            name = f"{LLAMA_NAME} ({_gguf_type(path)})"
        if spec["kind"] == "hf":
            import importlib.util

            if importlib.util.find_spec("transformers") is None:
                reports[name] = EngineReport(name, error="transformers is not installed")
                continue
        full = {**spec, "path": str(path), "ids": ids, "new_tokens": new_tokens,
                "threads": threads}  # fmt: skip
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, full), daemon=True)
        proc.start()
        child.close()  # so that a worker that dies ends our recv() with EOFError
        # Load one at a time: loading is not what is measured, and it would disturb the others.
        kind, info = _recv(parent, proc, "loading")
        report = EngineReport(name)
        if kind == "error":
            report.error = info
            proc.join()
        else:
            report.load_s, report.weight_bytes = info["load_s"], info["weight_bytes"]
            report.kv_bytes_per_token, report.base_rss_mb = info["kv_bytes"], info["base_rss_mb"]
            workers[name] = (proc, parent)
        reports[name] = report
        if log:
            log(f"loaded {name}" + (f" ({report.error})" if report.error else ""))
    samples: dict[str, list[Sample]] = {name: [] for name in workers}
    for r in range(rounds):
        for name, (proc, conn) in list(workers.items()):
            conn.send("run")
            kind, sample = _recv(conn, proc, "running")
            if kind == "error":
                reports[name].error = sample
                del workers[name]
                continue
            samples[name].append(Sample(**sample))
        if log:
            log(f"round {r + 1}/{rounds} done")
    for name, (proc, conn) in workers.items():
        conn.send("stop")
        _, rss = conn.recv()
        proc.join()
        rep = reports[name]
        rep.peak_rss_mb = rss
        rep.prefill_samples = [prompt_tokens / s.prefill_s for s in samples[name]]
        rep.decode_samples = [(new_tokens - 1) / s.decode_s for s in samples[name]]
        rep.prefill_tok_s = max(rep.prefill_samples)
        rep.decode_tok_s = max(rep.decode_samples)
        rep.tokens = samples[name][0].tokens
        l_avg = prompt_tokens + new_tokens / 2
        per_token = rep.weight_bytes + rep.kv_bytes_per_token * l_avg
        rep.decode_gb_s = per_token * rep.decode_tok_s / 1e9
        rep.bandwidth_util = rep.decode_gb_s / peak_bw
    return {
        "model": model,
        "path": str(path),
        "threads": threads,
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "rounds": rounds,
        "peak_bandwidth_gb_s": peak_bw,
        "bandwidth_measured": bandwidth_gbs is None,
        "engines": {name: asdict(rep) for name, rep in reports.items()},
    }


def _gguf_type(path: Path) -> str:
    """The dominant block type of a GGUF's matrices, e.g. Q4_1."""
    from collections import Counter

    from glassformer.loaders.gguf import read_header

    header = read_header(path, decode_arrays=False)
    counts = Counter(i.type_name for i in header.tensors.values() if len(i.shape) == 2)
    return counts.most_common(1)[0][0] if counts else "?"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: tokens/s, ratios to HF and llama.cpp, memory and bandwidth."""
    engines = summary["engines"]
    hf = engines.get(HF_NAME, {})
    llama = next((v for k, v in engines.items() if k.startswith(LLAMA_NAME)), {})
    bw = summary["peak_bandwidth_gb_s"]
    lines = [
        f"{Path(summary['path']).name}: {summary['prompt_tokens']}-token prompt, "
        f"{summary['new_tokens']} new tokens, greedy, {summary['threads']} threads, "
        f"best of {summary['rounds']} interleaved rounds",
        f"peak read bandwidth {'measured' if summary['bandwidth_measured'] else 'given'}: "
        f"{bw:.1f} GB/s",
        "",
        f"{'engine':28s}{'prefill':>9s}{'decode':>9s}{'prefill':>9s}{'decode':>9s}"
        f"{'decode':>10s}{'peak':>8s}{'weights':>9s}{'decode':>8s}{'of':>6s}",
        f"{'':28s}{'tok/s':>9s}{'tok/s':>9s}{'/ HF':>9s}{'/ HF':>9s}{'/ llama':>10s}"
        f"{'RSS MB':>8s}{'MB':>9s}{'GB/s':>8s}{'peak':>6s}",
    ]
    for name, e in engines.items():
        if e.get("error"):
            lines.append(f"{name:28s}  not run: {e['error']}")
            continue
        lines.append(
            f"{name:28s}{e['prefill_tok_s']:9.1f}{e['decode_tok_s']:9.1f}"
            f"{_ratio(e['prefill_tok_s'], hf.get('prefill_tok_s', 0)):>9s}"
            f"{_ratio(e['decode_tok_s'], hf.get('decode_tok_s', 0)):>9s}"
            f"{_ratio(e['decode_tok_s'], llama.get('decode_tok_s', 0)):>10s}"
            f"{e['peak_rss_mb']:8.0f}{e['weight_bytes'] / 1e6:9.0f}{e['decode_gb_s']:8.1f}"
            f"{100 * e['bandwidth_util']:5.0f}%"
        )
    ours = {k: v for k, v in engines.items() if k.startswith("glassformer") and v.get("tokens")}
    fp32 = ours.get("glassformer fp32", {}).get("tokens")
    if fp32:
        notes = []
        if hf.get("tokens"):
            notes.append(f"fp32 greedy tokens equal HF's: {fp32 == hf['tokens']}")
        for name, e in ours.items():
            if name != "glassformer fp32":
                same = sum(a == b for a, b in zip(e["tokens"], fp32, strict=False))
                first = next(
                    (i for i, (a, b) in enumerate(zip(e["tokens"], fp32, strict=False)) if a != b),
                    None,
                )
                notes.append(
                    f"{name}: {same}/{len(fp32)} tokens equal fp32's"
                    + (f" (first difference at {first})" if first is not None else "")
                )
        lines += ["", *notes]
    return "\n".join(lines)


def main_json(summary: dict[str, Any]) -> str:
    slim = json.loads(json.dumps(summary))
    for e in slim["engines"].values():
        e.pop("tokens", None)
    return json.dumps(slim, indent=2)
