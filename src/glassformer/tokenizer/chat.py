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

The sandbox stops a template from reaching Python internals but not from exhausting the
machine: two nested ``range(100000)`` loops run for hours and ``'A' * 2000000000`` allocates
gigabytes. Every render therefore runs under a budget (`TemplateLimits`): loop iterations and
calls together, wall time, and the size of any string, list or number the template builds or
writes. Size checks happen *before* an operation that could allocate past the limit (``*``,
``**``, ``%``, ``+``, width arguments such as ``center(n)``), so the budget holds memory as
well as time. ``{% include %}``, ``{% import %}`` and ``{% extends %}`` are refused: a chat
template is one self-contained string and has no files to load. Every failure, from a syntax
error to a ``MemoryError``, surfaces as one `ChatTemplateError` line that names the
template's source.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "ChatTemplateError",
    "TemplateLimits",
    "compile_chat_template",
    "render_chat_template",
]

# Appended to the last message to find where it ends after rendering (HF's approach).
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


class ChatTemplateError(ValueError):
    """A template called ``raise_exception``, broke a limit or could not be rendered."""


@dataclasses.dataclass(frozen=True)
class TemplateLimits:
    """What one render may spend. Real templates stay far below: SmolLM2's and Gemma's take a
    few steps per message and milliseconds for a 40-message conversation."""

    max_chars: int = 4_000_000  # any string/list the template builds, and the whole output
    max_steps: int = 1_000_000  # loop iterations plus calls (filters, methods, macros)
    max_seconds: float = 10.0


class _LimitError(jinja2.exceptions.TemplateError):
    """A render exceeded its `TemplateLimits`."""


class _Budget:
    def __init__(self, limits: TemplateLimits) -> None:
        self.limits = limits
        self.steps = 0
        self.deadline = time.monotonic() + limits.max_seconds

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise _LimitError(
                f"more than {self.limits.max_steps:,} loop iterations and calls (a runaway loop?)"
            )
        if time.monotonic() > self.deadline:
            raise _LimitError(f"rendering took longer than {self.limits.max_seconds:g} s")

    def size(self, n: int, what: str) -> None:
        if n > self.limits.max_chars:
            raise _LimitError(
                f"{what} ({n:,}) is over the limit of {self.limits.max_chars:,} characters or items"
            )


# The budget of the render in progress (compile-time constant folding uses the defaults).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "glassformer_chat_budget", default=None
)


def _budget() -> _Budget:
    return _BUDGET.get() or _Budget(TemplateLimits())


