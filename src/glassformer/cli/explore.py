"""`glassformer explore` and `glassformer compare`: the Transformer Math Explorer on the CLI.

MODEL is a preset name, an HF config.json, an HF model directory or a GGUF file (its metadata
only: no weights are read or allocated), optionally followed by `+CONNECTIONS` to switch the
cross-layer topology (`tiny+denseformer`, `tiny+mudd`, `tiny+hyper`, `tiny+mhc`; see
`Config.connections`). The cost model is `glassformer.explorer`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import typer

from glassformer.config import CONNECTIONS, Config

MODES = ("prefill", "decode", "train")
DTYPE_NAMES = ("bf16", "fp16", "fp32", "fp8", "int8", "int4")


def load_model_config(model: str) -> Config:
    """Resolve MODEL (preset, packaged model, config.json, HF dir or GGUF header); unknown
    names get the closest names suggested. Anything wrong inside a user's file is reported as
    bad input naming that file; a packaged model keeps its package name (not the GGUF's
    general.name)."""
    from glassformer.cli.errors import reading
    from glassformer.loaders.resolve import KNOWN_MODELS, resolve_config

    base, plus, topology = model.rpartition("+")
    if plus and topology in CONNECTIONS and not Path(model).exists():
        return load_model_config(base).replace(connections=topology, name=model)
    path = Path(model)
    if path.suffix == ".gguf" and not path.exists():
        raise ValueError(f"{model}: no such GGUF file")
    with reading(model):
        cfg = resolve_config(model)
    if not path.exists() and model.lower() in KNOWN_MODELS:
        cfg = cfg.replace(name=model.lower())
    return cfg


def _for_terminal(result: dict[str, Any]) -> dict[str, Any]:
    """The analysis with the model's name made safe for rich: a model file chooses its name,
    and "[/bold]" would be markup, ESC a terminal escape sequence."""
    from rich.markup import escape

    from glassformer.cli.errors import printable

    return {**result, "model": escape(printable(result["model"]))}


def _check(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise typer.BadParameter(
            f"expected one of {', '.join(allowed)}, got {value!r}", param_hint=name
        )
    return value.lower()


def _analyze(model: str, **kw: Any) -> dict[str, Any]:
    from glassformer.cli.errors import reading
    from glassformer.explorer.costs import analyze

    try:
        cfg = load_model_config(model)
        with reading(model):
            return analyze(cfg, **kw)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


# Module-level option objects: defaults that are calls must not sit in signatures (ruff B008).
EXPLORE_HTML = typer.Option(None, "--html", help="Write the interactive page here.")
COMPARE_HTML = typer.Option(
    None, "--html", help="Write one page per model: FILE with the model name appended."
)
MODELS_ARG = typer.Argument(
    ...,
    help="Two or more models (presets or paths); MODEL+CONNECTIONS switches the cross-layer "
    "topology: +denseformer, +mudd, +hyper, +mhc (e.g. tiny tiny+hyper).",
)


def _settings(
    mode: str, batch: int, seq: int, dtype: str, hardware: str, attention: str, mla: str | None
) -> tuple[dict, str, str | None]:
    """The options shared by explore and compare, checked: (cost-model settings, attention,
    MLA order)."""
    mode = _check("--mode", mode, MODES)
    dtype = _check("--dtype", dtype, DTYPE_NAMES)
    attention = _check("--attention", attention, ("flash", "eager"))
    if mla is not None:
        mla = _check("--mla", mla, ("plain", "absorbed"))
    return dict(mode=mode, batch=batch, seq=seq, dtype=dtype, hardware=hardware), attention, mla


IMAGE_OPT_HELP = (
    "HxW: also cost one image of this size (e.g. 896x896): a model with an image embedder "
    "through its encoder-free path, any other through Gemma 3's SigLIP tower "
    "(docs/multimodal.md)."
)


def _image_costs(models: list[str], image: str, tokens: int, dtype: str, hardware: str,
                 attention: str) -> list[dict[str, Any]]:  # fmt: skip
    from glassformer.explorer.multimodal import image_cost, siglip_image_cost

    match = re.fullmatch(r"(\d+)[xX](\d+)", image.strip())
    if match is None:
        raise typer.BadParameter(
            f"expected HxW (e.g. 896x896), got {image!r}", param_hint="--image"
        )
    height, width = int(match.group(1)), int(match.group(2))
    out = []
    for m in models:
        try:
            cfg = load_model_config(m)
            if cfg.vision_patch_size:
                out.append(image_cost(cfg, height, width, tokens, dtype, hardware, attention))
            else:
                out.append(siglip_image_cost(cfg, dtype=dtype, hardware=hardware,
                                             attention=attention))  # fmt: skip
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
    return out


def register(app: typer.Typer) -> None:
    mode_opt = typer.Option("prefill", "--mode", help="prefill | decode | train.")
    batch_opt = typer.Option(1, "--batch", min=1, help="Sequences per step.")
    seq_opt = typer.Option(
        2048, "--seq", min=1, help="Sequence length (prefill, train) or context length (decode)."
    )
    dtype_opt = typer.Option("bf16", "--dtype", help="bf16 | fp16 | fp32 | fp8 | int8 | int4.")
    hw_opt = typer.Option(
        "h100-sxm",
        "--hardware",
        help="h100-sxm, h200, a100-80gb, b200, rtx-4090, mi300x, apple-m1-max, apple-m1-ultra, "
        "apple-m2-max, apple-m2-ultra, or this-cpu (measured now).",
    )
    attn_opt = typer.Option(
        "flash", "--attention", help="flash (causal pairs, scores on chip) | eager (full grid)."
    )
    mla_opt = typer.Option(
        None, "--mla", help="MLA order: plain | absorbed (default: plain prefill, absorbed decode)."
    )
    mtp_opt = typer.Option(
        None,
        "--mtp/--no-mtp",
        help="Include DeepSeek MTP heads (default: when the config builds them).",
    )
    image_opt = typer.Option(None, "--image", help=IMAGE_OPT_HELP)
    image_tokens_opt = typer.Option(
        280, "--image-tokens", help="Soft-token budget of an image: 70, 140, 280, 560 or 1120."
    )

    @app.command("explore")
    def explore(
        model: str = typer.Argument(
            ..., help="Preset name, HF config.json / model dir, or GGUF file."
        ),
        mode: str = mode_opt,
        batch: int = batch_opt,
        seq: int = seq_opt,
        dtype: str = dtype_opt,
        hardware: str = hw_opt,
        attention: str = attn_opt,
        mla: str | None = mla_opt,
        mtp: bool | None = mtp_opt,
        per_op: bool = typer.Option(False, "--per-op", help="Print every op of every section."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        html: Path | None = EXPLORE_HTML,
        image: str | None = image_opt,
        image_tokens: int = image_tokens_opt,
        audio_seconds: float | None = typer.Option(
            None, "--audio-seconds", help="Also cost a clip this long through the audio embedder."
        ),
    ) -> None:
        """Cost of one pass: params, FLOPs, bytes, KV cache, roofline time, per op; with
        --image / --audio-seconds, also one image's / clip's cost."""
        settings, attention, mla = _settings(mode, batch, seq, dtype, hardware, attention, mla)
        result = _analyze(model, attention=attention, mla_order=mla, mtp=mtp, **settings)
        if image is not None:
            result["image"] = _image_costs(
                [model], image, image_tokens, settings["dtype"], hardware, attention
            )[0]
        if audio_seconds is not None:
            from glassformer.explorer.multimodal import audio_cost

            try:
                result["audio"] = audio_cost(
                    load_model_config(model), audio_seconds, settings["dtype"], hardware,
                    attention,
                )  # fmt: skip
            except ValueError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from err
        if html is not None:
            from glassformer.explorer.html import write_html

            write_html(load_model_config(model), html, attention=attention, mtp=mtp, **settings)
        if as_json:
            if html is not None:
                result["html"] = str(html)
            typer.echo(json.dumps(result))
            return
        from glassformer.explorer.report import render

        render(_for_terminal(result), per_op=per_op)
        if image is not None:
            from glassformer.explorer.report import render_images

            render_images([_for_terminal(result["image"])])
        if audio_seconds is not None:
            from glassformer.explorer.report import render_audio

            render_audio(_for_terminal(result["audio"]))
        if html is not None:
            typer.echo(f"wrote {html}")

    @app.command("compare")
    def compare(
        models: list[str] = MODELS_ARG,
        mode: str = mode_opt,
        batch: int = batch_opt,
        seq: int = seq_opt,
        dtype: str = dtype_opt,
        hardware: str = hw_opt,
        attention: str = attn_opt,
        mla: str | None = mla_opt,
        mtp: bool | None = mtp_opt,
        per_op: bool = typer.Option(False, "--per-op", help="Also print each model's op tables."),
        as_json: bool = typer.Option(False, "--json", help='Print {"models": [...]} as JSON.'),
        html: Path | None = COMPARE_HTML,
        image: str | None = image_opt,
        image_tokens: int = image_tokens_opt,
    ) -> None:
        """Several models side by side under the same settings; with --image, one image's cost
        through each (encoder-free or SigLIP)."""
        if len(models) < 2:
            raise typer.BadParameter(
                f"expected two or more models, got {len(models)} (use `glassformer explore` "
                "for one)",
                param_hint="MODELS",
            )
        settings, attention, mla = _settings(mode, batch, seq, dtype, hardware, attention, mla)
        results = [
            _analyze(m, attention=attention, mla_order=mla, mtp=mtp, **settings) for m in models
        ]
        if html is not None:
            from glassformer.explorer.html import write_html

            for m, r in zip(models, results, strict=True):
                # the name comes from the model file: keep it to one harmless file name
                label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(r["model"])).strip(".-") or "model"
                target = html.with_name(f"{html.stem}-{label}{html.suffix or '.html'}")
                write_html(load_model_config(m), target, attention=attention, mtp=mtp, **settings)
        images = None
        if image is not None:
            images = _image_costs(
                models, image, image_tokens, settings["dtype"], hardware, attention
            )
        if as_json:
            typer.echo(json.dumps({"models": results, **({"images": images} if images else {})}))
            return
        from glassformer.explorer.report import render, render_compare, render_images

        shown = [_for_terminal(r) for r in results]
        render_compare(shown)
        if images:
            render_images([_for_terminal(c) for c in images])
        if per_op:
            for r in shown:
                render(r, per_op=True)
