"""Gated DeltaNet's delta rule: glassformer's chunked prefill and recurrent decode step against
HF transformers' own PyTorch fallbacks on the CPU.

HF's Qwen3.5 layer runs `torch_chunk_gated_delta_rule` (prefill) and
`torch_recurrent_gated_delta_rule` (a decode step) when no compiled kernel is installed, which is
what a CPU user gets. glassformer's layer runs `kernels.dispatch.chunk_gated_delta` (prefill:
the component's `chunk_gated_delta_rule` with its loop over chunks and triangular solves in the
C kernels of `kernels/delta.c`) and `kernels.dispatch.gated_delta_step` (a decode step: the C
kernel), or the component's PyTorch forms where the native kernels are not built. Both sides
get the same unnormalised q, k, v, g, beta (float32) and normalise q and k themselves (HF with
use_qk_l2norm_in_kernel=True, glassformer as its layer does), so each timing covers the same
work. Prefill starts from no state and returns the final state; a decode step starts from the
state the prefill left (its cost does not depend on the length) and is timed over `--steps`
consecutive tokens. The sides run in alternation; the table gives each side's median time with
its spread (min-max over the rounds) and the median of the within-round ratios HF /
glassformer, in wall time and (in brackets) in this process's CPU time, which a busy machine
disturbs less. Outputs and final states must agree to 1e-4.

Default shape: one Qwen3.5 linear layer (Qwen3_5TextConfig's defaults: 16 key heads and 32
value heads of 128 dims), batch 1.

    python benchmarks/linear_attention.py [--lengths 512 1024 2048 4096] [--threads 2]
                                          [--rounds 5] [--steps 16] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from glassformer.threads import limit_spinning

# As glassformer's CLI does, before torch loads its OpenMP runtime: idle threads stop spinning
# sooner, which keeps 2-thread timings meaningful on a busy machine (both sides alike).
limit_spinning()

import torch  # noqa: E402
from transformers.models.qwen3_5.modeling_qwen3_5 import (  # noqa: E402
    torch_chunk_gated_delta_rule,
    torch_recurrent_gated_delta_rule,
)

from glassformer.components.gated_deltanet import CHUNK, l2norm  # noqa: E402
from glassformer.kernels.dispatch import chunk_gated_delta, gated_delta_step  # noqa: E402

Tensors = tuple[torch.Tensor, ...]


def make_inputs(b: int, t: int, hk: int, h: int, dk: int, dv: int, seed: int = 0) -> Tensors:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, t, hk, dk, generator=gen)
    k = torch.randn(b, t, hk, dk, generator=gen)
    v = torch.randn(b, t, h, dv, generator=gen)
    g = -torch.rand(b, t, h, generator=gen) * 0.3  # log-decay <= 0
    beta = torch.rand(b, t, h, generator=gen)
    return q, k, v, g, beta


def ours_rule(rule: Callable[..., Tensors], q, k, v, g, beta, state):  # type: ignore[no-untyped-def]
    """The layer's own path: normalise q, k (q * d_k^-1/2), then the rule."""
    return rule(l2norm(q, q.shape[-1] ** -0.5), l2norm(k), v, g, beta, state)


def ours_prefill(q, k, v, g, beta, state):  # type: ignore[no-untyped-def]
    """The layer's prefill: the chunked form through the dispatcher, as its forward calls it."""
    return chunk_gated_delta(q, k, v, g, beta, state, CHUNK)


