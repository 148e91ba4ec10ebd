"""Throughput and MFU, model FLOPs utilisation (Chowdhery et al. 2022, PaLM, appendix B):

    MFU = model FLOPs per token x tokens/s / peak FLOP/s

Model FLOPs per token are the explorer's exact count for a training step
(`explorer.analyze(config, mode="train")`): forward + backward of every matrix product, three
times the forward's (dX and dW each cost one forward), with attention's two products over the
query-key pairs the model can see (causal, and within the window on sliding-window layers).
Norms, activations, the loss and the optimizer are left out, as in PaLM. For a model with no
sliding windows this is 6 N_matmul + 6 L H d_head (T + 1) per token.

The peak is the datasheet's dense figure on known GPUs. A CPU has no such figure at hand, so
it is a measured square-matmul rate; a single probe can land in a busy moment of a shared
machine, so the loop probes again at each evaluation and keeps the best.

One `Throughput` meter per invocation gives the run's tokens/s and MFU to the progress bar and
the summary alike: tokens over the time of the steps, leaving out the first step (it pays for
warm-up and compilation) unless it is the only one.
"""

from __future__ import annotations

import torch

from glassformer.config import Config

__all__ = ["Throughput", "cpu_matmul_rate", "model_flops_per_token", "peak_flops"]


def model_flops_per_token(config: Config, seq_len: int) -> float:
    """Training matrix FLOPs per token of `seq_len`-token sequences (the explorer's count)."""
    from glassformer.explorer.costs import analyze

    step = analyze(config, "train", batch=1, seq=seq_len, dtype="fp32")
    return step["flops_matmul_causal"] / seq_len


def peak_flops(device: torch.device, dtype: str) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for MFU: the datasheet's dense peak for the
    compute dtype on known GPUs, a measured matmul rate on CPU (`cpu_matmul_rate`)."""
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
    """FLOP/s of an n x n x n matmul on this CPU, measured now. The probe's random operands
    come from a forked generator: the run's own random stream is untouched."""
    from glassformer.explorer.hardware import matmul_rate

    with torch.random.fork_rng(devices=[]):
        return matmul_rate(torch.bfloat16 if dtype == "bf16" else torch.float32, n, seconds)


class Throughput:
    """Tokens/s and MFU of one invocation's steps, over a peak that only grows (re-probed)."""

    def __init__(self, flops_per_token: float, peak: float, peak_source: str) -> None:
        self.flops_per_token = flops_per_token
        self.peak = peak
        self.peak_source = peak_source
        self.steps = 0
        self.tokens = 0
        self.seconds = 0.0

    def add(self, tokens: int, seconds: float, counted: bool) -> None:
        """One step; `counted` False for a warm-up step, which stays out of the run's rate."""
        self.steps += 1
        if counted:
            self.tokens += tokens
            self.seconds += seconds

    def raise_peak(self, peak: float) -> None:
        self.peak = max(self.peak, peak)

    def mfu_of(self, tokens_per_s: float) -> float:
        return self.flops_per_token * tokens_per_s / self.peak if self.peak > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def mfu(self) -> float:
        return self.mfu_of(self.tokens_per_s)
