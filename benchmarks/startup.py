"""Start-up time of the command line, next to `python -c 'import torch'`.

    python benchmarks/startup.py                 # --help, explore of every preset, import torch
    python benchmarks/startup.py --repeats 5 --json

Each command runs in a fresh process `--repeats` times; the table gives the best and median wall
time and the median CPU time (user + system) of the child, which a busy machine disturbs less
than the wall clock. `explore` runs every preset once per repeat and reports the slowest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time


def _command() -> list[str]:
    exe = shutil.which("glassformer")
    return [exe] if exe else [sys.executable, "-m", "glassformer.cli"]


def _run(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _presets() -> list[str]:
    from glassformer.presets import PRESETS

    return sorted(PRESETS)


def measure(repeats: int, presets: list[str]) -> list[dict]:
    cli = _command()
    rows = []
    cases: list[tuple[str, list[list[str]]]] = [
        ("python -c 'import torch'", [[sys.executable, "-c", "import torch"]]),
        ("glassformer --help", [[*cli, "--help"]]),
        (
            f"glassformer explore PRESET --json (slowest of {len(presets)})",
            [[*cli, "explore", p, "--json"] for p in presets],
        ),
    ]
    for label, argvs in cases:
        walls, cpus = [], []
        for _ in range(repeats):
            results = [_run(argv) for argv in argvs]
            wall, cpu = max(results)  # the slowest command of the set
            walls.append(wall)
            cpus.append(cpu)
        rows.append(
            {
                "command": label,
                "best_s": min(walls),
                "median_s": statistics.median(walls),
                "median_cpu_s": statistics.median(cpus),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="*", help="Presets to explore (default: all).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.repeats, args.presets or _presets())
    if args.json:
        print(json.dumps({"repeats": args.repeats, "cpus": os.cpu_count(), "rows": rows}))
        return
    print(f"{'command':<52} {'best s':>7} {'median s':>9} {'cpu s':>6}")
    for row in rows:
        print(
            f"{row['command']:<52} {row['best_s']:>7.2f} {row['median_s']:>9.2f} "
            f"{row['median_cpu_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
