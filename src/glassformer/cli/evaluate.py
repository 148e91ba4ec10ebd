"""`glassformer eval ...` (ifeval-lite, perplexity, multiple-choice, vlm) and
`glassformer data preferences`.

glassformer eval ifeval-lite --model smollm2-135m-instruct --limit 40 --json
glassformer eval perplexity --model smollm2-135m-instruct --data held_out.txt
glassformer eval multiple-choice --model smollm2-135m-instruct --data task.jsonl
glassformer eval vlm runs/tiny-vlm --json
glassformer data preferences --model smollm2-135m-instruct --out pairs.jsonl
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from glassformer.cli.generate import DEFAULT_MODEL, MODEL_HELP, QUANT_HELP, THREADS_HELP


@contextmanager
def _bar(total: int, desc: str, shown: bool) -> Iterator[Any]:
    """A tqdm bar on stderr (or a no-op) whose update(n) the evaluation calls."""
    if not shown:
        yield lambda n: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="item", leave=False, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def _load(model: str, quant: str | None, threads: int | None) -> tuple[Any, Any]:
    from glassformer.generation import load
    from glassformer.threads import configure_threads

    configure_threads(threads)
    return load(model, quant=quant)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _echo(summary: dict[str, Any], as_json: bool, keys: tuple[str, ...]) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    for key in keys:
        value = summary.get(key)
        if value is None:
            continue
        typer.echo(f"{key:28s} {value:.4f}" if isinstance(value, float) else f"{key:28s} {value}")


def register(app: typer.Typer) -> None:
    from glassformer.cli.train import _errors, _group

    eval_app = _group(
        app, "eval", "Evaluate a model: ifeval-lite, perplexity, multiple-choice, vlm."
    )
    data_app = _group(app, "data", "Prepare training data (token shards, preference pairs).")

    @eval_app.command("ifeval-lite")
    def ifeval_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        limit: int = typer.Option(None, "--limit", min=1, help="Evaluate the first N prompts."),
        n_prompts: int = typer.Option(120, "--prompts", min=1, help="Size of the eval split."),
        max_new_tokens: int = typer.Option(128, min=1, help="Tokens per answer at most."),
        batch_size: int = typer.Option(8, min=1, help="Prompts decoded together."),
        quant: str = typer.Option("none", "--quant", help=QUANT_HELP),
        threads: int = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        out: Path = typer.Option(None, "--out", help="Also write each answer and verdict here."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Verifiable instruction following (IFEval-style, offline): greedy answers to the
        held-out prompts, checked by program; strict and loose accuracy."""
        from glassformer.evaluation.ifeval_lite import make_prompts, score_responses
        from glassformer.evaluation.respond import respond

        with _errors():
            items = make_prompts("eval", n_prompts)[:limit]
            net, tok = _load(model, quant, threads)
        start = time.perf_counter()
        with _bar(len(items), "ifeval-lite", progress) as update:
            answers = respond(net, tok, [it["prompt"] for it in items], max_new_tokens,
                              batch_size, progress=update)  # fmt: skip
        result = score_responses(items, answers)
        summary = {"model": model, "seconds": time.perf_counter() - start,
                   "max_new_tokens": max_new_tokens, **result}  # fmt: skip
        if out is not None:
            _write_json(out, summary)
        if not as_json:
            summary.pop("results")
            _echo(summary, False, ("model", "prompts", "strict_accuracy", "loose_accuracy",
                                   "instruction_strict_accuracy", "instruction_loose_accuracy",
                                   "seconds"))  # fmt: skip
            for name, row in summary["per_constraint"].items():
                typer.echo(f"  {name:26s} {row['strict_accuracy']:.3f} strict, "
                           f"{row['loose_accuracy']:.3f} loose (n={row['n']})")  # fmt: skip
            return
        if out is not None:
            summary.pop("results")  # the file has them
        _echo(summary, True, ())

    @eval_app.command("perplexity")
    def perplexity_cmd(
        data: Annotated[
            list[Path], typer.Option("--data", help="Text files, or JSONL with a 'text' field.")
        ],
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        max_len: int = typer.Option(None, help="Window in tokens (default: the context)."),
        text_field: str = typer.Option("text", help="JSONL field holding the text."),
        threads: int = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Perplexity and bits per byte of held-out text (rolling windows, lm-eval style)."""
        from glassformer.evaluation.loglik import load_texts, perplexity

        with _errors():
            texts = [t for path in data for t in load_texts(path, text_field)]
            net, tok = _load(model, None, threads)
        start = time.perf_counter()
        with _errors(), _bar(len(texts), "perplexity", progress) as update:
            result = perplexity(net, tok, texts, max_len, update)
        summary = {"model": model, **result, "seconds": time.perf_counter() - start}
        _echo(summary, as_json, ("model", "texts", "tokens", "perplexity", "bits_per_byte",
                                 "seconds"))  # fmt: skip

    @eval_app.command("multiple-choice")
    def multiple_choice_cmd(
        data: Annotated[
            Path, typer.Option("--data", help="JSONL rows {'query', 'choices': [...], 'gold'}.")
        ],
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        limit: int = typer.Option(None, "--limit", min=1, help="Score the first N items."),
        batch_size: int = typer.Option(8, min=1, help="Continuations scored together."),
        threads: int = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Multiple-choice accuracy by log-likelihood (acc and length-normalised acc_norm,
        lm-eval-harness's scoring)."""
        from glassformer.evaluation.loglik import load_multiple_choice, multiple_choice

        with _errors():
            items = load_multiple_choice(data)[:limit]
            net, tok = _load(model, None, threads)
        start = time.perf_counter()
        total = sum(len(it["choices"]) for it in items)
        with _bar(total, "multiple-choice", progress) as update:
            result = multiple_choice(net, tok, items, batch_size, update)
        summary = {"model": model, **result, "seconds": time.perf_counter() - start}
        if not as_json:
            summary.pop("results")
        _echo(summary, as_json, ("model", "items", "acc", "acc_norm", "seconds"))

    @eval_app.command("vlm")
    def vlm_cmd(
        checkpoint: Annotated[
            Path, typer.Argument(help="A `train --task vlm` run directory or checkpoint file.")
        ],
        n: int = typer.Option(500, "--examples", "-n", min=1, help="Held-out questions."),
        batch_size: int = typer.Option(50, min=1, help="Questions scored together."),
        threads: int = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    ) -> None:
        """Exact match of a trained vision-language model on held-out synthetic questions
        (the run's own generator, held-out split), overall and per question type."""
        from glassformer.threads import configure_threads
        from glassformer.training.vlm import evaluate_vlm, load_vlm_checkpoint

        configure_threads(threads)
        with _errors():
            net, gen, patch, info = load_vlm_checkpoint(checkpoint)
        start = time.perf_counter()
        with _bar(n, "vlm", progress) as update:
            result = evaluate_vlm(net, gen, patch, n, batch_size, update)
        summary = {**info, **result, "seconds": time.perf_counter() - start}
        if as_json:
            _echo(summary, True, ())
            return
        _echo(summary, False, ("checkpoint", "step", "examples", "exact_match", "seconds"))
        for kind, acc in summary["per_type"].items():
            typer.echo(f"  {kind:26s} {acc:.4f} (n={summary['counts'][kind]})")

    @data_app.command("preferences")
    def preferences_cmd(
        out: Annotated[Path, typer.Option("--out", help="Output JSONL of preference pairs.")],
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        n_prompts: int = typer.Option(64, "--prompts", min=1, help="Training prompts used."),
        samples: int = typer.Option(4, min=2, help="Answers sampled per prompt."),
        temperature: float = typer.Option(0.8, help="Sampling temperature."),
        top_p: float = typer.Option(0.95, help="Nucleus sampling threshold."),
        max_new_tokens: int = typer.Option(96, min=1, help="Tokens per answer at most."),
        pairs_per_prompt: int = typer.Option(2, min=1, help="Pairs kept per prompt at most."),
        batch_size: int = typer.Option(8, min=1, help="Answers decoded together."),
        seed: int = typer.Option(0, help="Sampling seed."),
        quant: str = typer.Option("none", "--quant", help=QUANT_HELP),
        threads: int = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    ) -> None:
        """Preference pairs from the model's own answers to ifeval-lite's training prompts
        (disjoint from the evaluation prompts), labelled chosen/rejected by its checkers."""
        from glassformer.evaluation.ifeval_lite import make_prompts
        from glassformer.evaluation.preferences import build_preferences

        with _errors():
            items = make_prompts("train", n_prompts)
            net, tok = _load(model, quant, threads)
        start = time.perf_counter()
        with _errors(), _bar(len(items) * samples, "sampling answers", progress) as update:
            rows, stats = build_preferences(
                net, tok, items, samples, temperature, top_p, max_new_tokens, batch_size, seed,
                pairs_per_prompt, update,
            )  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        os.replace(tmp, out)
        summary = {"out": str(out), "model": model, **stats,
                   "seconds": time.perf_counter() - start}  # fmt: skip
        _echo(summary, as_json, ("out", "prompts", "samples", "pairs", "prompts_without_pair",
                                 "sample_strict_pass_rate", "seconds"))  # fmt: skip
        if not rows:
            typer.echo("error: no prompt gave a pair (all answers scored alike)", err=True)
            raise typer.Exit(2)