def _length(value: Any) -> int:
    """Items a value holds (characters, elements, or 64-bit words of an integer)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value.bit_length() // 64
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value)
    return 0


# Widths and precisions in printf-style ("%-999999999.5d") and str.format ("{:>999999999}") specs.
_WIDTHS = re.compile(r"%[#0\- +]*(\d*)(?:\.(\d+))?|\{[^{}]*?:[^{}\d]*(\d*)(?:\.(\d+))?")


def _check_format(fmt: str, budget: _Budget) -> None:
    # A width or precision in a format string allocates that many characters.
    for match in _WIDTHS.finditer(fmt):
        for digits in match.groups():
            if digits:
                budget.size(int(digits[:13]), "a format width")


# Filters and str methods whose integer options allocate that many characters or items
# ("x"|center(n), "x".zfill(n), tojson(indent=n) per line, [x]|slice(n)). Other calls may take
# large integers (a timestamp passed to a macro) and are not checked this way.
_WIDTH_FILTERS = frozenset(["center", "indent", "tojson", "slice"])
# A width taken from the arguments: "%*d" (printf) and "{:{}}" (a field inside a format spec).
_ARG_WIDTH = re.compile(r"%[#0\- +]*\*|\{[^{}]*\{")
_WIDTH_METHODS = frozenset(["center", "ljust", "rjust", "zfill", "expandtabs"])


def _check_args(args: Sequence[Any], kwargs: Mapping[str, Any], budget: _Budget) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            budget.size(abs(value), "an integer argument")


def _predict_replace(text: Any, old: Any, new: Any, budget: _Budget) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = text.count(old) if old else len(text) + 1
        budget.size(len(text) + hits * max(0, len(new) - len(old)), "a replace() result")


def _predict_join(sep: Any, items: Any, budget: _Budget) -> None:
    if isinstance(sep, str) and isinstance(items, (list, tuple)):
        n = len(items)
        text = sum(len(x) for x in items if isinstance(x, str))
        budget.size(text + len(sep) * max(n - 1, 0), "a join() result")


def _guard_filter(name: str, func: Any) -> Any:
    """A filter that counts as a step and checks its arguments and result against the budget."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        plain = list(args)
        while plain and isinstance(
            plain[0], (jinja2.runtime.Context, jinja2.nodes.EvalContext, jinja2.Environment)
        ):
            plain.pop(0)
        # the value being filtered may be long; only the options are width-like
        if name in _WIDTH_FILTERS:
            _check_args(plain[1:], kwargs, budget)
        if name == "format" and plain and isinstance(plain[0], str):
            _check_format(plain[0], budget)
            if _ARG_WIDTH.search(plain[0]):
                _check_args(plain[1:], kwargs, budget)
        if name == "replace" and len(plain) >= 3:
            _predict_replace(plain[0], plain[1], plain[2], budget)
        if name == "join" and plain:
            sep = plain[1] if len(plain) > 1 else kwargs.get("d", "")
            _predict_join(sep, plain[0], budget)
        if name == "sum":
            # sum(start=[]) concatenates lists in quadratic time inside one call
            start = plain[2] if len(plain) > 2 else kwargs.get("start", 0)
            if not isinstance(start, (int, float)):
                raise _LimitError("|sum adds numbers only (its start must be a number)")
        result = func(*args, **kwargs)
        budget.size(_length(result), f"the result of |{name}")
        return result

    return guarded


