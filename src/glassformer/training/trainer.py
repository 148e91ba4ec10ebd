"""The training loop: pretraining from scratch, and the engine under fine-tuning.

One optimizer step consumes a global batch of B sequences (split into micro-batches over
gradient-accumulation steps and ranks) and minimises the mean next-token cross-entropy

    L = -1/N sum_{t in batch, mask_t = 1} log p(x_{t+1} | x_{<=t})

over its N counted tokens (all of them in pretraining; only assistant tokens in SFT). Each
micro-batch contributes sum_t loss_t / N, so accumulation and data parallelism give the same
gradient as one big batch.

Optimizer: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):

    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g^2
    theta -= lr_t * ( m_hat / (sqrt(v_hat) + eps) + wd * theta )

with weight decay on matrices only (not norms, biases), the fused kernel where PyTorch has one
(CUDA, CPU), gradient clipping to a global L2 norm (Pascanu et al. 2013) and the warmup +
cosine or warmup-stable-decay schedules of `schedule.py`. bf16 autocast runs the matmuls in
bfloat16 where the device supports it (master weights and the loss stay float32).

Throughput is reported as tokens/s and MFU, model FLOPs utilisation (Chowdhery et al. 2022,
PaLM, appendix B): achieved model FLOP/s over the device's peak, with the model FLOPs per token
6 N_matmul + 12 L H d_head T (forward + backward of every weight matmul, and of attention's two
T-long matmuls). The peak is the vendor figure for known GPUs and a measured matmul rate on CPU.

Everything needed to continue is checkpointed (see `checkpoint.py`); `resume` restores it, so a
stopped-and-resumed run reproduces the uninterrupted one bit for bit on CPU. A non-finite loss or
gradient norm stops the run before the update is applied, leaving the last good checkpoint as
the state to return to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from glassformer.components.head_loss import IGNORE
from glassformer.config import Config
from glassformer.training import checkpoint as ckpt
from glassformer.training.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_sum,
    barrier,
    full_state,
    init_distributed,
    is_fsdp,
    load_full_state,
    no_sync,
    unwrap,
    wrap_model,
)
from glassformer.training.schedule import SCHEDULES, make_scheduler

__all__ = [
    "LMTask",
    "Task",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "default_data_dir",
    "model_flops_per_token",
    "train",
]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything that defines a run (saved as OUT/train_config.json and in checkpoints)."""

    out: str = "runs/run"
    preset: str | None = "tiny"
    config: str | None = None  # a Config JSON file (overrides preset)
    data: str | None = None  # prepared data dir; None: the default corpus (cached)
    tokenizer: str | None = None  # tokenizer.json for preparing the default corpus
    vocab_size: int | None = None  # of the tokenizer trained for the default corpus
    seq_len: int = 256
    batch_size: int = 16  # global: sequences per optimizer step, over all ranks
    micro_batch_size: int | None = None  # per rank and forward pass; None: batch / ranks
    max_steps: int = 200
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    schedule: str = "cosine"
    warmup_steps: int | None = None  # None: 5% of max_steps (at least 1 when max_steps > 1)
    decay_fraction: float = 0.2  # wsd: share of the run spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0: off
    dtype: str = "auto"  # auto (bf16 on GPUs that have it, else fp32) | fp32 | bf16
    device: str = "auto"
    compile: bool = False
    activation_checkpointing: bool = False
    fsdp: bool = False
    eval_every: int = 100  # 0: only at the end
    eval_batches: int = 8  # global batches of validation samples per evaluation
    eval_at_start: bool = False  # also evaluate before the first step (fine-tuning baselines)
    sample_tokens: int = 48  # per eval; 0: no samples
    sample_prompt: str = "def "
    checkpoint_every: int = 100  # 0: only at the end
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None  # leave after this many steps (checkpointed), to resume later
    tensorboard: bool = False
    telemetry_every: int = 0  # spectral telemetry into metrics.jsonl every N steps (0: off)
    balance_weight: float = 0.0  # weight of the 1:1-rule balance regulariser (0: off)
    progress: bool = True
    export: bool = True  # write OUT/final (HF directory + tokenizer) at the end
    init_std: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("seq_len", "batch_size", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype: expected auto, fp32 or bf16, got {self.dtype!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --- tasks ----------------------------------------------------------------------------------------
class Task(Protocol):
    """What the loop needs from a kind of training: batches by sample index and a loss."""

    def train_samples(self) -> int: ...  # samples per epoch (for reporting)

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]: ...

    def eval_samples(self) -> int: ...

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]: ...

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of per-item losses, sums of extra metrics such as 'correct')."""
        ...

    def count(self, batch: dict[str, torch.Tensor]) -> int: ...  # items counted in the loss


class NextTokenLoss:
    """The loss of a task whose batches are {input_ids, labels}: summed next-token
    cross-entropy over the labels that are not IGNORE (pretraining, SFT), in float32. The
    model fuses its head with the loss (`Transformer.forward(..., labels=)`), so a batch's
    logits are never held in memory at once."""

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model(batch["input_ids"], labels=batch["labels"]), {}

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())


class LMTask(NextTokenLoss):
    """Pretraining on prepared token shards: windows of seq_len + 1 ids, every token counted."""

    def __init__(self, data_dir: str | os.PathLike[str], seq_len: int, seed: int) -> None:
        from glassformer.training.data import TokenSplit, WindowSampler

        self.train = WindowSampler(TokenSplit(data_dir, "train"), seq_len, seed)
        val = TokenSplit(data_dir, "val")
        self.val = None
        if len(val) > 1:
            # A short validation split still gets evaluated, at a shorter length.
            self.val = WindowSampler(val, min(seq_len, len(val) - 1), seed, shuffle=False)

    def train_samples(self) -> int:
        return self.train.n_windows

    def eval_samples(self) -> int:
        return self.val.n_windows if self.val is not None else 0

    @staticmethod
    def _split(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._split(self.train.batch(first, count))

    def eval_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        assert self.val is not None
        return self._split(self.val.batch(first % self.val.n_windows, count))


# --- FLOPs and peaks ------------------------------------------------------------------------------
def model_flops_per_token(config: Config, seq_len: int) -> float:
    """Training FLOPs per token: 6 * (matmul weights used per token) + 12 L H d_head T."""
    d, v = config.d_model, config.vocab_size
    with torch.device("meta"):
        from glassformer.model import Transformer

        net = Transformer(config)
    total = 0
    for name, p in net.named_parameters():
        if p.dim() < 2 or name.startswith(("embed.", "pos_embed.")) or ".mtp." in f".{name}":
            continue
        n = p.numel()
        if ".experts." in name and config.n_experts:
            n = n * config.n_experts_per_token // config.n_experts  # only the routed top-k
        total += n
    if config.tie_embeddings:
        total += d * v  # the head reuses the embedding matrix as a matmul
    assert config.head_dim is not None
    attn = 12 * config.n_layers * config.n_heads * config.head_dim * seq_len
    return 6.0 * total + attn


def peak_flops(device: torch.device, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for MFU.

    GPUs: the datasheet's dense peak for the compute dtype. CPUs have no such figure at hand,
    so the denominator is a measured square-matmul rate; on a shared machine a single probe
    can land in a busy moment, so the trainer probes again at each evaluation and keeps the
    best (`cpu_matmul_rate`).
    """
    from glassformer.explorer.hardware import PRESETS

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for key, hw in PRESETS.items():
            probes = (key, *hw.aliases)
            if any(p.replace("-sxm", "") in name.replace(" ", "") for p in probes):
                rate, used = hw.compute_peak(dtype)
                return rate, f"{hw.label} {used} datasheet peak"
        return 0.0, f"unknown GPU {name!r}"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return cpu_matmul_rate(dtype), f"best measured {dtype} matmul rate ({threads} threads)"
    return 0.0, f"no peak known for {device.type}"


