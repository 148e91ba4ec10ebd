"""A run's checkpoints as the trainer uses them: what goes into one, how a run starts (new, or
continuing from one) and which files it may prune.

A checkpoint holds the model, optimizer and scheduler states, the data position and counters,
every rank's random-number generators, both configs, the tokenizer's hash and the run's
identity (`checkpoint.run_identity`). Under FSDP, gathering the state is collective and only
rank 0 writes.

How a run starts in OUT:

    no --resume, OUT/checkpoints empty        a new run
    no --resume, checkpoints there            refused (another run's); --force moves them aside
    --resume, a checkpoint loads              that run continues (the newest step of the most
                                              recently started run), with its identity
    --resume, files there but none loads      refused; --force moves them aside, a new run
    --resume, no checkpoint at all            a new run (killed before its first checkpoint)

Files move aside into OUT/previous/<time>/ together with the logs, nothing is deleted. A new
run starts OUT/metrics.jsonl afresh, a continued one drops the lines past its checkpoint, so
each step is logged once. Pruning deletes only the run's own older checkpoints.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.config import Config
from glassformer.training import checkpoint as ckpt
from glassformer.training.config import TrainConfig
from glassformer.training.distributed import (
    DistInfo,
    all_gather_object,
    barrier,
    full_state,
    load_full_state,
)
from glassformer.training.metrics import METRICS, MetricsLog

__all__ = ["CheckpointManager", "RunCounters"]

# What a run leaves beside its checkpoints; moved aside with them.
RUN_FILES = (METRICS, "summary.json", "config.json", "train_config.json")
# TrainConfig fields that do not change what a run computes: left out of its config hash.
_NOT_THE_RUN = ("out", "resume", "force", "stop_after", "progress", "tensorboard", "export")


@dataclass
class RunCounters:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    elapsed: float = 0.0
    best_val: float | None = None


class CheckpointManager:
    """Saves and restores one run's whole state in OUT/checkpoints."""

    def __init__(
        self,
        tc: TrainConfig,
        info: DistInfo,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        model_config: Any,
        tokenizer_sha256: str | None,
        trainable_only: bool = False,
    ) -> None:
        self.tc, self.info = tc, info
        self.out = Path(tc.out)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.model_config = model_config
        self.tokenizer_sha256 = tokenizer_sha256
        self.trainable_only = trainable_only
        self.run: dict[str, Any] = {}
        self.latest: Path | None = None  # the checkpoint the run stands on (resumed or saved)

    # -- starting ------------------------------------------------------------------------------
    def begin(self, counters: RunCounters, log: MetricsLog) -> None:
        """Start or continue the run in OUT (see the module docstring); sets `counters`."""
        tc, out = self.tc, self.out
        files = ckpt.list_checkpoints(out)
        where = out / ckpt.CHECKPOINT_DIR
        if tc.resume:
            found = ckpt.latest_checkpoint(out)
            if found is not None:
                self._restore(*found, counters)
                log.truncate_after(counters.step)
                self._say(f"resumed from {found[0]} (step {counters.step})")
                return
            if files and not tc.force:
                raise ValueError(
                    f"{where}: none of its {len(files)} checkpoints loads; --force starts a new "
                    f"run here (moving them to {out / 'previous'}), or pick another --out"
                )
            if not files:
                self._say(f"resume: no checkpoint in {out}; starting fresh")
        elif files and not tc.force:
            raise ValueError(
                f"{where} holds another run's checkpoints (newest {files[-1][1].name}): "
                f"--resume continues it, --force starts a new run here (moving them to "
                f"{out / 'previous'}), or pick another --out"
            )
        if self.info.is_main:
            moved = ckpt.move_aside(out, RUN_FILES) if files else None
            if moved is not None:
                self._say(f"new run: the checkpoints and logs already here moved to {moved}")
        log.start_over()
        self.run = ckpt.run_identity(tc.seed, self._configs_hash())
        barrier(self.info)

    def _configs_hash(self) -> str:
        train = {k: v for k, v in self.tc.to_dict().items() if k not in _NOT_THE_RUN}
        model = self.model_config.to_dict() if isinstance(self.model_config, Config) else None
        return ckpt.config_hash(model, train)

    def _restore(self, path: Path, state: dict[str, Any], counters: RunCounters) -> None:
        self._check_compatible(path, state)
        load_full_state(
            self.model,
            self.optimizer,
            state["model"],
            state["optimizer"],
            self.info,
            strict=not state.get("trainable_only", False),
        )
        self.scheduler.load_state_dict(state["scheduler"])
        counters.step = int(state["step"])
        counters.samples_seen = int(state["samples_seen"])
        counters.tokens_seen = int(state.get("tokens_seen", 0))
        counters.elapsed = float(state.get("elapsed", 0.0))
        counters.best_val = state.get("best_val")
        rngs = state.get("rng") or []
        if rngs:
            # Same world size: each rank gets its own generators back; otherwise rank 0's.
            same = len(rngs) == self.info.world_size
            ckpt.restore_rng(rngs[self.info.rank] if same else rngs[0])
        # A checkpoint written without an identity continues as a run of its own.
        run = state.get("run")
        self.run = dict(run) if run else ckpt.run_identity(self.tc.seed, self._configs_hash())
        self.latest = path

    def _check_compatible(self, path: Path, state: dict[str, Any]) -> None:
        """Refuse to resume a checkpoint of another model or another tokenizer."""
        saved = state.get("config")
        if saved is not None and isinstance(self.model_config, Config):
            now = self.model_config.to_dict()
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            diff = [k for k in diff if k != "name"]
            if diff:
                raise ValueError(
                    f"{path}: the checkpoint's model config differs in {diff}; resume with "
                    "the same model options (or use another --out)"
                )
        sha = state.get("tokenizer_sha256")
        if sha and self.tokenizer_sha256 and sha != self.tokenizer_sha256:
            raise ValueError(f"{path}: the checkpoint was trained with another tokenizer")

    # -- saving --------------------------------------------------------------------------------
    def state(self, counters: RunCounters) -> dict[str, Any] | None:
        """Collective under FSDP; returns the state on rank 0, None elsewhere."""
        msd, osd = full_state(self.model, self.optimizer, self.info, self.trainable_only)
        # Serialised to bytes first: all_gather_object cannot carry tensors on every backend.
        buf = io.BytesIO()
        torch.save(ckpt.capture_rng(), buf)
        blobs = all_gather_object(buf.getvalue(), self.info)
        rngs = [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]
        if not self.info.is_main:
            return None
        return {
            "format": 1,
            "step": counters.step,
            "samples_seen": counters.samples_seen,
            "tokens_seen": counters.tokens_seen,
            "elapsed": counters.elapsed,
            "best_val": counters.best_val,
            "model": msd,
            "optimizer": osd,
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs,
            "world_size": self.info.world_size,
            "config": (
                self.model_config.to_dict() if isinstance(self.model_config, Config) else None
            ),
            "train_config": self.tc.to_dict(),
            "trainable_only": self.trainable_only,
            "tokenizer_sha256": self.tokenizer_sha256,
            "run": self.run,
        }

    def save(self, counters: RunCounters) -> Path:
        """Write OUT/checkpoints/step_N.pt (atomically), then prune the run's older ones."""
        state = self.state(counters)
        path = ckpt.checkpoint_path(self.out, counters.step)
        if self.info.is_main:
            assert state is not None
            ckpt.save_checkpoint(path, state)
            ckpt.prune_checkpoints(self.out, self.tc.keep_checkpoints, self.run["id"])
        barrier(self.info)
        self.latest = path
        return path

    def _say(self, msg: str) -> None:
        if self.info.is_main:
            print(msg, file=sys.stderr)
