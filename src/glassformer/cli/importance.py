"""`glassformer importance MODEL`: what each head, neuron, expert, layer and embedding channel
of a model is worth, measured on calibration text from the default corpus (see
docs/pruning.md and `glassformer.compression`)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

PLOT_OPTION = typer.Option(None, "--plot", help="Write the layers x heads heat maps (PNG) here.")
OUT_OPTION = typer.Option(
    None, "--out", help="Write the scores as JSON here (what `glassformer prune` can read)."
)


def register(app: typer.Typer) -> None:
    @app.command("importance")
    def importance(
        model: str = typer.Argument(
            ...,
            help="Model name (smollm2-135m-instruct, gemma-3-270m), .gguf file, HF model "
            "directory, training checkpoint, or a preset name (random weights).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print every score as JSON."),
        plot: Path | None = PLOT_OPTION,
        out: Path | None = OUT_OPTION,
        tokens: int = typer.Option(
            8192, "--tokens", min=1, help="Calibration tokens from the default corpus."
        ),
        seq_len: int = typer.Option(256, "--seq-len", min=2, help="Tokens per window."),
        batch_size: int = typer.Option(4, "--batch-size", min=1, help="Windows per pass."),
        measures: str = typer.Option(
            "heads,attention,neurons,experts,layers,embedding",
            "--measures",
            help="Comma-separated subset of: heads (gradient), attention (entropy and "
            "confidence), neurons, experts, layers, embedding.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the calibration document order."),
        threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: leave as is)."),
    ) -> None:
        """Importance scores: gradient head importance, attention entropy and confidence, MLP
        neurons and expert channels, expert routing, Block Influence of layers, embedding
        channels."""
        import torch
        from rich.console import Console

        from glassformer.cli.errors import reading
        from glassformer.cli.telemetry import load_for_telemetry
        from glassformer.compression.calibration import byte_windows, calibration_windows
        from glassformer.compression.importance import MEASURES, compute_importance

        chosen = [m.strip() for m in measures.split(",") if m.strip()]
        bad = [m for m in chosen if m not in MEASURES]
        if bad or not chosen:
            raise typer.BadParameter(
                f"expected some of {', '.join(MEASURES)}, got {measures!r}", param_hint="--measures"
            )
        if plot is not None and "heads" not in chosen and "attention" not in chosen:
            raise typer.BadParameter(
                "needs a head measure (heads or attention)", param_hint="--plot"
            )
        if threads > 0:
            torch.set_num_threads(threads)
        err = Console(stderr=True)  # progress and messages on stderr: --json stays parseable
        with err.status(f"loading {model} ..."), reading(model):
            net, tok, label = load_for_telemetry(model)
        if tok is not None:
            windows = calibration_windows(tok, tokens, seq_len, seed)
        else:
            err.print("no tokenizer: calibrating on the corpus's UTF-8 bytes as token ids")
            windows = byte_windows(net.config.vocab_size, tokens, seq_len, seed)
        with _progress(err) as progress:
            scores = compute_importance(
                net, windows, measures=chosen, batch_size=batch_size, progress=progress
            )
        scores.meta = {"model": label, "seq_len": int(windows.shape[1]), "seed": seed}
        if out is not None:
            scores.to_json(out)
            err.print(f"wrote {out}")
        if plot is not None:
            from glassformer.compression.plot import plot_heads

            plot_heads(scores, plot, title=label)
            err.print(f"wrote {plot}")
        if as_json:
            typer.echo(scores.to_json())
            return
        _print_summary(scores, label)


@contextlib.contextmanager
def _progress(err: Any) -> Iterator[Callable[[str, int, int], None]]:
    """A live bar on a terminal; elsewhere a line at the start, every 10 s and at the end."""
    if err.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task: list[Any] = []

            def live(stage: str, done: int, total: int) -> None:
                if not task:
                    task.append(bar.add_task(stage, total=total))
                bar.update(task[0], completed=done)

            yield live
        return
    start, last = time.perf_counter(), [0.0]

    def lines(stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - start
        if done == 1 or done >= total or now - last[0] >= 10:
            last[0] = now
            err.print(f"{stage}: {done}/{total} batches ({now:.0f} s)", highlight=False)

    yield lines


def _fmt(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.3g}"


def _print_summary(scores: Any, label: str) -> None:
    """One row per layer: Block Influence, the head scores' range, the mean neuron score."""
    import torch
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console()
    table = Table(title=f"importance: {label}", box=box.SIMPLE_HEAD, padding=(0, 1))
    columns = ["layer", "BI", "heads min", "heads max", "weakest head", "conf mean", "neuron mean"]
    for c in columns:
        table.add_column(c, justify="right")
    n_layers = next(
        t.shape[0] for t in (scores.layers, scores.heads, scores.neurons) if t is not None
    )
    for i in range(n_layers):
        row = [str(i), _fmt(scores.layers[i].item()) if scores.layers is not None else "-"]
        if scores.heads is not None and not torch.isnan(scores.heads[i]).all():
            h = scores.heads[i]
            row += [_fmt(h.min().item()), _fmt(h.max().item()), str(int(h.argmin()))]
        else:
            row += ["-", "-", "-"]
        conf = scores.head_confidence
        row.append(_fmt(conf[i].nanmean().item()) if conf is not None else "-")
        row.append(_fmt(scores.neurons[i].nanmean().item()) if scores.neurons is not None else "-")
        table.add_row(*row)
    con.print(table)
    con.print(
        f"{scores.tokens} calibration tokens. BI: Block Influence 1 - cos(x_in, x_out); heads: "
        "|dL/dxi_h|; conf: mean max attention weight; neuron: RMS contribution size. "
        "--json for every score.",
        highlight=False,
    )
