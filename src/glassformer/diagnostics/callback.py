"""Telemetry during training: a callback that logs the 1:1-rule and rank-collapse measures to
`metrics.jsonl`, warns when they leave their safe ranges, and an optional balance regulariser.

    snapshot = telemetry_snapshot(model, probe)           # the same dict as the CLI's --json
    cb = TelemetryCallback(every=100, path="run/metrics.jsonl", probe=probe)
    for step in ...:
        ...
        cb(step, model)                                   # logs on every `every`-th step
    loss = loss + reg(model)                              # reg = BalanceRegularizer(weight=1e-3)

The balance regulariser (beyond the study, which only measures):

    L_balance = mean_l | log ||W_mlp^l||_2 - log ||W_attn^l||_2 | = mean_l |log rho_l|

with W_mlp, W_attn as in `lyapunov.py` (W_down W_up; W_o, or W_o W_o^T when W_o is not square,
whose norm is ||W_o||_2^2). The norms are differentiable: by default one power-iteration step
per call with a stop-gradient on the persisted singular vectors, sigma = u^T M v, whose
gradient u v^T is exact at convergence (Miyato et al. 2018's spectral-norm trick); or
`method="exact"` (torch.linalg.matrix_norm(ord=2), a full SVD per matrix).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glassformer.diagnostics.lyapunov import DEFAULT_BAND, DEFAULT_ERANK_THRESHOLD, MoEChoice
from glassformer.diagnostics.report import _clean, analyze_model
from glassformer.diagnostics.spectral import PowerIterationState, spectral_norm_differentiable

logger = logging.getLogger("glassformer.telemetry")


def telemetry_snapshot(
    model: nn.Module,
    probe: Sequence[Sequence[int]] | None = None,
    *,
    projections: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """The telemetry of `model` now: `analyze_model` with the training defaults (weight-only
    1:1-rule analysis; the data-driven measures when a `probe` of token ids is given;
    weightwatcher metrics only if `projections`). Leaves the model's train/eval mode as it was.
    """
    return analyze_model(model, probe, projections=projections, **kwargs)


def probe_sequences(
    tokenizer: Any | None,
    vocab_size: int,
    *,
    seq_len: int = 64,
    n_sequences: int = 4,
) -> list[list[int]]:
    """Fixed probe batch from the shipped held-out text (tokenizer) or its bytes (none)."""
    from glassformer.diagnostics.activations import byte_chunks, encode_chunks, probe_text

    text = probe_text()
    if tokenizer is not None:
        return encode_chunks(tokenizer, text, seq_len=seq_len, max_sequences=n_sequences)
    return byte_chunks(text, vocab_size, seq_len=seq_len, max_sequences=n_sequences)


@dataclass(eq=False)
class TelemetryCallback:
    """Log telemetry every `every` steps as one JSON line {"event": "telemetry", "step", ...}.

    Records go to `sink` when given (e.g. the trainer's own metrics writer, so that one process
    owns metrics.jsonl), else are appended to `path`; inf/nan are written as null.

    Warnings (through `warn`, default: the `glassformer.telemetry` logger plus
    `warnings.warn`), each also stored in the record under "warnings":
    - a layer's spectral ratio leaves the band (reported once per exit, not every step);
    - the weight-only erank falls below the collapse threshold in some layer;
    - the data effective rank (min over layers) falls below `rank_drop` times its value at the
      first snapshot, or below the collapse threshold.
    """

    every: int
    path: str | Path | None = "metrics.jsonl"
    probe: Sequence[Sequence[int]] | None = None
    _: KW_ONLY
    projections: bool = False
    band: tuple[float, float] = DEFAULT_BAND
    erank_threshold: float = DEFAULT_ERANK_THRESHOLD
    rank_drop: float = 0.5
    include_layers: bool = True
    warn: Callable[[str], None] | None = None
    sink: Callable[[dict[str, Any]], None] | None = None
    history: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _in_band: list[bool] | None = field(default=None, init=False, repr=False)
    _first_data_erank: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.every <= 0:
            raise ValueError(f"every: must be a positive number of steps, got {self.every}")
        self.path = Path(self.path) if self.path is not None else None
        self.probe = [list(s) for s in self.probe] if self.probe is not None else None
        self.warn = self.warn or self._default_warn

    @staticmethod
    def _default_warn(message: str) -> None:
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

    def should_log(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, step: int, model: nn.Module, **extra: Any) -> dict[str, Any] | None:
        """Log at every `every`-th step; returns the record (None on other steps)."""
        if not self.should_log(step):
            return None
        return self.log(step, model, **extra)

    on_step_end = __call__

    def log(self, step: int, model: nn.Module, **extra: Any) -> dict[str, Any]:
        snap = telemetry_snapshot(
            model,
            self.probe,
            projections=self.projections,
            band=self.band,
            erank_threshold=self.erank_threshold,
        )
        messages = self._check(step, snap)
        record: dict[str, Any] = {"event": "telemetry", "step": step, **extra}
        record.update({k: v for k, v in snap.items() if self.include_layers or k != "layers"})
        record["warnings"] = messages
        self.history.append(record)
        if self.sink is not None:
            self.sink(_clean(record))
        elif self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(json.dumps(_clean(record)) + "\n")
        return record

    def _check(self, step: int, snap: dict[str, Any]) -> list[str]:
        messages = []
        lo, hi = self.band
        in_band = [bool(r["in_band"]) for r in snap["layers"]]
        prev = self._in_band or [True] * len(in_band)
        left = [
            i for i, (now, was) in enumerate(zip(in_band, prev, strict=False)) if was and not now
        ]
        if left:
            detail = ", ".join(
                f"layer {i}: rho={snap['layers'][i]['spectral_ratio']:.3g}" for i in left[:6]
            )
            more = f" (+{len(left) - 6} more)" if len(left) > 6 else ""
            messages.append(
                f"step {step}: spectral ratio left the band [{lo:g}, {hi:g}] in {len(left)} "
                f"layer(s): {detail}{more}"
            )
        self._in_band = in_band
        if snap["collapse_layer"] is not None:
            messages.append(
                f"step {step}: weight-only effective rank below {self.erank_threshold:g} from "
                f"layer {snap['collapse_layer']} (min {snap['effective_rank_min']:.3g})"
            )
        if "data" in snap:
            erank = snap["data"]["effective_rank_min"]
            if self._first_data_erank is None:
                self._first_data_erank = erank
            elif erank < self.rank_drop * self._first_data_erank:
                messages.append(
                    f"step {step}: representation effective rank fell to {erank:.3g} "
                    f"(first snapshot: {self._first_data_erank:.3g})"
                )
            if snap["data"]["collapse_layer"] is not None:
                messages.append(
                    f"step {step}: token representations collapsed (data erank < "
                    f"{self.erank_threshold:g}) from layer {snap['data']['collapse_layer']}"
                )
        for m in messages:
            self.warn(m)
        return messages


# --- the balance regulariser ---------------------------------------------------------------------
def _mlp_factors(block: nn.Module, moe: MoEChoice) -> list[torch.Tensor]:
    """Differentiable factors whose product is W_mlp (MoE: the summed d x d map, formed)."""
    from glassformer.diagnostics.lyapunov import mlp_factor_pairs

    terms = mlp_factor_pairs(block, moe)
    if len(terms) == 1 and terms[0][0] == 1.0:
        _, down, up = terms[0]
        return [down, up]
    total = sum(c * (down @ up) for c, down, up in terms)
    return [total]  # type: ignore[list-item]


def balance_loss(
    model: nn.Module,
    *,
    method: str = "power",
    state: PowerIterationState | None = None,
    n_iter: int = 1,
    moe: MoEChoice = "mean",
    eps: float = 1e-12,
) -> torch.Tensor:
    """L_balance = mean over layers of |log ||W_mlp||_2 - log ||W_attn||_2| (differentiable)."""
    terms = []
    for i, block in enumerate(model.layers):
        mlp = spectral_norm_differentiable(
            _mlp_factors(block, moe), state=state, key=f"{i}.mlp", n_iter=n_iter, method=method
        )
        wo = block.attn.o_proj.weight
        o = spectral_norm_differentiable(
            [wo], state=state, key=f"{i}.o", n_iter=n_iter, method=method
        )
        # ||W_o W_o^T||_2 = ||W_o||_2^2: log of it is 2 log ||W_o||_2 (no d x d product needed)
        log_attn = torch.log(o + eps) * (1.0 if wo.shape[0] == wo.shape[1] else 2.0)
        terms.append(torch.abs(torch.log(mlp + eps) - log_attn))
    return torch.stack(terms).mean()


class BalanceRegularizer:
    """weight * L_balance, with power-iteration vectors persisted across calls."""

    def __init__(
        self, weight: float, *, method: str = "power", n_iter: int = 1, moe: MoEChoice = "mean"
    ) -> None:
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"weight: must be a finite number >= 0, got {weight}")
        self.weight = weight
        self.method = method
        self.n_iter = n_iter
        self.moe = moe
        self.state = PowerIterationState()

    def __call__(self, model: nn.Module) -> torch.Tensor:
        if self.weight == 0:
            return torch.zeros((), device=model.embed.weight.device)
        loss = balance_loss(
            model, method=self.method, state=self.state, n_iter=self.n_iter, moe=self.moe
        )
        return self.weight * loss
