"""Chat templates: rendering a model's Jinja template the way Hugging Face does.

A chat template (``tokenizer.chat_template`` in GGUF, ``chat_template`` in
``tokenizer_config.json`` or ``chat_template.jinja``) is a Jinja program that turns a list
of ``{"role", "content"}`` messages into the exact prompt text a model was trained on,
including its turn markers (``<|im_start|>``, ``<start_of_turn>``), any default system
prompt the template writes when the conversation has none, and, with
``add_generation_prompt``, the opening of the assistant's turn.

Templates are untrusted code from model files, so they run in Jinja's
``ImmutableSandboxedEnvironment``. The environment matches
``transformers.utils.chat_template_utils._compile_jinja_template``: ``trim_blocks`` and
``lstrip_blocks`` on, the ``loopcontrols`` extension, a ``tojson`` filter that keeps
non-ASCII characters and accepts ``indent``/``separators``/``sort_keys``, and the globals
``raise_exception`` and ``strftime_now``. Same template + same inputs => same string as
``tokenizer.apply_chat_template(..., tokenize=False)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplateError", "compile_chat_template", "render_chat_template"]

# Appended to the last message to find where it ends after rendering (HF's approach).
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class ChatTemplateError(ValueError):
    """A template called ``raise_exception`` or could not be rendered."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes <, > and & for HTML, which would change prompts.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateNamespace(jinja2.utils.Namespace):
    # Underscore names would reach Python internals through attribute access.
    def __init__(*args: Any, **kwargs: Any) -> None:
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot set underscore attributes on a namespace: {name!r}"
            )


class _TemplateDict:
    # ``dict`` for templates without exposing the type object itself.
    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compile a template in the sandboxed environment Hugging Face uses (cached)."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(template)


def _plain(value: Any) -> Any:
    # Templates only ever see plain JSON-like data (HF's _plain_template_data).
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    continue_final_message: bool = False,
    **kwargs: Any,
) -> str:
    """Render ``messages`` with ``template``; extra keyword arguments become template variables.

    ``continue_final_message`` leaves the last message open (no end-of-turn marker) so the
    model continues it, as in Hugging Face.
    """
    chat = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise TypeError(f"chat messages must be mappings, got {message!r}")
        # APIs often send content=None; templates handle a missing key better than "None".
        chat.append({k: _plain(v) for k, v in message.items() if v is not None})
    if continue_final_message:
        if not chat or not isinstance(chat[-1].get("content"), str):
            raise ValueError("continue_final_message needs a final message with text content")
        final = chat[-1]["content"]
        chat[-1]["content"] = final + _CONTINUE_TAG
    try:
        rendered = compile_chat_template(template).render(
            messages=chat,
            tools=_plain(list(tools)) if tools is not None else None,
            documents=_plain(list(documents)) if documents is not None else None,
            add_generation_prompt=add_generation_prompt,
            **{k: _plain(v) for k, v in kwargs.items()},
        )
    except jinja2.exceptions.TemplateError as exc:
        raise ChatTemplateError(f"chat template failed: {exc}") from exc
    if continue_final_message:
        tag = _CONTINUE_TAG.strip()
        if tag not in rendered:
            raise ValueError("the chat template dropped the final message; cannot continue it")
        at = rendered.rindex(tag)
        if rendered[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
            rendered = rendered[:at]
        else:
            rendered = rendered[:at].rstrip()
    return rendered
