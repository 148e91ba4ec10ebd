"""`glassformer serve`: the model behind an OpenAI-compatible HTTP API (see docs/serving.md)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import typer

from glassformer.cli.generate import MODEL_HELP, QUANT_HELP, THREADS_HELP, _load

# Slots of this many positions each by default: a model's full context (8192 for SmolLM2)
# times --max-batch slots would preallocate gigabytes of KV cache.
DEFAULT_CTX = 2048


def served_name(model: str) -> str:
    """The id clients name: a path's file name without .gguf, else the name as given."""
    path = Path(model)
    if path.exists():
        return path.stem if path.suffix == ".gguf" else path.name
    return model


def check_address(host: str, port: int) -> None:
    """Fail before the model loads when the address cannot be listened on (in use, unknown)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise typer.BadParameter(
            f"cannot listen on {host}:{port}: {err.strerror or err}", param_hint="--host/--port"
        ) from None


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        model: str = typer.Argument(..., help=MODEL_HELP),
        quant: str = typer.Option("none", "--quant", help=QUANT_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="0: any free port."),
        max_batch: int = typer.Option(
            4, "--max-batch", min=1, help="Sequences decoded at once (one KV slot each)."
        ),
        max_queue: int = typer.Option(
            16, "--max-queue", min=0, help="Requests waiting for a slot; beyond it: 503."
        ),
        ctx: int | None = typer.Option(
            None,
            "--ctx",
            min=2,
            help=f"Positions per slot, prompt and reply (default: the model's context, at "
            f"most {DEFAULT_CTX}).",
        ),
        prefill_chunk: int = typer.Option(
            256, "--prefill-chunk", min=1, help="Prompt tokens a newcomer prefills per step."
        ),
        threads: int | None = typer.Option(None, "--threads", "-t", min=1, help=THREADS_HELP),
        as_json: bool = typer.Option(
            False, "--json", help="Print one JSON line (url, model, slots) once listening."
        ),
    ) -> None:
        """Serve MODEL over HTTP: /v1/chat/completions, /v1/completions, /v1/models, /health
        (OpenAI's API, streaming or not), with continuous batching. Ctrl-C stops."""
        import uvicorn

        from glassformer.serving import Scheduler
        from glassformer.serving.api import create_app

        check_address(host, port)
        net, tok, _ = _load(model, quant, False, threads, quiet=as_json)
        limit = net.config.max_seq_len
        if ctx is not None and ctx > limit:
            raise typer.BadParameter(
                f"{ctx} exceeds the model's context of {limit} positions", param_hint="--ctx"
            )
        scheduler = Scheduler(
            net,
            tok,
            max_batch=max_batch,
            max_queue=max_queue,
            ctx=ctx or min(limit, DEFAULT_CTX),
            prefill_chunk=prefill_chunk,
        )
        name = served_name(model)
        app = create_app(scheduler, name)
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )

        def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                threading.Event().wait(0.05)
            bound = server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{host}:{bound}"
            info = {
                "url": url,
                "model": name,
                "quant": quant,
                "slots": max_batch,
                "queue": max_queue,
                "context": scheduler.ctx,
            }
            if as_json:
                typer.echo(json.dumps(info))
            else:
                typer.echo(
                    f"serving {name} ({quant}) at {url}/v1: {max_batch} slots of "
                    f"{scheduler.ctx} positions, queue {max_queue}; Ctrl-C stops",
                    err=True,
                )

        scheduler.start()
        threading.Thread(target=announce, daemon=True).start()
        try:
            server.run()
        finally:
            scheduler.stop()
