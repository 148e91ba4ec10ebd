"""Checkpoints: stop-and-resume reproduces the straight run bit for bit; a run killed with
SIGKILL in the middle of writing a checkpoint resumes from the previous one; a NaN loss stops
the run with its last good checkpoint intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glassformer.training import checkpoint as ckpt
from glassformer.training.tasks import LMTask
from glassformer.training.trainer import Trainer

from .conftest import logged_steps, read_losses, small_config


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("straight")
    Trainer(small_config(out, tiny_data, eval_every=6, eval_batches=1, sample_tokens=4)).train()
    return out


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run, 12))["model"]


def _assert_same_run(a: Path, b: Path) -> None:
    assert read_losses(a) == read_losses(b)  # exact float equality, every step
    assert logged_steps(b) == sorted(set(logged_steps(b)))  # each step once
    wa, wb = _final_weights(a), _final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_stop_and_resume_equals_straight_run(tmp_path: Path, tiny_data: Path, straight: Path):
    out = tmp_path / "split"
    first = Trainer(small_config(out, tiny_data, eval_every=6, eval_batches=1, sample_tokens=4,
                                 stop_after=6)).train()  # fmt: skip
    assert first["status"] == "stopped" and first["steps"] == 6
    second = Trainer(small_config(out, tiny_data, eval_every=6, eval_batches=1, sample_tokens=4,
                                  resume=True)).train()  # fmt: skip
    assert second["start_step"] == 6 and second["steps"] == 12
    _assert_same_run(straight, out)


def test_checkpoint_holds_the_whole_state(straight: Path) -> None:
    state = ckpt.load_checkpoint(ckpt.checkpoint_path(straight, 8))
    assert state["step"] == 8 and state["samples_seen"] == 8 * 4
    assert {"model", "optimizer", "scheduler", "rng", "config", "train_config"} <= state.keys()
    assert state["scheduler"]["last_epoch"] == 8
    assert len(state["rng"]) == 1 and "torch" in state["rng"][0]
    assert [s for s, _ in ckpt.list_checkpoints(straight)] == [4, 8, 12]


def _kill_while_writing(out: Path, data: Path, step: int, *extra: str) -> Path:
    """`glassformer train` (the straight run's options) in a subprocess, SIGKILLed halfway
    through writing its checkpoint of `step`; returns that checkpoint's partial temp file."""
    cmd = [
        sys.executable, "-c", "from glassformer.cli import main; main()", "train",
        "--data", str(data), "--out", str(out), "--seq-len", "32", "--batch-size", "4",
        "--max-steps", "12", "--lr", "3e-3", "--eval-every", "6", "--eval-batches", "1",
        "--sample-tokens", "4", "--checkpoint-every", "4", "--keep-checkpoints", "0",
        "--no-progress", "--no-export", "--no-plot", *extra,
    ]  # fmt: skip
    env = {**os.environ, "GLASSFORMER_CHECKPOINT_WRITE_DELAY": f"60@{step}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    partial = out / "checkpoints" / f".step_{step:08d}.pt.tmp"
    deadline = time.time() + 240
    try:
        # The checkpoint pauses halfway for a minute: kill it then.
        while not (partial.exists() and partial.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.time() < deadline, f"the run never reached its checkpoint of step {step}"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return partial


def _resume(out: Path, data: Path, **changes: object) -> dict:
    tc = small_config(out, data, eval_every=6, eval_batches=1, sample_tokens=4, resume=True,
                      **changes)  # fmt: skip
    return Trainer(tc).train()


@pytest.mark.slow
def test_sigkill_mid_write_resumes_from_previous(tmp_path: Path, tiny_data: Path, straight):
    out = tmp_path / "killed"
    partial = _kill_while_writing(out, tiny_data, 8)
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4]  # the half-written one is ignored
    _path, state = ckpt.latest_checkpoint(out)  # type: ignore[misc]
    assert state["step"] == 4
    with pytest.raises(Exception):  # noqa: B017 - the partial file is not a loadable checkpoint
        ckpt.load_checkpoint(partial)
    assert logged_steps(out) == list(range(1, 9))  # the killed run got to step 8
    summary = _resume(out, tiny_data)
    assert summary["start_step"] == 4 and summary["status"] == "completed"
    _assert_same_run(straight, out)


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_beside_another_run(
    tmp_path: Path, tiny_data: Path, straight: Path
) -> None:
    """Another run (seed 1) fills OUT; a new run (--force) is killed while writing its first
    checkpoint; --resume then starts that new run afresh, never the other one, and the log
    holds each step once."""
    out = tmp_path / "mixed"
    Trainer(small_config(out, tiny_data, seed=1, max_steps=8)).train()
    other = {p.name: p.read_bytes() for _, p in ckpt.list_checkpoints(out)}
    _kill_while_writing(out, tiny_data, 4, "--force")
    (aside,) = (out / "previous").iterdir()  # the other run, moved aside whole
    moved = {p.name: p.read_bytes() for _, p in ckpt.list_checkpoints(aside)}
    assert moved == other and len(other) == 2
    assert ckpt.list_checkpoints(out) == [] and logged_steps(out) == [1, 2, 3, 4]
    summary = _resume(out, tiny_data)
    assert summary["start_step"] == 0 and summary["status"] == "completed"
    assert logged_steps(out) == list(range(1, 13))
    _assert_same_run(straight, out)
    assert logged_steps(aside) == list(range(1, 9))  # the other run's log went with it


def test_a_new_run_refuses_another_runs_checkpoints(straight: Path, tiny_data: Path) -> None:
    with pytest.raises(ValueError, match=r"another run's checkpoints .*--resume.*--force"):
        Trainer(small_config(straight, tiny_data))
    assert [s for s, _ in ckpt.list_checkpoints(straight)] == [4, 8, 12]


def test_unreadable_checkpoints_are_refused_then_moved_aside(
    tmp_path: Path, tiny_data: Path, straight: Path
) -> None:
    """Every checkpoint damaged: --resume refuses instead of starting over; with --force a new
    run starts, and its own checkpoints survive pruning and are what the next --resume uses."""
    out = tmp_path / "damaged"
    for step in (16, 20):  # beyond the new run's steps: pruning by step number would keep them
        path = ckpt.checkpoint_path(out, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    with pytest.raises(ValueError, match="none of its 2 checkpoints loads"):
        _resume(out, tiny_data)
    first = _resume(out, tiny_data, force=True, stop_after=6, keep_checkpoints=1)
    assert first["status"] == "stopped" and first["start_step"] == 0
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [6]
    second = _resume(out, tiny_data, keep_checkpoints=1)
    assert second["start_step"] == 6 and second["steps"] == 12
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [12]  # keep 1: its own newest
    assert logged_steps(out) == list(range(1, 13))
    (aside,) = (out / "previous").iterdir()
    assert [s for s, _ in ckpt.list_checkpoints(aside)] == [16, 20]
    assert read_losses(out) == read_losses(straight)


def _fake_checkpoint(out: Path, step: int, run: dict | None) -> Path:
    state = {"step": step, "model": {"w": torch.full((2,), float(step))}}
    if run is not None:
        state["run"] = run
    return ckpt.save_checkpoint(ckpt.checkpoint_path(out, step), state)


def test_pruning_and_resuming_follow_the_run_not_the_step_number(tmp_path: Path) -> None:
    older = ckpt.run_identity(0, "a", started="2026-01-01T00:00:00+00:00")
    newer = ckpt.run_identity(0, "a", started="2026-02-01T00:00:00+00:00")
    assert older["id"] != newer["id"]
    _fake_checkpoint(tmp_path, 100, older)
    _fake_checkpoint(tmp_path, 200, None)  # written without an identity
    damaged = ckpt.checkpoint_path(tmp_path, 300)
    damaged.write_bytes(b"not a checkpoint")
    for step in (4, 8, 12):
        _fake_checkpoint(tmp_path, step, newer)
    deleted = ckpt.prune_checkpoints(tmp_path, 2, newer["id"])
    assert [p.name for p in deleted] == ["step_00000004.pt"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [8, 12, 100, 200, 300]
    with pytest.warns(UserWarning, match="unreadable"):
        _path, state = ckpt.latest_checkpoint(tmp_path)  # type: ignore[misc]
    assert state["step"] == 12 and state["run"] == newer  # the latest run, not step 300 or 200
    assert ckpt.prune_checkpoints(tmp_path, 1, older["id"]) == []  # its only one is its newest


class _NaNAt(LMTask):
    def __init__(self, base: LMTask, step: int) -> None:
        self.__dict__.update(base.__dict__)
        self.bad_sample = step * 4  # batch_size 4: the first sample of that step

    def loss(self, model, batch):
        loss, extra = super().loss(model, batch)
        if getattr(self, "poison", False):
            loss = loss * float("nan")
        return loss, extra

    def batch(self, first: int, count: int):
        self.poison = first == self.bad_sample
        return super().batch(first, count)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path: Path, tiny_data: Path) -> None:
    out = tmp_path / "nan"
    trainer = Trainer(small_config(out, tiny_data))
    trainer.task = _NaNAt(trainer.task, 6)  # type: ignore[arg-type]
    before = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    summary = trainer.train()
    assert summary["status"] == "diverged"
    assert "step 6" in summary["error"] and summary["steps"] == 6
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4]
    good = ckpt.load_checkpoint(ckpt.checkpoint_path(out, 4))["model"]
    assert all(torch.isfinite(v).all() for v in good.values())
    # the poisoned step was not applied: the weights are those after step 6's predecessors
    after = trainer.raw_model.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (out / "final").exists()


def test_resume_refuses_another_model(straight: Path, tiny_data: Path) -> None:
    from glassformer.config import Config

    other = Config.preset("tiny").replace(n_layers=2)
    with pytest.raises(ValueError, match="n_layers"):
        Trainer(small_config(straight, tiny_data, resume=True), model_config=other)


def test_data_and_a_foreign_tokenizer_are_refused(tmp_path: Path, tiny_data: Path) -> None:
    from glassformer.training.bpe_trainer import train_tokenizer

    train_tokenizer(["some other text entirely " * 50], 300, tmp_path / "tok")
    with pytest.raises(ValueError, match="SHA-256"):
        Trainer(small_config(tmp_path / "run", tiny_data, tokenizer=str(tmp_path / "tok")))
