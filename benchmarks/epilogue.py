"""GEMM-epilogue fusion, measured: a Transformer block and the LM-head loss, forward + backward,
as the unfused eager program, `torch.compile(mode="max-autotune")`, Liger Kernel's fusions, and
the generated Triton kernels (`glassformer.fusion`), at Llama-3-8B and Qwen3-30B-A3B shapes.

    python benchmarks/epilogue.py                      # CPU: scaled-down shapes, float32
    python benchmarks/epilogue.py --device cuda        # GPU: full shapes, bf16, 8 x 2048 tokens
    python benchmarks/epilogue.py --json out.json      # also write every figure as JSON

Per workload and variant it reports:
- time: median and interquartile range of `--rounds` fwd+bwd steps; the variants alternate
  round after round (so drift and contention hit all alike); `vs eager` is the median of the
  within-round ratios.
- max |diff| against eager (outputs and gradients): every variant is checked, not just timed.
- bytes: what the explorer's cost model predicts the step moves unfused and fused
  (`explorer.costs.analyze`, train mode, this dtype) and what the eager step's ATen ops were
  seen to read and write (a dispatcher count: every executed op's input and output tensors,
  views excluded; this is the unfused program's traffic before any cache reuse).
- effective bandwidth: the explorer's bytes for that program (fused bytes for the fused
  variants, unfused for the others) / median time.
- the LM-head loss's peak memory over its inputs: CUDA's allocator peak on a GPU; on the CPU
  the peak resident set of a fresh process (Linux), for the eager and chunked variants.

On the CPU the Triton kernels (the generated ones and Liger's) can only run under Triton's
interpreter, whose time is numpy's and says nothing about the kernels: there they are checked
for correctness at a tiny shape and their time is not reported. `torch.compile` on the CPU
generates C++ (Inductor), so its CPU times are real.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

# Triton picks the interpreter when its kernels are defined: decide before anything imports it.
if "--device" not in sys.argv or "cpu" in sys.argv[sys.argv.index("--device") + 1 :][:1]:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from glassformer.components.head_loss import linear_cross_entropy
from glassformer.config import Config
from glassformer.explorer.costs import analyze
from glassformer.model import Transformer
from glassformer.presets import get_preset

SHAPES = ("llama-3-8b", "qwen3-30b-a3b")
# CPU: every width, head count and expert count divided by 8 (at least 1), vocabulary too.
CPU_SCALE = 8


def shaped_config(name: str, device: str, layers: int = 1) -> Config:
    cfg = get_preset(name, n_layers=layers)
    if device == "cuda":
        return cfg
    s = CPU_SCALE
    over: dict[str, Any] = {
        "d_model": cfg.d_model // s,
        "n_heads": max(1, cfg.n_heads // s),
        "n_kv_heads": max(1, cfg.n_kv_heads // s),
        "d_ff": cfg.d_ff // s,
        "vocab_size": cfg.vocab_size // s,
    }
    if cfg.n_experts:
        over.update(
            n_experts=cfg.n_experts // s,
            n_experts_per_token=max(1, cfg.n_experts_per_token // s),
            moe_d_ff=cfg.moe_d_ff // s,
        )
    return cfg.replace(**over)


# --- the variants ----------------------------------------------------------------------------


def _fuse() -> Callable[[torch.nn.Module], torch.nn.Module] | None:
    """`glassformer.fusion.fuse`, where this tree has it."""
    try:
        from glassformer.fusion import fuse  # type: ignore[attr-defined]
    except ImportError:
        return None
    return fuse


def _triton_runs(device: str) -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def liger_block(block: torch.nn.Module) -> torch.nn.Module | None:
    """The block with Liger's fusions where it has the same ones: its RMSNorm kernel for every
    RMSNorm (block norms, QK-norms) and its SwiGLU kernel (SiLU(gate) * up, forward and
    backward in one pass) in a dense MLP. Liger has no fused attention projections, and its
    RoPE kernel takes HF's layout, so those stay eager. None without liger_kernel."""
    try:
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
        from liger_kernel.transformers import LigerRMSNorm
    except ImportError:
        return None
    from glassformer.components.norms import RMSNorm

    for parent in list(block.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is RMSNorm and not child.unit_offset:
                dim = child.weight.shape[0]
                liger = LigerRMSNorm(dim, eps=child.eps).to(child.weight)
                liger.weight.data.copy_(child.weight.data)
                setattr(parent, name, liger)
        if hasattr(parent, "glu") and getattr(parent, "gate_proj", None) is not None:
            parent.glu = LigerSiLUMulFunction.apply
    return block


def liger_head_loss() -> Callable[..., torch.Tensor] | None:
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=-100, reduction="sum")
    return lambda h, w, y: loss(w, h, y)


