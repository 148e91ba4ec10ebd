"""Hardware presets for the roofline: peak dense FLOP/s per dtype and memory bandwidth.

The roofline model (Williams, Waterman & Patterson 2009) bounds an op's time by
    t = max(FLOPs / peak_flops(dtype), bytes / bandwidth)
and calls the op compute-bound when the first term wins, memory-bound otherwise. The crossing
point, peak / bandwidth FLOP per byte, is the machine balance (the ridge of the roofline).

Matrix FLOPs run at the tensor-core (matrix-engine) peak of the compute dtype; the rest
(norms, softmax, activations, RoPE, residual adds) at the plain FP32 vector peak, because those
kernels do not use the matrix units.

Figures are the vendors' published *dense* peaks (no 2:4 sparsity), per GPU:
- NVIDIA H100 SXM5 and H200 SXM (same GH100 compute; H200 has HBM3e): H100/H200 datasheets.
- NVIDIA A100 80GB SXM: A100 datasheet (no FP8 units).
- NVIDIA B200 (HGX B200, 1000 W): HGX B200 datasheet, sparse figures halved.
- NVIDIA RTX 4090: Ada Lovelace whitepaper, appendix table, FP32-accumulate rates (what
  PyTorch's bf16/fp16 GEMMs use; the FP16-accumulate rates are twice these).
- AMD Instinct MI300X: AMD datasheet.
- Apple M1 Max/Ultra, M2 Max/Ultra: Apple's announced GPU TFLOPS (FP32; the GPU runs FP16
  at the same rate and has no low-precision matrix units) and unified-memory bandwidth.
- this-cpu: measured on the spot by a short matmul and memory-copy probe (`probe_cpu`).

A dtype without native support falls back (and says so): fp8 -> bf16, int8 -> bf16 -> fp16,
bf16 -> fp16. int4 is modelled as weight-only quantisation (W4A16): the GEMM dequantises to
bf16 in its main loop, so int4 computes at the bf16 rate and only the weight bytes shrink.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TERA = 1e12


@dataclass(frozen=True)
class Hardware:
    name: str
    label: str
    peak: dict[str, float]  # dtype -> dense matrix FLOP/s
    vector_flops: float  # FP32 non-matrix FLOP/s (for flops_other)
    bandwidth: float  # memory bytes/s
    memory_bytes: float  # device memory capacity
    source: str
    measured: bool = False
    aliases: tuple[str, ...] = field(default=())

    def compute_peak(self, dtype: str) -> tuple[float, str]:
        """(matrix FLOP/s, the dtype whose rate is used) for a compute dtype."""
        for candidate in FALLBACK.get(dtype, (dtype,)):
            if candidate in self.peak:
                return self.peak[candidate], candidate
        raise ValueError(f"hardware {self.name}: no peak for dtype {dtype!r}")

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "label": self.label,
            "peak": dict(self.peak),
            "vector_flops": self.vector_flops,
            "bandwidth": self.bandwidth,
            "memory_bytes": self.memory_bytes,
            "source": self.source,
            "measured": self.measured,
        }


# The rate used when a dtype has no native matrix path on a device.
FALLBACK: dict[str, tuple[str, ...]] = {
    "fp32": ("fp32",),
    "fp16": ("fp16", "bf16"),
    "bf16": ("bf16", "fp16"),
    "fp8": ("fp8", "bf16", "fp16"),
    "int8": ("int8", "bf16", "fp16"),
}


GB = 1e9


def _nv(bf16: float, fp8: float | None, int8: float, tf32: float, fp32: float) -> dict[str, float]:
    peak = {"bf16": bf16 * TERA, "fp16": bf16 * TERA, "int8": int8 * TERA}
    peak.update({"tf32": tf32 * TERA, "fp32": fp32 * TERA})
    if fp8 is not None:
        peak["fp8"] = fp8 * TERA
    return peak


def _gpu(
    name: str,
    label: str,
    peak: dict[str, float],
    bandwidth: float,
    memory_gb: float,
    source: str,
    aliases: tuple[str, ...] = (),
) -> Hardware:
    """A device whose non-matrix ops run at its FP32 peak."""
    return Hardware(
        name, label, peak, peak["fp32"], bandwidth, memory_gb * GB, source, aliases=aliases
    )


def _apple(
    name: str,
    label: str,
    tflops: float,
    bandwidth_gb: float,
    memory_gb: float,
    aliases: tuple[str, ...] = (),
) -> Hardware:
    """An Apple GPU: FP16 at the FP32 rate, no low-precision matrix units."""
    peak = {"fp32": tflops * TERA, "fp16": tflops * TERA}
    source = "Apple announcement (GPU FP32 TFLOPS)"
    return _gpu(name, label, peak, bandwidth_gb * GB, memory_gb, source, aliases)


_H100 = _gpu(
    "h100-sxm",
    "NVIDIA H100 SXM5 80GB",
    _nv(989.4, 1978.9, 1978.9, 494.7, 66.9),
    3.35e12,
    80,
    "NVIDIA H100 datasheet (dense)",
    aliases=("h100",),
)
PRESETS: dict[str, Hardware] = {
    h.name: h
    for h in (
        _H100,
        # the same GH100 compute with HBM3e
        replace(
            _H100,
            name="h200",
            label="NVIDIA H200 SXM 141GB",
            bandwidth=4.8e12,
            memory_bytes=141 * GB,
            source="NVIDIA H200 datasheet (dense)",
            aliases=("h200-sxm",),
        ),
        _gpu(
            "a100-80gb",
            "NVIDIA A100 80GB SXM",
            {**_nv(312.0, None, 624.0, 156.0, 19.5), "int4": 1248 * TERA},
            2.039e12,
            80,
            "NVIDIA A100 datasheet (dense; no FP8)",
            aliases=("a100",),
        ),
        _gpu(
            "b200",
            "NVIDIA B200 (HGX, 1000 W)",
            _nv(2250.0, 4500.0, 4500.0, 1100.0, 75.0),
            7.7e12,
            180,
            "NVIDIA HGX B200 datasheet, sparse figures halved",
        ),
        _gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090",
            {**_nv(165.2, 330.3, 660.6, 82.6, 82.6), "int4": 1321.2 * TERA},
            1.008e12,
            24,
            "NVIDIA Ada whitepaper (dense, FP32 accumulate)",
            aliases=("4090",),
        ),
        _gpu(
            "mi300x",
            "AMD Instinct MI300X",
            _nv(1307.4, 2614.9, 2614.9, 653.7, 163.4),
            5.3e12,
            192,
            "AMD Instinct MI300X datasheet (dense)",
        ),
        _apple("apple-m1-max", "Apple M1 Max (32-core GPU)", 10.4, 400, 64),
        _apple("apple-m1-ultra", "Apple M1 Ultra (64-core GPU)", 21.0, 800, 128),
        _apple("apple-m2-max", "Apple M2 Max (38-core GPU)", 13.6, 400, 96),
        _apple(
            "apple-m2-ultra",
            "Apple M2 Ultra (76-core GPU)",
            27.2,
            800,
            192,
            aliases=("apple", "apple-m", "m2-ultra"),
        ),
    )
}

DEFAULT_HARDWARE = "h100-sxm"
_probe_cache: Hardware | None = None


def hardware_names() -> list[str]:
    return [*PRESETS, "this-cpu"]


def matmul_rate(dtype: torch.dtype, n: int, seconds: float) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` on this CPU, measured now: one warm-up (thread
    pool, packing buffers), then as many products as fit in `seconds`. The one probe behind
    `this-cpu`, the trainer's MFU denominator and the training benchmark."""
    import torch

    a = torch.randn(n, n, dtype=torch.float32).to(dtype)
    b = torch.randn(n, n, dtype=torch.float32).to(dtype)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def get_hardware(name: str) -> Hardware:
    """A preset by name or alias; "this-cpu" measures the machine (once per process)."""
    key = name.strip().lower()
    if key == "this-cpu":
        return probe_cpu()
    if key in PRESETS:
        return PRESETS[key]
    for hw in PRESETS.values():
        if key in hw.aliases:
            return hw
    known = hardware_names() + [a for hw in PRESETS.values() for a in hw.aliases]
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"hardware: unknown hardware {name!r}{hint} (known: {', '.join(PRESETS)})")


