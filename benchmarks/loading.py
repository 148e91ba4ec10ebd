"""GGUF loading time: glassformer's header reader and loader, against `gguf` and HF transformers.

For each model: `read_header` with the metadata arrays decoded and skipped over, the same file
through `gguf.GGUFReader` (the peer for the header: it builds a numpy view of every element of
every metadata array), `config_from_gguf` (header, Config, tensor checks) and `load_gguf`
(every tensor dequantised to float32), each the best of `--repeat` runs. `--hf` adds HF
transformers' `from_pretrained(dir, gguf_file=...)` of the same file, run once (it takes tens of
seconds). Nothing here gates a test: wall-clock figures drift between machines and with load.

    python benchmarks/loading.py [--models smollm2-135m-instruct gemma-3-270m] [--repeat 3]
                                 [--threads 2] [--no-reader] [--hf] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str, args: argparse.Namespace) -> dict[str, object]:
    from glassformer.loaders.gguf import config_from_gguf, load_gguf, read_header
    from glassformer.loaders.resolve import resolve

    path = resolve(name)
    result: dict[str, object] = {"model": name, "file": path.name}
    result["read_header_s"] = best_of(lambda: read_header(path), args.repeat)
    result["read_header_skip_arrays_s"] = best_of(
        lambda: read_header(path, decode_arrays=False), args.repeat
    )
    if not args.no_reader:
        from gguf import GGUFReader

        result["gguf_reader_s"] = best_of(lambda: GGUFReader(path), 1)
    result["config_from_gguf_s"] = best_of(lambda: config_from_gguf(path), args.repeat)
    result["load_gguf_s"] = best_of(lambda: load_gguf(path), args.repeat)
    if args.hf:
        from transformers import AutoModelForCausalLM

        result["hf_from_pretrained_s"] = best_of(
            lambda: AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name), 1
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma-3-270m"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-reader", action="store_true", help="skip gguf.GGUFReader")
    parser.add_argument("--hf", action="store_true", help="add HF from_pretrained(gguf_file=)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = [measure(name, args) for name in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(f"{result['model']} ({result['file']})")
        for key, value in result.items():
            if isinstance(value, float):
                print(f"  {key:28s} {value:8.3f}")


if __name__ == "__main__":
    main()