def cpu_matmul_rate(dtype: str = "fp32", n: int = 768, seconds: float = 0.15) -> float:
    """FLOP/s of an n x n x n matmul on this CPU, measured now."""
    from glassformer.explorer.hardware import matmul_rate

    return matmul_rate(torch.bfloat16 if dtype == "bf16" else torch.float32, n, seconds)


# --- default data ---------------------------------------------------------------------------------
def cache_dir() -> Path:
    root = os.environ.get("GLASSFORMER_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glassformer"


def default_data_dir(vocab_size: int, tokenizer: str | None = None) -> Path:
    """The default corpus prepared with a `vocab_size` BPE (trained once, then cached)."""
    from glassformer.training.data import MANIFEST, default_corpus_id, prepare_data

    tag = f"bpe{vocab_size}" if tokenizer is None else "tok" + _short_hash(tokenizer)
    path = cache_dir() / "data" / f"{default_corpus_id()}-{tag}"
    if not (path / MANIFEST).is_file():
        # Train the tokenizer on a 4 MB sample: merges of a small vocabulary are settled by then.
        prepare_data(["default"], path, tokenizer, vocab_size=vocab_size,
                     tokenizer_train_bytes=4_000_000)  # fmt: skip
    return path


def _short_hash(path: str) -> str:
    import hashlib

    p = Path(path)
    p = p / "tokenizer.json" if p.is_dir() else p
    return hashlib.sha256(p.read_bytes()).hexdigest()[:12]


# --- helpers --------------------------------------------------------------------------------------
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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (and embeddings); not norms, biases or other vectors."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, tc: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    groups = param_groups(model, tc.weight_decay)
    kwargs: dict[str, Any] = dict(lr=tc.lr, betas=(tc.beta1, tc.beta2), eps=tc.eps)
    if device.type in ("cuda", "cpu") and not _has_dtensor(model):
        # One fused kernel for all parameters: no per-tensor Python loop.
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=device.type != "cpu" or None, **kwargs)