def probe_cpu(seconds: float = 0.25) -> Hardware:
    """Measure this CPU: fp32 (and bf16) matmul FLOP/s and memory-copy bandwidth.

    Short on purpose (about a second in all): a 512-1024 matmul repeated for `seconds`, and a
    64 MiB tensor copied a few times (copy reads and writes, so bytes = 2 * size per copy).
    """
    global _probe_cache
    if _probe_cache is not None:
        return _probe_cache
    import torch

    fp32 = matmul_rate(torch.float32, 1024, seconds)
    bf16 = matmul_rate(torch.bfloat16, 512, seconds)
    src = torch.ones(16 * 1024 * 1024, dtype=torch.float32)  # 64 MiB
    dst = torch.empty_like(src)
    dst.copy_(src)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dst.copy_(src)
        reps += 1
    bandwidth = 2 * src.numel() * 4 * reps / (time.perf_counter() - start)
    try:
        import os

        memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        memory = 0.0
    peak = {"fp32": fp32, "bf16": bf16, "fp16": bf16}
    _probe_cache = Hardware(
        "this-cpu",
        f"this CPU ({torch.get_num_threads()} threads, measured)",
        peak,
        fp32,
        bandwidth,
        memory,
        "measured: torch.mm FLOP/s and tensor-copy bandwidth",
        measured=True,
    )
    return _probe_cache
