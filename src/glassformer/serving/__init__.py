"""Serving a model over HTTP: the continuous-batching scheduler (`scheduler.py`, owns the
model) and the OpenAI-compatible API over it (`api.py`, FastAPI). `glassformer serve` runs
both under uvicorn."""

from glassformer.serving.scheduler import Event, QueueFullError, Request, Scheduler

__all__ = ["Event", "QueueFullError", "Request", "Scheduler"]
