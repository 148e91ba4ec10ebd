"""`glassformer export`: write any loadable model as an HF transformers directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

# Tokenizer files that travel with an HF directory when the source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        model: str = typer.Argument(
            ..., help="Model name, .gguf file or HF model directory to export."
        ),
        hf: Path = typer.Option(..., "--hf", help="Output directory (HF transformers layout)."),
        max_shard_size: str = typer.Option(
            "5GB", help="Split the weights into shards of at most this size (e.g. 500MB)."
        ),
        dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
        as_json: bool = typer.Option(False, "--json", help="Print the written files as JSON."),
    ) -> None:
        """Export MODEL as config.json + model.safetensors that HF transformers loads with
        `AutoModelForCausalLM.from_pretrained(DIR)` and that gives the same logits.

        Every file is written to a temporary name and renamed into place, so an interrupted
        export never leaves a half-written file under its final name.
        """
        import torch
        from rich.console import Console

        from glassformer.loaders.resolve import load_checkpoint, resolve
        from glassformer.loaders.safetensors_io import save_hf_dir

        if dtype not in ("float32", "bfloat16", "float16"):
            raise typer.BadParameter(f"dtype: expected float32, bfloat16 or float16, got {dtype}")
        source = resolve(model)
        with Console(stderr=True).status(f"exporting {source.name} ..."):
            config, state = load_checkpoint(source, getattr(torch, dtype))
            written = save_hf_dir(hf, config, state, max_shard_size)
            if source.is_dir():
                for name in TOKENIZER_FILES:
                    if (source / name).is_file():
                        shutil.copyfile(source / name, hf / name)
                        written.append(hf / name)
        if as_json:
            typer.echo(json.dumps({"model": str(source), "files": [str(p) for p in written]}))
        else:
            for path in written:
                typer.echo(f"wrote {path}")