def hf_chunk(q, k, v, g, beta, state):  # type: ignore[no-untyped-def]
    return torch_chunk_gated_delta_rule(
        q, k, v, g=g, beta=beta, initial_state=state, output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip


def hf_recurrent(q, k, v, g, beta, state):  # type: ignore[no-untyped-def]
    return torch_recurrent_gated_delta_rule(
        q, k, v, g=g, beta=beta, initial_state=state, output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )  # fmt: skip


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def compare(
    hf: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    ours: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    rounds: int,
) -> dict[str, float]:
    (o_hf, s_hf), (o_us, s_us) = hf(), ours()  # also warms both up
    err = max(float((o_hf - o_us).abs().max()), float((s_hf - s_us).abs().max()))
    if not err <= 1e-4:
        raise SystemExit(f"outputs differ by {err:.2e}")
    hf_t, us_t = [], []
    for _ in range(rounds):
        hf_t.append(timed(hf))
        us_t.append(timed(ours))
    hf_s, us_s = [w for w, _ in hf_t], [w for w, _ in us_t]
    return {
        "hf_ms": 1e3 * statistics.median(hf_s), "hf_spread_ms": 1e3 * (max(hf_s) - min(hf_s)),
        "ours_ms": 1e3 * statistics.median(us_s), "ours_spread_ms": 1e3 * (max(us_s) - min(us_s)),
        "ratio": statistics.median(a / b for a, b in zip(hf_s, us_s, strict=True)),
        "cpu_ratio": statistics.median(a[1] / b[1] for a, b in zip(hf_t, us_t, strict=True)),
        "max_abs_diff": err,
    }  # fmt: skip


def measure(args: argparse.Namespace, t: int) -> dict[str, object]:
    shape = (args.batch, t, args.k_heads, args.v_heads, args.k_dim, args.v_dim)
    q, k, v, g, beta = make_inputs(*shape)
    prefill = compare(
        lambda: hf_chunk(q, k, v, g, beta, None),
        lambda: ours_rule(ours_prefill, q, k, v, g, beta, None),
        args.rounds,
    )
    _, state = ours_rule(ours_prefill, q, k, v, g, beta, None)
    steps = make_inputs(*shape[:1], args.steps, *shape[2:], seed=1)

    def decode(step: Callable[..., tuple[torch.Tensor, torch.Tensor]], s: torch.Tensor) -> Tensors:
        outs = []
        for i in range(args.steps):
            o, s = step(*(x[:, i : i + 1] for x in steps), s)
            outs.append(o)
        return torch.cat(outs, 1), s

    def ours_step(*a: torch.Tensor) -> Tensors:
        return ours_rule(gated_delta_step, *a), a[-1]  # the state advances in place

    dec = compare(
        lambda: decode(hf_recurrent, state),
        lambda: decode(ours_step, state.clone()),  # the copy is timed: HF's step makes new ones
        args.rounds,
    )
    for key in ("hf_ms", "hf_spread_ms", "ours_ms", "ours_spread_ms"):
        dec[key] /= args.steps  # per token
    return {"length": t, "prefill": prefill, "decode": dec}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--k-heads", type=int, default=16)
    parser.add_argument("--v-heads", type=int, default=32)
    parser.add_argument("--k-dim", type=int, default=128)
    parser.add_argument("--v-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="decode steps per timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)  # inference, as the layer decodes
    rows = [measure(args, t) for t in args.lengths]
    if args.json:
        print(json.dumps({"config": vars(args), "rows": rows}, indent=2))
        return
    print(
        f"gated delta rule, batch {args.batch}, {args.k_heads} key heads x {args.k_dim}, "
        f"{args.v_heads} value heads x {args.v_dim}, {args.threads} threads, "
        f"{args.rounds} rounds; decode per token over {args.steps} steps"
    )
    print("| T | prefill HF ms | prefill ours ms | HF / ours (CPU time) | decode HF ms "
          "| decode ours ms | HF / ours (CPU time) | max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        p, d = r["prefill"], r["decode"]
        assert isinstance(p, dict) and isinstance(d, dict)
        print(
            f"| {r['length']} | {p['hf_ms']:.1f} ± {p['hf_spread_ms']:.1f} "
            f"| {p['ours_ms']:.1f} ± {p['ours_spread_ms']:.1f} "
            f"| {p['ratio']:.2f}x ({p['cpu_ratio']:.2f}x) "
            f"| {d['hf_ms']:.3f} ± {d['hf_spread_ms']:.3f} "
            f"| {d['ours_ms']:.3f} ± {d['ours_spread_ms']:.3f} "
            f"| {d['ratio']:.2f}x ({d['cpu_ratio']:.2f}x) "
            f"| {max(p['max_abs_diff'], d['max_abs_diff']):.1e} |"
        )


if __name__ == "__main__":
    main()