# --- measuring -------------------------------------------------------------------------------


class ByteCounter(TorchDispatchMode):
    """Bytes the executed ATen ops read (their tensor inputs) and write (their outputs); views
    move nothing and are skipped."""

    def __init__(self) -> None:
        super().__init__()
        self.read = self.written = self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        if getattr(func, "is_view", False) or func.__name__.startswith(("detach", "view")):
            return out
        self.ops += 1

        def nbytes(x: Any) -> int:
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            if isinstance(x, (list, tuple)):
                return sum(nbytes(t) for t in x)
            return 0

        self.read += nbytes(list(args)) + nbytes(list((kwargs or {}).values()))
        self.written += nbytes(out)
        return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def alternate(
    fns: dict[str, Callable[[], object]], rounds: int, device: str
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (and compilation)
        fn()
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]], base: str = "eager") -> dict[str, dict[str, float]]:
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[name] = {
            "median_ms": 1e3 * statistics.median(ts),
            "iqr_ms": 1e3 * (q[2] - q[0]),
            "vs_eager": statistics.median(b / t for b, t in zip(times[base], ts, strict=True)),
        }
    return out


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b, strict=True))


def explorer_bytes(cfg: Config, section_kind: str, batch: int, seq: int, dtype: str) -> dict:
    """The explorer's per-layer (or head) train-mode traffic, unfused and fused."""
    result = analyze(cfg, "train", batch, seq, dtype)
    sec = next(s for s in result["sections"] if s["kind"] == section_kind)
    return {"unfused": sec["epilogue"]["bytes_unfused"], "fused": sec["epilogue"]["bytes_fused"]}


# --- the block -------------------------------------------------------------------------------


class BlockStep:
    """One block's forward and backward against a fixed output gradient."""

    def __init__(self, model: Transformer, x: torch.Tensor, grad: torch.Tensor) -> None:
        self.model, self.x, self.grad = model, x, grad
        positions = torch.arange(x.shape[1], device=x.device)
        rope = model.rope_tables(positions, x.dtype)
        self.rope = rope.get(model.config.layer_type(0)) if rope else None
        self.positions = positions

    def __call__(self, block: torch.nn.Module) -> list[torch.Tensor]:
        x = self.x.detach().requires_grad_()
        for p in block.parameters():
            p.grad = None
        out = block(x, self.rope, self.positions)
        out.backward(self.grad)
        wgrads = [p.grad for p in block.parameters() if p.grad is not None]
        return [out.detach(), x.grad, *wgrads]


def bench_block(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = args.device, args.dtype
    cfg = shaped_config(name, device)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device=device, dtype=dtype)
    block = model.layers[0]
    x = torch.randn(args.batch, args.seq, cfg.d_model, device=device, dtype=dtype)
    step = BlockStep(model, x, torch.randn_like(x))
    ref = step(block)
    variants: dict[str, torch.nn.Module] = {"eager": block}
    notes: dict[str, str] = {}
    if not args.no_compile:
        variants["compile"] = torch.compile(block, mode="max-autotune")
    fuse = _fuse()
    if fuse is None:
        notes["fused"] = "glassformer.fusion.fuse is not in this tree"
    elif not _triton_runs(device):
        notes["fused"] = "triton cannot run here"
    else:
        fused_model = fuse(_copy(model))
        if device == "cuda":
            variants["fused"] = fused_model.layers[0]
        else:
            notes["fused"] = interpreted_check_block(name, fuse)
    liger = _copy_block(model) if device == "cuda" else None
    if device != "cuda":
        notes["liger"] = "Liger's kernels are Triton: GPU only (interpreter time is numpy's)"
    elif liger_block(liger) is None:
        notes["liger"] = "liger_kernel is not installed"
    else:
        variants["liger"] = liger
    diffs = {k: max_diff(step(m), ref) for k, m in variants.items() if k != "eager"}
    times = alternate({k: (lambda m=m: step(m)) for k, m in variants.items()}, args.rounds, device)
    counter = ByteCounter()
    with counter:
        step(block)
    dtype_name = "bf16" if dtype == torch.bfloat16 else "fp32"
    predicted = explorer_bytes(cfg, "block", args.batch, args.seq, dtype_name)
    stats = summary(times)
    for k, row in stats.items():
        row["max_abs_diff_vs_eager"] = diffs.get(k, 0.0)
        moved = predicted["fused" if k == "fused" else "unfused"]
        row["effective_GBps"] = moved / (row["median_ms"] / 1e3) / 1e9
    return {
        "workload": f"block {name}",
        "config": _shape_text(cfg, args),
        "variants": stats,
        "not_run": notes,
        "explorer_bytes": predicted,
        "observed_eager_bytes": {"read": counter.read, "written": counter.written,
                                 "total": counter.read + counter.written, "aten_ops": counter.ops},
    }  # fmt: skip


