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
from glassformer.training.trainer import LMTask, Trainer

from .conftest import read_losses, small_config


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("straight")
    Trainer(small_config(out, tiny_data, eval_every=6, eval_batches=1, sample_tokens=4)).train()
    return out


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run, 12))["model"]


def _assert_same_run(a: Path, b: Path) -> None:
    assert read_losses(a) == read_losses(b)  # exact float equality, every step
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


@pytest.mark.slow
def test_sigkill_mid_write_resumes_from_previous(tmp_path: Path, tiny_data: Path, straight):
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-c", "from glassformer.cli import main; main()", "train",
        "--data", str(tiny_data), "--out", str(out), "--seq-len", "32", "--batch-size", "4",
        "--max-steps", "12", "--lr", "3e-3", "--eval-every", "6", "--eval-batches", "1",
        "--sample-tokens", "4", "--checkpoint-every", "4", "--keep-checkpoints", "0",
        "--no-progress", "--no-export",
    ]  # fmt: skip
    env = {**os.environ, "GLASSFORMER_CHECKPOINT_WRITE_DELAY": "60@8", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp_second = out / "checkpoints" / ".step_00000008.pt.tmp"
    deadline = time.time() + 240
    try:
        # The checkpoint of step 8 pauses halfway for a minute: kill it then.
        while not (tmp_second.exists() and tmp_second.stat().st_size > 0):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.time() < deadline, "the run never reached its second checkpoint"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [s for s, _ in ckpt.list_checkpoints(out)] == [4]  # the half-written one is ignored
    _path, state = ckpt.latest_checkpoint(out)  # type: ignore[misc]
    assert state["step"] == 4
    with pytest.raises(Exception):  # noqa: B017 - the partial file is not a loadable checkpoint
        ckpt.load_checkpoint(tmp_second)
    summary = Trainer(small_config(out, tiny_data, eval_every=6, eval_batches=1, sample_tokens=4,
                                   resume=True)).train()  # fmt: skip
    assert summary["start_step"] == 4 and summary["status"] == "completed"
    _assert_same_run(straight, out)


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
