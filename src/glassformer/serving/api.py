"""The OpenAI-compatible HTTP layer over a `Scheduler` (FastAPI).

    GET  /                       a chat page (streaming, multi-turn, a stop button)
    GET  /health                 status, free slots, queue length
    GET  /v1/models              the one served model
    POST /v1/completions         text (or token ids) in, text out
    POST /v1/chat/completions    messages rendered with the model's chat template

Both POST endpoints answer whole (JSON) or streamed (`"stream": true`: server-sent events,
one OpenAI chunk per `data:` line, then `data: [DONE]`). Every error is OpenAI's JSON shape
`{"error": {"message", "type", "param", "code"}}`: 400 for a request we cannot serve, 503 when
every slot is busy and the queue is full, 500 (no traceback) for a failure of ours.
The scheduler's thread reports tokens through `loop.call_soon_threadsafe`; a client that
disconnects cancels its request, which frees its slot at the scheduler's next step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from glassformer.generation.generate import GenerationConfig
from glassformer.serving.scheduler import Event, QueueFullError
from glassformer.serving.scheduler import Request as Job

# The chat page: one self-contained file (no external assets), streaming through the API below.
CHAT_PAGE = (Path(__file__).parent / "chat.html").read_text(encoding="utf-8")
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}
MAX_STOPS = 4
MAX_TOP_LOGPROBS = 20
DISCONNECT_CHECK = 0.2  # seconds between checks that a non-streaming client is still there


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code=None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_type(status: int) -> str:
    if status == 503:
        return "server_error"
    return "invalid_request_error" if status < 500 else "server_error"


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields OpenAI defines that we do not use

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None
    echo: bool = False


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


def create_app(scheduler, model_name: str) -> FastAPI:
    """The FastAPI application serving `scheduler`'s model under the id `model_name`."""
    app = FastAPI(title="glassformer", docs_url=None, redoc_url=None, openapi_url=None)
    tokenizer = scheduler.tokenizer
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_: Request, err: APIError) -> JSONResponse:
        body = error_body(err.message, _error_type(err.status), err.param, err.code)
        return JSONResponse(body, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid" or not where:
            message = "malformed request body: expected a JSON object"
        else:
            message = f"{where or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(
            error_body(message, "invalid_request_error", where or None), status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = _error_type(err.status_code)
        return JSONResponse(error_body(str(err.detail), kind), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception) -> JSONResponse:
        message = f"internal error: {type(err).__name__}"
        return JSONResponse(error_body(message, "server_error"), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return CHAT_PAGE

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "ok",
            "model": model_name,
            "slots_total": scheduler.max_batch,
            "slots_free": scheduler.slots_free,
            "queued": scheduler.queued,
            "context": scheduler.ctx,
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [_model_card(model_name, created)]}

    @app.get("/v1/models/{name}")
    async def model(name: str) -> dict:
        if name != model_name:
            raise APIError(404, f"model {name!r} not found", "model", "model_not_found")
        return _model_card(model_name, created)

    def check_common(body: _Common, max_tokens: int | None) -> GenerationConfig:
        if body.model != model_name:
            raise APIError(
                400,
                f"model: {body.model!r} is not served here (this server serves {model_name!r})",
                "model",
                "model_not_found",
            )
        if body.n != 1:
            raise APIError(400, f"n: only 1 is supported, got {body.n}", "n")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(body, name):
                raise APIError(400, f"{name}: not supported (only 0)", name)
        if max_tokens is not None and max_tokens < 0:
            raise APIError(400, f"max_tokens: must be >= 0, got {max_tokens}", "max_tokens")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOPS:
            raise APIError(400, f"stop: at most {MAX_STOPS} strings, got {len(stops)}", "stop")
        if body.seed is not None and not -(2**63) <= body.seed < 2**64:
            raise APIError(400, f"seed: must fit 64 bits, got {body.seed}", "seed")
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        if temperature < 0 or temperature > 2:
            raise APIError(400, f"temperature: must be in [0, 2], got {temperature}", "temperature")
        try:
            return GenerationConfig(
                max_new_tokens=scheduler.ctx if max_tokens is None else max_tokens,
                # below the sampler's smallest temperature the distribution is the argmax's
                temperature=0.0 if temperature < 1e-3 else temperature,
                top_p=top_p,
                seed=body.seed,
                stop_strings=tuple(stops),
            )
        except ValueError as err:
            raise APIError(400, str(err), str(err).split(":")[0]) from None

    def encode(text: str, special: bool) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=special, parse_special=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http: Request):
        config = check_common(body, body.max_tokens)
        if body.echo:
            raise APIError(400, "echo: not supported", "echo")
        if body.logprobs is not None and not 0 <= body.logprobs <= 5:
            raise APIError(400, f"logprobs: must be in [0, 5], got {body.logprobs}", "logprobs")
        prompt = body.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise APIError(400, "prompt: one prompt per request", "prompt")
            prompt = prompt[0]
        ids = encode(prompt, True) if isinstance(prompt, str) else list(prompt)
        if any(not 0 <= i < scheduler.n_text for i in ids):
            raise APIError(400, "prompt: a token id outside the vocabulary", "prompt")
        job = _submit(ids, config, body.logprobs)
        return await _respond(job, body, http, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, http: Request):
        max_tokens = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else body.max_tokens
        )
        config = check_common(body, max_tokens)
        top = None
        if body.logprobs:
            top = body.top_logprobs or 0
            if not 0 <= top <= MAX_TOP_LOGPROBS:
                raise APIError(
                    400,
                    f"top_logprobs: must be in [0, {MAX_TOP_LOGPROBS}], got {top}",
                    "top_logprobs",
                )
        elif body.top_logprobs:
            raise APIError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
        if getattr(tokenizer, "chat_template", None) is None:
            raise APIError(400, f"{model_name} has no chat template: use /v1/completions", "model")
        messages = [{"role": m.role, "content": _text(m.content)} for m in body.messages]
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as err:  # the template rejects the conversation (roles, order)
            message = f"messages: the chat template refused them: {err}"
            raise APIError(400, message, "messages") from None
        job = _submit(encode(text, False), config, top)
        return await _respond(job, body, http, chat=True)

    def _submit(ids: list[int], config: GenerationConfig, top: int | None) -> _Pending:
        pending = _Pending(asyncio.get_running_loop())
        job = Job(prompt=ids, config=config, emit=pending.put, top_logprobs=top)
        pending.job = job
        try:
            scheduler.submit(job)
        except QueueFullError as err:
            raise APIError(503, str(err), None, "queue_full") from None
        except ValueError as err:
            raise APIError(400, str(err), "prompt", "context_length_exceeded") from None
        return pending

    async def _respond(pending: _Pending, body: _Common, http: Request, chat: bool):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            chunks = _stream(pending, rid, chat, usage)
            return StreamingResponse(chunks, media_type="text/event-stream")
        events: list[Event] = []
        checked = time.monotonic()
        try:
            while True:
                try:
                    event = await asyncio.wait_for(pending.queue.get(), timeout=DISCONNECT_CHECK)
                except TimeoutError:
                    event = None
                if event is not None:
                    events.append(event)
                    if event.finish_reason is not None:
                        break
                if time.monotonic() - checked >= DISCONNECT_CHECK:  # tokens may keep coming
                    checked = time.monotonic()
                    if await http.is_disconnected():
                        pending.job.cancel()
                        return JSONResponse({}, status_code=499)
        except asyncio.CancelledError:
            pending.job.cancel()
            raise
        last = events[-1]
        if last.finish_reason == "error":
            raise APIError(500, f"generation failed: {last.error}", None, "generation_error")
        text = "".join(e.text for e in events)
        choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH[last.finish_reason]}
        logprobs = _logprobs(events, chat) if pending.job.top_logprobs is not None else None
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = logprobs
        return {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [choice],
            "usage": _usage(pending.job),
        }

    async def _stream(pending: _Pending, rid: str, chat: bool, usage: bool) -> AsyncIterator[str]:
        job = pending.job
        now = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice: dict, extra: dict | None = None) -> str:
            body = {"id": rid, "object": kind, "created": now, "model": model_name}
            body["choices"] = [choice] if choice else []
            body.update(extra or {})
            return f"data: {json.dumps(body)}\n\n"

        finished = False
        try:
            if chat:
                yield chunk(
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                )
            while True:
                event = await pending.queue.get()
                if event.finish_reason == "error":
                    finished = True
                    body = error_body(f"generation failed: {event.error}", "server_error")
                    yield f"data: {json.dumps(body)}\n\n"
                    break
                reason = FINISH.get(event.finish_reason) if event.finish_reason else None
                logprobs = None
                if job.top_logprobs is not None and event.token is not None:
                    logprobs = _logprobs([event], chat)
                if event.text or logprobs is not None or reason is not None:
                    choice: dict[str, Any] = {"index": 0, "logprobs": logprobs}
                    if chat:
                        choice["delta"] = {"content": event.text} if event.text else {}
                    else:
                        choice["text"] = event.text
                    choice["finish_reason"] = reason
                    yield chunk(choice)
                if event.finish_reason is not None:
                    finished = True
                    break
            if usage:
                yield chunk({}, {"usage": _usage(job)})
            yield "data: [DONE]\n\n"
        finally:
            if not finished:  # the client went away (the response was cancelled)
                job.cancel()

    def _logprobs(events: list[Event], chat: bool) -> dict:
        with_token = [e for e in events if e.token is not None]
        pieces = [_piece(e.token) for e in with_token]
        if chat:
            return {
                "content": [
                    {
                        "token": piece,
                        "logprob": e.logprob,
                        "bytes": list(piece.encode()),
                        "top_logprobs": [
                            {"token": _piece(i), "logprob": lp, "bytes": list(_piece(i).encode())}
                            for i, lp in e.top
                        ],
                    }
                    for e, piece in zip(with_token, pieces, strict=True)
                ]
            }
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(at)
            at += len(piece)
        return {
            "tokens": pieces,
            "token_logprobs": [e.logprob for e in with_token],
            "top_logprobs": [{_piece(i): lp for i, lp in e.top} for e in with_token],
            "text_offset": offsets,
        }

    def _piece(token: int) -> str:
        return tokenizer.decode([token], skip_special_tokens=False)

    return app


class _Pending:
    """A submitted request's events, handed from the scheduler's thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.job: Job

    def put(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.job.cancel()


def _usage(job: Job) -> dict:
    prompt, completion = len(job.prompt), len(job.tokens)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "glassformer"}


def _text(content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.type != "text":
            raise APIError(400, f"messages: content of type {part.type!r} is not supported")
        parts.append(part.text or "")
    return "".join(parts)