def _copy(model: Transformer) -> Transformer:
    clone = Transformer(model.config).to(next(model.parameters()))
    clone.load_state_dict(model.state_dict())
    return clone


def _copy_block(model: Transformer) -> torch.nn.Module:
    return _copy(model).layers[0]


def interpreted_check_block(name: str, fuse: Callable) -> str:
    """A tiny version of the block through the generated kernels under the interpreter."""
    cfg = shaped_config(name, "cpu").replace(d_model=48, n_heads=2, n_kv_heads=1, d_ff=80)
    if cfg.n_experts:
        cfg = cfg.replace(n_experts=4, n_experts_per_token=2, moe_d_ff=40)
    torch.manual_seed(0)
    model = Transformer(cfg)
    x = torch.randn(1, 37, cfg.d_model)
    step = BlockStep(model, x, torch.randn_like(x))
    ref = step(model.layers[0])
    got = step(fuse(_copy(model)).layers[0])
    return f"interpreter check at d=48, 37 tokens: max |diff| {max_diff(got, ref):.2e} (not timed)"


# --- the LM-head loss ------------------------------------------------------------------------


def unfused_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(F.linear(h, w).float(), y, ignore_index=-100, reduction="sum")


def head_variants(device: str, compile_: bool) -> tuple[dict[str, Callable], dict[str, str]]:
    fns: dict[str, Callable] = {"eager": unfused_loss, "chunked": linear_cross_entropy}
    notes: dict[str, str] = {}
    if compile_:
        fns["compile"] = torch.compile(unfused_loss, mode="max-autotune")
    if device == "cuda" and _triton_runs(device):
        from glassformer.fusion.lm_head_loss import linear_cross_entropy_triton

        fns["fused"] = linear_cross_entropy_triton
        liger = liger_head_loss()
        if liger is None:
            notes["liger"] = "liger_kernel is not installed"
        else:
            fns["liger"] = liger
    else:
        notes["fused"] = interpreted_check_head() if _triton_runs(device) else "no triton"
        notes["liger"] = "Liger's kernels are Triton: GPU only (interpreter time is numpy's)"
    return fns, notes


def interpreted_check_head() -> str:
    from glassformer.fusion.lm_head_loss import linear_cross_entropy_triton

    h, w, y = head_inputs(37, 48, 1000, "cpu", torch.float32)
    ref = HeadStep(h, w, y)(unfused_loss)
    got = HeadStep(h, w, y)(linear_cross_entropy_triton)
    return f"interpreter check at 37 x 48 -> 1000: max |diff| {max_diff(got, ref):.2e} (not timed)"


def head_inputs(n: int, d: int, vocab: int, device: str, dtype: torch.dtype) -> tuple:
    gen = torch.Generator(device="cpu").manual_seed(0)
    h = torch.randn(n, d, generator=gen).to(device, dtype)
    w = (torch.randn(vocab, d, generator=gen) * 0.02).to(device, dtype)
    y = torch.randint(0, vocab, (n,), generator=gen)
    y[::7] = -100
    return h, w, y.to(device)


