"""A small vision-language model from scratch on the CPU: encoder-free vs a ViT encoder at
equal training FLOPs.

Two runs of `glassformer train --task vlm` on the synthetic picture questions
(`glassformer.training.vlm_data`):

    encoder-free   the tiny-vlm preset: raw 16 x 16 patches -> LN, Dense, LN, 2D positions,
                   LN, RMSNorm, Linear -> the decoder (Gemma 4's unified path)
    vit            the same, with --encoder-layers ViT layers over the patches before the
                   projection into the decoder (`components/vision_encoder.py`)

Both get the same training FLOPs: the FLOPs of one training step (forward and backward, every
matrix product) are counted for each model on the same batch, and the ViT run's step count is
the encoder-free run's scaled by their ratio. Each run checkpoints ten times; every checkpoint
is scored by exact match on the same held-out questions (`glassformer eval vlm`), giving
accuracy against training FLOPs; the training loss comes from each run's metrics.jsonl. Wall
time and the process's CPU time are recorded per run (the CPU time is what a busy, shared
machine does not inflate), with the machine's load average beside them.

    python benchmarks/vlm.py --out runs/vlm-bench [--steps 3500] [--encoder-layers 2]
                             [--questions colour,shape,count] [--parallel]
                             [--plot docs/img/vlm_curves.png] [--json] [--eval-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ARMS = ("encoder-free", "vit")


def model_config(encoder_layers: int) -> Any:
    from glassformer.config import Config

    cfg = Config.preset("tiny-vlm")
    return cfg.replace(vision_encoder_layers=encoder_layers) if encoder_layers else cfg


def step_flops(cfg: Any, batch_size: int, seed: int, kinds: tuple[str, ...]) -> float:
    """Matrix FLOPs of one training step (forward + backward) on the run's first batch,
    counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from glassformer.model import Transformer
    from glassformer.training.config import TrainConfig
    from glassformer.training.vlm import vlm_task

    task, cfg = vlm_task(TrainConfig(seed=seed), cfg, kinds)
    torch.manual_seed(0)
    model = Transformer(cfg)
    batch = task.batch(0, batch_size)
    with FlopCounterMode(display=False) as counter:
        loss, _ = task.loss(model, batch)
        loss.backward()
    return float(counter.get_total_flops())