def _has_dtensor(model: nn.Module) -> bool:
    return any(hasattr(p, "device_mesh") for p in model.parameters())


def autocast_dtype(tc: TrainConfig, device: torch.device) -> torch.dtype | None:
    if tc.dtype == "fp32":
        return None
    if tc.dtype == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on CPU: fp32 (bf16 CPU matmuls are slow without AMX/AVX512-BF16)


class _MetricsLog:
    """OUT/metrics.jsonl (one JSON object a line) and, optionally, TensorBoard."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.path = out / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                print("warning: --tensorboard needs `pip install tensorboard`", file=sys.stderr)

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written by a run that died after its last checkpoint)."""
        if not self.enabled or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
        tmp = self.path.with_name(".metrics.jsonl.tmp")
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


# --- the trainer ----------------------------------------------------------------------------------
class Trainer:
    """Builds (or takes) the model, data and optimizer for a `TrainConfig` and runs the loop."""

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
        self.trainable_only = trainable_only_checkpoints
        self.tokenizer = tokenizer
        self.tokenizer_dir: Path | None = None
        self.generate_fn = generate_fn
        self.data_dir: Path | None = None
        self.tokenizer_sha256: str | None = None

        if task is None:
            task, model_config = self._pretraining_setup(model_config)
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
        warmup = tc.warmup_steps
        if warmup is None:
            warmup = max(1, round(0.05 * tc.max_steps)) if tc.max_steps > 1 else 0
        self.warmup_steps = warmup
        self.scheduler = make_scheduler(
            self.optimizer, tc.max_steps, warmup, tc.schedule, tc.min_lr_ratio, tc.decay_fraction
        )
        self.amp_dtype = autocast_dtype(tc, self.device)

        world = self.info.world_size
        if tc.batch_size % world:
            raise ValueError(f"batch_size: {tc.batch_size} is not divisible by {world} ranks")
        per_rank = tc.batch_size // world
        micro = tc.micro_batch_size or per_rank
        if per_rank % micro:
            raise ValueError(
                f"micro_batch_size: {micro} does not divide the per-rank batch {per_rank}"
            )
        self.micro = micro
        self.accum = per_rank // micro
        self.step = 0
        self.samples_seen = 0
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.best_val: float | None = None
        self.log = _MetricsLog(self.out, self.is_main, tc.tensorboard)
        self.telemetry, self.balance = self._diagnostics(tc)
        self.n_params = sum(p.numel() for p in unwrap(self.model).parameters())
        self.n_trainable = sum(
            p.numel() for p in unwrap(self.model).parameters() if p.requires_grad
        )
        seq = tc.seq_len
        self.flops_per_token = (
            model_flops_per_token(self.model_config, seq)
            if isinstance(self.model_config, Config)
            else 6.0 * self.n_params
        )
        if self.n_trainable < self.n_params:
            # Frozen weights need no weight gradients: ~4 instead of 6 FLOPs per weight.
            frozen = self.n_params - self.n_trainable
            self.flops_per_token -= 2.0 * frozen
        if tc.resume:
            self._resume()
        if self.is_main and self.model_config is not None and self.step == 0:
            self.model_config.save(self.out / "config.json")
            (self.out / "train_config.json").write_text(json.dumps(tc.to_dict(), indent=2) + "\n")

    # -- setup ---------------------------------------------------------------------------------
    def _pretraining_setup(self, model_config: Config | None) -> tuple[Task, Config]:
        tc = self.tc
        if model_config is None:
            if tc.config:
                model_config = Config.load(tc.config)
            else:
                model_config = Config.preset(tc.preset or "tiny")
        data = tc.data
        if data is None:
            vocab = tc.vocab_size or (
                model_config.vocab_size if model_config.vocab_size <= 16384 else 8192
            )
            if self.is_main:  # prepared once, by rank 0; the others find the cached result
                default_data_dir(vocab, tc.tokenizer)
            barrier(self.info)
            data = str(default_data_dir(vocab, tc.tokenizer))
        self.data_dir = Path(data)
        from glassformer.tokenizer import Tokenizer
        from glassformer.training.data import load_manifest

        manifest = load_manifest(self.data_dir)
        tok_json = self.data_dir / manifest["tokenizer"]
        tok_cfg = self.data_dir / "tokenizer_config.json"
        self.tokenizer = Tokenizer.from_tokenizer_json(
            tok_json, tok_cfg if tok_cfg.exists() else None
        )
        self.tokenizer_dir = self.data_dir
        self.tokenizer_sha256 = manifest["tokenizer_sha256"]
        if tc.data is not None and tc.tokenizer is not None:
            # The ids on disk only mean something under the tokenizer that wrote them.
            given = Path(tc.tokenizer)
            given = given / "tokenizer.json" if given.is_dir() else given
            from glassformer.training.data import tokenizer_sha256

            if tokenizer_sha256(given) != self.tokenizer_sha256:
                raise ValueError(
                    f"--tokenizer {tc.tokenizer} is not the tokenizer {self.data_dir} was "
                    "prepared with (SHA-256 differs from its manifest)"
                )
        changes: dict[str, Any] = {"vocab_size": self.tokenizer.vocab_size}
        if model_config.max_seq_len < tc.seq_len:
            changes["max_seq_len"] = tc.seq_len
        if tc.init_std is not None:
            changes["init_std"] = tc.init_std
        eos = self.tokenizer.eos_id
        if eos is not None:
            changes.update(eos_token_id=eos, bos_token_id=None)
        model_config = model_config.replace(**changes)
        return LMTask(self.data_dir, tc.seq_len, tc.seed), model_config

    # -- checkpoints -----------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any] | None:
        """Collective under FSDP; returns the state on rank 0, None elsewhere."""
        msd, osd = full_state(self.model, self.optimizer, self.info, self.trainable_only)
        # Serialised to bytes first: all_gather_object cannot carry tensors on every backend.
        buf = io.BytesIO()
        torch.save(ckpt.capture_rng(), buf)
        blobs = all_gather_object(buf.getvalue(), self.info)
        rngs = [torch.load(io.BytesIO(b), weights_only=True) for b in blobs]
        if not self.is_main:
            return None
        return {
            "format": 1,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "tokens_seen": self.tokens_seen,
            "elapsed": self.elapsed,
            "best_val": self.best_val,
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
        }

    def save_checkpoint(self) -> Path:
        state = self._checkpoint_state()
        path = ckpt.checkpoint_path(self.out, self.step)
        if self.is_main:
            assert state is not None
            ckpt.save_checkpoint(path, state)
            ckpt.prune_checkpoints(self.out, self.tc.keep_checkpoints)
        barrier(self.info)
        return path

    def _resume(self) -> None:
        found = ckpt.latest_checkpoint(self.out)
        if found is None:
            if self.is_main:
                print(f"resume: no checkpoint in {self.out}; starting fresh", file=sys.stderr)
            return
        path, state = found
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
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.best_val = state.get("best_val")
        rngs = state.get("rng") or []
        if rngs:
            # Same world size: each rank gets its own generators back; otherwise rank 0's.
            same = len(rngs) == self.info.world_size
            ckpt.restore_rng(rngs[self.info.rank] if same else rngs[0])
        self.log.truncate_after(self.step)
        self.resumed_from = str(path)
        if self.is_main:
            print(f"resumed from {path} (step {self.step})", file=sys.stderr)

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

    # -- evaluation ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

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

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        n = self.task.eval_samples()
        if n <= 0:
            return {}
        world, rank, b = self.info.world_size, self.info.rank, self.micro
        # The same samples whatever the world size: eval_batches global batches, split.
        total = min(n, self.tc.eval_batches * self.tc.batch_size)
        total -= total % world
        total = max(total, world)
        per_rank = total // world
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        extras: dict[str, torch.Tensor] = {}
        first = rank * per_rank
        done = 0
        while done < per_rank:
            count = min(b, per_rank - done)
            batch = self._to_device(self.task.eval_batch(first + done, count))
            with self._autocast():
                loss_sum, extra = self.task.loss(self.model, batch)
            sums[0] += loss_sum.double()
            sums[1] += self.task.count(batch)
            for k, v in extra.items():
                extras[k] = extras.get(k, torch.zeros((), dtype=torch.float64, device=self.device))
                extras[k] += v.double()
            done += count
        self.model.train()
        all_reduce_sum(sums, self.info)
        loss = float(sums[0] / sums[1])
        out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}
        for k, v in sorted(extras.items()):
            all_reduce_sum(v, self.info)
            out[f"val_{k}"] = float(v / sums[1])
        return out

    def sample_text(self) -> str | None:
        if self.generate_fn is not None:
            return self.generate_fn(self.model)
        if not self.tc.sample_tokens or self.tokenizer is None:
            return None
        if not hasattr(unwrap(self.model), "new_cache"):
            return None  # not a language model (a classifier): nothing to sample
        from glassformer.generation import GenerationConfig, generate

        sample_prompt = getattr(self.task, "sample_prompt", None)
        prompt = sample_prompt() if callable(sample_prompt) else self.tc.sample_prompt
        # Chat prompts carry special-token strings (<|im_start|>): parse them.
        ids = self.tokenizer.encode(prompt, add_special_tokens=False, parse_special=True)
        if not ids:
            return None
        # FSDP needs every rank in the forward (parameters are all-gathered); DDP and a
        # single process can use the plain module. All ranks generate the same text.
        net = self.model if is_fsdp(self.model) else unwrap(self.model)
        net.eval()
        cfg = GenerationConfig(
            max_new_tokens=self.tc.sample_tokens,
            temperature=0.8,
            top_k=40,
            seed=self.tc.seed,  # its own generator: the training RNG stream is untouched
        )
        try:
            with self._autocast():
                result = generate(net, self.tokenizer, ids, cfg)
        finally:
            net.train()
        return prompt + result.text  # type: ignore[union-attr]

    # -- the loop --------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        tc, info = self.tc, self.info
        world, b, accum = info.world_size, self.micro, self.accum
        global_batch = tc.batch_size
        peak_dtype = "bf16" if self.amp_dtype else "fp32"
        peak, peak_source = peak_flops(self.device, peak_dtype)
        peak *= world
        self.model.train()
        bar = None
        if self.is_main and tc.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, unit="step", dynamic_ncols=True)
        status = "completed"
        error: str | None = None
        last: dict[str, Any] = {}
        eval_result: dict[str, float] = {}
        sample: str | None = None
        start_step = self.step
        run_tokens = 0
        run_time = 0.0
        params = [p for p in self.model.parameters() if p.requires_grad]
        if tc.eval_at_start and self.step == 0:
            start_eval = self.evaluate()
            if start_eval:
                self.log.write({"step": 0, **start_eval})
                if self.is_main:
                    (bar.write if bar is not None else _stderr)(
                        "step 0: " + ", ".join(f"{k} {v:.4f}" for k, v in start_eval.items())
                    )
        try:
            while self.step < tc.max_steps:
                t0 = time.perf_counter()
                # This rank's micro-batches of the global batch (sample indices are global).
                batches = [
                    self._to_device(
                        self.task.batch(self.samples_seen + (m * world + info.rank) * b, b)
                    )
                    for m in range(accum)
                ]
                counts = torch.tensor(
                    [float(sum(self.task.count(x) for x in batches))], device=self.device
                )
                n_items = float(all_reduce_sum(counts, info)[0])
                loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
                for m, batch in enumerate(batches):
                    with no_sync(self.forward_model, skip=m < accum - 1), self._autocast():
                        loss_sum, _ = self.task.loss(self.forward_model, batch)
                    # sum/N per micro-batch; x world because DDP and FSDP average over ranks.
                    objective = loss_sum * (world / max(n_items, 1.0))
                    if self.balance is not None:  # identical on every rank: no x world
                        objective = objective + self.balance(unwrap(self.model)) / accum
                    objective.backward()
                    loss_total += loss_sum.detach().double()
                all_reduce_sum(loss_total, info)
                loss = float(loss_total) / max(n_items, 1.0)
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"non-finite loss {loss} at step {self.step}")
                if tc.grad_clip > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                else:
                    grads = [p.grad for p in params if p.grad is not None]
                    norm = torch.nn.utils.get_total_norm(grads)
                if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
                    norm = norm.full_tensor()
                grad_norm = float(norm)
                if not math.isfinite(grad_norm):
                    raise TrainingDiverged(f"non-finite gradient norm at step {self.step}")
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.samples_seen += global_batch
                self.step += 1
                if self.telemetry is not None:
                    self.telemetry(self.step, unwrap(self.model))
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                tokens = sum(int(x["input_ids"].numel()) for x in batches) * world
                self.tokens_seen += tokens
                if self.step > start_step + 1 or tc.max_steps - start_step == 1:
                    # steady state: the first step of a run pays for warm-up (and compilation)
                    run_tokens += tokens
                    run_time += dt
                tok_s = tokens / dt if dt > 0 else 0.0
                mfu = self.flops_per_token * tok_s / peak if peak > 0 else 0.0
                last = {
                    "step": self.step,
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "tokens": self.tokens_seen,
                    "tokens_per_s": tok_s,
                    "mfu": mfu,
                    "step_time": dt,
                    "items": int(n_items),
                }
                if tc.log_every and (self.step % tc.log_every == 0 or self.step == tc.max_steps):
                    self.log.write(last)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", mfu=f"{100 * mfu:.1f}%"
                    )
                final = self.step == tc.max_steps
                if (tc.eval_every and self.step % tc.eval_every == 0) or final:
                    if self.device.type == "cpu":
                        peak = max(peak, world * cpu_matmul_rate(peak_dtype))
                    eval_result = self.evaluate()
                    sample = self.sample_text()
                    if eval_result:
                        v = eval_result["val_loss"]
                        self.best_val = v if self.best_val is None else min(self.best_val, v)
                        self.log.write({"step": self.step, **eval_result})
                    if self.is_main:
                        msg = f"step {self.step}: " + ", ".join(
                            f"{k} {v:.4f}" for k, v in eval_result.items()
                        )
                        if sample is not None:
                            self.log.write({"step": self.step, "sample": sample})
                            msg += f"\n  sample: {sample!r}"
                        (bar.write if bar is not None else _stderr)(msg)
                pause = bool(tc.stop_after) and self.step - start_step >= (tc.stop_after or 0)
                if (tc.checkpoint_every and self.step % tc.checkpoint_every == 0) or final or pause:
                    self.save_checkpoint()
                if pause and not final:
                    status = "stopped"
                    break
        except TrainingDiverged as err:
            status, error = "diverged", str(err)
            if self.is_main:
                self.log.write({"step": self.step, "event": "diverged", "error": str(err)})
                msg = f"stopped: {err}; the last good checkpoint is kept"
                (bar.write if bar is not None else _stderr)(msg)
        finally:
            if bar is not None:
                bar.close()
        if status == "completed" and tc.export:
            self.export(self.out / "final")
        checkpoints = ckpt.list_checkpoints(self.out)
        summary = {
            "status": status,
            "error": error,
            "steps": self.step,
            "start_step": start_step,
            "loss": last.get("loss"),
            "first_loss": None,
            "start_val_loss": None,
            "tokens": self.tokens_seen,
            "seconds": self.elapsed,
            "tokens_per_s": run_tokens / run_time if run_time > 0 else 0.0,
            "mfu": (
                self.flops_per_token * run_tokens / run_time / peak
                if run_time > 0 and peak > 0
                else 0.0
            ),
            "mfu_reference": peak_source,
            "params": self.n_params,
            "trainable_params": self.n_trainable,
            "world_size": world,
            "out": str(self.out),
            "checkpoint": str(checkpoints[-1][1]) if checkpoints else None,
            "sample": sample,
            **eval_result,
        }
        if self.is_main:
            summary["first_loss"] = _first_loss(self.out / "metrics.jsonl")
            summary["start_val_loss"] = _start_val_loss(self.out / "metrics.jsonl")
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log.close()
        return summary

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
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(msd, directory / "model.pt")
            print(f"note: no HF export ({err}); wrote model.pt", file=sys.stderr)
        self.model_config.save(directory / "glassformer_config.json")
        if self.tokenizer_dir is not None:
            for name in ("tokenizer.json", "tokenizer_config.json"):
                src = self.tokenizer_dir / name
                if src.is_file():
                    shutil.copyfile(src, directory / name)
        barrier(self.info)


def _first_loss(path: Path) -> float | None:
    if not path.exists():
        return None
    with path.open() as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "loss" in rec:
                return rec["loss"]
    return None


def _start_val_loss(path: Path) -> float | None:
    """The validation loss logged at step 0 (with eval_at_start), if any."""
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step") == 0 and "val_loss" in rec:
            return rec["val_loss"]
    return None


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def train(tc: TrainConfig, **kwargs: Any) -> dict[str, Any]:
    """Build a Trainer for `tc` and run it; returns the summary (see `Trainer.train`)."""
    trainer = Trainer(tc, **kwargs)
    try:
        return trainer.train()
    finally:
        from glassformer.training.distributed import cleanup

        if kwargs.get("info") is None:
            cleanup(trainer.info)
