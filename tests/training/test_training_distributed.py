"""Data parallelism: the same command under torchrun with 2 gloo processes gives the losses
of 1 process with the same global batch (DDP, and FSDP2 with --fsdp)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from glassformer.training import checkpoint as ckpt

from .conftest import read_losses

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)

STEPS = 6


def _args(data: Path, out: Path, micro: int) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(out), "--seq-len", "32",
        "--batch-size", "8", "--micro-batch-size", str(micro), "--max-steps", str(STEPS),
        "--lr", "3e-3", "--eval-every", "3", "--eval-batches", "1", "--sample-tokens", "4",
        "--checkpoint-every", "3", "--no-progress", "--no-export", "--json",
    ]  # fmt: skip


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def _launcher(tmp: Path) -> Path:
    script = tmp / "launch.py"
    script.write_text("from glassformer.cli import main\nmain()\n")
    return script


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("single")
    # one process: 4 micro-batches of 2 make the global batch of 8
    _run([sys.executable, str(_launcher(out)), *_args(tiny_data, out / "run", 2)])
    return out / "run"


def _torchrun(tmp: Path, data: Path, *extra: str, status: str = "completed") -> Path:
    out = tmp / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(_launcher(tmp)), *_args(data, out, 2), *extra,
    ]  # fmt: skip
    summary = _run(cmd)
    assert summary["world_size"] == 2 and summary["status"] == status
    return out


def _compare(single: Path, multi: Path) -> None:
    a, b = read_losses(single), read_losses(multi)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    va = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    vb = [json.loads(x) for x in (multi / "metrics.jsonl").read_text().splitlines()]
    val_a = [r["val_loss"] for r in va if "val_loss" in r]
    val_b = [r["val_loss"] for r in vb if "val_loss" in r]
    assert len(val_a) == len(val_b) == 2
    assert all(abs(x - y) < 1e-5 for x, y in zip(val_a, val_b, strict=True))
    wa = ckpt.load_checkpoint(ckpt.checkpoint_path(single, STEPS))["model"]
    wb = ckpt.load_checkpoint(ckpt.checkpoint_path(multi, STEPS))["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max() < 1e-4, k


def test_ddp_two_processes_equal_one(tmp_path: Path, tiny_data: Path, single: Path) -> None:
    multi = _torchrun(tmp_path, tiny_data)
    _compare(single, multi)
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(multi, STEPS))
    assert state["world_size"] == 2 and len(state["rng"]) == 2


@pytest.mark.slow
def test_fsdp2_two_processes_equal_one(tmp_path: Path, tiny_data: Path, single: Path) -> None:
    multi = _torchrun(tmp_path, tiny_data, "--fsdp")
    _compare(single, multi)


@pytest.mark.slow
def test_fsdp2_stop_and_resume(tmp_path: Path, tiny_data: Path, single: Path) -> None:
    """Sharded checkpoints gather to one file and scatter back on resume."""
    _torchrun(tmp_path, tiny_data, "--fsdp", "--stop-after", "3", status="stopped")
    multi = _torchrun(tmp_path, tiny_data, "--fsdp", "--resume")
    _compare(single, multi)
