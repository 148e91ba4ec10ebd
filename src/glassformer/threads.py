"""How many threads to compute with: the cores this process may use, less the ones other work
is busy on.

Decoding one token runs ~330 short parallel regions (`kernels/program.c`), each ending in a
barrier where every thread waits for the slowest. When another process holds one of the cores,
one of our threads waits for the scheduler at every barrier (a time slice, milliseconds), and a
waiting thread that spins burns the core the others need. On 2 cores beside one busy process,
2 threads decode at a fraction of the speed 1 thread keeps (`python benchmarks/contention.py`
measures both). So the default is:

    threads = max(1, cores - busy)

    cores  the CPUs this process may run on: its affinity mask (`taskset`, cpusets), capped by a
           cgroup CPU quota (`docker --cpus`: cpu.max, or cfs_quota_us / cfs_period_us)
    busy   other runnable tasks on those cores now: the kernel's count of runnable tasks
           (/proc/loadavg), less this process's own, scaled by cores / all CPUs (the count is
           machine-wide), the median of a few samples

torch's intra-op pool and the native kernels share one count: the kernels read
`torch.get_num_threads()`, and both run on the same libgomp pool. Idle OpenMP threads spin for
a while before sleeping (GOMP_SPINCOUNT, 300,000 iterations by default); `limit_spinning()`
shortens that to 10,000, before the OpenMP runtime starts, so a thread left waiting yields its
core 30 times sooner, while the back-to-back regions of a step still find their threads
spinning. Explicit settings win: a
`requested` count, `OMP_NUM_THREADS`, `GOMP_SPINCOUNT` or `OMP_WAIT_POLICY` in the environment.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

# Spin iterations an idle OpenMP thread waits before sleeping. Decode regions follow each other
# within microseconds, so a short spin still catches the next one while running alone.
SPINCOUNT = "10000"

CGROUP_ROOT = Path("/sys/fs/cgroup")
LOADAVG = Path("/proc/loadavg")


def limit_spinning() -> bool:
    """Shorten OpenMP's idle spinning (GOMP_SPINCOUNT) unless the user chose a policy.

    libgomp reads the variable once, when it starts, so this acts only before `import torch`;
    returns whether it could still act."""
    if "torch" in sys.modules:
        return False
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
    return True


def affinity_cores() -> int:
    """CPUs in this process's affinity mask (all CPUs where the platform has no masks)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def quota_cores(root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in cores (cgroup v2 `cpu.max`, else v1 cfs), or None when none."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cores(root: Path = CGROUP_ROOT) -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup quota."""
    cores = affinity_cores()
    quota = quota_cores(root)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def runnable_tasks(loadavg: Path = LOADAVG) -> int | None:
    """Tasks runnable on the whole machine right now (/proc/loadavg's fourth field, r/t)."""
    try:
        return int(loadavg.read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def own_runnable(tasks: Path = Path("/proc/self/task")) -> int:
    """This process's threads that are runnable now (state R), at least 1 (the caller)."""
    count = 0
    try:
        for task in tasks.iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            if stat[stat.rfind(")") + 2 :].startswith("R"):
                count += 1
    except OSError:
        pass
    return max(1, count)


def busy_cores(cores: int, samples: int = 5, loadavg: Path = LOADAVG) -> float:
    """Cores other work keeps busy now, of this process's `cores`: the median of `samples`
    readings 2 ms apart of the machine's runnable tasks less this process's own."""
    readings = []
    for i in range(samples):
        running = runnable_tasks(loadavg)
        if running is None:
            return 0.0
        readings.append(max(0, running - own_runnable()))
        if i + 1 < samples:
            time.sleep(0.002)
    machine = os.cpu_count() or cores
    return statistics.median(readings) * min(1.0, cores / machine)


def choose_threads(cores: int, busy: float) -> int:
    """max(1, cores - busy), rounding the busy share to the nearest core."""
    return max(1, cores - int(busy + 0.5))


def configure_threads(requested: int | None = None) -> int:
    """Set torch's (and so the native kernels') thread count; return it.

    `requested` (a `--threads` option) wins, then `OMP_NUM_THREADS`; otherwise the cores this
    process may use less the ones other work is busy on (see the module docstring). A request
    above the available cores is honoured (the caller asked), but only it."""
    import torch

    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads: must be >= 1, got {requested}")
        threads = requested
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    else:
        cores = available_cores()
        threads = choose_threads(cores, busy_cores(cores))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
