"""`glassformer presets` and `glassformer info`: what architectures are known and their shape."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("presets")
    def presets(
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    ) -> None:
        """List the named architecture presets (use a name with `info`, `explore`, `train`)."""
        from glassformer.presets import PRESETS, get_preset

        rows = []
        for name in sorted(PRESETS):
            cfg = get_preset(name)
            rows.append(
                {
                    "name": name,
                    "family": cfg.hf_model_type,
                    "layers": cfg.n_layers,
                    "d_model": cfg.d_model,
                    "heads": cfg.n_heads,
                    "kv_heads": cfg.n_kv_heads,
                    "experts": cfg.n_experts,
                }
            )
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="glassformer presets")
        for col in rows[0]:
            table.add_column(col)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        Console().print(table)

    @app.command("info")
    def info(
        model: str = typer.Argument(
            ...,
            help="Preset name, packaged model (smollm2-135m-instruct, gemma-3-270m), GGUF file, "
            "HF config.json or model directory.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the config as JSON."),
    ) -> None:
        """Show a model's config and its exact parameter count (a closed form over the layers:
        nothing is built or allocated, whatever the layer count)."""
        from glassformer.cli.errors import printable, reading
        from glassformer.cli.explore import load_model_config
        from glassformer.config import Config
        from glassformer.explorer.costs import parameter_counts

        cfg: Config = load_model_config(model)
        with reading(model):
            n_params = parameter_counts(cfg)["params_total"]
        if as_json:
            typer.echo(json.dumps({"config": cfg.to_dict(), "params": n_params}, indent=2))
            return
        typer.echo(f"{printable(cfg.name)}: {n_params:,} parameters")
        for key, value in cfg.to_dict().items():
            typer.echo(f"  {key:24s} {printable(value)}")
