"""`glassformer fusion`: a model's blocks as GEMMs with epilogue programs (the fusion IR)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("fusion")
    def fusion(
        model: str = typer.Argument(
            ..., help="Preset name, packaged model, GGUF file, HF config.json or model directory."
        ),
        layer: int | None = typer.Option(
            None, "--layer", help="Only this layer's block (default: one block per kind)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the programs as JSON."),
    ) -> None:
        """Print each kind of block as GEMM nodes with their epilogue programs (element-wise
        ops, row reductions) and the nodes that end a kernel, with the activation elements per
        token a fused kernel and the unfused op sequence move."""
        from glassformer.cli.explore import load_model_config
        from glassformer.fusion.ir import block_program, format_program, model_programs

        cfg = load_model_config(model)
        if layer is not None and not 0 <= layer < cfg.n_layers:
            raise typer.BadParameter(f"layer: expected 0..{cfg.n_layers - 1}, got {layer}")
        programs = [block_program(cfg, layer)] if layer is not None else model_programs(cfg)
        if as_json:
            typer.echo(json.dumps([p.to_json() for p in programs], indent=2, default=str))
            return
        for p in programs:
            typer.echo(format_program(p))
