"""How the command line reports failure: one line on stderr, and an exit code that says whose
fault it was.

    0    success
    1    internal error: a bug in glassformer (please report it; `--debug` shows the traceback)
    2    bad input: a usage error, a missing, unreadable, malformed or inconsistent file or
         value, an unwritable output path, an optional dependency that is not installed, an
         input too large or too deeply nested to process
    130  interrupted (Ctrl-C)

Every message starts with ``error:`` and names what was wrong (the file, the field or the
option). `--debug` anywhere on the command line (or GLASSFORMER_DEBUG=1) prints the traceback
as well. Commands report through `report`; code that reads a user's file wraps the reading in
`reading(path)`, so that whatever goes wrong inside, even an error a parser did not foresee,
becomes a bad-input line naming that file.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import typer

BAD_INPUT = 2
INTERNAL = 1
INTERRUPTED = 130


class BadInput(ValueError):
    """A user's input (file, value, option) cannot be used; the message says why."""


# C0 and C1 control characters other than whitespace: ESC starts terminal escape sequences
# (colours, window titles, hyperlinks) that a model file's strings must not send to a terminal.
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """`text` with control characters shown as \\xNN escapes, safe to print to a terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def one_line(text: object) -> str:
    return " ".join(printable(text).split())


def _os_message(err: OSError) -> str:
    what = err.strerror or type(err).__name__
    if err.filename is not None:
        target = f"{err.filename} -> {err.filename2}" if err.filename2 else str(err.filename)
        return f"{target}: {what}"
    return one_line(err) or what


def classify(err: BaseException) -> tuple[int, str]:
    """(exit code, one-line message without the ``error:`` prefix) for any exception."""
    if isinstance(err, typer.TyperException):  # click's usage errors and friends
        message = one_line(err.format_message()) if hasattr(err, "format_message") else ""
        ctx = getattr(err, "ctx", None)
        if ctx is not None and getattr(err, "exit_code", 1) == BAD_INPUT:
            message += f" (see '{ctx.command_path} --help')"
        return int(getattr(err, "exit_code", 1)), message or type(err).__name__
    if isinstance(err, (KeyboardInterrupt, typer.Abort)):
        return INTERRUPTED, "interrupted"
    if isinstance(err, MemoryError):
        return BAD_INPUT, "out of memory: the input needs more memory than is available"
    if isinstance(err, RecursionError):
        return BAD_INPUT, f"input nested too deeply to process ({one_line(err)})"
    if isinstance(err, OSError):  # an unreadable input or an unwritable output path
        return BAD_INPUT, _os_message(err)
    if isinstance(err, (ValueError, ImportError, OverflowError)):
        # ValueError covers malformed JSON and undecodable text; ImportError, a missing extra
        return BAD_INPUT, one_line(err) or type(err).__name__
    detail = one_line(err)
    return INTERNAL, (
        f"internal error: {type(err).__name__}{': ' + detail if detail else ''} "
        "(a bug in glassformer; run again with --debug for the traceback)"
    )


@contextlib.contextmanager
def reading(source: str | Path) -> Iterator[None]:
    """Errors while reading the user's file `source` are bad input that names the file.

    Only applies when `source` exists on disk: for a preset or packaged model name, an
    unexpected error is glassformer's own bug and is reported as one.
    """
    try:
        yield
    except (BadInput, typer.TyperException, KeyboardInterrupt):
        raise
    except Exception as err:
        if not Path(source).exists():
            raise
        code, message = classify(err)
        if code == INTERNAL:  # a parser met a value it did not foresee: still the file's
            message = f"{type(err).__name__}: {one_line(err)}"
        name = str(source)
        if name not in message:
            message = f"{name}: {message}"
        raise BadInput(message) from err


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """(--debug given, argv without it). Only arguments before a ``--`` count as options."""
    import os

    cut = argv.index("--") if "--" in argv else len(argv)
    head, tail = argv[:cut], argv[cut:]
    debug = "--debug" in head or os.environ.get("GLASSFORMER_DEBUG", "") not in ("", "0")
    return debug, [a for a in head if a != "--debug"] + tail


def report(err: BaseException, debug: bool) -> int:
    """Print the one-line message (and with `debug` the traceback); return the exit code."""
    code, message = classify(err)
    if getattr(err, "__class__", None).__name__ == "NoArgsIsHelpError":
        err.show()  # type: ignore[attr-defined]  # `glassformer` alone: the help
        return code
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code
