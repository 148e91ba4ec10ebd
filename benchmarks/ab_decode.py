"""Decode (and prefill) speed of this working tree against another git revision, in one run.

A kernel change is judged by this: each side is a worker process importing glassformer from
its own tree (the base revision is checked out into a temporary git worktree), loaded once,
then asked for the same greedy generation (SmolLM2, 512 prompt tokens, 128 new) round after
round, alternately. It prints each side's best and median decode tokens/s, the median of the
within-round ratios, the same for the 512-token prefill, and whether both produced the same
tokens.

    python benchmarks/ab_decode.py --base HEAD~1 [--quant none|int8|int4] [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from glassformer.generation import load
from glassformer.inference.bench import _Glassformer, prompt_ids
from glassformer.loaders.resolve import resolve
path = resolve("smollm2-135m-instruct")
_, tokenizer = load(path)
engine = _Glassformer(path, sys.argv[1], prompt_ids(tokenizer, 512), 128)
print("ready", flush=True)
for _ in sys.stdin:
    sample = engine.run()
    print(json.dumps({"prefill_s": sample.prefill_s, "decode_s": sample.decode_s,
                      "tokens": sample.tokens}), flush=True)
"""


def start(src: Path, quant: str, threads: int) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, quant, str(threads)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the worker for {src} failed to load")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--quant", default="none", choices=("none", "int8", "int4"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base_tree),
             args.base], check=True,
        )  # fmt: skip
        try:
            sides = {"base": base_tree / "src", "this": ROOT / "src"}
            procs = {k: start(src, args.quant, args.threads) for k, src in sides.items()}
            seconds: dict[str, list[float]] = {k: [] for k in sides}  # decode
            prefill: dict[str, list[float]] = {k: [] for k in sides}
            tokens: dict[str, list[int]] = {}
            for _ in range(args.rounds):
                for name, proc in procs.items():
                    assert proc.stdin is not None and proc.stdout is not None
                    proc.stdin.write("run\n")
                    proc.stdin.flush()
                    sample = json.loads(proc.stdout.readline())
                    seconds[name].append(sample["decode_s"])
                    prefill[name].append(sample["prefill_s"])
                    tokens.setdefault(name, sample["tokens"])
            for proc in procs.values():
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False,
            )
    new = 128  # tokens generated per round (the first comes from prefill)
    report = {
        "base": args.base,
        "quant": args.quant,
        "tok_s_best": {k: (new - 1) / min(v) for k, v in seconds.items()},
        "tok_s_median": {k: (new - 1) / statistics.median(v) for k, v in seconds.items()},
        "ratio_this_over_base": statistics.median(
            b / t for b, t in zip(seconds["base"], seconds["this"], strict=True)
        ),
        "prefill_tok_s_best": {k: 512 / min(v) for k, v in prefill.items()},
        "prefill_ratio_this_over_base": statistics.median(
            b / t for b, t in zip(prefill["base"], prefill["this"], strict=True)
        ),
        "same_tokens": tokens["base"] == tokens["this"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"decode, quant {args.quant}, {args.rounds} alternating rounds, base = {args.base}")
    for k in seconds:
        best, med = report["tok_s_best"][k], report["tok_s_median"][k]
        print(f"  {k:5s} best {best:6.1f} tok/s, median {med:6.1f} tok/s")
    print(f"  this / base: {report['ratio_this_over_base']:.3f}x (median within-round ratio)")
    pre = report["prefill_tok_s_best"]
    print(
        f"prefill (512 tokens): base best {pre['base']:.1f} tok/s, this best {pre['this']:.1f}; "
        f"this / base {report['prefill_ratio_this_over_base']:.3f}x"
    )
    print(f"  same tokens: {report['same_tokens']}")


if __name__ == "__main__":
    main()
