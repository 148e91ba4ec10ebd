"""`glassformer prune`: remove heads, MLP neurons and layers from a model, optionally heal it by
distillation from the unpruned model, and write the result as a model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune_cmd(
        model: str = typer.Argument(..., help="Packaged model name, .gguf file or model dir."),
        out: Path = typer.Option(..., "--out", help="Output model directory."),
        heads: str = typer.Option(
            "0%", help="Share of each layer's attention heads to remove (25% or 0.25)."
        ),
        mlp: str = typer.Option("0%", help="Share of each layer's MLP neurons to remove."),
        experts: str = typer.Option(
            "0%", help="Share of each MoE layer's routed experts to remove."
        ),
        width: str = typer.Option(
            "0%", help="Share of the residual stream's channels (the hidden width) to remove."
        ),
        layers: str = typer.Option(
            "0", help="Whole layers to remove: a count (2) or a share of the layers (25%)."
        ),
        by: str = typer.Option(
            "magnitude", help="What decides what goes: importance, magnitude or random."
        ),
        seed: int = typer.Option(0, help="Seed of --by random and of the healing run."),
        calib_tokens: int = typer.Option(
            4096,
            "--calib-tokens",
            min=1,
            help="Calibration tokens of the default corpus for --by importance.",
        ),
        round_to: int = typer.Option(
            32,
            min=1,
            help="Round each kept MLP width to a multiple of this (the int8/int4 kernels "
            "quantise in groups of 32).",
        ),
        heal_tokens: int = typer.Option(
            0,
            "--heal-tokens",
            help="Heal by distillation from the unpruned model on this many tokens of the "
            "default corpus (0: no healing). Resumable: run again with the same options.",
        ),
        heal_hidden: float = typer.Option(
            0.0, help="Weight of the final hidden-state matching term while healing."
        ),
        gguf: bool = typer.Option(True, help="Also write DIR/model.gguf (llama.cpp)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Prune MODEL and write OUT, a model directory that `glassformer.load(OUT)` and every
        command taking a MODEL accept: glassformer.json, model.safetensors, pruning.json (what
        was removed, and from what), and model.gguf for llama.cpp where its loaders can express
        the result (Llama-family models; per-layer sizes as the "deci" architecture)."""
        from rich.console import Console

        from glassformer.cli.errors import reading
        from glassformer.compression.export import save_model_dir
        from glassformer.compression.prune import (
            METHODS,
            apply_plan,
            parse_amount,
            plan_pruning,
            provenance,
        )
        from glassformer.loaders.resolve import load_model, resolve

        if by not in METHODS:
            raise typer.BadParameter(f"expected one of {', '.join(METHODS)}", param_hint="--by")
        if heal_tokens < 0:
            raise typer.BadParameter("must be >= 0", param_hint="--heal-tokens")
        if out.exists() and (not out.is_dir() or (out / "config.json").exists()):
            raise typer.BadParameter(
                f"{out} is a file or an HF model directory; give a new or a pruned-model directory",
                param_hint="--out",
            )
        amounts = (
            (heads, "--heads"),
            (mlp, "--mlp"),
            (layers, "--layers"),
            (experts, "--experts"),
            (width, "--width"),
        )
        for value, hint in amounts:
            try:
                parse_amount(value, hint.lstrip("-"))
            except ValueError as err:
                raise typer.BadParameter(str(err), param_hint=hint) from None
        source = resolve(model)
        console = Console(stderr=True)
        with console.status(f"pruning {model} ..."):
            with reading(source):
                teacher = load_model(source)
            scores = None
            if by == "importance":  # measured on calibration text in the model's tokenizer
                from glassformer.compression.importance import compute_importance
                from glassformer.compression.prune import as_score_dict
                from glassformer.tokenizer import load_tokenizer

                measured = compute_importance(
                    teacher,
                    tokenizer=load_tokenizer(source),
                    tokens=calib_tokens,
                    measures=("heads", "neurons", "layers", "experts", "embedding"),
                )
                scores = as_score_dict(teacher, measured)
            try:
                plan = plan_pruning(
                    teacher,
                    heads,
                    mlp,
                    layers,
                    by,
                    experts,
                    scores=scores,
                    seed=seed,
                    round_to=round_to,
                    width=width,
                )
            except ValueError as err:  # a request the model cannot satisfy (too much, ...)
                raise typer.BadParameter(str(err)) from None
            student = apply_plan(teacher, plan)
        summary: dict[str, Any] = {
            "model": str(source),
            "out": str(out),
            "method": by,
            **_counts("before", teacher),
            **_counts("after", student),
        }
        before, after = (
            summary["params_non_embedding_before"],
            summary["params_non_embedding_after"],
        )
        summary["removed_non_embedding"] = 1 - after / before if before else 0.0
        summary["layers_kept"] = list(plan.layers)
        cfg = student.config
        summary["heads_per_layer"] = [cfg.layer_n_heads(i) for i in range(cfg.n_layers)]
        summary["d_ff_per_layer"] = [cfg.layer_d_ff(i) for i in range(cfg.n_layers)]
        if heal_tokens:
            from glassformer.compression.heal import heal

            summary["heal"] = heal(
                teacher,
                student,
                source,
                out / "heal",
                tokens=heal_tokens,
                seed=seed,
                hidden_weight=heal_hidden,
            )
        record = provenance(
            teacher, plan, by, source=str(source), heads=heads, mlp=mlp, layers=layers,
            experts=experts,
            width=width,
            heal=summary.get("heal"),
        )  # fmt: skip
        with console.status(f"writing {out} ..."):
            written = save_model_dir(
                out, student.config, student.state_dict(), source, record, gguf=gguf
            )
        summary.update(written)
        if as_json:
            typer.echo(json.dumps(summary))
            return
        typer.echo(
            f"{summary['params_before']:,} -> {summary['params_after']:,} parameters "
            f"({summary['removed_non_embedding']:.1%} of the non-embedding ones removed)"
        )
        if written["gguf_refused"] and gguf:
            typer.echo(f"no model.gguf: {written['gguf_refused']}")
        for path in written["files"]:
            typer.echo(f"wrote {path}")


def _counts(when: str, model: Any) -> dict[str, int]:
    return {
        f"params_{when}": model.num_parameters(),
        f"params_non_embedding_{when}": model.num_parameters(exclude_embeddings=True),
    }