class _BoundedIterable:
    """A for-loop's iterable that charges one step per iteration (keeps ``len`` for
    ``loop.length`` and ``loop.last``)."""

    def __init__(self, iterable: Any) -> None:
        self._iterable = iterable

    def __len__(self) -> int:
        return len(self._iterable)

    def __iter__(self) -> Iterator[Any]:
        budget = _budget()
        for item in self._iterable:
            budget.step()
            yield item


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    # Every {% for %} iterates through environment.bounded_iter(...), so that a loop with an
    # empty body (which writes nothing and calls nothing) still spends the budget.
    def visit_For(self, node: jinja2.nodes.For, frame: Any) -> None:
        node = jinja2.nodes.For(
            node.target,
            jinja2.nodes.Call(
                jinja2.nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None
            ),
            node.body,
            node.else_,
            node.test,
            node.recursive,
            lineno=node.lineno,
        )
        super().visit_For(node, frame)

    # "a ~ b" joins strings without an operator hook: check what it built.
    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.bounded_value(")
        super().visit_Concat(node, frame)
        self.write(")")


class _ChatEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def bounded_iter(self, iterable: Any) -> _BoundedIterable:
        return _BoundedIterable(iterable)

    def bounded_value(self, value: Any) -> Any:
        _budget().size(_length(value), "a string")
        return value

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.step()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and _length(seq) and not isinstance(seq, int):
                    budget.size(_length(seq) * max(n, 0), "a repeated sequence")
            if isinstance(left, int) and isinstance(right, int):
                budget.size(_length(left) + _length(right), "an integer product")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
                budget.size(left.bit_length() * right // 64, "an integer power")
        elif operator == "+":
            if not (isinstance(left, (int, float)) and isinstance(right, (int, float))):
                budget.size(_length(left) + _length(right), "a concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, budget)
            if _ARG_WIDTH.search(left):  # "%*d" % (width, x)
                _check_args(right if isinstance(right, tuple) else (right,), {}, budget)
        result = super().call_binop(context, operator, left, right)
        budget.size(_length(result), f"the result of {operator!r}")
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        target = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(target, "__self__", None)
        name = getattr(target, "__name__", "")
        if isinstance(owner, str):
            if name in _WIDTH_METHODS:
                _check_args(args, kwargs, budget)
            elif name in ("format", "format_map"):
                _check_format(owner, budget)
                if _ARG_WIDTH.search(owner):  # "{:{}}".format(x, width)
                    _check_args(args, kwargs, budget)
                    for mapping in (a for a in args if isinstance(a, Mapping)):
                        _check_args((), mapping, budget)  # format_map
            elif name == "replace" and len(args) >= 2:
                _predict_replace(owner, args[0], args[1], budget)
            elif name == "join" and args:
                _predict_join(owner, args[0], budget)
        result = super().call(__context, __obj, *args, **kwargs)
        budget.size(_length(result), "a call's result")
        return result


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


_LOADING_NODES = (
    jinja2.nodes.Include,
    jinja2.nodes.Import,
    jinja2.nodes.FromImport,
    jinja2.nodes.Extends,
)


@lru_cache(maxsize=32)
def compile_chat_template(template: str) -> jinja2.Template:
    """Compile a template in the sandboxed environment Hugging Face uses (cached).

    Raises ``jinja2.TemplateError`` for a syntax error or a tag that loads other templates.
    Render through `render_chat_template`: a direct ``.render()`` gets the size checks but no
    step or time budget, which lives in the render call.
    """
    env = _ChatEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters["tojson"] = _guard_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    parsed = env.parse(template)
    for node in parsed.find_all(_LOADING_NODES):
        tag = type(node).__name__.lower().replace("fromimport", "from ... import")
        raise jinja2.exceptions.TemplateSyntaxError(
            f"{{% {tag} %}} is not supported: a chat template cannot load other templates",
            node.lineno,
        )
    return env.from_string(parsed)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> str:
    """One line for any failure of a template: syntax (with its line), limits, runtime errors."""
    if isinstance(exc, jinja2.exceptions.TemplateSyntaxError):
        return f"line {exc.lineno}: {_one_line(exc.message or '')}"
    if isinstance(exc, jinja2.exceptions.TemplateError):
        return _one_line(exc.message or type(exc).__name__)
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro or recursive loop that does not end?)"
    if isinstance(exc, MemoryError):
        return "ran out of memory"
    return _one_line(f"{type(exc).__name__}: {exc}")


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
    template_source: str = "chat template",
    template_limits: TemplateLimits | None = None,
    **kwargs: Any,
) -> str:
    """Render ``messages`` with ``template``; extra keyword arguments become template variables.

    ``continue_final_message`` leaves the last message open (no end-of-turn marker) so the
    model continues it, as in Hugging Face. ``template_source`` names the template in error
    messages (e.g. the GGUF file it came from); ``template_limits`` bounds the render.
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
    budget = _Budget(template_limits or TemplateLimits())
    token = _BUDGET.set(budget)
    try:
        compiled = compile_chat_template(template)
        pieces: list[str] = []
        written = 0
        for piece in compiled.generate(
            messages=chat,
            tools=_plain(list(tools)) if tools is not None else None,
            documents=_plain(list(documents)) if documents is not None else None,
            add_generation_prompt=add_generation_prompt,
            **{k: _plain(v) for k, v in kwargs.items()},
        ):
            written += len(piece)
            budget.size(written, "the rendered prompt")
            pieces.append(piece)
        rendered = "".join(pieces)
    except Exception as exc:  # every failure of untrusted code becomes one named line
        raise ChatTemplateError(f"{template_source}: {_describe(exc)}") from exc
    finally:
        _BUDGET.reset(token)
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
