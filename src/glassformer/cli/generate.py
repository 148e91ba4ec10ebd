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
    "Weights of the fast path: none (float32, fused modules and the native decode step), "
    "int8 (per channel) or int4 (group-wise)."
)
PLAIN_HELP = (
    "Run the plain model (every module through PyTorch, no fused or native path): the "
    "reference the fast path is tested against, several times slower."
)
THREADS_HELP = (
    "Compute threads (default: the cores this process may use, less those other work keeps "
    "busy; see glassformer.threads)."
)


def _load(model: str, quant: str, plain: bool, threads: int | None, quiet: bool = False):
    from rich.console import Console

    from glassformer.threads import configure_threads

    if plain and quant != "none":
        raise typer.BadParameter(
            f"--plain runs the float32 model as loaded; it takes no --quant (got {quant!r})",
            param_hint="--plain",
        )
    configure_threads(threads)
    from glassformer.generation import load

    with Console(stderr=True).status(f"loading {model} ..."):
        start = time.perf_counter()
        net, tok = load(model, quant=None if plain else quant)
    seconds = time.perf_counter() - start
    if not plain and not quiet:
        from glassformer.inference import fast_path_notes

        for note in fast_path_notes(net):
            typer.echo(f"note: {note}", err=True)
    return net, tok, seconds


def _finish_note(result, model_name: str, net) -> str:
    if result.finish_reason == "context":
        return (
            f"; stopped at {model_name}'s context of {net.config.max_seq_len} positions "
            "(prompt included)"
        )
    return ""


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _config(**kw):
    from glassformer.generation import GenerationConfig

    return GenerationConfig(**kw)


IMAGE_HELP = (
    "An image for the prompt (repeatable), for a model with an image embedder (Gemma 4 "
    "unified): placed at each <|image|> in the prompt, else before it."
)
AUDIO_HELP = (
    "A 16 kHz PCM WAV clip for the prompt (repeatable), for a model with an audio embedder: "
    "placed at each <|audio|> in the prompt, else before it (after the images)."
)
IMAGE_TOKENS_HELP = "Soft tokens an image may use: 70, 140, 280, 560 or 1120."


def _with_markers(text: str, n_images: int, n_audio: int) -> str:
    """The prompt with a marker for each image and clip, unless it places them itself."""
    from glassformer.multimodal import AUDIO_MARKER, IMAGE_MARKER

    if IMAGE_MARKER in text or AUDIO_MARKER in text:
        return text
    return IMAGE_MARKER * n_images + AUDIO_MARKER * n_audio + text


