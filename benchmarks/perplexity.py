"""Perplexity of the weight-only quantised modes on held-out prose, against float32.

The quality guard of `glassformer.load(..., quant=...)`: the whole of `benchmarks/data/heldout.txt`
(see its README: original text no model has seen) is encoded once and scored by every mode on the
same non-overlapping windows (each opened with BOS where the tokenizer adds one), so only the
weights differ. Modes: float32 (the plain model), none (float32 with fused modules), int8
(per channel), int4 (group-wise: a GGUF's own Q4 blocks, its >4-bit tensors at int8) and, for
gemma-3-270m, int4-strict (every matrix at int4; for reference, no guard). Guards, relative to
float32: int8 within 1%, int4 within 5%. The exit status is 1 if a guard fails.

    python benchmarks/perplexity.py [--model smollm2-135m-instruct] [--window 512]
                                    [--max-tokens N] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"
GUARD_PCT = {"int8": 1.0, "int4": 5.0}  # max perplexity rise vs float32 (int4-strict: none)
MIXED_MODELS = ("gemma-3-270m",)  # models whose GGUF mixes >4-bit tensors in (Q4_K_M)


@dataclass
class Row:
    mode: str
    tokens: int  # predicted tokens
    windows: int
    nll: float
    ppl: float
    rel_pct: float  # perplexity change vs float32, in %
    guard_pct: float | None
    passed: bool | None  # None: no guard for this mode
    weight_bytes: int
    load_s: float
    eval_s: float


def loaders(path: Path, mixed: bool) -> dict[str, Callable[[], torch.nn.Module]]:
    """Mode name -> a function building that model (one at a time, to keep memory down)."""
    import glassformer as gf
    from glassformer.inference.gguf_direct import load_gguf_quantized

    modes: dict[str, Callable[[], torch.nn.Module]] = {
        "float32": lambda: gf.load(path)[0],
        "none": lambda: gf.load(path, quant="none")[0],
        "int8": lambda: gf.load(path, quant="int8")[0],
        "int4": lambda: gf.load(path, quant="int4")[0],
    }
    if mixed:  # what `quant="int4"` would be without following the file's precision choices
        modes["int4-strict"] = lambda: load_gguf_quantized(path, "int4", mixed=False)
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=None, help="score only the first N")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from glassformer.inference import weight_bytes
    from glassformer.inference.evaluate import perplexity
    from glassformer.loaders.resolve import resolve
    from glassformer.tokenizer import load_tokenizer

    path = resolve(args.model)
    tok = load_tokenizer(path)
    ids = tok.encode(HELDOUT.read_text(), add_special_tokens=False)
    # Each window starts with BOS where the tokenizer adds one (Gemma), as in training.
    bos_id = tok.bos_id if tok.add_bos else None
    ids = ids[: args.max_tokens] if args.max_tokens else ids
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))

    rows: list[Row] = []
    for mode, build in loaders(path, args.model in MIXED_MODELS).items():
        start = time.perf_counter()
        model = build().eval()
        loaded = time.perf_counter()
        result = perplexity(model, ids, window=args.window, bos_id=bos_id)
        done = time.perf_counter()
        base = rows[0].ppl if rows else result.ppl
        rel_pct = 100.0 * (result.ppl / base - 1.0)
        guard = GUARD_PCT.get(mode)
        rows.append(
            Row(
                mode=mode,
                tokens=result.tokens,
                windows=result.windows,
                nll=result.nll,
                ppl=result.ppl,
                rel_pct=rel_pct,
                guard_pct=guard,
                passed=None if guard is None else rel_pct <= guard,
                weight_bytes=weight_bytes(model),
                load_s=loaded - start,
                eval_s=done - loaded,
            )
        )
        log(f"{mode}: ppl {result.ppl:.4f} ({done - start:.1f} s)")
        del model
        gc.collect()

    ok = all(row.passed is not False for row in rows)
    if args.json:
        report = {
            "config": {**vars(args), "path": str(path), "text_tokens": len(ids)},
            "results": [asdict(row) for row in rows],
            "pass": ok,
        }
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{args.model}: {len(ids)} held-out tokens, windows of {args.window}"
            f"{' opened by BOS' if bos_id is not None else ''}, {args.threads} threads"
        )
        print(
            f"{'mode':12s}{'tokens':>8s}{'perplexity':>12s}{'vs fp32':>10s}"
            f"{'guard':>8s}{'result':>8s}{'weights MB':>12s}{'time s':>8s}"
        )
        for row in rows:
            guard = "-" if row.guard_pct is None else f"{row.guard_pct:.0f}%"
            result = "-" if row.passed is None else ("pass" if row.passed else "FAIL")
            print(
                f"{row.mode:12s}{row.tokens:8d}{row.ppl:12.4f}{row.rel_pct:+9.2f}%"
                f"{guard:>8s}{result:>8s}{row.weight_bytes / 1e6:12.1f}"
                f"{row.load_s + row.eval_s:8.1f}"
            )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
