"""The thread count: cores from the affinity mask and the cgroup quota, less the busy ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glassformer import threads


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)


def _cgroup(tmp_path: Path, v2: str | None = None, v1: tuple[int, int] | None = None) -> Path:
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


@pytest.mark.parametrize(
    ("v2", "v1", "expected"),
    [
        (None, None, 8),  # no cgroup files: the affinity mask
        ("max 100000", None, 8),  # v2 without a quota
        ("250000 100000", None, 2),  # --cpus 2.5: two whole cores
        ("50000 100000", None, 1),  # half a core: still one thread
        (None, (300000, 100000), 3),  # cgroup v1
        (None, (-1, 100000), 8),  # v1 without a quota
        ("1600000 100000", None, 8),  # a quota above the mask: the mask
    ],
)
def test_available_cores_takes_the_smaller_of_mask_and_quota(
    eight_cpus: None, tmp_path: Path, v2: str | None, v1: tuple[int, int] | None, expected: int
) -> None:
    assert threads.available_cores(_cgroup(tmp_path, v2, v1)) == expected


def test_affinity_mask_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5})
    assert threads.available_cores(tmp_path) == 2


@pytest.mark.parametrize(
    ("running", "own", "expected_busy"),
    [(1, 1, 0.0), (2, 1, 1.0), (11, 1, 10.0), (3, 3, 0.0)],
)
def test_busy_cores_subtracts_this_process(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    running: int,
    own: int,
    expected_busy: float,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "own_runnable", lambda: own)
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"9.50 4.00 2.00 {running}/400 12345\n")
    assert threads.busy_cores(2, samples=3, loadavg=loadavg) == expected_busy


def test_busy_cores_scales_a_machine_wide_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """/proc/loadavg counts the whole machine: 9 other tasks on 32 CPUs are 9 * 4/32 of a
    4-core container's share."""
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    monkeypatch.setattr(threads, "own_runnable", lambda: 1)
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("1.0 1.0 1.0 10/400 1\n")
    assert threads.busy_cores(4, samples=1, loadavg=loadavg) == pytest.approx(9 * 4 / 32)


@pytest.mark.parametrize(
    ("cores", "busy", "expected"),
    [(2, 0.0, 2), (2, 1.0, 1), (2, 10.0, 1), (8, 2.4, 6), (8, 2.6, 5), (1, 0.0, 1)],
)
def test_choose_threads_backs_off_but_keeps_one(cores: int, busy: float, expected: int) -> None:
    assert threads.choose_threads(cores, busy) == expected


def test_unreadable_loadavg_means_idle(tmp_path: Path) -> None:
    assert threads.busy_cores(4, samples=2, loadavg=tmp_path / "missing") == 0.0


def test_own_runnable_reads_task_states(tmp_path: Path) -> None:
    for tid, state in [(1, "R"), (2, "S"), (3, "R"), (4, "D")]:
        (tmp_path / str(tid)).mkdir()
        # the command name may hold spaces and parentheses: the state follows the last ')'
        (tmp_path / str(tid) / "stat").write_text(f"{tid} (a (b) c) {state} 1 2 3\n")
    assert threads.own_runnable(tmp_path) == 2


def test_configure_threads_sets_torch_and_prefers_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(threads, "available_cores", lambda: 4)
        monkeypatch.setattr(threads, "busy_cores", lambda cores: 3.0)
        assert threads.configure_threads() == 1 == torch.get_num_threads()
        assert threads.configure_threads(3) == 3 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure_threads() == 2 == torch.get_num_threads()
        with pytest.raises(ValueError, match="threads: must be >= 1, got 0"):
            threads.configure_threads(0)
    finally:
        torch.set_num_threads(old)


def test_native_kernels_follow_torch() -> None:
    from glassformer.kernels import threads as kernel_threads

    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert kernel_threads() == 1
    finally:
        torch.set_num_threads(old)


def test_limit_spinning_acts_before_torch_only() -> None:
    """In a fresh interpreter GOMP_SPINCOUNT is set before torch loads; an explicit wait policy
    is left alone; once torch is loaded the call reports it is too late."""
    code = (
        "import os, sys; from glassformer.threads import limit_spinning; "
        "print(limit_spinning(), os.environ.get('GOMP_SPINCOUNT')); import torch; "
        "print(limit_spinning())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", threads.SPINCOUNT, "False"], out.stderr
    env["OMP_WAIT_POLICY"] = "active"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "None", "False"], out.stderr
