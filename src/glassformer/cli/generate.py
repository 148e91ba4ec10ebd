"""`glassformer generate` and `glassformer chat`: a real model answering, fully offline."""

from __future__ import annotations

import json
import sys
import time

import typer

DEFAULT_MODEL = "smollm2-135m-instruct"

MODEL_HELP = (
    "Model name (smollm2-135m-instruct, gemma-3-270m), a .gguf file or an HF model directory."
)


QUANT_HELP = (
    "Weights: none (float32, fused fast path), int8 (per channel) or int4 (group-wise); "
    "default: the plain float32 model."
)


def _load(model: str, quant: str | None = None):
    from rich.console import Console

    from glassformer.generation import load

    with Console(stderr=True).status(f"loading {model} ..."):
        start = time.perf_counter()
        pair = load(model, quant=quant)
    return (*pair, time.perf_counter() - start)


def _config(**kw):
    from glassformer.generation import GenerationConfig

    return GenerationConfig(**kw)


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate_cmd(
        prompt: str = typer.Argument(..., help="The prompt text."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        max_new_tokens: int = typer.Option(128, "--max-new-tokens", "-n", min=0),
        temperature: float = typer.Option(0.0, help="0 = greedy; higher = more random."),
        top_k: int = typer.Option(0, "--top-k", help="Keep the k most likely tokens (0: off)."),
        top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1: off)."),
        min_p: float = typer.Option(0.0, "--min-p", help="Min probability relative to the top."),
        repetition_penalty: float = typer.Option(1.0, "--repetition-penalty"),
        seed: int | None = typer.Option(None, help="Random seed for sampling."),
        stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
        ignore_eos: bool = typer.Option(False, "--ignore-eos", help="Don't stop at EOS."),
        chat: bool = typer.Option(
            False, "--chat", help="Wrap the prompt in the model's chat template as a user turn."
        ),
        system: str | None = typer.Option(None, help="System prompt (with --chat)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object at the end."),
        quant: str | None = typer.Option(None, "--quant", help=QUANT_HELP),
    ) -> None:
        """Generate a continuation of PROMPT, streamed to the terminal (KV-cached decoding)."""
        from glassformer.generation import generate

        net, tok, load_seconds = _load(model, quant)
        text = prompt
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            text = tok.apply_chat_template(messages, add_generation_prompt=True)
        config = _config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            stop_strings=tuple(stop),
            ignore_eos=ignore_eos,
            # a chat template already spells out its special tokens
            add_special_tokens=not chat,
        )

        def show(_: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        result = generate(net, tok, text, config, on_text=None if as_json else show)
        if as_json:
            out = result.to_dict()
            out.update(model=model, load_seconds=load_seconds)
            typer.echo(json.dumps(out))
        else:
            sys.stdout.write("\n")
            typer.echo(
                f"[{len(result.prompt_tokens)} prompt tokens at "
                f"{result.prefill_tokens_per_s:.0f} tok/s, {len(result.tokens)} new at "
                f"{result.decode_tokens_per_s:.1f} tok/s; {result.finish_reason}]",
                err=True,
            )

    @app.command("chat")
    def chat_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP),
        system: str | None = typer.Option(None, help="System prompt (else the template's)."),
        max_new_tokens: int = typer.Option(256, "--max-new-tokens", "-n", min=1),
        temperature: float = typer.Option(0.0, help="0 = greedy."),
        top_p: float = typer.Option(1.0, "--top-p"),
        seed: int | None = typer.Option(None),
        quant: str | None = typer.Option(None, "--quant", help=QUANT_HELP),
    ) -> None:
        """Interactive multi-turn chat with streaming. Commands: /reset, /exit (or Ctrl-D)."""
        from glassformer.generation import generate

        net, tok, _ = _load(model, quant)
        if tok.chat_template is None:
            typer.echo(f"error: {model} has no chat template", err=True)
            raise typer.Exit(2)
        config = _config(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            add_special_tokens=False,
        )
        history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        typer.echo("glassformer chat: /reset clears the history, /exit quits.", err=True)
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                typer.echo("")
                return
            except KeyboardInterrupt:
                typer.echo("")
                return
            command = line.strip()
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                history = history[:1] if system else []
                typer.echo("(history cleared)")
                continue
            if not command:
                continue
            history.append({"role": "user", "content": line})
            text = tok.apply_chat_template(history, add_generation_prompt=True)
            try:
                result = generate(
                    net,
                    tok,
                    text,
                    config,
                    on_text=lambda _, piece: (sys.stdout.write(piece), sys.stdout.flush()),
                )
            except KeyboardInterrupt:
                typer.echo("\n(interrupted)")
                history.pop()
                continue
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": result.text})
