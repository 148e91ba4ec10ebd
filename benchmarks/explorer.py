"""Analysis time of the Transformer Math Explorer per full-size model, against tracing.

For each preset: the time of `analyze()` (all three modes) and, as the peer, the time to get
the parameter count from HF transformers on the meta device plus — for dense models, whose
forward needs no data-dependent routing — a FlopCounterMode trace of glassformer's model on the
meta device. Both give the same numbers (the tests hold them equal); the explorer does it from
the formulas. Nothing here gates a test: wall-clock figures drift between machines.

    python benchmarks/explorer.py [--seq 2048] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from glassformer.explorer import analyze
from glassformer.presets import get_preset

MODELS = ["gpt2-xl", "llama-3-8b", "llama-3.1-70b", "mixtral-8x7b", "qwen3-30b-a3b",
          "gemma-3-4b", "deepseek-v3"]  # fmt: skip


def explorer_time(name: str, seq: int) -> tuple[float, int, int]:
    cfg = get_preset(name)
    start = time.perf_counter()
    for mode in ("prefill", "decode", "train"):
        result = analyze(cfg, mode, 1, seq)
    return time.perf_counter() - start, result["params_total"], result["flops_matmul"]


def peer_time(name: str, seq: int) -> tuple[float, int, int | None]:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoConfig, AutoModelForCausalLM

    from glassformer.model import Transformer

    cfg = get_preset(name)
    spec = cfg.to_hf()
    start = time.perf_counter()
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        hf = AutoModelForCausalLM.from_config(AutoConfig.for_model(spec.pop("model_type"), **spec))
    params = sum(p.numel() for p in hf.parameters())
    flops = None
    if not cfg.n_experts:
        with torch.device("meta"):
            model = Transformer(cfg)
        model.set_attention_impl("eager")
        ids = torch.zeros(1, seq, dtype=torch.long, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(ids)
        flops = counter.get_total_flops()
    return time.perf_counter() - start, params, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    rows = []
    for name in MODELS:
        t_ours, params, _ = explorer_time(name, args.seq)
        traced = min(args.seq, get_preset(name).max_seq_len)  # GPT-2 stops at 1024 positions
        prefill = analyze(get_preset(name), "prefill", 1, traced, attention="eager")
        t_peer, peer_params, peer_flops = peer_time(name, traced)
        rows.append(
            {
                "model": name,
                "explorer_s_3_modes": t_ours,
                "peer_s": t_peer,
                "params": params,
                "params_match": params == peer_params,
                "flops_match": None
                if peer_flops is None
                else prefill["flops_matmul"] == peer_flops,
            }
        )
    if args.json:
        print(json.dumps({"seq": args.seq, "rows": rows}, indent=2))
        return
    print(f"{'model':16s} {'explorer (3 modes)':>19s} {'HF meta + trace':>16s}  params  flops")
    for r in rows:
        print(
            f"{r['model']:16s} {r['explorer_s_3_modes'] * 1e3:16.1f} ms {r['peer_s']:14.2f} s"
            f"  {'ok' if r['params_match'] else 'DIFF':6s}  "
            f"{'-' if r['flops_match'] is None else 'ok' if r['flops_match'] else 'DIFF'}"
        )


if __name__ == "__main__":
    main()
