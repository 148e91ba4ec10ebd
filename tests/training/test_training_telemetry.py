"""`glassformer train --telemetry-every N --balance-weight w`: telemetry records land in
metrics.jsonl and the balance regulariser enters the objective."""

from __future__ import annotations

import json
from pathlib import Path

from glassformer.training.trainer import Trainer

from .conftest import read_losses, small_config


def test_telemetry_records_in_metrics(tmp_path: Path, tiny_data: Path) -> None:
    plain = small_config(tmp_path / "plain", tiny_data, max_steps=4)
    Trainer(plain).train()
    tc = small_config(
        tmp_path / "run", tiny_data, max_steps=4, telemetry_every=2, balance_weight=0.5
    )
    Trainer(tc).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    telemetry = [r for r in records if r.get("event") == "telemetry"]
    assert [r["step"] for r in telemetry] == [2, 4]
    assert all("spectral_ratio_mean" in r for r in telemetry)
    # The regulariser changes the updates, so the later losses differ from the plain run.
    assert read_losses(tmp_path / "run")[4] != read_losses(tmp_path / "plain")[4]
