"""`glassformer bench generate`: prefill/decode speed vs HF transformers and llama.cpp."""

from __future__ import annotations

import typer

from glassformer.cli.generate import DEFAULT_MODEL, MODEL_HELP


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks.", no_args_is_help=True)
    app.add_typer(bench, name="bench")

    @bench.command("generate")
    def generate_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        quant: list[str] = typer.Option(
            [], "--quant", help="none|int8|int4 (repeatable; default: all three)."
        ),
        threads: int = typer.Option(2, "--threads", "-t", min=1),
        prompt_tokens: int = typer.Option(512, "--prompt-tokens", min=1),
        new_tokens: int = typer.Option(128, "--new-tokens", min=2),
        rounds: int = typer.Option(3, "--rounds", min=1, help="Interleaved repetitions."),
        peers: bool = typer.Option(True, "--peers/--no-peers", help="Run HF and llama.cpp."),
        bandwidth: float | None = typer.Option(
            None, "--bandwidth-gbs", help="Peak memory bandwidth (default: measured)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Prefill and decode tokens/s, peak memory and bandwidth use, side by side."""
        from glassformer.inference import QUANT_MODES
        from glassformer.inference.bench import format_table, main_json, run

        quants = tuple(quant) or QUANT_MODES
        bad = [q for q in quants if q not in QUANT_MODES]
        if bad:
            raise typer.BadParameter(f"--quant: unknown {bad}; use {', '.join(QUANT_MODES)}")
        summary = run(
            model,
            quants,
            peers=peers,
            threads=threads,
            prompt_tokens=prompt_tokens,
            new_tokens=new_tokens,
            rounds=rounds,
            bandwidth_gbs=bandwidth,
            log=None if as_json else lambda msg: typer.echo(msg, err=True),
        )
        typer.echo(main_json(summary) if as_json else format_table(summary))
