"""The training loop: pretraining from scratch, and the engine under fine-tuning.

One optimizer step consumes a global batch of B sequences (split into micro-batches over
gradient-accumulation steps and ranks) and minimises the mean next-token cross-entropy

    L = -1/N sum_{t in batch, mask_t = 1} log p(x_{t+1} | x_{<=t})

over its N counted tokens (all of them in pretraining; only assistant tokens in SFT). Each
micro-batch contributes sum_t loss_t / N, so accumulation and data parallelism give the same
gradient as one big batch. Gradients are clipped to a global L2 norm (Pascanu et al. 2013)
before the AdamW update (`optim.py`).

The parts, in the order a run meets them:

    setup       `Trainer.__init__`: the task and its data (`tasks.py`), the model (wrapped for
                DDP/FSDP2, `distributed.py`), optimizer and schedule (`optim.py`), the run's
                checkpoints (`checkpoint_manager.py`: a new run, or the continued one)
    fit         `Trainer.train`: steps, with validation, checkpoints and logging on their
                schedules; tokens/s and MFU from one meter (`mfu.py`)
    validate    `evaluate.py`: the held-out loss and a sampled continuation
    finish      the final model exported as an HF directory, and OUT/summary.json

Everything needed to continue is checkpointed, so a stopped-and-resumed run reproduces the
uninterrupted one bit for bit on CPU. A non-finite loss or gradient norm stops the run before
the update is applied, leaving the last good checkpoint as the state to return to.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.config import Config
from glassformer.training.checkpoint_manager import CheckpointManager, RunCounters
from glassformer.training.config import TrainConfig, TrainingDiverged
from glassformer.training.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    full_state,
    init_distributed,
    no_sync,
    unwrap,
    wrap_model,
)
from glassformer.training.evaluate import eval_sample_count, evaluate, sample_text, to_device
from glassformer.training.metrics import MetricsLog, Progress, first_loss, start_val_loss
from glassformer.training.mfu import Throughput, cpu_matmul_rate, model_flops_per_token, peak_flops
from glassformer.training.optim import autocast_dtype, make_optimizer, make_schedule
from glassformer.training.tasks import Task, pretraining_task

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]


def enable_activation_checkpointing(blocks: nn.ModuleList) -> None:
    """Recompute each block's activations in the backward pass instead of storing them
    (Chen et al. 2016): memory O(layers) -> O(1) blocks, for about one extra forward.

    The block's `forward` is replaced on the instance, so parameter names do not change.
    """
    from torch.utils.checkpoint import checkpoint

    for block in blocks:
        inner = block.forward

        def forward(*args: Any, _inner: Callable[..., Any] = inner, **kwargs: Any) -> Any:
            if torch.is_grad_enabled():
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            return _inner(*args, **kwargs)

        block.forward = forward  # type: ignore[method-assign]


@dataclass
class _Outcome:
    """How the loop ended, with what it last measured."""

    status: str = "completed"  # | stopped (stop_after) | diverged
    error: str | None = None
    loss: float | None = None  # of the last step
    eval_result: dict[str, float] = field(default_factory=dict)  # of the last validation
    sample: str | None = None


class Trainer:
    """Builds (or takes) the model, data and optimizer for a `TrainConfig` and runs the loop."""

    # -- setup ---------------------------------------------------------------------------------
    def __init__(
        self,
        tc: TrainConfig,
        *,
        model: nn.Module | None = None,
        tokenizer: Any = None,
        task: Task | None = None,
        model_config: Config | None = None,
        info: DistInfo | None = None,
        generate_fn: Callable[[nn.Module], str] | None = None,
        trainable_only_checkpoints: bool = False,
    ) -> None:
        tc.validate()
        self.tc = tc
        self.info = info or init_distributed(tc.device)
        self.device = self.info.device
        self.out = Path(tc.out)
        self.is_main = self.info.is_main
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(self.info)
        self.tokenizer = tokenizer
        self.tokenizer_dir: Path | None = None
        self.generate_fn = generate_fn
        self.data_dir: Path | None = None
        self.tokenizer_sha256: str | None = None
        if task is None:
            data = pretraining_task(tc, model_config, self.is_main, lambda: barrier(self.info))
            task, model_config = data.task, data.model_config
            self.tokenizer, self.tokenizer_sha256 = data.tokenizer, data.tokenizer_sha256
            self.data_dir = self.tokenizer_dir = data.data_dir
        self.task = task

        torch.manual_seed(tc.seed)  # the same initial weights on every rank
        if model is None:
            assert model_config is not None
            from glassformer.model import Transformer

            model = Transformer(model_config)
        self.model_config = model_config or getattr(model, "config", None)
        self.raw_model = model.to(self.device)
        if tc.activation_checkpointing:
            layers = getattr(self.raw_model, "layers", None)
            if layers is None:
                layers = self.raw_model.backbone.layers  # type: ignore[union-attr]
            enable_activation_checkpointing(layers)
        self.model = wrap_model(self.raw_model, self.info, tc.fsdp)
        self.forward_model = torch.compile(self.model) if tc.compile else self.model
        self.optimizer = make_optimizer(self.model, tc, self.device)
        self.scheduler = make_schedule(self.optimizer, tc)
        self.amp_dtype = autocast_dtype(tc, self.device)
        self.micro, self.accum = self._batch_split()

        self.counters = RunCounters()
        self.log = MetricsLog(self.out, self.is_main, tc.tensorboard)
        self.telemetry, self.balance = self._diagnostics(tc)
        params = list(unwrap(self.model).parameters())
        self.n_params = sum(p.numel() for p in params)
        self.n_trainable = sum(p.numel() for p in params if p.requires_grad)
        self.flops_per_token = self._flops_per_token()
        self.checkpoints = CheckpointManager(
            tc, self.info, self.model, self.optimizer, self.scheduler, self.model_config,
            self.tokenizer_sha256, trainable_only_checkpoints,
        )  # fmt: skip
        self.checkpoints.begin(self.counters, self.log)
        if self.is_main and self.model_config is not None and self.counters.step == 0:
            self.model_config.save(self.out / "config.json")
            (self.out / "train_config.json").write_text(json.dumps(tc.to_dict(), indent=2) + "\n")

    def _batch_split(self) -> tuple[int, int]:
        """(micro-batch per rank, accumulation steps) of the global batch."""
        tc, world = self.tc, self.info.world_size
        if tc.batch_size % world:
            raise ValueError(f"batch_size: {tc.batch_size} is not divisible by {world} ranks")
        per_rank = tc.batch_size // world
        micro = tc.micro_batch_size or per_rank
        if per_rank % micro:
            raise ValueError(
                f"micro_batch_size: {micro} does not divide the per-rank batch {per_rank}"
            )
        return micro, per_rank // micro

    def _flops_per_token(self) -> float:
        """Model FLOPs per trained token (see `mfu.py`); 6 N for a model without a Config."""
        if isinstance(self.model_config, Config):
            flops = model_flops_per_token(self.model_config, self.tc.seq_len)
        else:
            flops = 6.0 * self.n_params
        # Frozen weights need no weight gradients: ~4 instead of 6 FLOPs per weight.
        return flops - 2.0 * (self.n_params - self.n_trainable)

    def _diagnostics(self, tc: TrainConfig) -> tuple[Any, Any]:
        """The spectral-telemetry callback (main rank) and the balance regulariser, if asked."""
        if (tc.telemetry_every or tc.balance_weight) and tc.fsdp:
            raise ValueError("telemetry_every/balance_weight: not supported with --fsdp")
        telemetry = balance = None
        if tc.telemetry_every and self.is_main:
            from glassformer.diagnostics.callback import TelemetryCallback, probe_sequences

            vocab = self.model_config.vocab_size if self.model_config is not None else 256
            probe = probe_sequences(self.tokenizer, vocab)
            telemetry = TelemetryCallback(
                tc.telemetry_every, path=None, probe=probe, sink=self.log.write
            )
        if tc.balance_weight:
            from glassformer.diagnostics.callback import BalanceRegularizer

            balance = BalanceRegularizer(tc.balance_weight)
        return telemetry, balance

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def step(self) -> int:
        return self.counters.step

    # -- fit -----------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run from the current step to `max_steps` (or `stop_after` steps); the summary."""
        tc = self.tc
        peak, peak_source = peak_flops(self.device, self._peak_dtype)
        meter = Throughput(self.flops_per_token, peak * self.info.world_size, peak_source)
        ui = Progress(tc.max_steps, self.counters.step, bar=tc.progress, shown=self.is_main)
        start_step = self.counters.step
        try:
            run = self._fit(ui, meter)
            if run.status == "completed" and tc.export:
                ui.phase(f"exporting {self.out / 'final'}")
                self.export(self.out / "final")
        finally:
            ui.close()
        return self._summary(run, start_step, meter)

    def _fit(self, ui: Progress, meter: Throughput) -> _Outcome:
        """The loop: steps, with validation, checkpoints and logging on their schedules."""
        tc, c = self.tc, self.counters
        start_step = c.step
        run = _Outcome()
        # The first step of an invocation pays for warm-up (and compilation): the run's rate
        # leaves it out, unless it is the only step.
        single = tc.max_steps - start_step == 1
        self.model.train()
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self.step_extras: dict[str, float] = {}
        try:
            if tc.eval_at_start and c.step == 0:
                self._validate_at_start(ui)
            while c.step < tc.max_steps:
                t0 = time.perf_counter()
                run.loss, grad_norm, lr, tokens, items = self._step()
                dt = time.perf_counter() - t0
                c.elapsed += dt
                meter.add(tokens, dt, counted=c.step > start_step + 1 or single)
                tok_s = tokens / dt if dt > 0 else 0.0
                if tc.log_every and (c.step % tc.log_every == 0 or c.step == tc.max_steps):
                    self.log.write({
                        "step": c.step, "loss": run.loss, "lr": lr, "grad_norm": grad_norm,
                        "tokens": c.tokens_seen, "tokens_per_s": tok_s,
                        "mfu": meter.mfu_of(tok_s), "step_time": dt, "items": items,
                        **self.step_extras,
                    })  # fmt: skip
                run_tok_s = meter.tokens_per_s or tok_s  # the run's rate once it has one
                ui.stepped(run.loss, run_tok_s, meter.mfu_of(run_tok_s))
                final = c.step == tc.max_steps
                if (tc.eval_every and c.step % tc.eval_every == 0) or final:
                    run.eval_result, run.sample = self._validate(ui, meter)
                    ui.show(run.loss, run_tok_s, meter.mfu_of(run_tok_s))  # the peak may rise
                pause = bool(tc.stop_after) and c.step - start_step >= (tc.stop_after or 0)
                if (tc.checkpoint_every and c.step % tc.checkpoint_every == 0) or final or pause:
                    ui.phase(f"saving checkpoint {c.step}")
                    self.save_checkpoint()
                    ui.phase("")
                if pause and not final:
                    run.status = "stopped"
                    break
        except TrainingDiverged as err:
            run.status, run.error = "diverged", str(err)
            self.log.write({"step": c.step, "event": "diverged", "error": str(err)})
            ui.message(f"stopped: {err}; the last good checkpoint is kept")
        return run

    @property
    def _peak_dtype(self) -> str:
        return "bf16" if self.amp_dtype else "fp32"

    def _step(self) -> tuple[float, float, float, int, int]:
        """One optimizer step on the next global batch: (loss, grad norm, the lr it used,
        tokens over all ranks, items counted in the loss)."""
        tc, info, c = self.tc, self.info, self.counters
        world, b, accum = info.world_size, self.micro, self.accum
        # This rank's micro-batches of the global batch (sample indices are global).
        batches = [
            to_device(self.task.batch(c.samples_seen + (m * world + info.rank) * b, b), self.device)
            for m in range(accum)
        ]
        counts = torch.tensor([float(sum(self.task.count(x) for x in batches))], device=self.device)
        n_items = float(all_reduce_sum(counts, info)[0])
        loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
        extras: dict[str, torch.Tensor] = {}
        for m, batch in enumerate(batches):
            with no_sync(self.forward_model, skip=m < accum - 1), self._autocast():
                loss_sum, extra = self.task.loss(self.forward_model, batch)
            for k, v in extra.items():  # a task's own sums (preference reward margins)
                extras[k] = extras.get(k, 0.0) + v.detach().double()
            # sum/N per micro-batch; x world because DDP and FSDP average over ranks.
            objective = loss_sum * (world / max(n_items, 1.0))
            if self.balance is not None:  # identical on every rank: no x world
                objective = objective + self.balance(unwrap(self.model)) / accum
            objective.backward()
            loss_total += loss_sum.detach().double()
        # The loss and the task's extra sums in one all-reduce (and one device sync).
        names = sorted(extras)
        sums = torch.stack([loss_total, *(extras[k].reshape(()) for k in names)])
        means = (all_reduce_sum(sums, info) / max(n_items, 1.0)).tolist()
        loss = means[0]
        self.step_extras = dict(zip(names, means[1:], strict=True))
        if not math.isfinite(loss):
            raise TrainingDiverged(f"non-finite loss {loss} at step {c.step}")
        params = self._params
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
            norm = norm.full_tensor()
        grad_norm = float(norm)
        if not math.isfinite(grad_norm):
            raise TrainingDiverged(f"non-finite gradient norm at step {c.step}")
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        c.samples_seen += tc.batch_size
        c.step += 1
        if self.telemetry is not None:
            self.telemetry(c.step, unwrap(self.model))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        tokens = sum(int(x["input_ids"].numel()) for x in batches) * world
        c.tokens_seen += tokens
        return loss, grad_norm, lr, tokens, int(n_items)

    # -- validate ------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Validation loss (and perplexity, and the task's extra means) on held-out samples."""
        return evaluate(
            self.model, self.task, self.tc, self.info, self.micro, self.device, self._autocast
        )

    def sample_text(self) -> str | None:
        if self.generate_fn is not None:
            return self.generate_fn(self.model)
        return sample_text(self.model, self.task, self.tc, self.tokenizer, self._autocast)

    def _validate_at_start(self, ui: Progress) -> None:
        """The step-0 baseline (fine-tuning): validation only, no sample."""
        ui.phase("evaluating the starting point")
        result = self.evaluate()
        ui.phase("")
        if result:
            self.log.write({"step": 0, **result})
            ui.message("step 0: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))

    def _validate(self, ui: Progress, meter: Throughput) -> tuple[dict[str, float], str | None]:
        c = self.counters
        if self.device.type == "cpu":  # a better moment for the peak probe, perhaps
            meter.raise_peak(self.info.world_size * cpu_matmul_rate(self._peak_dtype))
        n = eval_sample_count(self.task, self.tc, self.info.world_size)
        ui.phase(f"evaluating {n} held-out samples" if n else "")
        result = self.evaluate()
        ui.phase("sampling")
        sample = self.sample_text()
        ui.phase("")
        if result:
            v = result["val_loss"]
            c.best_val = v if c.best_val is None else min(c.best_val, v)
            self.log.write({"step": c.step, **result})
        msg = f"step {c.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items())
        if sample is not None:
            self.log.write({"step": c.step, "sample": sample})
            msg += f"\n  sample: {sample!r}"
        ui.message(msg)
        return result, sample

    # -- finish --------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        return self.checkpoints.save(self.counters)

    def export(self, directory: Path) -> None:
        """The trained model as an HF model directory (+ tokenizer files): loadable by
        `glassformer.load`, HF transformers and the GGUF-less CLI commands."""
        msd, _ = full_state(self.model, None, self.info)
        if not self.is_main or not isinstance(self.model_config, Config):
            barrier(self.info)
            return
        from glassformer.loaders.safetensors_io import save_hf_dir

        try:
            save_hf_dir(directory, self.model_config, msd)
        except Exception as err:  # an architecture without an HF mapping: keep our format
            from glassformer.compression.export import save_model_dir

            save_model_dir(directory, self.model_config, msd, gguf=False)
            print(
                f"note: no HF export ({err}); wrote glassformer's own format (glassformer.json "
                "+ model.safetensors, which glassformer.load reads)",
                file=sys.stderr,
            )
        self.model_config.save(directory / "glassformer_config.json")
        if self.tokenizer_dir is not None:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                src = self.tokenizer_dir / name
                if src.is_file():
                    shutil.copyfile(src, directory / name)
        barrier(self.info)

    def _summary(self, run: _Outcome, start_step: int, meter: Throughput) -> dict[str, Any]:
        c, latest = self.counters, self.checkpoints.latest
        summary = {
            "status": run.status,
            "error": run.error,
            "steps": c.step,
            "start_step": start_step,
            "loss": run.loss,
            "first_loss": None,
            "start_val_loss": None,
            "tokens": c.tokens_seen,
            "seconds": c.elapsed,
            "tokens_per_s": meter.tokens_per_s,
            "mfu": meter.mfu,
            "mfu_reference": meter.peak_source,
            "params": self.n_params,
            "trainable_params": self.n_trainable,
            "world_size": self.info.world_size,
            "out": str(self.out),
            "run": self.checkpoints.run.get("id"),
            "checkpoint": str(latest) if latest is not None else None,
            "sample": run.sample,
            **run.eval_result,
        }
        if self.is_main:
            summary["first_loss"] = first_loss(self.log.path)
            summary["start_val_loss"] = start_val_loss(self.log.path)
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log.close()
        return summary


def train(tc: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a Trainer for `tc` and run it; returns the summary (see `Trainer.train`)."""
    trainer = Trainer(tc, **kwargs)
    try:
        return trainer.train()
    finally:
        from glassformer.training.distributed import cleanup

        if kwargs.get("info") is None:
            cleanup(trainer.info)
