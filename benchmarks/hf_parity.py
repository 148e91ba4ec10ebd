"""How close glassformer comes to HF transformers, family by family: the table behind the
parity tests (tests/core/test_hf_parity.py), printed with the numbers.

For every tiny config in tests/families.py (perturbed random HF models, fp32, batch 2, SEQ
tokens, past every window and chunk): the largest absolute logit difference against HF's own
forward on each attention path (native, sdpa, eager), and that of cached decoding (a prefill of
11 tokens, single steps to 30, then one chunk to the end) against our forward over the sequence
so far. The reference for cached decoding is the prefix, not the whole sequence, because a
LongRoPE model (phi3-longrope) picks its factor set by the last position of each call, as HF
does; for every other family the two are the same.

    python benchmarks/hf_parity.py [NAME ...] [--json]      (run from the repository root)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.families

import glassformer as gf
from tests.families import SEQ, TINY_HF_CONFIGS, VOCAB, build_hf

IMPLS = ("native", "sdpa", "eager")


def errors(name: str) -> dict[str, float]:
    hf = build_hf(name)
    ours = gf.from_hf(hf).eval()
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    out: dict[str, float] = {}
    with torch.no_grad():
        expected = hf(ids).logits
        for impl in IMPLS:
            ours.set_attention_impl(impl)
            out[impl] = (ours(ids) - expected).abs().max().item()
        ours.set_attention_impl("native")
        cache = ours.new_cache(batch_size=2, max_seq_len=SEQ)
        spans = [(0, 11), *((t, t + 1) for t in range(11, 30)), (30, SEQ)]
        out["decode"] = max(
            (ours(ids[:, s:e], cache) - ours(ids[:, :e])[:, s:e]).abs().max().item()
            for s, e in spans
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="tiny configs (default: all)")
    parser.add_argument("--json", action="store_true", help="print {name: {path: error}}")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(TINY_HF_CONFIGS))
    if unknown:
        parser.error(f"unknown config(s) {unknown}; known: {', '.join(sorted(TINY_HF_CONFIGS))}")
    results = {}
    if not args.json:
        print(f"{'config':28s}" + "".join(f"{k:>10s}" for k in (*IMPLS, "decode")))
    for name in args.names or sorted(TINY_HF_CONFIGS):
        results[name] = errors(name)
        if not args.json:
            print(f"{name:28s}" + "".join(f"{v:10.2e}" for v in results[name].values()), flush=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
