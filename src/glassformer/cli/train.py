"""`glassformer train`, `finetune`, `data prepare`, `tokenizer train` and `plot`.

glassformer tokenizer train --vocab-size 8192 --out tok/ corpus/*.txt
glassformer data prepare --out data/ --tokenizer tok/ corpus/        (or: default corpus)
glassformer train --preset tiny --max-steps 200 --out runs/tiny      (default corpus)
torchrun --nproc-per-node 2 -m glassformer.cli train --preset tiny --out runs/ddp
glassformer finetune smollm2-135m-instruct --data chat.jsonl --lora-rank 8 --out runs/sft
glassformer plot runs/tiny
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The sub-command group `name`, created unless another module registered it already."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def _parse_sets(values: list[str] | None) -> dict[str, Any]:
    """--set key=value pairs; values are JSON when they parse (numbers, true, null)."""
    out: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise typer.BadParameter(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _load_model_config(preset: str | None, config: str | None, sets: dict[str, Any]) -> Any:
    from glassformer.config import Config
    from glassformer.loaders.resolve import resolve_config

    if config:
        path = Path(config)
        data = json.loads(path.read_text()) if path.suffix == ".json" and path.is_file() else None
        cfg = Config.from_dict(data) if data and "d_model" in data else resolve_config(config)
    else:
        cfg = Config.preset(preset or "tiny")
    if sets:
        # Changing the head count without the KV heads would break GQA divisibility.
        if "n_heads" in sets and "n_kv_heads" not in sets and cfg.n_kv_heads == cfg.n_heads:
            sets["n_kv_heads"] = sets["n_heads"]
        if ("d_model" in sets or "n_heads" in sets) and "head_dim" not in sets:
            sets["head_dim"] = None
        if "d_model" in sets and "d_ff" not in sets:
            sets["d_ff"] = 0  # back to the 4 * d_model default unless given
        try:
            cfg = cfg.replace(**sets)
        except TypeError as err:
            raise typer.BadParameter(f"--set: {err}") from err
    return cfg


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Bad inputs end in one 'error: ...' line and exit code 2, not a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


def _emit(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    keys = ("status", "steps", "start_val_loss", "loss", "val_loss", "val_ppl", "val_accuracy",
            "tokens_per_s", "mfu", "threads", "out", "plot", "adapter", "merged",
            "sample")  # fmt: skip
    for key in keys:
        if summary.get(key) is not None:
            value = summary[key]
            if key == "mfu":
                value = f"{100 * value:.1f}% ({summary.get('mfu_reference')})"
            elif isinstance(value, float):
                value = f"{value:.4g}"
            elif key == "sample":
                value = repr(value)
            typer.echo(f"{key:14s} {value}")
    if summary.get("error"):
        typer.echo(f"{'error':14s} {summary['error']}")


def _threads(requested: int | None) -> int:
    """Compute threads for torch and the native kernels: `requested`, else what
    `glassformer.threads.configure_threads` picks (the cores this process may use, less the
    ones other work keeps busy; OMP_NUM_THREADS wins, as torchrun sets it)."""
    from glassformer.threads import configure_threads

    return configure_threads(requested)


def _plot(summary: dict[str, Any], as_json: bool) -> None:
    """OUT/curves.png from OUT/metrics.jsonl (what `glassformer plot OUT` draws)."""
    from glassformer.training.plot import render_curves

    out = summary.get("out")
    if not out or not summary.get("steps"):
        return
    if not as_json:
        typer.echo(f"drawing {Path(out) / 'curves.png'}", err=True)
    try:
        summary["plot"] = str(render_curves(out))
    except (OSError, ValueError) as err:
        typer.echo(f"note: no plot ({err}); `glassformer plot {out}` draws it", err=True)


def register(app: typer.Typer) -> None:
    data_app = _group(app, "data", "Prepare training data (token shards).")
    tok_app = _group(app, "tokenizer", "Tokenizer tools.")

    # --- tokenizer train --------------------------------------------------------------------------
    @tok_app.command("train")
    def tokenizer_train(
        out: Annotated[Path, typer.Option("--out", help="Directory for tokenizer.json.")],
        files: Annotated[
            list[str] | None,
            typer.Argument(help="Text files, directories, .jsonl, or 'default' (embedded corpus)."),
        ] = None,
        vocab_size: int = typer.Option(8192, "--vocab-size", help="Final vocabulary size."),
        min_frequency: int = typer.Option(2, help="Stop when the best pair is rarer."),
        special: Annotated[
            list[str] | None,
            typer.Option("--special", help="Special tokens (default: endoftext, ChatML, pad)."),
        ] = None,
        max_bytes: int = typer.Option(0, help="Read at most this much text (0: all)."),
        as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
    ) -> None:
        """Train a byte-level BPE tokenizer (GPT-2 pre-tokenisation) into OUT/tokenizer.json."""
        from glassformer.training.bpe_trainer import DEFAULT_SPECIAL_TOKENS, train_tokenizer
        from glassformer.training.data import iter_documents

        def texts() -> Any:
            n = 0
            for doc in iter_documents(files or ["default"]):
                yield doc.text
                n += len(doc.text.encode("utf-8"))
                if max_bytes and n >= max_bytes:
                    return

        with _errors():
            path, result = train_tokenizer(
                texts(),
                vocab_size,
                out,
                special_tokens=special or DEFAULT_SPECIAL_TOKENS,
                min_frequency=min_frequency,
            )
        summary = {"tokenizer": str(path), "vocab_size": len(result.vocab), **result.stats}
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            typer.echo(
                f"wrote {path}: {len(result.vocab)} tokens, {int(result.stats['merges'])} merges "
                f"in {result.stats['total_seconds']:.1f}s"
            )

    # --- data prepare -----------------------------------------------------------------------------
    @data_app.command("prepare")
    def data_prepare(
        out: Annotated[Path, typer.Option("--out", help="Output directory (shards + manifest).")],
        inputs: Annotated[
            list[str] | None,
            typer.Argument(
                help="Files, directories, .jsonl, hf:NAME[:CONFIG][:SPLIT]; none: default corpus."
            ),
        ] = None,
        tokenizer: str = typer.Option(
            None, "--tokenizer", help="tokenizer.json or its directory (default: train one)."
        ),
        vocab_size: int = typer.Option(8192, help="Vocabulary of the tokenizer trained here."),
        val_fraction: float = typer.Option(0.01, help="Share of documents held out."),
        seed: int = typer.Option(0, help="Seed of the train/validation split."),
        text_field: str = typer.Option("text", help="JSONL field holding the text."),
        max_bytes: int = typer.Option(0, help="Stop after this much text (0: all)."),
        as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
    ) -> None:
        """Tokenize documents into uint16/uint32 shards with a manifest and a validation split."""
        from glassformer.training.data import prepare_data

        with _errors():
            manifest = prepare_data(
                inputs or ["default"],
                out,
                tokenizer,
                vocab_size=vocab_size,
                val_fraction=val_fraction,
                seed=seed,
                text_field=text_field,
                max_bytes=max_bytes or None,
                progress=None if as_json else lambda p: typer.echo(f"  {p}", err=True),
            )
        if as_json:
            typer.echo(json.dumps(manifest, indent=2))
            return
        tr, va = manifest["splits"]["train"], manifest["splits"]["val"]
        typer.echo(
            f"wrote {out}: {tr['tokens']:,} train tokens ({tr['documents']} docs), "
            f"{va['tokens']:,} validation tokens ({va['documents']} docs), "
            f"{manifest['bytes_per_token']:.2f} bytes/token, {manifest['seconds']:.1f}s"
        )

    # --- train ------------------------------------------------------------------------------------
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        task: str = typer.Option(
            "lm",
            help="lm (pretraining) | vlm (a vision-language model from scratch on synthetic "
            "picture questions; --preset tiny-vlm) | sft | classify | dpo | ipo | simpo | orpo: "
            "the others fine-tune --model as `glassformer finetune` does.",
        ),
        model: str = typer.Option(
            None, help="Fine-tuning tasks: the model (smollm2-135m-instruct, GGUF, HF dir)."
        ),
        lora_rank: int = typer.Option(8, help="Fine-tuning tasks: LoRA rank (0: full)."),
        beta: float = typer.Option(None, help="Preference tasks: beta (see finetune)."),
        preset: str = typer.Option("tiny", help="Architecture preset (see `presets`)."),
        questions: str = typer.Option(
            "colour,shape,count,position,digit",
            help="--task vlm: the question types asked (comma-separated).",
        ),
        config: str = typer.Option(None, help="Model Config JSON (or HF config.json)."),
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="Override a model config field: --set n_layers=6."),
        ] = None,
        connections: str = typer.Option(
            None,
            help="Cross-layer topology: residual | denseformer | mudd | hyper | mhc (their "
            "settings with --set, e.g. --set hyper_streams=2; docs/connections.md).",
        ),
        data: str = typer.Option(None, help="Prepared data dir (default: the default corpus)."),
        tokenizer: str = typer.Option(None, help="Tokenizer for the default corpus."),
        vocab_size: int = typer.Option(None, help="Vocab of the auto-trained tokenizer."),
        out: str = typer.Option("runs/run", help="Run directory."),
        max_steps: int = typer.Option(200, help="Optimizer steps."),
        batch_size: int = typer.Option(16, help="Global batch in sequences (all ranks)."),
        micro_batch_size: int = typer.Option(None, help="Per-rank micro-batch (accumulates)."),
        seq_len: int = typer.Option(256, help="Tokens per sequence."),
        lr: float = typer.Option(1e-3, help="Peak learning rate."),
        min_lr_ratio: float = typer.Option(0.1, help="Final LR as a share of the peak."),
        schedule: str = typer.Option("cosine", help="cosine | wsd | linear | constant."),
        warmup_steps: int = typer.Option(None, help="Warmup steps (default 5% of the run)."),
        decay_fraction: float = typer.Option(0.2, help="WSD: share of steps spent decaying."),
        weight_decay: float = typer.Option(0.1, help="AdamW decoupled weight decay."),
        grad_clip: float = typer.Option(1.0, help="Clip the global grad norm (0: off)."),
        dtype: str = typer.Option("auto", help="auto | fp32 | bf16 (autocast)."),
        device: str = typer.Option("auto", help="auto | cpu | cuda | mps."),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
        activation_checkpointing: bool = typer.Option(
            False, "--activation-checkpointing", help="Recompute block activations."
        ),
        fsdp: bool = typer.Option(False, "--fsdp", help="FSDP2 instead of DDP (torchrun)."),
        eval_every: int = typer.Option(100, help="Validate every N steps (and at the end)."),
        eval_batches: int = typer.Option(8, help="Validation batches (global) per eval."),
        eval_at_start: bool = typer.Option(
            False, "--eval-at-start", help="Also validate before the first step."
        ),
        sample_tokens: int = typer.Option(48, help="Tokens sampled at each eval (0: none)."),
        sample_prompt: str = typer.Option("def ", help="Prompt for the samples."),
        telemetry_every: int = typer.Option(
            0, help="Log spectral telemetry (1:1 rule, rank collapse) every N steps (0: off)."
        ),
        balance_weight: float = typer.Option(
            0.0, help="Weight of the |log ||W_mlp|| - log ||W_attn||| balance regulariser."
        ),
        checkpoint_every: int = typer.Option(100, help="Checkpoint every N steps."),
        keep_checkpoints: int = typer.Option(2, help="Checkpoints kept (0: all)."),
        seed: int = typer.Option(0, help="Seed (initialisation and data order)."),
        resume: bool = typer.Option(False, "--resume", help="Continue from OUT's checkpoint."),
        force: bool = typer.Option(
            False,
            "--force",
            help="Start a new run in OUT although it holds another run's (or only unreadable) "
            "checkpoints; they move to OUT/previous/.",
        ),
        stop_after: int = typer.Option(
            None, help="Stop (checkpointed) after N steps of this invocation; --resume later."
        ),
        threads: int = typer.Option(
            None, help="Compute threads (default: the cores free for this process)."
        ),
        tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log TensorBoard."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        export: bool = typer.Option(True, "--export/--no-export", help="Write OUT/final."),
        plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw OUT/curves.png at the end."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Pretrain a model from scratch (single process, or DDP/FSDP2 under torchrun), or
        fine-tune one with --task and --model (e.g. --task dpo --data pairs.jsonl)."""
        from glassformer.training.trainer import TrainConfig, train

        if preset == "tiny-vlm" and task == "lm":
            task = "vlm"  # the preset reads pictures: its data is the synthetic VQA task
        if task == "vlm" and preset == "tiny" and config is None:
            preset = "tiny-vlm"  # the default text preset has no vision embedder
        if task not in ("lm", "vlm"):
            if not model or not data:
                raise typer.BadParameter(f"--task {task} needs --model and --data")
            def given(name: str, fallback: Any) -> Any:
                source = ctx.get_parameter_source(name)  # typer's own click, or click's
                typed = getattr(source, "name", "") == "COMMANDLINE"
                return ctx.params[name] if typed else fallback

            # finetune's defaults, unless given here (pretraining's suit training from scratch)
            _finetune(
                model, Path(data), task, given("out", f"runs/{task}"), lora_rank, 16.0, 0.0,
                "q_proj,v_proj", True, given("max_steps", 20), given("batch_size", 4),
                micro_batch_size, given("seq_len", 256), given("lr", 2e-4), warmup_steps,
                schedule, given("eval_every", 0), 0, given("checkpoint_every", 0), 0.15, seed,
                dtype, resume, force, progress, as_json, beta,
            )  # fmt: skip
            return

        with _errors():
            n_threads = _threads(threads)
            sets = _parse_sets(set_)
            if connections is not None:
                sets["connections"] = connections
            model_config = _load_model_config(preset, config, sets)
        tc = TrainConfig(
            out=out,
            preset=preset,
            config=config,
            data=data,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            seq_len=seq_len,
            batch_size=batch_size,
            micro_batch_size=micro_batch_size,
            max_steps=max_steps,
            lr=lr,
            min_lr_ratio=min_lr_ratio,
            schedule=schedule,
            warmup_steps=warmup_steps,
            decay_fraction=decay_fraction,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            dtype=dtype,
            device=device,
            compile=compile_,
            activation_checkpointing=activation_checkpointing,
            fsdp=fsdp,
            eval_every=eval_every,
            eval_batches=eval_batches,
            eval_at_start=eval_at_start,
            sample_tokens=sample_tokens,
            sample_prompt=sample_prompt,
            checkpoint_every=checkpoint_every,
            telemetry_every=telemetry_every,
            balance_weight=balance_weight,
            keep_checkpoints=keep_checkpoints,
            seed=seed,
            resume=resume,
            force=force,
            stop_after=stop_after,
            tensorboard=tensorboard,
            progress=progress,
            export=export,
            extra={"set": _parse_sets(set_)},
        )
        with _errors():
            if task == "vlm":
                from glassformer.training.vlm import vlm_task

                kinds = tuple(q.strip() for q in questions.split(",") if q.strip())
                job, model_config = vlm_task(tc, model_config, kinds)
                summary = train(tc, model_config=model_config, task=job)
            else:
                summary = train(tc, model_config=model_config)
        summary["threads"] = n_threads
        if _is_main():
            if plot:
                _plot(summary, as_json)
            _emit(summary, as_json)
        if summary["status"] == "diverged":
            raise typer.Exit(3)

    # --- finetune ---------------------------------------------------------------------------------
    @app.command("finetune")
    def finetune_cmd(
        model: Annotated[
            str, typer.Argument(help="Model name (smollm2-135m-instruct), GGUF file or HF dir.")
        ],
        data: Annotated[
            Path, typer.Option(help="JSONL: {'messages': [...]} or {'text': ..., 'label': ...}.")
        ],
        task: str = typer.Option(
            "sft",
            help="sft (chat, assistant-only loss) | classify | dpo | ipo | simpo | orpo "
            "(preference pairs: JSONL {'prompt', 'chosen', 'rejected'}).",
        ),
        out: str = typer.Option("runs/finetune", help="Run directory."),
        beta: float = typer.Option(
            None, help="Preference tasks: beta (default dpo/ipo/orpo 0.1, simpo 2.0)."
        ),
        simpo_gamma: float = typer.Option(0.5, help="SimPO: target reward margin gamma."),
        lora_rank: int = typer.Option(8, help="LoRA rank (0: full fine-tuning)."),
        lora_alpha: float = typer.Option(16.0, help="LoRA alpha (update scale alpha/rank)."),
        lora_dropout: float = typer.Option(0.0, help="Dropout on the LoRA input."),
        lora_targets: str = typer.Option(
            "q_proj,v_proj", help="Comma-separated module suffixes, or all-linear."
        ),
        merge: bool = typer.Option(True, "--merge/--no-merge", help="Export merged weights."),
        max_steps: int = typer.Option(20, help="Optimizer steps."),
        batch_size: int = typer.Option(4, help="Global batch (examples)."),
        micro_batch_size: int = typer.Option(None, help="Per-rank micro-batch."),
        max_len: int = typer.Option(256, help="Truncate examples to this many tokens."),
        lr: float = typer.Option(2e-4, help="Peak learning rate."),
        warmup_steps: int = typer.Option(None, help="Warmup steps."),
        schedule: str = typer.Option("cosine", help="cosine | wsd | linear | constant."),
        eval_every: int = typer.Option(0, help="Validate every N steps (0: at the end)."),
        sample_tokens: int = typer.Option(32, help="Tokens sampled at evaluation."),
        checkpoint_every: int = typer.Option(0, help="Checkpoint every N steps (0: end)."),
        val_fraction: float = typer.Option(0.15, help="Share of examples held out."),
        seed: int = typer.Option(0, help="Seed."),
        dtype: str = typer.Option("auto", help="auto | fp32 | bf16."),
        resume: bool = typer.Option(False, "--resume", help="Continue from OUT's checkpoint."),
        force: bool = typer.Option(
            False, "--force", help="Start anew in OUT although it holds checkpoints (moved aside)."
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Fine-tune a pretrained model: chat SFT, classification or preference tuning
        (DPO, IPO, SimPO, ORPO), LoRA or full."""
        _finetune(
            model, data, task, out, lora_rank, lora_alpha, lora_dropout, lora_targets, merge,
            max_steps, batch_size, micro_batch_size, max_len, lr, warmup_steps, schedule,
            eval_every, sample_tokens, checkpoint_every, val_fraction, seed, dtype, resume,
            force, progress, as_json, beta, simpo_gamma,
        )  # fmt: skip

    def _finetune(
        model: str, data: Path, task: str, out: str, lora_rank: int, lora_alpha: float,
        lora_dropout: float, lora_targets: str, merge: bool, max_steps: int, batch_size: int,
        micro_batch_size: int | None, max_len: int, lr: float, warmup_steps: int | None,
        schedule: str, eval_every: int, sample_tokens: int, checkpoint_every: int,
        val_fraction: float, seed: int, dtype: str, resume: bool, force: bool, progress: bool,
        as_json: bool, beta: float | None = None, simpo_gamma: float = 0.5,
    ) -> None:  # fmt: skip
        import torch

        from glassformer.generation import load
        from glassformer.training.preference_losses import LOSSES
        from glassformer.training.trainer import TrainConfig

        known = ("sft", "classify", *LOSSES)
        if task not in known:
            raise typer.BadParameter(f"--task: expected one of {', '.join(known)}, got {task!r}")
        torch.manual_seed(seed)
        with _errors():
            net, tok = load(model)
        net.train()
        tc = TrainConfig(
            out=out,
            preset=None,
            data=str(data),
            seq_len=max_len,
            batch_size=batch_size,
            micro_batch_size=micro_batch_size,
            max_steps=max_steps,
            lr=lr,
            warmup_steps=warmup_steps,
            schedule=schedule,
            weight_decay=0.0,
            eval_every=eval_every,
            eval_batches=4,
            eval_at_start=True,
            sample_tokens=sample_tokens if task == "sft" else 0,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=1,
            seed=seed,
            dtype=dtype,
            resume=resume,
            force=force,
            progress=progress,
            export=False,
            extra={"task": task, "model": model, "lora_rank": lora_rank, "beta": beta},
        )
        with _errors():
            summary = run_finetune(
                tc, net, tok, task, data, lora_rank, lora_alpha, lora_dropout, lora_targets,
                max_len, val_fraction, merge, beta, simpo_gamma, model,
            )  # fmt: skip
        if _is_main():
            if task in LOSSES and summary.get("steps"):
                from glassformer.training.preference_plot import render_preference_curves

                try:
                    summary["plot"] = str(render_preference_curves(out))
                except (OSError, ValueError) as err:
                    typer.echo(f"note: no plot ({err})", err=True)
            _emit(summary, as_json)
        if summary["status"] != "completed":
            raise typer.Exit(3)

    # --- plot -------------------------------------------------------------------------------------
    @app.command("plot")
    def plot_cmd(
        run: Annotated[Path, typer.Argument(help="Run directory (holding metrics.jsonl).")],
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="PNG path (default RUN/curves.png).")
        ] = None,
        title: str = typer.Option(None, help="Figure title."),
        dpi: int = typer.Option(80, min=1, help="Resolution."),
        as_json: bool = typer.Option(False, "--json", help='Print {"png": PATH} as JSON.'),
    ) -> None:
        """Render loss, validation perplexity and learning-rate curves to a PNG."""
        from glassformer.training.plot import render_curves

        try:
            path = render_curves(run, output, title, dpi)
        except (FileNotFoundError, ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        typer.echo(json.dumps({"png": str(path)}) if as_json else str(path))


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def run_finetune(
    tc: Any,
    net: Any,
    tok: Any,
    task: str,
    data: Path,
    lora_rank: int,
    lora_alpha: float,
    lora_dropout: float,
    lora_targets: str,
    max_len: int,
    val_fraction: float,
    merge: bool,
    beta: float | None = None,
    simpo_gamma: float = 0.5,
    model_name: str = "",
) -> dict[str, Any]:
    """Build the task and (LoRA) model, train, then export adapter and/or merged weights."""
    from glassformer.loaders.safetensors_io import save_hf_dir
    from glassformer.training.lora import apply_lora, merge_lora, save_adapter
    from glassformer.training.preference_losses import LOSSES
    from glassformer.training.trainer import Trainer

    model: Any = net
    data_stats: dict[str, int] | None = None
    if task in LOSSES:
        from glassformer.training.preference import (
            PreferenceTask,
            SequenceLogProbs,
            load_preference_jsonl,
        )

        pairs, data_stats = load_preference_jsonl(data)
        limit = min(max_len, net.config.max_seq_len)
        job = PreferenceTask(tok, pairs, task, beta, simpo_gamma, limit, val_fraction, tc.seed)
        data_stats = {**data_stats, **job.stats}
        model = SequenceLogProbs(net)
        # The frozen reference: the model before any update (and before LoRA), scored once.
        job.compute_reference(
            model, batch_pairs=tc.micro_batch_size or tc.batch_size,
            cache=Path(tc.out) / "reference_logps.pt", key=model_name,
            progress=_reference_progress(tc.progress and _is_main()),
        )  # fmt: skip
    elif task == "sft":
        from glassformer.training.sft import SFTTask, load_chat_jsonl

        job: Any = SFTTask(tok, load_chat_jsonl(data), max_len, val_fraction, tc.seed)
    elif task == "classify":
        from glassformer.training.classify import (
            ClassificationTask,
            SequenceClassifier,
            load_classification_jsonl,
        )

        rows = load_classification_jsonl(data)
        job = ClassificationTask(tok, rows, max_len, val_fraction, tc.seed)
        model = SequenceClassifier(net, job.n_classes)
    else:
        raise typer.BadParameter(f"--task: expected sft, classify or {'/'.join(LOSSES)}")
    if lora_rank > 0:
        apply_lora(net, lora_rank, lora_alpha, lora_dropout, lora_targets)
        if task == "classify":
            model.score.weight.requires_grad_(True)  # the new head always trains
    trainer = Trainer(
        tc,
        model=model,
        tokenizer=tok,
        task=job,
        model_config=net.config,
        trainable_only_checkpoints=lora_rank > 0,
    )
    summary = trainer.train()
    if data_stats is not None:
        summary["data"] = data_stats
    out = Path(tc.out)
    if summary["status"] == "completed" and trainer.is_main:
        if lora_rank > 0:
            summary["adapter"] = str(save_adapter(net, out / "adapter"))
        if task == "classify":
            import torch

            head = {"weight": model.score.weight.detach().cpu(), "labels": job.labels}
            torch.save(head, out / "classifier_head.pt")
            summary["labels"] = [str(x) for x in job.labels]
        if merge or lora_rank == 0:
            if lora_rank > 0:
                merge_lora(net)
            state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
            _save_merged(out / "merged", net.config, state, model_name, save_hf_dir)
            summary["merged"] = str(out / "merged")
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _reference_progress(shown: bool) -> Any:
    """A progress callback (done, total) for scoring the reference model, or None."""
    if not shown:
        return None
    from tqdm import tqdm

    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc="reference log-probs", unit="pair", leave=False))
        bar[0].update(done - bar[0].n)
        if done >= total:
            bar[0].close()

    return update


def _save_merged(directory: Path, config: Any, state: Any, model_name: str, save: Any) -> None:
    """The fine-tuned weights as an HF directory, with the source model's tokenizer when it
    can be written (then `glassformer.load(directory)` and the CLI commands take it)."""
    from glassformer.hf.export import export_hf
    from glassformer.loaders.resolve import resolve

    try:
        source = resolve(model_name) if model_name else None
        export_hf(directory, config, state, source)
    except (ImportError, ValueError, FileNotFoundError):
        save(directory, config, state)
