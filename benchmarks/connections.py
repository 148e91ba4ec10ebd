"""Cross-layer connections at equal training compute: the plain residual stream against
DenseFormer, MUDDFormer, Hyper-Connections and mHC (components/connections/).

For each depth, the plain model trains for --steps optimizer steps; that many steps times its
training FLOPs per step (the explorer's count: `analyze(cfg, "train")`, matrix and other FLOPs)
is the budget every variant gets, so a variant whose step costs more trains fewer steps. Every
(variant, seed) is one `Trainer` run on the default corpus in a subprocess of its own, so its
peak memory (the process's maximum resident set) is its own. Each run reports the final
validation loss, parameters, FLOPs, tokens/s, and the spectral telemetry of the trained model
(effective rank of each layer's hidden states on validation text, and each layer's
MLP/attention spectral ratio, from glassformer.diagnostics); the learned connection weights
(DenseFormer's DWA weights, MUDDFormer's mean dynamic weights, Hyper-Connections' mean
width connections) are kept for heat maps.

    python benchmarks/connections.py --out runs/connections [--depths 4 8] [--seeds 0 1 2]
        [--d-model 64] [--steps 60] [--batch 8] [--seq 64] [--variants ...] [--threads 1]

writes OUT/results.json, OUT/table.md, OUT/loss_vs_flops.png, OUT/weights_<depth>.png and
OUT/spectra_<depth>.png. Timings on a shared CPU are noisy; the table reports each run's mean.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("residual", "denseformer", "mudd", "hyper", "mhc")


def model_config(d_model: int, depth: int, kind: str, seq: int) -> Any:
    from glassformer.config import Config

    return Config.preset("tiny").replace(
        name=f"L{depth}-{kind}", d_model=d_model, n_layers=depth, n_heads=4, n_kv_heads=2,
        head_dim=None, d_ff=3 * d_model, max_seq_len=max(seq, 64), connections=kind,
    )  # fmt: skip


def step_flops(cfg: Any, batch: int, seq: int) -> float:
    from glassformer.explorer import analyze

    a = analyze(cfg, "train", batch, seq, dtype="fp32", mtp=False)
    return float(a["flops_matmul_causal"] + a["flops_other"])


# --- one run (in its own process) ----------------------------------------------------------------
def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from glassformer.training.config import TrainConfig
    from glassformer.training.trainer import Trainer

    torch.set_num_threads(spec["threads"])
    cfg = model_config(spec["d_model"], spec["depth"], spec["kind"], spec["seq"])
    tc = TrainConfig(
        out=spec["out"], preset=None, seq_len=spec["seq"], batch_size=spec["batch"],
        max_steps=spec["steps"], lr=spec["lr"], eval_every=0, eval_batches=spec["eval_batches"],
        sample_tokens=0, checkpoint_every=0, keep_checkpoints=1, seed=spec["seed"],
        progress=False, export=False, force=True, dtype="fp32", device="cpu",
    )  # fmt: skip
    t0 = time.perf_counter()
    trainer = Trainer(tc, model_config=cfg)
    summary = trainer.train()
    wall = time.perf_counter() - t0
    model = trainer.model
    out = {
        **spec,
        "val_loss": summary.get("val_loss"),
        "tokens_per_s": summary["tokens_per_s"],
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": wall,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "losses": _losses(Path(spec["out"]) / "metrics.jsonl"),
    }
    out.update(_diagnostics(model, trainer, spec))
    return out


def _losses(path: Path) -> list[float]:
    losses = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("loss") is not None and row.get("step") is not None and "val_loss" not in row:
            losses.append(float(row["loss"]))
    return losses


def _diagnostics(model: Any, trainer: Any, spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from glassformer.diagnostics.activations import activation_analysis
    from glassformer.diagnostics.lyapunov import spectral_ratios

    model.eval()
    seqs = _probe(trainer, spec)
    acts = activation_analysis(model, seqs) if seqs else {"layers": []}
    ratios = spectral_ratios(model)
    out: dict[str, Any] = {
        "effective_rank": [m.get("effective_rank") for m in acts["layers"]],
        "spectral_ratio": [r["spectral_ratio"] for r in ratios],
    }
    conn = model.connections
    if conn is None or not seqs:
        return out
    ids = torch.tensor(seqs[:4], dtype=torch.long)
    with torch.no_grad():
        out["weights"] = _connection_weights(model, ids)
    return out


def _probe(trainer: Any, spec: dict[str, Any]) -> list[list[int]]:
    """The first validation windows of the run (the task's own held-out split)."""
    del spec
    if not trainer.task.eval_samples():
        return []
    ids = trainer.task.eval_batch(0, 4)["input_ids"]
    return [row.tolist() for row in ids]


def _connection_weights(model: Any, ids: Any) -> list[list[float]]:
    """A [layers, sources] matrix of the learned connection weights, for a heat map."""
    import torch

    conn = model.connections
    kind = model.config.connections
    if kind == "denseformer":
        return conn.weights().tolist()
    from glassformer.diagnostics.activations import collect_hidden_states

    states = collect_hidden_states(model, ids)
    if kind == "mudd":
        # mean over tokens of A_i (the residual stream R: the last one), padded to L + 1
        rows = []
        n = len(states)
        for i, dense in enumerate(conn.dense, start=1):
            a = dense.weights(states[i]).mean(dim=(0, 1))[-1]
            rows.append(a.tolist() + [float("nan")] * (n - len(a)))
        return rows
    # hyper / mhc: each connection's mean sublayer-input weights over the n streams, from the
    # streams it really reads (re-run with a hook on the widths)
    rows: list[list[float]] = []
    hooks = []
    for hc in conn.hc:

        def width(h: torch.Tensor, _hc: Any = hc, _orig: Any = hc.width) -> Any:
            alpha, _ = _hc.coefficients(h)
            rows.append(alpha[..., 0].reshape(-1, conn.n).mean(0).tolist())
            return _orig(h)

        hc.width = width
        hooks.append(hc)
    try:
        model.hidden_states(ids)
    finally:
        for hc in hooks:
            del hc.width
    del states
    return rows


# --- the sweep ---------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="runs/connections")
    ap.add_argument("--depths", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60, help="the plain model's steps")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        spec = json.loads(args.one)
        result = run_one(spec)
        Path(spec["result"]).write_text(json.dumps(result) + "\n")
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results: list[dict[str, Any]] = []
    for depth in args.depths:
        plain = model_config(args.d_model, depth, "residual", args.seq)
        budget = args.steps * step_flops(plain, args.batch, args.seq)
        for kind in args.variants:
            cfg = model_config(args.d_model, depth, kind, args.seq)
            per_step = step_flops(cfg, args.batch, args.seq)
            steps = max(1, round(budget / per_step))  # within half a step of the budget
            for seed in args.seeds:
                tag = f"L{depth}-{kind}-s{seed}"
                spec = dict(
                    depth=depth, kind=kind, seed=seed, steps=steps, d_model=args.d_model,
                    batch=args.batch, seq=args.seq, lr=args.lr, threads=args.threads,
                    eval_batches=args.eval_batches, out=str(out / "runs" / tag),
                    result=str(out / "runs" / f"{tag}.json"), flops_per_step=per_step,
                )  # fmt: skip
                cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
                t0 = time.time()
                subprocess.run(cmd, check=True, env=os.environ.copy())
                r = json.loads(Path(spec["result"]).read_text())
                r["flops"] = steps * per_step
                results.append(r)
                print(f"{tag}: {steps} steps, val_loss {r['val_loss']:.4f}, "
                      f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip
                (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    meta = {
        "seconds": time.time() - started,
        "args": vars(args),
        "machine": _machine(),
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1))
    (out / "table.md").write_text(table(results, meta))
    plots(results, out)
    print((out / "table.md").read_text())


def _machine() -> str:
    import platform

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}"
    )