def _media_inputs(net, tok, text: str, images, audio, image_tokens: int, add_special: bool):
    """(prompt ids, the prefill's multimodal keyword inputs) for a prompt with media."""
    from glassformer.multimodal import prepare

    if not net.config.multimodal:
        raise ValueError(
            "--image/--audio: this model has no image or audio embedders (a Gemma 4 unified "
            "model has both)"
        )
    inputs = prepare(
        tok, text, net.config, [str(i) for i in images], [str(a) for a in audio],
        max_soft_tokens=image_tokens, add_special_tokens=add_special,
    )  # fmt: skip
    ids = inputs.pop("input_ids")[0].tolist()
    return ids, inputs


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
        quant: str = typer.Option("none", "--quant", help=QUANT_HELP),
        plain: bool = typer.Option(False, "--plain", help=PLAIN_HELP),
        threads: int | None = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        image: list[str] = typer.Option([], "--image", help=IMAGE_HELP),
        audio: list[str] = typer.Option([], "--audio", help=AUDIO_HELP),
        image_tokens: int = typer.Option(280, "--image-tokens", help=IMAGE_TOKENS_HELP),
    ) -> None:
        """Generate a continuation of PROMPT, streamed to the terminal (KV-cached decoding).

        Stops at end of text, a stop string, -n tokens, or the model's context length,
        whichever comes first. With --image / --audio the model sees them too (encoder-free
        multimodal models: docs/multimodal.md)."""
        net, tok, load_seconds = _load(model, quant, plain, threads, quiet=as_json)
        from glassformer.generation import generate

        content = _with_markers(prompt, len(image), len(audio)) if image or audio else prompt
        text = content
        if chat:
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": content}
            ]
            text = tok.apply_chat_template(messages, add_generation_prompt=True)
        media = None
        if image or audio:
            try:
                text, media = _media_inputs(net, tok, text, image, audio, image_tokens, not chat)
            except ValueError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
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

        result = generate(net, tok, text, config, on_text=None if as_json else show, media=media)
        if as_json:
            out = result.to_dict()
            out.update(
                model=model,
                load_seconds=load_seconds,
                quant="plain" if plain else quant,
                threads=torch_threads(),
                context=net.config.max_seq_len,
            )
            typer.echo(json.dumps(out))
        else:
            sys.stdout.write("\n")
            typer.echo(
                f"[{len(result.prompt_tokens)} prompt tokens at "
                f"{result.prefill_tokens_per_s:.0f} tok/s, {len(result.tokens)} new at "
                f"{result.decode_tokens_per_s:.1f} tok/s; {result.finish_reason}"
                f"{_finish_note(result, model, net)}]",
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
        quant: str = typer.Option("none", "--quant", help=QUANT_HELP),
        plain: bool = typer.Option(False, "--plain", help=PLAIN_HELP),
        threads: int | None = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        as_json: bool = typer.Option(
            False,
            "--json",
            help="For scripts: read one user turn per stdin line and print one JSON object per "
            "answer on stdout (no prompt, no streaming).",
        ),
        image_tokens: int = typer.Option(280, "--image-tokens", help=IMAGE_TOKENS_HELP),
    ) -> None:
        """Interactive multi-turn chat with streaming. Commands: /reset, /exit (or Ctrl-D);
        for a model with image or audio embedders, /image PATH and /audio PATH attach a file
        to the next turn."""
        net, tok, _ = _load(model, quant, plain, threads)
        from glassformer.generation import generate
        from glassformer.threads import configure_threads

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
        # media of the whole conversation in prompt order, and those waiting for the next turn
        images: list[str] = []
        clips: list[str] = []
        pending: tuple[list[str], list[str]] = ([], [])
        typer.echo("glassformer chat: /reset clears the history, /exit quits.", err=True)
        while True:
            try:
                line = input("" if as_json else ">>> ")
            except (EOFError, KeyboardInterrupt):
                typer.echo("", err=as_json)
                return
            command = line.strip()
            if command in ("/exit", "/quit"):
                return
            if command == "/reset":
                history = history[:1] if system else []
                images, clips, pending = [], [], ([], [])
                typer.echo("(history cleared)", err=as_json)
                continue
            if command.startswith(("/image ", "/audio ")):
                kind, path = command.split(maxsplit=1)
                if not net.config.multimodal:
                    typer.echo(f"error: {model} has no image or audio embedders", err=True)
                    continue
                pending[0 if kind == "/image" else 1].append(path)
                typer.echo(f"({path} attached to the next turn)", err=as_json)
                continue
            if not command:
                continue
            content = line
            if pending[0] or pending[1]:
                content = _with_markers(line, len(pending[0]), len(pending[1]))
            history.append({"role": "user", "content": content})
            text = tok.apply_chat_template(history, add_generation_prompt=True)
            turn_images, turn_clips = images + pending[0], clips + pending[1]
            media = None
            if turn_images or turn_clips:
                try:
                    text, media = _media_inputs(
                        net, tok, text, turn_images, turn_clips, image_tokens, False
                    )
                except ValueError as err:
                    typer.echo(f"error: {err}", err=True)
                    history.pop()
                    pending = ([], [])
                    continue
            if threads is None:  # the machine's load changes between turns: choose again
                configure_threads()
            try:
                result = generate(
                    net,
                    tok,
                    text,
                    config,
                    on_text=None
                    if as_json
                    else lambda _, piece: (sys.stdout.write(piece), sys.stdout.flush()),
                    media=media,
                )
            except KeyboardInterrupt:
                typer.echo("\n(interrupted)", err=as_json)
                history.pop()
                continue
            except ValueError as err:  # the history outgrew the context, or broken logits
                typer.echo(f"error: {err}; /reset clears the history", err=True)
                history.pop()
                continue
            if as_json:
                typer.echo(json.dumps({"user": line, **result.to_dict()}))
            else:
                sys.stdout.write("\n")
            history.append({"role": "assistant", "content": result.text})
            images, clips, pending = turn_images, turn_clips, ([], [])
            if result.finish_reason == "context":
                typer.echo(
                    f"(the conversation fills {model}'s context of {net.config.max_seq_len} "
                    "positions: /reset to continue)",
                    err=True,
                )
