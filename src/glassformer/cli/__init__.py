"""The `glassformer` command line: a thin layer over the library.

Each command group lives in its own module with a `register(app)` function; this file only
assembles them, so a command's code sits next to nothing but its own options.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="glassformer",
    help="A white-box Transformer workbench: build, load, explain, train and diagnose models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that define `register(app)`; each adds its own commands.
COMMAND_MODULES = [
    "glassformer.cli.bench",
    "glassformer.cli.explore",
    "glassformer.cli.export",
    "glassformer.cli.generate",
    "glassformer.cli.info",
    "glassformer.cli.telemetry",
    "glassformer.cli.train",
]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main() -> None:
    # Bad input (a wrong name, a corrupt file, an invalid option value) is reported in one
    # line that names the problem, not as a traceback.
    try:
        app()
    except (ValueError, FileNotFoundError, ImportError) as err:
        typer.echo(f"error: {err}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