def train_cmd(arm: str, out: Path, steps: int, args: argparse.Namespace) -> list[str]:
    every = max(1, steps // 10)
    cmd = [
        sys.executable, "-m", "glassformer.cli", "train", "--task", "vlm",
        "--out", str(out / arm), "--max-steps", str(steps), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--warmup-steps", str(max(1, steps // 20)),
        "--weight-decay", "0.0", "--eval-every", str(every), "--eval-batches", "4",
        "--checkpoint-every", str(every), "--keep-checkpoints", "0", "--seed", str(args.seed),
        "--threads", str(args.threads), "--no-progress", "--no-plot", "--no-export", "--force",
        "--questions", args.questions, "--json",
    ]  # fmt: skip
    if arm == "vit":
        cmd += ["--set", f"vision_encoder_layers={args.encoder_layers}"]
    return cmd


def run_arms(cmds: dict[str, list[str]], parallel: bool, out: Path) -> dict[str, dict[str, Any]]:
    """Run the training commands; per run: wall seconds, CPU seconds (its own rusage), the
    load average at its start and end."""
    results: dict[str, dict[str, Any]] = {}
    pending = list(cmds.items())
    running: dict[int, tuple[str, float, Any, list[float]]] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    while pending or running:
        while pending and (parallel or not running):
            arm, cmd = pending.pop(0)
            log = open(out / f"{arm}.log", "w")  # noqa: SIM115 (closed when the child ends)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[proc.pid] = (arm, time.perf_counter(), log, list(os.getloadavg()))
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        arm, t0, log, load0 = running.pop(pid)
        log.close()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{arm}: training failed; see {out / (arm + '.log')}")
        results[arm] = {
            "wall_s": time.perf_counter() - t0,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "load_start": load0,
            "load_end": list(os.getloadavg()),
        }
    return results


def curves(run: Path, flops_per_step: float, n_eval: int) -> dict[str, Any]:
    from glassformer.training.checkpoint import list_checkpoints
    from glassformer.training.plot import read_metrics
    from glassformer.training.vlm import evaluate_vlm, load_vlm_checkpoint

    points = []
    for step, path in list_checkpoints(run):
        model, gen, patch, _ = load_vlm_checkpoint(path)
        result = evaluate_vlm(model, gen, patch, n_eval)
        points.append({"step": step, "flops": step * flops_per_step, **result})
    records = read_metrics(run)
    loss = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), float)]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    return {"exact_match": points, "loss": loss, "val_loss": val}


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glassformer.training.plot import _ema

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm, colour in zip(ARMS, ("tab:blue", "tab:orange"), strict=True):
        r = results["arms"][arm]
        f = r["flops_per_step"]
        label = f"{arm} ({r['steps']} steps)"
        pts = r["curves"]["exact_match"]
        ax_acc.plot([p["flops"] for p in pts], [100 * p["exact_match"] for p in pts], "o-",
                    color=colour, label=label)  # fmt: skip
        steps, losses = zip(*r["curves"]["loss"], strict=True)
        ax_loss.plot([s * f for s in steps], _ema(list(losses), 0.95), color=colour, label=label)
        if r["curves"]["val_loss"]:
            vs, vl = zip(*r["curves"]["val_loss"], strict=True)
            ax_loss.plot([s * f for s in vs], vl, "s--", color=colour, ms=4, alpha=0.7)
    ax_acc.set(xlabel="training FLOPs", ylabel="held-out exact match (%)", ylim=(0, 100),
               title="Exact match on held-out questions")  # fmt: skip
    ax_acc.axhline(90, color="grey", lw=0.8, ls=":")
    ax_loss.set(xlabel="training FLOPs", ylabel="answer-token loss", yscale="log",
                title="Training loss (EMA) and validation loss (squares)")  # fmt: skip
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/vlm-bench"))
    ap.add_argument("--steps", type=int, default=3500, help="Steps of the encoder-free run.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--encoder-layers", type=int, default=2)
    ap.add_argument("--questions", default="colour,shape,count", help="Question types asked.")
    ap.add_argument(
        "--eval-only", action="store_true", help="Score the runs already in OUT (no training)."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="Compute threads per run.")
    ap.add_argument("--eval-examples", type=int, default=500)
    ap.add_argument("--parallel", action="store_true", help="Train both runs at once.")
    ap.add_argument("--plot", type=Path, default=None, help="Default: OUT/vlm_curves.png.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    configs = {"encoder-free": model_config(0), "vit": model_config(args.encoder_layers)}
    kinds = tuple(args.questions.split(","))
    flops = {
        arm: step_flops(cfg, args.batch_size, args.seed, kinds) for arm, cfg in configs.items()
    }
    steps = {"encoder-free": args.steps}
    steps["vit"] = max(1, round(args.steps * flops["encoder-free"] / flops["vit"]))
    timings_file = args.out / "timings.json"
    if args.eval_only:
        timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    else:
        cmds = {arm: train_cmd(arm, args.out, steps[arm], args) for arm in ARMS}
        timings = run_arms(cmds, args.parallel, args.out)
        timings_file.write_text(json.dumps(timings, indent=2) + "\n")
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "arms": {},
    }
    for arm in ARMS:
        cfg = configs[arm]
        from glassformer.model import Transformer

        with torch.device("meta"):
            n_params = sum(p.numel() for p in Transformer(cfg).parameters())
        results["arms"][arm] = {
            "steps": steps[arm],
            "flops_per_step": flops[arm],
            "train_flops": steps[arm] * flops[arm],
            "params": n_params,
            **timings.get(arm, {}),
            "curves": curves(args.out / arm, flops[arm], args.eval_examples),
        }
    path = args.plot or args.out / "vlm_curves.png"
    plot(results, path)
    results["plot"] = str(path)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for arm in ARMS:
        r = results["arms"][arm]
        last = r["curves"]["exact_match"][-1]
        per = ", ".join(f"{k} {100 * v:.1f}" for k, v in last["per_type"].items())
        print(f"{arm:13s} {r['params']:,} params, {r['steps']} steps x {r['flops_per_step']:.3g}"
              f" FLOPs = {r['train_flops']:.3g}; wall {r.get('wall_s', 0):.0f}s,"
              f" CPU {r.get('cpu_s', 0):.0f}s;"
              f" exact match {100 * last['exact_match']:.1f}% ({per})")  # fmt: skip
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
