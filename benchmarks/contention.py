"""Decode speed alone and beside busy processes: does a shared CPU collapse decoding?

    git worktree add /tmp/gf-base <commit>                     # the code to compare against
    python benchmarks/contention.py --base /tmp/gf-base/src   # base vs this tree
    python benchmarks/contention.py --modes none int4 default -n 32 --competitors 1 --rounds 2

Each measurement is one fresh `glassformer generate --ignore-eos --json -n N "Once upon a
time"` process (SmolLM2-135M-Instruct unless --model), with the tree under test first on
PYTHONPATH and the OpenMP variables (OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT) removed
from its environment, so each tree runs with its own defaults. "beside" starts `--competitors`
processes that spin in a Python loop (`while True: pass`) before the model loads, and stops them
after. Modes: none (float32 fast path), int8, int4, plain (the plain model: `--plain` here,
no `--quant` in a tree from before that option), default (no option at all: what a new user
gets). Rounds interleave the trees; the table shows each cell's median decode tok/s and the
ratio beside / alone: the share of its speed a run keeps beside the competitors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Once upon a time"
SPIN = "while True: pass"


def _env(src: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTHONPATH")
    }
    env["PYTHONPATH"] = str(src)
    return env


def _mode_args(mode: str, src: Path) -> list[str]:
    if mode == "default":
        return []
    if mode == "plain":
        help_text = subprocess.run(
            [sys.executable, "-m", "glassformer.cli", "generate", "--help"],
            env=_env(src),
            capture_output=True,
            text=True,
        ).stdout
        return ["--plain"] if "--plain" in help_text else []
    return ["--quant", mode]


def decode_speed(src: Path, mode: str, model: str, tokens: int, competitors: int) -> dict:
    """One generate process's decode tok/s (and its thread count where it reports one)."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
        for _ in range(competitors)
    ]
    try:
        time.sleep(0.3 if spinners else 0.0)  # let them be running when the model starts
        argv = [
            sys.executable, "-m", "glassformer.cli", "generate", "--ignore-eos", "--json",
            "-n", str(tokens), "--model", model, *_mode_args(mode, src), PROMPT,
        ]  # fmt: skip
        proc = subprocess.run(argv, env=_env(src), capture_output=True, text=True)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"tok_s": out["decode_tokens_per_s"], "threads": out.get("threads")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="src/ of the tree to compare against")
    parser.add_argument("--modes", nargs="+", default=["none", "int4"])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("-n", "--tokens", type=int, default=32)
    parser.add_argument("--competitors", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    trees = ([("base", args.base)] if args.base else []) + [("this tree", ROOT / "src")]
    conditions = [("alone", 0), (f"beside {args.competitors}", args.competitors)]
    samples: dict[tuple[str, str, str], list[dict]] = {}
    for r in range(args.rounds):
        for mode in args.modes:
            for tree, src in trees:
                for condition, competitors in conditions:
                    got = decode_speed(src, mode, args.model, args.tokens, competitors)
                    samples.setdefault((tree, mode, condition), []).append(got)
                    print(
                        f"round {r + 1}: {tree:<9} {mode:<7} {condition:<9} "
                        f"{got['tok_s']:6.1f} tok/s (threads: {got['threads']})",
                        file=sys.stderr,
                    )
    rows = []
    for mode in args.modes:
        for tree, _ in trees:
            alone = statistics.median(s["tok_s"] for s in samples[(tree, mode, "alone")])
            busy_samples = samples[(tree, mode, conditions[1][0])]
            beside = statistics.median(s["tok_s"] for s in busy_samples)
            rows.append(
                {
                    "tree": tree,
                    "mode": mode,
                    "alone_tok_s": alone,
                    "beside_tok_s": beside,
                    "ratio": beside / alone if alone else 0.0,
                    "threads_beside": [s["threads"] for s in busy_samples],
                }
            )
    if args.json:
        print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}))
        return
    print(
        f"| tree | mode | alone tok/s | beside {args.competitors} busy tok/s | beside / alone "
        "| threads beside |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['tree']} | {row['mode']} | {row['alone_tok_s']:.1f} | "
            f"{row['beside_tok_s']:.1f} | {row['ratio']:.2f} | {row['threads_beside']} |"
        )


if __name__ == "__main__":
    main()
