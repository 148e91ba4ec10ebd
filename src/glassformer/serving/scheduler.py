"""Continuous batching: one loop owns the model and advances every running sequence by a step.

Iteration-level scheduling (Yu et al. 2022, "Orca: A Distributed Serving System for
Transformer-Based Generative Models"): the unit of work is one step of every running sequence,
not one whole request, so

- a request waits in a FIFO queue until a slot is free, and joins at the next step;
- a newcomer's prompt is prefilled `prefill_chunk` tokens per step, interleaved with one decode
  token for every other sequence, so a long prompt delays the others by one chunk per step
  instead of by its whole length (Agrawal et al. 2023, "SARATHI: Efficient LLM Inference by
  Piggybacking Decodes with Chunked Prefills");
- a sequence that finishes (end of text, a stop string, max_tokens, the context) or whose
  client left gives its slot back at once.

Each slot owns a preallocated KV cache of `ctx` positions (reset, never reallocated, between
requests: memory stays flat). A newcomer's prompt chunks run as its own forward over its own
cache, exactly the calls `generation.generate` makes for one prompt. The decode tokens of all
the other sequences run as one batched step (`inference.plan.BatchDecodePlan`, where the model
is an optimised one the native decode plan supports): each weight is read once for the whole
batch instead of once per sequence, which is what batching buys on a CPU whose decode step is
bound by memory bandwidth. Each row of that step computes exactly what a single-sequence step
computes, so every reply equals its prompt decoded alone, token for token. Models the plan
cannot run decode sequence by sequence.

Sequences talk to the outside through `Request.emit`, called on the loop's thread with one
`Event` per sampled token (and a last one carrying the finish reason).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from glassformer.components.kv_cache import KVCache
from glassformer.generation.generate import (
    GenerationConfig,
    _check_finite,
    _n_text,
    _stop_ids,
    _TextStream,
)
from glassformer.generation.sampling import sample
from glassformer.inference.plan import BatchDecodePlan, why_not


class QueueFullError(RuntimeError):
    """Every slot is busy and the waiting queue holds `max_queue` requests."""


@dataclass
class Event:
    """One step of one sequence, as the client sees it."""

    text: str = ""  # newly safe text (held back while it could still grow into a stop string)
    token: int | None = None  # the sampled token (None on a final event without a token)
    logprob: float | None = None  # log p(token), from the model's distribution
    top: list[tuple[int, float]] = field(default_factory=list)  # (id, log p), most likely first
    finish_reason: str | None = None  # "eos" | "stop" | "length" | "context" | "error"
    error: str | None = None


@dataclass
class Request:
    prompt: list[int]
    config: GenerationConfig
    emit: Callable[[Event], None]
    top_logprobs: int | None = None  # None: no log probabilities; k: the sampled one and k best
    id: int = field(default_factory=itertools.count().__next__)
    # What the loop tracks (read-only outside it).
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False

    def cancel(self) -> None:
        """The client left: the loop drops the request at its next step."""
        self.cancelled = True


@dataclass
class _Running:
    request: Request
    slot: int
    cache: KVCache
    stream: _TextStream
    generator: torch.Generator | None
    stop_ids: set[int]
    budget: int  # new tokens allowed: max_tokens, cut to what the context leaves
    done: int = 0  # prompt tokens already in the cache
    last: int | None = None  # the token to feed next (decode)


class Scheduler:
    """Owns the model. `submit` from any thread; `step` (or the thread `start` runs) advances."""

    def __init__(
        self,
        model,
        tokenizer,
        max_batch: int = 4,
        max_queue: int = 16,
        ctx: int | None = None,
        prefill_chunk: int = 256,
    ) -> None:
        limit = model.config.max_seq_len
        ctx = limit if ctx is None else ctx
        for name, value, low in (
            ("max_batch", max_batch, 1),
            ("max_queue", max_queue, 0),
            ("ctx", ctx, 2),
            ("prefill_chunk", prefill_chunk, 1),
        ):
            if value < low:
                raise ValueError(f"{name}: must be >= {low}, got {value}")
        if ctx > limit:
            raise ValueError(f"ctx: {ctx} exceeds the model's context of {limit} positions")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.ctx = max_batch, max_queue, ctx
        self.prefill_chunk = prefill_chunk
        self.n_text = _n_text(model, tokenizer)
        self.caches = [model.new_cache(1, ctx) for _ in range(max_batch)]
        self._plan: BatchDecodePlan | None = None
        self.free = list(range(max_batch))[::-1]
        self.waiting: deque[Request] = deque()
        self.running: list[_Running] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = False

    # -- the outside ---------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        """Queue a request; raises ValueError for a prompt the context cannot hold and
        QueueFullError when the queue is full."""
        if not request.prompt:
            raise ValueError("prompt: empty (it encodes to no tokens); give some text")
        if len(request.prompt) >= self.ctx:
            raise ValueError(
                f"prompt: {len(request.prompt)} tokens leave no room in the context of "
                f"{self.ctx} positions"
            )
        with self._wake:
            busy = len(self.running) + len(self.waiting)
            if busy >= self.max_batch + self.max_queue:
                raise QueueFullError(
                    f"server busy: {self.max_batch} slots and {self.max_queue} queued requests"
                )
            self.waiting.append(request)
            self._wake.notify()

    @property
    def slots_free(self) -> int:
        return len(self.free)

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(
            target=self._loop, name="glassformer-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stop and not self.running and not self.waiting:
                    self._wake.wait()
                if self._stop:
                    return
            try:
                self.step()
            except Exception as err:  # never let the loop die: fail what is in flight
                self._fail_all(err)

    def _fail_all(self, err: Exception) -> None:
        with self._lock:
            requests = [s.request for s in self.running] + list(self.waiting)
            self.free.extend(s.slot for s in self.running)
            self.running.clear()
            self.waiting.clear()
        for request in requests:
            request.finish_reason = "error"
            request.emit(Event(finish_reason="error", error=f"{type(err).__name__}: {err}"))

    # -- one step --------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> None:
        """Drop cancelled sequences, admit waiting ones into free slots, then advance every
        running sequence by one prefill chunk or one token."""
        with self._lock:
            for request in [r for r in self.waiting if r.cancelled]:
                self.waiting.remove(request)
            for seq in [s for s in self.running if s.request.cancelled]:
                self._release(seq)
            failed = []
            while self.waiting and self.free:
                request, slot = self.waiting.popleft(), self.free.pop()
                try:
                    self.running.append(self._admit(request, slot))
                except Exception as err:  # a request the loop cannot start (a bad seed)
                    self.free.append(slot)
                    failed.append((request, err))
        for request, err in failed:  # reported outside the lock
            request.finish_reason = "error"
            request.emit(Event(finish_reason="error", error=str(err)))
        decoding = [s for s in self.running if s.budget > 0 and s.done >= len(s.request.prompt)]
        plan = self.batch_plan() if decoding else None
        batched: dict[int, torch.Tensor] = {}
        if plan is not None:
            try:
                logits = plan.step(
                    torch.tensor([s.last for s in decoding]), [s.slot for s in decoding]
                )[:, : self.n_text]
                batched = {id(s): logits[b : b + 1] for b, s in enumerate(decoding)}
            except Exception as err:  # the step failed for every row in it
                for seq in decoding:
                    self._fail(seq, err)
        for seq in list(self.running):
            if plan is not None and seq in decoding and id(seq) not in batched:
                continue  # failed with its batch above
            try:
                self._advance(seq, batched.get(id(seq)))
            except Exception as err:  # one broken sequence (NaN logits) must not stop the rest
                self._fail(seq, err)

    def batch_plan(self) -> BatchDecodePlan | None:
        """The batched decode step over every slot's cache, or None where the model needs the
        module path (a plain `Transformer`, an architecture the plan does not cover)."""
        plan = self._plan
        if plan is not None and plan.threads == torch.get_num_threads():
            return plan
        if not getattr(self.model, "use_plan", False) or why_not(self.model, self.caches[0]):
            return None
        self._plan = BatchDecodePlan(self.model, self.caches)
        return self._plan

    def _fail(self, seq: _Running, err: Exception) -> None:
        with self._lock:
            if seq in self.running:
                self._release(seq)
        seq.request.finish_reason = "error"
        seq.request.emit(Event(finish_reason="error", error=str(err)))

    def _admit(self, request: Request, slot: int) -> _Running:
        cache = self.caches[slot]
        cache.reset()
        config = request.config
        generator = None
        if config.seed is not None:
            generator = torch.Generator().manual_seed(config.seed)
        return _Running(
            request=request,
            slot=slot,
            cache=cache,
            stream=_TextStream(self.tokenizer, config.stop_strings),
            generator=generator,
            stop_ids=_stop_ids(config, self.tokenizer),
            budget=min(config.max_new_tokens, self.ctx - len(request.prompt)),
        )

    def _release(self, seq: _Running) -> None:
        self.running.remove(seq)
        self.free.append(seq.slot)

    def _forward(self, seq: _Running, ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([ids], dtype=torch.long)
        return self.model(input_ids, seq.cache)[:, -1, : self.n_text]

    def _advance(self, seq: _Running, logits: torch.Tensor | None = None) -> None:
        """One prefill chunk or decode token of `seq`; `logits`: its row of the batched step."""
        request = seq.request
        prompt = request.prompt
        if seq.budget <= 0:  # max_tokens 0: nothing to generate
            return self._finish(seq, "length", final_text="")
        if logits is None and seq.done < len(prompt):
            chunk = prompt[seq.done : seq.done + self.prefill_chunk]
            logits = self._forward(seq, chunk)
            seq.done += len(chunk)
            if seq.done < len(prompt):
                return None
        elif logits is None:
            logits = self._forward(seq, [seq.last])
        _check_finite(logits, len(request.tokens))
        # The seen tokens matter only to a repetition penalty: no O(length) copy per token without.
        seen = prompt + request.tokens if request.config.repetition_penalty != 1.0 else []
        context = torch.tensor([seen], dtype=torch.long)
        token = int(sample(logits, context, request.config, seq.generator)[0])
        event = Event(token=token)
        if request.top_logprobs is not None:
            logp = logits[0].float().log_softmax(-1)
            event.logprob = float(logp[token])
            if request.top_logprobs > 0:
                values, ids = logp.topk(request.top_logprobs)
                event.top = list(zip(ids.tolist(), values.tolist(), strict=True))
        if token in seq.stop_ids:
            event.text = seq.stream.update(request.tokens, final=True)
            return self._finish(seq, "eos", event)
        request.tokens.append(token)
        seq.last = token
        last = len(request.tokens) >= seq.budget
        event.text = seq.stream.update(request.tokens, final=last)
        if seq.stream.stopped:
            return self._finish(seq, "stop", event)
        if last:
            cut = seq.budget < request.config.max_new_tokens
            return self._finish(seq, "context" if cut else "length", event)
        request.emit(event)
        return None

    def _finish(self, seq: _Running, reason: str, event: Event | None = None, final_text=None):
        event = event or Event(text=final_text or "")
        event.finish_reason = seq.request.finish_reason = reason
        with self._lock:
            self._release(seq)
        seq.request.emit(event)


def collect(scheduler: Scheduler, request: Request) -> list[Event]:
    """Run `request` to its end on a scheduler driven by the caller (no thread); its events."""
    events: list[Event] = []
    inner = request.emit
    request.emit = lambda e: (events.append(e), inner(e))
    scheduler.submit(request)
    while request.finish_reason is None:
        scheduler.step()
    return events
