"""The `glassformer` command line: a thin layer over the library.

Each command group lives in its own module with a `register(app)` function; this file only
assembles them, so a command's code sits next to nothing but its own options.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="glassformer",
    help="A white-box Transformer workbench: build, load, explain, train and diagnose models. "
    "Errors print one line; exit code 2 means bad input, 1 an internal error "
    "(--debug anywhere shows the traceback).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: the rich layout prints flags as "--json <bool>", as if they took a value.
    rich_markup_mode=None,
)

# Modules that define `register(app)`; each adds its own commands.
COMMAND_MODULES = [
    "glassformer.cli.bench",
    "glassformer.cli.evaluate",
    "glassformer.cli.explore",
    "glassformer.cli.export",
    "glassformer.cli.fusion",
    "glassformer.cli.generate",
    "glassformer.cli.importance",
    "glassformer.cli.info",
    "glassformer.cli.prune",
    "glassformer.cli.serve",
    "glassformer.cli.telemetry",
    "glassformer.cli.train",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False,
        "--debug",
        help="On an error, print the traceback too (also accepted after the "
        "command, or as GLASSFORMER_DEBUG=1).",
    ),
) -> None:
    # main() removes --debug from the arguments before click sees them; this option exists
    # so that `glassformer --help` lists it.
    del debug


def main(argv: list[str] | None = None) -> None:
    """Run the command line. Every failure ends in one ``error: ...`` line on stderr and an
    exit code (2: bad input, 1: internal error, 130: interrupted; see `glassformer.cli.errors`),
    never a traceback unless --debug asks for one."""
    from glassformer.cli.errors import debug_requested, report
    from glassformer.threads import limit_spinning

    limit_spinning()  # before anything loads torch's OpenMP runtime

    debug, args = debug_requested(list(sys.argv[1:] if argv is None else argv))
    try:
        code = app(args=args, prog_name="glassformer", standalone_mode=False)
    except BaseException as err:  # the one place that turns errors into lines
        if isinstance(err, SystemExit):
            raise
        if isinstance(err, typer.Exit):  # a command's own exit (it printed its message)
            raise SystemExit(err.exit_code) from None
        raise SystemExit(report(err, debug)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