def table(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"{meta['machine']}; {meta['seconds'] / 60:.1f} min in all",
        "",
        "| depth | connections | val loss (mean +- std, n) | params | steps | train FLOPs "
        "| peak RSS | tokens/s | eff. rank (last layer) | spectral ratio (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["depth"], r["kind"]) for r in results},
                  key=lambda k: (k[0], VARIANTS.index(k[1])))  # fmt: skip
    for depth, kind in keys:
        rs = [r for r in results if r["depth"] == depth and r["kind"] == kind]
        loss = [r["val_loss"] for r in rs]
        std = statistics.stdev(loss) if len(loss) > 1 else 0.0
        ranks = [r["effective_rank"][-1] for r in rs if r["effective_rank"]]
        ratio = [statistics.fmean(r["spectral_ratio"]) for r in rs]
        lines.append(
            f"| {depth} | {kind} | {statistics.fmean(loss):.4f} +- {std:.4f} ({len(loss)}) "
            f"| {rs[0]['params']:,} | {rs[0]['steps']} | {rs[0]['flops']:.3g} "
            f"| {statistics.fmean(r['max_rss_bytes'] for r in rs) / 2**20:.0f} MiB "
            f"| {statistics.fmean(r['tokens_per_s'] for r in rs):.0f} "
            f"| {statistics.fmean(ranks) if ranks else float('nan'):.1f} "
            f"| {statistics.fmean(ratio):.3f} |"
        )
    return "\n".join(lines) + "\n"


