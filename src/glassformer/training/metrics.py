"""What a run reports: OUT/metrics.jsonl (one JSON object a line; optionally TensorBoard) and
the progress display on stderr (a tqdm bar, or plain lines without one).

metrics.jsonl always describes one run's steps once each: a run that continues from a
checkpoint drops the lines written past it (by an invocation killed after its last
checkpoint), and a run that starts at step 0 starts the file afresh.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "Progress", "first_loss", "start_val_loss"]

METRICS = "metrics.jsonl"


class MetricsLog:
    """OUT/metrics.jsonl and, optionally, TensorBoard; writes only where `enabled` (rank 0)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.path = out / METRICS
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                print("warning: --tensorboard needs `pip install tensorboard`", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Keep the lines of steps <= `step`: the history of the checkpoint a run continues
        from. Lines past it (and lines cut short by a kill) go."""
        self._keep(lambda rec_step: rec_step <= step)

    def start_over(self) -> None:
        """An empty log, for a run that starts at step 0."""
        self._keep(lambda rec_step: False)

    def _keep(self, wanted: Any) -> None:
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if wanted(json.loads(line).get("step", 0)):
                    keep.append(line)
            except (json.JSONDecodeError, AttributeError):
                continue  # a line cut by the kill
        tmp = self.path.with_name(f".{METRICS}.tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if k != "step" and isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class Progress:
    """The main rank's display: a tqdm bar over the run's steps with the current loss and the
    run's tokens/s and MFU, a phase shown beside it while the loop is not stepping (evaluating,
    saving, exporting), and messages above it. Without a bar, messages go to stderr; on other
    ranks nothing is shown."""

    def __init__(self, total: int, initial: int, bar: bool, shown: bool) -> None:
        self.shown = shown
        self.bar = None
        if shown and bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def message(self, text: str) -> None:
        if not self.shown:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr)

    def phase(self, text: str) -> None:
        """What the run is doing between steps ('' when stepping again)."""
        if self.bar is not None:
            self.bar.set_description_str(text)
            self.bar.refresh()

    def stepped(self, loss: float, tokens_per_s: float, mfu: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.show(loss, tokens_per_s, mfu)

    def show(self, loss: float | None, tokens_per_s: float, mfu: float) -> None:
        if self.bar is not None:
            fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
            fields.update(tok_s=f"{tokens_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%")
            self.bar.set_postfix(fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def first_loss(path: Path) -> float | None:
    """The training loss of the first logged step."""
    return next((rec["loss"] for rec in _records(path) if "loss" in rec), None)


def start_val_loss(path: Path) -> float | None:
    """The validation loss logged at step 0 (with eval_at_start), if any."""
    records = _records(path)
    return next((r["val_loss"] for r in records if r.get("step") == 0 and "val_loss" in r), None)
