"""The size-quality curve of structured pruning on the packaged models.

For each model and each method, a fraction of the non-embedding parameters is removed by
`glassformer prune`'s plan and surgery (`compression.prune`, the same share in every layer):
query heads first in proportion (a whole number per GQA group), then MLP neurons for the rest.
Methods: importance (`compression.importance`: gradient head importance and activation-weighted
neuron scores on --calib-tokens of the default corpus), magnitude and random (`compression.
prune`'s weight-norm and seeded-random scores). The peer is `torch-pruning` (PyPI, `import
torch_pruning`): its MetaPruner with L2 magnitude importance removes MLP channels of the same
model to the same parameter count (its dependency graph couples gate, up and down
projections; our attention reshapes by a stored head count, so heads are left out).

Each pruned model is measured before and, at --heal-fractions, after healing: logit
distillation from the unpruned model (KL per token, temperature 1: the objective of
`compression.heal`) on --heal-tokens tokens of the default corpus, in a plain AdamW loop
(`compression.heal` checkpoints through the trainer, which at a few thousand tokens costs more
than the training):

- perplexity on the first --eval-tokens tokens of `benchmarks/data/heldout.txt` (original text
  no model has seen), in windows of --window opened by BOS where the tokenizer adds one;
- exact match on a dozen short completion prompts (`PROMPTS`): every token of the expected
  answer must be the argmax after the prompt and the answer's earlier tokens (greedy decoding
  would produce it);
- decode tokens/s of the pruned model on the fused float32 fast path (`optimize(model,
  "none")`), batch 1, one thread (--threads 1): the median CPU time of --decode-tokens
  single-token steps, which on a shared machine measures the work where wall time measures the
  wait for a core.

    python benchmarks/prune_curve.py [--models smollm2-135m-instruct,gemma-3-270m]
        [--fractions 0,0.1,0.25,0.5] [--methods importance,magnitude,random,torch-pruning]
        [--calib-tokens 4096] [--heal-tokens 16384] [--heal-fractions 0.1,0.25,0.5]
        [--eval-tokens 2048] [--window 256] [--threads 1] [--out benchmarks/prune_curve] [--json]

Writes OUT/results.json (every row, rewritten after each) and OUT/<model>.png (perplexity and
decode speed against the share removed, before and after healing).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HELDOUT = Path(__file__).parent / "data" / "heldout.txt"

# (prompt, expected start of the greedy continuation): facts and patterns a small model knows
PROMPTS = [
    ("The capital of France is", "Paris"),
    ("The capital of Japan is", "Tokyo"),
    ("Monday, Tuesday, Wednesday,", "Thursday"),
    ("January, February, March,", "April"),
    ("1, 2, 3, 4, 5,", "6"),
    ("The opposite of hot is", "cold"),
    ("Water freezes at 0 degrees", "Celsius"),
    ("The largest planet in our solar system is", "Jupiter"),
    ("Question: What is 2 + 2?\nAnswer:", "4"),
    ("The chemical symbol for gold is", "Au"),
    ("A, B, C, D,", "E"),
    ("The first president of the United States was", "George Washington"),
]


@dataclass
class Row:
    model: str
    method: str
    target: float  # fraction of non-embedding parameters asked to remove
    removed: float  # fraction actually removed
    params: int  # non-embedding parameters after pruning
    heads_per_group: int
    d_ff: int
    healed_tokens: int
    ppl: float
    exact_match: float
    decode_tok_s: float


# --- pruning ---
def plan_fractions(model, fraction: float) -> tuple[float, float]:
    """(share of query heads, share of MLP neurons) to remove in every layer so that about
    `fraction` of the non-embedding parameters go: heads in proportion first (a whole number per
    GQA group), neurons the rest."""
    c = model.config
    total = model.num_parameters(exclude_embeddings=True)
    group = c.n_heads // c.n_kv_heads
    per_head = 2 * c.d_model * c.head_dim * c.n_kv_heads * c.n_layers  # one head of every group
    per_neuron = (3 if c.mlp == "glu" else 2) * c.d_model * c.n_layers
    target = fraction * total
    r = min(round(fraction * group), group - 1)
    while r > 0 and r * per_head > target:
        r -= 1
    neurons = max(0, round((target - r * per_head) / per_neuron))
    return r / group, min(neurons, c.d_ff - 1) / c.d_ff


def prune(model, method: str, heads: float, mlp: float, importance, seed: int):
    """`glassformer prune`'s plan and surgery (`compression.prune`), uniform in every layer."""
    from glassformer.compression.prune import apply_plan, as_score_dict, plan_pruning

    scores = as_score_dict(model, importance) if method == "importance" else None
    plan = plan_pruning(model, heads, mlp, 0, by=method, scores=scores, seed=seed)
    return apply_plan(model, plan).eval()