def plots(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    depths = sorted({r["depth"] for r in results})
    fig, axes = plt.subplots(1, len(depths), figsize=(6 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths, strict=True):
        for kind in VARIANTS:
            rs = [r for r in results if r["depth"] == depth and r["kind"] == kind]
            if not rs:
                continue
            n = min(len(r["losses"]) for r in rs)
            curve = np.mean([r["losses"][:n] for r in rs], axis=0)
            k = max(1, n // 10)  # running mean over a tenth of the run
            smooth = np.convolve(curve, np.ones(k) / k, mode="valid")
            x = (np.arange(len(smooth)) + k) * rs[0]["flops_per_step"]
            ax.plot(x, smooth, label=kind)
        ax.set_title(f"{depth} layers: training loss (mean of seeds) vs training FLOPs")
        ax.set_xlabel("training FLOPs (explorer count)")
        ax.set_ylabel("loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_vs_flops.png", dpi=110)
    plt.close(fig)
    for depth in depths:
        kinds = [k for k in VARIANTS if any(r["depth"] == depth and r["kind"] == k
                                            and r.get("weights") for r in results)]  # fmt: skip
        if kinds:
            fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False)
            for ax, kind in zip(axes[0], kinds, strict=True):
                r = next(r for r in results if r["depth"] == depth and r["kind"] == kind
                         and r["seed"] == min(x["seed"] for x in results))  # fmt: skip
                w = np.array(r["weights"], dtype=float)
                im = ax.imshow(w, cmap="viridis", aspect="auto")
                ax.set_xticks(range(w.shape[1]))
                first = 0 if kind in ("hyper", "mhc") else 1  # row r: after block r + 1
                ax.set_yticks(range(w.shape[0]), labels=[str(r + first) for r in range(w.shape[0])])
                ax.set_title(
                    {
                        "denseformer": "DWA weights alpha[i, j]",
                        "mudd": "MUDD mean A[i, j] (R stream)",
                        "hyper": "HC mean A_m (input from stream s)",
                        "mhc": "mHC mean A_pre (input from stream s)",
                    }[kind],
                    fontsize=9,
                )
                ax.set_xlabel("stream s" if kind in ("hyper", "mhc") else "source block j")
                ax.set_ylabel("sublayer k" if kind in ("hyper", "mhc") else "after block i")
                fig.colorbar(im, ax=ax)
            fig.suptitle(f"learned connection weights, {depth} layers (seed 0)")
            fig.tight_layout()
            fig.savefig(out / f"weights_{depth}.png", dpi=110)
            plt.close(fig)
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for kind in VARIANTS:
            rs = [r for r in results if r["depth"] == depth and r["kind"] == kind]
            if not rs or not rs[0]["effective_rank"]:
                continue
            a1.plot(np.mean([r["effective_rank"] for r in rs], axis=0), marker="o", label=kind)
            a2.plot(np.mean([r["spectral_ratio"] for r in rs], axis=0), marker="o", label=kind)
        a1.set_title("effective rank of each layer's hidden states")
        a2.set_title("MLP / attention spectral ratio per layer")
        for ax in (a1, a2):
            ax.set_xlabel("layer")
            ax.legend(fontsize=8)
        fig.suptitle(f"{depth} layers, mean of seeds")
        fig.tight_layout()
        fig.savefig(out / f"spectra_{depth}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
