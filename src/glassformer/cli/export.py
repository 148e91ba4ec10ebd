"""`glassformer export`: write any loadable model as an HF transformers directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from glassformer.config import Config


def _preset(model: str) -> Config | None:
    """The preset MODEL names, unless it is also a path or a packaged model."""
    from glassformer.loaders.resolve import KNOWN_MODELS
    from glassformer.presets import PRESETS, get_preset

    if Path(model).exists() or model.lower() in KNOWN_MODELS or model.lower() not in PRESETS:
        return None
    return get_preset(model.lower())


def _check_writable(out: Path) -> None:
    """Refuse an output directory that cannot be made, before any weights are read."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(
            f"{out} exists and is not a directory; give a new or existing directory",
            param_hint="--hf",
        )
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{parent} is not a directory", param_hint="--hf")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{parent} is not writable", param_hint="--hf")


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        model: str = typer.Argument(
            ...,
            help="Packaged model name, .gguf file, HF model directory, or a preset (exported "
            "randomly initialised, seed 0).",
        ),
        hf: Path = typer.Option(..., "--hf", help="Output directory (HF transformers layout)."),
        max_shard_size: str = typer.Option(
            "5GB", help="Split the weights into shards of at most this size (e.g. 500MB)."
        ),
        dtype: str = typer.Option("float32", help="float32, bfloat16 or float16."),
        as_json: bool = typer.Option(False, "--json", help="Print the written files as JSON."),
    ) -> None:
        """Export MODEL as config.json + model.safetensors + the tokenizer, which HF
        transformers (4.57 and later) loads with `AutoModelForCausalLM.from_pretrained(DIR)`
        and `AutoTokenizer.from_pretrained(DIR)`, giving the same logits.

        Every file is written to a temporary name and renamed into place, so an interrupted
        export never leaves a half-written file under its final name.
        """
        import torch
        from rich.console import Console

        from glassformer.cli.errors import reading
        from glassformer.hf.export import export_hf
        from glassformer.loaders.resolve import load_checkpoint, resolve
        from glassformer.model import Transformer

        if dtype not in ("float32", "bfloat16", "float16"):
            raise typer.BadParameter(
                f"expected float32, bfloat16 or float16, got {dtype!r}", param_hint="--dtype"
            )
        _check_writable(hf)
        preset = _preset(model)
        source = None if preset is not None else resolve(model)
        with Console(stderr=True).status(f"exporting {model} ..."):
            if preset is not None:
                # an architecture without weights: exported randomly initialised (seed 0)
                torch.manual_seed(0)
                net = Transformer(preset).to(getattr(torch, dtype))
                config, state = preset, net.state_dict()
            else:
                assert source is not None
                with reading(source):
                    config, state = load_checkpoint(source, getattr(torch, dtype))
            written = export_hf(hf, config, state, source, max_shard_size)
        if as_json:
            shown = str(source) if source is not None else model
            typer.echo(json.dumps({"model": shown, "files": [str(p) for p in written]}))
        else:
            for path in written:
                typer.echo(f"wrote {path}")