class HeadStep:
    def __init__(self, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> None:
        self.h, self.w, self.y = h, w, y

    def __call__(self, fn: Callable) -> list[torch.Tensor]:
        h = self.h.detach().requires_grad_()
        w = self.w.detach().requires_grad_()
        loss = fn(h, w, self.y)
        loss.backward()
        return [loss.detach().reshape(1), h.grad, w.grad]


def peak_bytes_cuda(fn: Callable, step: HeadStep) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step(fn)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def bench_head(name: str, args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = args.device, args.dtype
    cfg = shaped_config(name, device)
    n = args.batch * args.seq
    h, w, y = head_inputs(n, cfg.d_model, cfg.vocab_size, device, dtype)
    step = HeadStep(h, w, y)
    fns, notes = head_variants(device, not args.no_compile)
    ref = step(fns["eager"])
    # bf16 losses are sums over many tokens: compare them relative to their size
    scale = max(1.0, abs(ref[0].item()))
    diffs = {k: max_diff(step(f)[1:], ref[1:]) for k, f in fns.items() if k != "eager"}
    loss_rel = {k: abs(step(f)[0].item() - ref[0].item()) / scale for k, f in fns.items()}
    times = alternate({k: (lambda f=f: step(f)) for k, f in fns.items()}, args.rounds, device)
    stats = summary(times)
    dtype_name = "bf16" if dtype == torch.bfloat16 else "fp32"
    predicted = explorer_bytes(cfg, "head", args.batch, args.seq, dtype_name)
    peaks: dict[str, float] = {}
    for k, f in fns.items():
        if device == "cuda" and k != "compile":
            peaks[k] = peak_bytes_cuda(f, step)
    if device == "cpu" and not args.no_peak:
        for k in ("eager", "chunked", "fused"):
            if k == "fused" and not _triton_runs(device):
                continue
            peaks[k] = peak_rss_child(k, name, args)
    if "fused" in peaks and "fused" not in stats:
        stats["fused"] = {"interpreted_peak_MB": peaks["fused"] / 2**20}
    for k, row in stats.items():
        if "median_ms" not in row:
            if "eager" in peaks:
                row["peak_vs_eager"] = peaks[k] / peaks["eager"]
            continue
        row["max_abs_grad_diff_vs_eager"] = diffs.get(k, 0.0)
        row["loss_rel_diff_vs_eager"] = loss_rel[k]
        moved = predicted["fused" if k in ("fused", "liger", "chunked") else "unfused"]
        row["effective_GBps"] = moved / (row["median_ms"] / 1e3) / 1e9
        if k in peaks:
            row["peak_MB"] = peaks[k] / 2**20
    if "eager" in peaks:
        for k, row in stats.items():
            if k in peaks and k != "eager" and "peak_vs_eager" not in row:
                row["peak_vs_eager"] = peaks[k] / peaks["eager"]
    return {
        "workload": f"LM head + loss {name}",
        "config": f"{n} tokens x {cfg.d_model} -> vocabulary {cfg.vocab_size}, {dtype_name}",
        "variants": stats,
        "not_run": notes,
        "explorer_bytes": predicted,
    }


def peak_rss_child(variant: str, name: str, args: argparse.Namespace) -> float:
    """Peak RSS growth (bytes) of one head-loss step in a fresh process (Linux)."""
    cmd = [sys.executable, __file__, "--rss-child", variant, name,
           "--batch", str(args.batch), "--seq", str(args.seq)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_child(variant: str, name: str, args: argparse.Namespace) -> None:
    cfg = shaped_config(name, "cpu")
    h, w, y = head_inputs(args.batch * args.seq, cfg.d_model, cfg.vocab_size, "cpu", args.dtype)
    if variant == "fused":  # interpreted: its memory is the kernel's, its time is not
        from glassformer.fusion.lm_head_loss import linear_cross_entropy_triton

        def fn(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return linear_cross_entropy_triton(h, w, y, tiles=(64, 256, 128))
    else:
        fn = {"eager": unfused_loss, "chunked": linear_cross_entropy}[variant]
    step = HeadStep(h, w, y)
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark
        f.write("5")
    before = _status_kb("VmRSS")
    step(fn)
    print((_status_kb("VmHWM") - before) * 1024)


# --- the whole model -------------------------------------------------------------------------


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A `--layers`-layer model at the shape: the training loss (labels given), fwd+bwd."""
    device, dtype = args.device, args.dtype
    cfg = shaped_config(name, device, layers=args.layers)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device=device, dtype=dtype)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device=device)

    def step(m: torch.nn.Module) -> list[torch.Tensor]:
        for p in m.parameters():
            p.grad = None
        loss = m(ids[:, :-1], labels=ids[:, 1:])
        loss.backward()
        return [loss.detach().reshape(1)] + [p.grad for p in m.parameters() if p.grad is not None]

    variants: dict[str, torch.nn.Module] = {"eager": model}
    notes: dict[str, str] = {}
    if not args.no_compile:
        variants["compile"] = torch.compile(model, mode="max-autotune")
    fuse = _fuse()
    if fuse is None:
        notes["fused"] = "glassformer.fusion.fuse is not in this tree"
    elif device != "cuda":
        notes["fused"] = "generated kernels run only interpreted here (tests/fusion check them)"
    else:
        variants["fused"] = fuse(_copy(model))
    ref = step(model)
    diffs = {k: max_diff(step(m)[:1], ref[:1]) for k, m in variants.items() if k != "eager"}
    times = alternate({k: (lambda m=m: step(m)) for k, m in variants.items()}, args.rounds, device)
    stats = summary(times)
    for k, row in stats.items():
        row["loss_abs_diff_vs_eager"] = diffs.get(k, 0.0)
    return {
        "workload": f"model {name} ({args.layers} layers, training loss)",
        "config": _shape_text(cfg, args),
        "variants": stats,
        "not_run": notes,
    }


def _shape_text(cfg: Config, args: argparse.Namespace) -> str:
    moe = f", {cfg.n_experts} experts top-{cfg.n_experts_per_token} x {cfg.moe_d_ff}"
    return (
        f"d {cfg.d_model}, {cfg.n_heads}/{cfg.n_kv_heads} heads x {cfg.head_dim}, "
        f"d_ff {cfg.d_ff}{moe if cfg.n_experts else ''}, {args.batch} x {args.seq} tokens, "
        f"{'bf16' if args.dtype == torch.bfloat16 else 'fp32'}"
    )


def print_report(report: list[dict[str, Any]], header: str) -> None:
    print(header)
    for w in report:
        print(f"\n{w['workload']}: {w['config']}")
        for k, row in w["variants"].items():
            cells = "  ".join(
                f"{c} {v:.3g}" if isinstance(v, float) else f"{c} {v}" for c, v in row.items()
            )
            print(f"  {k:8s} {cells}")
        for k, why in w.get("not_run", {}).items():
            print(f"  {k:8s} not timed: {why}")
        if "explorer_bytes" in w:
            e = w["explorer_bytes"]
            print(f"  explorer bytes: unfused {e['unfused']:.4g}, fused {e['fused']:.4g}")
        if "observed_eager_bytes" in w:
            o = w["observed_eager_bytes"]
            print(f"  observed eager bytes (dispatcher): {o['total']:.4g} in {o['aten_ops']} ops")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--rounds", type=int, default=None, help="default: 7 CPU, 20 GPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 1 CPU, 8 GPU")
    parser.add_argument("--seq", type=int, default=None, help="default: 256 CPU, 2048 GPU")
    parser.add_argument("--layers", type=int, default=2, help="layers of the per-model run")
    parser.add_argument("--threads", type=int, default=2)  # the CPU's; a GPU run ignores it
    parser.add_argument("--only", choices=("block", "head", "model"), action="append")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-peak", action="store_true", help="skip the CPU peak-RSS runs")
    parser.add_argument("--json", help="write the report to this file")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    args.rounds = args.rounds or (20 if gpu else 7)
    args.batch = args.batch or (8 if gpu else 1)
    args.seq = args.seq or (2048 if gpu else 256)
    args.dtype = torch.bfloat16 if gpu else torch.float32
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(*args.rss_child, args)
        return
    if gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    benches = {"block": bench_block, "head": bench_head, "model": bench_model}
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    device = torch.cuda.get_device_name() if gpu else f"CPU, {args.threads} threads{load}"
    report: list[dict[str, Any]] = []
    for kind in args.only or benches:
        for name in args.shapes:
            report.append(benches[kind](name, args))
            if args.json:  # after every workload, so a run cut short keeps what it measured
                payload = {"device": device, "rounds": args.rounds, "report": report}
                with open(args.json + ".tmp", "w") as f:
                    json.dump(payload, f, indent=2)
                os.replace(args.json + ".tmp", args.json)
    print_report(report, f"{device}; {args.rounds} alternating rounds; times in ms (median, IQR)")


if __name__ == "__main__":
    main()
