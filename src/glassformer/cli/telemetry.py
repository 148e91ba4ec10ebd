"""`glassformer telemetry MODEL`: spectral telemetry and rank-collapse diagnostics of a model.

The weight-only "1:1 rule" analysis (spectral ratio of the MLP and attention paths, Lyapunov
covariance recursion), the rank-collapse measures of a forward pass on held-out text, and
weightwatcher-style metrics of every projection. See docs/telemetry.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

# Path options as module-level singletons (ruff B008: no calls in argument defaults)
HTML_OPTION = typer.Option(None, "--html", help="Write an HTML report here.")
PNG_OPTION = typer.Option(None, "--png", help="Write the plots (PNG) here.")
TEXT_OPTION = typer.Option(
    None,
    "--text",
    help="Text file for the data-driven measures (default: the held-out paragraphs shipped "
    "with glassformer).",
)


def load_for_telemetry(spec: str, seed: int = 0) -> tuple[Any, Any | None, str]:
    """(model, tokenizer or None, label) for a model name, GGUF file, HF directory, one of our
    training checkpoints, or a preset name (randomly initialised, for smoke tests)."""
    import torch

    path = Path(spec).expanduser()
    if path.exists():
        ckpt = _load_training_checkpoint(path)
        if ckpt is not None:
            return ckpt
    from glassformer.presets import PRESETS

    try:
        from glassformer.generation import load

        model, tok = load(spec)
        return model, tok, spec
    except ValueError:
        # resolve() raises ValueError for names it does not know; a preset is then a random
        # model of that architecture (checked second so that real weights always win)
        if spec not in PRESETS:
            raise
    from glassformer.config import Config
    from glassformer.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(Config.preset(spec)).eval()
    return model, None, f"{spec} (random init, seed {seed})"


def _load_training_checkpoint(path: Path) -> tuple[Any, Any | None, str] | None:
    """Our training checkpoints (glassformer.training.checkpoint): a `step_*.pt` file, or a run
    directory (its newest checkpoint). None when `path` is neither."""
    try:
        from glassformer.training import checkpoint as ck
    except ImportError:
        return None
    if path.is_dir() and ck.list_checkpoints(path):
        found = ck.latest_checkpoint(path)
        if found is None:
            return None
        ckpt_path, state = found
        run_dir = path
    elif path.is_file() and path.suffix == ".pt":
        ckpt_path, state = path, ck.load_checkpoint(path)
        run_dir = path.parent.parent if path.parent.name == ck.CHECKPOINT_DIR else path.parent
    else:
        return None
    if not isinstance(state, dict) or "model" not in state or not state.get("config"):
        raise ValueError(f"{ckpt_path}: not a glassformer training checkpoint with a model config")
    model = model_from_checkpoint_state(state)
    return model, _run_tokenizer(run_dir), f"{ckpt_path} (step {state.get('step')})"


def model_from_checkpoint_state(state: dict[str, Any]) -> Any:
    """A `Transformer` from a training checkpoint's {"config": ..., "model": state dict}."""
    import torch

    from glassformer.config import Config
    from glassformer.model import Transformer

    config = Config.from_dict(state["config"])
    with torch.device("meta"):
        model = Transformer(config)
    strict = not state.get("trainable_only", False)
    model.load_state_dict(state["model"], strict=strict, assign=True)
    model.build_rotary()  # RoPE tables are buffers outside the state dict
    return model.eval()


def _run_tokenizer(run_dir: Path) -> Any | None:
    """The tokenizer a run used, if it left one: OUT/final, or the prepared data directory."""
    import json

    from glassformer.tokenizer import load_tokenizer

    candidates = [run_dir / "final" / "tokenizer.json", run_dir / "tokenizer.json"]
    tc_file = run_dir / "train_config.json"
    if tc_file.is_file():
        tc = json.loads(tc_file.read_text())
        for key in ("tokenizer", "data"):
            if tc.get(key):
                p = Path(tc[key])
                candidates.append(p if p.suffix == ".json" else p / "tokenizer.json")
    for c in candidates:
        if c.is_file():
            try:
                return load_tokenizer(c)
            except (ValueError, OSError):
                continue
    return None