def torch_pruning_peer(model, windows: torch.Tensor, mlp: float):
    """torch-pruning's MetaPruner (L2 magnitude importance) removing the share `mlp` of every
    layer's MLP channels; attention, the embedding and the norms left alone."""
    import torch_pruning as tp

    ignored = [model.embed, model.final_norm]
    ignored += [b.attn for b in model.layers] + [b.mlp.down_proj for b in model.layers]
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=windows[:1, :16],
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=mlp,
        ignored_layers=ignored,
        round_to=1,
    )
    pruner.step()
    model.config = model.config.replace(d_ff=model.layers[0].mlp.up_proj.out_features)
    return model.eval()


# --- healing ---
def distil(student, teacher, windows: torch.Tensor, lr: float, batch: int) -> int:
    """Logit distillation, the objective of `compression.heal` (KL(teacher || student) per
    token, temperature 1) in a plain AdamW loop without its checkpoints, which at a budget of
    a few thousand tokens would cost more than the training. Returns the tokens seen."""
    import torch.nn.functional as F

    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    seen = 0
    for ids in windows.split(batch):
        with torch.no_grad():
            target = F.log_softmax(teacher(ids).float(), -1).flatten(0, 1)
        logp = F.log_softmax(student(ids).float(), -1).flatten(0, 1)
        loss = F.kl_div(logp, target, log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += ids.numel()
    student.eval()
    return seen


# --- measurements ---
def exact_match(model, tok) -> float:
    """Share of PROMPTS whose greedy continuation starts with the expected answer: the answer's
    tokens must each be the argmax given the prompt and the answer tokens before them (what
    greedy decoding produces, in one forward pass per prompt)."""
    hits = 0
    with torch.no_grad():
        for prompt, answer in PROMPTS:
            head = tok.encode(prompt)
            full = tok.encode(prompt + " " + answer)
            if full[: len(head)] != head:  # the answer merged into the prompt's last token
                full = head + tok.encode(" " + answer, add_special_tokens=False)
            logits = model(torch.tensor([full[:-1]]))[0, len(head) - 1 :]
            hits += logits.argmax(-1).tolist() == full[len(head) :]
    return hits / len(PROMPTS)


def decode_speed(model, tokens: int) -> float:
    """Greedy decode tokens/s on the fused float32 fast path (`optimize(model, "none")`), from
    the median CPU time of `tokens` single-token steps after an 8-token prompt. With one torch
    thread a step's CPU time is its cost however busy the machine is, where its wall time on a
    shared machine is mostly waiting for a core."""
    import copy
    import statistics

    from glassformer.inference import optimize

    fast = optimize(copy.deepcopy(model), "none", inplace=True)
    cache = fast.new_cache(1, max_seq_len=8 + tokens + 1)
    steps = []
    with torch.no_grad():
        logits = fast(torch.arange(1, 9)[None], cache)
        for _ in range(tokens):
            nxt = logits[:, -1:].argmax(-1)
            t0 = time.process_time()
            logits = fast(nxt, cache)
            steps.append(time.process_time() - t0)
    return 1.0 / statistics.median(steps)


def measure(model, tok, eval_ids, window: int, decode_tokens: int) -> tuple[float, float, float]:
    """(perplexity, exact match, decode tokens/s on the fast path)."""
    from glassformer.inference.evaluate import perplexity

    bos = tok.bos_id if tok.add_bos else None
    with torch.no_grad():
        ppl = perplexity(model, eval_ids, window=window, bos_id=bos).ppl
    return ppl, exact_match(model, tok), decode_speed(model, decode_tokens)


def plot(rows: list[Row], model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ours = [r for r in rows if r.model == model]
    base = [r for r in ours if r.target == 0]
    for n, method in enumerate(dict.fromkeys(r.method for r in ours if r.target > 0)):
        color = f"C{n}"
        for healed, style in ((False, "--"), (True, "-")):
            pts = sorted(
                (r.removed, r.ppl, r.decode_tok_s)
                for r in ours
                if r.target > 0 and r.method == method and (r.healed_tokens > 0) == healed
            )
            if not healed:  # every method starts from the unpruned model
                pts = [(r.removed, r.ppl, r.decode_tok_s) for r in base] + pts
            if pts:
                label = f"{method}{' healed' if healed else ''}"
                xs = [p[0] for p in pts]
                a.plot(xs, [p[1] for p in pts], style, color=color, marker="o", label=label)
                if not healed:
                    b.plot(xs, [p[2] for p in pts], color=color, marker="o", label=method)
    a.set_yscale("log")
    a.set_xlabel("fraction of non-embedding parameters removed")
    a.set_ylabel("held-out perplexity")
    b.set_xlabel("fraction of non-embedding parameters removed")
    b.set_ylabel("decode tokens/s (fast path)")
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.suptitle(model)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(rows: list[dict]) -> str:
    """The results as a markdown table: one line per model, method, size and healing."""
    base = {r["model"]: r for r in rows if r["target"] == 0}
    lines = [
        "| model | method | removed | healed tokens | ppl | ppl vs unpruned | exact match "
        "| decode tok/s | vs unpruned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["model"], r["target"], r["method"], r["healed_tokens"])):
        b = base.get(r["model"])
        rel = f"{100 * (r['ppl'] / b['ppl'] - 1):+.1f}%" if b else "-"
        speed = f"{r['decode_tok_s'] / b['decode_tok_s']:.2f}x" if b else "-"
        lines.append(
            f"| {r['model']} | {r['method'] if r['target'] else 'unpruned'} "
            f"| {100 * r['removed']:.1f}% | {r['healed_tokens']} | {r['ppl']:.2f} | {rel} "
            f"| {r['exact_match']:.2f} | {r['decode_tok_s']:.1f} | {speed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    parser.add_argument("--fractions", default="0,0.1,0.25,0.5")
    parser.add_argument("--methods", default="importance,magnitude,random,torch-pruning")
    parser.add_argument("--calib-tokens", type=int, default=4096)
    parser.add_argument("--heal-tokens", type=int, default=16384, help="0: no healing")
    parser.add_argument("--heal-lr", type=float, default=1e-4)
    parser.add_argument("--heal-fractions", default="0.1,0.25,0.5", help="which sizes to heal")
    parser.add_argument("--heal-methods", default="importance,magnitude,random,torch-pruning")
    parser.add_argument("--eval-tokens", type=int, default=2048)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/prune_curve"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print results.json files as a markdown table"
    )
    args = parser.parse_args()
    if args.report:
        print(markdown_table([r for f in args.report for r in json.loads(f.read_text())]))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import glassformer as gf
    from glassformer.compression.calibration import calibration_windows
    from glassformer.compression.importance import compute_importance

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    fractions = [float(f) for f in args.fractions.split(",")]
    methods = args.methods.split(",")
    heal_at = [float(f) for f in args.heal_fractions.split(",")] if args.heal_tokens else []
    heal_by = args.heal_methods.split(",")
    for name in args.models.split(","):
        teacher, tok = gf.load(name)
        teacher.eval()
        eval_ids = tok.encode(HELDOUT.read_text(), add_special_tokens=False)[: args.eval_tokens]
        calib = calibration_windows(tok, args.calib_tokens, args.window, seed=args.seed)
        heal_windows = calibration_windows(
            tok, max(args.heal_tokens, 1), args.window, seed=args.seed + 1
        )
        total = teacher.num_parameters(exclude_embeddings=True)
        t0 = time.perf_counter()
        scores = compute_importance(teacher, calib, measures=("heads", "neurons"), batch_size=2)
        log(f"{name}: importance on {scores.tokens} tokens in {time.perf_counter() - t0:.0f} s")
        c = teacher.config
        group = c.n_heads // c.n_kv_heads
        for method in methods:
            for fraction in fractions:
                if fraction == 0 and method != methods[0]:
                    continue  # the unpruned model, once
                heads, mlp = plan_fractions(teacher, fraction)
                t0 = time.perf_counter()
                if method == "torch-pruning":
                    import copy

                    # the same parameter count from MLP channels alone
                    per_neuron = (3 if c.mlp == "glu" else 2) * c.d_model * c.n_layers
                    share = min(round(fraction * total / per_neuron), c.d_ff - 1) / c.d_ff
                    pruned = torch_pruning_peer(copy.deepcopy(teacher), calib, share)
                elif fraction == 0:
                    pruned = teacher
                else:
                    pruned = prune(teacher, method, heads, mlp, scores, args.seed)
                params = pruned.num_parameters(exclude_embeddings=True)
                pc = pruned.config
                for healed in (False, True):
                    if healed and (
                        fraction == 0 or fraction not in heal_at or method not in heal_by
                    ):
                        continue
                    seen = 0
                    if healed:
                        seen = distil(pruned, teacher, heal_windows, args.heal_lr, batch=2)
                    ppl, em, tok_s = measure(pruned, tok, eval_ids, args.window, args.decode_tokens)
                    row = Row(
                        name, method, fraction, 1 - params / total, params,
                        pc.layer_n_heads(0) // pc.layer_n_kv_heads(0) if group else 0,
                        pc.layer_d_ff(0), seen, ppl, em, tok_s,
                    )  # fmt: skip
                    rows.append(row)
                    log(
                        f"{name} {method:13s} {fraction:4.2f} removed {row.removed:.3f} "
                        f"heal {seen:6d}: ppl {ppl:9.3f} em {em:.2f} decode {tok_s:6.1f} tok/s "
                        f"({time.perf_counter() - t0:.0f} s)"
                    )
                    dump = json.dumps([asdict(r) for r in rows], indent=1)
                    (args.out / "results.json").write_text(dump)
                if pruned is not teacher:
                    del pruned
                gc.collect()
        plot(rows, name, args.out / f"{name}.png")
        del teacher
        gc.collect()
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
