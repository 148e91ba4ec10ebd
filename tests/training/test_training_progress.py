"""What a run reports while it runs: one tokens/s and MFU for the bar and the summary, and the
phase between steps."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from glassformer.training.mfu import Throughput
from glassformer.training.trainer import Trainer

from .conftest import small_config


def test_throughput_leaves_out_warm_up_and_keeps_the_best_peak() -> None:
    meter = Throughput(flops_per_token=10.0, peak=100.0, peak_source="probe")
    meter.add(1000, 5.0, counted=False)  # the warm-up step
    meter.add(200, 1.0, counted=True)
    meter.add(300, 2.0, counted=True)
    assert meter.steps == 3 and meter.tokens_per_s == pytest.approx(500 / 3)
    assert meter.mfu == pytest.approx(10 * (500 / 3) / 100)
    meter.raise_peak(50.0)  # a probe in a busy moment does not lower the peak
    assert meter.peak == 100.0
    meter.raise_peak(200.0)
    assert meter.mfu == pytest.approx(10 * (500 / 3) / 200)


def test_the_bar_ends_on_the_summarys_figures(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tc = small_config(tmp_path / "run", tiny_data, max_steps=4, eval_batches=1, progress=True)
    summary = Trainer(tc).train()
    err = capsys.readouterr().err
    assert "evaluating 4 held-out samples" in err and "saving checkpoint 4" in err
    last_mfu = re.findall(r"mfu=([\d.]+)%", err)[-1]
    last_rate = re.findall(r"tok_s=(\S+), mfu=", err)[-1]
    assert last_mfu == f"{100 * summary['mfu']:.1f}" and float(last_mfu) > 0
    assert last_rate == f"{summary['tokens_per_s']:,.0f}"