def register(app: typer.Typer) -> None:
    @app.command("telemetry")
    def telemetry(
        model: str = typer.Argument(
            ...,
            help="Model name (smollm2-135m-instruct, gemma-3-270m), .gguf file, HF model "
            "directory, training checkpoint, or a preset name (random weights).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
        html_path: Path | None = HTML_OPTION,
        png_path: Path | None = PNG_OPTION,
        text: Path | None = TEXT_OPTION,
        seq_len: int = typer.Option(128, "--seq-len", min=2, help="Tokens per probe sequence."),
        n_sequences: int = typer.Option(
            8, "--sequences", min=1, help="Probe sequences (averaged)."
        ),
        no_data: bool = typer.Option(False, "--no-data", help="Weight-only analysis (no forward)."),
        no_projections: bool = typer.Option(
            False, "--no-projections", help="Skip the weightwatcher metrics of each projection."
        ),
        threshold: float = typer.Option(
            1.05, "--erank-threshold", help="Collapse threshold on the effective rank."
        ),
        moe: str = typer.Option("mean", "--moe", help="MoE W_mlp: mean (of experts) | shared."),
        attention: str = typer.Option(
            "study", "--attention", help="W_attn: study (W_o / W_o W_o^T) | ov (W_o W_v)."
        ),
        fold_norms: bool = typer.Option(
            False, "--fold-norms", help="Fold learned norm gains into the maps (not the study)."
        ),
        threads: int = typer.Option(0, "--threads", min=0, help="torch threads (0: leave as is)."),
    ) -> None:
        """Spectral telemetry: the 1:1 rule (MLP/attention spectral ratio, Lyapunov effective
        rank, collapse layer) next to rank collapse measured on real text."""
        import torch
        from rich.console import Console

        from glassformer.cli.errors import reading
        from glassformer.diagnostics.activations import byte_chunks, encode_chunks, probe_text
        from glassformer.diagnostics.report import analyze_model, plot_report, to_json, write_html

        if moe not in ("mean", "shared"):
            raise typer.BadParameter("expected mean or shared", param_hint="--moe")
        if attention not in ("study", "ov"):
            raise typer.BadParameter("expected study or ov", param_hint="--attention")
        if not threshold > 0:
            raise typer.BadParameter(
                f"expected a number > 0, got {threshold}", param_hint="--erank-threshold"
            )
        if text is not None and not text.is_file():
            raise typer.BadParameter(f"{text}: no such file", param_hint="--text")
        if threads > 0:
            torch.set_num_threads(threads)
        err = Console(stderr=True)  # progress and messages on stderr: --json stays parseable
        try:
            with err.status(f"loading {model} ..."), reading(model):
                net, tok, label = load_for_telemetry(model)
        except (ValueError, FileNotFoundError, ImportError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc

        sequences = None
        if not no_data:
            body = text.read_text() if text is not None else probe_text()
            if tok is not None:
                sequences = encode_chunks(tok, body, seq_len=seq_len, max_sequences=n_sequences)
            else:
                err.print("no tokenizer: probing with the text's UTF-8 bytes as token ids")
                sequences = byte_chunks(
                    body, net.config.vocab_size, seq_len=seq_len, max_sequences=n_sequences
                )
            if not sequences:
                err.print("[yellow]text too short for one sequence: weight-only report[/yellow]")
                sequences = None

        with _progress(err) as progress:
            report = analyze_model(
                net,
                sequences,
                name=label,
                projections=not no_projections,
                erank_threshold=threshold,
                moe=moe,  # type: ignore[arg-type]
                attention=attention,  # type: ignore[arg-type]
                fold_norms=fold_norms,
                progress=progress,
            )

        png = None
        if png_path is not None or html_path is not None:
            try:
                png = plot_report(report, png_path)
            except ImportError:
                err.print("[yellow]matplotlib is not installed: no plots[/yellow]")
        if html_path is not None:
            write_html(report, html_path, png)
            err.print(f"wrote {html_path}")
        if png_path is not None and png is not None:
            err.print(f"wrote {png_path}")
        if as_json:
            typer.echo(to_json(report))
            return
        _print_summary(report)


@contextlib.contextmanager
def _progress(err: Any) -> Iterator[Callable[[str, int, int], None]]:
    """progress(stage, done, total) for the analysis: a live bar per stage on a terminal, and
    elsewhere (a pipe, a log) a plain line when a stage starts, at most every 10 s while it runs,
    and when it ends, so long work never looks hung."""
    if err.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            tasks: dict[str, Any] = {}

            def live(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done)

            yield live
        return
    started: dict[str, float] = {}
    last = [0.0]

    def lines(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage not in started:
            started[stage] = last[0] = now
            err.print(f"telemetry: {stage}: 0/{total}", highlight=False)
        elif done >= total or now - last[0] >= 10:
            last[0] = now
            err.print(
                f"telemetry: {stage}: {done}/{total} ({now - started[stage]:.0f} s)",
                highlight=False,
            )

    yield lines


def _fmt(v: Any) -> str:
    """A number in at most 6 characters and a sign (7 for two-digit exponents), to 2-3
    significant digits: a row of the table fits 80 columns."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-2 <= abs(v) < 1e4:
            return f"{v:.3g}" if abs(v) < 1e3 else f"{v:.0f}"
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return str(v)


# (report key, column header, legend); the JSON report (--json) has every measure.
WEIGHT_COLUMNS = [
    ("spectral_ratio", "ratio", "MLP/attention spectral ratio (1:1 rule)"),
    ("in_band", "band", "ratio inside the band"),
    ("effective_rank", "erank", "Lyapunov effective rank (weights only)"),
    ("A_spectral_norm", "|A|", "||I + W_mlp + W_attn||_2"),
]
DATA_COLUMNS = [
    ("data_effective_rank", "data erank", "effective rank of the hidden states on text"),
    ("token_cosine", "cos", "mean pairwise cosine of tokens (collapse -> 1)"),
    ("rank1_residual", "rank1 res", "||X - 1 xbar^T||_F / ||X||_F"),
    ("residual_norm", "|h|", "mean token norm"),
]


def _print_summary(report: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console()
    f = _fmt
    layers = report["layers"]
    columns = WEIGHT_COLUMNS + (DATA_COLUMNS if "token_cosine" in layers[0] else [])
    table = Table(title=f"telemetry: {report['model']}", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("layer", justify="right", overflow="fold")
    for _, header, _ in columns:
        table.add_column(header, justify="right", overflow="fold")
    for r in layers:
        table.add_row(str(r["layer"]), *(f(r[key]) for key, _, _ in columns))
    con.print(table)
    con.print("; ".join(f"{header}: {legend}" for _, header, legend in columns), highlight=False)
    lo, hi = report["band"]
    con.print(
        f"spectral ratio mean {f(report['spectral_ratio_mean'])}, in band [{lo:g}, {hi:g}]: "
        f"{report['in_band_fraction']:.0%} of layers; weight-only erank min "
        f"{f(report['effective_rank_min'])}, collapse layer {f(report['collapse_layer'])}"
    )
    if "prediction" in report:
        p, d = report["prediction"], report["data"]
        con.print(
            f"measured: data erank min {f(d['effective_rank_min'])}, token cosine max "
            f"{f(d['token_cosine_max'])}, collapse layer {f(d['collapse_layer'])}; prediction "
            f"{'agrees' if p['collapse_agrees'] else 'disagrees'} (Spearman of eranks "
            f"{f(p['spearman_erank'])})"
        )
