"""Prefill and decode speed on the embedded SmolLM2-135M-Instruct: glassformer fp32, int8 and
int4 next to HF transformers (fp32) and llama.cpp (the GGUF's own Q4_1 blocks), same prompt,
same thread count, measured in one run and printed as ratios.

    python benchmarks/generate.py [--model smollm2-135m-instruct] [--threads 2]
                                  [--prompt-tokens 512] [--new-tokens 128] [--rounds 3] [--json]

This is `glassformer bench generate` (the measurement lives in `glassformer.inference.bench`:
one worker process per engine, interleaved rounds, best of each, peak RSS, bandwidth use).
HF transformers loads the same GGUF dequantised to float32. llama.cpp is installed by the
benchmark's user, not by the project: `pip install llama-cpp-python` (builds from source in
about 6 minutes); a peer that is not installed is reported as missing.
"""

from __future__ import annotations

import argparse
import sys

from glassformer.inference import QUANT_MODES
from glassformer.inference.bench import format_table, main_json, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quant", action="append", choices=QUANT_MODES, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="glassformer only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    summary = run(
        args.model,
        tuple(args.quant or QUANT_MODES),
        peers=not args.no_peers,
        threads=args.threads,
        prompt_tokens=args.prompt_tokens,
        new_tokens=args.new_tokens,
        rounds=args.rounds,
        log=None if args.json else lambda msg: print(msg, file=sys.stderr),
    )
    print(main_json(summary) if args.json else format_table(summary))


if __name__ == "__main__":
    main()
